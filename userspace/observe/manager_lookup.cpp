#include "observe/manager_lookup.h"

#include <linux/magic.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <system_error>
#include <utility>
#include <vector>

#include "common/error.h"
#include "observe/procfs.h"

namespace kidreaper {
namespace {

constexpr std::size_t kMaxCgroupProcs = 4 * 1024 * 1024;  // ~500k pids in one cgroup
constexpr std::size_t kMaxCgroupDirs = 10000;             // nested cgroups read at most
constexpr std::size_t kMaxListedPids = 10;                // in a problem line
constexpr std::size_t kMaxUnitName = 255;                 // systemd's UNIT_NAME_MAX - 1

ManagerLookup found(pid_t pid) {
    ManagerLookup lookup;
    lookup.pid = pid;
    return lookup;
}

ManagerLookup problem(std::string text) {
    ManagerLookup lookup;
    lookup.problem = std::move(text);
    return lookup;
}

// Empty when `pid` is a live process that is not a zombie, else why not.
std::string not_running(pid_t pid, const ProcFs& proc) {
    const std::optional<ProcStat> st = proc.stat(pid);
    if (!st) {
        return "process " + std::to_string(pid) + " is not running";
    }
    if (st->state == 'Z' || st->state == 'X') {
        return "process " + std::to_string(pid) + " is a zombie (exited, not yet reaped)";
    }
    return {};
}

ManagerLookup live(pid_t pid, const ProcFs& proc, const std::string& context) {
    std::string why = not_running(pid, proc);
    if (why.empty()) {
        return found(pid);
    }
    return problem(context.empty() ? why : context + ": " + why);
}

std::string ns_name(std::uint64_t inode) {
    return "pid:[" + std::to_string(inode) + "]";
}

// N when `path` is ROOT/N/root/REST of the proc root (how a container's files are reached).
std::optional<pid_t> namespace_owner(const std::filesystem::path& path,
                                     const std::filesystem::path& proc_root) {
    auto it = path.begin();
    for (const auto& part : proc_root) {
        if (part.empty()) {
            continue;  // a trailing slash
        }
        if (it == path.end() || *it != part) {
            return std::nullopt;
        }
        ++it;
    }
    if (it == path.end()) {
        return std::nullopt;
    }
    const std::string digits = it->string();
    ++it;
    if (it == path.end() || it->string() != "root" || digits.empty() || digits.front() == '0' ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return std::nullopt;
    }
    pid_t pid = 0;
    const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), pid);
    if (ec != std::errc{} || ptr != digits.data() + digits.size() || pid <= 0) {
        return std::nullopt;
    }
    return pid;
}

// True when a component after ROOT/N/root is "." or "..": ".." at a process's root climbs
// out of it into the host's tree, where the pid would mean something else.
bool climbs(const std::filesystem::path& path) {
    return std::any_of(path.begin(), path.end(), [](const std::filesystem::path& part) {
        return part == "." || part == "..";
    });
}

// The host pid of the process whose pid in the pid namespace of `owner` is `inner`.
ManagerLookup translate(pid_t owner, pid_t inner, const ProcFs& proc) {
    const std::optional<std::uint64_t> ns = proc.pid_namespace(owner);
    if (!ns) {
        return problem("cannot read the pid namespace of process " + std::to_string(owner) + " (" +
                       (proc.root() / std::to_string(owner) / "ns/pid").string() +
                       "): is it running?");
    }
    std::vector<pid_t> matches;
    for (const pid_t host : proc.pids()) {
        if (proc.pid_namespace(host) != ns) {
            continue;
        }
        const std::optional<std::vector<pid_t>> nspid = proc.ns_pids(host);
        // The first entry is the pid in the /proc mount's namespace: it must be the one we
        // read it under, and the pid namespace must not have changed meanwhile (pid reuse).
        if (!nspid || nspid->front() != host || nspid->back() != inner ||
            proc.pid_namespace(host) != ns || !not_running(host, proc).empty()) {
            continue;
        }
        matches.push_back(host);
    }
    if (matches.size() == 1) {
        return found(matches.front());
    }
    if (matches.empty()) {
        return problem("pid " + std::to_string(inner) + " of the pid namespace of process " +
                       std::to_string(owner) + " (" + ns_name(*ns) + ") is not running");
    }
    return problem(std::to_string(matches.size()) + " processes are pid " + std::to_string(inner) +
                   " of " + ns_name(*ns) + "; not choosing one");
}

