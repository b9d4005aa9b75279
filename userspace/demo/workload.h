// A scripted pre-fork manager: it preloads memory, then forks children that unshare
// that inherited memory (COW), leak fresh memory, do both, idle, or walk into one of the
// accuracy traps below (writes on present pages that are not COW of inherited memory,
// COW that raises the anon counter, growth that is a warm-up). The test fixture
// (tests/fixture) and `kidreaper diagnose --demo` run it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace kidreaper {

// What a child does, and its ground truth (see script_truth). Sizes are counted in whole
// 4 KiB pages (rounded up); every page is written by one plain store. Work goes in 1 MiB
// steps (or rounds), with the spread's pauses and the +WORK CPU shared out between them.
enum class ChildKind {
    // idle, cow:SIZE, leak:SIZE, mixed:COW:LEAK. Writes cow_bytes of the manager's preload
    // (COW of inherited anon memory) and allocates and writes leak_bytes of fresh memory.
    plain,
    // shared:SIZE[xROUNDS]. The manager fills a file of SIZE in the file directory, maps it
    // MAP_SHARED, reads every page and unlinks it, all before forking. The child, ROUNDS
    // times (8 by default), writes every page, then msync(MS_SYNC). On ext4 each msync
    // write-protects the pages again, so each later round write-faults on present pages.
    // Truth: no COW, no growth (the pages are the file's, shared with the manager).
    shared,
    // zero:SIZE. The child maps SIZE of fresh anon memory (4 KiB pages), reads every page
    // (which maps the shared zero page), then writes it (a write fault on a present page).
    // Truth: growth SIZE, no COW.
    zero,
    // heapzero:SIZE. The manager maps SIZE of anon memory, writes its first page and reads
    // the rest (zero-page mappings, inherited through fork with the memory's anon_vma, as
    // in a heap the manager grew but never wrote). The child writes every page: each
    // write to a zero page fills a new page. Truth: growth SIZE, no COW (one page).
    heapzero,
    // mprotect:SIZE[xROUNDS]. The child maps SIZE of fresh anon memory and writes it; then,
    // ROUNDS times (8 by default), mprotect(PROT_READ), mprotect(PROT_READ|PROT_WRITE),
    // writes every page again (a write fault on present pages unless the kernel restored
    // write access itself). Truth: growth SIZE (the first writes), no COW.
    mprotect,
    // file:SIZE. The manager fills a file of SIZE, maps it MAP_PRIVATE read-write, reads
    // every page (page cache, mapped read-only) and unlinks it, before forking. The child
    // writes every page: each write copies a page-cache page into a private anon page.
    // (Fork copies no page tables for a mapping without anon pages, so these fault on pages
    // absent in the child.) Truth: COW SIZE of a private file mapping, no growth; the
    // child's anon counter still rises by SIZE, which must not count as growth.
    file,
    // thp:SIZE (a multiple of 2 MiB). The manager maps SIZE aligned to 2 MiB,
    // madvise(MADV_HUGEPAGE) and writes it all (transparent huge pages where the kernel
    // can), before forking. The child writes every 4 KiB page. Truth: COW SIZE, no growth.
    thp,
    // warmup:SIZE@DURATION. Allocates and writes SIZE of fresh memory during the first 15%
    // of DURATION, then works (5 ms of busy CPU every 20 ms) without allocating until
    // DURATION has passed, then reports done. Truth: growth SIZE, not a leak (a warm-up).
    warmup,
    // burst:SIZE[@IDLE]. Leaks SIZE in 1 MiB steps, each with 2 ms of busy CPU (a
    // "request"), as fast as it can; then idles (in poll, like an idle worker) for IDLE
    // (0 by default) and reports done, and idles on. Truth: growth SIZE, a leak.
    burst,
    // swapleak:SIZE. Leaks SIZE of fresh memory like leak:, then madvise(MADV_PAGEOUT)s it
    // (Linux 5.4+; a no-op without swap), so that with swap it is swapped out. Truth:
    // growth SIZE (resident plus swapped), a leak.
    swapleak,
};

// What one child does once told to start.
struct ChildScript {
    std::string name;                     // label reported with its pid
    std::uint64_t cow_bytes = 0;          // plain: inherited preload bytes to write
    std::uint64_t leak_bytes = 0;         // plain, warmup, burst, swapleak: fresh bytes, kept
    std::chrono::milliseconds spread{0};  // spread the work evenly over this long (0: at once);
                                          // warmup: the whole run
    bool late = false;                    // forked when the manager is told "go", not at start
    ChildKind kind = ChildKind::plain;
    std::uint64_t region_bytes = 0;     // shared, zero, mprotect, file, thp: the region's size
    int rounds = 0;                     // shared, mprotect: rounds of writes
    std::chrono::milliseconds idle{0};  // burst: idles this long after the burst, then "done"
    std::chrono::milliseconds work{0};  // busy CPU spent in all, shared out over the steps
    // exec:COMMAND: right after fork the child execs /bin/sh -c COMMAND, as a server's
    // helper does (a piped logger, an attached daemon); it takes no further commands.
    std::string exec_command{};
    // "ignore-signals:" before the kind: the child ignores every catchable signal (only
    // SIGKILL ends it), as a wedged worker does.
    bool ignore_all_signals = false;
};

