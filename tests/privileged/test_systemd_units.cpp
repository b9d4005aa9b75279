// The unit selector against a real systemd: /lib/systemd/systemd --system started as the init
// of throw-away pid, mount, cgroup, network, UTS and IPC namespaces, with only this test's
// units (SYSTEMD_UNIT_PATH), its own /run and the cgroup hierarchies mounted at its cgroup
// namespace's root (a cgroup under the host's), and a dbus-daemon --system it starts
// through dbus.socket. SdBusSystemdUnits reaches it through DBUS_SYSTEM_BUS_ADDRESS. Root
// only; skipped when systemd or dbus-daemon is not installed.
#include <fcntl.h>
#include <signal.h>
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
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "../unit/fake_proc.h"
#include "../unit/test_env.h"
#include "host_fixtures.h"
#include "observe/manager_lookup.h"
#include "observe/procfs.h"

namespace kidreaper {
namespace {

using testing::ScopedEnv;
using testing::TempDir;

constexpr auto kDeadline = std::chrono::seconds(20);
const char* const kSystemd = "/lib/systemd/systemd";
const char* const kDbusDaemon = "/usr/bin/dbus-daemon";
const char* const kUnshare = "/usr/bin/unshare";

// testing::await with this file's longer deadline: a systemd and its bus take a while to start.
template <typename Fn>
auto await_ready(Fn&& ready) -> decltype(ready()) {
    return testing::await(std::forward<Fn>(ready), kDeadline);
}

// The pids of DIR/cgroup.procs.
std::vector<pid_t> procs(const std::filesystem::path& dir) {
    std::vector<pid_t> pids;
    std::ifstream in(dir / "cgroup.procs");
    for (pid_t pid = 0; in >> pid;) {
        pids.push_back(pid);
    }
    return pids;
}

// A systemd of its own, as described at the top. Killed (with its whole pid namespace) and
// its cgroups removed on destruction.
class ThrowawaySystemd {
public:
    explicit ThrowawaySystemd(const CgroupMounts& host) {
        write_units();
        const std::string name = "kidreaper-systemd-" + std::to_string(::getpid());
        std::string remount;
        for (const auto& [root, mount] :
             {std::pair{host.unified, std::string("mount -t cgroup2 cgroup2 ")},
              std::pair{host.systemd_v1,
                        std::string("mount -t cgroup -o none,name=systemd cgroup ")}}) {
            if (root.empty()) {
                continue;
            }
            const std::filesystem::path dir = root / name;
            if (::mkdir(dir.c_str(), 0755) != 0) {
                throw std::runtime_error("mkdir " + dir.string() + " failed");
            }
            cgroups_.push_back(dir);
            remount += "umount " + root.string() + " && " + mount + root.string() + " && ";
        }
        const std::string script =
            "mount -t tmpfs tmpfs /run && " + remount +
            "exec env container=kidreaper-test SYSTEMD_UNIT_PATH=" + units_.path().string() + " " +
            kSystemd + " --system --unit=kr-test.target --log-target=null";
        unshare_ = ::fork();
        if (unshare_ < 0) {
            throw std::runtime_error("fork failed");
        }
        if (unshare_ == 0) {
            for (const std::filesystem::path& dir : cgroups_) {
                std::ofstream(dir / "cgroup.procs") << ::getpid() << "\n";
            }
            const int null = ::open("/dev/null", O_RDWR);
            ::dup2(null, STDIN_FILENO);
            ::dup2(null, STDOUT_FILENO);
            std::vector<std::string> args = {kUnshare,       "--pid",   "--fork", "--mount",
                                             "--uts",        "--ipc",   "--net",  "--cgroup",
                                             "--mount-proc", "/bin/sh", "-c",     script};
            std::vector<char*> argv;
            for (std::string& arg : args) {
                argv.push_back(arg.data());
            }
            argv.push_back(nullptr);
            ::execv(kUnshare, argv.data());
            ::_exit(127);
        }
        const ProcFs proc;
        const std::optional<pid_t> init = await_ready([&]() -> std::optional<pid_t> {
            for (const pid_t pid : proc.children_of(unshare_)) {
                const std::optional<ProcStat> st = proc.stat(pid);
                if (st && st->comm == "systemd") {
                    return pid;
                }
            }
            return std::nullopt;
        });
        if (!init) {
            stop();
            throw std::runtime_error("systemd did not start");
        }
        systemd_ = *init;
    }
    ~ThrowawaySystemd() { stop(); }
    ThrowawaySystemd(const ThrowawaySystemd&) = delete;
    ThrowawaySystemd& operator=(const ThrowawaySystemd&) = delete;

