#include "observe/process_facts.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <memory>

namespace kidreaper {
namespace {

constexpr std::size_t kMaxSmallFile = 1024 * 1024;
// /proc/net/tcp holds a line (about 150 bytes) per socket: room for ~200k connections.
constexpr std::size_t kMaxNetFile = 32 * 1024 * 1024;
constexpr std::uint64_t kUnixAcceptConnection = 0x10000;  // __SO_ACCEPTCON
constexpr std::string_view kTcpListen = "0A";             // TCP_LISTEN

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// The whitespace-separated fields of one line.
std::vector<std::string_view> fields_of(std::string_view line) {
    std::vector<std::string_view> fields;
    std::size_t at = 0;
    while (at < line.size()) {
        while (at < line.size() && is_space(line[at])) {
            ++at;
        }
        const std::size_t begin = at;
        while (at < line.size() && !is_space(line[at])) {
            ++at;
        }
        if (at > begin) {
            fields.push_back(line.substr(begin, at - begin));
        }
    }
    return fields;
}

// Calls fn(line) for every line of `text` but the first (the header).
template <typename Fn>
void for_each_row(std::string_view text, Fn&& fn) {
    std::size_t start = text.find('\n');
    while (start != std::string_view::npos && start + 1 < text.size()) {
        const std::size_t end = text.find('\n', start + 1);
        fn(text.substr(start + 1, (end == std::string_view::npos ? text.size() : end) - start - 1));
        start = end;
    }
}

template <typename T>
std::optional<T> parse_number(std::string_view text, int base = 10) {
    T value{};
    const char* const end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, value, base);
    if (text.empty() || ec != std::errc{} || ptr != end) {
        return std::nullopt;
    }
    return value;
}

// Owns a file descriptor.
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

private:
    int fd_;
};

// The whole file when it is at most `limit` bytes; nullopt otherwise.
std::optional<std::string> read_limited(const std::filesystem::path& path, std::size_t limit) {
    const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (fd.get() < 0) {
        return std::nullopt;
    }
    std::string data;
    std::array<char, 65536> buffer{};
    while (true) {
        const ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return std::nullopt;
        }
        if (n == 0) {
            return data;
        }
        if (data.size() + static_cast<std::size_t>(n) > limit) {
            return std::nullopt;
        }
        data.append(buffer.data(), static_cast<std::size_t>(n));
    }
}

std::optional<std::string> read_link(const std::filesystem::path& path) {
    std::array<char, 4096> buffer{};
    const ssize_t n = ::readlink(path.c_str(), buffer.data(), buffer.size());
    if (n < 0 || static_cast<std::size_t>(n) >= buffer.size()) {
        return std::nullopt;
    }
    return std::string(buffer.data(), static_cast<std::size_t>(n));
}

}  // namespace

std::optional<ProcessUids> parse_status_uids(std::string_view status_text) {
    std::size_t at = 0;
    while (at < status_text.size()) {
        const std::size_t end = std::min(status_text.find('\n', at), status_text.size());
        const std::string_view line = status_text.substr(at, end - at);
        at = end + 1;
        if (!line.starts_with("Uid:")) {
            continue;
        }
        const auto fields = fields_of(line.substr(4));
        if (fields.size() != 4) {
            return std::nullopt;
        }
        const auto real = parse_number<uid_t>(fields[0]);
        const auto effective = parse_number<uid_t>(fields[1]);
        if (!real || !effective || !parse_number<uid_t>(fields[2]) ||
            !parse_number<uid_t>(fields[3])) {
            return std::nullopt;
        }
        return ProcessUids{*real, *effective};
    }
    return std::nullopt;
}

std::optional<std::uint64_t> parse_socket_link(std::string_view link) {
    constexpr std::string_view prefix = "socket:[";
    if (!link.starts_with(prefix) || !link.ends_with(']')) {
        return std::nullopt;
    }
    return parse_number<std::uint64_t>(link.substr(prefix.size(), link.size() - prefix.size() - 1));
}

std::set<std::uint64_t> parse_tcp_listeners(std::string_view text) {
    // "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid
    //  timeout inode": the state is field 3, the inode field 9.
    std::set<std::uint64_t> listeners;
    for_each_row(text, [&](std::string_view line) {
        const auto fields = fields_of(line);
        if (fields.size() < 10 || !fields[0].ends_with(':') || fields[3] != kTcpListen) {
            return;
        }
        if (const auto inode = parse_number<std::uint64_t>(fields[9]); inode && *inode != 0) {
            listeners.insert(*inode);
        }
    });
    return listeners;
}

