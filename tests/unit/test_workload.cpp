#include "workload.h"

#include <gtest/gtest.h>

#include "error.h"

namespace kidreaper {
namespace {

TEST(ChildScript, ParsesEachKind) {
    auto idle = parse_child_script("idle");
    EXPECT_EQ(idle.name, "idle");
    EXPECT_EQ(idle.cow_bytes, 0u);
    EXPECT_EQ(idle.leak_bytes, 0u);

    auto cow = parse_child_script("cow:32M");
    EXPECT_EQ(cow.name, "cow");
    EXPECT_EQ(cow.cow_bytes, 32ULL << 20);

    auto mixed = parse_child_script("mixed:16M:8M@2s");
    EXPECT_EQ(mixed.cow_bytes, 16ULL << 20);
    EXPECT_EQ(mixed.leak_bytes, 8ULL << 20);
    EXPECT_EQ(mixed.spread, std::chrono::seconds(2));

    auto late = parse_child_script("late:leak:1G");
    EXPECT_TRUE(late.late);
    EXPECT_EQ(late.name, "late-leak");
    EXPECT_EQ(late.leak_bytes, 1ULL << 30);

    auto named = parse_child_script("goner=late:leak:2M@1s");
    EXPECT_EQ(named.name, "goner");
    EXPECT_TRUE(named.late);
    EXPECT_EQ(named.leak_bytes, 2ULL << 20);
}

TEST(ChildScript, RejectsMalformedScripts) {
    for (const char* bad :
         {"", "cow", "cow:", "leak:12X", "mixed:1M", "idle:3", "sleep", "cow:1M@x", "=idle"}) {
        EXPECT_THROW(parse_child_script(bad), UsageError) << bad;
    }
}

}  // namespace
}  // namespace kidreaper
