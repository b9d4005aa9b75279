#include "observe/cow_sites.h"

#include <cxxabi.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>

namespace kidreaper {

namespace {

constexpr std::uint64_t kPageBytes = 4096;

bool parse_hex(std::string_view text, std::uint64_t& value) {
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value, 16);
    return error == std::errc{} && end == text.data() + text.size();
}

std::string_view next_field(std::string_view& line) {
    while (!line.empty() && line.front() == ' ') {
        line.remove_prefix(1);
    }
    const auto space = line.find(' ');
    std::string_view field = line.substr(0, space);
    line.remove_prefix(space == std::string_view::npos ? line.size() : space);
    return field;
}

std::string basename_of(const std::string& path) {
    const auto slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

// A readable function name: demangled, without "(anonymous namespace)::" and without
// the parameter list, so reports stay short.
std::string demangle(const char* name) {
    int status = 0;
    std::unique_ptr<char, decltype(&std::free)> readable(
        abi::__cxa_demangle(name, nullptr, nullptr, &status), &std::free);
    if (status != 0 || !readable) {
        return name;
    }
    std::string text = readable.get();
    const std::string anonymous = "(anonymous namespace)::";
    for (auto at = text.find(anonymous); at != std::string::npos; at = text.find(anonymous)) {
        text.erase(at, anonymous.size());
    }
    if (const auto parameters = text.find('('); parameters != std::string::npos) {
        text.resize(parameters);
    }
    return text;
}

std::vector<CowShare> top_shares(const std::map<std::string, std::uint64_t>& totals,
                                 std::size_t top) {
    std::uint64_t sum = 0;
    std::vector<CowShare> shares;
    for (const auto& [name, bytes] : totals) {
        sum += bytes;
        shares.push_back({name, bytes, 0});
    }
    std::sort(shares.begin(), shares.end(),
              [](const auto& a, const auto& b) { return a.bytes > b.bytes; });
    if (shares.size() > top) {
        shares.resize(top);
    }
    for (auto& share : shares) {
        share.fraction = sum > 0 ? static_cast<double>(share.bytes) / static_cast<double>(sum) : 0;
    }
    return shares;
}

}  // namespace

std::vector<MemoryMapping> parse_maps(std::string_view text) {
    std::vector<MemoryMapping> maps;
    while (!text.empty()) {
        const auto newline = text.find('\n');
        std::string_view line = text.substr(0, newline);
        text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
        const std::string_view range = next_field(line);
        const std::string_view perms = next_field(line);
        const std::string_view offset = next_field(line);
        next_field(line);  // device
        next_field(line);  // inode
        while (!line.empty() && line.front() == ' ') {
            line.remove_prefix(1);
        }
        MemoryMapping mapping;
        const auto dash = range.find('-');
        if (dash == std::string_view::npos || !parse_hex(range.substr(0, dash), mapping.start) ||
            !parse_hex(range.substr(dash + 1), mapping.end) || !parse_hex(offset, mapping.offset) ||
            perms.size() != 4 || mapping.end <= mapping.start) {
            continue;
        }
        mapping.perms = std::string(perms);
        mapping.path = std::string(line);
        maps.push_back(std::move(mapping));
    }
    return maps;
}

const MemoryMapping* find_mapping(const std::vector<MemoryMapping>& maps, std::uint64_t address) {
    auto after =
        std::upper_bound(maps.begin(), maps.end(), address,
                         [](std::uint64_t value, const auto& m) { return value < m.start; });
    if (after == maps.begin()) {
        return nullptr;
    }
    const MemoryMapping& candidate = *std::prev(after);
    return address < candidate.end ? &candidate : nullptr;
}

std::string region_name(const MemoryMapping* mapping) {
    if (mapping == nullptr) {
        return "unmapped since";
    }
    if (mapping->path.empty()) {
        return "anonymous";
    }
    if (mapping->path.front() == '[') {
        return mapping->path;
    }
    const bool code = mapping->perms.size() > 2 && mapping->perms[2] == 'x';
    return basename_of(mapping->path) + (code ? " (code)" : " (data)");
}

Runtime detect_runtime(const std::vector<MemoryMapping>& maps, std::string_view comm) {
    for (const auto& mapping : maps) {
        const std::string name = basename_of(mapping.path);
        if (name.starts_with("libperl.so")) {
            return Runtime::perl;
        }
        if (name.starts_with("libpython") || name.starts_with("python3")) {
            return Runtime::python;
        }
        if (name.starts_with("libruby")) {
            return Runtime::ruby;
        }
        if (name.starts_with("php-fpm") || name.starts_with("libphp")) {
            return Runtime::php;
        }
    }
    if (comm.starts_with("perl")) {
        return Runtime::perl;
    }
    if (comm.starts_with("python") || comm.starts_with("gunicorn")) {
        return Runtime::python;
    }
    if (comm.starts_with("ruby") || comm.starts_with("unicorn") || comm.starts_with("puma")) {
        return Runtime::ruby;
    }
    if (comm.starts_with("php")) {
        return Runtime::php;
    }
    return Runtime::unknown;
}

std::string runtime_name(Runtime runtime) {
    switch (runtime) {
        case Runtime::perl:
            return "perl";
        case Runtime::python:
            return "python";
        case Runtime::ruby:
            return "ruby";
        case Runtime::php:
            return "php";
        case Runtime::unknown:
            return "unknown";
    }
    return "unknown";
}

std::string runtime_advice(Runtime runtime) {
    switch (runtime) {
        case Runtime::perl:
            return "Perl writes reference counts and flags into every value it reads, so reading "
                   "preloaded data unshares its pages. Preload only what every child needs, keep "
                   "large read-only data in few big strings or outside Perl (a shared mmap), and "
                   "recycle children at the COW plateau with kidreaper reap.";
        case Runtime::python:
            // Proven by tests/e2e/test_diagnose_servers.py GunicornGcFreeze: the same load
            // unshares ~60% less with gc.freeze(); what is left is refcount writes.
            return "Python writes a reference count into every inherited object a worker reads, "
                   "and its cyclic GC's full collections write into the inherited containers. "
                   "Call gc.freeze() at the end of preloading, just before the workers fork "
                   "(Python 3.7+): collections then skip what was preloaded. Reading inherited "
                   "objects still unshares their pages.";
        case Runtime::ruby:
            return "Ruby's GC marks and moves inherited objects. Run GC.compact before forking "
                   "(Ruby 2.7+) or Process.warmup (Ruby 3.3+), so live objects are packed into "
                   "pages that stay shared.";
        case Runtime::php:
            return "PHP rebuilds its request state in each child; COW here is mostly opcache "
                   "and the allocator. Keep opcache in shared memory and recycle children with "
                   "pm.max_requests or kidreaper reap.";
        case Runtime::unknown:
            return "COW growth is bounded by what the child inherited (its plateau). Recycle "
                   "children before the plateau if memory is tight; load less in the parent if "
                   "every child unshares it anyway.";
    }
    return "";
}

// The function symbols and PT_LOAD segments of one ELF file.
struct Symbolizer::ElfFile {
    struct Segment {
        std::uint64_t offset = 0;
        std::uint64_t size = 0;
        std::uint64_t vaddr = 0;
    };
    struct Symbol {
        std::uint64_t start = 0;
        std::uint64_t size = 0;
        std::string name;
    };
    std::vector<Segment> segments;
    std::vector<Symbol> symbols;  // sorted by start