ManagerLookup from_pidfile(const std::filesystem::path& path, const ProcFs& proc) {
    const std::optional<pid_t> owner = namespace_owner(path, proc.root());
    if (owner && climbs(path)) {
        return problem("pidfile " + printable(path.string()) +
                       ": '.' or '..' in a path under a process's root is not followed");
    }
    pid_t pid = 0;
    try {
        // Inside a container the manager may well be pid 1 (its init).
        pid = read_pidfile(path, owner ? 1 : 2);
    } catch (const Error& e) {
        return problem(e.what());
    }
    if (!owner) {
        return live(pid, proc, "pidfile " + printable(path.string()));
    }
    ManagerLookup lookup = translate(*owner, pid, proc);
    if (lookup.pid && *lookup.pid <= 1) {
        // A pidfile of the host's own namespace naming init (/proc/1/root/...).
        return problem("pidfile " + printable(path.string()) + " names init (pid 1)");
    }
    return lookup;
}

struct CgroupScan {
    std::vector<pid_t> pids;  // sorted, unique
    std::string problem;
};

// Adds the pids of DIR/cgroup.procs to `pids`; false (and `problem`) when it cannot.
bool read_procs(const std::filesystem::path& dir, std::set<pid_t>& pids, std::string& why) {
    const std::optional<std::string> text =
        read_bounded_file(dir / "cgroup.procs", kMaxCgroupProcs);
    if (!text) {
        why = "cannot read " + printable((dir / "cgroup.procs").string());
        return false;
    }
    std::string_view rest = *text;
    while (!rest.empty()) {
        const std::size_t newline = rest.find('\n');
        const std::string_view line = rest.substr(0, newline);
        rest.remove_prefix(newline == std::string_view::npos ? rest.size() : newline + 1);
        if (line.empty()) {
            continue;
        }
        pid_t pid = 0;
        const auto [ptr, ec] = std::from_chars(line.data(), line.data() + line.size(), pid);
        if (ec != std::errc{} || ptr != line.data() + line.size() || pid <= 0 ||
            pid > kPidMaxLimit) {
            why = printable((dir / "cgroup.procs").string()) + ": not a pid: \"" +
                  printable(line, 32) + "\"";
            return false;
        }
        pids.insert(pid);
    }
    return true;
}

// The pids of `dir` and of every cgroup below it. Symbolic links are not followed.
CgroupScan scan_cgroup(const std::filesystem::path& dir) {
    CgroupScan scan;
    const std::string name = printable(dir.string());
    std::error_code ec;
    if (!dir.is_absolute()) {
        scan.problem = "cgroup " + name + ": not an absolute path";
        return scan;
    }
    if (!std::filesystem::is_directory(std::filesystem::symlink_status(dir, ec)) ||
        !std::filesystem::is_regular_file(dir / "cgroup.procs", ec)) {
        scan.problem = "cgroup " + name + ": not a cgroup directory (no cgroup.procs)";
        return scan;
    }
    std::set<pid_t> pids;
    if (!read_procs(dir, pids, scan.problem)) {
        return scan;
    }
    std::size_t dirs = 1;
    for (std::filesystem::recursive_directory_iterator it(dir, ec), end; !ec && it != end;
         it.increment(ec)) {
        if (!it->is_directory(ec) || it->is_symlink(ec)) {
            continue;
        }
        if (++dirs > kMaxCgroupDirs) {
            scan.problem = "cgroup " + name + ": more than " + std::to_string(kMaxCgroupDirs) +
                           " cgroups below it";
            return scan;
        }
        std::string why;
        if (!read_procs(it->path(), pids, why) &&
            std::filesystem::exists(it->path() / "cgroup.procs", ec)) {
            scan.problem = why;  // a cgroup removed meanwhile is no problem
            return scan;
        }
    }
    if (ec && ec != std::errc::no_such_file_or_directory) {
        scan.problem = errno_message("cgroup " + name, ec.value());
        return scan;
    }
    scan.pids.assign(pids.begin(), pids.end());
    return scan;
}

