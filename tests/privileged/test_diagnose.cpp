// diagnose's verdicts from real kernel data: the fixture's children unshare, leak, do
// both, idle, or exit while being watched.
#include <unistd.h>

#include <map>
#include <string>

#include <gtest/gtest.h>

#include "bpf_test_support.h"
#include "kernel_features.h"
#include "observer.h"
#include "procfs.h"
#include "report.h"
#include "watcher.h"

namespace kidreaper {
namespace {

using testing::FixtureProcess;

TEST(Diagnose, FixtureChildrenGetEachVerdict) {
    KR_REQUIRE_BPF();
    const Logger log(LogLevel::warn);
    Observer observer({.cow = probe_features().cow_source()}, log);
    FixtureProcess fixture({"--preload", "64M", "--child", "cow:48M@5s", "--child", "leak:32M@5s",
                            "--child", "mixed:32M:24M@5s", "--child", "idle", "--child",
                            "goner=leak:32M@5s", "--child", "late:cow:24M@4s"});
    fixture.wait_ready();
    const ProcFs proc;
    Watcher watcher(observer, proc, fixture.manager());
    fixture.send("go");
    fixture.expect("started");  // after the late child's line
    bool exit_sent = false;
    while (watcher.elapsed_seconds() < 6.0) {
        usleep(250'000);
        watcher.poll();
        if (!exit_sent && watcher.elapsed_seconds() > 3.0) {
            fixture.send("exit goner");  // leaves mid-window, mid-leak
            exit_sent = true;
        }
    }
    watcher.poll();
    watcher.refresh_ground_truth();
    ManagerSummary manager;
    manager.pid = fixture.manager();
    const Diagnosis diagnosis = diagnose_children(watcher.children(), manager, {});

    std::map<pid_t, const ChildDiagnosis*> by_pid;
    for (const auto& child : diagnosis.children) {
        by_pid[child.pid] = &child;
    }
    ASSERT_EQ(by_pid.size(), fixture.children().size());
    for (const auto& [name, pid] : fixture.children()) {
        SCOPED_TRACE(name + " " + std::to_string(pid));
        ASSERT_TRUE(by_pid.count(pid));
        const ChildDiagnosis& child = *by_pid.at(pid);
        const std::string verdict(verdict_name(child.classification.verdict));
        if (name == "cow" || name == "late-cow") {
            EXPECT_EQ(verdict, "cow") << child.classification.reason;
            EXPECT_GT(child.private_bytes, 20u << 20) << "smaps must show the unshared pages";
        } else if (name == "mixed") {
            EXPECT_EQ(verdict, "mixed") << child.classification.reason;
        } else if (name == "idle") {
            EXPECT_EQ(verdict, "stable") << child.classification.reason;
        } else if (name == "goner") {
            EXPECT_TRUE(child.exited);
            EXPECT_EQ(verdict, "leak") << child.classification.reason;
            EXPECT_GT(child.growth_bytes, 8u << 20) << "keeps what it had";
        } else {
            EXPECT_EQ(verdict, "leak") << child.classification.reason;
            EXPECT_FALSE(child.exited);
        }
        EXPECT_EQ(child.born_in_window, name == "late-cow");
    }
    // A COW child is never the one recommended for recycling.
    for (pid_t pid : diagnosis.would_recycle) {
        EXPECT_NE(by_pid.at(pid)->classification.verdict, Verdict::cow);
    }
}

TEST(Diagnose, AttributesCowToTheInheritedRegionAndTheWritingCode) {
    KR_REQUIRE_BPF();
    const Logger log(LogLevel::warn);
    Observer observer({.cow = probe_features().cow_source(), .record_cow_sites = true}, log);
    FixtureProcess fixture({"--preload", "64M", "--child", "cow:48M", "--child", "leak:16M"});
    fixture.wait_ready();
    const ProcFs proc;
    Watcher watcher(observer, proc, fixture.manager());
    fixture.go_and_wait_done(2);
    watcher.poll();
    ManagerSummary manager;
    manager.pid = fixture.manager();
    Diagnosis diagnosis = diagnose_children(watcher.children(), manager, {});
    attribute_children_cow(diagnosis, observer.read_cow_sites(), observer.cow_sample_period(),
                           proc);
    for (const auto& child : diagnosis.children) {
        if (child.pid != fixture.child("cow")) {
            continue;
        }
        ASSERT_TRUE(child.cow_attribution.has_value());
        const CowAttribution& cow = *child.cow_attribution;
        ASSERT_FALSE(cow.regions.empty());
        EXPECT_EQ(cow.regions.front().name, "anonymous") << "the preload is an anonymous mapping";
        EXPECT_GT(cow.regions.front().fraction, 0.9);
        // 48 MiB sampled one in eight: the estimate lands near the truth.
        EXPECT_NEAR(static_cast<double>(cow.regions.front().bytes), 48.0 * (1 << 20),
                    0.15 * 48.0 * (1 << 20));
        ASSERT_FALSE(cow.sites.empty());
        EXPECT_NE(cow.sites.front().name.find("(kr-fixture)"), std::string::npos)
            << cow.sites.front().name;
        EXPECT_NE(cow.sites.front().name.find("kidreaper::"), std::string::npos)
            << "symbolized: " << cow.sites.front().name;
    }
}

}  // namespace
}  // namespace kidreaper
