#include "observe/procfs.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>

#include "expect_usage_error.h"
#include "fake_proc.h"

namespace kidreaper {
namespace {

using testing::contains;
using testing::FakeProc;
using testing::TempDir;
using testing::usage_error_message;

constexpr std::uint64_t KiB = 1024;

// ---- samples ---------------------------------------------------------------------------

// /proc/PID/stat of a bash on Linux 6.1.
constexpr std::string_view kBashStat =
    "12345 (bash) S 12300 12345 12345 34816 12400 4194560 2211 12603 0 3 5 3 20 11 20 0 1 0 "
    "987654 11837440 1331 18446744073709551615 94171361460224 94171362351689 140727385640032 "
    "0 0 0 65536 3670020 1266777851 0 0 0 17 2 0 0 0 0 0 94171362590416 94171362638372 "
    "94171375714304 140727385646729 140727385646734 140727385646734 140727385649131 0\n";

// /proc/PID/status of a worker on Linux 6.1 (the memory lines are what we read).
constexpr std::string_view kStatus6x =
    "Name:\tgunicorn: worke\n"
    "Umask:\t0022\n"
    "State:\tS (sleeping)\n"
    "Tgid:\t4242\n"
    "Ngid:\t0\n"
    "Pid:\t4242\n"
    "PPid:\t4200\n"
    "TracerPid:\t0\n"
    "Uid:\t1000\t1000\t1000\t1000\n"
    "Gid:\t1000\t1000\t1000\t1000\n"
    "FDSize:\t64\n"
    "Groups:\t4 24 27 1000 \n"
    "NStgid:\t4242\n"
    "NSpid:\t4242\n"
    "NSpgid:\t4200\n"
    "NSsid:\t4100\n"
    "VmPeak:\t  260812 kB\n"
    "VmSize:\t  260780 kB\n"
    "VmLck:\t       0 kB\n"
    "VmPin:\t       0 kB\n"
    "VmHWM:\t   61404 kB\n"
    "VmRSS:\t   61340 kB\n"
    "RssAnon:\t   38120 kB\n"
    "RssFile:\t   23100 kB\n"
    "RssShmem:\t     120 kB\n"
    "VmData:\t   45612 kB\n"
    "VmStk:\t     132 kB\n"
    "VmExe:\t    2812 kB\n"
    "VmLib:\t   10148 kB\n"
    "VmPTE:\t     196 kB\n"
    "VmSwap:\t    2048 kB\n"
    "HugetlbPages:\t       0 kB\n"
    "CoreDumping:\t0\n"
    "THP_enabled:\t1\n"
    "Threads:\t1\n"
    "SigQ:\t0/63619\n"
    "SigPnd:\t0000000000000000\n"
    "ShdPnd:\t0000000000000000\n"
    "SigBlk:\t0000000000000000\n"
    "SigIgn:\t0000000001001000\n"
    "SigCgt:\t0000000180004a07\n"
    "CapInh:\t0000000000000000\n"
    "CapPrm:\t0000000000000000\n"
    "CapEff:\t0000000000000000\n"
    "CapBnd:\t000001ffffffffff\n"
    "CapAmb:\t0000000000000000\n"
    "NoNewPrivs:\t0\n"
    "Seccomp:\t0\n"
    "Seccomp_filters:\t0\n"
    "Speculation_Store_Bypass:\tthread vulnerable\n"
    "SpeculationIndirectBranch:\tconditional enabled\n"
    "Cpus_allowed:\tf\n"
    "Cpus_allowed_list:\t0-3\n"
    "Mems_allowed:\t00000000,00000001\n"
    "Mems_allowed_list:\t0\n"
    "voluntary_ctxt_switches:\t151\n"
    "nonvoluntary_ctxt_switches:\t3\n";

// /proc/PID/status on Linux 3.10 (before RssAnon/RssFile/RssShmem, added in 4.5).
constexpr std::string_view kStatusOld =
    "Name:\thttpd\n"
    "State:\tS (sleeping)\n"
    "Tgid:\t2001\n"
    "Ngid:\t0\n"
    "Pid:\t2001\n"
    "PPid:\t2000\n"
    "TracerPid:\t0\n"
    "Uid:\t48\t48\t48\t48\n"
    "Gid:\t48\t48\t48\t48\n"
    "FDSize:\t64\n"
    "Groups:\t48 \n"
    "VmPeak:\t  224264 kB\n"
    "VmSize:\t  224200 kB\n"
    "VmLck:\t       0 kB\n"
    "VmPin:\t       0 kB\n"
    "VmHWM:\t    4012 kB\n"
    "VmRSS:\t    3996 kB\n"
    "VmData:\t    1152 kB\n"
    "VmStk:\t     136 kB\n"
    "VmExe:\t     504 kB\n"
    "VmLib:\t   11780 kB\n"
    "VmPTE:\t     172 kB\n"
    "VmSwap:\t       0 kB\n"
    "Threads:\t1\n";

// /proc/2/status (kthreadd): a kernel thread has no memory lines at all.
constexpr std::string_view kStatusKernelThread =
    "Name:\tkthreadd\n"
    "Umask:\t0000\n"
    "State:\tS (sleeping)\n"
    "Tgid:\t2\n"
    "Ngid:\t0\n"
    "Pid:\t2\n"
    "PPid:\t0\n"
    "TracerPid:\t0\n"
    "Uid:\t0\t0\t0\t0\n"
    "Gid:\t0\t0\t0\t0\n"
    "FDSize:\t64\n"
    "Groups:\t \n"
    "Threads:\t1\n";

// /proc/PID/smaps_rollup on Linux 6.1.
constexpr std::string_view kRollup6x =
    "55d0c0a3e000-7ffc8a5f7000 ---p 00000000 00:00 0                          [rollup]\n"
    "Rss:               61340 kB\n"
    "Pss:               40211 kB\n"
    "Pss_Dirty:         38001 kB\n"
    "Pss_Anon:          37990 kB\n"
    "Pss_File:           2101 kB\n"
    "Pss_Shmem:           120 kB\n"
    "Shared_Clean:      22000 kB\n"
    "Shared_Dirty:        300 kB\n"
    "Private_Clean:      1100 kB\n"
    "Private_Dirty:     37940 kB\n"
    "Referenced:        61200 kB\n"
    "Anonymous:         38120 kB\n"
    "KSM:                   0 kB\n"
    "LazyFree:              0 kB\n"
    "AnonHugePages:         0 kB\n"
    "ShmemPmdMapped:        0 kB\n"
    "FilePmdMapped:         0 kB\n"
    "Shared_Hugetlb:        0 kB\n"
    "Private_Hugetlb:       0 kB\n"
    "Swap:               2048 kB\n"
    "SwapPss:            1024 kB\n"
    "Locked:                0 kB\n";

// /proc/PID/smaps_rollup on Linux 4.14 (no Pss_* breakdown yet).
constexpr std::string_view kRollup414 =
    "00400000-7ffe3a1ff000 ---p 00000000 00:00 0                              [rollup]\n"
    "Rss:                3996 kB\n"
    "Pss:                1500 kB\n"
    "Shared_Clean:       2800 kB\n"
    "Shared_Dirty:        200 kB\n"
    "Private_Clean:        96 kB\n"
    "Private_Dirty:       900 kB\n"
    "Referenced:         3996 kB\n"
    "Anonymous:           996 kB\n"
    "LazyFree:              0 kB\n"
    "AnonHugePages:         0 kB\n"
    "ShmemPmdMapped:        0 kB\n"
    "Shared_Hugetlb:        0 kB\n"
    "Private_Hugetlb:       0 kB\n"
    "Swap:                  0 kB\n"
    "SwapPss:               0 kB\n"
    "Locked:                0 kB\n";

// ---- parse_stat ------------------------------------------------------------------------

TEST(ParseStat, RealLine) {
    const auto stat = parse_stat(kBashStat);
    ASSERT_TRUE(stat);
    EXPECT_EQ(stat->pid, 12345);
    EXPECT_EQ(stat->comm, "bash");
    EXPECT_EQ(stat->state, 'S');
    EXPECT_EQ(stat->ppid, 12300);
    EXPECT_EQ(stat->start_ticks, 987654u);
    EXPECT_EQ(stat->utime_ticks, 5u);
    EXPECT_EQ(stat->stime_ticks, 3u);
}

TEST(ParseSchedstat, FirstFieldIsTheRuntime) {
    EXPECT_EQ(parse_schedstat("123456789 42 7\n"), 123456789u);
    EXPECT_EQ(parse_schedstat("0 0 0\n"), 0u);
    EXPECT_FALSE(parse_schedstat(""));
    EXPECT_FALSE(parse_schedstat("-5 1 1\n"));
    EXPECT_FALSE(parse_schedstat("abc 1 1\n"));
    EXPECT_FALSE(parse_schedstat("99999999999999999999999 1 1\n")) << "overflow";
}

TEST(ParseStat, GeneratedLineMatchesItsInputs) {
    const auto stat = parse_stat(FakeProc::make_stat(77, "python3", 'R', 76, 123456789012ULL));
    ASSERT_TRUE(stat);
    EXPECT_EQ(stat->pid, 77);
    EXPECT_EQ(stat->comm, "python3");
    EXPECT_EQ(stat->state, 'R');
    EXPECT_EQ(stat->ppid, 76);
    EXPECT_EQ(stat->start_ticks, 123456789012u);
}

TEST(ParseStat, CommWithSpacesAndParentheses) {
    const auto stat = parse_stat(FakeProc::make_stat(500, "a) b (c", 'S', 499, 31337));
    ASSERT_TRUE(stat);
    EXPECT_EQ(stat->comm, "a) b (c");
    EXPECT_EQ(stat->state, 'S');
    EXPECT_EQ(stat->ppid, 499);
    EXPECT_EQ(stat->start_ticks, 31337u);
}

TEST(ParseStat, CommThatImitatesFields) {
    // A process can name itself ") R 1 1 1" to fool a parser that stops at the first ')'.
    const auto stat = parse_stat(FakeProc::make_stat(600, ") R 1 1 1", 'D', 42, 7));
    ASSERT_TRUE(stat);
    EXPECT_EQ(stat->comm, ") R 1 1 1");
    EXPECT_EQ(stat->state, 'D');
    EXPECT_EQ(stat->ppid, 42);
    EXPECT_EQ(stat->start_ticks, 7u);
}

TEST(ParseStat, UnusualButValidComms) {
    auto stat = parse_stat(FakeProc::make_stat(601, "", 'S', 1));
    ASSERT_TRUE(stat);
    EXPECT_EQ(stat->comm, "");
    stat = parse_stat(FakeProc::make_stat(602, "x\ny", 'S', 1));
    ASSERT_TRUE(stat);
    EXPECT_EQ(stat->comm, "x\ny");
    EXPECT_EQ(stat->ppid, 1);
    stat = parse_stat(FakeProc::make_stat(603, "((()))", 'S', 9));
    ASSERT_TRUE(stat);
    EXPECT_EQ(stat->comm, "((()))");
    EXPECT_EQ(stat->ppid, 9);
}

TEST(ParseStat, ZombieAndInit) {
    auto stat = parse_stat(FakeProc::make_stat(700, "worker", 'Z', 650));
    ASSERT_TRUE(stat);
    EXPECT_EQ(stat->state, 'Z');
    stat = parse_stat(FakeProc::make_stat(1, "systemd", 'S', 0));
    ASSERT_TRUE(stat);
    EXPECT_EQ(stat->pid, 1);
    EXPECT_EQ(stat->ppid, 0);
}

TEST(ParseStat, ExactlyTwentyTwoFieldsIsEnough) {
    const auto stat = parse_stat("9 (w) S 8 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55");
    ASSERT_TRUE(stat);
    EXPECT_EQ(stat->ppid, 8);
    EXPECT_EQ(stat->start_ticks, 55u);
}

TEST(ParseStat, RejectsMalformed) {
    const std::string good = FakeProc::make_stat(10, "w", 'S', 9, 100);
    for (std::string_view text : {
             std::string_view(""), std::string_view("\n"), std::string_view("garbage"),
             std::string_view("10 w S 9"),
             std::string_view("10 (w S 9 10 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55"),
             std::string_view("10 (w)S 9 10 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55"),
             std::string_view("(w) S 9 10 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55"),
             std::string_view("x (w) S 9 10 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55"),
             std::string_view("0 (w) S 9 10 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55"),
             std::string_view("-3 (w) S 9 10 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55"),
             std::string_view("10 (w) SS 9 10 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55"),
             std::string_view("10 (w) S x 10 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55"),
             std::string_view("10 (w) S -9 10 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55"),
             std::string_view("10 (w) S 9 10 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 -55"),
             std::string_view("10 (w) S 9 10 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5x"),
             std::string_view("10 (w) S 9 10 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0"),  // 21 fields
             std::string_view(good).substr(0, 12),                                  // truncated
         }) {
        EXPECT_FALSE(parse_stat(text)) << '"' << text << '"';
    }
    EXPECT_TRUE(parse_stat(good)) << "control: the untruncated line parses";
}

// Found by tests/fuzz/fuzz_stat.cpp: a NUL (or any non-letter) byte was taken as the state.
TEST(ParseStat, StateMustBeALetter) {
    const std::string rest = " 9 10 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55";
    for (const std::string& state : {std::string(1, '\0'), std::string("\x01"), std::string("?"),
                                     std::string("5"), std::string("\xff")}) {
        EXPECT_FALSE(parse_stat("10 (w) " + state + rest)) << static_cast<int>(state[0]);
    }
    for (const char state : {'R', 'S', 'D', 'Z', 'T', 't', 'X', 'x', 'I', 'K', 'W', 'P'}) {
        const auto stat = parse_stat("10 (w) " + std::string(1, state) + rest);
        ASSERT_TRUE(stat) << state;
        EXPECT_EQ(stat->state, state);
    }
}

// ---- parse_status ----------------------------------------------------------------------

TEST(ParseStatus, Linux6) {
    const auto status = parse_status(kStatus6x);
    ASSERT_TRUE(status);
    EXPECT_EQ(status->tgid, 4242);
    EXPECT_EQ(status->ppid, 4200);
    EXPECT_EQ(status->vm_size, 260780 * KiB);
    EXPECT_EQ(status->vm_rss, 61340 * KiB);
    EXPECT_EQ(status->rss_anon, 38120 * KiB);
    EXPECT_EQ(status->rss_file, 23100 * KiB);
    EXPECT_EQ(status->rss_shmem, 120 * KiB);
    EXPECT_EQ(status->vm_swap, 2048 * KiB);
    EXPECT_TRUE(status->has_rss_breakdown);
    EXPECT_EQ(status->rss_anon + status->rss_file + status->rss_shmem, status->vm_rss);
}

TEST(ParseStatus, OldKernelWithoutRssBreakdown) {
    const auto status = parse_status(kStatusOld);
    ASSERT_TRUE(status);
    EXPECT_EQ(status->tgid, 2001);
    EXPECT_EQ(status->ppid, 2000);
    EXPECT_EQ(status->vm_size, 224200 * KiB);
    EXPECT_EQ(status->vm_rss, 3996 * KiB);
    EXPECT_EQ(status->vm_swap, 0u);
    EXPECT_FALSE(status->has_rss_breakdown);
    EXPECT_EQ(status->rss_anon, 0u);
    EXPECT_EQ(status->rss_file, 0u);
    EXPECT_EQ(status->rss_shmem, 0u);
}

TEST(ParseStatus, KernelThreadHasNoMemory) {
    const auto status = parse_status(kStatusKernelThread);
    ASSERT_TRUE(status);
    EXPECT_EQ(status->tgid, 2);
    EXPECT_EQ(status->ppid, 0);
    EXPECT_EQ(status->vm_size, 0u);
    EXPECT_EQ(status->vm_rss, 0u);
    EXPECT_FALSE(status->has_rss_breakdown);
}

TEST(ParseStatus, ZeroRssAnonStillCountsAsBreakdown) {
    const auto status = parse_status("Tgid:\t5\nPPid:\t1\nVmRSS:\t 8 kB\nRssAnon:\t 0 kB\n");
    ASSERT_TRUE(status);
    EXPECT_TRUE(status->has_rss_breakdown);
    EXPECT_EQ(status->vm_rss, 8 * KiB);
}

TEST(ParseStatus, NoTrailingNewlineAndNoUnit) {
    const auto status = parse_status("Tgid:\t5\nPPid:\t1\nVmRSS:\t12");
    ASSERT_TRUE(status);
    EXPECT_EQ(status->vm_rss, 12 * KiB);
}

TEST(ParseStatus, RejectsMalformed) {
    for (std::string_view text : {
             std::string_view(""), std::string_view("Name:\tx\n"),
             std::string_view("Tgid:\t5\n"),                           // no PPid
             std::string_view("PPid:\t5\n"),                           // no Tgid
             std::string_view("Tgid:\tx\nPPid:\t1\n"),                 // bad Tgid
             std::string_view("Tgid:\t5\nPPid:\t-1\n"),                // negative PPid
             std::string_view("Tgid:\t5\nPPid:\t1\nVmRSS:\t12 MB\n"),  // unknown unit
             std::string_view("Tgid:\t5\nPPid:\t1\nVmRSS:\tlots kB\n"),
             std::string_view("Tgid:\t5\nPPid:\t1\nVmRSS:\t-12 kB\n"),
             std::string_view("Tgid:\t5\nPPid:\t1\nVmRSS:\t12 kB extra\n"),
             std::string_view("Tgid:\t5\nPPid:\t1\nVmRSS:\t18014398509481984 kB\n"),  // 2^54
         }) {
        EXPECT_FALSE(parse_status(text)) << '"' << text << '"';
    }
    // The largest kB value that still fits in bytes.
    const auto big = parse_status("Tgid:\t5\nPPid:\t1\nVmRSS:\t18014398509481983 kB\n");
    ASSERT_TRUE(big);
    EXPECT_EQ(big->vm_rss, 18014398509481983ULL * 1024);
}

TEST(ParseStatus, SimilarKeysDoNotClobber) {
    // VmRSS must not be confused with VmHWM, VmSize with VmPeak, VmSwap with SwapPss.
    const auto status = parse_status(
        "Tgid:\t5\nPPid:\t1\nVmPeak:\t 999 kB\nVmSize:\t 10 kB\nVmHWM:\t 999 kB\n"
        "VmRSS:\t 20 kB\nVmSwap:\t 30 kB\nSwapPss:\t 999 kB\nNStgid:\t999\n");
    ASSERT_TRUE(status);
    EXPECT_EQ(status->tgid, 5);
    EXPECT_EQ(status->vm_size, 10 * KiB);
    EXPECT_EQ(status->vm_rss, 20 * KiB);
    EXPECT_EQ(status->vm_swap, 30 * KiB);
}

// ---- parse_smaps_rollup ----------------------------------------------------------------

TEST(ParseSmapsRollup, Linux6) {
    const auto rollup = parse_smaps_rollup(kRollup6x);
    ASSERT_TRUE(rollup);
    EXPECT_EQ(rollup->rss, 61340 * KiB);
    EXPECT_EQ(rollup->pss, 40211 * KiB);  // not Pss_Anon/Pss_File/Pss_Dirty
    EXPECT_EQ(rollup->shared_clean, 22000 * KiB);
    EXPECT_EQ(rollup->shared_dirty, 300 * KiB);
    EXPECT_EQ(rollup->private_clean, 1100 * KiB);
    EXPECT_EQ(rollup->private_dirty, 37940 * KiB);
    EXPECT_EQ(rollup->anonymous, 38120 * KiB);
    EXPECT_EQ(rollup->swap, 2048 * KiB);  // not SwapPss
    EXPECT_EQ(rollup->private_bytes(), 39040 * KiB);
    EXPECT_EQ(rollup->shared_bytes(), 22300 * KiB);
    EXPECT_EQ(rollup->private_bytes() + rollup->shared_bytes(), rollup->rss);
}

TEST(ParseSmapsRollup, Linux414) {
    const auto rollup = parse_smaps_rollup(kRollup414);
    ASSERT_TRUE(rollup);
    EXPECT_EQ(rollup->rss, 3996 * KiB);
    EXPECT_EQ(rollup->pss, 1500 * KiB);
    EXPECT_EQ(rollup->private_bytes(), 996 * KiB);
    EXPECT_EQ(rollup->shared_bytes(), 3000 * KiB);
    EXPECT_EQ(rollup->anonymous, 996 * KiB);
    EXPECT_EQ(rollup->swap, 0u);
}

TEST(ParseSmapsRollup, NeedsAnRssLine) {
    EXPECT_FALSE(parse_smaps_rollup(""));  // what a kernel thread's file holds
    EXPECT_FALSE(parse_smaps_rollup("55d0c0a3e000-7ffc8a5f7000 ---p 00000000 00:00 0 [rollup]\n"));
    EXPECT_FALSE(parse_smaps_rollup("Pss:  12 kB\nPrivate_Dirty:  12 kB\n"));
    EXPECT_FALSE(parse_smaps_rollup("SwapRss:  12 kB\n"));
    const auto minimal = parse_smaps_rollup("Rss:  12 kB\n");
    ASSERT_TRUE(minimal);
    EXPECT_EQ(minimal->rss, 12 * KiB);
    EXPECT_EQ(minimal->pss, 0u);
}

TEST(ParseSmapsRollup, RejectsMalformedValues) {
    EXPECT_FALSE(parse_smaps_rollup("Rss:  x kB\n"));
    EXPECT_FALSE(parse_smaps_rollup("Rss:  12 kB\nPss: 1 GB\n"));
    EXPECT_FALSE(parse_smaps_rollup("Rss:\n"));
}

// ---- ProcFs on a fake tree -------------------------------------------------------------

TEST(ProcFsFake, ReadsEachFile) {
    const FakeProc proc;
    proc.add_process(4242, FakeProc::make_stat(4242, "gunicorn: worke", 'S', 4200, 999), kStatus6x,
                     kRollup6x);
    const ProcFs fs(proc.root());
    EXPECT_EQ(fs.root(), proc.root());

    const auto stat = fs.stat(4242);
    ASSERT_TRUE(stat);
    EXPECT_EQ(stat->comm, "gunicorn: worke");
    EXPECT_EQ(stat->ppid, 4200);
    EXPECT_EQ(stat->start_ticks, 999u);

    const auto status = fs.status(4242);
    ASSERT_TRUE(status);
    EXPECT_EQ(status->rss_anon, 38120 * KiB);

    const auto rollup = fs.smaps_rollup(4242);
    ASSERT_TRUE(rollup);
    EXPECT_EQ(rollup->private_dirty, 37940 * KiB);
}

TEST(ProcFsFake, VanishedProcessIsNulloptNotAnError) {
    const FakeProc proc;
    proc.add_process(300, FakeProc::make_stat(300, "w", 'S', 1), kStatus6x, kRollup6x);
    const ProcFs fs(proc.root());
    ASSERT_TRUE(fs.stat(300));

    proc.remove_process(300);
    EXPECT_FALSE(fs.stat(300));
    EXPECT_FALSE(fs.status(300));
    EXPECT_FALSE(fs.smaps_rollup(300));
    EXPECT_FALSE(fs.syscall(300));
    EXPECT_TRUE(fs.children_of(1).empty());

    EXPECT_FALSE(fs.stat(301));  // never existed
}

TEST(ProcFsFake, MissingOrUnreadableFileIsNullopt) {
    const FakeProc proc;
    proc.add_process(310, FakeProc::make_stat(310, "w", 'S', 1));  // no status, no rollup
    proc.write(311, "stat/not-a-file", "");                        // ROOT/311/stat is a directory
    proc.write(312, "smaps_rollup", "");                           // kernel thread
    const ProcFs fs(proc.root());
    EXPECT_TRUE(fs.stat(310));
    EXPECT_FALSE(fs.status(310));
    EXPECT_FALSE(fs.smaps_rollup(310));
    EXPECT_FALSE(fs.stat(311));
    EXPECT_FALSE(fs.smaps_rollup(312));
}

TEST(ProcFsFake, GarbageIsNullopt) {
    const FakeProc proc;
    proc.add_process(320, "not a stat line\n", "not a status\n", "not a rollup\n");
    const ProcFs fs(proc.root());
    EXPECT_FALSE(fs.stat(320));
    EXPECT_FALSE(fs.status(320));
    EXPECT_FALSE(fs.smaps_rollup(320));
}

TEST(ProcFsFake, NonPositivePidsAreNeverRead) {
    const FakeProc proc;
    proc.add_process(0, FakeProc::make_stat(5, "zero", 'S', 1));
    const ProcFs fs(proc.root());
    EXPECT_FALSE(fs.stat(0));
    EXPECT_FALSE(fs.stat(-1));
    EXPECT_FALSE(fs.status(-5));
}

TEST(ProcFsFake, FilesAreReadUpToOneMiB) {
    const FakeProc proc;
    const std::string line = FakeProc::make_stat(330, "w", 'S', 1);
    proc.add_process(330, line + std::string(1024 * 1024 - line.size(), ' '));  // exactly 1 MiB
    proc.add_process(331, line + std::string(1024 * 1024 - line.size() + 1, ' '));
    const ProcFs fs(proc.root());
    EXPECT_TRUE(fs.stat(330));
    EXPECT_FALSE(fs.stat(331));
}

TEST(ProcFsFake, ChildrenOfScansTheTreeSorted) {
    const FakeProc proc;
    proc.add_simple(1, 0, "init");
    proc.add_simple(100, 1, "master");
    proc.add_simple(250, 100, "worker c");  // created out of order on purpose
    proc.add_simple(105, 100, "worker b");
    proc.add_simple(103, 100, "a) b (c");
    proc.add_simple(300, 103, "grandchild");
    proc.add_simple(400, 1, "other");
    proc.add_simple(401, 1, ") S 100 1 1");  // its comm imitates a ppid of 100
    proc.add_simple(402, 100, "zombie", 'Z');
    proc.add_process(500, "garbage\n");                     // unparsable: skipped
    proc.write(501, "status", "Tgid:\t501\nPPid:\t100\n");  // no stat: vanished mid-scan
    proc.write(0, "stat", FakeProc::make_stat(7, "x", 'S', 100));
    // Entries that are not pids.
    proc.write(-1, "stat", FakeProc::make_stat(8, "x", 'S', 100));
    for (const char* name : {"self", "sys", "1a", "+9", "net"}) {
        std::filesystem::create_directories(proc.root() / name);
        std::ofstream(proc.root() / name / "stat") << FakeProc::make_stat(9, "x", 'S', 100);
    }
    proc.set_uptime("12.5 40.0\n");

    const ProcFs fs(proc.root());
    EXPECT_EQ(fs.children_of(100), (std::vector<pid_t>{103, 105, 250, 402}));
    EXPECT_EQ(fs.children_of(103), (std::vector<pid_t>{300}));
    EXPECT_EQ(fs.children_of(1), (std::vector<pid_t>{100, 400, 401}));
    EXPECT_TRUE(fs.children_of(300).empty());
    EXPECT_TRUE(fs.children_of(999).empty());

    proc.remove_process(105);
    EXPECT_EQ(fs.children_of(100), (std::vector<pid_t>{103, 250, 402}));
}

TEST(ProcFsFake, ChildrenOfMissingRootIsEmpty) {
    const ProcFs fs("/nonexistent/kidreaper/proc");
    EXPECT_TRUE(fs.children_of(1).empty());
    EXPECT_FALSE(fs.stat(1));
    EXPECT_FALSE(fs.uptime_seconds());
}

TEST(ProcFsFake, SyscallFirstLineTrimmed) {
    const FakeProc proc;
    proc.write(10, "syscall", "running\n");
    proc.write(11, "syscall", "61 0xffffffff 0x7ffd3b1c 0x0 0x0 0x0 0x0 0x7ffd3b0 0x7f12\n");
    proc.write(12, "syscall", "-1 0x7ffc5b8e1e48 0x7f4b0c8e5b2f\n");
    proc.write(13, "syscall", "");
    proc.write(14, "syscall", "  \n");
    proc.write(15, "syscall", "  7 0x1 0x2  \nsecond line\n");
    const ProcFs fs(proc.root());
    EXPECT_EQ(fs.syscall(10), "running");
    EXPECT_EQ(fs.syscall(11), "61 0xffffffff 0x7ffd3b1c 0x0 0x0 0x0 0x0 0x7ffd3b0 0x7f12");
    EXPECT_EQ(fs.syscall(12), "-1 0x7ffc5b8e1e48 0x7f4b0c8e5b2f");
    EXPECT_FALSE(fs.syscall(13));
    EXPECT_FALSE(fs.syscall(14));
    EXPECT_EQ(fs.syscall(15), "7 0x1 0x2");
    EXPECT_FALSE(fs.syscall(16));
}

TEST(ProcFsFake, Uptime) {
    const FakeProc proc;
    const ProcFs fs(proc.root());
    EXPECT_FALSE(fs.uptime_seconds());  // no file yet

    proc.set_uptime("350735.47 1234388.90\n");
    ASSERT_TRUE(fs.uptime_seconds());
    EXPECT_DOUBLE_EQ(*fs.uptime_seconds(), 350735.47);

    proc.set_uptime("0.00 0.00\n");
    EXPECT_EQ(fs.uptime_seconds(), 0.0);

    for (const char* bad :
         {"", "\n", "abc 1.0\n", "-5.0 1.0\n", "12abc 1\n", "nan 1\n", "inf 1\n"}) {
        proc.set_uptime(bad);
        EXPECT_FALSE(fs.uptime_seconds()) << '"' << bad << '"';
    }
}

// ---- ProcFs on the real /proc ----------------------------------------------------------

std::string read_whole(const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(ProcFsReal, Self) {
    const ProcFs fs;
    EXPECT_EQ(fs.root(), "/proc");
    const auto stat = fs.stat(::getpid());
    ASSERT_TRUE(stat);
    EXPECT_EQ(stat->pid, ::getpid());
    EXPECT_EQ(stat->ppid, ::getppid());
    EXPECT_EQ(stat->state, 'R');
    std::string comm = read_whole("/proc/self/comm");
    ASSERT_FALSE(comm.empty());
    comm.pop_back();  // newline
    EXPECT_EQ(stat->comm, comm);
    EXPECT_GT(stat->start_ticks, 0u);

    const auto status = fs.status(::getpid());
    ASSERT_TRUE(status);
    EXPECT_EQ(status->tgid, ::getpid());
    EXPECT_EQ(status->ppid, ::getppid());
    EXPECT_GT(status->vm_rss, 0u);
    EXPECT_GE(status->vm_size, status->vm_rss);
    if (status->has_rss_breakdown) {
        EXPECT_GT(status->rss_anon, 0u);
    }

    const auto rollup = fs.smaps_rollup(::getpid());
    if (rollup) {  // Linux >= 4.14
        EXPECT_GT(rollup->rss, 0u);
        EXPECT_EQ(rollup->private_bytes() + rollup->shared_bytes(), rollup->rss);
        EXPECT_GT(rollup->anonymous, 0u);
    }

    const auto uptime = fs.uptime_seconds();
    ASSERT_TRUE(uptime);
    EXPECT_GT(*uptime, 0.0);
}

// Waits (up to 10 s) for `pid` to reach `state` as /proc reports it.
bool wait_for_state(const ProcFs& fs, pid_t pid, char state) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
        const auto stat = fs.stat(pid);
        if (stat && stat->state == state) {
            return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return false;
}

TEST(ProcFsReal, ForkedChildIsFoundThenVanishes) {
    const ProcFs fs;
    int pipe_fds[2];
    ASSERT_EQ(::pipe(pipe_fds), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        ::close(pipe_fds[1]);
        char byte = 0;
        const ssize_t n = ::read(pipe_fds[0], &byte, 1);  // blocks until the parent closes
        ::_exit(n == 0 ? 0 : 1);
    }
    ::close(pipe_fds[0]);

    const auto children = fs.children_of(::getpid());
    EXPECT_NE(std::find(children.begin(), children.end(), child), children.end());
    const auto stat = fs.stat(child);
    ASSERT_TRUE(stat);
    EXPECT_EQ(stat->ppid, ::getpid());
    const auto own = fs.stat(::getpid());
    ASSERT_TRUE(own);
    EXPECT_GE(stat->start_ticks, own->start_ticks);

    EXPECT_TRUE(wait_for_state(fs, child, 'S'));  // blocked in read()
    const auto syscall = fs.syscall(child);
    if (syscall) {  // needs ptrace access, which some sandboxes deny
        EXPECT_EQ(syscall->find('\n'), std::string::npos);
        EXPECT_EQ(syscall->substr(0, syscall->find(' ')), std::to_string(SYS_read)) << *syscall;
    }

    ::close(pipe_fds[1]);  // the child reads EOF and exits
    siginfo_t info{};
    ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(child), &info, WEXITED | WNOWAIT), 0);
    const auto zombie = fs.stat(child);
    ASSERT_TRUE(zombie);
    EXPECT_EQ(zombie->state, 'Z');
    const auto with_zombie = fs.children_of(::getpid());
    EXPECT_NE(std::find(with_zombie.begin(), with_zombie.end(), child), with_zombie.end());