// A churning workload: the manager keeps `children` idle children alive and replaces
// `forks_per_second` of them each second. Each child sleeps out a scheduled lifetime of
// children / forks_per_second seconds (the first ones' lifetimes spread evenly up to that)
// and exits; the manager reaps it and forks a replacement. Churn children take no commands.
struct ChurnSpec {
    unsigned children = 0;  // 0: no churn
    unsigned forks_per_second = 0;
};

// Parses "N@RATE" (e.g. "1000@50"): both whole numbers above zero. Throws UsageError.
ChurnSpec parse_churn(std::string_view text);

struct WorkloadSpec {
    std::uint64_t preload_bytes = 64ULL << 20;  // written by the manager before forking
    std::vector<ChildScript> children;
    bool start_at_once = false;    // children start without waiting for "go"
    bool respawn = false;          // a child that exits unasked is replaced by an idle one
    int children_ignore = 0;       // a signal the children ignore (0: none), for escalation tests
    std::string file_dir;          // where shared: and file: files go (empty: $TMPDIR or /tmp)
    ChurnSpec churn;               // churn children, forked at start besides `children`
    bool orphans_survive = false;  // children outlive the manager (no PR_SET_PDEATHSIG)
};

// Parses a child script: [NAME=][late:][ignore-signals:]KIND[@DURATION][+WORK], KIND one of "idle",
// "cow:SIZE", "leak:SIZE", "mixed:SIZE:SIZE", "shared:SIZE[xROUNDS]", "zero:SIZE",
// "mprotect:SIZE[xROUNDS]", "heapzero:SIZE", "file:SIZE", "thp:SIZE", "warmup:SIZE" (DURATION
// required), "burst:SIZE" (DURATION: the idle after the burst). "@DURATION" spreads the work;
// "+WORK" (a duration) adds that much busy CPU in all, e.g. "leak:16M@4s+200ms". The name is the
// kind ("cow", ...), "late-" + kind for a late child, or NAME. The new kinds take sizes
// above zero. "[NAME=]exec:COMMAND" is a helper (ChildScript::exec_command): the rest of the
// text is the command, taken as it is. Throws UsageError.
ChildScript parse_child_script(std::string_view text);

// What a child running `script` does to its memory once done, as a pure function of it.
struct ScriptTruth {
    std::uint64_t cow_bytes = 0;            // inherited pages unshared by COW (anon or file)
    std::uint64_t growth_bytes = 0;         // fresh anon memory gained, resident plus swapped
    std::uint64_t anon_rise_bytes = 0;      // rise of RssAnon + VmSwap: growth plus file COW
    bool leak = false;                      // the growth is a leak (kept, not a warm-up)
    std::chrono::milliseconds busy_cpu{0};  // busy CPU the script spends, at least
};

// The ground truth of `script` in a manager that preloads `preload_bytes` (cow: writes
// no more than the preload).
ScriptTruth script_truth(const ChildScript& script,
                         std::uint64_t preload_bytes = std::numeric_limits<std::uint64_t>::max());

// Runs the manager in this process until "quit" or end of input on `in_fd`.
// Line protocol, manager to driver on `out_fd`:
//   "manager PID", "child PID NAME" (per fork), "ready", "started", "done PID NAME"
//   (a child finished its script), "exited PID NAME", "respawned OLD NEW", "bye".
// Driver to manager on `in_fd`: "go", "exit NAME" (that child exits), "quit", and
// "fork PID SCRIPT": a new child running SCRIPT (no region kinds, no exec:) at once, with
// the pid PID (fork_at_pid; answered "child PID NAME", or "error fork ...").
// Churn children (ChurnSpec) are named "churn": each fork is "child PID churn START" (START:
// its /proc/PID/stat start time, in clock ticks) and each exit "exited PID churn".
// Children die with the manager (PR_SET_PDEATHSIG) unless orphans_survive. Returns the
// exit status.
int run_workload_manager(const WorkloadSpec& spec, int in_fd, int out_fd);

// fork(), but the child gets the pid `pid` (free in this pid namespace): writes pid - 1 to
// /proc/sys/kernel/ns_last_pid under its flock (needs CAP_SYS_ADMIN or
// CAP_CHECKPOINT_RESTORE in the pid namespace), retrying while another fork takes it or it
// is in use. 0 in the child, its pid in the parent. Throws Error when that fails.
pid_t fork_at_pid(pid_t pid);

// The demo: a manager of 128 MiB whose children unshare 96 MiB over 8 s (cow), leak
// 5 MiB/s (leak), and idle.
WorkloadSpec demo_workload();

}  // namespace kidreaper
