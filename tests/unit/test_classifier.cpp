#include "classifier.h"

#include <cstdint>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace kidreaper {
namespace {

constexpr double MiB = 1024.0 * 1024.0;

// A synthetic child: `cow_rate` and `leak_rate` in MiB/s, anon noise of +-`noise` MiB
// (allocations freed again), sampled every `interval` seconds for `seconds`.
std::vector<GrowthSample> series(double seconds, double cow_rate, double leak_rate,
                                 double noise = 0, double interval = 0.5, unsigned seed = 1) {
    std::mt19937 random(seed);
    std::uniform_real_distribution<double> jitter(-noise, noise);
    std::vector<GrowthSample> samples;
    const double base_anon = 40 * MiB;
    for (double t = 0; t <= seconds + 1e-9; t += interval) {
        GrowthSample sample;
        sample.seconds = t;
        sample.cow_bytes = static_cast<std::uint64_t>(cow_rate * t * MiB);
        sample.anon_bytes =
            static_cast<std::uint64_t>(base_anon + leak_rate * t * MiB + jitter(random) * MiB);
        samples.push_back(sample);
    }
    return samples;
}

TEST(Classifier, UnsharingChildIsCowNeverLeak) {
    const auto samples = series(30, 3.0, 0.0);
    const auto result = classify(samples);
    EXPECT_EQ(result.verdict, Verdict::cow) << result.reason;
    EXPECT_NEAR(result.cow_rate, 3.0 * MiB, 0.05 * MiB);
    EXPECT_EQ(result.sustained_growth_bytes, 0u);
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
    // Lowest of the last third minus highest of the first third: about a third of 20 MiB.
    EXPECT_GT(result.sustained_growth_bytes, static_cast<std::uint64_t>(6 * MiB));
    EXPECT_NEAR(static_cast<double>(result.anon_delta_bytes), 20 * MiB, 0.5 * MiB);
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
    std::vector<GrowthSample> samples;
    for (int i = 0; i <= 40; ++i) {
        const double t = i * 0.5;
        const double up = t <= 10 ? t * 2 : (20 - t) * 2;
        samples.push_back({t, 0, static_cast<std::uint64_t>((40 + up) * MiB)});
    }
    EXPECT_EQ(classify(samples).verdict, Verdict::stable);
}

TEST(Classifier, ShortWindowIsUnknown) {
    EXPECT_EQ(classify(series(2, 10.0, 10.0)).verdict, Verdict::unknown);
    EXPECT_EQ(classify(std::vector<GrowthSample>{}).verdict, Verdict::unknown);
    const std::vector<GrowthSample> two = {{0, 0, 0}, {10, 100 << 20, 100 << 20}};
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