// The one process of the cgroup `dir` (and below) whose parent is outside it.
ManagerLookup from_cgroup(const std::filesystem::path& dir, const ProcFs& proc) {
    const CgroupScan scan = scan_cgroup(dir);
    if (!scan.problem.empty()) {
        return problem(scan.problem);
    }
    const std::string name = printable(dir.string());
    const std::set<pid_t> members(scan.pids.begin(), scan.pids.end());
    std::vector<pid_t> roots;
    for (const pid_t pid : scan.pids) {
        const std::optional<ProcStat> st = proc.stat(pid);
        if (!st || st->state == 'Z' || st->state == 'X') {
            continue;  // exited since the kernel listed it
        }
        if (members.count(st->ppid) == 0) {
            roots.push_back(pid);
        }
    }
    if (roots.size() == 1) {
        return found(roots.front());
    }
    if (roots.empty()) {
        return problem("no process in " + name);
    }
    std::string list;
    for (std::size_t i = 0; i < roots.size() && i < kMaxListedPids; ++i) {
        list += (i == 0 ? "" : ", ") + std::to_string(roots[i]);
    }
    if (roots.size() > kMaxListedPids) {
        list += ", ...";
    }
    return problem(std::to_string(roots.size()) + " processes in " + name +
                   " have a parent outside it: pids " + list +
                   "; name the manager with --pid or --pidfile");
}

bool ends_with(std::string_view text, std::string_view suffix) {
    return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

// Where systemd's ControlGroup `group` of `unit` is on this host.
ManagerLookup from_unit_cgroup(const std::string& unit, const std::string& group,
                               const CgroupMounts& mounts, const ProcFs& proc) {
    const std::filesystem::path relative = std::filesystem::path(group).relative_path();
    if (group.front() != '/' || climbs(relative)) {
        return problem("unit " + unit + ": systemd reports an unexpected ControlGroup \"" +
                       printable(group) + "\"");
    }
    std::error_code ec;
    for (const std::filesystem::path& root : {mounts.unified, mounts.systemd_v1}) {
        if (root.empty()) {
            continue;
        }
        const std::filesystem::path dir = relative.empty() ? root : root / relative;
        if (std::filesystem::is_regular_file(dir / "cgroup.procs", ec)) {
            return from_cgroup(dir, proc);
        }
    }
    return problem("unit " + unit + ": its cgroup " + printable(group) +
                   " is under no mounted cgroup v2 or name=systemd hierarchy");
}

ManagerLookup from_unit(const std::string& unit, const ProcFs& proc, const SystemdUnits& units,
                        const CgroupMounts& mounts) {
    const std::string bad = unit_name_problem(unit);
    if (!bad.empty()) {
        return problem(bad);
    }
    const UnitQuery query = units.facts(unit);
    if (!query.facts) {
        return problem(query.problem.empty() ? "unit " + unit + ": systemd did not answer"
                                             : query.problem);
    }
    const UnitFacts& facts = *query.facts;
    if (facts.main_pid > 0) {
        // A systemd in another pid or cgroup namespace (a container's, reached through
        // DBUS_SYSTEM_BUS_ADDRESS) reports its own pids: the host pid of that number is
        // another process, outside the unit's cgroup.
        ManagerLookup main = live(facts.main_pid, proc, "unit " + unit + ": MainPID");
        const std::optional<std::string> cgroup = main.pid ? proc.cgroup(*main.pid) : std::nullopt;
        if (main.pid && (!cgroup || !in_cgroup(*cgroup, facts.control_group))) {
            return problem("unit " + unit + ": MainPID " + std::to_string(facts.main_pid) +
                           " is not a process in its cgroup " + printable(facts.control_group) +
                           " (a systemd of another pid namespace?)");
        }
        return main;
    }
    if (facts.main_pid < 0) {
        return problem("unit " + unit + ": systemd reports an invalid MainPID");
    }
    if (facts.control_group.empty()) {
        return problem("unit " + unit + " has no processes (is it running?)");
    }
    return from_unit_cgroup(unit, facts.control_group, mounts, proc);
}

}  // namespace

