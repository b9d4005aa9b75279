#include "model/cow_accounting.h"

namespace kidreaper {

namespace {

constexpr std::uint64_t kPageBytes = 4096;

std::uint64_t minus(std::uint64_t a, std::uint64_t b) {
    return a > b ? a - b : 0;
}

}  // namespace

std::string cow_source_name(const CowSource& source) {
    if (source.mm) {
        const std::string kind = source.fentry ? "fentry" : "kprobe";
        std::string name = "mm: " + kind + " do_wp_page (write-protect faults)";
        if (!source.wp_faults) {
            name = "mm: no write-protect fault count";
        }
        if (source.exact) {
            name += " + " + kind + " wp_page_copy (exact COW copies)";
        }
        if (source.exact_fills) {
            name += " + " + kind + " finish_fault (file copies)";
        }
        return name + "; growth from the mm counters";
    }
    std::string name = "raw tracepoints";
    if (source.paired) {
        name += source.paired_fills ? " + fault pairing (counters, mappings, page-cache faults)"
                                    : " + fault pairing (counters, mappings)";
    }
    if (source.exact) {
        name += " + kprobe wp_page_copy (exact COW copies)";
    }
    if (source.exact_fills) {
        name += " + kprobe finish_fault (file copies)";
    }
    if (!source.paired && !source.exact) {
        name += " (COW class from fault codes)";
    }
    return name;
}

MemoryAccount account_memory(const ChildReading& reading, const CowSource& source) {
    const FaultCounts& f = reading.faults;
    std::uint64_t anon_pages = 0;
    std::uint64_t file_pages = 0;
    std::uint64_t excluded_pages = 0;
    const std::uint64_t file_fills = source.exact_fills    ? f.fill_copies
                                     : source.paired_fills ? f.paired_file_fills
                                                           : 0;
    if (source.exact) {
        // The copies themselves; a write fault that copied nothing never reaches them.
        anon_pages = f.cow_copies;
        file_pages = f.file_copies + file_fills;
        excluded_pages = minus(f.write_present(), f.cow_copies + f.file_copies);
    } else if (source.paired) {
        // A present-page write that raised no event copied an inherited anonymous page
        // (or reused one: see docs/accuracy.md).
        excluded_pages = f.paired_zero_fills + f.paired_shared_writes;
        anon_pages = minus(f.write_present(), excluded_pages + f.paired_file_copies);
        file_pages = f.paired_file_copies + file_fills;
    } else {
        anon_pages = f.write_present();  // the COW class (in mm mode: do_wp_page)
    }
    MemoryAccount account;
    account.anon_cow_bytes = anon_pages * kPageBytes;
    account.file_cow_bytes = file_pages * kPageBytes;
    account.excluded_write_bytes = excluded_pages * kPageBytes;
    const std::uint64_t anon_now = reading.mem_bytes[KR_MEM_ANON] + reading.mem_bytes[KR_MEM_SWAP];
    const std::uint64_t anon_start = reading.anon_start_bytes + reading.swap_start_bytes;
    account.fresh_bytes = minus(anon_now, account.file_cow_bytes);
    account.fresh_growth_bytes = minus(minus(anon_now, anon_start), account.file_cow_bytes);
    return account;
}

}  // namespace kidreaper
