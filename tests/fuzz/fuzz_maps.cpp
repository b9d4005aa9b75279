// /proc/PID/maps (parse_maps) and what is derived from it: every mapping is non-empty,
// has four permission characters and a one-line path; naming its region and detecting
// the runtime must not fail on anything parse_maps returns.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_support.h"
#include "observe/cow_sites.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using kidreaper::fuzz::check;
    const std::vector<kidreaper::MemoryMapping> maps =
        kidreaper::parse_maps(kidreaper::fuzz::as_text(data, size));
    for (const kidreaper::MemoryMapping& mapping : maps) {
        check(mapping.start < mapping.end, "a mapping is not empty");
        check(mapping.perms.size() == 4, "perms has four characters");
        check(mapping.path.find('\n') == std::string::npos, "a mapping's path is one line");
        check(!kidreaper::region_name(&mapping).empty(), "every region has a name");
        const kidreaper::MemoryMapping* found = kidreaper::find_mapping(maps, mapping.start);
        check(found == nullptr || (found->start <= mapping.start && mapping.start < found->end),
              "find_mapping returns a mapping holding the address");
    }
    kidreaper::runtime_advice(kidreaper::detect_runtime(maps, "fuzz"));
    return 0;
}
