// Pid reuse and full maps against the real kernel. A tracked child exits and a new
// process takes its pid (forced through /proc/sys/kernel/ns_last_pid) before the loader
// has read the exit: the old child's exit must be read with its own start time and
// memory, the new one tracked with fresh counters, and neither forgotten. Maps made small
// must count what they could not take, and say so once.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "bpf_test_support.h"
#include "demo/workload.h"
#include "observe/kernel_features.h"
#include "observe/observer.h"
#include "observe/procfs.h"
#include "observe/watcher.h"

namespace kidreaper {
namespace {

using testing::FixtureProcess;

constexpr std::uint64_t MiB = 1ULL << 20;
constexpr std::uint64_t kPage = 4096;
// What a child that was told to do nothing may still show (its stack, libc data).
constexpr std::uint64_t kNoiseBytes = 1 * MiB;

std::uint64_t cow_class_bytes(const ChildReading& reading) {
    return reading.faults.write_present() * kPage;
}

// Asks the fixture's manager for a child running `script` with the pid `pid`; returns the
// pid it got (or fails the test with the manager's error). Reads up to the "child" line.
pid_t fork_in_fixture(FixtureProcess& fixture, pid_t pid, const std::string& script) {
    fixture.send("fork " + std::to_string(pid) + " " + script);
    while (true) {
        const std::string line = fixture.expect("");
        if (line.rfind("child ", 0) == 0) {
            return static_cast<pid_t>(std::stol(line.substr(6)));
        }
        if (line.rfind("error", 0) == 0) {
            ADD_FAILURE() << line;
            return 0;
        }
    }
}

// The readings of `pid`: its displaced exits and its live entry.
struct PidReadings {
    std::vector<ChildReading> exits;
    std::optional<ChildReading> live;
};

PidReadings readings_of(const Observer& observer, pid_t pid) {
    PidReadings found;
    for (const ChildReading& reading : observer.read_children()) {
        if (reading.pid != pid) {
            continue;
        }
        if (reading.displaced) {
            found.exits.push_back(reading);
        } else {
            EXPECT_FALSE(found.live.has_value()) << "two live entries for one pid";
            found.live = reading;
        }
    }
    return found;
}

// A tgid that shares `pid`'s fast slot (never a real process here: it only blocks it).
pid_t slot_blocker(pid_t pid) {
    return pid > KR_FAULT_SLOTS ? pid - KR_FAULT_SLOTS : pid + KR_FAULT_SLOTS;
}

// The manager's child "old" copies 16 MiB, exits, and the manager forks "reuser" (idle)
// with its pid before the loader reads again. With `old_owns_slot` false another tracked
// tgid holds the slot, so the old child counts in the faults hash.
void expect_reuse_told_apart(bool old_owns_slot) {
    const Logger log(LogLevel::warn);
    Observer observer({.cow = probe_features().cow_source()}, log);
    FixtureProcess fixture({"--preload", "32M", "--child", "old=cow:16M", "--child", "idle"});
    fixture.wait_ready();
    const pid_t old = fixture.child("old");
    const pid_t blocker = slot_blocker(old);
    if (!old_owns_slot) {
        ASSERT_EQ(observer.add_child(blocker, 1, {}), ChildAdded::added);
    }
    track_manager(observer, ProcFs(), fixture.manager());
    EXPECT_EQ(observer.claim_slot(old), old_owns_slot);
    fixture.go_and_wait_done(2);
    const auto before = observer.read_child(old);  // the loader's last read of the old child
    ASSERT_TRUE(before.has_value());
    EXPECT_GT(cow_class_bytes(*before), 12 * MiB);

    fixture.send("exit old");
    fixture.expect("exited " + std::to_string(old));
    ASSERT_EQ(fork_in_fixture(fixture, old, "reuser=idle"), old);
    fixture.expect("done " + std::to_string(old));

    const PidReadings after = readings_of(observer, old);
    ASSERT_EQ(after.exits.size(), 1u) << "the old child's exit must survive the reuse";
    const ChildReading& exit = after.exits.front();
    EXPECT_TRUE(exit.exited());
    EXPECT_EQ(exit.start_ns, before->start_ns);
    EXPECT_EQ(exit.manager, fixture.manager());
    EXPECT_NEAR(static_cast<double>(exit.mem_bytes[KR_MEM_ANON]),
                static_cast<double>(before->mem_bytes[KR_MEM_ANON]), 1.0 * MiB);
    EXPECT_EQ(exit.faults_complete, old_owns_slot)
        << "only the fast slot keeps a displaced child's counts";
    if (old_owns_slot) {
        EXPECT_GE(exit.faults.write_present(), before->faults.write_present());
    }
    ASSERT_TRUE(after.live.has_value()) << "the new child must be tracked";
    EXPECT_GT(after.live->start_ns, before->start_ns);
    EXPECT_TRUE(after.live->flags & KR_CHILD_FROM_FORK);
    EXPECT_FALSE(after.live->exited());
    EXPECT_LT(cow_class_bytes(*after.live), kNoiseBytes) << "fresh counters, not the old child's";

    // The loader, done with the old child, must not forget the new one.
    EXPECT_FALSE(observer.forget_child(old, before->start_ns));
    observer.consume_exit(exit);
    EXPECT_EQ(observer.claim_slot(old), old_owns_slot) << "the slot is free again once read";
    for (int poll = 0; poll < 3; ++poll) {
        const PidReadings later = readings_of(observer, old);
        EXPECT_TRUE(later.exits.empty()) << "consumed";
        ASSERT_TRUE(later.live.has_value()) << "poll " << poll;
        EXPECT_EQ(later.live->start_ns, after.live->start_ns);
        EXPECT_LT(cow_class_bytes(*later.live), kNoiseBytes);
    }
    if (!old_owns_slot) {
        EXPECT_TRUE(observer.forget_child(blocker, 0));
    }
}

TEST(PidReuse, ObserverReadsTheOldExitAndTracksTheNewChildFromItsSlot) {
    KR_REQUIRE_BPF();
    expect_reuse_told_apart(true);
}

TEST(PidReuse, ObserverReadsTheOldExitAndTracksTheNewChildFromTheHash) {
    KR_REQUIRE_BPF();
    expect_reuse_told_apart(false);
}

// A process that is no manager's child takes the pid (here a child of the test): the old
// exit survives with the old child's memory, and the new process is not tracked.
TEST(PidReuse, ReuseByAnUntrackedProcessKeepsTheExitAndTracksNothing) {
    KR_REQUIRE_BPF();
    const Logger log(LogLevel::warn);
    Observer observer({.cow = probe_features().cow_source()}, log);
    FixtureProcess fixture({"--preload", "8M", "--child", "old=leak:4M"});
    fixture.wait_ready();
    const pid_t old = fixture.child("old");
    track_manager(observer, ProcFs(), fixture.manager());
    fixture.go_and_wait_done(1);
    const auto before = observer.read_child(old);
    ASSERT_TRUE(before.has_value());
    fixture.send("exit old");
    fixture.expect("exited " + std::to_string(old));

    int ready[2];
    ASSERT_EQ(pipe(ready), 0);
    const pid_t stranger = fork_at_pid(old);
    if (stranger == 0) {
        // Grows well past the old child, which must not show in its exit.
        std::vector<char> memory(32 * MiB, 1);
        const char done = memory[MiB] != 0 ? 'y' : 'n';
        if (write(ready[1], &done, 1) != 1) {
            _exit(1);
        }
        pause();
        _exit(0);
    }
    close(ready[1]);
    char done = 0;
    ASSERT_EQ(read(ready[0], &done, 1), 1);
    close(ready[0]);
    const PidReadings after = readings_of(observer, old);
    kill(stranger, SIGKILL);
    waitpid(stranger, nullptr, 0);
    ASSERT_EQ(stranger, old);
    ASSERT_EQ(after.exits.size(), 1u);
    EXPECT_EQ(after.exits.front().start_ns, before->start_ns);
    EXPECT_NEAR(static_cast<double>(after.exits.front().mem_bytes[KR_MEM_ANON]),
                static_cast<double>(before->mem_bytes[KR_MEM_ANON]), 1.0 * MiB);
    EXPECT_FALSE(after.live.has_value()) << "the stranger is not a manager's child";
    EXPECT_EQ(observer.tracked_bucket_count(old), 0u);
}

// The same at the Watcher level: the old record is kept (exited, displaced), the new
// child has a record of its own, with the kernel's start time as its identity.
TEST(PidReuse, WatcherKeepsTheOldRecordAndFollowsTheNewChild) {
    KR_REQUIRE_BPF();
    const Logger log(LogLevel::warn);
    Observer observer({.cow = probe_features().cow_source()}, log);
    FixtureProcess fixture({"--preload", "32M", "--child", "old=cow:16M", "--child", "idle"});
    fixture.wait_ready();
    const pid_t old = fixture.child("old");
    const ProcFs proc;  // the watcher keeps a reference
    Watcher watcher(observer, proc, fixture.manager());
    fixture.go_and_wait_done(2);
    watcher.poll();
    ASSERT_TRUE(watcher.children().contains(old));
    const ChildRecord old_record = watcher.children().at(old);
    EXPECT_GT(old_record.account.cow_bytes(), 12 * MiB);

    fixture.send("exit old");
    fixture.expect("exited " + std::to_string(old));
    ASSERT_EQ(fork_in_fixture(fixture, old, "reuser=idle"), old);
    fixture.expect("done " + std::to_string(old));
    watcher.poll();

    ASSERT_EQ(watcher.displaced().size(), 1u);
    const ChildRecord& gone = watcher.displaced().front();
    EXPECT_EQ(gone.pid, old);
    EXPECT_EQ(gone.start_ns, old_record.start_ns);
    EXPECT_TRUE(gone.exited);
    EXPECT_TRUE(gone.pid_reused);
    EXPECT_TRUE(gone.latest.exited());
    EXPECT_GE(gone.account.cow_bytes(), old_record.account.cow_bytes());
    ASSERT_TRUE(watcher.children().contains(old));
    for (int poll = 0; poll < 4; ++poll) {
        const ChildRecord& fresh = watcher.children().at(old);
        EXPECT_NE(fresh.start_ns, old_record.start_ns);
        EXPECT_FALSE(fresh.exited) << "poll " << poll;
        EXPECT_FALSE(fresh.present_at_start);
        EXPECT_EQ(fresh.comm, "kr-reuser");
        EXPECT_LT(fresh.account.cow_bytes(), kNoiseBytes);
        const auto stat = ProcFs().stat(old);
        ASSERT_TRUE(stat.has_value());
        EXPECT_EQ(fresh.start_ticks, stat->start_ticks) << "the kernel's start time, in ticks";
        EXPECT_TRUE(observer.read_child(old).has_value()) << "forgotten";
        watcher.poll();
    }
    EXPECT_EQ(watcher.displaced().size(), 1u);
}

// The lines a Logger wrote to a temporary file.
class CapturedLog {
public:
    CapturedLog() : file_(std::tmpfile()), log_(LogLevel::warn, file_) {}
    ~CapturedLog() { std::fclose(file_); }
    CapturedLog(const CapturedLog&) = delete;
    CapturedLog& operator=(const CapturedLog&) = delete;
    const Logger& log() const { return log_; }
    std::string text() const {
        std::fflush(file_);
        std::rewind(file_);
        std::string text;
        char buffer[512];
        while (std::fgets(buffer, sizeof buffer, file_) != nullptr) {
            text += buffer;
        }
        return text;
    }

private:
    std::FILE* file_;
    Logger log_;
};

std::size_t count_of(const std::string& text, const std::string& part) {
    std::size_t count = 0;
    for (std::size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) {
        ++count;
    }
    return count;
}

// Two slots for five children: three are counted as dropped (one at registration, two
// at fork), none is lost without a count, and the warning comes once.
TEST(MapCapacity, FullChildrenMapIsCountedAndWarnedOnce) {
    KR_REQUIRE_BPF();
    const CapturedLog captured;
    Observer observer({.cow = probe_features().cow_source(), .max_children = 2}, captured.log());
    FixtureProcess fixture({"--preload", "4M", "--child", "idle", "--child", "idle", "--child",
                            "idle", "--child", "late:idle", "--child", "late:idle"});
    fixture.wait_ready();
    const auto registered = track_manager(observer, ProcFs(), fixture.manager());
    EXPECT_EQ(registered.size(), 2u);
    EXPECT_EQ(observer.capacity().children.dropped, 1u);
    EXPECT_EQ(observer.capacity().children.capacity, 2u);
    const auto first = observer.take_capacity_notices();
    ASSERT_EQ(first.size(), 1u);
    EXPECT_EQ(first[0].map, "children");

    fixture.go_and_wait_done(5);  // "started" comes after the late forks
    const CapacityCounts counts = observer.capacity();
    EXPECT_EQ(counts.children.dropped, 3u) << "the fork hook counts the two late children";
    EXPECT_EQ(counts.faults.dropped, 0u);
    EXPECT_EQ(observer.read_children().size() + counts.children.dropped, fixture.children().size())
        << "every child is tracked or counted";
    EXPECT_TRUE(observer.take_capacity_notices().empty()) << "once per map";
    EXPECT_EQ(count_of(captured.text(), "children map is full"), 1u) << captured.text();
}

// Exits of reused pids beyond the exits map's capacity are counted; the watcher still
// records both old children as exited (the one without its last reading from the start
// time of the new child on its pid).
TEST(MapCapacity, FullExitsMapLosesOnlyTheLastReadingAndSaysSo) {
    KR_REQUIRE_BPF();
    const Logger log(LogLevel::error);
    Observer observer({.cow = probe_features().cow_source(), .max_exits = 1}, log);
    FixtureProcess fixture(
        {"--preload", "16M", "--child", "a=cow:4M", "--child", "b=cow:4M", "--child", "idle"});
    fixture.wait_ready();
    const pid_t a = fixture.child("a");
    const pid_t b = fixture.child("b");
    const ProcFs proc;  // the watcher keeps a reference
    Watcher watcher(observer, proc, fixture.manager());
    EXPECT_TRUE(watcher.take_capacity_notices().empty());
    fixture.go_and_wait_done(3);
    watcher.poll();
    for (const auto& [name, pid] : {std::pair{"a", a}, std::pair{"b", b}}) {
        fixture.send(std::string("exit ") + name);
        fixture.expect("exited " + std::to_string(pid));
    }
    ASSERT_EQ(fork_in_fixture(fixture, a, "new-a=idle"), a);
    fixture.expect("done " + std::to_string(a));
    ASSERT_EQ(fork_in_fixture(fixture, b, "new-b=idle"), b);
    fixture.expect("done " + std::to_string(b));
    watcher.poll();
    EXPECT_EQ(observer.capacity().exits.dropped, 1u);
    const auto notices = watcher.take_capacity_notices();
    ASSERT_EQ(notices.size(), 1u);
    EXPECT_EQ(notices[0].map, "exits");
    EXPECT_EQ(watcher.displaced().size(), 2u);
    for (const ChildRecord& gone : watcher.displaced()) {
        EXPECT_TRUE(gone.exited);
        EXPECT_TRUE(gone.pid == a || gone.pid == b);
        EXPECT_GT(gone.account.cow_bytes(), 2 * MiB) << "what was read of it stays";
    }
    for (pid_t pid : {a, b}) {
        ASSERT_TRUE(watcher.children().contains(pid));
        EXPECT_FALSE(watcher.children().at(pid).exited);
        EXPECT_LT(watcher.children().at(pid).account.cow_bytes(), kNoiseBytes);
    }
}

// The watcher hands the notices over once, across polls.
TEST(MapCapacity, WatcherHandsOverEachNoticeOnce) {
    KR_REQUIRE_BPF();
    const Logger log(LogLevel::error);
    Observer observer({.cow = probe_features().cow_source(), .max_children = 1}, log);
    FixtureProcess fixture({"--preload", "4M", "--child", "idle", "--child", "idle"});
    fixture.wait_ready();
    const ProcFs proc;  // the watcher keeps a reference
    Watcher watcher(observer, proc, fixture.manager());
    const auto notices = watcher.take_capacity_notices();
    ASSERT_EQ(notices.size(), 1u);
    EXPECT_EQ(notices[0].map, "children");
    EXPECT_EQ(notices[0].dropped, 1u);
    fixture.go_and_wait_done(2);
    watcher.poll();
    watcher.poll();
    EXPECT_TRUE(watcher.take_capacity_notices().empty());
    EXPECT_EQ(watcher.children().size(), 1u);
}

}  // namespace
}  // namespace kidreaper
