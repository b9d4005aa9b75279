// Where a child's COW-class faults land and who causes them: sampled fault addresses
// (struct kr_site_key) resolved against the child's /proc/PID/maps into regions (heap,
// stack, anonymous mappings, a library's data) and code locations (symbolized from the
// ELF symbol tables of the faulting instructions' files), plus advice per runtime.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "observe/observer.h"

namespace kidreaper {

// One line of /proc/PID/maps.
struct MemoryMapping {
    std::uint64_t start = 0;
    std::uint64_t end = 0;
    std::uint64_t offset = 0;  // file offset of `start`
    std::string perms;         // "rw-p", "r-xp", ...
    std::string path;          // file path, "[heap]", "[stack]", or empty for anonymous
};

// Pure parser of /proc/PID/maps; malformed lines are skipped.
std::vector<MemoryMapping> parse_maps(std::string_view text);

// The mapping holding `address`, or nullptr. `maps` sorted by start (as the kernel lists).
const MemoryMapping* find_mapping(const std::vector<MemoryMapping>& maps, std::uint64_t address);

// A region's name for a report: "[heap]", "[stack]", "anonymous", "libperl.so.5.36 (data)".
std::string region_name(const MemoryMapping* mapping);

enum class Runtime { unknown, perl, python, ruby, php };

// Recognises the interpreter from the mapped files and the command name.
Runtime detect_runtime(const std::vector<MemoryMapping>& maps, std::string_view comm);
std::string runtime_name(Runtime runtime);
// What to do about COW growth in that runtime, in a few sentences.
std::string runtime_advice(Runtime runtime);

// Function symbols of ELF files, loaded once per file.
class Symbolizer {
public:
    Symbolizer();
    ~Symbolizer();
    Symbolizer(const Symbolizer&) = delete;
    Symbolizer& operator=(const Symbolizer&) = delete;

    // "function" for an instruction address in `mapping`, whose file is read at `file`
    // (e.g. /proc/PID/root + path); nullopt when unknown.
    std::optional<std::string> function_at(const MemoryMapping& mapping, std::uint64_t address,
                                           const std::filesystem::path& file);

private:
    struct ElfFile;
    const ElfFile* load(const std::filesystem::path& file);
    std::map<std::string, std::unique_ptr<ElfFile>> files_;
};

// A named share of a child's sampled COW bytes.
struct CowShare {
    std::string name;
    std::uint64_t bytes = 0;  // estimated: samples x period x page
    double fraction = 0;      // of all the child's sampled bytes of this kind
};

struct CowAttribution {
    std::vector<CowShare> regions;  // largest first
    std::vector<CowShare> sites;    // code locations, largest first
    Runtime runtime = Runtime::unknown;
};

// Attributes one child's samples. `root` is the child's /proc/PID/root (for ELF files).
CowAttribution attribute_cow(const std::vector<CowSiteSample>& samples,
                             const std::vector<MemoryMapping>& maps, std::string_view comm,
                             std::uint32_t sample_period, Symbolizer& symbolizer,
                             const std::filesystem::path& root, std::size_t top = 5);

}  // namespace kidreaper
