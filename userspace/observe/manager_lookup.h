// Naming a server's manager: a pid or a pidfile today (cgroup and unit selectors are named
// here and refused with a one-line problem until they are built). Every answer is a live
// process checked against /proc.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

namespace kidreaper {

class ProcFs;

// How a service names its manager: exactly one of pid, pidfile, cgroup, unit.
struct ManagerSelector {
    enum class Kind { pid, pidfile, cgroup, unit };
    Kind kind = Kind::pid;
    std::string value;  // the pid's digits, the pidfile, the cgroup directory, the unit name
};

// "pid", "pidfile", "cgroup" or "unit": the flag and config key of a selector.
const char* selector_key(ManagerSelector::Kind kind);

// The manager a selector names right now.
struct ManagerLookup {
    std::optional<pid_t> pid;  // a live (not zombie) process of the host's pid namespace
    std::string problem;       // why there is none, one line (empty when pid is set)
};

// Resolves `selector` now. Never throws for a missing or unreadable source (a stopping
// server removes its pidfile): that is a lookup without a pid and a problem.
ManagerLookup find_manager(const ManagerSelector& selector, const ProcFs& proc);

// The pid namespace named by `own_namespace_link` (the text of /proc/self/ns/pid, e.g.
// "pid:[4026532201]") when it is not the host's initial one; nullopt on the host.
std::optional<std::string> foreign_pid_namespace(const std::string& own_namespace_link);

// Refuses (Error, one line naming the namespace) when kidreaper runs inside a pid
// namespace other than the host's: the kernel side reports host pids.
void require_host_pid_namespace();

}  // namespace kidreaper
