// Whom a pidfile may name. Whoever can write a pidfile, or replace it through any
// directory above it, can aim kidreaper at a process of their choosing; the rule follows
// systemd's for PIDFile=:
//  - A pidfile is trusted when only root can change it: the file and every directory on
//    its path (symlinks resolved, each link checked too) are owned by root and not
//    writable by a non-root group or by others. A world-writable directory with the
//    sticky bit (/tmp) is fine: nobody else can replace what is in it.
//  - When exactly one non-root user can change it (it owns the file or a directory on
//    the path), the pidfile is untrusted: the process it names is accepted only if it
//    runs as that user (real and effective uid).
//  - When several users, or a group, or everybody can change it, it names nobody.
// Then a manager is pinned (ManagerIdentity): a new pid from the pidfile is followed only
// when it matches the identity kidreaper started with, or is a child of the old manager
// (unicorn's USR2 upgrade). Every refusal has a one-line reason.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>

#include "observe/process_facts.h"

namespace kidreaper {

// What lstat and readlink say about one path; the narrow interface tests fake.
struct PathFacts {
    uid_t uid = 0;
    gid_t gid = 0;
    mode_t mode = 0;  // st_mode: type and permission bits
};

class PathInspector {
public:
    virtual ~PathInspector() = default;
    // lstat(path); nullopt when it does not exist or cannot be read.
    virtual std::optional<PathFacts> inspect(const std::filesystem::path& path) const = 0;
    // readlink(path) of a symlink.
    virtual std::optional<std::filesystem::path> link_target(
        const std::filesystem::path& path) const = 0;
};

// The real file system.
class SystemPathInspector final : public PathInspector {
public:
    std::optional<PathFacts> inspect(const std::filesystem::path& path) const override;
    std::optional<std::filesystem::path> link_target(
        const std::filesystem::path& path) const override;
};

struct PidfileTrust {
    bool names_nobody = false;       // several writers, a group or everybody: refuse all
    std::optional<uid_t> only_user;  // untrusted: accept only processes running as this user
    std::string reason;              // why it is not trusted (empty when trusted)
    bool trusted() const { return !names_nobody && !only_user; }
};

// Assesses an absolute (or cwd-relative) pidfile path. A path that cannot be inspected
// (missing directory, too many links) names nobody until it can.
PidfileTrust assess_pidfile(const std::filesystem::path& pidfile, const PathInspector& inspector);

// Who the manager is: what a new pid must match to be followed.
struct ManagerIdentity {
    pid_t pid = 0;
    uid_t uid = 0;       // real uid
    std::string exe;     // executable_identity of /proc/PID/exe
    std::string cgroup;  // /proc/PID/cgroup
};

// A process as the follow rule sees it.
struct CandidateFacts {
    pid_t pid = 0;
    pid_t ppid = 0;
    std::optional<ProcessUids> uids;
    std::optional<std::string> exe;
    std::optional<std::string> cgroup;
};

// Reads a candidate's facts (nullopt fields when unreadable).
CandidateFacts read_candidate(pid_t pid, pid_t ppid, const ProcessFacts& facts);
// The identity to pin; nullopt when any part cannot be read.
std::optional<ManagerIdentity> pin_identity(const CandidateFacts& facts);

// Why `candidate`, named by a pidfile judged `trust`, must not be watched; nullopt when it
// may. `pinned` is the identity kidreaper started with (none at the first manager);
// `old_manager` the manager being replaced (0 when none).
std::optional<std::string> refuse_manager(const PidfileTrust& trust,
                                          const CandidateFacts& candidate,
                                          const std::optional<ManagerIdentity>& pinned,
                                          pid_t old_manager);

}  // namespace kidreaper
