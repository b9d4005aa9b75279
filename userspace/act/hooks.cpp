#include "act/hooks.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <set>
#include <string_view>
#include <utility>

#include "common/units.h"
#include "policy/server_presets.h"

extern char** environ;

namespace kidreaper {

namespace {

using Clock = std::chrono::steady_clock;

// Closes a file descriptor on scope exit.
class UniqueFd {
public:
    explicit UniqueFd(int fd = -1) : fd_(fd) {}
    ~UniqueFd() { reset(); }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    int get() const { return fd_; }
    void reset(int fd = -1) {
        if (fd_ >= 0) {
            close(fd_);
        }
        fd_ = fd;
    }

private:
    int fd_;
};

std::string errno_text(const std::string& what, int error) {
    return what + ": " + std::strerror(error);
}

// Moves `fd` above stdin/stdout/stderr (a kidreaper started with them closed gets 0..2 from
// pipe2), so the redirections of the hook's 0, 1 and 2 cannot collide with it.
int above_stdio(int fd) {
    if (fd > STDERR_FILENO) {
        return fd;
    }
    const int moved = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
    close(fd);
    return moved;
}

void write_all(int fd, std::string_view text) {
    while (!text.empty()) {
        const ssize_t written = write(fd, text.data(), text.size());
        if (written < 0 && errno == EINTR) {
            continue;
        }
        if (written <= 0) {
            return;  // nowhere to write (stderr closed): the output is dropped
        }
        text.remove_prefix(static_cast<std::size_t>(written));
    }
}

// Cuts a hook's output into lines and writes each with a prefix, in one write() so lines
// stay whole. A line longer than kMaxLine goes out in pieces, each prefixed.
class LineRelay {
public:
    LineRelay(std::string prefix, int out) : prefix_(std::move(prefix)), out_(out) {}

    void feed(std::string_view bytes) {
        pending_.append(bytes);
        std::size_t start = 0;
        while (true) {
            const std::size_t newline = pending_.find('\n', start);
            if (newline != std::string::npos && newline - start <= kMaxLine) {
                emit(std::string_view(pending_).substr(start, newline - start));
                start = newline + 1;
            } else if (pending_.size() - start >= kMaxLine) {
                emit(std::string_view(pending_).substr(start, kMaxLine));
                start += kMaxLine;
            } else {
                break;
            }
        }
        pending_.erase(0, start);
    }

    // The last line, when it did not end with a newline.
    void finish() {
        if (!pending_.empty()) {
            emit(pending_);
            pending_.clear();
        }
    }

private:
    static constexpr std::size_t kMaxLine = 4096;

    void emit(std::string_view line) {
        if (!line.empty() && line.back() == '\r') {
            line.remove_suffix(1);
        }
        std::string text = prefix_;
        text.append(line);
        text.push_back('\n');
        write_all(out_, text);
    }

