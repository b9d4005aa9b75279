// A scripted pre-fork manager: it preloads memory, then forks children that unshare
// that inherited memory (COW), leak fresh memory, do both, or idle. The test fixture
// (tests/fixture) and `kidreaper diagnose --demo` run it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kidreaper {

// What one child does once told to start.
struct ChildScript {
    std::string name;                     // label reported with its pid
    std::uint64_t cow_bytes = 0;          // inherited bytes to write, one write per 4 KiB page
    std::uint64_t leak_bytes = 0;         // fresh bytes to allocate and write, never freed
    std::chrono::milliseconds spread{0};  // spread the work evenly over this long (0: at once)
    bool late = false;                    // forked when the manager is told "go", not at start
};

struct WorkloadSpec {
    std::uint64_t preload_bytes = 64ULL << 20;  // written by the manager before forking
    std::vector<ChildScript> children;
    bool start_at_once = false;  // children start without waiting for "go"
    bool respawn = false;        // a child that exits unasked is replaced by an idle one
    int children_ignore = 0;     // a signal the children ignore (0: none), for escalation tests
};

// Parses a child script: "idle", "cow:32M", "leak:16M", "mixed:32M:16M", optionally
// prefixed "late:" and suffixed "@10s" (spread). The name is the kind ("cow", ...),
// "late-" + kind for a late child, or NAME given as a "NAME=" prefix.
// Throws UsageError.
ChildScript parse_child_script(std::string_view text);

// Runs the manager in this process until "quit" or end of input on `in_fd`.
// Line protocol, manager to driver on `out_fd`:
//   "manager PID", "child PID NAME" (per fork), "ready", "started", "done PID NAME"
//   (a child finished its script), "exited PID NAME", "respawned OLD NEW", "bye".
// Driver to manager on `in_fd`: "go", "exit NAME" (that child exits), "quit".
// Children die with the manager (PR_SET_PDEATHSIG). Returns the exit status.
int run_workload_manager(const WorkloadSpec& spec, int in_fd, int out_fd);

// The demo: a manager of 128 MiB whose children unshare 96 MiB over 8 s (cow), leak
// 5 MiB/s (leak), and idle.
WorkloadSpec demo_workload();

}  // namespace kidreaper
