#include "common/units.h"

#include <charconv>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <system_error>

#include "common/error.h"

namespace kidreaper {
namespace {

constexpr std::size_t kMaxQuoted = 64;

// The user's text in double quotes, with control and non-ASCII bytes escaped (\xNN)
// and long input cut, so an error message always stays one printable line.
std::string quoted(std::string_view text) {
    std::string out = "\"";
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (i == kMaxQuoted) {
            out += "...";
            break;
        }
        const auto c = static_cast<unsigned char>(text[i]);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20 || c >= 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(c));
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    out += '"';
    return out;
}

bool ascii_iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        char x = a[i];
        char y = b[i];
        if (x >= 'A' && x <= 'Z') {
            x = static_cast<char>(x - 'A' + 'a');
        }
        if (y >= 'A' && y <= 'Z') {
            y = static_cast<char>(y - 'A' + 'a');
        }
        if (x != y) {
            return false;
        }
    }
    return true;
}

constexpr int kMaxFractionDigits = 18;  // 10^18 < 2^63: the long division below cannot wrap

// "digits[.digits]" split into its parts; `unit` is whatever follows the number.
struct Decimal {
    std::uint64_t whole = 0;
    std::uint64_t fraction = 0;  // digits after the point, trailing zeros removed
    int fraction_digits = 0;     // how many digits `fraction` has (0: no fraction)
    std::string_view unit;
};

enum class DecimalError { malformed, whole_too_large, too_precise };

struct DecimalResult {
    std::optional<Decimal> value;
    DecimalError error = DecimalError::malformed;
};

DecimalResult parse_decimal(std::string_view text) {
    DecimalResult result;
    const char* const begin = text.data();
    const char* const end = begin + text.size();
    if (text.empty() || text[0] < '0' || text[0] > '9') {
        return result;  // also rejects "+1", " 1", ".5"
    }
    Decimal d;
    auto [ptr, ec] = std::from_chars(begin, end, d.whole);
    if (ec == std::errc::result_out_of_range) {
        result.error = DecimalError::whole_too_large;
        return result;
    }
    if (ec != std::errc{}) {
        return result;
    }
    if (ptr != end && *ptr == '.') {
        const char* const digits = ptr + 1;
        const char* stop = digits;
        while (stop != end && *stop >= '0' && *stop <= '9') {
            ++stop;
        }
        if (stop == digits) {
            return result;  // "1." or "1.G"
        }
        const char* last = stop;
        while (last != digits && last[-1] == '0') {
            --last;
        }
        if (last - digits > kMaxFractionDigits) {
            result.error = DecimalError::too_precise;
            return result;
        }
        d.fraction_digits = static_cast<int>(last - digits);
        if (d.fraction_digits > 0) {
            std::from_chars(digits, last, d.fraction);  // at most 18 digits: cannot fail
        }
        ptr = stop;
    }
    d.unit = std::string_view(ptr, static_cast<std::size_t>(end - ptr));
    result.value = d;
    return result;
}

std::uint64_t pow10(int n) {
    std::uint64_t p = 1;
    for (int i = 0; i < n; ++i) {
        p *= 10;
    }
    return p;
}

[[noreturn]] void bad_size(std::string_view text, const std::string& reason) {
    throw UsageError("invalid size " + quoted(text) + ": " + reason);
}

[[noreturn]] void bad_duration(std::string_view text, const std::string& reason) {
    throw UsageError("invalid duration " + quoted(text) + ": " + reason);
}

const std::string kSizeExpected =
    "expected a number with an optional unit (B, K, KiB, M, MiB, G, GiB, T, TiB)";
const std::string kDurationExpected =
    "expected a number with an optional unit (ms, s, m, h, d; plain numbers are seconds)";