bool in_cgroup(std::string_view proc_cgroup, std::string_view control_group) {
    if (control_group.empty() || control_group.front() != '/') {
        return false;
    }
    std::string_view rest = proc_cgroup;
    while (!rest.empty()) {
        const std::size_t newline = rest.find('\n');
        std::string_view line = rest.substr(0, newline);
        rest.remove_prefix(newline == std::string_view::npos ? rest.size() : newline + 1);
        // "HIERARCHY-ID:CONTROLLERS:PATH"; PATH may hold ':' itself.
        const std::size_t first = line.find(':');
        const std::size_t second =
            first == std::string_view::npos ? first : line.find(':', first + 1);
        if (second == std::string_view::npos) {
            continue;
        }
        const std::string_view id = line.substr(0, first);
        const std::string_view controllers = line.substr(first + 1, second - first - 1);
        const std::string_view path = line.substr(second + 1);
        const bool v2 = id == "0" && controllers.empty();
        if (!v2 && controllers != "name=systemd") {
            continue;
        }
        if (control_group == "/" ||
            (path.substr(0, control_group.size()) == control_group &&
             (path.size() == control_group.size() || path[control_group.size()] == '/'))) {
            return true;
        }
    }
    return false;
}

namespace {

bool is_fs(const std::filesystem::path& path, std::int64_t magic) {
    struct statfs fs {};
    return ::statfs(path.c_str(), &fs) == 0 && static_cast<std::int64_t>(fs.f_type) == magic;
}

}  // namespace

const char* selector_key(ManagerSelector::Kind kind) {
    switch (kind) {
        case ManagerSelector::Kind::pid:
            return "pid";
        case ManagerSelector::Kind::pidfile:
            return "pidfile";
        case ManagerSelector::Kind::cgroup:
            return "cgroup";
        case ManagerSelector::Kind::unit:
            return "unit";
    }
    return "pid";  // unreachable: the switch covers every value
}

std::string unit_name_problem(std::string_view name) {
    const std::string shown = "unit \"" + printable(name, 64) + "\": ";
    if (name.empty() || name.size() > kMaxUnitName) {
        return shown + "a unit name has 1 to " + std::to_string(kMaxUnitName) + " characters";
    }
    const bool allowed = std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == ':' || c == '_' || c == '.' || c == '-' || c == '\\' || c == '@';
    });
    if (!allowed) {
        return shown + "only letters, digits and :_.-\\@ may appear in a unit name";
    }
    std::string_view prefix;
    if (ends_with(name, ".service")) {
        prefix = name.substr(0, name.size() - 8);
    } else if (ends_with(name, ".scope")) {
        prefix = name.substr(0, name.size() - 6);
    } else {
        return shown + "give a .service or .scope unit (the suffix is required)";
    }
    if (prefix.empty() || prefix.front() == '.' || prefix.front() == '@') {
        return shown + "not a unit name";
    }
    const std::size_t at = prefix.find('@');
    if (at != std::string_view::npos &&
        (at + 1 == prefix.size() || prefix.find('@', at + 1) != std::string_view::npos)) {
        return shown + "a template needs one instance after '@' (name@instance.service)";
    }
    return {};
}

