#include "kernel_features.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace kidreaper {
namespace {

KernelFeatures usable_features() {
    KernelFeatures f;
    f.release = "6.1.0-27-cloud-amd64";
    f.version_major = 6;
    f.version_minor = 1;
    f.is_root = f.btf = f.raw_tracepoint_prog = f.percpu_hash_map = true;
    f.tp_page_fault_user = f.tp_page_fault_kernel = f.tp_rss_stat = true;
    f.tp_sched_process_fork = f.tp_sched_process_exit = true;
    return f;
}

TEST(KernelRelease, ParsesMajorAndMinor) {
    int major = 0;
    int minor = 0;
    ASSERT_TRUE(parse_kernel_release("6.18.44-fc-v595", major, minor));
    EXPECT_EQ(major, 6);
    EXPECT_EQ(minor, 18);
    ASSERT_TRUE(parse_kernel_release("5.10.0-32-cloud-amd64", major, minor));
    EXPECT_EQ(major, 5);
    EXPECT_EQ(minor, 10);
    EXPECT_FALSE(parse_kernel_release("linux", major, minor));
    EXPECT_FALSE(parse_kernel_release("6", major, minor));
}

TEST(BlockingProblems, NoneWhenEverythingIsThere) {
    EXPECT_TRUE(blocking_problems(usable_features()).empty());
}

TEST(BlockingProblems, NotRootIsTheOnlyProblemReported) {
    auto f = usable_features();
    f.is_root = false;
    f.btf = false;
    const auto problems = blocking_problems(f);
    ASSERT_EQ(problems.size(), 1u);
    EXPECT_NE(problems[0].find("sudo"), std::string::npos);
}

TEST(BlockingProblems, EachMissingFeatureNamesItsFix) {
    auto f = usable_features();
    f.btf = false;
    auto problems = blocking_problems(f);
    ASSERT_EQ(problems.size(), 1u);
    EXPECT_NE(problems[0].find("CONFIG_DEBUG_INFO_BTF"), std::string::npos);

    f = usable_features();
    f.version_major = 5;
    f.version_minor = 4;
    f.release = "5.4.0";
    problems = blocking_problems(f);
    ASSERT_FALSE(problems.empty());
    EXPECT_NE(problems[0].find("too old"), std::string::npos);

    f = usable_features();
    f.tp_page_fault_user = false;
    problems = blocking_problems(f);
    ASSERT_EQ(problems.size(), 1u);
    EXPECT_NE(problems[0].find("x86-64"), std::string::npos);
    for (const auto& problem : problems) {
        EXPECT_EQ(problem.find('\n'), std::string::npos) << "one line each";
    }
}

TEST(ObserverMode, ExactCowNeedsKprobesAndTheSymbol) {
    auto f = usable_features();
    EXPECT_FALSE(f.exact_cow());
    f.kprobe_pmu = true;
    EXPECT_FALSE(f.exact_cow());
    f.wp_page_copy_symbol = true;
    EXPECT_TRUE(f.exact_cow());
    EXPECT_NE(cow_source_name(f.cow_source()).find("kprobe"), std::string::npos);
}

TEST(ObserverMode, PairingNeedsPerChangeCountersAndFindVma) {
    auto f = usable_features();
    f.find_vma_helper = true;
    f.tp_mm_filemap_fault = true;
    EXPECT_FALSE(f.cow_source().paired) << "5.5-6.1 batch the counter changes";
    f.rss_stat_per_change = true;
    EXPECT_TRUE(f.cow_source().paired);
    EXPECT_TRUE(f.cow_source().paired_fills);
    EXPECT_NE(cow_source_name(f.cow_source()).find("page-cache faults"), std::string::npos);
    f.tp_mm_filemap_fault = false;
    EXPECT_TRUE(f.cow_source().paired);
    EXPECT_FALSE(f.cow_source().paired_fills);
    f.kprobe_pmu = true;
    f.wp_page_copy_symbol = true;
    EXPECT_TRUE(f.cow_source().exact);
    EXPECT_FALSE(f.cow_source().paired) << "the kprobes count the copies: no pairing beside";
    f.kprobe_pmu = false;
    f.find_vma_helper = false;
    EXPECT_FALSE(f.cow_source().paired);
    EXPECT_NE(cow_source_name({}).find("fault codes"), std::string::npos);
}

TEST(ProbeFeatures, ReadsFakeSysAndProcTrees) {
    char pattern[] = "/tmp/kr-features-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    const std::filesystem::path root = pattern;
    std::filesystem::create_directories(root / "proc/self");
    std::filesystem::create_directories(root / "sys/bus/event_source/devices/kprobe");
    std::ofstream(root / "proc/self/mounts") << "nodev /sys/kernel/tracing tracefs rw 0 0\n";
    std::ofstream(root / "proc/kallsyms") << "ffffffff81000000 T _stext\n"
                                             "ffffffff815e2d90 t wp_page_copy\n";
    const auto f = probe_features({root / "proc", root / "sys"});
    EXPECT_TRUE(f.tracefs_mounted);
    EXPECT_TRUE(f.kprobe_pmu);
    EXPECT_TRUE(f.wp_page_copy_symbol);
    EXPECT_FALSE(f.btf) << "no BTF file in the fake tree";
    std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace kidreaper