    int wstatus = 0;
    ASSERT_EQ(::waitpid(child, &wstatus, 0), child);
    EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
    EXPECT_FALSE(fs.stat(child));
    EXPECT_FALSE(fs.status(child));
    EXPECT_FALSE(fs.smaps_rollup(child));
    const auto after = fs.children_of(::getpid());
    EXPECT_EQ(std::find(after.begin(), after.end(), child), after.end());
}

// ---- read_pidfile ----------------------------------------------------------------------

std::string pidfile_error(const std::filesystem::path& path) {
    return usage_error_message([&] { read_pidfile(path); });
}

TEST(ReadPidfile, AcceptsOneDecimalPid) {
    const TempDir dir;
    EXPECT_EQ(read_pidfile(dir.write("a.pid", "1234\n")), 1234);
    EXPECT_EQ(read_pidfile(dir.write("b.pid", "1234")), 1234);
    EXPECT_EQ(read_pidfile(dir.write("c.pid", "  4321 \t\r\n\n")), 4321);
    EXPECT_EQ(read_pidfile(dir.write("d.pid", "\n42\n")), 42);
    EXPECT_EQ(read_pidfile(dir.write("e.pid", "2\n")), 2);
    EXPECT_EQ(read_pidfile(dir.write("f.pid", "4194304\n")), 4194304);
    EXPECT_EQ(read_pidfile(dir.write("g.pid", "0000077\n")), 77);
    const std::string padded = std::string(61, ' ') + "99\n";  // exactly 64 bytes
    ASSERT_EQ(padded.size(), 64u);
    EXPECT_EQ(read_pidfile(dir.write("h.pid", padded)), 99);
    // Inside a container (min_pid 1) its init may be named.
    EXPECT_EQ(read_pidfile(dir.write("i.pid", "1\n"), 1), 1);
    EXPECT_EQ(parse_pidfile_text("1", "a.pid", 1), 1);
}

TEST(ReadPidfile, RejectsSymlink) {
    const TempDir dir;
    const auto target = dir.write("real.pid", "1234\n");
    const auto link = dir.path() / "link.pid";
    std::filesystem::create_symlink(target, link);
    EXPECT_EQ(pidfile_error(link),
              "pidfile " + link.string() + ": is a symbolic link (not followed; give the target)");
    const auto dangling = dir.path() / "dangling.pid";
    std::filesystem::create_symlink(dir.path() / "nowhere", dangling);
    EXPECT_TRUE(contains(pidfile_error(dangling), "symbolic link"));
}

TEST(ReadPidfile, RejectsDirectory) {
    const TempDir dir;
    EXPECT_EQ(pidfile_error(dir.path()), "pidfile " + dir.path().string() + ": not a regular file");
}

TEST(ReadPidfile, RejectsFifoWithoutBlocking) {
    const TempDir dir;
    const auto fifo = dir.path() / "fifo.pid";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
    EXPECT_EQ(pidfile_error(fifo), "pidfile " + fifo.string() + ": not a regular file");
}

TEST(ReadPidfile, RejectsSocketAndDevice) {
    const TempDir dir;
    const auto path = dir.path() / "sock.pid";
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    ASSERT_LT(path.string().size(), sizeof addr.sun_path);
    std::strcpy(addr.sun_path, path.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(pidfile_error(path), "pidfile " + path.string() + ": not a regular file");
    ::close(fd);

    EXPECT_EQ(pidfile_error("/dev/null"), "pidfile /dev/null: not a regular file");
}

TEST(ReadPidfile, RejectsHugeFiles) {
    const TempDir dir;
    const std::string expected = ": larger than 64 bytes, not a pidfile";
    const auto just_over = dir.write("65.pid", "1234" + std::string(61, ' '));
    EXPECT_EQ(pidfile_error(just_over), "pidfile " + just_over.string() + expected);
    const auto huge = dir.write("huge.pid", std::string(10 * 1024 * 1024, '7'));
    EXPECT_EQ(pidfile_error(huge), "pidfile " + huge.string() + expected);
}

TEST(ReadPidfile, RejectsMissing) {
    const TempDir dir;
    const auto path = dir.path() / "missing.pid";
    EXPECT_EQ(pidfile_error(path), "pidfile " + path.string() + ": does not exist");
    EXPECT_TRUE(contains(pidfile_error(dir.path() / "no-dir" / "x.pid"), "does not exist"));
}

TEST(ReadPidfile, RejectsEmpty) {
    const TempDir dir;
    for (const char* content : {"", "\n", "   \t\n\n"}) {
        const auto path = dir.write("empty.pid", content);
        EXPECT_EQ(pidfile_error(path),
                  "pidfile " + path.string() + ": empty, expected a process id")
            << '"' << content << '"';
    }
}

TEST(ReadPidfile, RejectsNonDecimalContent) {
    const TempDir dir;
    for (std::string_view content :
         {std::string_view("12abc\n"), std::string_view("-5\n"), std::string_view("+5\n"),
          std::string_view("0x10\n"), std::string_view("1e3\n"), std::string_view("12 34\n"),
          std::string_view("12\n34\n"), std::string_view("12.0\n"), std::string_view("abc"),
          std::string_view("12\0", 3),
          std::string_view("\xef\xbb\xbf"
                           "12\n")}) {
        const auto path = dir.write("bad.pid", content);
        const std::string message = pidfile_error(path);
        EXPECT_TRUE(contains(
            message, "pidfile " + path.string() + ": expected one decimal process id, found \""))
            << message;
    }
    const auto path = dir.write("esc.pid", "\x1b[31m12\n");
    EXPECT_EQ(pidfile_error(path), "pidfile " + path.string() +
                                       ": expected one decimal process id, found \"\\x1b[31m12\"");
}

TEST(ReadPidfile, RejectsZeroOneAndTooLarge) {
    const TempDir dir;
    for (const char* content : {"0\n", "1\n", "00\n"}) {
        const auto path = dir.write("small.pid", content);
        EXPECT_TRUE(contains(pidfile_error(path), "is not valid (must be greater than 1)"))
            << content;
    }
    const auto one = dir.write("one.pid", "1\n");
    EXPECT_EQ(pidfile_error(one), "pidfile " + one.string() +
                                      ": process id \"1\" is not valid (must be greater than 1)");
    for (const char* content : {"4194305\n", "99999999999\n", "99999999999999999999999999\n"}) {
        const auto path = dir.write("big.pid", content);
        EXPECT_TRUE(contains(pidfile_error(path), "is larger than the kernel limit 4194304"))
            << content;
    }
}

TEST(ReadPidfile, HostilePathIsEscaped) {
    const TempDir dir;
    const auto path = dir.path() / "evil\nname\x1b.pid";
    const std::string message = pidfile_error(path);
    EXPECT_TRUE(contains(message, "evil\\x0aname\\x1b.pid: does not exist")) << message;
}

// parse_pidfile_text: the content checks of read_pidfile, without a file.
TEST(ParsePidfileText, AcceptsWhatReadPidfileAccepts) {
    EXPECT_EQ(parse_pidfile_text("1234\n", "a.pid"), 1234);
    EXPECT_EQ(parse_pidfile_text("  4321 \t\r\n\n", "a.pid"), 4321);
    EXPECT_EQ(parse_pidfile_text(std::string(62, ' ') + "99", "a.pid"), 99);
    EXPECT_EQ(parse_pidfile_text("4194304", "a.pid"), 4194304);
}

TEST(ParsePidfileText, RejectsWithTheGivenPath) {
    EXPECT_EQ(usage_error_message([] { parse_pidfile_text(" \n", "/run/x.pid"); }),
              "pidfile /run/x.pid: empty, expected a process id");
    EXPECT_EQ(usage_error_message([] { parse_pidfile_text(std::string(65, '1'), "/run/x.pid"); }),
              "pidfile /run/x.pid: larger than 64 bytes, not a pidfile");
    EXPECT_EQ(usage_error_message([] { parse_pidfile_text("12 34\n", "/run/x.pid"); }),
              "pidfile /run/x.pid: expected one decimal process id, found \"12 34\"");
    EXPECT_EQ(usage_error_message([] {
                  parse_pidfile_text(std::string("12\0"
                                                 "3",
                                                 4),
                                     "p");
              }),
              "pidfile p: expected one decimal process id, found \"12\\x003\"");
    const std::string message = usage_error_message([] { parse_pidfile_text("1\n", "bad\npath"); });
    EXPECT_EQ(message,
              "pidfile bad\\x0apath: process id \"1\" is not valid (must be greater than 1)");
}

// ---- parse_pid -------------------------------------------------------------------------

TEST(ParsePid, Accepts) {
    EXPECT_EQ(parse_pid("2"), 2);
    EXPECT_EQ(parse_pid("1234"), 1234);
    EXPECT_EQ(parse_pid("4194304"), 4194304);
    EXPECT_EQ(parse_pid("007"), 7);
}

TEST(ParsePid, RejectsNonPids) {
    EXPECT_EQ(usage_error_message([] { parse_pid("abc"); }),
              "invalid pid \"abc\": expected a decimal process id greater than 1");
    for (const char* text : {"", "0", "1", "00", "-5", "+5", " 12", "12 ", "12\n", "12abc", "0x10",
                             "1.0", "1e3", "١٢"}) {
        const std::string message = usage_error_message([&] { parse_pid(text); });
        EXPECT_TRUE(contains(message, "expected a decimal process id greater than 1"))
            << '"' << text << "\" -> " << message;
    }
}

TEST(ParsePid, RejectsTooLarge) {
    EXPECT_EQ(usage_error_message([] { parse_pid("99999999999"); }),
              "invalid pid \"99999999999\": larger than the kernel limit 4194304");
    for (const char* text : {"4194305", "2147483648", "99999999999999999999999999"}) {
        EXPECT_TRUE(contains(usage_error_message([&] { parse_pid(text); }), "kernel limit"))
            << text;
    }
}

}  // namespace
}  // namespace kidreaper
