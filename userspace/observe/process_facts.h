// What kidreaper checks about a process before it trusts it: who runs it, which
// executable, which cgroup, what its command line and sockets are. Read from /proc under
// a root given by the caller (fake trees in tests); the parse_* functions are pure and
// take /proc's text as hostile input.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace kidreaper {

// The real and effective user of a process (/proc/PID/status "Uid:" line).
struct ProcessUids {
    uid_t real = 0;
    uid_t effective = 0;
};

// "Uid:\tREAL\tEFFECTIVE\tSAVED\tFS" anywhere in a status text; nullopt when absent or
// malformed.
std::optional<ProcessUids> parse_status_uids(std::string_view status_text);
// "socket:[12345]" (a /proc/PID/fd link) -> 12345; nullopt for anything else.
std::optional<std::uint64_t> parse_socket_link(std::string_view link);
// Inodes of the listening sockets in a /proc/net/tcp or tcp6 text (state 0A). Malformed
// lines are skipped.
std::set<std::uint64_t> parse_tcp_listeners(std::string_view text);
// Inodes of the listening sockets in a /proc/net/unix text (flag __SO_ACCEPTCON).
std::set<std::uint64_t> parse_unix_listeners(std::string_view text);
// An executable path as /proc/PID/exe reads, without the " (deleted)" the kernel appends
// once the file was replaced (a package upgrade leaves the running server so).
std::string executable_identity(std::string_view exe_link);

// Readers of one process's facts; each returns nullopt (or empty) when the process is
// gone or the file unreadable. Never throws.
class ProcessFacts {
public:
    explicit ProcessFacts(std::filesystem::path proc_root = "/proc");

    std::optional<ProcessUids> uids(pid_t pid) const;
    // The executable (executable_identity of /proc/PID/exe).
    std::optional<std::string> executable(pid_t pid) const;
    // /proc/PID/cgroup as text (every hierarchy's line).
    std::optional<std::string> cgroup(pid_t pid) const;
    // /proc/PID/comm without the newline.
    std::optional<std::string> comm(pid_t pid) const;
    // /proc/PID/cmdline with the NULs between arguments as spaces (the process title).
    std::optional<std::string> cmdline(pid_t pid) const;
    // Inodes of every socket the process has open (its /proc/PID/fd links); at most
    // kMaxFdsScanned descriptors are looked at.
    std::vector<std::uint64_t> socket_inodes(pid_t pid) const;
    // Inodes of the listening sockets among those the process holds, from its network
    // namespace's /proc/PID/net/{tcp,tcp6,unix}.
    std::set<std::uint64_t> listening_sockets(pid_t pid) const;

    static constexpr std::size_t kMaxFdsScanned = 65536;

private:
    std::optional<std::string> read(pid_t pid, const char* name) const;
    std::filesystem::path root_;
};

}  // namespace kidreaper
