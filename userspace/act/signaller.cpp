#include "act/signaller.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace kidreaper {

namespace {

// Closes a file descriptor on scope exit.
class FileDescriptor {
public:
    explicit FileDescriptor(int fd) : fd_(fd) {}
    ~FileDescriptor() {
        if (fd_ >= 0) {
            close(fd_);
        }
    }
    FileDescriptor(const FileDescriptor&) = delete;
    FileDescriptor& operator=(const FileDescriptor&) = delete;
    int get() const { return fd_; }

private:
    int fd_;
};

// The raw syscalls (Linux 5.1 and 5.3): glibc's wrappers are newer than some hosts.
int open_pidfd(pid_t pid) {
    return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
}

int send_through_pidfd(int pidfd, int signal) {
    return static_cast<int>(syscall(SYS_pidfd_send_signal, pidfd, signal, nullptr, 0));
}

}  // namespace

std::string outcome_name(SignalOutcome outcome) {
    switch (outcome) {
        case SignalOutcome::sent:
            return "sent";
        case SignalOutcome::gone:
            return "gone";
        case SignalOutcome::not_our_child:
            return "not-our-child";
        case SignalOutcome::forbidden:
            return "forbidden";
        case SignalOutcome::failed:
            return "failed";
    }
    return "failed";
}

SignalOutcome PidfdSignaller::send(const SignalTarget& target, int signal) {
    if (target.pid <= 1 || target.manager <= 1 || target.pid == target.manager ||
        target.pid == getpid()) {
        return SignalOutcome::forbidden;
    }
    // Pin the process first: whatever happens to the pid later, this fd is this process.
    const FileDescriptor pidfd(open_pidfd(target.pid));
    if (pidfd.get() < 0) {
        return errno == ESRCH ? SignalOutcome::gone : SignalOutcome::failed;
    }
    const auto stat = proc_.stat(target.pid);
    if (!stat) {
        return SignalOutcome::gone;
    }
    if (stat->ppid != target.manager || stat->start_ticks != target.start_ticks ||
        stat->state == 'Z') {
        return SignalOutcome::not_our_child;
    }
    if (send_through_pidfd(pidfd.get(), signal) != 0) {
        return errno == ESRCH ? SignalOutcome::gone : SignalOutcome::failed;
    }
    return SignalOutcome::sent;
}

}  // namespace kidreaper
