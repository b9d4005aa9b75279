// Naming a server's manager: a pid, a pidfile (also one inside a container, reached through
// /proc/N/root), a cgroup directory or a systemd unit. Every answer is a pid of the host's
// pid namespace, checked against /proc; a pid of another namespace is never taken as one.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

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
// The real systemd is asked over the system bus (a unit selector only), and a unit's
// ControlGroup is looked up under detect_cgroup_mounts().
ManagerLookup find_manager(const ManagerSelector& selector, const ProcFs& proc);

// Checks the syntax of a selector's value, as the command line and the config do: a pid's
// digits (parse_pid), an absolute pidfile or cgroup path, a unit name systemd accepts
// (unit_name_problem). Throws UsageError (one line) otherwise.
void validate_selector(const ManagerSelector& selector);

// Why `name` is not the name of a unit that runs processes, one line; empty when it is.
// Allowed: 1 to 255 characters of [A-Za-z0-9:_.\\-@], a prefix not starting with '.', an
// instance after '@' when there is one, and the suffix .service or .scope.
std::string unit_name_problem(std::string_view name);

// What systemd says about one unit: the two properties the lookup needs.
struct UnitFacts {
    pid_t main_pid = 0;         // Service.MainPID; 0 for a scope or a service without one
    std::string control_group;  // ControlGroup, e.g. "/system.slice/x.service"; empty when
                                // the unit has no processes (inactive)
};

// The answer of SystemdUnits::facts: the facts, or one line saying why there are none.
struct UnitQuery {
    std::optional<UnitFacts> facts;
    std::string problem;
};

// Asks systemd about units; the narrow interface tests fake.
class SystemdUnits {
public:
    virtual ~SystemdUnits() = default;
    // The facts of the loaded unit `name` (already checked by unit_name_problem).
    virtual UnitQuery facts(const std::string& name) const = 0;
};

// systemd over the system bus (sd-bus): GetUnit, then MainPID and ControlGroup. Connects
// per call, with a 5 s timeout per method call. MainPID is a pid of systemd's own pid
// namespace: find_manager takes it only when the process is in the unit's ControlGroup. "cannot
// reach systemd over D-Bus: ..." when there is no system bus or no systemd on it.
class SdBusSystemdUnits final : public SystemdUnits {
public:
    UnitQuery facts(const std::string& name) const override;
};

// Where a systemd ControlGroup path is found: the cgroup v2 hierarchy and systemd's v1
// name=systemd one (empty when not mounted).
struct CgroupMounts {
    std::filesystem::path unified;     // /sys/fs/cgroup or /sys/fs/cgroup/unified (cgroup2)
    std::filesystem::path systemd_v1;  // /sys/fs/cgroup/systemd (cgroup, name=systemd)
};

// True when /proc/PID/cgroup text `proc_cgroup` puts the process in `control_group` or
// below it, on the cgroup v2 line ("0::PATH") or systemd's v1 one ("N:name=systemd:PATH").
// Paths are as the reader's cgroup namespace sees them.
bool in_cgroup(std::string_view proc_cgroup, std::string_view control_group);

// Reads the file system types (statfs) of `base` (/sys/fs/cgroup), base/unified and
// base/systemd.
CgroupMounts detect_cgroup_mounts(const std::filesystem::path& base = "/sys/fs/cgroup");

// find_manager with the systemd and the cgroup mounts to use (tests pass fakes).
ManagerLookup find_manager(const ManagerSelector& selector, const ProcFs& proc,
                           const SystemdUnits& units, const CgroupMounts& mounts);

// The inode of the initial pid namespace in every kernel (PROC_PID_INIT_INO).
inline constexpr std::uint64_t kInitialPidNamespace = 0xEFFFFFFCU;

// Why a kidreaper in pid namespace `pid_ns_inode` cannot work (one line); empty in the
// initial pid namespace. The kernel reports host pids to the BPF programs, so kidreaper
// must see them too.
std::string pid_namespace_problem(std::uint64_t pid_ns_inode);

// Throws Error (exit 1, one line) unless kidreaper runs in the initial pid namespace
// (/proc/self/ns/pid), or when that cannot be read.
void require_host_pid_namespace();

}  // namespace kidreaper
