// Whom `kidreaper reap` may signal, with real processes: a pidfile an unprivileged user
// can rewrite names only that user's processes, and a manager's helper children (a piped
// logger) are never signalled nor counted.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "bpf_test_support.h"
#include "observe/procfs.h"
#include "reap_events.h"

namespace kidreaper {
namespace {

using testing::FixtureLaunch;
using testing::FixtureProcess;
using testing::reap_argv;
using testing::reap_events;
using testing::run_command;

constexpr uid_t kNobody = 65534;

// A directory under /tmp removed on destruction, readable by everybody.
class SharedDir {
public:
    SharedDir() {
        char pattern[] = "/tmp/kr-trust-XXXXXX";
        if (mkdtemp(pattern) == nullptr) {
            throw std::runtime_error("mkdtemp failed");
        }
        path_ = pattern;
        std::filesystem::permissions(path_, std::filesystem::perms(0755));
    }
    ~SharedDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    SharedDir(const SharedDir&) = delete;
    SharedDir& operator=(const SharedDir&) = delete;
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

// A copy of kr-fixture at `path`: another executable to the kernel and to kidreaper.
std::string copy_fixture(const std::filesystem::path& path) {
    std::filesystem::copy_file(testing::sibling_path("kr-fixture"), path,
                               std::filesystem::copy_options::overwrite_existing);
    std::filesystem::permissions(path, std::filesystem::perms(0755));
    return path.string();
}

void write_file(const std::filesystem::path& path, const std::string& text) {
    const auto temporary = path.string() + ".new";
    std::ofstream(temporary) << text;
    std::filesystem::rename(temporary, path);
}

bool alive_with_start(pid_t pid, std::uint64_t start_ticks) {
    const auto stat = ProcFs().stat(pid);
    return stat && stat->start_ticks == start_ticks && stat->state != 'Z';
}

// Waits (up to a minute) until `pid` has at least `bytes` of private anon memory (its
// RssAnon), held still: the helper below fills a shell variable.
bool await_anon(pid_t pid, std::uint64_t bytes) {
    // A minute: busybox's shell reads the 32 MiB a few KiB at a time, which takes ~20 s in
    // the emulated arm64 guest.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
        // Filled once the value holds still: while the command substitution runs, the
        // shell's buffers come and go (busybox runs the sleep in-process, so no child
        // tells it apart).
        const auto before = ProcFs().status(pid);
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        const auto after = ProcFs().status(pid);
        if (before && after && after->rss_anon >= bytes && after->rss_anon == before->rss_anon) {
            return true;
        }
    }
    return false;
}

TEST(ReapTrust, APidfileAUserCanRewriteNamesOnlyThatUsersProcesses) {
    KR_REQUIRE_BPF();
    SharedDir dir;
    // The documented setup: the app's user owns its runtime directory and the pidfile.
    const auto run_dir = dir.path() / "run";
    std::filesystem::create_directory(run_dir);
    ASSERT_EQ(chown(run_dir.c_str(), kNobody, kNobody), 0);
    const std::string app = copy_fixture(dir.path() / "app-server");
    FixtureProcess app_manager({"--preload", "4M", "--child", "small=idle"},
                               FixtureLaunch{app, kNobody});
    app_manager.wait_ready();
    // A root process of another executable with children over the limit: what the user
    // would like kidreaper to recycle.
    const std::string other = copy_fixture(dir.path() / "other-server");
    FixtureProcess victim(
        {"--preload", "16M", "--child", "big1=leak:24M", "--child", "big2=leak:24M"},
        FixtureLaunch{other, std::nullopt});
    victim.wait_ready();
    victim.go_and_wait_done(2);
    const auto big1_start = ProcFs().stat(victim.child("big1"))->start_ticks;
    const auto big2_start = ProcFs().stat(victim.child("big2"))->start_ticks;

    const auto pidfile = run_dir / "app.pid";
    write_file(pidfile, std::to_string(app_manager.manager()) + "\n");
    ASSERT_EQ(chown(pidfile.c_str(), kNobody, kNobody), 0);

    // The rewrite, by the user, once kidreaper watches the app.
    const int programs_before = testing::count_loaded_programs();
    const pid_t rewriter = fork();
    if (rewriter == 0) {
        testing::wait_until_kidreaper_runs(programs_before);
        if (setgid(kNobody) != 0 || setuid(kNobody) != 0) {
            _exit(1);
        }
        write_file(pidfile, std::to_string(victim.manager()) + "\n");
        _exit(0);
    }
    const auto result =
        run_command(reap_argv({"--pidfile", pidfile.string()}, {}), std::chrono::seconds(6));
    int status = 0;
    waitpid(rewriter, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the user could not rewrite it";

    const auto starts = reap_events(result.output, "start");
    ASSERT_EQ(starts.size(), 1U) << result.output;
    EXPECT_EQ(starts[0].at("manager"), app_manager.manager()) << "its own user's process";
    const auto refusals = reap_events(result.output, "manager-refused");
    ASSERT_EQ(refusals.size(), 1U) << "one event, however often it is seen\n" << result.output;
    EXPECT_EQ(refusals[0].at("pid"), victim.manager());
    const std::string reason = refusals[0].at("reason");
    EXPECT_NE(reason.find("runs as uid 0/0"), std::string::npos) << reason;
    EXPECT_NE(reason.find("uid 65534"), std::string::npos) << reason;
    EXPECT_TRUE(reap_events(result.output, "manager-restarted").empty()) << result.output;
    EXPECT_TRUE(reap_events(result.output, "recycle").empty()) << result.output;
    EXPECT_TRUE(reap_events(result.output, "escalate").empty()) << result.output;
    EXPECT_TRUE(alive_with_start(victim.child("big1"), big1_start));
    EXPECT_TRUE(alive_with_start(victim.child("big2"), big2_start));
    EXPECT_EQ(kill(victim.manager(), 0), 0);
}

TEST(ReapTrust, AtStartAnUntrustedPidfileNamingAnotherUserIsAnError) {
    KR_REQUIRE_BPF();
    SharedDir dir;
    const auto run_dir = dir.path() / "run";
    std::filesystem::create_directory(run_dir);
    ASSERT_EQ(chown(run_dir.c_str(), kNobody, kNobody), 0);
    FixtureProcess root_manager({"--preload", "16M", "--child", "big1=leak:24M"});
    root_manager.wait_ready();
    root_manager.go_and_wait_done(1);
    const auto pidfile = run_dir / "app.pid";
    write_file(pidfile, std::to_string(root_manager.manager()) + "\n");
    const auto result = run_command(reap_argv({"--pidfile", pidfile.string()}, {"--once"}),
                                    std::chrono::seconds(20));
    EXPECT_EQ(result.exit_status, 1) << result.output;
    const auto refusals = reap_events(result.output, "manager-refused");
    ASSERT_EQ(refusals.size(), 1U) << result.output;
    EXPECT_EQ(refusals[0].at("pid"), root_manager.manager());
    EXPECT_TRUE(reap_events(result.output, "start").empty()) << result.output;
    EXPECT_TRUE(alive_with_start(root_manager.child("big1"),
                                 ProcFs().stat(root_manager.child("big1"))->start_ticks));
}

// The helper: a child that execs a shell holding 32 MiB (over the 12 MiB limit), as a
// piped logger or an attached daemon would. Its sleep outlives the shell when the fixture
// goes: HelperSleepReaper kills it first.
constexpr const char* kHelper = "logger=exec:x=$(yes aaaaaaaa | head -c 33554432); sleep 120";

// Kills the helper's own children (its sleep) at scope exit, while the helper still lives.
class HelperSleepReaper {
public:
    explicit HelperSleepReaper(pid_t helper) : helper_(helper) {}
    ~HelperSleepReaper() {
        for (const pid_t child : ProcFs().children_of(helper_)) {
            kill(child, SIGKILL);
        }
    }
    HelperSleepReaper(const HelperSleepReaper&) = delete;
    HelperSleepReaper& operator=(const HelperSleepReaper&) = delete;

private:
    pid_t helper_;
};

TEST(ReapTrust, AHelperChildIsNeverSignalledNorCounted) {
    KR_REQUIRE_BPF();
    FixtureProcess fixture({"--preload", "16M", "--respawn", "--child", "big1=leak:24M", "--child",
                            "small=idle", "--child", kHelper});
    fixture.wait_ready();
    fixture.go_and_wait_done(2);
    const pid_t helper = fixture.child("logger");
    const HelperSleepReaper sleep_reaper(helper);
    ASSERT_TRUE(await_anon(helper, 32ULL << 20)) << "the helper did not fill its memory";
    const auto helper_start = ProcFs().stat(helper)->start_ticks;

    // With --min-children 2 and the helper not counted, big1 is the last but one worker.
    const auto held = run_command(
        reap_argv({"--pid", std::to_string(fixture.manager())}, {"--once", "--min-children", "2"}),
        std::chrono::seconds(30));  // --once ends it; the deadline only bounds a slow guest
    const auto helpers = reap_events(held.output, "helper");
    ASSERT_EQ(helpers.size(), 1U) << held.output;
    EXPECT_EQ(helpers[0].at("pid"), helper);
    EXPECT_NE(helpers[0].at("reason").get<std::string>().find("not the manager's"),
              std::string::npos)
        << held.output;
    EXPECT_TRUE(reap_events(held.output, "recycle").empty()) << held.output;
    bool big1_held = false;
    for (const auto& notice : reap_events(held.output, "held")) {
        big1_held = big1_held || notice.at("pid") == fixture.child("big1");
    }
    EXPECT_TRUE(big1_held) << "the helper must not count for --min-children\n" << held.output;

    // Without it, the worker over the limit is recycled and replaced; the helper, larger,
    // is never signalled.
    const auto result =
        run_command(reap_argv({"--pid", std::to_string(fixture.manager())}, {"--once"}),
                    std::chrono::seconds(60));
    ASSERT_EQ(result.exit_status, 0) << result.output;
    const auto recycles = reap_events(result.output, "recycle");
    ASSERT_EQ(recycles.size(), 1U) << result.output;
    EXPECT_EQ(recycles[0].at("pid"), fixture.child("big1"));
    EXPECT_EQ(reap_events(result.output, "replaced").size(), 1U) << result.output;
    for (const char* name : {"recycle", "escalate", "skip"}) {
        for (const auto& event : reap_events(result.output, name)) {
            EXPECT_NE(event.at("pid"), helper) << name << ": " << event.dump();
        }
    }
    EXPECT_TRUE(alive_with_start(helper, helper_start)) << "the helper lives on";
    const auto status = ProcFs().status(helper);
    ASSERT_TRUE(status);
    EXPECT_EQ(status->ppid, fixture.manager());
}

TEST(ReapTrust, WorkersAnyMakesAHelperACandidate) {
    KR_REQUIRE_BPF();
    FixtureProcess fixture({"--preload", "4M", "--child", "small=idle", "--child", kHelper});
    fixture.wait_ready();
    const pid_t helper = fixture.child("logger");
    const HelperSleepReaper sleep_reaper(helper);
    ASSERT_TRUE(await_anon(helper, 32ULL << 20));
    const auto result =
        run_command(reap_argv({"--pid", std::to_string(fixture.manager())},
                              {"--once", "--dry-run", "--workers", "any", "--no-idle-wait"}),
                    std::chrono::seconds(20));
    ASSERT_EQ(result.exit_status, 0) << result.output;
    const auto recycles = reap_events(result.output, "recycle");
    ASSERT_EQ(recycles.size(), 1U) << result.output;
    EXPECT_EQ(recycles[0].at("pid"), helper);
    EXPECT_EQ(recycles[0].at("dry_run"), true);
    EXPECT_TRUE(reap_events(result.output, "helper").empty()) << result.output;
}

}  // namespace
}  // namespace kidreaper