    std::optional<std::string> function_at(std::uint64_t file_offset) const {
        for (const auto& segment : segments) {
            if (file_offset >= segment.offset && file_offset < segment.offset + segment.size) {
                const std::uint64_t vaddr = file_offset - segment.offset + segment.vaddr;
                auto after = std::upper_bound(
                    symbols.begin(), symbols.end(), vaddr,
                    [](std::uint64_t value, const Symbol& s) { return value < s.start; });
                if (after == symbols.begin()) {
                    return std::nullopt;
                }
                const Symbol& symbol = *std::prev(after);
                if (vaddr < symbol.start + symbol.size) {
                    return symbol.name;
                }
                return std::nullopt;
            }
        }
        return std::nullopt;
    }
};

Symbolizer::Symbolizer() {
    elf_version(EV_CURRENT);
}
Symbolizer::~Symbolizer() = default;

const Symbolizer::ElfFile* Symbolizer::load(const std::filesystem::path& file) {
    auto [it, inserted] = files_.try_emplace(file.string());
    if (!inserted) {
        return it->second.get();
    }
    const int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return nullptr;
    }
    Elf* elf = elf_begin(fd, ELF_C_READ, nullptr);
    auto parsed = std::make_unique<ElfFile>();
    std::size_t headers = 0;
    if (elf != nullptr && elf_kind(elf) == ELF_K_ELF && elf_getphdrnum(elf, &headers) == 0) {
        for (std::size_t i = 0; i < headers; ++i) {
            GElf_Phdr header;
            if (gelf_getphdr(elf, static_cast<int>(i), &header) != nullptr &&
                header.p_type == PT_LOAD) {
                parsed->segments.push_back({header.p_offset, header.p_filesz, header.p_vaddr});
            }
        }
        Elf_Scn* section = nullptr;
        while ((section = elf_nextscn(elf, section)) != nullptr) {
            GElf_Shdr section_header;
            if (gelf_getshdr(section, &section_header) == nullptr ||
                (section_header.sh_type != SHT_SYMTAB && section_header.sh_type != SHT_DYNSYM) ||
                section_header.sh_entsize == 0) {
                continue;
            }
            Elf_Data* data = elf_getdata(section, nullptr);
            const std::size_t count = section_header.sh_size / section_header.sh_entsize;
            for (std::size_t i = 0; data != nullptr && i < count; ++i) {
                GElf_Sym symbol;
                if (gelf_getsym(data, static_cast<int>(i), &symbol) == nullptr ||
                    GELF_ST_TYPE(symbol.st_info) != STT_FUNC || symbol.st_value == 0) {
                    continue;
                }
                const char* name = elf_strptr(elf, section_header.sh_link,
                                              static_cast<std::size_t>(symbol.st_name));
                if (name != nullptr && *name != '\0') {
                    parsed->symbols.push_back({symbol.st_value, symbol.st_size, demangle(name)});
                }
            }
        }
    }
    if (elf != nullptr) {
        elf_end(elf);
    }
    close(fd);
    std::sort(parsed->symbols.begin(), parsed->symbols.end(),
              [](const auto& a, const auto& b) { return a.start < b.start; });
    it->second = std::move(parsed);
    return it->second.get();
}

