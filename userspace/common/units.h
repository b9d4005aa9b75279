// Parsing and printing of sizes and durations as users write them.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace kidreaper {

// A size in bytes: a decimal number followed directly (no space) by an optional unit.
//   "4096", "4096B"          bytes; a fraction is rejected without a unit ("1.5", "1.5B")
//   "512k", "512K", "512KiB" KiB = 1024 bytes
//   "50m", "50M", "50MiB"    MiB = 1024^2
//   "1G", "1GiB", "2T", "2TiB"
// Units are case-insensitive and always binary: "KB", "MB", "GB", "TB" are read as KiB,
// MiB, GiB, TiB (memory is counted in pages, nobody means 1000 here). With a unit of K or
// larger a fraction is allowed ("1.5G") and the result is rounded down to whole bytes.
// Throws UsageError (one line, quoting the input) on anything else: empty, negative,
// whitespace, unknown unit, more than 18 decimal places, or more than 2^64-1 bytes.
std::uint64_t parse_size(std::string_view text);

// A duration: a decimal number followed directly by an optional unit: "ms", "s", "m"
// (minutes), "h" or "d" (lower case only). Without a unit the number is seconds ("30",
// "0.5"). Fractions are allowed ("1.5s", "0.25h") as long as the result is a whole number
// of milliseconds ("0.0005s" and "1.5ms" are rejected). Zero is allowed.
// Throws UsageError (one line, quoting the input) on anything else: empty, negative,
// whitespace, unknown unit, or more milliseconds than fit std::chrono::milliseconds.
std::chrono::milliseconds parse_duration(std::string_view text);

// Human size: "0 B", "512 B", "4.0 KiB", "1.5 MiB", "12 GiB", "100 MiB", "1000 KiB".
// Below 10 of a unit one decimal is shown, from 10 on none; values are rounded to the
// nearest shown digit, and a value that rounds to 1024 moves to the next unit ("1.0 MiB").
// Units go up to EiB, so every std::uint64_t prints.
std::string format_size(std::uint64_t bytes);

// Human duration, truncated (never rounded up): "850ms", "1.5s" (below 10 s one decimal),
// "12s", "3m20s", "2h05m", "3d04h". Negative durations get a leading '-'.
std::string format_duration(std::chrono::milliseconds duration);

}  // namespace kidreaper
