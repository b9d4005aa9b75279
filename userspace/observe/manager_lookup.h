// Naming a server's manager: a pid, a pidfile (also one inside a container, reached through
// /proc/N/root), a cgroup directory or a systemd unit. Every answer is a pid of the host's
// pid namespace, checked against /proc; a pid of another namespace is never taken as one.
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
// server removes its pidfile, a unit may be inactive): that is a lookup without a pid and
// a problem. A pidfile under /proc/N/root/ holds a pid of N's pid namespace: it is
// translated to the host's through NSpid and checked to live in that namespace.
ManagerLookup find_manager(const ManagerSelector& selector, const ProcFs& proc);

}  // namespace kidreaper
