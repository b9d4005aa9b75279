#include "demo/workload.h"

#include <gtest/gtest.h>

#include <string>

#include "common/error.h"

namespace kidreaper {
namespace {

using std::chrono::milliseconds;
constexpr std::uint64_t MiB = 1ULL << 20;

TEST(ChildScript, ParsesEachKind) {
    auto idle = parse_child_script("idle");
    EXPECT_EQ(idle.name, "idle");
    EXPECT_EQ(idle.kind, ChildKind::plain);
    EXPECT_EQ(idle.cow_bytes, 0u);
    EXPECT_EQ(idle.leak_bytes, 0u);
    EXPECT_EQ(idle.work, milliseconds(0));

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

TEST(ChildScript, ParsesEachTrapKind) {
    auto shared = parse_child_script("shared:8M");
    EXPECT_EQ(shared.kind, ChildKind::shared);
    EXPECT_EQ(shared.name, "shared");
    EXPECT_EQ(shared.region_bytes, 8 * MiB);
    EXPECT_EQ(shared.rounds, 8);
    EXPECT_EQ(parse_child_script("shared:4Mx3").rounds, 3);
    EXPECT_EQ(parse_child_script("shared:4Mx3").region_bytes, 4 * MiB);

    auto zero = parse_child_script("zero:16M");
    EXPECT_EQ(zero.kind, ChildKind::zero);
    EXPECT_EQ(zero.region_bytes, 16 * MiB);

    auto mprotect = parse_child_script("mprotect:2Mx5");
    EXPECT_EQ(mprotect.kind, ChildKind::mprotect);
    EXPECT_EQ(mprotect.region_bytes, 2 * MiB);
    EXPECT_EQ(mprotect.rounds, 5);
    EXPECT_EQ(parse_child_script("mprotect:2M").rounds, 8);

    auto file = parse_child_script("file:8M");
    EXPECT_EQ(file.kind, ChildKind::file);
    EXPECT_EQ(file.region_bytes, 8 * MiB);

    auto thp = parse_child_script("thp:32M");
    EXPECT_EQ(thp.kind, ChildKind::thp);
    EXPECT_EQ(thp.region_bytes, 32 * MiB);

    auto warmup = parse_child_script("warmup:16M@10s");
    EXPECT_EQ(warmup.kind, ChildKind::warmup);
    EXPECT_EQ(warmup.leak_bytes, 16 * MiB);
    EXPECT_EQ(warmup.spread, std::chrono::seconds(10));

    auto burst = parse_child_script("burst:24M");
    EXPECT_EQ(burst.kind, ChildKind::burst);
    EXPECT_EQ(burst.leak_bytes, 24 * MiB);
    EXPECT_EQ(burst.idle, milliseconds(0));
    auto idling = parse_child_script("burst:24M@3s");
    EXPECT_EQ(idling.idle, std::chrono::seconds(3));
    EXPECT_EQ(idling.spread, milliseconds(0)) << "burst's @ is its idle time, not a spread";

    auto swapleak = parse_child_script("swapleak:8M");
    EXPECT_EQ(swapleak.kind, ChildKind::swapleak);
    EXPECT_EQ(swapleak.leak_bytes, 8 * MiB);
}

TEST(ChildScript, ParsesPrefixesAndSuffixesTogether) {
    auto leak = parse_child_script("leak:16M@4s+200ms");
    EXPECT_EQ(leak.leak_bytes, 16 * MiB);
    EXPECT_EQ(leak.spread, std::chrono::seconds(4));
    EXPECT_EQ(leak.work, milliseconds(200));

    auto cow = parse_child_script("cow:8M+1.5s");
    EXPECT_EQ(cow.spread, milliseconds(0));
    EXPECT_EQ(cow.work, milliseconds(1500));

    EXPECT_EQ(parse_child_script("idle+1s").work, std::chrono::seconds(1));

    auto everything = parse_child_script("web1=late:shared:4Mx2@1s+50ms");
    EXPECT_EQ(everything.name, "web1");
    EXPECT_TRUE(everything.late);
    EXPECT_EQ(everything.kind, ChildKind::shared);
    EXPECT_EQ(everything.region_bytes, 4 * MiB);
    EXPECT_EQ(everything.rounds, 2);
    EXPECT_EQ(everything.spread, std::chrono::seconds(1));
    EXPECT_EQ(everything.work, milliseconds(50));

    auto late_warmup = parse_child_script("late:warmup:8M@2s+100ms");
    EXPECT_EQ(late_warmup.name, "late-warmup");
    EXPECT_EQ(late_warmup.spread, std::chrono::seconds(2));
    EXPECT_EQ(late_warmup.work, milliseconds(100));

    auto burst = parse_child_script("burst:4M@500ms+20ms");
    EXPECT_EQ(burst.idle, milliseconds(500));
    EXPECT_EQ(burst.work, milliseconds(20));
}

TEST(ChildScript, RejectsMalformedScripts) {
    for (const char* bad :
         {"", "cow", "cow:", "leak:12X", "mixed:1M", "idle:3", "sleep", "cow:1M@x", "=idle"}) {
        EXPECT_THROW(parse_child_script(bad), UsageError) << bad;
    }
}

TEST(ChildScript, RejectsMalformedTrapScripts) {
    for (const char* bad : {
             "shared:0",           // a size above zero
             "shared:4Mx0",        // at least one round
             "shared:4Mx",         // rounds missing
             "shared:4Mx-1",       // rounds negative
             "shared:4Mx2.5",      // rounds whole
             "shared:4Mx9999999",  // too many rounds
             "shared:4Mx3x2",      // one x
             "shared",             // no size
             "shared:4M:2",        // one argument
             "zero:4Mx2",          // zero: takes no rounds
             "file:4Mx2",          // nor file:
             "zero:0",
             "mprotect:0",
             "file:0",
             "thp:0",
             "swapleak:0",
             "burst:0",
             "thp:3M",            // not a multiple of 2 MiB
             "warmup:4M",         // needs a duration
             "warmup:4M@0",       // above zero
             "warmup:0@1s",       // a size above zero
             "leak:4M+",          // + without a duration
             "leak:4M@1s+",       // same, after a spread
             "leak:4M+x",         // + not a duration
             "leak:4M+200ms@1s",  // @ before +
             "leak:4M+1s+1s",     // one +
             "leak:4M@",          // @ without a duration
             "bogus:4M",          // unknown kind
             "Shared:4M",         // kinds are lower case
             "name=",             // no kind
             "late:",             // no kind
         }) {
        EXPECT_THROW(parse_child_script(bad), UsageError) << bad;
    }
}

TEST(ChildScript, ErrorNamesTheScriptAndTheCause) {
    try {
        parse_child_script("shared:4Mx0");
        FAIL() << "no error";
    } catch (const UsageError& e) {
        const std::string message = e.what();
        EXPECT_NE(message.find("\"shared:4Mx0\""), std::string::npos) << message;
        EXPECT_NE(message.find("rounds"), std::string::npos) << message;
        EXPECT_EQ(message.find('\n'), std::string::npos) << "one line";
    }
    try {
        parse_child_script("warmup:4M");
        FAIL() << "no error";
    } catch (const UsageError& e) {
        EXPECT_NE(std::string(e.what()).find("@DURATION"), std::string::npos) << e.what();
    }
}

TEST(ChildScript, IgnoreSignalsIsAPrefixOfTheKind) {
    const auto stubborn = parse_child_script("big=late:ignore-signals:leak:24M");
    EXPECT_TRUE(stubborn.ignore_all_signals);
    EXPECT_TRUE(stubborn.late);
    EXPECT_EQ(stubborn.name, "big");
    EXPECT_EQ(stubborn.leak_bytes, 24 * MiB);
    EXPECT_EQ(parse_child_script("ignore-signals:idle").name, "idle");
    EXPECT_FALSE(parse_child_script("leak:24M").ignore_all_signals);
    EXPECT_THROW(parse_child_script("ignore-signals:"), UsageError);
    EXPECT_THROW(parse_child_script("ignore-signals:late:idle"), UsageError) << "late: first";
}

TEST(Churn, ParsesChildrenAtARate) {
    const ChurnSpec churn = parse_churn("1000@50");
    EXPECT_EQ(churn.children, 1000u);
    EXPECT_EQ(churn.forks_per_second, 50u);
    for (const char* bad : {"", "1000", "@50", "1000@", "0@50", "1000@0", "-1@5", "10@5x", "a@b"}) {
        EXPECT_THROW(parse_churn(bad), UsageError) << bad;
    }
    try {
        parse_churn("10");
        FAIL() << "no error";
    } catch (const UsageError& e) {
        EXPECT_NE(std::string(e.what()).find("\"10\""), std::string::npos) << e.what();
    }
}

TEST(WorkloadTruth, PlainKindsUnshareThePreloadAndGrowByTheLeak) {
    const ScriptTruth idle = script_truth(parse_child_script("idle"));
    EXPECT_EQ(idle.cow_bytes, 0u);
    EXPECT_EQ(idle.growth_bytes, 0u);
    EXPECT_FALSE(idle.leak);

    const ScriptTruth cow = script_truth(parse_child_script("cow:32M@2s"), 64 * MiB);
    EXPECT_EQ(cow.cow_bytes, 32 * MiB);
    EXPECT_EQ(cow.growth_bytes, 0u);
    EXPECT_EQ(cow.anon_rise_bytes, 0u) << "a COW copy replaces the inherited page";
    EXPECT_FALSE(cow.leak);
    EXPECT_EQ(script_truth(parse_child_script("cow:32M"), 8 * MiB).cow_bytes, 8 * MiB)
        << "no more than the preload";

    const ScriptTruth mixed = script_truth(parse_child_script("mixed:16M:8M+300ms"));
    EXPECT_EQ(mixed.cow_bytes, 16 * MiB);
    EXPECT_EQ(mixed.growth_bytes, 8 * MiB);
    EXPECT_EQ(mixed.anon_rise_bytes, 8 * MiB);
    EXPECT_TRUE(mixed.leak);
    EXPECT_EQ(mixed.busy_cpu, milliseconds(300));

    EXPECT_EQ(script_truth(parse_child_script("leak:5000")).growth_bytes, 8192u) << "whole pages";
}

TEST(WorkloadTruth, EachTrapHasItsTruth) {
    const ScriptTruth shared = script_truth(parse_child_script("shared:8Mx4"));
    EXPECT_EQ(shared.cow_bytes, 0u);
    EXPECT_EQ(shared.growth_bytes, 0u);
    EXPECT_EQ(shared.anon_rise_bytes, 0u);
    EXPECT_FALSE(shared.leak);

    const ScriptTruth zero = script_truth(parse_child_script("zero:8M"));
    EXPECT_EQ(zero.cow_bytes, 0u);
    EXPECT_EQ(zero.growth_bytes, 8 * MiB);
    EXPECT_TRUE(zero.leak);

    const ScriptTruth mprotect = script_truth(parse_child_script("mprotect:8Mx16"));
    EXPECT_EQ(mprotect.cow_bytes, 0u);
    EXPECT_EQ(mprotect.growth_bytes, 8 * MiB) << "the first writes only";

    const ScriptTruth file = script_truth(parse_child_script("file:8M"));
    EXPECT_EQ(file.cow_bytes, 8 * MiB);
    EXPECT_EQ(file.growth_bytes, 0u);
    EXPECT_EQ(file.anon_rise_bytes, 8 * MiB) << "page cache copied into anon pages";
    EXPECT_FALSE(file.leak);

    const ScriptTruth thp = script_truth(parse_child_script("thp:16M"), 0);
    EXPECT_EQ(thp.cow_bytes, 16 * MiB) << "its own region, not the preload";
    EXPECT_EQ(thp.growth_bytes, 0u);

    const ScriptTruth warmup = script_truth(parse_child_script("warmup:16M@1s+10ms"));
    EXPECT_EQ(warmup.growth_bytes, 16 * MiB);
    EXPECT_FALSE(warmup.leak) << "a warm-up";
    // 850 ms of work after 150 ms of growth: 42 ticks of 5 ms, plus the +WORK.
    EXPECT_EQ(warmup.busy_cpu, milliseconds(42 * 5 + 10));

    const ScriptTruth burst = script_truth(parse_child_script("burst:16M@5s"));
    EXPECT_EQ(burst.growth_bytes, 16 * MiB);
    EXPECT_TRUE(burst.leak);
    EXPECT_EQ(burst.busy_cpu, milliseconds(16 * 2)) << "2 ms per MiB";

    const ScriptTruth swapleak = script_truth(parse_child_script("swapleak:8M"));
    EXPECT_EQ(swapleak.growth_bytes, 8 * MiB) << "resident plus swapped";
    EXPECT_EQ(swapleak.anon_rise_bytes, 8 * MiB);
    EXPECT_TRUE(swapleak.leak);
}

}  // namespace
}  // namespace kidreaper
