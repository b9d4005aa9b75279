#include "model/sample_history.h"

#include <cstdint>

#include <gtest/gtest.h>

namespace kidreaper {
namespace {

GrowthSample numbered(std::uint64_t n) {
    GrowthSample sample;
    sample.seconds = static_cast<double>(n);
    sample.anon_bytes = n;
    sample.work_seconds = static_cast<double>(n) / 10;
    return sample;
}

TEST(SampleHistory, HoldsEverythingUnderCapacity) {
    SampleHistory history(64);
    EXPECT_TRUE(history.empty());
    for (std::uint64_t n = 0; n < 64; ++n) {
        history.append(numbered(n));
    }
    ASSERT_EQ(history.size(), 64u);
    for (std::uint64_t n = 0; n < 64; ++n) {
        EXPECT_EQ(history.samples()[n].anon_bytes, n);
    }
}

TEST(SampleHistory, SizeIsBounded) {
    SampleHistory history(64);
    for (std::uint64_t n = 0; n < 100000; ++n) {
        history.append(numbered(n));
        ASSERT_LE(history.size(), 64u) << "after " << n;
    }
    EXPECT_GE(history.size(), 48u);
    EXPECT_EQ(history.appended(), 100000u);
}

TEST(SampleHistory, CapacityIsAtLeast16) {
    SampleHistory history(2);
    EXPECT_EQ(history.capacity(), 16u);
    for (std::uint64_t n = 0; n < 1000; ++n) {
        history.append(numbered(n));
    }
    EXPECT_LE(history.size(), 16u);
    EXPECT_EQ(history.samples().front().anon_bytes, 0u);
    EXPECT_EQ(history.back().anon_bytes, 999u);
}

TEST(SampleHistory, KeepsTheFirstAndTheNewestInOrder) {
    SampleHistory history(32);
    for (std::uint64_t n = 0; n < 5000; ++n) {
        history.append(numbered(n));
        const auto samples = history.samples();
        ASSERT_EQ(samples.front().anon_bytes, 0u) << "the start of life is kept";
        ASSERT_EQ(history.back().anon_bytes, n) << "the newest is last";
        for (std::size_t i = 1; i < samples.size(); ++i) {
            ASSERT_LT(samples[i - 1].seconds, samples[i].seconds) << "order after " << n;
        }
    }
}

TEST(SampleHistory, NewestAreAtFullResolution) {
    SampleHistory history(64);
    for (std::uint64_t n = 0; n < 10000; ++n) {
        history.append(numbered(n));
    }
    const auto samples = history.samples();
    for (std::size_t i = samples.size() - 16; i < samples.size(); ++i) {
        EXPECT_EQ(samples[i].anon_bytes, 10000 - samples.size() + i);
    }
}

TEST(SampleHistory, SpansTheWholeLife) {
    // Every third of a long life keeps a fair share of samples, evenly spaced.
    SampleHistory history(64);
    const std::uint64_t life = 100000;
    for (std::uint64_t n = 0; n < life; ++n) {
        history.append(numbered(n));
    }
    std::size_t per_third[3] = {0, 0, 0};
    double widest_gap = 0;
    const auto samples = history.samples();
    for (std::size_t i = 0; i < samples.size(); ++i) {
        ++per_third[std::min<std::size_t>(2,
                                          static_cast<std::size_t>(samples[i].seconds * 3 / life))];
        if (i > 0) {
            widest_gap = std::max(widest_gap, samples[i].seconds - samples[i - 1].seconds);
        }
    }
    for (const std::size_t count : per_third) {
        EXPECT_GE(count, 64u / 12);
    }
    EXPECT_EQ(static_cast<double>(history.stride()), widest_gap);
    EXPECT_LE(widest_gap, 4.0 * life / 64);
}

}  // namespace
}  // namespace kidreaper