    // The system bus of the namespace, reached through its init's root.
    std::string bus_address() const {
        return "unix:path=/proc/" + std::to_string(systemd_) + "/root/run/dbus/system_bus_socket";
    }
    // The host's directory of the cgroup the namespace's systemd calls `group`.
    std::filesystem::path host_cgroup(const std::string& group) const {
        return cgroups_.front() / std::filesystem::path(group).relative_path();
    }
    // The host paths of the namespace's cgroup roots, as CgroupMounts.
    CgroupMounts mounts() const {
        CgroupMounts mounts;
        mounts.unified = cgroups_.front();
        if (cgroups_.size() > 1) {
            mounts.systemd_v1 = cgroups_.back();
        }
        return mounts;
    }

private:
    void write_units() const {
        units_.write("kr-test.target",
                     "[Unit]\nDescription=kidreaper lookup test\n"
                     "Wants=dbus.socket dbus.service kr-app.service kr-bg.service\n");
        units_.write("dbus.socket", "[Socket]\nListenStream=/run/dbus/system_bus_socket\n");
        units_.write("dbus.service",
                     std::string("[Unit]\nRequires=dbus.socket\n[Service]\nExecStart=") +
                         kDbusDaemon +
                         " --system --address=systemd: --nofork --nopidfile "
                         "--systemd-activation\n");
        // A service with a MainPID, and one without (a oneshot that left a process behind).
        units_.write("kr-app.service", "[Service]\nExecStart=/bin/sleep infinity\n");
        units_.write("kr-bg.service",
                     "[Service]\nType=oneshot\nRemainAfterExit=yes\n"
                     "ExecStart=/bin/sh -c '/bin/sleep infinity &'\n");
    }

    void stop() {
        if (unshare_ > 0) {
            // SIGKILL to the init of the namespace (systemd, or the shell before it) kills
            // every process there; unshare then exits with it, having reaped it.
            if (systemd_ > 0) {
                ::kill(systemd_, SIGKILL);
            } else {
                for (const pid_t pid : ProcFs().children_of(unshare_)) {
                    ::kill(pid, SIGKILL);
                }
            }
            ::waitpid(unshare_, nullptr, 0);
            unshare_ = 0;
            systemd_ = 0;
        }
        for (const std::filesystem::path& top : cgroups_) {
            await_ready([&] {
                std::vector<std::filesystem::path> dirs;
                std::error_code ec;
                for (std::filesystem::recursive_directory_iterator it(top, ec), end;
                     !ec && it != end; it.increment(ec)) {
                    if (it->is_directory(ec)) {
                        dirs.push_back(it->path());
                    }
                }
                for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
                    ::rmdir(it->c_str());
                }
                return ::rmdir(top.c_str()) == 0 || errno == ENOENT;
            });
        }
        cgroups_.clear();
    }

