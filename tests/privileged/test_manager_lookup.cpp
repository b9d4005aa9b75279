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
#include "host_fixtures.h"
#include "observe/procfs.h"

namespace kidreaper {
namespace {

using testing::await;
using testing::child_named;
using testing::FixtureLaunch;
using testing::FixtureProcess;
using testing::HostProcess;
using testing::namespaced_fixture;
using testing::run_command_with_stderr;
using testing::sibling_path;
using testing::TempDir;
using testing::TestCgroup;
using testing::unshare_program;
using testing::write_file;

constexpr auto kDeadline = std::chrono::seconds(10);

ManagerLookup lookup_pidfile(const std::string& path) {
    return find_manager(ManagerSelector{ManagerSelector::Kind::pidfile, path}, ProcFs());
}

TEST(ManagerLookupNamespaces, APidfileInAContainerNamesTheHostPid) {
    KR_REQUIRE_ROOT();
    const HostProcess decoy;  // the host's process with the number the manager has inside
    const TempDir dir;
    const std::string pidfile = (dir.path() / "app.pid").string();
    FixtureLaunch launch;
    launch.program = unshare_program();
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
    launch.program = unshare_program();
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
         {std::vector<std::string>{unshare_program(), "--pid", "--fork", "--mount-proc", helper},
          std::vector<std::string>{unshare_program(), "--pid", "--fork", helper}}) {
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
