// Readers for /proc. Every reader takes the proc root as a parameter, so tests run
// them against fake trees; the parse_* functions are pure.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kidreaper {

// Fields of /proc/PID/stat that kidreaper needs.
struct ProcStat {
    pid_t pid = 0;
    std::string comm;  // without the parentheses; may hold spaces and ')'
    char state = '?';  // R, S, D, Z, ...
    pid_t ppid = 0;
    std::uint64_t start_ticks = 0;  // field 22: start time in clock ticks since boot
    std::uint64_t utime_ticks = 0;  // field 14: user CPU time of all threads, clock ticks
    std::uint64_t stime_ticks = 0;  // field 15: system CPU time of all threads, clock ticks
};

// Memory lines of /proc/PID/status, in bytes (the kernel prints kB).
// A line the kernel did not print reads 0: kernel threads and zombies have no Vm*/Rss*
// lines at all (they map no memory, so 0 is the truth), and kernels before 4.5 have no
// RssAnon/RssFile/RssShmem; has_rss_breakdown tells that case from a real 0.
struct ProcStatus {
    std::uint64_t vm_size = 0;    // VmSize
    std::uint64_t vm_rss = 0;     // VmRSS
    std::uint64_t rss_anon = 0;   // RssAnon
    std::uint64_t rss_file = 0;   // RssFile
    std::uint64_t rss_shmem = 0;  // RssShmem
    std::uint64_t vm_swap = 0;    // VmSwap
    pid_t ppid = 0;               // PPid
    pid_t tgid = 0;               // Tgid
    // True when RssAnon was present (Linux >= 4.5); when false rss_anon, rss_file and
    // rss_shmem are unknown, not zero, and only vm_rss is meaningful.
    bool has_rss_breakdown = false;
};

// /proc/PID/smaps_rollup, in bytes: ground truth for shared vs private (walks page tables).
struct SmapsRollup {
    std::uint64_t rss = 0;
    std::uint64_t pss = 0;
    std::uint64_t shared_clean = 0;
    std::uint64_t shared_dirty = 0;
    std::uint64_t private_clean = 0;
    std::uint64_t private_dirty = 0;
    std::uint64_t anonymous = 0;
    std::uint64_t swap = 0;
    std::uint64_t private_bytes() const { return private_clean + private_dirty; }
    std::uint64_t shared_bytes() const { return shared_clean + shared_dirty; }
};

// Largest pid the kernel can hand out (PID_MAX_LIMIT on 64-bit; /proc/sys/kernel/pid_max
// can only be set lower).
inline constexpr pid_t kPidMaxLimit = 4194304;

// Pure parsers; std::nullopt when the text is not what the kernel writes. They never
// throw (std::from_chars; no allocation beyond ProcStat::comm).
// parse_stat: "PID (COMM) STATE PPID ..." with at least 22 fields; COMM is everything
// between the first " (" and the LAST ')', so it may hold spaces, '(' and ')'.
std::optional<ProcStat> parse_stat(std::string_view text);
// parse_status: needs the Tgid and PPid lines; the memory lines are optional (see
// ProcStatus). A known line with a malformed value makes the whole text invalid.
std::optional<ProcStatus> parse_status(std::string_view text);
// parse_schedstat: /proc/PID/schedstat's first field, the CPU time the task (its main
// thread) has run, in nanoseconds.
std::optional<std::uint64_t> parse_schedstat(std::string_view text);
// parse_smaps_rollup: needs an "Rss:" line; other missing lines read 0.
std::optional<SmapsRollup> parse_smaps_rollup(std::string_view text);

// Deepest pid-namespace nesting the kernel allows (MAX_PID_NS_LEVEL), plus the initial one.
inline constexpr std::size_t kMaxNsPids = 33;

// parse_status_nspid: the NSpid line of /proc/PID/status (Linux >= 4.1): the process's pid
// in each pid namespace it belongs to, outermost (the /proc mount's) first, its own last.
// std::nullopt when there is no NSpid line, more than one, or it is not 1 to kMaxNsPids
// pids greater than 0 separated by whitespace.
std::optional<std::vector<pid_t>> parse_status_nspid(std::string_view text);

