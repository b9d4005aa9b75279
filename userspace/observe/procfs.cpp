#include "observe/procfs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <system_error>
#include <utility>

#include "common/error.h"

namespace kidreaper {
namespace {

constexpr std::size_t kMaxProcFile = 1024 * 1024;  // no /proc file we read comes close
constexpr std::size_t kMaxPidfile = 64;

// Owns a file descriptor; closes it on destruction.
class UniqueFd {
public:
    explicit UniqueFd(int fd) : fd_(fd) {}
    ~UniqueFd() {
        if (fd_ >= 0) {
            ::close(fd_);
        }
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }

private:
    int fd_;
};

int open_retrying(const char* path, int flags) {
    int fd = -1;
    do {
        fd = ::open(path, flags);
    } while (fd < 0 && errno == EINTR);
    return fd;
}

struct ReadResult {
    std::string data;
    int error = 0;           // errno of a failed read()
    bool too_large = false;  // more than `limit` bytes were available
};

// Reads until end of file, but never more than limit + 1 bytes.
ReadResult read_at_most(int fd, std::size_t limit) {
    ReadResult result;
    const std::size_t chunk = std::min<std::size_t>(limit + 1, 4096);
    while (true) {
        const std::size_t old_size = result.data.size();
        if (old_size > limit) {
            result.too_large = true;
            return result;
        }
        const std::size_t want = std::min(chunk, limit + 1 - old_size);
        result.data.resize(old_size + want);
        const ssize_t n = ::read(fd, result.data.data() + old_size, want);
        if (n < 0) {
            result.data.resize(old_size);
            if (errno == EINTR) {
                continue;
            }
            result.error = errno;
            return result;
        }
        result.data.resize(old_size + static_cast<std::size_t>(n));
        if (n == 0) {
            return result;
        }
    }
}

// The whole file, or nullopt on any failure (including a file larger than kMaxProcFile).
std::optional<std::string> read_small_file(const std::filesystem::path& path) {
    return read_bounded_file(path, kMaxProcFile);
}

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

std::string_view trim(std::string_view text) {
    while (!text.empty() && is_space(text.front())) {
        text.remove_prefix(1);
    }
    while (!text.empty() && is_space(text.back())) {
        text.remove_suffix(1);
    }
    return text;
}

// Next whitespace-separated token of `rest` (empty when none is left); advances `rest`.
std::string_view next_token(std::string_view& rest) {
    std::size_t begin = 0;
    while (begin < rest.size() && is_space(rest[begin])) {
        ++begin;
    }
    std::size_t end = begin;
    while (end < rest.size() && !is_space(rest[end])) {
        ++end;
    }
    const std::string_view token = rest.substr(begin, end - begin);
    rest.remove_prefix(end);
    return token;
}

// The whole of `text` as a number (no sign for unsigned types, no spaces, no rest).
template <typename T>
std::optional<T> parse_number(std::string_view text) {
    T value{};
    const char* const end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (text.empty() || ec != std::errc{} || ptr != end) {
        return std::nullopt;
    }
    return value;
}

// "  123 kB" (the unit is optional) in bytes.
std::optional<std::uint64_t> parse_kb(std::string_view value) {
    std::string_view rest = value;
    const std::optional<std::uint64_t> kb = parse_number<std::uint64_t>(next_token(rest));
    const std::string_view unit = next_token(rest);
    if (!kb || !(unit.empty() || unit == "kB") || !next_token(rest).empty()) {
        return std::nullopt;
    }
    if (*kb > UINT64_MAX / 1024) {
        return std::nullopt;
    }
    return *kb * 1024;
}

// Calls fn(key, value) for each "Key: value" line of `text`; stops early and returns
// false as soon as fn returns false.
template <typename Fn>
bool for_each_key_line(std::string_view text, Fn&& fn) {
    while (!text.empty()) {
        const std::size_t newline = text.find('\n');
        const std::string_view line = text.substr(0, newline);
        text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
        const std::size_t colon = line.find(':');
        if (colon == std::string_view::npos) {
            continue;
        }
        if (!fn(line.substr(0, colon), line.substr(colon + 1))) {
            return false;
        }
    }
    return true;
}

std::string quoted(std::string_view text) {
    return "\"" + printable(text, 64) + "\"";
}

enum class PidProblem { none, malformed, too_small, too_large };

struct PidCheck {
    pid_t pid = 0;
    PidProblem problem = PidProblem::malformed;
};

// `min_pid` is 1 or more.
PidCheck check_pid(std::string_view text, pid_t min_pid = 2) {
    PidCheck check;
    if (text.empty() ||
        !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return check;
    }
    std::uint64_t value = 0;
    const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc::result_out_of_range ||
        (ec == std::errc{} && value > static_cast<std::uint64_t>(kPidMaxLimit))) {
        check.problem = PidProblem::too_large;
        return check;
    }
    if (ec != std::errc{} || ptr != text.data() + text.size()) {
        return check;
    }
    if (value < static_cast<std::uint64_t>(std::max<pid_t>(min_pid, 1))) {
        check.problem = PidProblem::too_small;
        return check;
    }
    check.pid = static_cast<pid_t>(value);
    check.problem = PidProblem::none;
    return check;
}

}  // namespace

