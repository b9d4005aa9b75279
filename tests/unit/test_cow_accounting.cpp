// COW and growth from synthetic counters, in each observer mode.
#include "model/cow_accounting.h"

#include <gtest/gtest.h>

namespace kidreaper {
namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t MiB = 1ULL << 20;
constexpr std::uint64_t kPagesPerMiB = MiB / kPage;

// A child that started with 40 MiB of anon memory.
ChildReading started_with_40m() {
    ChildReading reading;
    reading.anon_start_bytes = 40 * MiB;
    reading.mem_bytes[KR_MEM_ANON] = 40 * MiB;
    return reading;
}

TEST(CowAccounting, FaultClassCountsEveryPresentWriteAsCow) {
    ChildReading reading = started_with_40m();
    reading.faults.write_present_user = 3 * kPagesPerMiB;
    reading.faults.write_present_kernel = 1 * kPagesPerMiB;
    const auto account = account_memory(reading, {});
    EXPECT_EQ(account.anon_cow_bytes, 4 * MiB);
    EXPECT_EQ(account.file_cow_bytes, 0u);
    EXPECT_EQ(account.excluded_write_bytes, 0u);
    EXPECT_EQ(account.fresh_growth_bytes, 0u);
}

TEST(CowAccounting, PairingLeavesOutSharedWritesAndZeroPageFills) {
    ChildReading reading = started_with_40m();
    // 8 MiB of inherited anon COW (no event), 16 MiB of msync'ed shared-file writes (a
    // MAP_SHARED mapping), 2 MiB of zero-page fills (ANON rose alone): the fault class
    // calls all 26 MiB COW.
    reading.faults.write_present_user = 26 * kPagesPerMiB;
    reading.faults.paired_shared_writes = 16 * kPagesPerMiB;
    reading.faults.paired_zero_fills = 2 * kPagesPerMiB;
    reading.mem_bytes[KR_MEM_ANON] = 42 * MiB;
    const auto account = account_memory(reading, {.paired = true});
    EXPECT_EQ(account.anon_cow_bytes, 8 * MiB);
    EXPECT_EQ(account.file_cow_bytes, 0u);
    EXPECT_EQ(account.excluded_write_bytes, 18 * MiB);
    EXPECT_EQ(account.fresh_growth_bytes, 2 * MiB) << "the zero-page fills are fresh";
}

TEST(CowAccounting, PairingCountsFileCopiesAsCowNotGrowth) {
    ChildReading reading = started_with_40m();
    // 4 MiB of present writes that copied a file page (FILE fell, ANON rose), 6 MiB of
    // first writes to a private file mapping (a page-cache fault, then ANON rose), 3 MiB
    // of fresh memory. ANON rose by 4 + 6 + 3 MiB.
    reading.faults.write_present_user = 4 * kPagesPerMiB;
    reading.faults.paired_file_copies = 4 * kPagesPerMiB;
    reading.faults.write_absent = 9 * kPagesPerMiB;
    reading.faults.paired_file_fills = 6 * kPagesPerMiB;
    reading.mem_bytes[KR_MEM_ANON] = (40 + 13) * MiB;
    const auto account = account_memory(reading, {.paired = true, .paired_fills = true});
    EXPECT_EQ(account.anon_cow_bytes, 0u);
    EXPECT_EQ(account.file_cow_bytes, 10 * MiB);
    EXPECT_EQ(account.fresh_growth_bytes, 3 * MiB);
    EXPECT_EQ(account.fresh_bytes, 43 * MiB);
    // Without the page-cache tracepoint, first writes to file pages are growth.
    const auto no_fills = account_memory(reading, {.paired = true});
    EXPECT_EQ(no_fills.file_cow_bytes, 4 * MiB);
    EXPECT_EQ(no_fills.fresh_growth_bytes, 9 * MiB);
}

TEST(CowAccounting, ExactCopiesAndFileFills) {
    ChildReading reading = started_with_40m();
    reading.faults.write_present_user = 20 * kPagesPerMiB;
    reading.faults.cow_copies = 8 * kPagesPerMiB;
    reading.faults.file_copies = 2 * kPagesPerMiB;
    reading.faults.zero_page_copies = 1 * kPagesPerMiB;
    reading.faults.fill_copies = 3 * kPagesPerMiB;
    reading.mem_bytes[KR_MEM_ANON] = (40 + 2 + 1 + 3) * MiB;
    const auto with_fills = account_memory(reading, {.exact = true, .exact_fills = true});
    EXPECT_EQ(with_fills.anon_cow_bytes, 8 * MiB);
    EXPECT_EQ(with_fills.file_cow_bytes, 5 * MiB);
    EXPECT_EQ(with_fills.excluded_write_bytes, 10 * MiB);
    EXPECT_EQ(with_fills.fresh_growth_bytes, 1 * MiB) << "the zero page is fresh memory";
    // Without finish_fault, the file fills cannot be told from fresh memory.
    const auto exact_only = account_memory(reading, {.exact = true});
    EXPECT_EQ(exact_only.file_cow_bytes, 2 * MiB);
    EXPECT_EQ(exact_only.fresh_growth_bytes, 4 * MiB);
}

TEST(CowAccounting, SwappedOutAnonIsStillKept) {
    ChildReading reading = started_with_40m();
    reading.mem_bytes[KR_MEM_ANON] = 30 * MiB;  // 16 MiB leaked, then 26 MiB swapped out
    reading.mem_bytes[KR_MEM_SWAP] = 26 * MiB;
    const auto account = account_memory(reading, {.paired = true});
    EXPECT_EQ(account.fresh_growth_bytes, 16 * MiB);
    EXPECT_EQ(reading.anon_growth_bytes(), 16 * MiB);
}

TEST(CowAccounting, NeverNegative) {
    ChildReading reading = started_with_40m();
    reading.mem_bytes[KR_MEM_ANON] = 10 * MiB;  // gave memory back
    reading.faults.paired_file_fills = 100 * kPagesPerMiB;
    reading.faults.paired_zero_fills = 5;  // more pairings than present writes
    const auto account = account_memory(reading, {.paired = true, .paired_fills = true});
    EXPECT_EQ(account.fresh_growth_bytes, 0u);
    EXPECT_EQ(account.fresh_bytes, 0u);
    EXPECT_EQ(account.anon_cow_bytes, 0u);
}

}  // namespace
}  // namespace kidreaper
