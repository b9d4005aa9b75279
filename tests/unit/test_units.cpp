#include "common/units.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>

#include "expect_usage_error.h"

namespace kidreaper {
namespace {

using std::chrono::milliseconds;
using testing::contains;
using testing::usage_error_message;

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;
constexpr std::uint64_t GiB = 1024 * MiB;
constexpr std::uint64_t TiB = 1024 * GiB;

std::string size_error(std::string_view text) {
    return usage_error_message([&] { parse_size(text); });
}

std::string duration_error(std::string_view text) {
    return usage_error_message([&] { parse_duration(text); });
}

// ---- parse_size ------------------------------------------------------------------------

TEST(ParseSize, PlainBytes) {
    EXPECT_EQ(parse_size("0"), 0u);
    EXPECT_EQ(parse_size("1"), 1u);
    EXPECT_EQ(parse_size("4096"), 4096u);
    EXPECT_EQ(parse_size("4096B"), 4096u);
    EXPECT_EQ(parse_size("4096b"), 4096u);
    EXPECT_EQ(parse_size("007"), 7u);
    EXPECT_EQ(parse_size("1.0"), 1u);  // a whole number written with a point is no fraction
}

TEST(ParseSize, BinaryUnitsAnyCase) {
    EXPECT_EQ(parse_size("512k"), 512 * KiB);
    EXPECT_EQ(parse_size("512K"), 512 * KiB);
    EXPECT_EQ(parse_size("512KiB"), 512 * KiB);
    EXPECT_EQ(parse_size("512kib"), 512 * KiB);
    EXPECT_EQ(parse_size("50MiB"), 50 * MiB);
    EXPECT_EQ(parse_size("50M"), 50 * MiB);
    EXPECT_EQ(parse_size("50m"), 50 * MiB);
    EXPECT_EQ(parse_size("1G"), GiB);
    EXPECT_EQ(parse_size("1GiB"), GiB);
    EXPECT_EQ(parse_size("1g"), GiB);
    EXPECT_EQ(parse_size("2T"), 2 * TiB);
    EXPECT_EQ(parse_size("2TiB"), 2 * TiB);
}

TEST(ParseSize, DecimalLookingUnitsAreBinary) {
    EXPECT_EQ(parse_size("512KB"), 512 * KiB);
    EXPECT_EQ(parse_size("512kb"), 512 * KiB);
    EXPECT_EQ(parse_size("50MB"), 50 * MiB);
    EXPECT_EQ(parse_size("3GB"), 3 * GiB);
    EXPECT_EQ(parse_size("1TB"), TiB);
}

TEST(ParseSize, FractionsWithUnitRoundDown) {
    EXPECT_EQ(parse_size("1.5G"), GiB + GiB / 2);
    EXPECT_EQ(parse_size("0.5K"), 512u);
    EXPECT_EQ(parse_size("1.50M"), MiB + MiB / 2);
    EXPECT_EQ(parse_size("0.25MiB"), MiB / 4);
    EXPECT_EQ(parse_size("1.1K"), 1126u);  // 1126.4 bytes
    EXPECT_EQ(parse_size("0.001K"), 1u);   // 1.024 bytes
    EXPECT_EQ(parse_size("0.0001K"), 0u);  // 0.1024 bytes
    EXPECT_EQ(parse_size("0.999999999999999999K"), 1023u);
    EXPECT_EQ(parse_size("2.000000000000000000000000T"), 2 * TiB);  // trailing zeros are free
}

TEST(ParseSize, LimitsOf64Bits) {
    constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
    EXPECT_EQ(parse_size("18446744073709551615"), kMax);
    EXPECT_EQ(parse_size("16777215T"), kMax - (TiB - 1));
    EXPECT_EQ(parse_size("16777215.5T"), kMax - (TiB - 1) + TiB / 2);
    EXPECT_EQ(parse_size("17179869183G"), kMax - (GiB - 1));

    EXPECT_TRUE(contains(size_error("18446744073709551616"), "too large"));
    EXPECT_TRUE(contains(size_error("99999999999999999999999999"), "too large"));
    EXPECT_TRUE(contains(size_error("16777216T"), "too large"));
    EXPECT_TRUE(contains(size_error("17179869184G"), "too large"));
    EXPECT_TRUE(contains(size_error("16777215.9999999999999999999T"), "decimal places"));
}

TEST(ParseSize, ErrorMessageQuotesInputAndListsUnits) {
    EXPECT_EQ(size_error("12X"),
              "invalid size \"12X\": expected a number with an optional unit "
              "(B, K, KiB, M, MiB, G, GiB, T, TiB)");
}

TEST(ParseSize, RejectsNegative) {
    EXPECT_EQ(size_error("-1"), "invalid size \"-1\": must not be negative");
    EXPECT_TRUE(contains(size_error("-5M"), "negative"));
    EXPECT_TRUE(contains(size_error("-0"), "negative"));
}

TEST(ParseSize, RejectsFractionalBytes) {
    EXPECT_TRUE(contains(size_error("1.5"), "whole number"));
    EXPECT_TRUE(contains(size_error("1.5B"), "whole number"));
    EXPECT_TRUE(contains(size_error("0.1b"), "whole number"));
}

TEST(ParseSize, RejectsMalformed) {
    for (const char* text : {"12X", "M",     "KiB",   "1 M",    " 1M",  "1M ", "1\tM",  ".5G",
                             "1.G", "1.",    "1..5G", "1.5.5G", "+1",   "1e3", "0x10",  "1MiBB",
                             "1Mi", "1KIBs", "1P",    "1PiB",   "1,5G", "one", "1_000", "\xff"}) {
        const std::string message = size_error(text);
        EXPECT_TRUE(contains(message, "invalid size \"")) << text << " -> " << message;
        EXPECT_TRUE(contains(message, "expected a number")) << text << " -> " << message;
    }
}

TEST(ParseSize, RejectsEmpty) {
    const std::string message = size_error("");
    EXPECT_TRUE(contains(message, "invalid size \"\": empty")) << message;
}

TEST(ParseSize, HostileInputIsEscapedInTheMessage) {
    const std::string message = size_error(std::string_view("1\nM\0\x1b[2J", 8));
    EXPECT_TRUE(contains(message, "\"1\\x0aM\\x00\\x1b[2J\"")) << message;
    const std::string long_input(500, '9');
    EXPECT_LT(size_error(long_input + "Q").size(), 250u);  // cut, not 500 digits long
}

// ---- parse_duration --------------------------------------------------------------------

TEST(ParseDuration, Units) {
    EXPECT_EQ(parse_duration("500ms"), milliseconds(500));
    EXPECT_EQ(parse_duration("10s"), milliseconds(10'000));
    EXPECT_EQ(parse_duration("2m"), milliseconds(120'000));
    EXPECT_EQ(parse_duration("1h"), milliseconds(3'600'000));
    EXPECT_EQ(parse_duration("1d"), milliseconds(86'400'000));
}

TEST(ParseDuration, PlainNumbersAreSeconds) {
    EXPECT_EQ(parse_duration("30"), milliseconds(30'000));
    EXPECT_EQ(parse_duration("0.5"), milliseconds(500));
    EXPECT_EQ(parse_duration("1.001"), milliseconds(1001));
}

TEST(ParseDuration, Fractions) {
    EXPECT_EQ(parse_duration("1.5s"), milliseconds(1500));
    EXPECT_EQ(parse_duration("0.25h"), milliseconds(900'000));
    EXPECT_EQ(parse_duration("1.5m"), milliseconds(90'000));
    EXPECT_EQ(parse_duration("0.001s"), milliseconds(1));
    EXPECT_EQ(parse_duration("2.0ms"), milliseconds(2));
    EXPECT_EQ(parse_duration("0.5000000000000000000000s"), milliseconds(500));
    EXPECT_EQ(parse_duration("0.0000125d"), milliseconds(1080));
}

TEST(ParseDuration, ZeroIsAllowed) {
    EXPECT_EQ(parse_duration("0"), milliseconds(0));
    EXPECT_EQ(parse_duration("0ms"), milliseconds(0));
    EXPECT_EQ(parse_duration("0.0s"), milliseconds(0));
}

TEST(ParseDuration, RejectsSubMillisecond) {
    EXPECT_TRUE(contains(duration_error("1.5ms"), "finer than a millisecond"));
    EXPECT_TRUE(contains(duration_error("0.0005s"), "finer than a millisecond"));
    EXPECT_TRUE(contains(duration_error("0.0005"), "finer than a millisecond"));
    EXPECT_TRUE(contains(duration_error("0.00000000001d"), "finer than a millisecond"));
    EXPECT_TRUE(contains(duration_error("0.1234567890123456789s"), "finer than a millisecond"));
}

TEST(ParseDuration, Limits) {
    EXPECT_EQ(parse_duration("9223372036854775807ms"), milliseconds::max());
    EXPECT_EQ(parse_duration("9223372036854775.807s"), milliseconds::max());
    EXPECT_TRUE(contains(duration_error("9223372036854775808ms"), "too large"));
    EXPECT_TRUE(contains(duration_error("9223372036854775.808s"), "too large"));
    EXPECT_TRUE(contains(duration_error("200000000000d"), "too large"));
    EXPECT_TRUE(contains(duration_error("99999999999999999999999"), "too large"));
}

TEST(ParseDuration, RejectsNegativeEmptyAndMalformed) {
    EXPECT_EQ(duration_error("-1s"), "invalid duration \"-1s\": must not be negative");
    EXPECT_TRUE(contains(duration_error(""), "invalid duration \"\": empty"));
    for (const char* text : {"10x", "10 s", " 10s", "10s ", "1M", "1S", "1H", "s", "ms", "1.s",
                             ".5s", "+1s", "1sec", "1min", "1m30s", "1e3", "1us", "NaN", "inf"}) {
        const std::string message = duration_error(text);
        EXPECT_TRUE(contains(message, "invalid duration \"")) << text << " -> " << message;
        EXPECT_TRUE(contains(message, "expected a number")) << text << " -> " << message;
    }
    EXPECT_EQ(duration_error("5x"),
              "invalid duration \"5x\": expected a number with an optional unit "
              "(ms, s, m, h, d; plain numbers are seconds)");
}

// ---- format_size -----------------------------------------------------------------------

TEST(FormatSize, Bytes) {
    EXPECT_EQ(format_size(0), "0 B");
    EXPECT_EQ(format_size(1), "1 B");
    EXPECT_EQ(format_size(512), "512 B");
    EXPECT_EQ(format_size(1023), "1023 B");
}

TEST(FormatSize, OneDecimalBelowTen) {
    EXPECT_EQ(format_size(1024), "1.0 KiB");
    EXPECT_EQ(format_size(4096), "4.0 KiB");
    EXPECT_EQ(format_size(1536), "1.5 KiB");
    EXPECT_EQ(format_size(MiB + MiB / 2), "1.5 MiB");
    EXPECT_EQ(format_size(9 * GiB + GiB / 10 * 9), "9.9 GiB");
}

TEST(FormatSize, NoDecimalFromTen) {
    EXPECT_EQ(format_size(12 * GiB), "12 GiB");
    EXPECT_EQ(format_size(100 * MiB), "100 MiB");
    EXPECT_EQ(format_size(12 * GiB + GiB / 3), "12 GiB");
    EXPECT_EQ(format_size(12 * GiB + GiB / 3 * 2), "13 GiB");
    EXPECT_EQ(format_size(1000 * KiB), "1000 KiB");
}

TEST(FormatSize, RoundingMovesToTheNextDigitOrUnit) {
    EXPECT_EQ(format_size(10 * KiB - 1), "10 KiB");  // 9.999 KiB is not "10.0 KiB"
    EXPECT_EQ(format_size(MiB - 1), "1.0 MiB");      // 1023.999 KiB is not "1024 KiB"
    EXPECT_EQ(format_size(GiB - MiB), "1023 MiB");
    EXPECT_EQ(format_size(std::numeric_limits<std::uint64_t>::max()), "16 EiB");
    EXPECT_EQ(format_size(TiB * 1024), "1.0 PiB");
}

TEST(FormatSize, RoundTripsThroughParseSize) {
    // Every value a whole or half number of some unit prints exactly, and parses back
    // once the space is removed.
    for (unsigned shift = 10; shift <= 40; shift += 10) {
        for (std::uint64_t halves = 2; halves < 2 * 1024; ++halves) {
            if (halves >= 20 && halves % 2 != 0) {
                continue;  // from 10 on no decimal is printed
            }
            const std::uint64_t bytes = (halves << shift) / 2;
            std::string text = format_size(bytes);
            text.erase(text.find(' '), 1);
            EXPECT_EQ(parse_size(text), bytes) << text;
        }
    }
    for (std::uint64_t bytes = 0; bytes < 1024; ++bytes) {
        std::string text = format_size(bytes);
        text.erase(text.find(' '), 1);
        EXPECT_EQ(parse_size(text), bytes) << text;
    }
}

// ---- format_duration -------------------------------------------------------------------

TEST(FormatDuration, Milliseconds) {
    EXPECT_EQ(format_duration(milliseconds(0)), "0ms");
    EXPECT_EQ(format_duration(milliseconds(850)), "850ms");
    EXPECT_EQ(format_duration(milliseconds(999)), "999ms");
}

TEST(FormatDuration, SecondsTruncated) {
    EXPECT_EQ(format_duration(milliseconds(1000)), "1.0s");
    EXPECT_EQ(format_duration(milliseconds(1500)), "1.5s");
    EXPECT_EQ(format_duration(milliseconds(9999)), "9.9s");
    EXPECT_EQ(format_duration(milliseconds(10'000)), "10s");
    EXPECT_EQ(format_duration(milliseconds(12'000)), "12s");
    EXPECT_EQ(format_duration(milliseconds(59'999)), "59s");
}

TEST(FormatDuration, CompoundUnits) {
    EXPECT_EQ(format_duration(milliseconds(60'000)), "1m00s");
    EXPECT_EQ(format_duration(milliseconds(200'000)), "3m20s");
    EXPECT_EQ(format_duration(milliseconds(3'599'999)), "59m59s");
    EXPECT_EQ(format_duration(milliseconds(3'600'000)), "1h00m");
    EXPECT_EQ(format_duration(std::chrono::hours(2) + std::chrono::minutes(5)), "2h05m");
    EXPECT_EQ(format_duration(milliseconds(86'399'999)), "23h59m");
    EXPECT_EQ(format_duration(std::chrono::hours(24)), "1d00h");
    EXPECT_EQ(format_duration(std::chrono::hours(3 * 24 + 4)), "3d04h");
    EXPECT_EQ(format_duration(std::chrono::hours(400 * 24)), "400d00h");
}

TEST(FormatDuration, Negative) {
    EXPECT_EQ(format_duration(milliseconds(-1500)), "-1.5s");
    EXPECT_EQ(format_duration(milliseconds(-5)), "-5ms");
    EXPECT_EQ(format_duration(milliseconds::min()), "-106751991167d07h");
    EXPECT_EQ(format_duration(milliseconds::max()), "106751991167d07h");
}

TEST(FormatDuration, SimpleFormsRoundTripThroughParseDuration) {
    for (long long ms = 0; ms < 1000; ms += 7) {
        EXPECT_EQ(parse_duration(format_duration(milliseconds(ms))), milliseconds(ms));
    }
    for (long long ms = 1000; ms < 10'000; ms += 100) {
        EXPECT_EQ(parse_duration(format_duration(milliseconds(ms))), milliseconds(ms));
    }
    for (long long s = 10; s < 60; ++s) {
        EXPECT_EQ(parse_duration(format_duration(std::chrono::seconds(s))),
                  std::chrono::seconds(s));
    }
}

}  // namespace
}  // namespace kidreaper