// log2 of the multiplier of a size unit, or nullopt when the unit is unknown.
std::optional<unsigned> size_unit_shift(std::string_view unit) {
    struct Unit {
        std::string_view name;
        unsigned shift;
    };
    static constexpr Unit kUnits[] = {
        {"", 0},     {"b", 0},  {"k", 10},  {"kb", 10},  {"kib", 10}, {"m", 20},  {"mb", 20},
        {"mib", 20}, {"g", 30}, {"gb", 30}, {"gib", 30}, {"t", 40},   {"tb", 40}, {"tib", 40},
    };
    for (const Unit& u : kUnits) {
        if (ascii_iequals(unit, u.name)) {
            return u.shift;
        }
    }
    return std::nullopt;
}

// floor(fraction / 10^digits * 2^shift), by binary long division: exact, no overflow
// (fraction < 10^digits <= 10^18 < 2^63).
std::uint64_t scaled_fraction(std::uint64_t fraction, int digits, unsigned shift) {
    const std::uint64_t denominator = pow10(digits);
    std::uint64_t remainder = fraction;
    std::uint64_t result = 0;
    for (unsigned i = 0; i < shift; ++i) {
        remainder *= 2;
        result *= 2;
        if (remainder >= denominator) {
            remainder -= denominator;
            result |= 1;
        }
    }
    return result;
}

}  // namespace

std::uint64_t parse_size(std::string_view text) {
    if (text.empty()) {
        bad_size(text, "empty; " + kSizeExpected);
    }
    if (text[0] == '-') {
        bad_size(text, "must not be negative");
    }
    const DecimalResult parsed = parse_decimal(text);
    if (!parsed.value) {
        switch (parsed.error) {
            case DecimalError::whole_too_large:
                bad_size(text, "too large (at most 2^64-1 bytes)");
            case DecimalError::too_precise:
                bad_size(text, "too many decimal places (at most 18)");
            case DecimalError::malformed:
                break;
        }
        bad_size(text, kSizeExpected);
    }
    const Decimal& d = *parsed.value;
    const std::optional<unsigned> shift = size_unit_shift(d.unit);
    if (!shift) {
        bad_size(text, kSizeExpected);
    }
    if (*shift == 0 && d.fraction_digits > 0) {
        bad_size(text, "a size in bytes must be a whole number (use a unit for fractions: 1.5K)");
    }
    constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
    if (d.whole > (kMax >> *shift)) {
        bad_size(text, "too large (at most 2^64-1 bytes)");
    }
    const std::uint64_t whole_bytes = d.whole << *shift;
    const std::uint64_t fraction_bytes = scaled_fraction(d.fraction, d.fraction_digits, *shift);
    if (fraction_bytes > kMax - whole_bytes) {
        bad_size(text, "too large (at most 2^64-1 bytes)");
    }
    return whole_bytes + fraction_bytes;
}

std::chrono::milliseconds parse_duration(std::string_view text) {
    if (text.empty()) {
        bad_duration(text, "empty; " + kDurationExpected);
    }
    if (text[0] == '-') {
        bad_duration(text, "must not be negative");
    }
    const DecimalResult parsed = parse_decimal(text);
    if (!parsed.value) {
        switch (parsed.error) {
            case DecimalError::whole_too_large:
                bad_duration(text, "too large");
            case DecimalError::too_precise:
                bad_duration(text, "finer than a millisecond");
            case DecimalError::malformed:
                break;
        }
        bad_duration(text, kDurationExpected);
    }
    const Decimal& d = *parsed.value;
    std::uint64_t unit_ms = 0;
    if (d.unit == "ms") {
        unit_ms = 1;
    } else if (d.unit == "s" || d.unit.empty()) {
        unit_ms = 1000;
    } else if (d.unit == "m") {
        unit_ms = 60 * 1000;
    } else if (d.unit == "h") {
        unit_ms = 60 * 60 * 1000;
    } else if (d.unit == "d") {
        unit_ms = 24 * 60 * 60 * 1000;
    } else {
        bad_duration(text, kDurationExpected);
    }
    // unit_ms < 10^8 = 2^8 * 5^8, so after stripping trailing zeros a fraction of more
    // than 10 digits can never be a whole number of milliseconds.
    constexpr int kMaxUsefulDigits = 10;
    if (d.fraction_digits > kMaxUsefulDigits) {
        bad_duration(text, "finer than a millisecond");
    }
    std::uint64_t fraction_ms = 0;
    if (d.fraction_digits > 0) {
        const std::uint64_t scaled = d.fraction * unit_ms;  // < 10^10 * 10^8 < 2^64
        const std::uint64_t denominator = pow10(d.fraction_digits);
        if (scaled % denominator != 0) {
            bad_duration(text, "finer than a millisecond");
        }
        fraction_ms = scaled / denominator;
    }
    constexpr auto kMax =
        static_cast<std::uint64_t>(std::numeric_limits<std::chrono::milliseconds::rep>::max());
    if (d.whole > (kMax - fraction_ms) / unit_ms) {
        bad_duration(text, "too large");
    }
    const std::uint64_t total = d.whole * unit_ms + fraction_ms;
    return std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(total));
}

