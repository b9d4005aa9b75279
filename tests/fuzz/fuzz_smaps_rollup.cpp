// /proc/PID/smaps_rollup (parse_smaps_rollup): every value comes from a kB line.
#include <cstddef>
#include <cstdint>

#include "fuzz_support.h"
#include "observe/procfs.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::optional<kidreaper::SmapsRollup> rollup =
        kidreaper::parse_smaps_rollup(kidreaper::fuzz::as_text(data, size));
    if (!rollup) {
        return 0;
    }
    for (const std::uint64_t bytes :
         {rollup->rss, rollup->pss, rollup->shared_clean, rollup->shared_dirty,
          rollup->private_clean, rollup->private_dirty, rollup->anonymous, rollup->swap}) {
        kidreaper::fuzz::check(bytes % 1024 == 0, "a smaps_rollup value is a whole number of KiB");
    }
    return 0;
}