std::optional<ProcStat> parse_stat(std::string_view text) {
    // "PID (COMM) STATE PPID PGRP SESSION TTY TPGID FLAGS MINFLT CMINFLT MAJFLT CMAJFLT
    //  UTIME STIME CUTIME CSTIME PRIORITY NICE THREADS ITREAL STARTTIME ..."
    const std::size_t open = text.find(" (");
    const std::size_t close = text.rfind(')');
    if (open == std::string_view::npos || close == std::string_view::npos || close < open + 2) {
        return std::nullopt;
    }
    ProcStat stat;
    const std::optional<pid_t> pid = parse_number<pid_t>(text.substr(0, open));
    if (!pid || *pid <= 0) {
        return std::nullopt;
    }
    stat.pid = *pid;
    stat.comm = std::string(text.substr(open + 2, close - (open + 2)));
    std::string_view rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ' ') {
        return std::nullopt;
    }
    constexpr int kFirstField = 3;  // STATE, the first field after COMM
    constexpr int kPpidField = 4;
    constexpr int kUtimeField = 14;
    constexpr int kStimeField = 15;
    constexpr int kStartField = 22;
    for (int field = kFirstField; field <= kStartField; ++field) {
        const std::string_view token = next_token(rest);
        if (token.empty()) {
            return std::nullopt;  // truncated
        }
        if (field == kFirstField) {
            // One letter (R, S, D, Z, T, t, X, I, ...); anything else is not the kernel's.
            const char state = token.front();
            if (token.size() != 1 ||
                !((state >= 'A' && state <= 'Z') || (state >= 'a' && state <= 'z'))) {
                return std::nullopt;
            }
            stat.state = state;
        } else if (field == kPpidField) {
            const std::optional<pid_t> ppid = parse_number<pid_t>(token);
            if (!ppid || *ppid < 0) {
                return std::nullopt;
            }
            stat.ppid = *ppid;
        } else if (field == kUtimeField || field == kStimeField || field == kStartField) {
            const std::optional<std::uint64_t> ticks = parse_number<std::uint64_t>(token);
            if (!ticks) {
                return std::nullopt;
            }
            (field == kUtimeField   ? stat.utime_ticks
             : field == kStimeField ? stat.stime_ticks
                                    : stat.start_ticks) = *ticks;
        }
    }
    return stat;
}

