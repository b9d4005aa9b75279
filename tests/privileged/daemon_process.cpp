#include "daemon_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>

#include "bpf_test_support.h"

namespace kidreaper::testing {

DaemonProcess::DaemonProcess(const std::vector<std::string>& argv,
                             const std::vector<std::string>& environment) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        throw std::runtime_error("pipe failed");
    }
    pid_ = fork();
    if (pid_ < 0) {
        throw std::runtime_error("fork failed");
    }
    if (pid_ == 0) {
        dup2(fds[1], STDOUT_FILENO);
        for (const auto& assignment : environment) {
            putenv(const_cast<char*>(assignment.c_str()));  // lives until exec
        }
        exec_argv(argv);
    }
    close(fds[1]);
    out_ = fds[0];
}

DaemonProcess::~DaemonProcess() {
    if (!exited_) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
    }
    close(out_);
}

bool DaemonProcess::read_some(std::chrono::milliseconds wait) {
    pollfd fd{out_, POLLIN, 0};
    if (poll(&fd, 1, static_cast<int>(wait.count())) <= 0) {
        return true;
    }
    char chunk[4096];
    const ssize_t n = read(out_, chunk, sizeof chunk);
    if (n <= 0) {
        return false;
    }
    output_.append(chunk, static_cast<std::size_t>(n));
    partial_.append(chunk, static_cast<std::size_t>(n));
    std::size_t newline = 0;
    while ((newline = partial_.find('\n')) != std::string::npos) {
        const std::string line = partial_.substr(0, newline);
        partial_.erase(0, newline + 1);
        if (!line.empty()) {
            events_.push_back(nlohmann::json::parse(line));  // every line must be JSON
        }
    }
    return true;
}

std::optional<nlohmann::json> DaemonProcess::wait_for(
    const std::string& name, const std::function<bool(const nlohmann::json&)>& match,
    std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::size_t seen = 0;
    while (true) {
        for (; seen < events_.size(); ++seen) {
            if (events_[seen].value("event", "") == name && match(events_[seen])) {
                return events_[seen];
            }
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0 || exited_ ||
            !read_some(std::min(left, std::chrono::milliseconds(200)))) {
            return std::nullopt;
        }
    }
}

std::vector<nlohmann::json> DaemonProcess::events(const std::string& name) const {
    std::vector<nlohmann::json> found;
    for (const auto& event : events_) {
        if (event.value("event", "") == name) {
            found.push_back(event);
        }
    }
    return found;
}

void DaemonProcess::signal(int signo) const {
    if (!exited_) {
        kill(pid_, signo);
    }
}

int DaemonProcess::wait_exit(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    bool open = true;
    while (!exited_ && std::chrono::steady_clock::now() < deadline) {
        if (waitpid(pid_, &status_, WNOHANG) == pid_) {
            exited_ = true;
            while (open && read_some(std::chrono::milliseconds(0))) {
                pollfd fd{out_, POLLIN, 0};
                open = poll(&fd, 1, 0) > 0;  // more to read, or end of file next
            }
            break;
        }
        if (open) {
            open = read_some(std::chrono::milliseconds(100));
        } else {
            usleep(20'000);  // stdout closed: only the exit is left to wait for
        }
    }
    if (!exited_) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        exited_ = true;
        return -1;
    }
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
}

}  // namespace kidreaper::testing