    std::string prefix_;
    int out_;
    std::string pending_;
};

// Relays what the pipe holds now, at most a pipe's worth (64 KiB) so a hook that writes
// without pause cannot keep us from the timeout; false once it reached end of file.
bool drain(int pipe_fd, LineRelay& relay) {
    constexpr int kChunks = 16;
    char chunk[4096];
    for (int chunks = 0; chunks < kChunks;) {
        const ssize_t got = read(pipe_fd, chunk, sizeof chunk);
        if (got > 0) {
            relay.feed(std::string_view(chunk, static_cast<std::size_t>(got)));
            ++chunks;
            continue;
        }
        if (got < 0 && errno == EINTR) {
            continue;
        }
        return got < 0 && errno == EAGAIN;
    }
    return true;
}

// Our environment with `extra` added; an extra NAME=VALUE replaces an inherited NAME.
std::vector<std::string> environment_with(const std::vector<std::string>& extra) {
    std::set<std::string, std::less<>> overridden;
    for (const auto& entry : extra) {
        overridden.insert(entry.substr(0, entry.find('=')));
    }
    std::vector<std::string> environment;
    for (char** entry = environ; *entry != nullptr; ++entry) {
        const std::string_view text(*entry);
        if (!overridden.contains(text.substr(0, text.find('=')))) {
            environment.emplace_back(text);
        }
    }
    environment.insert(environment.end(), extra.begin(), extra.end());
    return environment;
}

struct Spawned {
    pid_t pid = 0;
    std::string error;  // set when it did not start
};

// posix_spawn of `shell -c command`: its own process group, an empty signal mask, every
// signal at its default, stdin from /dev/null, stdout and stderr into `output_write`, and
// no other descriptor.
Spawned spawn_hook(const HookRequest& request, int output_write) {
    std::vector<std::string> environment = environment_with(request.env);
    std::vector<char*> envp;
    envp.reserve(environment.size() + 1);
    for (auto& entry : environment) {
        envp.push_back(entry.data());
    }
    envp.push_back(nullptr);
    std::string shell = request.shell;
    std::string flag = "-c";
    std::string script = request.command;
    char* argv[] = {shell.data(), flag.data(), script.data(), nullptr};

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, output_write, STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, output_write, STDERR_FILENO);
    // Nothing else we inherited (a lock, another program's pipe) goes to a hook that might
    // outlive us.
    posix_spawn_file_actions_addclosefrom_np(&actions, STDERR_FILENO + 1);
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    posix_spawnattr_setflags(
        &attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&attributes, 0);  // a new group, its id the hook's pid
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attributes, &none);
    sigset_t all;
    sigfillset(&all);
    posix_spawnattr_setsigdefault(&attributes, &all);

    Spawned spawned;
    const int error =
        posix_spawn(&spawned.pid, shell.c_str(), &actions, &attributes, argv, envp.data());
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    if (error != 0) {
        spawned.pid = 0;
        spawned.error = errno_text(request.shell, error);
    }
    return spawned;
}

int open_pidfd(pid_t pid) {
    return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
}

// Kills what is left of the hook's process group (the hook may be a zombie: its pid, the
// group's id, is not reused before we reap it), then reaps the hook.
HookResult kill_group_and_reap(pid_t hook) {
    kill(-hook, SIGKILL);
    HookResult result;
    result.pid = hook;
    int status = 0;
    pid_t reaped = -1;
    do {
        reaped = waitpid(hook, &status, 0);
    } while (reaped < 0 && errno == EINTR);
    if (reaped != hook) {
        const int error = errno;
        result.outcome = HookOutcome::wait_failed;
        result.error = errno_text("waitpid", error) + " (is SIGCHLD ignored?)";
    } else if (WIFEXITED(status)) {
        result.outcome = HookOutcome::exited;
        result.status = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        result.outcome = HookOutcome::killed_by_signal;
        result.signal = WTERMSIG(status);
    } else {
        result.outcome = HookOutcome::wait_failed;
        result.error = "unexpected wait status " + std::to_string(status);
    }
    return result;
}