std::optional<std::string> Symbolizer::function_at(const MemoryMapping& mapping,
                                                   std::uint64_t address,
                                                   const std::filesystem::path& file) {
    const ElfFile* elf = load(file);
    if (elf == nullptr) {
        return std::nullopt;
    }
    return elf->function_at(address - mapping.start + mapping.offset);
}

CowAttribution attribute_cow(const std::vector<CowSiteSample>& samples,
                             const std::vector<MemoryMapping>& maps, std::string_view comm,
                             std::uint32_t sample_period, Symbolizer& symbolizer,
                             const std::filesystem::path& root, std::size_t top) {
    std::map<std::string, std::uint64_t> regions;
    std::map<std::string, std::uint64_t> sites;
    const std::uint64_t bytes_per_sample = static_cast<std::uint64_t>(sample_period) * kPageBytes;
    for (const auto& sample : samples) {
        const std::uint64_t bytes = sample.samples * bytes_per_sample;
        const MemoryMapping* mapping = find_mapping(maps, sample.address);
        if (sample.kind == KR_SITE_DATA) {
            regions[region_name(mapping)] += bytes;
            continue;
        }
        std::string site = "unknown code";
        if (mapping != nullptr && !mapping->path.empty() && mapping->path.front() == '/') {
            const std::string module = basename_of(mapping->path);
            const auto function =
                symbolizer.function_at(*mapping, sample.address, root / mapping->path.substr(1));
            site = function ? *function + " (" + module + ")" : module;
        } else if (mapping != nullptr) {
            site = region_name(mapping);
        }
        sites[site] += bytes;
    }
    CowAttribution attribution;
    attribution.regions = top_shares(regions, top);
    attribution.sites = top_shares(sites, top);
    attribution.runtime = detect_runtime(maps, comm);
    return attribution;
}

}  // namespace kidreaper
