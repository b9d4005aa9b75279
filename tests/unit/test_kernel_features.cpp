#include "observe/kernel_features.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "common/error.h"

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

TEST(FaultSource, ParsesTheThreeNamesAndRejectsOthers) {
    EXPECT_EQ(parse_fault_source("auto"), FaultSource::automatic);
    EXPECT_EQ(parse_fault_source("tracepoints"), FaultSource::tracepoints);
    EXPECT_EQ(parse_fault_source("mm"), FaultSource::mm);
    for (const char* bad : {"", "MM", "kprobe", "mm "}) {
        try {
            parse_fault_source(bad);
            ADD_FAILURE() << "accepted '" << bad << "'";
        } catch (const UsageError& e) {
            EXPECT_NE(std::string(e.what()).find("--fault-source"), std::string::npos);
            EXPECT_EQ(e.exit_code(), 2);
        }
    }
}

TEST(FaultSource, AutoTakesMmWhereTheCopiesCanBeProbed) {
    auto f = usable_features();
    f.rss_stat_per_change = f.find_vma_helper = true;
    EXPECT_FALSE(f.cow_source().mm) << "no kprobes: the tracepoints";
    EXPECT_TRUE(f.cow_source().paired);
    f.kprobe_pmu = true;
    f.do_wp_page_symbol = true;
    EXPECT_FALSE(f.cow_source().mm) << "do_wp_page alone tells less than pairing";
    f.wp_page_copy_symbol = f.finish_fault_symbol = true;
    const CowSource chosen = f.cow_source();
    EXPECT_TRUE(chosen.mm);
    EXPECT_TRUE(chosen.exact);
    EXPECT_TRUE(chosen.exact_fills);
    EXPECT_TRUE(chosen.wp_faults);
    EXPECT_FALSE(chosen.paired) << "pairing needs the fault tracepoints";
    EXPECT_EQ(cow_source_name(chosen).rfind("mm: ", 0), 0u) << cow_source_name(chosen);
    // Asked for, each source is given where the kernel has it ...
    EXPECT_FALSE(f.cow_source(FaultSource::tracepoints).mm);
    EXPECT_TRUE(f.cow_source(FaultSource::tracepoints).exact) << "the kprobe beside";
    // ... and no x86 tracepoints (arm64) makes mm the only way, even with do_wp_page alone.
    f.tp_page_fault_user = f.tp_page_fault_kernel = false;
    f.wp_page_copy_symbol = false;
    EXPECT_TRUE(f.cow_source().mm);
    EXPECT_FALSE(f.cow_source().exact);
    EXPECT_TRUE(blocking_problems(f).empty()) << "mm mode is enough to run";
    EXPECT_THROW(f.cow_source(FaultSource::tracepoints), Error);
}

TEST(FaultSource, MmAskedForWithoutKprobesIsAOneLineError) {
    auto f = usable_features();
    f.do_wp_page_symbol = true;
    try {
        f.cow_source(FaultSource::mm);
        ADD_FAILURE() << "mm without kprobes";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("kprobe PMU"), std::string::npos) << e.what();
    }
    f.kprobe_pmu = true;
    f.do_wp_page_symbol = false;
    EXPECT_THROW(f.cow_source(FaultSource::mm), Error) << "nothing to probe";
    f.tp_page_fault_user = false;
    const auto problems = blocking_problems(f);
    ASSERT_EQ(problems.size(), 1u) << "neither fault source";
    EXPECT_NE(problems[0].find("do_wp_page"), std::string::npos);
}

TEST(ProbeSymbols, FindsSuffixedNamesAndSkipsColdPartsAndModules) {
    char pattern[] = "/tmp/kr-kallsyms-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    const std::filesystem::path root = pattern;
    std::ofstream(root / "kallsyms") << "ffffffff81000000 T _stext\n"
                                        "ffffffff815e2000 t do_wp_page.cold\n"
                                        "ffffffff815e2d90 t wp_page_copy.isra.0\n"
                                        "ffffffff815e3000 d finish_fault\n"
                                        "ffffffffc0000000 t do_wp_page\t[some_module]\n"
                                        "ffffffff815e4000 t do_wp_page_reuse\n"
                                        "ffffffff815e5000 T finish_fault\n"
                                        "garbage\n"
                                        "ffffffff815e6000 t wp_page_copy\n";
    const ProbeSymbols symbols = find_probe_symbols(root);
    EXPECT_EQ(symbols.wp_page_copy, "wp_page_copy") << "the plain name wins";
    EXPECT_EQ(symbols.finish_fault, "finish_fault") << "text symbols only";
    EXPECT_EQ(symbols.do_wp_page, "") << "not .cold, not a module's, not a longer name";
    std::ofstream(root / "kallsyms") << "ffffffff815e2d90 t wp_page_copy.constprop.0\n";
    EXPECT_EQ(find_probe_symbols(root).wp_page_copy, "wp_page_copy.constprop.0");
    std::filesystem::remove_all(root);
    EXPECT_EQ(find_probe_symbols(root).wp_page_copy, "") << "no file";
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

TEST(FentryUsable, FromLinux513OnX86AndLinux60OnArm64) {
    EXPECT_FALSE(kidreaper::fentry_usable("5.10.0-32-cloud-amd64", "x86_64"));
    EXPECT_FALSE(kidreaper::fentry_usable("5.12.19", "x86_64"));
    EXPECT_TRUE(kidreaper::fentry_usable("5.13.0", "x86_64"));
    EXPECT_TRUE(kidreaper::fentry_usable("6.1.0-27-amd64", "x86_64"));
    EXPECT_FALSE(kidreaper::fentry_usable("garbage", "x86_64"));

    EXPECT_FALSE(kidreaper::fentry_usable("5.10.0-32-cloud-arm64", "aarch64"));
    EXPECT_FALSE(kidreaper::fentry_usable("5.15.0-1051-aws", "aarch64"));
    EXPECT_TRUE(kidreaper::fentry_usable("6.0.0", "aarch64"));
    EXPECT_TRUE(kidreaper::fentry_usable("6.1.0-27-cloud-arm64", "aarch64"));
    EXPECT_FALSE(kidreaper::fentry_usable("garbage", "aarch64"));

    EXPECT_FALSE(kidreaper::fentry_usable("6.1.0", "riscv64"));
}
