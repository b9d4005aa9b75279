#include "policy/worker_rule.h"

#include <fnmatch.h>

#include <algorithm>

#include "common/error.h"

namespace kidreaper {
namespace {

constexpr std::size_t kMaxGlob = 256;

std::string_view trim(std::string_view text) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) {
        text.remove_prefix(1);
    }
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) {
        text.remove_suffix(1);
    }
    return text;
}

bool printable(std::string_view text) {
    return std::all_of(text.begin(), text.end(),
                       [](char c) { return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f; });
}

// At most 64 characters of `text`, control characters as '?': safe in a one-line error.
std::string shown(std::string_view text) {
    std::string out(text.substr(0, 64));
    for (char& c : out) {
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
            c = '?';
        }
    }
    return out;
}

std::string glob_of(std::string_view condition, std::string_view prefix) {
    const std::string_view glob = condition.substr(prefix.size());
    if (glob.empty()) {
        throw UsageError("invalid --workers condition \"" + shown(condition) +
                         "\": the pattern is empty");
    }
    if (glob.size() > kMaxGlob || !printable(glob)) {
        throw UsageError("invalid --workers condition \"" + shown(condition) +
                         "\": the pattern must be printable and at most 256 characters");
    }
    return std::string(glob);
}

bool matches(const std::string& glob, const std::string& text) {
    return ::fnmatch(glob.c_str(), text.c_str(), 0) == 0;
}

}  // namespace

WorkerRule parse_worker_rule(std::string_view text) {
    WorkerRule rule;
    rule.text = std::string(trim(text));
    if (rule.text.empty()) {
        throw UsageError("invalid --workers \"\": expected conditions such as exe,listener or any");
    }
    std::string_view rest = rule.text;
    bool some = false;
    while (true) {
        const std::size_t comma = rest.find(',');
        const std::string_view condition = trim(rest.substr(0, comma));
        if (condition == "any") {
            rule.any = true;
        } else if (condition == "exe") {
            rule.same_exe = true;
        } else if (condition == "listener") {
            rule.listener = true;
        } else if (condition.starts_with("comm=")) {
            rule.comm_globs.push_back(glob_of(condition, "comm="));
        } else if (condition.starts_with("cmdline=")) {
            rule.cmdline_globs.push_back(glob_of(condition, "cmdline="));
        } else {
            throw UsageError("invalid --workers condition \"" + shown(condition) +
                             "\": expected exe, listener, comm=GLOB, cmdline=GLOB or any");
        }
        some = true;
        if (comma == std::string_view::npos) {
            break;
        }
        rest.remove_prefix(comma + 1);
    }
    const bool conditions =
        rule.same_exe || rule.listener || !rule.comm_globs.empty() || !rule.cmdline_globs.empty();
    if (!some || (rule.any && conditions)) {
        throw UsageError("invalid --workers \"" + shown(rule.text) +
                         "\": \"any\" stands alone (it means every child is a worker)");
    }
    return rule;
}

RoleJudgement judge_role(const WorkerRule& rule, const ChildFacts& child,
                         const ManagerFacts& manager, bool* listener_skipped) {
    if (rule.any) {
        return {true, "every child is a worker (--workers any)"};
    }
    if (rule.same_exe) {
        if (!child.exe || !manager.exe) {
            return {false, "its executable cannot be read"};
        }
        if (*child.exe != *manager.exe) {
            return {false, "runs " + *child.exe + ", not the manager's " + *manager.exe};
        }
    }
    if (rule.listener) {
        if (manager.listening_sockets.empty()) {
            if (listener_skipped != nullptr) {
                *listener_skipped = true;
            }
        } else if (std::none_of(child.socket_inodes.begin(), child.socket_inodes.end(),
                                [&](std::uint64_t inode) {
                                    return manager.listening_sockets.count(inode) != 0;
                                })) {
            return {false, "holds none of the manager's listening sockets"};
        }
    }
    for (const auto& glob : rule.comm_globs) {
        if (!child.comm || !matches(glob, *child.comm)) {
            return {false, "comm \"" + child.comm.value_or("?") + "\" does not match " + glob};
        }
    }
    for (const auto& glob : rule.cmdline_globs) {
        if (!child.cmdline || !matches(glob, *child.cmdline)) {
            return {false, "title \"" + child.cmdline.value_or("?").substr(0, 80) +
                               "\" does not match " + glob};
        }
    }
    return {true, "matches --workers " + rule.text};
}

}  // namespace kidreaper
