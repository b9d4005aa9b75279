// Host-side fixtures of the privileged tests: a do-nothing host process, a fixture inside
// its own pid namespace, and a throw-away cgroup v2 directory. Root only.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "bpf_test_support.h"
#include "observe/procfs.h"

namespace kidreaper::testing {

#define KR_REQUIRE_ROOT()                                       \
    do {                                                        \
        if (::geteuid() != 0) {                                 \
            GTEST_SKIP() << "needs root (namespaces, cgroups)"; \
        }                                                       \
    } while (false)

inline constexpr auto kAwaitDeadline = std::chrono::seconds(10);

// A host process of the test's own that does nothing until destroyed (then it exits and is
// reaped): a pid of the host that a lookup must never return by mistake.
class HostProcess {
public:
    HostProcess() {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) {
            throw std::runtime_error("pipe failed");
        }
        pid_ = ::fork();
        if (pid_ < 0) {
            throw std::runtime_error("fork failed");
        }
        if (pid_ == 0) {
            ::close(fds[1]);
            char byte = 0;
            while (::read(fds[0], &byte, 1) < 0 && errno == EINTR) {
            }
            ::_exit(0);
        }
        ::close(fds[0]);
        release_ = fds[1];
    }
    ~HostProcess() {
        ::close(release_);  // end of file: the process exits
        ::waitpid(pid_, nullptr, 0);
    }
    HostProcess(const HostProcess&) = delete;
    HostProcess& operator=(const HostProcess&) = delete;
    pid_t pid() const { return pid_; }

private:
    pid_t pid_ = -1;
    int release_ = -1;
};

// Waits (up to `limit`) for `ready` to give a value.
template <typename Fn>
auto await(Fn&& ready, std::chrono::milliseconds limit = kAwaitDeadline) -> decltype(ready()) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (true) {
        auto value = ready();
        if (value || std::chrono::steady_clock::now() > deadline) {
            return value;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

// util-linux's unshare (/usr/bin) or, in the arm64 guests, busybox's applet (/bin).
inline std::string unshare_program() {
    return access("/usr/bin/unshare", X_OK) == 0 ? "/usr/bin/unshare" : "/bin/unshare";
}

// The only child of `parent` whose comm is `comm` (waits for it to appear).
inline std::optional<pid_t> child_named(pid_t parent, const std::string& comm) {
    const ProcFs proc;
    return await([&]() -> std::optional<pid_t> {
        std::optional<pid_t> found;
        for (const pid_t pid : proc.children_of(parent)) {
            const std::optional<ProcStat> st = proc.stat(pid);
            if (st && st->comm == comm) {
                if (found) {
                    return std::nullopt;
                }
                found = pid;
            }
        }
        return found;
    });
}

inline void write_file(const std::filesystem::path& path, const std::string& content) {
    std::ofstream out(path, std::ios::trunc);
    out << content;
    out.close();
    if (!out) {
        throw std::runtime_error("cannot write " + path.string());
    }
}

// The fixture, one level down in a new pid namespace (unshare --pid --fork): the
// namespace's init is a shell, which sets ns_last_pid so that the manager gets the pid
// `manager_ns_pid`, starts it, and writes its pid ($!, a pid of the namespace) into
// `pidfile` before it waits for it. `fixture_args` go to kr-fixture (default: two idle
// children).
inline std::vector<std::string> namespaced_fixture(pid_t manager_ns_pid, const std::string& pidfile,
                                                   const std::vector<std::string>& fixture_args = {
                                                       "--child", "idle", "--child", "idle"}) {
    const std::string script =
        "echo " + std::to_string(manager_ns_pid - 1) +
        " > /proc/sys/kernel/ns_last_pid || exit 97; exec 3<&0; \"$@\" <&3 3<&- & echo $! > " +
        pidfile + ".tmp && mv " + pidfile + ".tmp " + pidfile + "; wait";
    std::vector<std::string> argv = {"--pid", "--fork", "--mount-proc", "/bin/sh",
                                     "-c",    script,   "sh",           sibling_path("kr-fixture")};
    argv.insert(argv.end(), fixture_args.begin(), fixture_args.end());
    return argv;
}

// A cgroup of the cgroup v2 hierarchy, made for one test; on destruction every process
// left in it (or below) goes back to the root cgroup, and the directories are removed.
class TestCgroup {
public:
    explicit TestCgroup(std::filesystem::path root) : root_(std::move(root)) {
        static int counter = 0;  // NOLINT(*-avoid-non-const-global-variables): names only
        path_ = root_ /
                ("kidreaper-test-" + std::to_string(::getpid()) + "-" + std::to_string(++counter));
        make(path_);
    }
    ~TestCgroup() {
        for (auto it = made_.rbegin(); it != made_.rend(); ++it) {
            std::ifstream in(*it / "cgroup.procs");
            for (pid_t pid = 0; in >> pid;) {
                std::ofstream out(root_ / "cgroup.procs");
                out << pid << "\n";
            }
            ::rmdir(it->c_str());
        }
    }
    TestCgroup(const TestCgroup&) = delete;
    TestCgroup& operator=(const TestCgroup&) = delete;

    const std::filesystem::path& path() const { return path_; }
    // A sub-cgroup `name`; returns its path.
    std::filesystem::path sub(const std::string& name) {
        const std::filesystem::path dir = path_ / name;
        make(dir);
        return dir;
    }
    // Moves `pid` (the whole process) into `dir`.
    static void move(pid_t pid, const std::filesystem::path& dir) {
        write_file(dir / "cgroup.procs", std::to_string(pid) + "\n");
    }

private:
    void make(const std::filesystem::path& dir) {
        if (::mkdir(dir.c_str(), 0755) != 0) {
            throw std::runtime_error("mkdir " + dir.string() + " failed");
        }
        made_.push_back(dir);
    }
    std::filesystem::path root_;
    std::filesystem::path path_;
    std::vector<std::filesystem::path> made_;
};

}  // namespace kidreaper::testing