void validate_selector(const ManagerSelector& selector) {
    const std::string key = selector_key(selector.kind);
    switch (selector.kind) {
        case ManagerSelector::Kind::pid:
            parse_pid(selector.value);
            return;
        case ManagerSelector::Kind::pidfile:
        case ManagerSelector::Kind::cgroup:
            if (selector.value.empty() || selector.value.front() != '/') {
                throw UsageError("--" + key + " \"" + printable(selector.value, 64) +
                                 "\": give an absolute path");
            }
            return;
        case ManagerSelector::Kind::unit: {
            const std::string bad = unit_name_problem(selector.value);
            if (!bad.empty()) {
                throw UsageError(bad);
            }
            return;
        }
    }
}

CgroupMounts detect_cgroup_mounts(const std::filesystem::path& base) {
    CgroupMounts mounts;
    if (is_fs(base, CGROUP2_SUPER_MAGIC)) {
        mounts.unified = base;
    } else if (is_fs(base / "unified", CGROUP2_SUPER_MAGIC)) {
        mounts.unified = base / "unified";
    }
    if (is_fs(base / "systemd", CGROUP_SUPER_MAGIC)) {
        mounts.systemd_v1 = base / "systemd";
    }
    return mounts;
}

ManagerLookup find_manager(const ManagerSelector& selector, const ProcFs& proc,
                           const SystemdUnits& units, const CgroupMounts& mounts) {
    switch (selector.kind) {
        case ManagerSelector::Kind::pid: {
            pid_t pid = 0;
            try {
                pid = parse_pid(selector.value);
            } catch (const Error& e) {
                return problem(e.what());
            }
            return live(pid, proc, {});
        }
        case ManagerSelector::Kind::pidfile:
            return from_pidfile(selector.value, proc);
        case ManagerSelector::Kind::cgroup:
            return from_cgroup(selector.value, proc);
        case ManagerSelector::Kind::unit:
            return from_unit(selector.value, proc, units, mounts);
    }
    return problem("unknown selector");  // unreachable: the switch covers every value
}

ManagerLookup find_manager(const ManagerSelector& selector, const ProcFs& proc) {
    const SdBusSystemdUnits units;
    if (selector.kind != ManagerSelector::Kind::unit) {
        return find_manager(selector, proc, units, CgroupMounts{});
    }
    return find_manager(selector, proc, units, detect_cgroup_mounts());
}

std::string pid_namespace_problem(std::uint64_t pid_ns_inode) {
    if (pid_ns_inode == kInitialPidNamespace) {
        return {};
    }
    return "kidreaper runs in pid namespace " + ns_name(pid_ns_inode) +
           ", not the host's: the kernel reports host pids (run it with hostPID)";
}

void require_host_pid_namespace() {
    char target[64];
    const ssize_t n = ::readlink("/proc/self/ns/pid", target, sizeof target);
    if (n < 0) {
        throw Error(
            errno_message("cannot tell kidreaper's pid namespace: /proc/self/ns/pid", errno) +
            " (is the host's /proc mounted?)");
    }
    const std::optional<std::uint64_t> inode =
        static_cast<std::size_t>(n) < sizeof target
            ? parse_ns_link(std::string_view(target, static_cast<std::size_t>(n)), "pid")
            : std::nullopt;
    if (!inode) {
        throw Error(
            "cannot tell kidreaper's pid namespace: /proc/self/ns/pid reads \"" +
            printable(std::string_view(target, std::min<std::size_t>(n, sizeof target)), 64) +
            "\"");
    }
    const std::string why = pid_namespace_problem(*inode);
    if (!why.empty()) {
        throw Error(why);
    }
}

}  // namespace kidreaper
