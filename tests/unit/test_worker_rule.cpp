// The worker rule: parsing --workers and judging children on synthetic facts.
#include "policy/worker_rule.h"

#include <gtest/gtest.h>

#include "common/error.h"
#include "expect_usage_error.h"

namespace kidreaper {
namespace {

using testing::contains;
using testing::usage_error_message;

ManagerFacts apache_manager() {
    ManagerFacts manager;
    manager.exe = "/usr/sbin/apache2";
    manager.listening_sockets = {1001, 1002};
    return manager;
}

ChildFacts apache_worker() {
    ChildFacts child;
    child.exe = "/usr/sbin/apache2";
    child.comm = "apache2";
    child.cmdline = "/usr/sbin/apache2 -k start";
    child.socket_inodes = {77, 1002};
    return child;
}

TEST(WorkerRule, ParsesEachCondition) {
    const WorkerRule rule =
        parse_worker_rule(" exe , listener,comm=php-fpm*,cmdline=uWSGI worker *");
    EXPECT_TRUE(rule.same_exe);
    EXPECT_TRUE(rule.listener);
    EXPECT_FALSE(rule.any);
    ASSERT_EQ(rule.comm_globs.size(), 1U);
    EXPECT_EQ(rule.comm_globs[0], "php-fpm*");
    ASSERT_EQ(rule.cmdline_globs.size(), 1U);
    EXPECT_EQ(rule.cmdline_globs[0], "uWSGI worker *");
    EXPECT_TRUE(parse_worker_rule("any").any);
}

TEST(WorkerRule, RejectsBadRules) {
    for (const std::string bad : {"", " ", "exe,", ",exe", "exe,,listener", "worker", "any,exe",
                                  "listener,any", "comm=", "cmdline=", "EXE"}) {
        const std::string message = usage_error_message([&] { parse_worker_rule(bad); });
        EXPECT_TRUE(contains(message, "--workers")) << "rule \"" << bad << "\": " << message;
    }
    EXPECT_TRUE(
        contains(usage_error_message([] { parse_worker_rule("comm=" + std::string(300, 'a')); }),
                 "at most 256"));
    EXPECT_TRUE(contains(usage_error_message([] { parse_worker_rule("comm=a\nb"); }), "printable"));
}

TEST(WorkerRule, AWorkerRunsTheManagersExecutableAndHoldsItsListener) {
    const WorkerRule rule = parse_worker_rule("exe,listener");
    const RoleJudgement judgement = judge_role(rule, apache_worker(), apache_manager());
    EXPECT_TRUE(judgement.worker) << judgement.reason;
}

TEST(WorkerRule, APipedLoggerRunsAnotherExecutable) {
    ChildFacts logger = apache_worker();
    logger.exe = "/usr/bin/rotatelogs";
    const RoleJudgement judgement =
        judge_role(parse_worker_rule("exe,listener"), logger, apache_manager());
    EXPECT_FALSE(judgement.worker);
    EXPECT_EQ(judgement.reason, "runs /usr/bin/rotatelogs, not the manager's /usr/sbin/apache2");
}

TEST(WorkerRule, AForkWithoutTheListenerIsAHelper) {
    ChildFacts daemon = apache_worker();
    daemon.socket_inodes = {77, 99};  // mod_cgid's daemon: its own socket only
    const RoleJudgement judgement =
        judge_role(parse_worker_rule("exe,listener"), daemon, apache_manager());
    EXPECT_FALSE(judgement.worker);
    EXPECT_EQ(judgement.reason, "holds none of the manager's listening sockets");
}

TEST(WorkerRule, UnreadableFactsFailTheirCondition) {
    ChildFacts unreadable;
    EXPECT_FALSE(judge_role(parse_worker_rule("exe"), unreadable, apache_manager()).worker);
    EXPECT_FALSE(judge_role(parse_worker_rule("comm=*"), unreadable, apache_manager()).worker);
    EXPECT_FALSE(judge_role(parse_worker_rule("cmdline=*"), unreadable, apache_manager()).worker);
    ManagerFacts no_exe = apache_manager();
    no_exe.exe.reset();
    EXPECT_FALSE(judge_role(parse_worker_rule("exe"), apache_worker(), no_exe).worker);
}

TEST(WorkerRule, AManagerWithoutListenersLeavesTheConditionOut) {
    ManagerFacts manager = apache_manager();
    manager.listening_sockets.clear();
    bool skipped = false;
    EXPECT_TRUE(
        judge_role(parse_worker_rule("exe,listener"), apache_worker(), manager, &skipped).worker);
    EXPECT_TRUE(skipped);
    skipped = false;
    EXPECT_TRUE(
        judge_role(parse_worker_rule("exe,listener"), apache_worker(), apache_manager(), &skipped)
            .worker);
    EXPECT_FALSE(skipped);
}

TEST(WorkerRule, GlobsMatchCommAndTitle) {
    ChildFacts mule = apache_worker();
    mule.comm = "uwsgi";
    mule.cmdline = "uWSGI mule 1";
    EXPECT_FALSE(judge_role(parse_worker_rule("cmdline=uWSGI worker *"), mule, {}).worker);
    mule.cmdline = "uWSGI worker 3";
    EXPECT_TRUE(judge_role(parse_worker_rule("cmdline=uWSGI worker *"), mule, {}).worker);
    EXPECT_TRUE(judge_role(parse_worker_rule("comm=uws?i"), mule, {}).worker);
    const RoleJudgement no = judge_role(parse_worker_rule("comm=php-fpm*"), mule, {});
    EXPECT_FALSE(no.worker);
    EXPECT_EQ(no.reason, "comm \"uwsgi\" does not match php-fpm*");
}

TEST(WorkerRule, AnyMakesEveryChildAWorker) {
    EXPECT_TRUE(judge_role(parse_worker_rule("any"), ChildFacts{}, ManagerFacts{}).worker);
}

}  // namespace
}  // namespace kidreaper
