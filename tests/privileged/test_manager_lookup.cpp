// find_manager and require_host_pid_namespace against the real kernel: a manager in its own
// pid namespace named by a pidfile under /proc/N/root, a real cgroup v2 directory, and a
// kidreaper started inside a pid namespace. Root only; no BPF.
#include "observe/manager_lookup.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "../unit/fake_proc.h"
#include "bpf_test_support.h"
#include "observe/procfs.h"

namespace kidreaper {
namespace {

using testing::FixtureLaunch;
using testing::FixtureProcess;
using testing::run_command_with_stderr;
using testing::sibling_path;
using testing::TempDir;

constexpr auto kDeadline = std::chrono::seconds(10);

#define KR_REQUIRE_ROOT()                                       \
    do {                                                        \
        if (::geteuid() != 0) {                                 \
            GTEST_SKIP() << "needs root (namespaces, cgroups)"; \
        }                                                       \
    } while (false)

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

// Waits (up to kDeadline) for `ready` to give a value.
template <typename Fn>
auto await(Fn&& ready) -> decltype(ready()) {
    const auto deadline = std::chrono::steady_clock::now() + kDeadline;
    while (true) {
        auto value = ready();
        if (value || std::chrono::steady_clock::now() > deadline) {
            return value;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

// The only child of `parent` whose comm is `comm` (waits for it to appear).
std::optional<pid_t> child_named(pid_t parent, const std::string& comm) {
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

void write_file(const std::filesystem::path& path, const std::string& content) {
    std::ofstream out(path, std::ios::trunc);
    out << content;
    out.close();
    if (!out) {
        throw std::runtime_error("cannot write " + path.string());
    }
}

ManagerLookup lookup_pidfile(const std::string& path) {
    return find_manager(ManagerSelector{ManagerSelector::Kind::pidfile, path}, ProcFs());
}

// The fixture, one level down in a new pid namespace (unshare --pid --fork): the
// namespace's init is a shell, which sets ns_last_pid so that the manager gets the pid
// `manager_ns_pid`, starts it, and writes its pid ($!, a pid of the namespace) into
// `pidfile` before it waits for it.
std::vector<std::string> namespaced_fixture(pid_t manager_ns_pid, const std::string& pidfile) {
    const std::string script =
        "echo " + std::to_string(manager_ns_pid - 1) +
        " > /proc/sys/kernel/ns_last_pid || exit 97; exec 3<&0; \"$@\" <&3 3<&- & echo $! > " +
        pidfile + ".tmp && mv " + pidfile + ".tmp " + pidfile + "; wait";
    return {"--pid",   "--fork", "--mount-proc", "/bin/sh",
            "-c",      script,   "sh",           sibling_path("kr-fixture"),
            "--child", "idle",   "--child",      "idle"};
}

TEST(ManagerLookupNamespaces, APidfileInAContainerNamesTheHostPid) {
    KR_REQUIRE_ROOT();
    const HostProcess decoy;  // the host's process with the number the manager has inside
    const TempDir dir;
    const std::string pidfile = (dir.path() / "app.pid").string();
    FixtureLaunch launch;
    launch.program = "/usr/bin/unshare";
    FixtureProcess fixture(namespaced_fixture(decoy.pid(), pidfile), launch);
    fixture.wait_ready();
    ASSERT_EQ(fixture.manager(), decoy.pid()) << "ns_last_pid did not give the manager the "
                                                 "decoy's number";

    const std::optional<pid_t> unshare = child_named(::getpid(), "unshare");
    ASSERT_TRUE(unshare);
    const std::optional<pid_t> init = child_named(*unshare, "sh");  // pid 1 inside
    ASSERT_TRUE(init);
    const std::optional<pid_t> manager = child_named(*init, "kr-fixture");
    ASSERT_TRUE(manager);
    ASSERT_NE(*manager, decoy.pid());
    ASSERT_TRUE(await([&] { return std::filesystem::exists(pidfile); }));
    {
        std::ifstream in(pidfile);
        pid_t written = 0;
        in >> written;
        ASSERT_EQ(written, decoy.pid()) << "the namespace wrote its own pid of the manager";
    }

    // Through the namespace's init (what docker inspect -f {{.State.Pid}} gives) and through
    // the manager itself.
    const std::string container = "/proc/" + std::to_string(*init) + "/root" + pidfile;
    const ManagerLookup found = lookup_pidfile(container);
    EXPECT_EQ(found.pid, *manager) << found.problem;
    EXPECT_EQ(found.problem, "");
    EXPECT_EQ(lookup_pidfile("/proc/" + std::to_string(*manager) + "/root" + pidfile).pid,
              *manager);
    // The same file read as a host pidfile names the decoy: that is what it says on the host.
    EXPECT_EQ(lookup_pidfile(pidfile).pid, decoy.pid());

    // A child's pid inside is translated as well.
    const std::string child_file = (dir.path() / "child.pid").string();
    write_file(child_file, std::to_string(fixture.child("idle")) + "\n");
    const ManagerLookup child =
        lookup_pidfile("/proc/" + std::to_string(*init) + "/root" + child_file);
    ASSERT_TRUE(child.pid) << child.problem;
    const std::optional<ProcStat> child_stat = ProcFs().stat(*child.pid);
    ASSERT_TRUE(child_stat);
    EXPECT_EQ(child_stat->ppid, *manager);

    // A pid nobody has inside, though the host may have one of that number.
    const std::string none_file = (dir.path() / "none.pid").string();
    const pid_t unused = decoy.pid() + 100;
    write_file(none_file, std::to_string(unused) + "\n");
    const ManagerLookup none =
        lookup_pidfile("/proc/" + std::to_string(*init) + "/root" + none_file);
    EXPECT_EQ(none.pid, std::nullopt);
    const std::regex expected("pid " + std::to_string(unused) +
                              " of the pid namespace of process " + std::to_string(*init) +
                              " \\(pid:\\[[0-9]+\\]\\) is not running");
    EXPECT_TRUE(std::regex_match(none.problem, expected)) << none.problem;
}

TEST(ManagerLookupNamespaces, TheContainersInitAsTheManager) {
    KR_REQUIRE_ROOT();
    const TempDir dir;
    FixtureLaunch launch;
    launch.program = "/usr/bin/unshare";
    FixtureProcess fixture(
        {"--pid", "--fork", "--mount-proc", sibling_path("kr-fixture"), "--child", "idle"}, launch);
    fixture.wait_ready();
    ASSERT_EQ(fixture.manager(), 1);
    const std::optional<pid_t> unshare = child_named(::getpid(), "unshare");
    ASSERT_TRUE(unshare);
    const std::optional<pid_t> manager = child_named(*unshare, "kr-fixture");
    ASSERT_TRUE(manager);
    const std::string pidfile = (dir.path() / "app.pid").string();
    write_file(pidfile, "1\n");
    const ManagerLookup found =
        lookup_pidfile("/proc/" + std::to_string(*manager) + "/root" + pidfile);
    EXPECT_EQ(found.pid, *manager) << found.problem;
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

ManagerLookup lookup_cgroup(const std::filesystem::path& dir) {
    return find_manager(ManagerSelector{ManagerSelector::Kind::cgroup, dir.string()}, ProcFs());
}

TEST(ManagerLookupCgroups, TheManagerOfARealCgroup) {
    KR_REQUIRE_ROOT();
    const CgroupMounts mounts = detect_cgroup_mounts();
    if (mounts.unified.empty()) {
        GTEST_SKIP() << "no cgroup v2 hierarchy mounted";
    }
    FixtureProcess fixture({"--child", "idle", "--child", "idle"});
    fixture.wait_ready();
    TestCgroup cgroup(mounts.unified);  // destroyed first: moves everybody back
    const ManagerLookup empty = lookup_cgroup(cgroup.path());
    EXPECT_EQ(empty.problem, "no process in " + cgroup.path().string());

    TestCgroup::move(fixture.manager(), cgroup.path());
    for (const auto& [name, pid] : fixture.children()) {
        TestCgroup::move(pid, cgroup.path());
    }
    const ManagerLookup found = lookup_cgroup(cgroup.path());
    EXPECT_EQ(found.pid, fixture.manager()) << found.problem;

    // The workers in a sub-cgroup: the directory and everything below it counts.
    const std::filesystem::path workers = cgroup.sub("workers");
    for (const auto& [name, pid] : fixture.children()) {
        TestCgroup::move(pid, workers);
    }
    EXPECT_EQ(lookup_cgroup(cgroup.path()).pid, fixture.manager());
    const ManagerLookup only_workers = lookup_cgroup(workers);
    EXPECT_EQ(only_workers.pid, std::nullopt);
    EXPECT_TRUE(only_workers.problem.find("2 processes in " + workers.string()) == 0)
        << only_workers.problem;
}

TEST(ManagerLookupCgroups, TwoIndependentProcessesAreAProblem) {
    KR_REQUIRE_ROOT();
    const CgroupMounts mounts = detect_cgroup_mounts();
    if (mounts.unified.empty()) {
        GTEST_SKIP() << "no cgroup v2 hierarchy mounted";
    }
    const HostProcess a;
    const HostProcess b;
    TestCgroup cgroup(mounts.unified);
    TestCgroup::move(a.pid(), cgroup.path());
    TestCgroup::move(b.pid(), cgroup.path());
    const ManagerLookup two = lookup_cgroup(cgroup.path());
    EXPECT_EQ(two.pid, std::nullopt);
    const pid_t low = std::min(a.pid(), b.pid());
    const pid_t high = std::max(a.pid(), b.pid());
    EXPECT_EQ(two.problem, "2 processes in " + cgroup.path().string() +
                               " have a parent outside it: pids " + std::to_string(low) + ", " +
                               std::to_string(high) + "; name the manager with --pid or --pidfile");
}

TEST(RequireHostPidNamespace, RefusesInsideAPidNamespace) {
    KR_REQUIRE_ROOT();
    const std::string helper = sibling_path("kr-pidns-check");
    const auto host = run_command_with_stderr({helper}, kDeadline);
    if (ProcFs().pid_namespace(::getpid()) != kInitialPidNamespace) {
        GTEST_SKIP() << "the tests run in a pid namespace";
    }
    EXPECT_EQ(host.exit_status, 0) << host.errors;
    EXPECT_EQ(host.output, "host pid namespace\n");

    const std::regex refusal(
        "kr-pidns-check: kidreaper runs in pid namespace pid:\\[([0-9]+)\\], not the host's: "
        "the kernel reports host pids \\(run it with hostPID\\)\n");
    // With a /proc of its own (a container) and with the host's /proc still mounted.
    for (const std::vector<std::string>& argv :
         {std::vector<std::string>{"/usr/bin/unshare", "--pid", "--fork", "--mount-proc", helper},
          std::vector<std::string>{"/usr/bin/unshare", "--pid", "--fork", helper}}) {
        const auto inside = run_command_with_stderr(argv, kDeadline);
        EXPECT_EQ(inside.exit_status, 1) << inside.errors;
        EXPECT_EQ(inside.output, "");
        std::smatch match;
        ASSERT_TRUE(std::regex_match(inside.errors, match, refusal)) << inside.errors;
        EXPECT_NE(match[1].str(), std::to_string(kInitialPidNamespace));
    }
}

}  // namespace
}  // namespace kidreaper
