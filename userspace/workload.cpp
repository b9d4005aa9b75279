#include "workload.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <thread>
#include <utility>

#include "error.h"
#include "units.h"

namespace kidreaper {

namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t kStep = 1ULL << 20;  // work is done in 1 MiB steps

// Anonymous memory, mapped at construction, unmapped at destruction.
class Mapping {
public:
    explicit Mapping(std::uint64_t bytes) : bytes_(bytes) {
        if (bytes_ == 0) {
            return;
        }
        void* address =
            mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (address == MAP_FAILED) {
            throw Error(errno_message("mmap", errno));
        }
        // 4 KiB pages keep the counts exact whatever the THP setting.
        madvise(address, bytes_, MADV_NOHUGEPAGE);
        data_ = static_cast<unsigned char*>(address);
    }
    ~Mapping() {
        if (data_ != nullptr) {
            munmap(data_, bytes_);
        }
    }
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    Mapping(Mapping&& other) noexcept
        : bytes_(std::exchange(other.bytes_, 0)), data_(std::exchange(other.data_, nullptr)) {}

    unsigned char* data() const { return data_; }
    std::uint64_t size() const { return bytes_; }

private:
    std::uint64_t bytes_ = 0;
    unsigned char* data_ = nullptr;
};

void write_all(int fd, const std::string& text) {
    std::size_t written = 0;
    while (written < text.size()) {
        ssize_t n = write(fd, text.data() + written, text.size() - written);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return;
        }
        written += static_cast<std::size_t>(n);
    }
}

// Blocks until a command byte arrives; 'x' on end of input. Waits in poll(), as a
// server's idle worker does, so that kidreaper's idle detection sees it idle.
char read_command(int fd) {
    char command = 'x';
    while (true) {
        pollfd ready{fd, POLLIN, 0};
        if (poll(&ready, 1, -1) < 0 && errno == EINTR) {
            continue;
        }
        ssize_t n = read(fd, &command, 1);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        return n == 1 ? command : 'x';
    }
}

// One plain store per page. Not a read-modify-write: under emulation (qemu TCG) that
// faults twice, a read then a write on a present page, and would pass for COW.
void touch_pages(unsigned char* begin, std::uint64_t bytes) {
    for (std::uint64_t offset = 0; offset < bytes; offset += kPage) {
        begin[offset] = static_cast<unsigned char>(offset / kPage + 1);
    }
}

// The child's life after fork: wait for 'g', run the script, report, wait for 'x'.
[[noreturn]] void child_main(const ChildScript& script, const Mapping& inherited, int command_fd,
                             int done_fd, bool start_at_once, int ignored_signal) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (ignored_signal != 0) {
        signal(ignored_signal, SIG_IGN);
    }
    const std::string title = ("kr-" + script.name).substr(0, 15);
    prctl(PR_SET_NAME, title.c_str());
    if (!start_at_once && read_command(command_fd) != 'g') {
        _exit(0);
    }
    const std::uint64_t cow = std::min(script.cow_bytes, inherited.size());
    const std::uint64_t steps =
        std::max<std::uint64_t>(1, (std::max(cow, script.leak_bytes) + kStep - 1) / kStep);
    const auto pause = script.spread / static_cast<long>(steps);
    std::vector<Mapping> leaked;
    std::uint64_t cow_done = 0;
    std::uint64_t leak_done = 0;
    for (std::uint64_t step = 0; step < steps; ++step) {
        const std::uint64_t cow_now = std::min(kStep, cow - cow_done);
        touch_pages(inherited.data() + cow_done, cow_now);
        cow_done += cow_now;
        const std::uint64_t leak_now = std::min(kStep, script.leak_bytes - leak_done);
        if (leak_now > 0) {
            leaked.emplace_back(leak_now);
            touch_pages(leaked.back().data(), leak_now);
            leak_done += leak_now;
        }
        if (pause.count() > 0) {
            std::this_thread::sleep_for(pause);
        }
    }
    write_all(done_fd, std::to_string(getpid()) + "\n");
    while (read_command(command_fd) != 'x') {
    }
    _exit(0);
}

