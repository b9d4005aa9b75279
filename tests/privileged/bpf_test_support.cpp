#include "bpf_test_support.h"

#include <bpf/bpf.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string_view>

#include "act/idle.h"
#include "observe/kernel_features.h"
#include "observe/procfs.h"

namespace kidreaper::testing {

namespace {

// The fixture's children wait in poll(2); libc makes that ppoll on arm64 (no poll syscall).
std::set<long> poll_syscalls() {
    std::set<long> waiting = {SYS_ppoll};
#ifdef SYS_poll
    waiting.insert(SYS_poll);
#endif
    return waiting;
}

}  // namespace

std::string bpf_unavailable_reason() {
    const auto problems = blocking_problems(probe_features());
    std::string reason;
    for (const auto& problem : problems) {
        reason += (reason.empty() ? "" : "; ") + problem;
    }
    return reason;
}

bool running_in_ci() {
    const char* ci = std::getenv("CI");
    return ci != nullptr && std::string(ci) == "true";
}

int count_loaded_programs() {
    int count = 0;
    __u32 id = 0;
    while (bpf_prog_get_next_id(id, &id) == 0) {
        const int fd = bpf_prog_get_fd_by_id(id);
        if (fd < 0) {
            continue;
        }
        bpf_prog_info info{};
        __u32 length = sizeof(info);
        if (bpf_obj_get_info_by_fd(fd, &info, &length) == 0 &&
            std::string_view(info.name).starts_with("on_rss_stat")) {
            ++count;
        }
        close(fd);
    }
    return count;
}

int wait_for_loaded_programs(int expected) {
    int count = count_loaded_programs();
    for (int attempt = 0; attempt < 50 && count != expected; ++attempt) {
        usleep(100'000);
        count = count_loaded_programs();
    }
    return count;
}

void wait_until_kidreaper_runs(int programs_before, std::chrono::milliseconds settle) {
    for (int attempt = 0; attempt < 600 && count_loaded_programs() <= programs_before; ++attempt) {
        usleep(50'000);
    }
    usleep(static_cast<useconds_t>(settle.count() * 1000));
}

std::string sibling_path(const std::string& name) {
    return (std::filesystem::read_symlink("/proc/self/exe").parent_path() / name).string();
}

void exec_argv(const std::vector<std::string>& argv) {
    std::vector<char*> args;
    for (const auto& arg : argv) {
        args.push_back(const_cast<char*>(arg.c_str()));
    }
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
}

CommandResult run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) {
        throw std::runtime_error("pipe failed");
    }
    const pid_t pid = fork();
    if (pid < 0) {
        throw std::runtime_error("fork failed");
    }
    if (pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        exec_argv(argv);
    }
    close(out[1]);
    CommandResult result;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    bool killed = false;
    while (true) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0 && !killed) {
            kill(pid, SIGKILL);
            killed = true;
        }
        pollfd fd{out[0], POLLIN, 0};
        poll(&fd, 1, killed ? 1000 : static_cast<int>(std::min<long>(left.count(), 1000)));
        if (fd.revents & (POLLIN | POLLHUP)) {
            char chunk[4096];
            const ssize_t n = read(out[0], chunk, sizeof chunk);
            if (n <= 0) {
                break;
            }
            result.output.append(chunk, static_cast<std::size_t>(n));
        }
    }
    close(out[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    result.exit_status = (!killed && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
    return result;
}

FullCommandResult run_command_with_stderr(const std::vector<std::string>& argv,
                                          std::chrono::milliseconds timeout,
                                          const std::vector<int>& ignored_signals) {
    int out[2];
    int err[2];
    if (pipe2(out, O_CLOEXEC) != 0) {
        throw std::runtime_error("pipe failed");
    }
    if (pipe2(err, O_CLOEXEC) != 0) {
        close(out[0]);
        close(out[1]);
        throw std::runtime_error("pipe failed");
    }
    const pid_t pid = fork();
    if (pid < 0) {
        throw std::runtime_error("fork failed");
    }
    if (pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        dup2(err[1], STDERR_FILENO);
        for (const int ignored : ignored_signals) {
            signal(ignored, SIG_IGN);
        }
        exec_argv(argv);
    }
    close(out[1]);
    close(err[1]);
    FullCommandResult result;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    bool killed = false;
    pollfd streams[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    std::string* collected[2] = {&result.output, &result.errors};
    while (streams[0].fd >= 0 || streams[1].fd >= 0) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0 && !killed) {
            kill(pid, SIGKILL);
            killed = true;
        }
        const int wait_ms = killed ? 1000 : static_cast<int>(std::min<long>(left.count(), 1000));
        if (poll(streams, 2, wait_ms) <= 0 && killed) {
            break;  // killed, and a grandchild still holds a stream open
        }
        for (int stream = 0; stream < 2; ++stream) {
            if (streams[stream].fd < 0 || (streams[stream].revents & (POLLIN | POLLHUP)) == 0) {
                continue;
            }
            char chunk[4096];
            const ssize_t n = read(streams[stream].fd, chunk, sizeof chunk);
            if (n <= 0) {
                close(streams[stream].fd);
                streams[stream].fd = -1;  // poll() skips it from now on
                continue;
            }
            collected[stream]->append(chunk, static_cast<std::size_t>(n));
        }
    }
    for (const auto& stream : streams) {
        if (stream.fd >= 0) {
            close(stream.fd);
        }
    }
    int status = 0;
    waitpid(pid, &status, 0);
    result.exit_status = (!killed && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
    return result;
}

FixtureProcess::FixtureProcess(const std::vector<std::string>& args, const FixtureLaunch& launch) {
    int to[2];
    int from[2];
    if (pipe2(to, O_CLOEXEC) != 0 || pipe2(from, O_CLOEXEC) != 0) {
        throw std::runtime_error("pipe failed");
    }
    // A fixture that was killed must not take the test with it through SIGPIPE.
    signal(SIGPIPE, SIG_IGN);
    const std::string program =
        launch.program.empty() ? sibling_path("kr-fixture") : launch.program;
    process_ = fork();
    if (process_ < 0) {
        throw std::runtime_error("fork failed");
    }
    if (process_ == 0) {
        dup2(to[0], STDIN_FILENO);
        dup2(from[1], STDOUT_FILENO);
        if (launch.run_as && (setgroups(0, nullptr) != 0 || setgid(*launch.run_as) != 0 ||
                              setuid(*launch.run_as) != 0)) {
            _exit(126);
        }
        std::vector<char*> argv;
        argv.push_back(const_cast<char*>(program.c_str()));
        for (const auto& arg : args) {
            argv.push_back(const_cast<char*>(arg.c_str()));
        }
        argv.push_back(nullptr);
        execv(program.c_str(), argv.data());
        _exit(127);
    }
    close(to[0]);
    close(from[1]);
    to_fixture_ = to[1];
    from_fixture_ = from[0];
}

FixtureProcess::~FixtureProcess() {
    if (to_fixture_ >= 0) {
        const std::string quit = "quit\n";
        [[maybe_unused]] const ssize_t ignored = write(to_fixture_, quit.data(), quit.size());
        close(to_fixture_);
    }
    if (from_fixture_ >= 0) {
        close(from_fixture_);
    }
    if (process_ > 0) {
        // The manager stops its children on quit; give it a moment, then insist.
        for (int attempt = 0; attempt < 100; ++attempt) {
            if (waitpid(process_, nullptr, WNOHANG) == process_) {
                return;
            }
            usleep(50'000);
        }
        kill(process_, SIGKILL);
        waitpid(process_, nullptr, 0);
    }
}

void FixtureProcess::send(const std::string& line) {
    const std::string text = line + "\n";
    if (write(to_fixture_, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
        throw std::runtime_error("cannot write to the fixture");
    }
}

std::string FixtureProcess::expect(const std::string& prefix, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
        std::size_t newline;
        while ((newline = buffer_.find('\n')) != std::string::npos) {
            std::string line = buffer_.substr(0, newline);
            buffer_.erase(0, newline + 1);
            note(line);
            if (line.rfind(prefix, 0) == 0) {
                return line;
            }
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            throw std::runtime_error("fixture: timed out waiting for \"" + prefix + "\"");
        }
        pollfd fd{from_fixture_, POLLIN, 0};
        if (poll(&fd, 1, static_cast<int>(left.count())) <= 0) {
            continue;
        }
        char chunk[512];
        ssize_t n = read(from_fixture_, chunk, sizeof(chunk));
        if (n <= 0) {
            throw std::runtime_error("fixture: output ended before \"" + prefix + "\"");
        }
        buffer_.append(chunk, static_cast<std::size_t>(n));
    }
}

std::vector<std::string> FixtureProcess::drain(std::chrono::milliseconds wait) {
    std::vector<std::string> lines;
    const auto deadline = std::chrono::steady_clock::now() + wait;
    while (true) {
        std::size_t newline;
        while ((newline = buffer_.find('\n')) != std::string::npos) {
            lines.push_back(buffer_.substr(0, newline));
            buffer_.erase(0, newline + 1);
            note(lines.back());
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            return lines;
        }
        pollfd fd{from_fixture_, POLLIN, 0};
        if (poll(&fd, 1, static_cast<int>(left.count())) <= 0) {
            continue;
        }
        char chunk[512];
        const ssize_t n = read(from_fixture_, chunk, sizeof(chunk));
        if (n <= 0) {
            return lines;
        }
        buffer_.append(chunk, static_cast<std::size_t>(n));
    }
}

void FixtureProcess::note(const std::string& line) {
    std::istringstream fields(line);
    std::string word;
    fields >> word;
    if (word == "manager") {
        fields >> manager_;
    } else if (word == "child") {
        pid_t pid = 0;
        std::string name;
        fields >> pid >> name;
        children_.emplace(name, pid);
    }
}

void FixtureProcess::wait_ready() {
    expect("ready");
    // Each child starts by setting itself up (its first writes after fork fault too),
    // then waits for "go" in poll(): a test that registers children after "ready" must
    // not race those first faults.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    const std::set<long> waiting = poll_syscalls();
    for (const auto& [name, pid] : children_) {
        while (true) {
            const auto line = ProcFs().syscall(pid);
            if (!line || is_idle_syscall(*line, waiting)) {
                break;  // waiting (or gone: the test will say)
            }
            if (const auto stat = ProcFs().stat(pid); stat && !stat->comm.starts_with("kr-")) {
                break;  // an exec: child (a helper) runs another program and waits for nothing
            }
            if (std::chrono::steady_clock::now() > deadline) {
                throw std::runtime_error("fixture child " + name + " never waited for go");
            }
            usleep(2000);
        }
    }
}

void FixtureProcess::go_and_wait_done(std::size_t count) {
    send("go");
    for (std::size_t done = 0; done < count; ++done) {
        expect("done ");
    }
}

pid_t FixtureProcess::child(const std::string& name) const {
    auto it = children_.find(name);
    if (it == children_.end()) {
        throw std::runtime_error("fixture has no child " + name);
    }
    return it->second;
}

std::unique_ptr<FixtureProcess> big_and_small(const std::vector<std::string>& options) {
    std::vector<std::string> args = {"--preload", "16M", "--respawn"};
    args.insert(args.end(), options.begin(), options.end());
    for (const char* child : {"big1=leak:24M", "small=idle"}) {
        args.emplace_back("--child");
        args.emplace_back(child);
    }
    auto fixture = std::make_unique<FixtureProcess>(args);
    fixture->wait_ready();
    fixture->go_and_wait_done(2);
    return fixture;
}

}  // namespace kidreaper::testing