std::string format_size(std::uint64_t bytes) {
    static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    constexpr std::size_t kLastUnit = sizeof kUnits / sizeof kUnits[0] - 1;
    char buf[32];
    if (bytes < 1024) {
        std::snprintf(buf, sizeof buf, "%" PRIu64 " B", bytes);
        return buf;
    }
    std::size_t unit = 0;
    std::uint64_t scale = 1;
    while (unit < kLastUnit && bytes / scale >= 1024) {
        scale *= 1024;
        ++unit;
    }
    // Decide on the rounded value, so 9.96 KiB prints "10 KiB" and 1023.7 KiB "1.0 MiB".
    double value = static_cast<double>(bytes) / static_cast<double>(scale);
    if (std::round(value) >= 1024.0 && unit < kLastUnit) {
        value /= 1024.0;
        ++unit;
    }
    if (std::round(value * 10.0) < 100.0) {
        std::snprintf(buf, sizeof buf, "%.1f %s", value, kUnits[unit]);
    } else {
        std::snprintf(buf, sizeof buf, "%.0f %s", value, kUnits[unit]);
    }
    return buf;
}

std::string format_duration(std::chrono::milliseconds duration) {
    const auto count = duration.count();
    // Magnitude as unsigned, so the most negative value does not overflow on negation.
    std::uint64_t ms =
        count < 0 ? 0 - static_cast<std::uint64_t>(count) : static_cast<std::uint64_t>(count);
    const char* const sign = count < 0 ? "-" : "";
    constexpr std::uint64_t kSecond = 1000;
    constexpr std::uint64_t kMinute = 60 * kSecond;
    constexpr std::uint64_t kHour = 60 * kMinute;
    constexpr std::uint64_t kDay = 24 * kHour;
    char buf[64];
    if (ms < kSecond) {
        std::snprintf(buf, sizeof buf, "%s%" PRIu64 "ms", sign, ms);
    } else if (ms < 10 * kSecond) {
        std::snprintf(buf, sizeof buf, "%s%" PRIu64 ".%" PRIu64 "s", sign, ms / kSecond,
                      ms % kSecond / 100);
    } else if (ms < kMinute) {
        std::snprintf(buf, sizeof buf, "%s%" PRIu64 "s", sign, ms / kSecond);
    } else if (ms < kHour) {
        std::snprintf(buf, sizeof buf, "%s%" PRIu64 "m%02" PRIu64 "s", sign, ms / kMinute,
                      ms % kMinute / kSecond);
    } else if (ms < kDay) {
        std::snprintf(buf, sizeof buf, "%s%" PRIu64 "h%02" PRIu64 "m", sign, ms / kHour,
                      ms % kHour / kMinute);
    } else {
        std::snprintf(buf, sizeof buf, "%s%" PRIu64 "d%02" PRIu64 "h", sign, ms / kDay,
                      ms % kDay / kHour);
    }
    return buf;
}

}  // namespace kidreaper
