#include "observe/manager_lookup.h"

#include <unistd.h>

#include <array>

#include "common/error.h"
#include "observe/procfs.h"
#include "policy/pidfile_trust.h"

namespace kidreaper {

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
    return "pid";
}

std::optional<std::string> foreign_pid_namespace(const std::string& own_namespace_link) {
    // The initial pid namespace has a fixed inode in every kernel (PROC_PID_INIT_INO).
    if (own_namespace_link.empty() || own_namespace_link == "pid:[4026531836]") {
        return std::nullopt;
    }
    return own_namespace_link;
}

void require_host_pid_namespace() {
    std::array<char, 64> link{};
    const ssize_t length = readlink("/proc/self/ns/pid", link.data(), link.size() - 1);
    const std::string own =
        length > 0 ? std::string(link.data(), static_cast<std::size_t>(length)) : std::string();
    if (const auto foreign = foreign_pid_namespace(own)) {
        throw Error("kidreaper runs in pid namespace " + *foreign +
                    ", not the host's: the kernel reports host pids (run it with the host's pid "
                    "namespace, e.g. hostPID)");
    }
}

ManagerLookup find_manager(const ManagerSelector& selector, const ProcFs& proc) {
    ManagerLookup lookup;
    pid_t pid = 0;
    try {
        switch (selector.kind) {
            case ManagerSelector::Kind::pid:
                pid = parse_pid(selector.value);
                break;
            case ManagerSelector::Kind::pidfile:
                pid = read_pidfile(selector.value);
                break;
            case ManagerSelector::Kind::cgroup:
            case ManagerSelector::Kind::unit:
                lookup.problem = std::string(selector_key(selector.kind)) +
                                 " selectors are not supported yet: name the manager with "
                                 "--pid or --pidfile";
                return lookup;
        }
    } catch (const UsageError& error) {
        lookup.problem = error.what();
        return lookup;
    }
    const auto stat = proc.stat(pid);
    if (!stat || stat->state == 'Z') {
        lookup.problem = selector.kind == ManagerSelector::Kind::pidfile
                             ? "pidfile " + selector.value + " names pid " + std::to_string(pid) +
                                   ", which is not running (is the server running?)"
                             : "no process " + std::to_string(pid);
        return lookup;
    }
    lookup.pid = pid;
    return lookup;
}

}  // namespace kidreaper