std::optional<std::vector<pid_t>> parse_status_nspid(std::string_view text) {
    std::optional<std::vector<pid_t>> found;
    bool duplicate = false;
    bool malformed = false;
    for_each_key_line(text, [&](std::string_view key, std::string_view value) {
        if (key != "NSpid") {
            return true;
        }
        if (found) {
            duplicate = true;
            return false;
        }
        std::vector<pid_t> pids;
        std::string_view rest = value;
        for (std::string_view token = next_token(rest); !token.empty(); token = next_token(rest)) {
            const std::optional<pid_t> pid = parse_number<pid_t>(token);
            if (!pid || *pid <= 0 || pids.size() == kMaxNsPids) {
                malformed = true;
                return false;
            }
            pids.push_back(*pid);
        }
        if (pids.empty()) {
            malformed = true;
            return false;
        }
        found = std::move(pids);
        return true;
    });
    if (duplicate || malformed) {
        return std::nullopt;
    }
    return found;
}

std::optional<std::uint64_t> parse_ns_link(std::string_view link, std::string_view type) {
    // "pid:[4026531836]"
    if (link.size() < type.size() + 4 || link.substr(0, type.size()) != type ||
        link.substr(type.size(), 2) != ":[" || link.back() != ']') {
        return std::nullopt;
    }
    const std::string_view digits = link.substr(type.size() + 2, link.size() - type.size() - 3);
    if (digits.empty() || digits.front() == '+' || digits.front() == '-') {
        return std::nullopt;
    }
    const std::optional<std::uint64_t> inode = parse_number<std::uint64_t>(digits);
    if (!inode || *inode == 0) {
        return std::nullopt;
    }
    return inode;
}

