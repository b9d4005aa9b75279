// Which children of a manager are its workers. Pre-fork servers also fork helpers
// (Apache's piped loggers and mod_cgid daemon, uWSGI's attached daemons, mules and
// spoolers): kidreaper never signals a helper, never counts it for --min-children and
// never takes it for a replacement. The rule (--workers, or the server preset's) is a
// list of conditions that must all hold; judging is pure, the facts are read elsewhere.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace kidreaper {

struct WorkerRule {
    bool any = false;       // "any": every child is a worker (no condition)
    bool same_exe = false;  // "exe": runs the manager's executable
    bool listener = false;  // "listener": holds one of the manager's listening sockets
    std::vector<std::string> comm_globs;     // "comm=GLOB": /proc/PID/comm matches
    std::vector<std::string> cmdline_globs;  // "cmdline=GLOB": the process title matches
    std::string text;                        // as written, for messages
};

// "exe,listener", "exe,comm=php-fpm*", "cmdline=uWSGI worker *", "any". Throws UsageError.
WorkerRule parse_worker_rule(std::string_view text);

// What the rule looks at in one child; a fact the rule does not need may be left empty.
struct ChildFacts {
    std::optional<std::string> exe;
    std::optional<std::string> comm;
    std::optional<std::string> cmdline;
    std::vector<std::uint64_t> socket_inodes;
};

// What the rule compares a child with.
struct ManagerFacts {
    std::optional<std::string> exe;
    std::set<std::uint64_t> listening_sockets;
};

struct RoleJudgement {
    bool worker = false;
    std::string reason;  // why (one line): the failed condition for a helper
};

// A fact that cannot be read fails its condition: an unreadable child is a helper. A
// manager that holds no listening socket cannot be compared with: "listener" is then
// left out (and `listener_skipped` set, for a warning).
RoleJudgement judge_role(const WorkerRule& rule, const ChildFacts& child,
                         const ManagerFacts& manager, bool* listener_skipped = nullptr);

}  // namespace kidreaper
