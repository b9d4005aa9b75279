// The observer against the real kernel: the fixture's children do known amounts of
// COW writes and fresh allocations; the counts must match within 10%.
#include <bpf/bpf.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "bpf_test_support.h"
#include "demo/workload.h"
#include "model/cow_accounting.h"
#include "observe/kernel_features.h"
#include "observe/observer.h"
#include "observe/procfs.h"

namespace kidreaper {
namespace {

using testing::FixtureProcess;

constexpr std::uint64_t MiB = 1ULL << 20;
constexpr std::uint64_t kPage = 4096;
// What a child that was told to do nothing may still show (its stack, libc data).
constexpr std::uint64_t kNoiseBytes = 1 * MiB;

struct ChildTruth {
    std::uint64_t cow_bytes;
    std::uint64_t growth_bytes;
};

// The fault class: every write fault on a present page (what the slot tests compare).
std::uint64_t cow_bytes(const ChildReading& reading) {
    return reading.faults.write_present() * kPage;
}

void expect_near_truth(const std::string& name, std::uint64_t measured, std::uint64_t truth) {
    if (truth == 0) {
        EXPECT_LT(measured, kNoiseBytes) << name;
    } else {
        EXPECT_NEAR(static_cast<double>(measured), static_cast<double>(truth),
                    0.10 * static_cast<double>(truth))
            << name;
    }
}

Observer make_observer(const Logger& log) {
    return Observer({.cow = probe_features().cow_source()}, log);
}

// One way of telling COW, and how its probes attach.
struct OfferedSource {
    std::string mode;
    CowSource source;
    bool prefer_fentry = true;
};

// Every way of telling COW this kernel offers, the best first ("auto"): both fault
// sources where the kernel has both, mm by fentry and by kprobes.
std::vector<OfferedSource> offered_sources() {
    const KernelFeatures features = probe_features();
    std::vector<OfferedSource> sources = {{"auto", features.cow_source()}};
    if (features.cow_source().paired) {
        sources.push_back({"pairing", CowSource{.paired = true, .paired_fills = false}});
    }
    if (features.fault_tracepoints() && features.exact_cow()) {
        sources.push_back(
            {"exact", CowSource{.exact = true, .exact_fills = features.finish_fault_symbol}});
    }
    if (features.mm_fault_source()) {
        const CowSource mm = features.cow_source(FaultSource::mm);
        sources.push_back({"mm", mm});
        sources.push_back({"mm kprobes", mm, false});
    }
    if (features.fault_tracepoints()) {
        sources.push_back({"fault class", CowSource{}});
    }
    return sources;
}

TEST(Observer, CountsCowAndFreshGrowthOfEachChildWithin10Percent) {
    KR_REQUIRE_BPF();
    const Logger log(LogLevel::warn);
    Observer observer = make_observer(log);
    FixtureProcess fixture({"--preload", "96M", "--child", "cow:32M", "--child", "leak:16M",
                            "--child", "idle", "--child", "mixed:16M:8M", "--child",
                            "late:leak:8M"});
    fixture.wait_ready();
    const auto registered = track_manager(observer, ProcFs(), fixture.manager());
    EXPECT_EQ(registered.size(), 4u);

    fixture.go_and_wait_done(5);
    const std::map<std::string, ChildTruth> truth = {
        {"cow", {32 * MiB, 0}},         {"leak", {0, 16 * MiB}},     {"idle", {0, 0}},
        {"mixed", {16 * MiB, 8 * MiB}}, {"late-leak", {0, 8 * MiB}},
    };
    ASSERT_EQ(fixture.children().size(), truth.size());
    for (const auto& [name, pid] : fixture.children()) {
        SCOPED_TRACE(name);
        const auto reading = observer.read_child(pid);
        ASSERT_TRUE(reading.has_value()) << name << " is not tracked";
        EXPECT_EQ(reading->manager, fixture.manager());
        EXPECT_FALSE(reading->exited());
        const ChildTruth& expected = truth.at(name);
        const MemoryAccount account = account_memory(*reading, observer.cow_source());
        std::printf(
            "  %-9s cow %6.2f MiB (truth %5.1f)  growth %6.2f MiB (truth %5.1f)  exact %6.2f MiB\n",
            name.c_str(), static_cast<double>(account.cow_bytes()) / MiB,
            static_cast<double>(expected.cow_bytes) / MiB,
            static_cast<double>(account.fresh_growth_bytes) / MiB,
            static_cast<double>(expected.growth_bytes) / MiB,
            static_cast<double>(reading->faults.cow_copies * kPage) / MiB);
        expect_near_truth(name + " cow", account.cow_bytes(), expected.cow_bytes);
        expect_near_truth(name + " growth", account.fresh_growth_bytes, expected.growth_bytes);
        if (observer.exact_cow()) {
            expect_near_truth(name + " exact cow", reading->faults.cow_copies * kPage,
                              expected.cow_bytes);
        }
        if (name == "late-leak") {
            EXPECT_NE(reading->fork_ns, 0u) << "a late child is added by the fork hook";
            EXPECT_TRUE(reading->flags & KR_CHILD_FROM_FORK);
        } else {
            EXPECT_TRUE(reading->flags & KR_CHILD_FROM_USERSPACE);
        }
        // The anon counter is the kernel's: it must agree with /proc within 10%.
        const auto status = ProcFs().status(pid);
        ASSERT_TRUE(status.has_value());
        EXPECT_NEAR(static_cast<double>(reading->mem_bytes[KR_MEM_ANON]),
                    static_cast<double>(status->rss_anon),
                    0.10 * static_cast<double>(status->rss_anon + MiB));
    }
}

// One child per accuracy trap (userspace/demo/workload.h), watched in turn in each way of
// telling COW this kernel offers. Each way must match the truth, within 10%, on the
// traps it is documented to handle; its figures are printed for docs/accuracy.md.
TEST(Observer, AccuracyTrapsMatchTheirTruth) {
    KR_REQUIRE_BPF();
    const Logger log(LogLevel::warn);
    const std::uint64_t preload = 32 * MiB;
    const std::vector<std::string> scripts = {
        "shared:16Mx4", "zero:16M", "heapzero:16M", "mprotect:8Mx4", "file:16M",
        "thp:16M",      "cow:16M",  "leak:16M",     "burst:8M",      "idle"};
    std::vector<std::string> args = {"--preload", "32M"};
    for (const auto& script : scripts) {
        args.insert(args.end(), {"--child", script});
    }
    // What each way cannot tell apart (docs/accuracy.md): the fault class takes every
    // present-page write for COW and a file copy on first write for growth; kprobes
    // without finish_fault, and pairing without the page-cache tracepoint, take a file
    // copy on first write for growth.
    const auto handles = [](const CowSource& source, const std::string& script) {
        const std::string kind = script.substr(0, script.find(':'));
        if (source.exact) {
            return kind != "file" || source.exact_fills;
        }
        if (source.paired) {
            // mprotect'ed own memory: no event to pair with (the kernels that pair give
            // write access back at mprotect, so the trap takes no faults there).
            return kind != "file" || source.paired_fills;
        }
        return kind != "shared" && kind != "zero" && kind != "heapzero" && kind != "mprotect" &&
               kind != "file";
    };
    for (const auto& [mode, source, prefer_fentry] : offered_sources()) {
        SCOPED_TRACE(mode);
        Observer observer({.cow = source, .prefer_fentry = prefer_fentry}, log);
        std::printf("  mode %s: %s\n", mode.c_str(),
                    cow_source_name(observer.cow_source()).c_str());
        if (mode == "mm kprobes") {
            EXPECT_FALSE(observer.cow_source().fentry);
        }
        FixtureProcess fixture(args);
        fixture.wait_ready();
        track_manager(observer, ProcFs(), fixture.manager());
        fixture.go_and_wait_done(scripts.size());
        for (const auto& script : scripts) {
            const ChildScript parsed = parse_child_script(script);
            const ScriptTruth truth = script_truth(parsed, preload);
            const auto reading = observer.read_child(fixture.child(parsed.name));
            ASSERT_TRUE(reading.has_value()) << script << " is not tracked";
            const MemoryAccount account = account_memory(*reading, observer.cow_source());
            std::printf(
                "  %-13s %-11s cow %6.2f MiB (truth %5.1f)  growth %6.2f MiB (truth %5.1f)"
                "  excluded %6.2f MiB\n",
                script.c_str(), mode.c_str(), static_cast<double>(account.cow_bytes()) / MiB,
                static_cast<double>(truth.cow_bytes) / MiB,
                static_cast<double>(account.fresh_growth_bytes) / MiB,
                static_cast<double>(truth.growth_bytes) / MiB,
                static_cast<double>(account.excluded_write_bytes) / MiB);
            if (mode == "auto" || handles(observer.cow_source(), script)) {
                expect_near_truth(script + " cow", account.cow_bytes(), truth.cow_bytes);
                expect_near_truth(script + " growth", account.fresh_growth_bytes,
                                  truth.growth_bytes);
            }
        }
    }
}

// A swap file for the length of a test: made, swapped on, swapped off and removed.
class SwapFile {
public:
    SwapFile() {
        path_ = std::string(std::getenv("TMPDIR") != nullptr ? std::getenv("TMPDIR") : "/tmp") +
                "/kr-swap-test";
        const std::string quoted = "'" + path_ + "'";
        const std::string make = "rm -f " + quoted + " && dd if=/dev/zero of=" + quoted +
                                 " bs=1M count=128 status=none && chmod 600 " + quoted +
                                 " && mkswap " + quoted + " >/dev/null 2>&1 && swapon " + quoted +
                                 " 2>&1";
        on_ = std::system(make.c_str()) == 0;
    }
    ~SwapFile() {
        const std::string quoted = "'" + path_ + "'";
        if (on_) {
            std::system(("swapoff " + quoted).c_str());
        }
        std::remove(path_.c_str());
    }
    SwapFile(const SwapFile&) = delete;
    SwapFile& operator=(const SwapFile&) = delete;
    bool on() const { return on_; }

private:
    std::string path_;
    bool on_ = false;
};

// A leak that is swapped out is still a leak: growth counts resident and swapped anon.
// Needs a file system that can hold a swap file (the qemu test bed's tmpfs root cannot:
// scripts/test leaves this test out there).
TEST(Observer, SwappedOutLeakIsStillGrowth) {
    KR_REQUIRE_BPF();
    const SwapFile swap;
    if (!swap.on()) {
        if (testing::running_in_ci()) {
            FAIL() << "CI=true and swapon refused a swap file in TMPDIR (or /tmp)";
        }
        GTEST_SKIP() << "swapon refused a swap file in TMPDIR (or /tmp): no swap to test with";
    }
    const Logger log(LogLevel::warn);
    Observer observer = make_observer(log);
    FixtureProcess fixture({"--preload", "8M", "--child", "swapleak:16M", "--child", "leak:16M"});
    fixture.wait_ready();
    track_manager(observer, ProcFs(), fixture.manager());
    fixture.go_and_wait_done(2);
    const pid_t swapped = fixture.child("swapleak");
    const auto status = ProcFs().status(swapped);
    ASSERT_TRUE(status.has_value());
    EXPECT_GT(status->vm_swap, 8 * MiB) << "MADV_PAGEOUT swapped the leak out";
    for (const auto& [name, pid] : fixture.children()) {
        const auto reading = observer.read_child(pid);
        ASSERT_TRUE(reading.has_value()) << name;
        const MemoryAccount account = account_memory(*reading, observer.cow_source());
        std::printf(
            "  %-9s growth %6.2f MiB (truth 16.0)  resident anon %6.2f MiB  swap %6.2f MiB\n",
            name.c_str(), static_cast<double>(account.fresh_growth_bytes) / MiB,
            static_cast<double>(reading->mem_bytes[KR_MEM_ANON]) / MiB,
            static_cast<double>(reading->mem_bytes[KR_MEM_SWAP]) / MiB);
        expect_near_truth(name + " growth", account.fresh_growth_bytes, 16 * MiB);
    }
}

TEST(Observer, ExitedChildIsMarkedAndKeepsWhatItHad) {
    KR_REQUIRE_BPF();
    const Logger log(LogLevel::warn);
    Observer observer = make_observer(log);
    FixtureProcess fixture({"--preload", "16M", "--child", "leak:8M", "--child", "idle"});
    fixture.wait_ready();
    track_manager(observer, ProcFs(), fixture.manager());
    fixture.go_and_wait_done(2);
    const pid_t leak = fixture.child("leak");
    fixture.send("exit leak");
    fixture.expect("exited " + std::to_string(leak));

    const auto reading = observer.read_child(leak);
    ASSERT_TRUE(reading.has_value());
    EXPECT_TRUE(reading->exited());
    EXPECT_NE(reading->exit_ns, 0u);
    expect_near_truth("exited leak growth", reading->anon_growth_bytes(), 8 * MiB);
    const auto idle = observer.read_child(fixture.child("idle"));
    ASSERT_TRUE(idle.has_value());
    EXPECT_FALSE(idle->exited());

    EXPECT_FALSE(observer.forget_child(leak, reading->start_ns + 1)) << "another start time";
    EXPECT_TRUE(observer.read_child(leak).has_value());
    EXPECT_TRUE(observer.forget_child(leak, reading->start_ns));
    EXPECT_FALSE(observer.read_child(leak).has_value());
}

TEST(Observer, IgnoresProcessesOfOtherManagers) {
    KR_REQUIRE_BPF();
    const Logger log(LogLevel::warn);
    Observer observer = make_observer(log);
    FixtureProcess watched({"--preload", "8M", "--child", "idle"});
    FixtureProcess other({"--preload", "8M", "--child", "cow:4M", "--child", "late:leak:4M"});
    watched.wait_ready();
    other.wait_ready();
    track_manager(observer, ProcFs(), watched.manager());
    other.go_and_wait_done(2);
    watched.go_and_wait_done(1);
    std::set<pid_t> tracked;
    for (const auto& reading : observer.read_children()) {
        tracked.insert(reading.pid);
    }
    EXPECT_EQ(tracked, std::set<pid_t>{watched.child("idle")});
}

TEST(Observer, BatchedAndPerKeyReadsAgree) {
    KR_REQUIRE_BPF();
    const Logger log(LogLevel::warn);
    // The kernel's own fault source: arm64 has no tracepoints, only mm mode.
    const CowSource source = probe_features().cow_source();
    Observer batched({.cow = source, .batch_lookups = true}, log);
    Observer per_key({.cow = source, .batch_lookups = false}, log);
    // Every fault slot in one batch (what a poll of 512 children or more does).
    Observer all_slots({.cow = source, .batch_lookups = true, .batch_slots_from = 1}, log);
    FixtureProcess fixture({"--preload", "8M", "--child", "cow:4M", "--child", "leak:4M", "--child",
                            "idle", "--child", "late:leak:2M"});
    fixture.wait_ready();
    track_manager(batched, ProcFs(), fixture.manager());
    track_manager(per_key, ProcFs(), fixture.manager());
    track_manager(all_slots, ProcFs(), fixture.manager());
    fixture.go_and_wait_done(4);
    auto by_pid = [](const std::vector<ChildReading>& readings) {
        std::map<pid_t, ChildReading> map;
        for (const auto& reading : readings) {
            map[reading.pid] = reading;
        }
        return map;
    };
    const auto a = by_pid(batched.read_children());
    const auto b = by_pid(per_key.read_children());
    const auto c = by_pid(all_slots.read_children());
    ASSERT_EQ(a.size(), 4u);
    ASSERT_EQ(b.size(), 4u);
    ASSERT_EQ(c.size(), 4u);
    for (const auto& [pid, reading] : a) {
        ASSERT_TRUE(b.count(pid)) << pid;
        ASSERT_TRUE(c.count(pid)) << pid;
        EXPECT_EQ(reading.faults.write_present(), c.at(pid).faults.write_present()) << pid;
        EXPECT_EQ(reading.faults.write_absent, c.at(pid).faults.write_absent) << pid;
        const ChildReading& other = b.at(pid);
        EXPECT_EQ(reading.manager, other.manager);
        EXPECT_EQ(reading.faults.write_present(), other.faults.write_present()) << pid;
        EXPECT_EQ(reading.faults.write_absent, other.faults.write_absent) << pid;
        // Each instance reads its own random one in eight rss_stat events (6.2+): the
        // absolute values they last saw may differ by the few pages since.
        EXPECT_NEAR(static_cast<double>(reading.mem_bytes[KR_MEM_ANON]),
                    static_cast<double>(other.mem_bytes[KR_MEM_ANON]), 1.0 * MiB)
            << pid;
    }
    EXPECT_GT(a.at(fixture.child("cow")).faults.write_present(), 900u);
}

TEST(Observer, PrefilterBucketsFollowTrackedChildren) {
    KR_REQUIRE_BPF();
    const Logger log(LogLevel::warn);
    Observer observer = make_observer(log);
    FixtureProcess fixture(
        {"--preload", "4M", "--child", "idle", "--child", "cow:1M", "--child", "late:leak:1M"});
    fixture.wait_ready();
    track_manager(observer, ProcFs(), fixture.manager());
    fixture.go_and_wait_done(3);
    ASSERT_EQ(fixture.children().size(), 3u);
    for (const auto& [name, pid] : fixture.children()) {
        EXPECT_EQ(observer.tracked_bucket_count(pid), 1u)
            << name << ": registered or forked children count once";
    }
    EXPECT_EQ(observer.tracked_bucket_count(fixture.manager()), 0u);
    for (const auto& [name, pid] : fixture.children()) {
        const auto reading = observer.read_child(pid);
        ASSERT_TRUE(reading.has_value()) << name;
        EXPECT_TRUE(observer.forget_child(pid, reading->start_ns)) << name;
        // twice: the second finds nothing to release
        EXPECT_FALSE(observer.forget_child(pid, reading->start_ns)) << name;
        EXPECT_EQ(observer.tracked_bucket_count(pid), 0u) << name;
    }
}

TEST(Observer, SlotAndHashCountersAddUp) {
    KR_REQUIRE_BPF();
    const Logger log(LogLevel::warn);
    Observer observer = make_observer(log);
    FixtureProcess fixture(
        {"--preload", "32M", "--child", "taken=cow:8M", "--child", "late:cow:16M@2s"});
    fixture.wait_ready();
    // Another tracked tgid holds the slot of "taken": it must count in the hash instead.
    const pid_t taken = fixture.child("taken");
    EXPECT_FALSE(observer.claim_slot(taken + KR_FAULT_SLOTS)) << "only tracked children";
    ASSERT_EQ(observer.add_child(taken + KR_FAULT_SLOTS, 1, {}), ChildAdded::added);
    track_manager(observer, ProcFs(), fixture.manager());
    EXPECT_FALSE(observer.claim_slot(taken));
    fixture.send("go");
    fixture.expect("started");
    // The late child counts in the hash until its slot is claimed, half-way through.
    usleep(1'000'000);
    EXPECT_TRUE(observer.claim_slot(fixture.child("late-cow")));
    fixture.expect("done ");
    fixture.expect("done ");
    for (const auto& [name, truth] :
         std::map<std::string, std::uint64_t>{{"taken", 8 * MiB}, {"late-cow", 16 * MiB}}) {
        const auto reading = observer.read_child(fixture.child(name));
        ASSERT_TRUE(reading.has_value()) << name;
        expect_near_truth(name + " cow", cow_bytes(*reading), truth);
    }
    EXPECT_TRUE(observer.forget_child(taken + KR_FAULT_SLOTS, 0));
}

// `--fault-source` reaches the loader: each source this kernel has runs diagnose's demo
// to the right verdicts and says so in "mode"; one it lacks is a one-line error, exit 1.
TEST(FaultSourceFlag, EachSourceDiagnosesTheDemoOrNamesWhatIsMissing) {
    KR_REQUIRE_BPF();
    const KernelFeatures features = probe_features();
    const std::map<std::string, bool> offered = {{"tracepoints", features.fault_tracepoints()},
                                                 {"mm", features.mm_fault_source()}};
    for (const auto& [source, available] : offered) {
        SCOPED_TRACE(source);
        const auto result = testing::run_command_with_stderr(
            // Verdicts need a 3 s window (ClassifierConfig): 6 s leaves room for a slow start
            // (sanitizers, emulated guests).
            {testing::sibling_path("../kidreaper"), "diagnose", "--demo", "--duration", "6s",
             "--format", "json", "--fault-source", source},
            std::chrono::seconds(90));
        if (!available) {
            EXPECT_EQ(result.exit_status, 1) << result.errors;
            EXPECT_EQ(std::count(result.errors.begin(), result.errors.end(), '\n'), 1)
                << result.errors;
            EXPECT_NE(result.errors.find("kidreaper: error: the " + source + " fault source"),
                      std::string::npos)
                << result.errors;
            continue;
        }
        ASSERT_EQ(result.exit_status, 0) << result.errors;
        const auto diagnosis = nlohmann::json::parse(result.output);
        const std::string mode = diagnosis.at("mode");
        EXPECT_EQ(mode.rfind(source == "mm" ? "mm: " : "raw tracepoints", 0), 0u) << mode;
        std::multiset<std::string> verdicts;
        for (const auto& child : diagnosis.at("children")) {
            verdicts.insert(child.at("verdict").get<std::string>());
        }
        EXPECT_EQ(verdicts, (std::multiset<std::string>{"cow", "leak", "stable"}));
    }
}

TEST(Observer, TwoInstancesCoexistAndDetachCompletely) {
    KR_REQUIRE_BPF();
    const Logger log(LogLevel::warn);
    const int before = testing::count_loaded_programs();
    {
        Observer first = make_observer(log);
        Observer second = make_observer(log);
        FixtureProcess fixture({"--preload", "8M", "--child", "cow:4M"});
        fixture.wait_ready();
        track_manager(first, ProcFs(), fixture.manager());
        fixture.go_and_wait_done(1);
        EXPECT_EQ(first.read_children().size(), 1u);
        EXPECT_TRUE(second.read_children().empty()) << "instances must not share maps";
        EXPECT_EQ(testing::count_loaded_programs(), before + 2);
    }
    const int after = testing::wait_for_loaded_programs(before);
    EXPECT_EQ(after, before) << "programs left loaded after the observers were destroyed";
}

}  // namespace
}  // namespace kidreaper
