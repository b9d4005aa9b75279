#include "act/idle.h"

#include <charconv>

#include "act/signals.h"
#include "observe/procfs.h"

namespace kidreaper {

bool is_idle_syscall(const std::string& syscall_line, const std::set<long>& idle_syscalls) {
    long number = -1;
    const char* begin = syscall_line.data();
    const char* end = begin + syscall_line.size();
    auto [stop, error] = std::from_chars(begin, end, number);
    if (error != std::errc{} || (stop != end && *stop != ' ')) {
        return false;  // "running", or unreadable
    }
    return idle_syscalls.count(number) != 0;
}

const char* idle_wait_name(IdleWait wait) {
    switch (wait) {
        case IdleWait::idle:
            return "idle";
        case IdleWait::timeout:
            return "timeout";
        case IdleWait::gone:
            return "gone";
        case IdleWait::unreadable:
            return "unreadable";
        case IdleWait::stopping:
            return "stopping";
    }
    return "stopping";
}

IdleWait wait_until_idle(const ProcFs& proc, pid_t pid, const std::set<long>& idle_syscalls,
                         std::chrono::milliseconds timeout, SignalGate& gate) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
        const auto line = proc.syscall(pid);
        if (!line) {
            // Exited, or /proc/PID/syscall is not readable (no CAP_SYS_PTRACE): say so.
            return proc.stat(pid) ? IdleWait::unreadable : IdleWait::gone;
        }
        if (is_idle_syscall(*line, idle_syscalls)) {
            return IdleWait::idle;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            return IdleWait::timeout;
        }
        if (gate.wait_for(std::chrono::milliseconds(10)) != 0 || gate.stop_requested()) {
            return IdleWait::stopping;
        }
    }
}

}  // namespace kidreaper