std::optional<std::string> read_bounded_file(const std::filesystem::path& path, std::size_t limit) {
    const UniqueFd fd(open_retrying(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
        return std::nullopt;
    }
    ReadResult result = read_at_most(fd.get(), limit);
    if (result.error != 0 || result.too_large) {
        return std::nullopt;
    }
    return std::move(result.data);
}

std::optional<std::uint64_t> parse_schedstat(std::string_view text) {
    // "RUNTIME_NS WAIT_NS TIMESLICES\n"
    return parse_number<std::uint64_t>(next_token(text));
}

std::optional<ProcStatus> parse_status(std::string_view text) {
    ProcStatus status;
    bool have_tgid = false;
    bool have_ppid = false;
    const bool ok = for_each_key_line(text, [&](std::string_view key, std::string_view value) {
        struct KbField {
            std::string_view key;
            std::uint64_t ProcStatus::*member;
        };
        static constexpr KbField kKbFields[] = {
            {"VmSize", &ProcStatus::vm_size},     {"VmRSS", &ProcStatus::vm_rss},
            {"RssAnon", &ProcStatus::rss_anon},   {"RssFile", &ProcStatus::rss_file},
            {"RssShmem", &ProcStatus::rss_shmem}, {"VmSwap", &ProcStatus::vm_swap},
        };
        for (const KbField& field : kKbFields) {
            if (key == field.key) {
                const std::optional<std::uint64_t> bytes = parse_kb(value);
                if (!bytes) {
                    return false;
                }
                status.*field.member = *bytes;
                if (key == "RssAnon") {
                    status.has_rss_breakdown = true;
                }
                return true;
            }
        }
        if (key == "Tgid" || key == "PPid") {
            const std::optional<pid_t> pid = parse_number<pid_t>(trim(value));
            if (!pid || *pid < 0) {
                return false;
            }
            if (key == "Tgid") {
                status.tgid = *pid;
                have_tgid = true;
            } else {
                status.ppid = *pid;
                have_ppid = true;
            }
        }
        return true;
    });
    if (!ok || !have_tgid || !have_ppid) {
        return std::nullopt;
    }
    return status;
}

std::optional<SmapsRollup> parse_smaps_rollup(std::string_view text) {
    SmapsRollup rollup;
    bool have_rss = false;
    const bool ok = for_each_key_line(text, [&](std::string_view key, std::string_view value) {
        struct KbField {
            std::string_view key;
            std::uint64_t SmapsRollup::*member;
        };
        static constexpr KbField kKbFields[] = {
            {"Rss", &SmapsRollup::rss},
            {"Pss", &SmapsRollup::pss},
            {"Shared_Clean", &SmapsRollup::shared_clean},
            {"Shared_Dirty", &SmapsRollup::shared_dirty},
            {"Private_Clean", &SmapsRollup::private_clean},
            {"Private_Dirty", &SmapsRollup::private_dirty},
            {"Anonymous", &SmapsRollup::anonymous},
            {"Swap", &SmapsRollup::swap},
        };
        for (const KbField& field : kKbFields) {
            if (key == field.key) {
                const std::optional<std::uint64_t> bytes = parse_kb(value);
                if (!bytes) {
                    return false;
                }
                rollup.*field.member = *bytes;
                have_rss = have_rss || key == "Rss";
                return true;
            }
        }
        return true;
    });
    if (!ok || !have_rss) {
        return std::nullopt;
    }
    return rollup;
}

ProcFs::ProcFs(std::filesystem::path root) : root_(std::move(root)) {}

std::optional<std::string> ProcFs::read_file(pid_t pid, const char* name) const {
    if (pid <= 0) {
        return std::nullopt;  // never read ROOT/0 or ROOT/-1
    }
    return read_small_file(root_ / std::to_string(pid) / name);
}

std::optional<ProcStat> ProcFs::stat(pid_t pid) const {
    const std::optional<std::string> text = read_file(pid, "stat");
    return text ? parse_stat(*text) : std::nullopt;
}

std::optional<ProcStatus> ProcFs::status(pid_t pid) const {
    const std::optional<std::string> text = read_file(pid, "status");
    return text ? parse_status(*text) : std::nullopt;
}

std::optional<SmapsRollup> ProcFs::smaps_rollup(pid_t pid) const {
    const std::optional<std::string> text = read_file(pid, "smaps_rollup");
    return text ? parse_smaps_rollup(*text) : std::nullopt;
}

std::optional<std::uint64_t> ProcFs::schedstat_runtime_ns(pid_t pid) const {
    const std::optional<std::string> text = read_file(pid, "schedstat");
    return text ? parse_schedstat(*text) : std::nullopt;
}

std::optional<std::string> ProcFs::syscall(pid_t pid) const {
    const std::optional<std::string> text = read_file(pid, "syscall");
    if (!text) {
        return std::nullopt;
    }
    const std::string_view line = trim(std::string_view(*text).substr(0, text->find('\n')));
    if (line.empty()) {
        return std::nullopt;
    }
    return std::string(line);
}

std::vector<pid_t> ProcFs::children_of(pid_t parent) const {
    std::vector<pid_t> children;
    std::error_code ec;
    for (std::filesystem::directory_iterator it(root_, ec), end; !ec && it != end;
         it.increment(ec)) {
        const std::string name = it->path().filename().string();
        const std::optional<pid_t> pid = parse_number<pid_t>(name);
        if (!pid || *pid <= 0) {
            continue;  // "self", "sys", "1a", ...
        }
        const std::optional<ProcStat> st = stat(*pid);
        if (st && st->ppid == parent) {
            children.push_back(*pid);
        }
    }
    std::sort(children.begin(), children.end());
    return children;
}

std::vector<pid_t> ProcFs::pids() const {
    std::vector<pid_t> all;
    std::error_code ec;
    for (std::filesystem::directory_iterator it(root_, ec), end; !ec && it != end;
         it.increment(ec)) {
        const std::optional<pid_t> pid = parse_number<pid_t>(it->path().filename().string());
        if (pid && *pid > 0) {
            all.push_back(*pid);
        }
    }
    std::sort(all.begin(), all.end());
    return all;
}

std::optional<std::uint64_t> ProcFs::pid_namespace(pid_t pid) const {
    if (pid <= 0) {
        return std::nullopt;
    }
    const std::filesystem::path link = root_ / std::to_string(pid) / "ns" / "pid";
    char target[64];
    const ssize_t n = ::readlink(link.c_str(), target, sizeof target);
    if (n <= 0 || static_cast<std::size_t>(n) >= sizeof target) {
        return std::nullopt;  // gone, unreadable, or longer than any "pid:[INODE]"
    }
    return parse_ns_link(std::string_view(target, static_cast<std::size_t>(n)), "pid");
}

std::optional<std::vector<pid_t>> ProcFs::ns_pids(pid_t pid) const {
    const std::optional<std::string> text = read_file(pid, "status");
    return text ? parse_status_nspid(*text) : std::nullopt;
}

std::optional<double> ProcFs::uptime_seconds() const {
    const std::optional<std::string> text = read_small_file(root_ / "uptime");
    if (!text) {
        return std::nullopt;
    }
    std::string_view rest = *text;
    const std::optional<double> seconds = parse_number<double>(next_token(rest));
    if (!seconds || !std::isfinite(*seconds) || *seconds < 0) {
        return std::nullopt;
    }
    return seconds;
}

pid_t parse_pidfile_text(std::string_view text, const std::string& path_for_errors, pid_t min_pid) {
    const std::string prefix = "pidfile " + printable(path_for_errors) + ": ";
    if (text.size() > kMaxPidfile) {
        throw UsageError(prefix + "larger than " + std::to_string(kMaxPidfile) +
                         " bytes, not a pidfile");
    }
    const std::string_view content = trim(text);
    if (content.empty()) {
        throw UsageError(prefix + "empty, expected a process id");
    }
    const PidCheck check = check_pid(content, min_pid);
    switch (check.problem) {
        case PidProblem::none:
            return check.pid;
        case PidProblem::malformed:
            throw UsageError(prefix + "expected one decimal process id, found " + quoted(content));
        case PidProblem::too_small:
            throw UsageError(prefix + "process id " + quoted(content) +
                             " is not valid (must be greater than " +
                             std::to_string(std::max<pid_t>(min_pid, 1) - 1) + ")");
        case PidProblem::too_large:
            throw UsageError(prefix + "process id " + quoted(content) +
                             " is larger than the kernel limit " + std::to_string(kPidMaxLimit));
    }
    throw UsageError(prefix + "unreadable");  // unreachable: the switch covers every value
}

pid_t read_pidfile(const std::filesystem::path& path, pid_t min_pid) {
    const std::string what = "pidfile " + printable(path.string());
    const std::string prefix = what + ": ";
    const UniqueFd fd(open_retrying(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
    if (!fd.valid()) {
        const int err = errno;
        switch (err) {
            case ELOOP:
                throw UsageError(prefix + "is a symbolic link (not followed; give the target)");
            case ENOENT:
                throw UsageError(prefix + "does not exist");
            case ENXIO:  // a socket, or a device without a driver
                throw UsageError(prefix + "not a regular file");
            default:
                throw UsageError(errno_message(what, err));
        }
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        throw UsageError(errno_message(what, errno));
    }
    if (!S_ISREG(st.st_mode)) {
        throw UsageError(prefix + "not a regular file");
    }
    if (st.st_size > static_cast<off_t>(kMaxPidfile)) {
        throw UsageError(prefix + "larger than " + std::to_string(kMaxPidfile) +
                         " bytes, not a pidfile");
    }
    // The file may grow between fstat() and read(): the read is bounded as well.
    const ReadResult result = read_at_most(fd.get(), kMaxPidfile);
    if (result.error != 0) {
        throw UsageError(errno_message(what, result.error));
    }
    if (result.too_large) {
        throw UsageError(prefix + "larger than " + std::to_string(kMaxPidfile) +
                         " bytes, not a pidfile");
    }
    return parse_pidfile_text(result.data, path.string(), min_pid);
}

pid_t parse_pid(std::string_view text) {
    const PidCheck check = check_pid(text);
    switch (check.problem) {
        case PidProblem::none:
            return check.pid;
        case PidProblem::too_large:
            throw UsageError("invalid pid " + quoted(text) + ": larger than the kernel limit " +
                             std::to_string(kPidMaxLimit));
        case PidProblem::malformed:
        case PidProblem::too_small:
            break;
    }
    throw UsageError("invalid pid " + quoted(text) +
                     ": expected a decimal process id greater than 1");
}

}  // namespace kidreaper
