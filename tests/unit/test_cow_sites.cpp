#include "observe/cow_sites.h"

#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "observe/procfs.h"

namespace kidreaper {

// A function with a stable name to find in this binary's symbol table.
__attribute__((noinline)) int symbolizer_target_function(int value) {
    return value * 3 + 1;
}

namespace {

constexpr const char* kMaps =
    "55d4c8a00000-55d4c8a02000 r--p 00000000 fe:01 1234   /usr/bin/perl\n"
    "55d4c8a02000-55d4c8a04000 r-xp 00002000 fe:01 1234   /usr/bin/perl\n"
    "55d4c9000000-55d4cb000000 rw-p 00000000 00:00 0      [heap]\n"
    "7f0000000000-7f0010000000 rw-p 00000000 00:00 0 \n"
    "7f1000000000-7f1000200000 r-xp 00000000 fe:01 99     "
    "/usr/lib/x86_64-linux-gnu/libperl.so.5.36.0\n"
    "7f1000200000-7f1000210000 rw-p 00200000 fe:01 99     "
    "/usr/lib/x86_64-linux-gnu/libperl.so.5.36.0\n"
    "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0      [stack]\n"
    "garbage line\n";

TEST(Maps, ParsesEveryWellFormedLine) {
    const auto maps = parse_maps(kMaps);
    ASSERT_EQ(maps.size(), 7u);
    EXPECT_EQ(maps[0].start, 0x55d4c8a00000u);
    EXPECT_EQ(maps[0].path, "/usr/bin/perl");
    EXPECT_EQ(maps[1].offset, 0x2000u);
    EXPECT_EQ(maps[2].path, "[heap]");
    EXPECT_EQ(maps[3].path, "");
    EXPECT_EQ(maps[5].perms, "rw-p");
}

TEST(Maps, FindsTheMappingOfAnAddress) {
    const auto maps = parse_maps(kMaps);
    EXPECT_EQ(region_name(find_mapping(maps, 0x55d4c9000010)), "[heap]");
    EXPECT_EQ(region_name(find_mapping(maps, 0x7f0000123456)), "anonymous");
    EXPECT_EQ(region_name(find_mapping(maps, 0x7f1000200008)), "libperl.so.5.36.0 (data)");
    EXPECT_EQ(region_name(find_mapping(maps, 0x7f1000000100)), "libperl.so.5.36.0 (code)");
    EXPECT_EQ(region_name(find_mapping(maps, 0x7ffd00000100)), "[stack]");
    EXPECT_EQ(find_mapping(maps, 0x1000), nullptr);
    EXPECT_EQ(find_mapping(maps, 0x55d4cb000000), nullptr) << "end is exclusive";
    EXPECT_EQ(region_name(nullptr), "unmapped since");
}

TEST(Runtime, IsRecognisedFromMappingsOrCommand) {
    EXPECT_EQ(detect_runtime(parse_maps(kMaps), "perl-fcgi"), Runtime::perl);
    const auto python = parse_maps(
        "7f0000000000-7f0000100000 r-xp 00000000 fe:01 5 /usr/lib/libpython3.11.so.1.0\n");
    EXPECT_EQ(detect_runtime(python, "x"), Runtime::python);
    EXPECT_EQ(detect_runtime({}, "gunicorn"), Runtime::python);
    EXPECT_EQ(detect_runtime({}, "unicorn worker"), Runtime::ruby);
    EXPECT_EQ(detect_runtime({}, "nginx"), Runtime::unknown);
    // Only what tests/e2e (GunicornGcFreeze) proves: gc.freeze() stops the GC's writes, not
    // the refcount writes of reads.
    EXPECT_NE(runtime_advice(Runtime::python).find("gc.freeze()"), std::string::npos);
    EXPECT_NE(runtime_advice(Runtime::python).find("still unshares"), std::string::npos);
    EXPECT_EQ(runtime_advice(Runtime::python).find("gc.disable()"), std::string::npos)
        << "not proven by a test";
    EXPECT_NE(runtime_advice(Runtime::ruby).find("GC.compact"), std::string::npos);
}

TEST(Attribution, SplitsSamplesByRegionAndCode) {
    const auto maps = parse_maps(kMaps);
    Symbolizer symbolizer;
    const std::vector<CowSiteSample> samples = {
        {7, KR_SITE_DATA, 0x55d4c9010000, 30},  // heap
        {7, KR_SITE_DATA, 0x7f0000000000, 10},  // anonymous
        {7, KR_SITE_CODE, 0x7f1000000100, 40},  // libperl (file not present here)
    };
    const auto cow = attribute_cow(samples, maps, "perl", 8, symbolizer, "/nonexistent");
    ASSERT_EQ(cow.regions.size(), 2u);
    EXPECT_EQ(cow.regions[0].name, "[heap]");
    EXPECT_EQ(cow.regions[0].bytes, 30u * 8 * 4096);
    EXPECT_DOUBLE_EQ(cow.regions[0].fraction, 0.75);
    ASSERT_EQ(cow.sites.size(), 1u);
    EXPECT_EQ(cow.sites[0].name, "libperl.so.5.36.0") << "no symbols without the file";
    EXPECT_EQ(cow.runtime, Runtime::perl);
}

TEST(Symbolizer, NamesAFunctionOfThisBinary) {
    const auto address = reinterpret_cast<std::uint64_t>(&symbolizer_target_function) + 4;
    std::ifstream file("/proc/self/maps");
    std::stringstream text;
    text << file.rdbuf();
    const auto maps = parse_maps(text.str());
    const MemoryMapping* mapping = find_mapping(maps, address);
    ASSERT_NE(mapping, nullptr);
    Symbolizer symbolizer;
    const auto name = symbolizer.function_at(*mapping, address, mapping->path);
    ASSERT_TRUE(name.has_value());
    EXPECT_EQ(*name, "kidreaper::symbolizer_target_function");
    EXPECT_EQ(symbolizer_target_function(1), 4);
}

}  // namespace
}  // namespace kidreaper
