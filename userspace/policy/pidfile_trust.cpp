#include "policy/pidfile_trust.h"

#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <deque>
#include <set>
#include <system_error>

namespace kidreaper {
namespace {

constexpr int kMaxLinks = 40;  // as the kernel's path walk (ELOOP)

std::string uid_list(const std::set<uid_t>& uids) {
    std::string text;
    for (const uid_t uid : uids) {
        text += (text.empty() ? "" : " and ") + std::to_string(uid);
    }
    return text;
}

// The components of a path, "/" left out.
std::deque<std::filesystem::path> components_of(const std::filesystem::path& path) {
    std::deque<std::filesystem::path> parts;
    for (const auto& part : path.relative_path()) {
        if (!part.empty()) {
            parts.push_back(part);
        }
    }
    return parts;
}

// Collects who can change what a path walk went through.
class Writers {
public:
    // One step of the walk: `path` with its lstat facts.
    void note(const std::filesystem::path& path, const PathFacts& facts) {
        if (facts.uid != 0) {
            if (users_.insert(facts.uid).second && first_owned_.empty()) {
                first_owned_ = path.string();
            }
        }
        if (S_ISLNK(facts.mode)) {
            return;  // a symlink's mode bits mean nothing; its owner is noted above
        }
        if ((facts.mode & S_IWGRP) != 0 && facts.gid != 0) {
            nobody("it can be replaced by group " + std::to_string(facts.gid) + " (" +
                   path.string() + " is group-writable)");
        }
        const bool sticky_dir = S_ISDIR(facts.mode) && (facts.mode & S_ISVTX) != 0;
        if ((facts.mode & S_IWOTH) != 0 && !sticky_dir) {
            nobody("anybody can replace it (" + path.string() + " is world-writable)");
        }
    }
    void nobody(const std::string& reason) {
        if (nobody_reason_.empty()) {
            nobody_reason_ = reason;
        }
    }
    PidfileTrust result(const std::filesystem::path& pidfile) const {
        PidfileTrust trust;
        const std::string prefix = "pidfile " + pidfile.string() + ": ";
        if (!nobody_reason_.empty()) {
            trust.names_nobody = true;
            trust.reason = prefix + nobody_reason_;
        } else if (users_.size() > 1) {
            trust.names_nobody = true;
            trust.reason = prefix + "it can be replaced by uids " + uid_list(users_);
        } else if (users_.size() == 1) {
            trust.only_user = *users_.begin();
            trust.reason = prefix + "it can be replaced by uid " + std::to_string(*users_.begin()) +
                           " (owner of " + first_owned_ + ")";
        }
        return trust;
    }

private:
    std::set<uid_t> users_;
    std::string first_owned_;
    std::string nobody_reason_;
};

}  // namespace

std::optional<PathFacts> SystemPathInspector::inspect(const std::filesystem::path& path) const {
    struct stat info {};
    if (::lstat(path.c_str(), &info) != 0) {
        return std::nullopt;
    }
    return PathFacts{info.st_uid, info.st_gid, info.st_mode};
}

std::optional<std::filesystem::path> SystemPathInspector::link_target(
    const std::filesystem::path& path) const {
    std::array<char, 4096> buffer{};
    const ssize_t n = ::readlink(path.c_str(), buffer.data(), buffer.size());
    if (n <= 0 || static_cast<std::size_t>(n) >= buffer.size()) {
        return std::nullopt;
    }
    return std::filesystem::path(std::string(buffer.data(), static_cast<std::size_t>(n)));
}

PidfileTrust assess_pidfile(const std::filesystem::path& pidfile, const PathInspector& inspector) {
    std::filesystem::path absolute = pidfile;
    if (!absolute.is_absolute()) {
        std::error_code error;
        absolute = std::filesystem::current_path(error) / pidfile;
        if (error) {
            PidfileTrust trust;
            trust.names_nobody = true;
            trust.reason = "pidfile " + pidfile.string() + ": the working directory is unknown";
            return trust;
        }
    }
    Writers writers;
    std::filesystem::path resolved = "/";
    if (const auto root = inspector.inspect(resolved)) {
        writers.note(resolved, *root);
    } else {
        writers.nobody("/ cannot be inspected");
    }
    std::deque<std::filesystem::path> parts = components_of(absolute);
    int links = 0;
    while (!parts.empty()) {
        const std::filesystem::path part = parts.front();
        parts.pop_front();
        if (part == ".") {
            continue;
        }
        if (part == "..") {
            resolved = resolved.parent_path();
            continue;
        }
        const bool last = parts.empty();
        const std::filesystem::path next = resolved / part;
        const auto facts = inspector.inspect(next);
        if (!facts) {
            writers.nobody(next.string() + " does not exist or cannot be inspected");
            break;
        }
        writers.note(next, *facts);
        if (S_ISLNK(facts->mode)) {
            const auto target = last ? std::nullopt : inspector.link_target(next);
            if (last) {
                writers.nobody("it is a symbolic link");
                break;
            }
            if (!target || ++links > kMaxLinks) {
                writers.nobody(next.string() + ": a symbolic link that cannot be followed");
                break;
            }
            if (target->is_absolute()) {
                resolved = "/";
            }
            const auto target_parts = components_of(*target);
            parts.insert(parts.begin(), target_parts.begin(), target_parts.end());
            continue;
        }
        if (!last && !S_ISDIR(facts->mode)) {
            writers.nobody(next.string() + " is not a directory");
            break;
        }
        if (last && !S_ISREG(facts->mode)) {
            writers.nobody("it is not a regular file");
            break;
        }
        resolved = next;
    }
    return writers.result(pidfile);
}

CandidateFacts read_candidate(pid_t pid, pid_t ppid, const ProcessFacts& facts) {
    CandidateFacts candidate;
    candidate.pid = pid;
    candidate.ppid = ppid;
    candidate.uids = facts.uids(pid);
    candidate.exe = facts.executable(pid);
    candidate.cgroup = facts.cgroup(pid);
    return candidate;
}

std::optional<ManagerIdentity> pin_identity(const CandidateFacts& facts) {
    if (!facts.uids || !facts.exe || !facts.cgroup) {
        return std::nullopt;
    }
    return ManagerIdentity{facts.pid, facts.uids->real, *facts.exe, *facts.cgroup};
}

std::optional<std::string> refuse_manager(const PidfileTrust& trust,
                                          const CandidateFacts& candidate,
                                          const std::optional<ManagerIdentity>& pinned,
                                          pid_t old_manager) {
    const std::string who = "pid " + std::to_string(candidate.pid);
    if (trust.names_nobody) {
        return trust.reason + ", so it names nobody";
    }
    if (!candidate.uids) {
        return "cannot read the user " + who + " runs as";
    }
    if (trust.only_user && (candidate.uids->real != *trust.only_user ||
                            candidate.uids->effective != *trust.only_user)) {
        return who + " runs as uid " + std::to_string(candidate.uids->real) + "/" +
               std::to_string(candidate.uids->effective) + ", but " + trust.reason +
               ": only that user's processes are accepted";
    }
    if (!pinned) {
        return std::nullopt;
    }
    if (old_manager != 0 && candidate.ppid == old_manager) {
        return std::nullopt;  // forked by the old manager: a re-exec (unicorn's USR2)
    }
    if (candidate.uids->real != pinned->uid) {
        return who + " runs as uid " + std::to_string(candidate.uids->real) +
               ", the manager kidreaper started with ran as uid " + std::to_string(pinned->uid);
    }
    if (!candidate.exe || *candidate.exe != pinned->exe) {
        return who + " runs " + candidate.exe.value_or("an unreadable executable") +
               ", the manager kidreaper started with ran " + pinned->exe;
    }
    if (!candidate.cgroup || *candidate.cgroup != pinned->cgroup) {
        return who + " is in another cgroup than the manager kidreaper started with";
    }
    return std::nullopt;
}

}  // namespace kidreaper