struct RunningChild {
    pid_t pid = 0;
    const ChildScript* script = nullptr;
    int command_fd = -1;  // manager's end of the child's command pipe
};

class Manager {
public:
    Manager(const WorkloadSpec& spec, int out_fd)
        : spec_(spec), out_fd_(out_fd), preload_(spec.preload_bytes) {
        if (preload_.size() > 0) {
            std::memset(preload_.data(), 0x5a, preload_.size());
        }
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) != 0) {
            throw Error(errno_message("pipe", errno));
        }
        done_read_ = fds[0];
        done_write_ = fds[1];
    }
    ~Manager() {
        for (auto& child : children_) {
            stop(child);
        }
        close(done_read_);
        close(done_write_);
    }
    Manager(const Manager&) = delete;
    Manager& operator=(const Manager&) = delete;

    void fork_child(const ChildScript& script) {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) != 0) {
            throw Error(errno_message("pipe", errno));
        }
        pid_t pid = fork();
        if (pid < 0) {
            throw Error(errno_message("fork", errno));
        }
        if (pid == 0) {
            close(fds[1]);
            child_main(script, preload_, fds[0], done_write_, spec_.start_at_once || script.late,
                       spec_.children_ignore);
        }
        close(fds[0]);
        children_.push_back({pid, &script, fds[1]});
        say("child " + std::to_string(pid) + " " + script.name);
    }

    void go() {
        for (auto& child : children_) {
            write_all(child.command_fd, "g");
        }
        for (const auto& script : spec_.children) {
            if (script.late) {
                fork_child(script);
            }
        }
        say("started");
    }

    void exit_child(const std::string& name) {
        for (auto it = children_.begin(); it != children_.end(); ++it) {
            if (it->script->name == name) {
                stop(*it);
                say("exited " + std::to_string(it->pid) + " " + name);
                children_.erase(it);
                return;
            }
        }
        say("error no child " + name);
    }

    void report_done() {
        char buffer[256];
        ssize_t n = read(done_read_, buffer, sizeof(buffer) - 1);
        if (n <= 0) {
            return;
        }
        pending_ += std::string(buffer, static_cast<std::size_t>(n));
        std::size_t newline;
        while ((newline = pending_.find('\n')) != std::string::npos) {
            const pid_t pid = std::stoi(pending_.substr(0, newline));
            pending_.erase(0, newline + 1);
            for (const auto& child : children_) {
                if (child.pid == pid) {
                    say("done " + std::to_string(pid) + " " + child.script->name);
                }
            }
        }
    }

    // Reaps children that exited unasked (e.g. signalled by kidreaper); with respawn,
    // forks an idle replacement for each, as a pre-fork manager does.
    void reap_exited() {
        int status = 0;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            auto it = std::find_if(children_.begin(), children_.end(),
                                   [pid](const auto& child) { return child.pid == pid; });
            if (it == children_.end()) {
                continue;
            }
            const std::string name = it->script->name;
            close(it->command_fd);
            children_.erase(it);
            say("exited " + std::to_string(pid) + " " + name);
            if (spec_.respawn) {
                fork_child(respawn_script_);
                say("respawned " + std::to_string(pid) + " " +
                    std::to_string(children_.back().pid));
            }
        }
    }

    void say(const std::string& line) { write_all(out_fd_, line + "\n"); }
    int done_fd() const { return done_read_; }

private:
    static void stop(RunningChild& child) {
        if (child.command_fd >= 0) {
            write_all(child.command_fd, "x");
            close(child.command_fd);
            child.command_fd = -1;
        }
        while (waitpid(child.pid, nullptr, 0) < 0 && errno == EINTR) {
        }
    }

    const WorkloadSpec& spec_;
    const ChildScript respawn_script_{"respawned", 0, 0, std::chrono::milliseconds(0), true};
    int out_fd_;
    Mapping preload_;
    int done_read_ = -1;
    int done_write_ = -1;
    std::vector<RunningChild> children_;
    std::string pending_;
};

