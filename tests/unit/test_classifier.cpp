#include "model/classifier.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "model/sample_history.h"

namespace kidreaper {
namespace {

constexpr double MiB = 1024.0 * 1024.0;
constexpr double kBusy = 0.2;  // CPU-seconds per second of a child serving requests

GrowthSample at(double t, double anon_mib, double cow_mib, double work_seconds) {
    GrowthSample sample;
    sample.seconds = t;
    sample.anon_bytes = static_cast<std::uint64_t>(anon_mib * MiB);
    sample.cow_bytes = static_cast<std::uint64_t>(cow_mib * MiB);
    sample.work_seconds = work_seconds;
    return sample;
}

// A synthetic child sampled every `interval` s for `seconds`; `child(t)` gives its sample.
template <typename Child>
std::vector<GrowthSample> trace(double seconds, double interval, Child child) {
    std::vector<GrowthSample> samples;
    for (int i = 0; i * interval <= seconds + 1e-9; ++i) {
        samples.push_back(child(i * interval));
    }
    return samples;
}

// The same child seen through a bounded whole-life history, as `reap` keeps it.
template <typename Child>
SampleHistory history(double seconds, double interval, Child child, std::size_t capacity = 512) {
    SampleHistory kept(capacity);
    for (const GrowthSample& sample : trace(seconds, interval, child)) {
        kept.append(sample);
    }
    return kept;
}

// A busy child: `cow_rate` and `leak_rate` in MiB/s, anon noise of +-`noise` MiB
// (allocations freed again), `work_rate` CPU-seconds per second, sampled every `interval`
// seconds for `seconds`.
std::vector<GrowthSample> series(double seconds, double cow_rate, double leak_rate,
                                 double noise = 0, double interval = 0.5, unsigned seed = 1,
                                 double work_rate = kBusy) {
    std::mt19937 random(seed);
    std::uniform_real_distribution<double> jitter(-noise, noise);
    return trace(seconds, interval, [&](double t) {
        return at(t, 40 + leak_rate * t + jitter(random), cow_rate * t, work_rate * t);
    });
}

TEST(Classifier, UnsharingChildIsCowNeverLeak) {
    const auto samples = series(30, 3.0, 0.0);
    const auto result = classify(samples);
    EXPECT_EQ(result.verdict, Verdict::cow) << result.reason;
    EXPECT_NEAR(result.cow_rate, 3.0 * MiB, 0.05 * MiB);
    EXPECT_EQ(result.sustained_growth_bytes, 0u);
    EXPECT_NEAR(result.work_seconds, 6.0, 1e-9);
}

TEST(Classifier, CowChildWithNoisyRequestAllocationsIsStillCow) {
    // Each request allocates and frees up to 8 MiB: anon jumps around but does not stay up.
    for (unsigned seed = 1; seed <= 20; ++seed) {
        const auto samples = series(15, 2.0, 0.0, 4.0, 0.5, seed);
        const auto result = classify(samples);
        EXPECT_EQ(result.verdict, Verdict::cow) << "seed " << seed << ": " << result.reason;
    }
}

TEST(Classifier, SteadyGrowthIsLeak) {
    const auto result = classify(series(20, 0.0, 1.0));
    EXPECT_EQ(result.verdict, Verdict::leak) << result.reason;
    EXPECT_NEAR(result.growth_rate, 1.0 * MiB, 0.05 * MiB);
    // Lowest of the last third of the work minus highest of the first: a third of 20 MiB.
    EXPECT_GT(result.sustained_growth_bytes, static_cast<std::uint64_t>(6 * MiB));
    EXPECT_NEAR(static_cast<double>(result.anon_delta_bytes), 20 * MiB, 0.5 * MiB);
    EXPECT_NEAR(result.work_seconds, 4.0, 1e-9);
    EXPECT_NEAR(result.growth_per_work_second,
                static_cast<double>(result.sustained_growth_bytes) / 4.0, 1.0);
    EXPECT_NE(result.reason.find("per CPU-second"), std::string::npos) << result.reason;
}

TEST(Classifier, NoisyLeakIsStillLeak) {
    for (unsigned seed = 1; seed <= 20; ++seed) {
        const auto result = classify(series(20, 0.0, 1.0, 2.0, 0.5, seed));
        EXPECT_EQ(result.verdict, Verdict::leak) << "seed " << seed << ": " << result.reason;
    }
}

TEST(Classifier, BothAtOnceIsMixed) {
    const auto result = classify(series(20, 2.0, 1.0, 0.5));
    EXPECT_EQ(result.verdict, Verdict::mixed) << result.reason;
}

TEST(Classifier, LeakThatUnsharesALittleIsStillLeak) {
    // A fresh worker unshares ~1 MiB serving requests while leaking 6 MiB/s: a leak.
    const auto result = classify(series(15, 0.08, 6.0, 0.5));
    EXPECT_EQ(result.verdict, Verdict::leak) << result.reason;
    EXPECT_GE(result.cow_bytes, 1u << 20);
}

TEST(Classifier, QuietChildIsStable) {
    const auto result = classify(series(30, 0.01, 0.0, 0.2));
    EXPECT_EQ(result.verdict, Verdict::stable) << result.reason;
}

TEST(Classifier, GrowthGivenBackIsNotALeak) {
    // Anon climbs 20 MiB in the first half, then returns to where it started.
    const auto samples = trace(20, 0.5, [](double t) {
        const double up = t <= 10 ? t * 2 : (20 - t) * 2;
        return at(t, 40 + up, 0, kBusy * t);
    });
    const auto result = classify(samples);
    EXPECT_EQ(result.verdict, Verdict::stable) << result.reason;
}

TEST(Classifier, ShortWindowIsUnknown) {
    EXPECT_EQ(classify(series(2, 10.0, 10.0)).verdict, Verdict::unknown);
    EXPECT_EQ(classify(std::vector<GrowthSample>{}).verdict, Verdict::unknown);
    const std::vector<GrowthSample> two = {at(0, 0, 0, 0), at(10, 100, 100, 2)};
    EXPECT_EQ(classify(two).verdict, Verdict::unknown) << "two samples are too few";
}

TEST(Classifier, ChildThatExitedMidWindowIsJudgedOnWhatWasSeen) {
    // Leaked for 8 s, then exited: its samples stop; the verdict still stands.
    auto samples = series(8, 0.0, 2.0);
    EXPECT_EQ(classify(samples).verdict, Verdict::leak);
}

TEST(Classifier, ThresholdsAreConfigurable) {
    ClassifierConfig strict;
    strict.min_growth_bytes = 64ULL << 20;
    EXPECT_EQ(classify(series(20, 0.0, 1.0), strict).verdict, Verdict::stable);
}

TEST(Classifier, BurstLeakThenIdleIsLeak) {
    // 10 MiB leaked by a burst of requests in the first 3 s of 25 s, idle after: the work
    // stops with the burst, so the idle samples are all in the last third of the work.
    const auto burst = [](double t) { return std::min(t, 3.0); };
    const auto samples = trace(
        25, 0.5, [&](double t) { return at(t, 40 + 10 * burst(t) / 3, 0, kBusy * burst(t)); });
    const auto result = classify(samples);
    EXPECT_EQ(result.verdict, Verdict::leak) << result.reason;
    EXPECT_NEAR(result.work_seconds, 0.6, 1e-9);
    EXPECT_GE(result.sustained_growth_bytes, static_cast<std::uint64_t>(3 * MiB));
    EXPECT_GT(result.growth_per_work_second, 5 * MiB);
}

TEST(Classifier, BurstLeakInAnUnsharingChildIsMixedNotCow) {
    // As above, in a child that also unshares 0.5 MiB/s the whole window.
    const auto burst = [](double t) { return std::min(t, 3.0); };
    const auto samples = trace(25, 0.5, [&](double t) {
        return at(t, 40 + 10 * burst(t) / 3, 0.5 * t, kBusy * burst(t) + 0.001 * t);
    });
    const auto result = classify(samples);
    EXPECT_EQ(result.verdict, Verdict::mixed) << result.reason;
}

TEST(Classifier, IdleAfterGrowthInsideTheWindowIsLeak) {
    // Works from the start, leaks 9 MiB between 2 s and 8 s, idle from 8 s to 25 s.
    const auto samples = trace(25, 0.5, [](double t) {
        const double grown = std::clamp((t - 2) / 6, 0.0, 1.0) * 9;
        return at(t, 40 + grown, 0, kBusy * std::min(t, 8.0));
    });
    const auto result = classify(samples);
    EXPECT_EQ(result.verdict, Verdict::leak) << result.reason;
}

TEST(Classifier, BurstyTrafficThatFreesItsAllocationsIsNotALeak) {
    // A 1 s burst every 5 s, each request holding up to 8 MiB until it ends; idle between.
    for (unsigned seed = 1; seed <= 20; ++seed) {
        std::mt19937 random(seed);
        std::uniform_real_distribution<double> held(0, 8);
        const auto samples = trace(25, 0.5, [&](double t) {
            const double cycle = t - 5 * static_cast<int>(t / 5);
            const double work = kBusy * (static_cast<int>(t / 5) + std::min(cycle, 1.0));
            return at(t, 40 + (cycle > 0 && cycle < 1 ? held(random) : 0), 0.1 * t, work);
        });
        const auto result = classify(samples);
        EXPECT_EQ(result.verdict, Verdict::cow) << "seed " << seed << ": " << result.reason;
    }
}

TEST(Classifier, WarmUpThenFlatWhileWorkingIsNotALeak) {
    // Grows 8 MiB in the first 15% of its work (4.5 s of 30 s), then flat, working steadily.
    const auto warm = [](double t) { return std::min(t / 4.5, 1.0) * 8; };
    for (unsigned seed = 1; seed <= 20; ++seed) {
        std::mt19937 random(seed);
        std::uniform_real_distribution<double> jitter(-1, 1);
        const auto quiet = trace(
            30, 0.5, [&](double t) { return at(t, 40 + warm(t) + jitter(random), 0, kBusy * t); });
        const auto result = classify(quiet);
        EXPECT_EQ(result.verdict, Verdict::stable) << "seed " << seed << ": " << result.reason;
        EXPECT_GE(result.anon_delta_bytes, static_cast<std::int64_t>(6 * MiB));
    }
    const auto flat = trace(30, 0.5, [&](double t) { return at(t, 40 + warm(t), 0, kBusy * t); });
    const auto result = classify(flat);
    EXPECT_EQ(result.verdict, Verdict::stable) << result.reason;
    EXPECT_NE(result.reason.find("warming up"), std::string::npos) << result.reason;

    const auto unsharing =
        trace(30, 0.5, [&](double t) { return at(t, 40 + warm(t), 2 * t, kBusy * t); });
    EXPECT_EQ(classify(unsharing).verdict, Verdict::cow) << classify(unsharing).reason;
}

TEST(Classifier, CacheThatFillsThenStaysFlatIsNotALeak) {
    // A cache fills towards 30 MiB (time constant: 5% of the work), the child keeps working.
    const auto samples = trace(
        60, 1, [](double t) { return at(t, 40 + 30 * (1 - std::exp(-t / 3)), 0, kBusy * t); });
    const auto result = classify(samples);
    EXPECT_EQ(result.verdict, Verdict::stable) << result.reason;
}

TEST(Classifier, GrowingChildWhoseWorkNeverMovesIsUnknown) {
    // Anon grows 10 MiB but the CPU time never moves: nothing to read the growth against.
    const auto still = trace(20, 0.5, [](double t) { return at(t, 40 + t / 2, 0, 0); });
    auto result = classify(still);
    EXPECT_EQ(result.verdict, Verdict::unknown) << result.reason;
    EXPECT_NE(result.reason.find("not enough work seen to tell"), std::string::npos)
        << result.reason;
    EXPECT_EQ(result.reason.rfind("grew 10 MiB", 0), 0u) << result.reason;

    // A burst inside one interval: the work moves once (two values), the growth is kept
    // while the child idles afterwards: a leak, not unknown.
    const auto burst =
        trace(20, 0.5, [](double t) { return at(t, t < 2 ? 40 : 52, 0, t < 2 ? 0 : 0.06); });
    EXPECT_EQ(classify(burst).verdict, Verdict::leak) << classify(burst).reason;

    // Nor is less than min_work_seconds of CPU time, however finely it is spread.
    const auto sliver = trace(20, 0.5, [](double t) { return at(t, 40 + t / 2, 0, t * 1e-5); });
    EXPECT_EQ(classify(sliver).verdict, Verdict::unknown) << classify(sliver).reason;
}

TEST(Classifier, IdleChildThatDoesNotGrowIsJudged) {
    const auto idle = trace(20, 0.5, [](double t) { return at(t, 40, 0, 0); });
    EXPECT_EQ(classify(idle).verdict, Verdict::stable) << classify(idle).reason;
    const auto unsharing = trace(20, 0.5, [](double t) { return at(t, 40, t, 0); });
    EXPECT_EQ(classify(unsharing).verdict, Verdict::cow) << classify(unsharing).reason;
}

TEST(Classifier, WorkThatRunsBackwardsCountsAsNoWork) {
    // A glitch in the CPU-time reading must not reorder the samples or break the verdict.
    auto samples = series(20, 0.0, 1.0);
    samples[20].work_seconds = 0;
    const auto result = classify(samples);
    EXPECT_EQ(result.verdict, Verdict::leak) << result.reason;
    EXPECT_NEAR(result.work_seconds, 4.0, 1e-9);
}

TEST(Classifier, SlowLeakOverMinutesThroughHistoryIsLeak) {
    // 1 MiB/min, sampled every second, kept in a 512-sample whole-life history.
    for (const double minutes : {10.0, 15.0}) {
        for (unsigned seed = 1; seed <= 5; ++seed) {
            std::mt19937 random(seed);
            std::uniform_real_distribution<double> jitter(-0.5, 0.5);
            const SampleHistory kept = history(minutes * 60, 1, [&](double t) {
                return at(t, 40 + t / 60 + jitter(random), 0.001 * t, kBusy * t);
            });
            ASSERT_LE(kept.size(), 512u);
            const auto result = classify(kept.samples());
            EXPECT_EQ(result.verdict, Verdict::leak)
                << minutes << " min, seed " << seed << ": " << result.reason;
        }
    }
}

TEST(Classifier, WarmUpOverHoursThroughHistoryIsNotALeak) {
    // Two hours of work at a steady rate; 8 MiB of warm-up in the first 15% of it, noise after.
    for (unsigned seed = 1; seed <= 5; ++seed) {
        std::mt19937 random(seed);
        std::uniform_real_distribution<double> jitter(-1, 1);
        const double warm_up = 0.15 * 7200;
        const SampleHistory kept = history(7200, 1, [&](double t) {
            return at(t, 40 + std::min(t / warm_up, 1.0) * 8 + jitter(random), 0, kBusy * t);
        });
        ASSERT_LE(kept.size(), 512u);
        EXPECT_EQ(kept.samples().front().seconds, 0);
        const auto result = classify(kept.samples());
        EXPECT_EQ(result.verdict, Verdict::stable) << "seed " << seed << ": " << result.reason;
    }
}

TEST(TheilSen, IgnoresOutliers) {
    auto samples = series(20, 0, 1.0);
    samples[10].anon_bytes += static_cast<std::uint64_t>(500 * MiB);
    samples[20].anon_bytes = 0;
    EXPECT_NEAR(theil_sen_slope(samples), 1.0 * MiB, 0.05 * MiB);
}

TEST(Verdicts, HaveTheirContractNames) {
    EXPECT_EQ(verdict_name(Verdict::leak), "leak");
    EXPECT_EQ(verdict_name(Verdict::cow), "cow");
    EXPECT_EQ(verdict_name(Verdict::stable), "stable");
    EXPECT_EQ(verdict_name(Verdict::mixed), "mixed");
    EXPECT_EQ(verdict_name(Verdict::unknown), "unknown");
}

}  // namespace
}  // namespace kidreaper