std::set<std::uint64_t> parse_unix_listeners(std::string_view text) {
    // "Num       RefCount Protocol Flags    Type St Inode Path": flags field 3 (hex),
    // inode field 6.
    std::set<std::uint64_t> listeners;
    for_each_row(text, [&](std::string_view line) {
        const auto fields = fields_of(line);
        if (fields.size() < 7 || !fields[0].ends_with(':')) {
            return;
        }
        const auto flags = parse_number<std::uint64_t>(fields[3], 16);
        const auto inode = parse_number<std::uint64_t>(fields[6]);
        if (flags && (*flags & kUnixAcceptConnection) != 0 && inode && *inode != 0) {
            listeners.insert(*inode);
        }
    });
    return listeners;
}

std::string executable_identity(std::string_view exe_link) {
    constexpr std::string_view deleted = " (deleted)";
    if (exe_link.ends_with(deleted)) {
        exe_link.remove_suffix(deleted.size());
    }
    return std::string(exe_link);
}

ProcessFacts::ProcessFacts(std::filesystem::path proc_root) : root_(std::move(proc_root)) {}

std::optional<std::string> ProcessFacts::read(pid_t pid, const char* name) const {
    return read_limited(root_ / std::to_string(pid) / name, kMaxSmallFile);
}

std::optional<ProcessUids> ProcessFacts::uids(pid_t pid) const {
    const auto text = read(pid, "status");
    return text ? parse_status_uids(*text) : std::nullopt;
}

std::optional<std::string> ProcessFacts::executable(pid_t pid) const {
    const auto link = read_link(root_ / std::to_string(pid) / "exe");
    if (!link || link->empty()) {
        return std::nullopt;
    }
    return executable_identity(*link);
}

std::optional<std::string> ProcessFacts::cgroup(pid_t pid) const {
    return read(pid, "cgroup");
}

std::optional<std::string> ProcessFacts::comm(pid_t pid) const {
    auto text = read(pid, "comm");
    if (text && !text->empty() && text->back() == '\n') {
        text->pop_back();
    }
    return text;
}

std::optional<std::string> ProcessFacts::cmdline(pid_t pid) const {
    auto text = read(pid, "cmdline");
    if (!text) {
        return std::nullopt;
    }
    while (!text->empty() && text->back() == '\0') {
        text->pop_back();
    }
    std::replace(text->begin(), text->end(), '\0', ' ');
    return text;
}

std::vector<std::uint64_t> ProcessFacts::socket_inodes(pid_t pid) const {
    std::vector<std::uint64_t> inodes;
    const std::filesystem::path fd_dir = root_ / std::to_string(pid) / "fd";
    const std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(fd_dir.c_str()), ::closedir);
    if (!dir) {
        return inodes;
    }
    std::size_t scanned = 0;
    while (const dirent* entry = ::readdir(dir.get())) {
        if (entry->d_name[0] == '.' || ++scanned > kMaxFdsScanned) {
            continue;
        }
        if (const auto link = read_link(fd_dir / entry->d_name)) {
            if (const auto inode = parse_socket_link(*link)) {
                inodes.push_back(*inode);
            }
        }
    }
    std::sort(inodes.begin(), inodes.end());
    inodes.erase(std::unique(inodes.begin(), inodes.end()), inodes.end());
    return inodes;
}

std::set<std::uint64_t> ProcessFacts::listening_sockets(pid_t pid) const {
    std::set<std::uint64_t> listening;
    const std::filesystem::path net = root_ / std::to_string(pid) / "net";
    for (const char* name : {"tcp", "tcp6"}) {
        if (const auto text = read_limited(net / name, kMaxNetFile)) {
            listening.merge(parse_tcp_listeners(*text));
        }
    }
    if (const auto text = read_limited(net / "unix", kMaxNetFile)) {
        listening.merge(parse_unix_listeners(*text));
    }
    std::set<std::uint64_t> held;
    for (const std::uint64_t inode : socket_inodes(pid)) {
        if (listening.count(inode) != 0) {
            held.insert(inode);
        }
    }
    return held;
}

}  // namespace kidreaper
