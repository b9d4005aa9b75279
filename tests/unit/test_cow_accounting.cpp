// COW and growth from synthetic counters, in each observer mode.
#include "cow_accounting.h"

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

TEST(CowAccounting, MappingLeavesOutSharedAndOwnWrites) {
    ChildReading reading = started_with_40m();
    // 8 MiB of inherited anon COW, 16 MiB of msync'ed shared-file writes, 4 MiB of
    // mprotect faults on its own memory: the fault class calls all 28 MiB COW.
    reading.faults.write_present_user = 28 * kPagesPerMiB;
    reading.faults.vma_inherited_anon_writes = 8 * kPagesPerMiB;
    reading.faults.vma_shared_writes = 16 * kPagesPerMiB;
    reading.faults.vma_own_writes = 4 * kPagesPerMiB;
    const auto account = account_memory(reading, {.by_vma = true});
    EXPECT_EQ(account.anon_cow_bytes, 8 * MiB);
    EXPECT_EQ(account.excluded_write_bytes, 20 * MiB);
    EXPECT_EQ(account.cow_bytes(), 8 * MiB);
}

TEST(CowAccounting, PairingTellsZeroPageAndFileCopiesFromAnonCow) {
    ChildReading reading = started_with_40m();
    // Present writes to inherited memory: 8 MiB anon COW, 2 MiB zero-page fills; present
    // writes to a private file mapping that copied 4 MiB of file pages; 6 MiB of absent
    // writes to a private file mapping (do_cow_fault). ANON rose by 2 + 4 + 6 MiB.
    reading.faults.write_present_user = 14 * kPagesPerMiB;
    reading.faults.vma_inherited_anon_writes = 10 * kPagesPerMiB;
    reading.faults.vma_file_writes = 4 * kPagesPerMiB;
    reading.faults.paired_zero_fills = 2 * kPagesPerMiB;
    reading.faults.paired_file_copies = 4 * kPagesPerMiB;
    reading.faults.vma_file_fills = 6 * kPagesPerMiB;
    reading.mem_bytes[KR_MEM_ANON] = (40 + 12) * MiB;
    const auto account = account_memory(reading, {.by_vma = true, .paired = true});
    EXPECT_EQ(account.anon_cow_bytes, 8 * MiB);
    EXPECT_EQ(account.file_cow_bytes, 10 * MiB);
    EXPECT_EQ(account.excluded_write_bytes, 2 * MiB) << "the zero-page fills";
    EXPECT_EQ(account.fresh_growth_bytes, 2 * MiB) << "only the zero-page fills are fresh";
    EXPECT_EQ(account.fresh_bytes, 42 * MiB);
}

TEST(CowAccounting, WithoutPairingFileWritesAreTakenAsFileCopies) {
    ChildReading reading = started_with_40m();
    reading.faults.write_present_user = 4 * kPagesPerMiB;
    reading.faults.vma_file_writes = 4 * kPagesPerMiB;
    reading.mem_bytes[KR_MEM_ANON] = 44 * MiB;
    const auto account = account_memory(reading, {.by_vma = true});
    EXPECT_EQ(account.file_cow_bytes, 4 * MiB);
    EXPECT_EQ(account.fresh_growth_bytes, 0u);
}

TEST(CowAccounting, ExactCopiesAndFileFills) {
    ChildReading reading = started_with_40m();
    reading.faults.write_present_user = 20 * kPagesPerMiB;
    reading.faults.cow_copies = 8 * kPagesPerMiB;
    reading.faults.file_copies = 2 * kPagesPerMiB;
    reading.faults.zero_page_copies = 1 * kPagesPerMiB;
    reading.faults.vma_file_fills = 3 * kPagesPerMiB;
    reading.mem_bytes[KR_MEM_ANON] = (40 + 2 + 1 + 3) * MiB;
    const auto with_vma = account_memory(reading, {.exact = true, .by_vma = true});
    EXPECT_EQ(with_vma.anon_cow_bytes, 8 * MiB);
    EXPECT_EQ(with_vma.file_cow_bytes, 5 * MiB);
    EXPECT_EQ(with_vma.excluded_write_bytes, 10 * MiB);
    EXPECT_EQ(with_vma.fresh_growth_bytes, 1 * MiB) << "the zero page is fresh memory";
    // Without the mapping (5.10), the file fills cannot be told from fresh memory.
    const auto exact_only = account_memory(reading, {.exact = true});
    EXPECT_EQ(exact_only.file_cow_bytes, 2 * MiB);
    EXPECT_EQ(exact_only.fresh_growth_bytes, 4 * MiB);
}

TEST(CowAccounting, SwappedOutAnonIsStillKept) {
    ChildReading reading = started_with_40m();
    reading.mem_bytes[KR_MEM_ANON] = 30 * MiB;  // 16 MiB leaked, then 26 MiB swapped out
    reading.mem_bytes[KR_MEM_SWAP] = 26 * MiB;
    const auto account = account_memory(reading, {.by_vma = true, .paired = true});
    EXPECT_EQ(account.fresh_growth_bytes, 16 * MiB);
    EXPECT_EQ(reading.anon_growth_bytes(), 16 * MiB);
}

TEST(CowAccounting, NeverNegative) {
    ChildReading reading = started_with_40m();
    reading.mem_bytes[KR_MEM_ANON] = 10 * MiB;  // gave memory back
    reading.faults.vma_file_fills = 100 * kPagesPerMiB;
    reading.faults.paired_zero_fills = 5;  // more pairings than candidates
    const auto account = account_memory(reading, {.by_vma = true, .paired = true});
    EXPECT_EQ(account.fresh_growth_bytes, 0u);
    EXPECT_EQ(account.fresh_bytes, 0u);
    EXPECT_EQ(account.anon_cow_bytes, 0u);
}

}  // namespace
}  // namespace kidreaper
