// diagnose's verdicts from real kernel data: the fixture's children unshare, leak, do
// both, idle, or exit while being watched.
#include <unistd.h>

#include <cmath>
#include <map>
#include <string>

#include <gtest/gtest.h>

#include "bpf_test_support.h"
#include "cli/report.h"
#include "demo/workload.h"
#include "observe/kernel_features.h"
#include "observe/observer.h"
#include "observe/procfs.h"
#include "observe/watcher.h"

namespace kidreaper {
namespace {

using testing::FixtureProcess;

// The diagnosis of what `watcher` saw, after a last poll and a ground-truth read.
Diagnosis finish_watch(Watcher& watcher, pid_t manager_pid) {
    watcher.poll();
    watcher.refresh_ground_truth();
    ManagerSummary manager;
    manager.pid = manager_pid;
    return diagnose_children(watcher.children(), manager, {});
}

// Each child's entry of `diagnosis` by pid (pointers into it).
std::map<pid_t, const ChildDiagnosis*> index_by_pid(const Diagnosis& diagnosis) {
    std::map<pid_t, const ChildDiagnosis*> by_pid;
    for (const auto& child : diagnosis.children) {
        by_pid[child.pid] = &child;
    }
    return by_pid;
}

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
    const Diagnosis diagnosis = finish_watch(watcher, fixture.manager());
    const auto by_pid = index_by_pid(diagnosis);
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

// The accuracy traps (userspace/demo/workload.h) through the whole diagnosis: each child's
// verdict, and its COW and growth within 10% of the truth.
TEST(Diagnose, TrapsGetTheRightVerdicts) {
    KR_REQUIRE_BPF();
    const Logger log(LogLevel::warn);
    Observer observer({.cow = probe_features().cow_source()}, log);
    const std::uint64_t preload = 32ULL << 20;
    const std::map<std::string, std::string> expected = {
        {"shared:16Mx6", "stable"},     // writes to a shared file copy nothing
        {"zero:16M", "leak"},           // fresh memory, kept
        {"heapzero:16M", "leak"},       // zero pages the manager mapped, filled: fresh
        {"mprotect:8Mx6", "leak"},      // its own memory, kept; the toggling copies nothing
        {"file:24M", "cow"},            // private file pages copied: COW, not growth
        {"thp:16M", "cow"},             // huge pages unshared 4 KiB at a time
        {"warmup:12M@4s", "stable"},    // grows, then works without growing
        {"burst:12M", "leak"},          // a burst of leaking requests, then idle
        {"leak:12M@4s+100ms", "leak"},  // steady
        {"cow:24M@4s+100ms", "cow"},    // steady unsharing
    };
    std::vector<std::string> args = {"--preload", "32M"};
    for (const auto& [script, verdict] : expected) {
        args.insert(args.end(), {"--child", script});
    }
    FixtureProcess fixture(args);
    fixture.wait_ready();
    const ProcFs proc;
    Watcher watcher(observer, proc, fixture.manager());
    fixture.send("go");
    fixture.expect("started");
    std::size_t done = 0;
    while (watcher.elapsed_seconds() < 6.0 || done < expected.size()) {
        for (const auto& line : fixture.drain(std::chrono::milliseconds(250))) {
            done += line.starts_with("done ") ? 1 : 0;
        }
        watcher.poll();
        ASSERT_LT(watcher.elapsed_seconds(), 60.0) << "the traps did not finish";
    }
    const Diagnosis diagnosis = finish_watch(watcher, fixture.manager());
    const auto by_pid = index_by_pid(diagnosis);
    for (const auto& [script, verdict] : expected) {
        const ChildScript parsed = parse_child_script(script);
        const ScriptTruth truth = script_truth(parsed, preload);
        const pid_t pid = fixture.child(parsed.name);
        ASSERT_TRUE(by_pid.count(pid)) << script;
        const ChildDiagnosis& child = *by_pid.at(pid);
        SCOPED_TRACE(script + ": " + child.classification.reason);
        std::printf(
            "  %-18s %-7s cow %6.2f MiB (truth %5.1f)  growth %6.2f MiB (truth %5.1f)"
            "  work %.3f s  private %6.2f MiB\n",
            script.c_str(), std::string(verdict_name(child.classification.verdict)).c_str(),
            static_cast<double>(child.cow_bytes) / (1 << 20),
            static_cast<double>(truth.cow_bytes) / (1 << 20),
            static_cast<double>(child.growth_bytes) / (1 << 20),
            static_cast<double>(truth.growth_bytes) / (1 << 20), child.classification.work_seconds,
            static_cast<double>(child.private_bytes) / (1 << 20));
        EXPECT_EQ(verdict_name(child.classification.verdict), verdict);
        const auto near = [](std::uint64_t measured, std::uint64_t want) {
            return want == 0
                       ? measured < (1ULL << 20)
                       : std::abs(static_cast<double>(measured) - static_cast<double>(want)) <=
                             0.10 * static_cast<double>(want);
        };
        EXPECT_TRUE(near(child.cow_bytes, truth.cow_bytes)) << "cow " << child.cow_bytes;
        EXPECT_TRUE(near(child.growth_bytes, truth.growth_bytes))
            << "growth " << child.growth_bytes;
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