    TempDir units_;
    std::vector<std::filesystem::path> cgroups_;  // unified first, then name=systemd
    pid_t unshare_ = 0;
    pid_t systemd_ = 0;
};

ManagerSelector unit(const std::string& name) {
    return ManagerSelector{ManagerSelector::Kind::unit, name};
}

TEST(SystemdUnitsReal, MainPidControlGroupAndTheCgroupRule) {
    if (::geteuid() != 0) {
        GTEST_SKIP() << "needs root (namespaces, cgroups)";
    }
    for (const char* program : {kSystemd, kDbusDaemon, kUnshare}) {
        if (::access(program, X_OK) != 0) {
            GTEST_SKIP() << program << " is not installed";
        }
    }
    const CgroupMounts host = detect_cgroup_mounts();
    if (host.unified.empty()) {
        GTEST_SKIP() << "no cgroup v2 hierarchy mounted";
    }
    const ThrowawaySystemd systemd(host);
    const ScopedEnv bus("DBUS_SYSTEM_BUS_ADDRESS", systemd.bus_address());
    const SdBusSystemdUnits units;

    // Ready once systemd is on its bus and kr-app runs.
    std::string last_problem;
    const std::optional<UnitFacts> app = await_ready([&]() -> std::optional<UnitFacts> {
        const UnitQuery query = units.facts("kr-app.service");
        last_problem = query.problem;
        if (query.facts && query.facts->main_pid > 0) {
            return query.facts;
        }
        return std::nullopt;
    });
    ASSERT_TRUE(app) << last_problem;
    EXPECT_EQ(app->control_group, "/system.slice/kr-app.service");
    const std::vector<pid_t> app_procs = procs(systemd.host_cgroup(app->control_group));
    ASSERT_EQ(app_procs.size(), 1u);
    const std::optional<std::vector<pid_t>> nspid = ProcFs().ns_pids(app_procs.front());
    ASSERT_TRUE(nspid);
    // systemd speaks its own pid namespace: MainPID is the service's pid in there.
    EXPECT_EQ(nspid->back(), app->main_pid);
    EXPECT_NE(app_procs.front(), app->main_pid);

    // Which is why find_manager does not take it as a host pid, whatever has that number here.
    for (const CgroupMounts& mounts : {host, systemd.mounts()}) {
        const ManagerLookup main = find_manager(unit("kr-app.service"), ProcFs(), units, mounts);
        EXPECT_EQ(main.pid, std::nullopt);
        EXPECT_EQ(main.problem, "unit kr-app.service: MainPID " + std::to_string(app->main_pid) +
                                    " is not a process in its cgroup /system.slice/kr-app.service "
                                    "(a systemd of another pid namespace?)");
    }

    // No MainPID: the cgroup rule on ControlGroup, under the namespace's cgroup roots.
    const std::optional<UnitFacts> bg = await_ready([&]() -> std::optional<UnitFacts> {
        const UnitQuery query = units.facts("kr-bg.service");
        last_problem = query.problem;
        if (query.facts && !query.facts->control_group.empty() &&
            !procs(systemd.host_cgroup(query.facts->control_group)).empty()) {
            return query.facts;
        }
        return std::nullopt;
    });
    ASSERT_TRUE(bg) << last_problem;
    EXPECT_EQ(bg->main_pid, 0);
    EXPECT_EQ(bg->control_group, "/system.slice/kr-bg.service");
    const std::vector<pid_t> bg_procs = procs(systemd.host_cgroup(bg->control_group));
    ASSERT_EQ(bg_procs.size(), 1u);
    const ManagerLookup found =
        find_manager(unit("kr-bg.service"), ProcFs(), units, systemd.mounts());
    EXPECT_EQ(found.pid, bg_procs.front()) << found.problem;
    // Under the host's own roots that cgroup does not exist.
    const ManagerLookup elsewhere = find_manager(unit("kr-bg.service"), ProcFs(), units, host);
    EXPECT_EQ(elsewhere.pid, std::nullopt);

    const UnitQuery missing = units.facts("kr-nothere.service");
    EXPECT_EQ(missing.facts, std::nullopt);
    EXPECT_EQ(missing.problem,
              "unit kr-nothere.service is not loaded (systemctl status kr-nothere.service)");
}

}  // namespace
}  // namespace kidreaper
