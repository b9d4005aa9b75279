// Compile-time checks that the C++ side sees the ABI structs exactly as the BPF side
// lays them out (bpf/observer.bpf.c, include/kidreaper/abi.h).
#include <cstddef>

#include "kidreaper/abi.h"

static_assert(sizeof(kr_manager) == 8);
static_assert(sizeof(kr_child) == 80);
static_assert(offsetof(kr_child, manager_tgid) == 0);
static_assert(offsetof(kr_child, flags) == 4);
static_assert(offsetof(kr_child, fork_ns) == 8);
static_assert(offsetof(kr_child, exit_ns) == 16);
static_assert(offsetof(kr_child, mem_bytes) == 24);
static_assert(offsetof(kr_child, anon_start_bytes) == 56);
static_assert(offsetof(kr_child, swap_start_bytes) == 64);
static_assert(offsetof(kr_child, start_boottime_ns) == 72);
static_assert(sizeof(kr_exit_key) == 16);
static_assert(offsetof(kr_exit_key, start_boottime_ns) == 8);
static_assert(KR_CAPACITY_MAPS == 3);
static_assert(sizeof(kr_faults) == 96);
static_assert(offsetof(kr_faults, write_present_user) == 0);
static_assert(offsetof(kr_faults, cow_copies) == 32);
static_assert(offsetof(kr_faults, zero_page_copies) == 40);
static_assert(offsetof(kr_faults, file_copies) == 48);
static_assert(offsetof(kr_faults, fill_copies) == 56);
static_assert(offsetof(kr_faults, paired_zero_fills) == 64);
static_assert(offsetof(kr_faults, paired_file_fills) == 88);
static_assert(sizeof(kr_pending_fault) == 24);
static_assert(sizeof(kr_mapping_cache) == 32);
static_assert(KR_MEM_KINDS == 4);
static_assert(sizeof(kr_site_key) == 16);
static_assert(offsetof(kr_site_key, address) == 8);
