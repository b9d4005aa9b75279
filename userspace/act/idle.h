// Waiting for an idle moment before a graceful signal: a child blocked in one of its
// server's idle syscalls (accept, poll, ...) is between requests.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <set>
#include <string>

namespace kidreaper {

class ProcFs;
class SignalGate;

// True when /proc/PID/syscall's line shows the child blocked in one of `idle_syscalls`.
bool is_idle_syscall(const std::string& syscall_line, const std::set<long>& idle_syscalls);

// How a wait for idle ended.
enum class IdleWait {
    idle,        // blocked in an idle syscall
    timeout,     // not idle within the timeout
    gone,        // exited meanwhile
    unreadable,  // /proc/PID/syscall cannot be read (no CAP_SYS_PTRACE)
    stopping,    // kidreaper was asked to stop
};
// "idle", "timeout", "gone", "unreadable" or "stopping".
const char* idle_wait_name(IdleWait wait);

// Reads /proc/PID/syscall every 10 ms until the child is idle, the timeout passes, it exits,
// or a termination signal arrives through `gate`.
IdleWait wait_until_idle(const ProcFs& proc, pid_t pid, const std::set<long>& idle_syscalls,
                         std::chrono::milliseconds timeout, SignalGate& gate);

}  // namespace kidreaper