std::optional<std::string> read_line(int fd, std::string& buffer) {
    while (true) {
        if (auto newline = buffer.find('\n'); newline != std::string::npos) {
            std::string line = buffer.substr(0, newline);
            buffer.erase(0, newline + 1);
            return line;
        }
        char chunk[256];
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return std::nullopt;
        }
        buffer.append(chunk, static_cast<std::size_t>(n));
        if (buffer.find('\n') == std::string::npos) {
            return std::string();  // partial line: let the caller poll again
        }
    }
}

}  // namespace

ChildScript parse_child_script(std::string_view text) {
    const std::string original(text);
    auto fail = [&original]() -> UsageError {
        return UsageError(
            "invalid child script \"" + original +
            "\": expected [NAME=][late:](idle|cow:SIZE|leak:SIZE|mixed:SIZE:SIZE)[@DURATION]");
    };
    ChildScript script;
    std::string explicit_name;
    if (auto equals = text.find('='); equals != std::string_view::npos) {
        explicit_name = std::string(text.substr(0, equals));
        text.remove_prefix(equals + 1);
        if (explicit_name.empty()) {
            throw fail();
        }
    }
    if (text.starts_with("late:")) {
        script.late = true;
        text.remove_prefix(5);
    }
    if (auto at = text.find('@'); at != std::string_view::npos) {
        script.spread = parse_duration(text.substr(at + 1));
        text = text.substr(0, at);
    }
    std::vector<std::string_view> parts;
    while (true) {
        auto colon = text.find(':');
        parts.push_back(text.substr(0, colon));
        if (colon == std::string_view::npos) {
            break;
        }
        text.remove_prefix(colon + 1);
    }
    script.name = explicit_name.empty() ? (script.late ? "late-" : "") + std::string(parts[0])
                                        : explicit_name;
    if (parts[0] == "idle" && parts.size() == 1) {
        return script;
    }
    if (parts[0] == "cow" && parts.size() == 2) {
        script.cow_bytes = parse_size(parts[1]);
        return script;
    }
    if (parts[0] == "leak" && parts.size() == 2) {
        script.leak_bytes = parse_size(parts[1]);
        return script;
    }
    if (parts[0] == "mixed" && parts.size() == 3) {
        script.cow_bytes = parse_size(parts[1]);
        script.leak_bytes = parse_size(parts[2]);
        return script;
    }
    throw fail();
}

int run_workload_manager(const WorkloadSpec& spec, int in_fd, int out_fd) {
    Manager manager(spec, out_fd);
    manager.say("manager " + std::to_string(getpid()));
    for (const auto& script : spec.children) {
        if (!script.late) {
            manager.fork_child(script);
        }
    }
    manager.say("ready");
    if (spec.start_at_once) {
        manager.go();
    }
    std::string buffer;
    while (true) {
        pollfd fds[2] = {{in_fd, POLLIN, 0}, {manager.done_fd(), POLLIN, 0}};
        if (poll(fds, 2, 100) < 0) {
            if (errno == EINTR) {
                continue;
            }
            return 1;
        }
        manager.reap_exited();
        if (fds[1].revents & POLLIN) {
            manager.report_done();
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            auto line = read_line(in_fd, buffer);
            if (!line || *line == "quit") {
                break;
            }
            if (*line == "go") {
                manager.go();
            } else if (line->starts_with("exit ")) {
                manager.exit_child(line->substr(5));
            }
        }
    }
    manager.say("bye");
    return 0;
}

WorkloadSpec demo_workload() {
    using namespace std::chrono_literals;
    WorkloadSpec spec;
    spec.preload_bytes = 128ULL << 20;
    spec.start_at_once = true;
    spec.children.push_back({"cow", 96ULL << 20, 0, 8s, false});
    spec.children.push_back({"leak", 0, 60ULL << 20, 12s, false});
    spec.children.push_back({"idle", 0, 0, 0ms, false});
    return spec;
}

}  // namespace kidreaper
