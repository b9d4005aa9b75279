// The reaper's pure helpers: metric estimates, ground truth, idle syscalls.
#include "act/idle.h"
#include "daemon/reaper.h"
#include "observe/manager_lookup.h"

#include <sys/syscall.h>

#include <gtest/gtest.h>

#include "common/error.h"

namespace kidreaper {
namespace {

constexpr std::uint64_t MiB = 1ULL << 20;

ChildRecord record_with(std::uint64_t private_bytes, std::uint64_t anchor_anon,
                        std::uint64_t anchor_cow, std::uint64_t anon_now, std::uint64_t cow_now) {
    ChildRecord record;
    SmapsRollup smaps;
    smaps.private_dirty = private_bytes;
    smaps.pss = private_bytes + 10 * MiB;
    smaps.rss = private_bytes + 40 * MiB;
    record.smaps_last = smaps;
    record.anchor_fresh_bytes = anchor_anon;
    record.anchor_cow_bytes = anchor_cow;
    record.latest.mem_bytes[KR_MEM_ANON] = anon_now;
    record.latest.mem_bytes[KR_MEM_FILE] = 5 * MiB;
    record.account.anon_cow_bytes = cow_now;
    record.account.fresh_bytes = anon_now;
    record.samples.append({1.0, cow_now, anon_now});
    return record;
}

TEST(EstimateMetric, PrivateAddsCowAndGrowthSinceTheLastGroundTruth) {
    // 20 MiB private at the anchor; since then 8 MiB unshared and 6 MiB fresh.
    const auto record = record_with(20 * MiB, 100 * MiB, 2 * MiB, 106 * MiB, 10 * MiB);
    EXPECT_EQ(estimate_metric(record, Metric::private_memory), 34 * MiB);
    EXPECT_EQ(estimate_metric(record, Metric::pss), 44 * MiB);
}

TEST(EstimateMetric, FreedMemoryLowersTheEstimateButNotBelowZero) {
    auto record = record_with(20 * MiB, 100 * MiB, 0, 90 * MiB, 0);
    EXPECT_EQ(estimate_metric(record, Metric::private_memory), 10 * MiB);
    record = record_with(1 * MiB, 100 * MiB, 0, 50 * MiB, 0);
    EXPECT_EQ(estimate_metric(record, Metric::private_memory), 0u);
}

TEST(EstimateMetric, RssAndAnonComeFromTheKernelCounters) {
    const auto record = record_with(20 * MiB, 100 * MiB, 0, 106 * MiB, 0);
    EXPECT_EQ(estimate_metric(record, Metric::anon), 106 * MiB);
    EXPECT_EQ(estimate_metric(record, Metric::rss), 111 * MiB);
}

TEST(EstimateMetric, NoGroundTruthYetMeansNoPrivateEstimate) {
    ChildRecord record;
    EXPECT_EQ(estimate_metric(record, Metric::private_memory), 0u);
}

TEST(TruthMetric, ReadsTheRightSmapsField) {
    SmapsRollup smaps;
    smaps.private_clean = 1 * MiB;
    smaps.private_dirty = 2 * MiB;
    smaps.pss = 5 * MiB;
    smaps.rss = 9 * MiB;
    smaps.anonymous = 7 * MiB;
    EXPECT_EQ(truth_metric(smaps, Metric::private_memory), 3 * MiB);
    EXPECT_EQ(truth_metric(smaps, Metric::pss), 5 * MiB);
    EXPECT_EQ(truth_metric(smaps, Metric::rss), 9 * MiB);
    EXPECT_EQ(truth_metric(smaps, Metric::anon), 7 * MiB);
}

TEST(IdleSyscall, ReadsTheNumberFromProcSyscall) {
    const std::set<long> idle = {SYS_accept, SYS_accept4};
    // The running architecture's numbers (x86-64: accept 43, accept4 288, read 0).
    const std::string args = " 0x3 0x0 0x0 0x80000 0x0 0x0 0x7ffd 0x7f12";
    EXPECT_TRUE(is_idle_syscall(std::to_string(SYS_accept) + args, idle));
    EXPECT_TRUE(is_idle_syscall(std::to_string(SYS_accept4) + args, idle));
    EXPECT_FALSE(is_idle_syscall(std::to_string(SYS_read) + args, idle)) << "read";
    EXPECT_FALSE(is_idle_syscall("running", idle));
    EXPECT_FALSE(is_idle_syscall("-1 0x7ffd 0x7f12", idle));
    EXPECT_FALSE(is_idle_syscall("", idle));
    EXPECT_FALSE(is_idle_syscall("43x", idle));
}

TEST(Metric, ParsesItsNames) {
    EXPECT_EQ(parse_metric("private"), Metric::private_memory);
    EXPECT_EQ(parse_metric("pss"), Metric::pss);
    EXPECT_EQ(parse_metric("rss"), Metric::rss);
    EXPECT_EQ(parse_metric("anon"), Metric::anon);
    EXPECT_THROW(parse_metric("vsz"), UsageError);
    EXPECT_EQ(metric_name(Metric::private_memory), "private");
}

}  // namespace
}  // namespace kidreaper
