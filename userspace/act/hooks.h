// Running a hook (--pre-hook, --post-hook): `/bin/sh -c COMMAND` in its own process group,
// with stdin from /dev/null, stdout and stderr into a pipe to us and no other descriptor.
// Its output is relayed line by line, prefixed, to a descriptor of our choosing (kidreaper's
// stderr: stdout carries the event stream). The whole group is killed at the timeout, when
// kidreaper is asked to stop, and once the hook itself exited, so nothing it started
// lingers. Only a clean exit with status 0 approves anything.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "act/signals.h"

namespace kidreaper {

struct HookRequest {
    std::string label;             // names it in output lines: "pre-hook" -> "pre-hook[PID]: "
    std::string command;           // given to the shell with -c
    std::vector<std::string> env;  // NAME=VALUE, added to (and overriding) our environment
    std::chrono::milliseconds timeout{std::chrono::seconds(30)};
    std::string shell = "/bin/sh";
};

enum class HookOutcome {
    exited,            // ran to its end: `status` is the exit status
    killed_by_signal,  // died on `signal`
    timed_out,         // ran past the timeout: its group was killed
    spawn_failed,      // could not be started (`error`)
    wait_failed,       // started, but its end could not be observed (`error`): SIGCHLD ignored?
    stopped,           // kidreaper received `signal` (SIGINT/SIGTERM/SIGHUP): its group was killed
};

struct HookResult {
    HookOutcome outcome = HookOutcome::spawn_failed;
    int status = 0;  // exited: the exit status
    int signal = 0;  // killed_by_signal: what killed it; stopped: what kidreaper received
    std::string error;
    std::chrono::milliseconds timeout{};  // timed_out: after how long
    pid_t pid = 0;                        // 0 when it never started
};

// Runs the hook to its end (or the timeout, or a stop request through `gate`), writing its
// output to `output_fd` as "kidreaper: LABEL[PID]: LINE". A gate that already received a
// stop request means the hook is not started at all (outcome stopped).
HookResult run_hook(const HookRequest& request, SignalGate& gate, int output_fd);

// True only for a hook that exited with status 0: every other outcome is a veto.
bool approves(const HookResult& result);

// "exited", "killed-by-signal", "timed-out", "spawn-failed", "wait-failed", "stopped".
std::string hook_outcome_name(HookOutcome outcome);
// For humans: "exit status 3", "killed by signal 9", "timed out after 30s",
// "could not run: ...", "could not wait for it: ...", "stopped: kidreaper received TERM".
std::string describe(const HookResult& result);

}  // namespace kidreaper