// parse_ns_link: the target of a /proc/PID/ns/TYPE link, "TYPE:[INODE]", as its inode;
// std::nullopt for another type or anything else.
std::optional<std::uint64_t> parse_ns_link(std::string_view link, std::string_view type);

// The whole file at `path` if it is at most `limit` bytes; std::nullopt when it cannot be
// opened or read, or is larger. Never throws.
std::optional<std::string> read_bounded_file(const std::filesystem::path& path, std::size_t limit);

// /proc readers rooted at `root` (normally "/proc"). std::nullopt when the process is
// gone or the file unreadable, unparsable or larger than 1 MiB; never throws.
class ProcFs {
public:
    explicit ProcFs(std::filesystem::path root = "/proc");

    std::optional<ProcStat> stat(pid_t pid) const;
    std::optional<ProcStatus> status(pid_t pid) const;
    std::optional<SmapsRollup> smaps_rollup(pid_t pid) const;
    // CPU time of the main thread in nanoseconds (/proc/PID/schedstat; precise, where
    // stat's utime/stime count whole clock ticks of all threads).
    std::optional<std::uint64_t> schedstat_runtime_ns(pid_t pid) const;
    // The current syscall line of /proc/PID/syscall ("running", "-1 ..." or "NR args...").
    std::optional<std::string> syscall(pid_t pid) const;
    // The text of /proc/PID/maps (see parse_maps in cow_sites.h).
    std::optional<std::string> maps(pid_t pid) const { return read_file(pid, "maps"); }
    // Processes whose parent is `parent` (scans ROOT/[0-9]*/stat), sorted by pid.
    // Processes that vanish during the scan are skipped; an unreadable root gives {}.
    std::vector<pid_t> children_of(pid_t parent) const;
    // The text of /proc/PID/cgroup (see in_cgroup in manager_lookup.h).
    std::optional<std::string> cgroup(pid_t pid) const { return read_file(pid, "cgroup"); }
    // Every process of ROOT ([0-9]* entries), sorted; an unreadable root gives {}.
    std::vector<pid_t> pids() const;
    // The pid namespace of PID: the inode of ROOT/PID/ns/pid ("pid:[INODE]").
    std::optional<std::uint64_t> pid_namespace(pid_t pid) const;
    // PID's pids per pid namespace, outermost first (see parse_status_nspid).
    std::optional<std::vector<pid_t>> ns_pids(pid_t pid) const;
    // Boot-relative uptime in seconds (ROOT/uptime first field).
    std::optional<double> uptime_seconds() const;
    const std::filesystem::path& root() const { return root_; }

private:
    std::optional<std::string> read_file(pid_t pid, const char* name) const;
    std::filesystem::path root_;
};

// Reads a pidfile as a hostile input: opened with O_NOFOLLOW|O_NONBLOCK (a symlink as the
// last component or a fifo cannot trick us), it must be a regular file of at most 64
// bytes holding one decimal pid (ASCII whitespace around it allowed), at least `min_pid`
// (2: a host's pidfile never names init; 1 inside a container, whose manager may be its
// pid 1) and at most kPidMaxLimit. Throws UsageError ("pidfile PATH: REASON", one line)
// otherwise.
pid_t read_pidfile(const std::filesystem::path& path, pid_t min_pid = 2);

// The pure half of read_pidfile: checks a pidfile's content (at most 64 bytes, one decimal
// pid with optional ASCII whitespace around it, >= min_pid, <= kPidMaxLimit).
// `path_for_errors` only names the file in the UsageError it throws otherwise (made
// printable).
pid_t parse_pidfile_text(std::string_view text, const std::string& path_for_errors,
                         pid_t min_pid = 2);

// Validates a pid given on the command line the same way (only decimal digits, no
// whitespace or sign, > 1, <= kPidMaxLimit). Throws UsageError otherwise.
pid_t parse_pid(std::string_view text);

}  // namespace kidreaper
