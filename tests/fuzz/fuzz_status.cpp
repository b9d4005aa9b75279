// /proc/PID/status (parse_status): memory values come from kB lines, so they are whole
// KiB; without RssAnon the breakdown reads 0.
#include <cstddef>
#include <cstdint>

#include "fuzz_support.h"
#include "observe/procfs.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using kidreaper::fuzz::check;
    const std::optional<kidreaper::ProcStatus> status =
        kidreaper::parse_status(kidreaper::fuzz::as_text(data, size));
    if (!status) {
        return 0;
    }
    check(status->tgid >= 0 && status->ppid >= 0, "Tgid and PPid are not negative");
    for (const std::uint64_t bytes : {status->vm_size, status->vm_rss, status->rss_anon,
                                      status->rss_file, status->rss_shmem, status->vm_swap}) {
        check(bytes % 1024 == 0, "a status memory value is a whole number of KiB");
    }
    if (!status->has_rss_breakdown) {
        check(status->rss_anon == 0, "without an RssAnon line rss_anon reads 0");
    }
    return 0;
}