timespec to_timespec(Clock::duration left) {
    const auto nanoseconds = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    timespec wait{};
    wait.tv_sec = static_cast<time_t>(nanoseconds / 1'000'000'000);
    wait.tv_nsec = static_cast<long>(nanoseconds % 1'000'000'000);
    return wait;
}

}  // namespace

HookResult run_hook(const HookRequest& request, SignalGate& gate, int output_fd) {
    HookResult result;
    if (gate.stop_requested()) {
        result.outcome = HookOutcome::stopped;
        result.signal = gate.received();
        return result;
    }
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
        result.outcome = HookOutcome::spawn_failed;
        result.error = errno_text("pipe", errno);
        return result;
    }
    UniqueFd output_read(above_stdio(pipe_fds[0]));
    UniqueFd output_write(above_stdio(pipe_fds[1]));
    if (output_read.get() < 0 || output_write.get() < 0 ||
        fcntl(output_read.get(), F_SETFL, O_NONBLOCK) != 0) {
        result.outcome = HookOutcome::spawn_failed;
        result.error = errno_text("pipe", errno);
        return result;
    }
    const Spawned spawned = spawn_hook(request, output_write.get());
    output_write.reset();  // the hook holds the only write end: end of file once it is done
    if (spawned.pid == 0) {
        result.outcome = HookOutcome::spawn_failed;
        result.error = spawned.error;
        return result;
    }
    const pid_t hook = spawned.pid;
    LineRelay relay("kidreaper: " + request.label + "[" + std::to_string(hook) + "]: ", output_fd);
    const auto finish = [&](HookResult ended) {
        drain(output_read.get(), relay);
        relay.finish();
        ended.pid = hook;
        return ended;
    };

    const UniqueFd exit_watch(open_pidfd(hook));
    if (exit_watch.get() < 0) {
        // Gone already and reaped by the kernel (SIGCHLD ignored), or no pidfd: we cannot
        // know how it ended, so it did not approve anything.
        const int error = errno;
        HookResult ended = kill_group_and_reap(hook);
        ended.outcome = HookOutcome::wait_failed;
        ended.error = errno_text("pidfd_open", error);
        return finish(ended);
    }
    const auto deadline = Clock::now() + request.timeout;
    bool output_open = true;
    while (true) {
        if (gate.stop_requested()) {
            HookResult ended = kill_group_and_reap(hook);
            ended.outcome = HookOutcome::stopped;
            ended.signal = gate.received();
            return finish(ended);
        }
        const auto left = deadline - Clock::now();
        if (left <= Clock::duration::zero()) {
            HookResult ended = kill_group_and_reap(hook);
            ended.outcome = HookOutcome::timed_out;
            ended.timeout = request.timeout;
            return finish(ended);
        }
        pollfd watched[3] = {{output_open ? output_read.get() : -1, POLLIN, 0},
                             {exit_watch.get(), POLLIN, 0},
                             {gate.fd(), POLLIN, 0}};
        // At most a slice: the gate's heartbeat runs between slices.
        const timespec wait = to_timespec(std::min<Clock::duration>(
            left, std::chrono::duration_cast<Clock::duration>(SignalGate::kMaxSlice)));
        if (ppoll(watched, 3, &wait, nullptr) < 0) {
            if (errno == EINTR) {
                continue;
            }
            const int error = errno;
            HookResult ended = kill_group_and_reap(hook);
            ended.outcome = HookOutcome::wait_failed;
            ended.error = errno_text("ppoll", error);
            return finish(ended);
        }
        if (output_open && (watched[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
            output_open = drain(output_read.get(), relay);
        }
        if ((watched[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
            // The hook exited; its group's leftovers (a backgrounded child holding the pipe)
            // go with it.
            return finish(kill_group_and_reap(hook));
        }
    }
}

bool approves(const HookResult& result) {
    return result.outcome == HookOutcome::exited && result.status == 0;
}

std::string hook_outcome_name(HookOutcome outcome) {
    switch (outcome) {
        case HookOutcome::exited:
            return "exited";
        case HookOutcome::killed_by_signal:
            return "killed-by-signal";
        case HookOutcome::timed_out:
            return "timed-out";
        case HookOutcome::spawn_failed:
            return "spawn-failed";
        case HookOutcome::wait_failed:
            return "wait-failed";
        case HookOutcome::stopped:
            return "stopped";
    }
    return "wait-failed";
}

std::string describe(const HookResult& result) {
    switch (result.outcome) {
        case HookOutcome::exited:
            return "exit status " + std::to_string(result.status);
        case HookOutcome::killed_by_signal:
            return "killed by signal " + std::to_string(result.signal);
        case HookOutcome::timed_out:
            return "timed out after " + format_duration(result.timeout);
        case HookOutcome::spawn_failed:
            return "could not run: " + result.error;
        case HookOutcome::wait_failed:
            return "could not wait for it: " + result.error;
        case HookOutcome::stopped:
            return "stopped: kidreaper received " + signal_name(result.signal);
    }
    return "could not wait for it";
}

}  // namespace kidreaper
