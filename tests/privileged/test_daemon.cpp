// `kidreaper reap --config FILE` end to end on this kernel: several services in one daemon
// around one set of BPF programs, SIGHUP reloads, and a manager in its own pid namespace
// reached through /proc/N/root while its number on the host belongs to another manager.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "../unit/fake_proc.h"
#include "../unit/test_env.h"
#include "bpf_test_support.h"
#include "daemon_process.h"
#include "host_fixtures.h"
#include "observe/manager_lookup.h"
#include "observe/procfs.h"

namespace kidreaper {
namespace {

using nlohmann::json;
using testing::big_and_small;
using testing::child_named;
using testing::DaemonProcess;
using testing::FixtureLaunch;
using testing::FixtureProcess;
using testing::NotifySocket;
using testing::sibling_path;
using testing::TempDir;
using testing::TestCgroup;
using testing::unshare_program;
using testing::write_file;

// The tests' quick settings at the top level of a config file (defaults for every service).
const std::string kQuickDefaults =
    "interval = \"200ms\"\nlog-format = \"json\"\nstagger = \"700ms\"\nidle-timeout = \"2s\"\n";

std::vector<std::string> daemon_argv(const std::filesystem::path& config) {
    return {sibling_path("../kidreaper"), "reap", "--config", config.string()};
}

// A [[service]] table.
std::string service_table(const std::string& name, const std::string& selector,
                          const std::string& value, const std::string& limit = "12MiB") {
    return "[[service]]\nname = \"" + name + "\"\n" + selector + " = \"" + value +
           "\"\nlimit = \"" + limit + "\"\n";
}

// An idle manager with one idle child.
std::unique_ptr<FixtureProcess> idle_server() {
    auto fixture = std::make_unique<FixtureProcess>(
        std::vector<std::string>{"--preload", "4M", "--child", "small=idle"});
    fixture->wait_ready();
    return fixture;
}

std::string write_pidfile(const TempDir& dir, const std::string& name, pid_t pid) {
    return dir.write(name + ".pid", std::to_string(pid) + "\n").string();
}

// Every "exited PID" line the fixture printed within `wait`.
std::set<pid_t> exited_children(FixtureProcess& fixture, std::chrono::milliseconds wait) {
    std::set<pid_t> exited;
    for (const auto& line : fixture.drain(wait)) {
        if (line.rfind("exited ", 0) == 0) {
            exited.insert(std::stoi(line.substr(7, line.find(' ', 7) - 7)));
        }
    }
    return exited;
}

bool alive_child_of(pid_t pid, pid_t manager) {
    const auto stat = ProcFs().stat(pid);
    return stat && stat->ppid == manager && stat->state != 'Z';
}

// How many sets of kidreaper programs bpftool lists (by the rss_stat hook every fault source
// loads); the kernel's own id list when bpftool is not installed.
int programs_listed() {
    for (const char* bpftool : {"/usr/sbin/bpftool", "/usr/bin/bpftool"}) {
        if (access(bpftool, X_OK) != 0) {
            continue;
        }
        const auto listed =
            testing::run_command({bpftool, "--json", "prog", "show"}, std::chrono::seconds(20));
        int count = 0;
        for (const auto& program : json::parse(listed.output)) {
            if (program.value("name", "").rfind("on_rss_stat", 0) == 0) {
                ++count;
            }
        }
        return count;
    }
    return testing::count_loaded_programs();
}

// The sum of every series of `metric` labelled service="SERVICE" in a text exposition.
double metric_sum(const std::string& exposition, const std::string& metric,
                  const std::string& service) {
    double total = 0;
    std::istringstream lines(exposition);
    for (std::string line; std::getline(lines, line);) {
        if (line.rfind(metric + "{", 0) == 0 &&
            line.find("service=\"" + service + "\"") != std::string::npos) {
            total += std::stod(line.substr(line.rfind(' ') + 1));
        }
    }
    return total;
}

auto for_service(const std::string& name) {
    return [name](const json& event) { return event.value("service", "") == name; };
}

TEST(Daemon, TwoServicesInOneDaemonAreRecycledOnTheirOwnWithOneSetOfPrograms) {
    KR_REQUIRE_BPF();
    const CgroupMounts mounts = detect_cgroup_mounts();
    if (mounts.unified.empty()) {
        GTEST_SKIP() << "no cgroup v2 hierarchy mounted";
    }
    const auto by_pidfile = big_and_small();
    const auto by_cgroup = big_and_small();
    TestCgroup cgroup(mounts.unified);  // destroyed before the fixtures: moves them back
    TestCgroup::move(by_cgroup->manager(), cgroup.path());
    for (const auto& [name, pid] : by_cgroup->children()) {
        TestCgroup::move(pid, cgroup.path());
    }
    const TempDir dir;
    const std::string pidfile = write_pidfile(dir, "shop", by_pidfile->manager());
    const std::string textfile = (dir.path() / "kidreaper.prom").string();
    const auto config =
        dir.write("kidreaper.toml", kQuickDefaults + "[metrics]\ntextfile = \"" + textfile +
                                        "\"\n" + service_table("shop", "pidfile", pidfile) +
                                        service_table("blog", "cgroup", cgroup.path().string()));
    const int programs_before = programs_listed();

    DaemonProcess daemon(daemon_argv(config));
    ASSERT_TRUE(daemon.wait_for("daemon-start")) << daemon.output();
    const auto shop = daemon.wait_for("recycle", for_service("shop"));
    ASSERT_TRUE(shop) << daemon.output();
    const auto blog = daemon.wait_for("recycle", for_service("blog"));
    ASSERT_TRUE(blog) << daemon.output();
    EXPECT_EQ(shop->at("pid"), by_pidfile->child("big1"));
    EXPECT_EQ(blog->at("pid"), by_cgroup->child("big1"));
    ASSERT_TRUE(daemon.wait_for("replaced", for_service("shop"))) << daemon.output();
    ASSERT_TRUE(daemon.wait_for("replaced", for_service("blog"))) << daemon.output();
    // Both services run on one load of the programs.
    EXPECT_EQ(programs_listed(), programs_before + 1);

    daemon.signal(SIGTERM);
    EXPECT_EQ(daemon.wait_exit(std::chrono::seconds(20)), 0) << daemon.output();
    for (const auto& start : daemon.events("start")) {
        EXPECT_EQ(start.at("manager"),
                  start.at("service") == "shop" ? by_pidfile->manager() : by_cgroup->manager());
    }
    EXPECT_EQ(daemon.events("recycle").size(), 2u) << daemon.output();
    EXPECT_EQ(exited_children(*by_pidfile, std::chrono::milliseconds(300)),
              std::set<pid_t>{by_pidfile->child("big1")});
    EXPECT_EQ(exited_children(*by_cgroup, std::chrono::milliseconds(300)),
              std::set<pid_t>{by_cgroup->child("big1")});
    EXPECT_TRUE(alive_child_of(by_pidfile->child("small"), by_pidfile->manager()));
    EXPECT_TRUE(alive_child_of(by_cgroup->child("small"), by_cgroup->manager()));
    EXPECT_EQ(testing::wait_for_loaded_programs(programs_before), programs_before);
    // The last tick's metrics, one set of series per service.
    std::ifstream in(textfile);
    const std::string metrics((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
    for (const char* service : {"shop", "blog"}) {
        EXPECT_EQ(metric_sum(metrics, "kidreaper_recycles_total", service), 1) << metrics;
        EXPECT_EQ(metric_sum(metrics, "kidreaper_signals_total", service), 1) << metrics;
        EXPECT_EQ(metric_sum(metrics, "kidreaper_manager_up", service), 1) << metrics;
        EXPECT_EQ(metric_sum(metrics, "kidreaper_children", service), 2) << metrics;
        EXPECT_EQ(metric_sum(metrics, "kidreaper_limit_bytes", service), 12 << 20) << metrics;
        EXPECT_EQ(metric_sum(metrics, "kidreaper_children_by_verdict", service), 2) << metrics;
        EXPECT_GT(metric_sum(metrics, "kidreaper_children_memory_bytes", service), 0) << metrics;
    }
}

TEST(Daemon, SighupAddsChangesAndRemovesServicesAndABadFileKeepsTheOldOnes) {
    KR_REQUIRE_BPF();
    const auto kept = idle_server();
    const auto changed = idle_server();
    const auto removed = idle_server();
    const auto added = idle_server();
    const TempDir dir;
    const std::string kept_pidfile = write_pidfile(dir, "kept", kept->manager());
    const std::string changed_pidfile = write_pidfile(dir, "changed", changed->manager());
    const std::string removed_pidfile = write_pidfile(dir, "removed", removed->manager());
    const std::string added_pidfile = write_pidfile(dir, "added", added->manager());
    const auto config = dir.write("kidreaper.toml",
                                  kQuickDefaults + service_table("kept", "pidfile", kept_pidfile) +
                                      service_table("changed", "pidfile", changed_pidfile) +
                                      service_table("removed", "pidfile", removed_pidfile));

    DaemonProcess daemon(daemon_argv(config));
    for (const char* name : {"kept", "changed", "removed"}) {
        ASSERT_TRUE(daemon.wait_for("start", for_service(name))) << name << daemon.output();
    }

    // The new file: "kept" as it was, "changed" with another limit, "removed" gone, "added" new.
    write_file(config, kQuickDefaults + service_table("kept", "pidfile", kept_pidfile) +
                           service_table("changed", "pidfile", changed_pidfile, "64MiB") +
                           service_table("added", "pidfile", added_pidfile));
    daemon.signal(SIGHUP);
    const auto reload = daemon.wait_for("reload");
    ASSERT_TRUE(reload) << daemon.output();
    EXPECT_EQ(reload->at("added"), "added");
    EXPECT_EQ(reload->at("changed"), "changed");
    EXPECT_EQ(reload->at("removed"), "removed");
    EXPECT_EQ(reload->at("services"), 3);
    const auto restarted = daemon.wait_for("start", [](const json& event) {
        return event.value("service", "") == "changed" && event.value("limit", 0) == 64 << 20;
    });
    ASSERT_TRUE(restarted) << daemon.output();
    EXPECT_EQ(restarted->at("manager"), changed->manager());
    const auto started = daemon.wait_for("start", for_service("added"));
    ASSERT_TRUE(started) << daemon.output();
    EXPECT_EQ(started->at("manager"), added->manager());

    // A file that does not parse: refused, naming file and line; the services stay.
    write_file(config, kQuickDefaults + service_table("kept", "pidfile", kept_pidfile) +
                           "[[service]]\nname = \"broken\"\nlimit = \n");
    daemon.signal(SIGHUP);
    const auto refused = daemon.wait_for("reload-refused");
    ASSERT_TRUE(refused) << daemon.output();
    EXPECT_EQ(refused->at("error").get<std::string>().rfind(config.string() + ":", 0), 0u)
        << refused->at("error");
    // A good file that others could rewrite (its hooks would run as root): refused as well.
    write_file(config, kQuickDefaults + service_table("kept", "pidfile", kept_pidfile) +
                           service_table("changed", "pidfile", changed_pidfile, "64MiB") +
                           service_table("added", "pidfile", added_pidfile));
    ASSERT_EQ(chmod(config.c_str(), 0666), 0);
    daemon.signal(SIGHUP);
    const auto untrusted = daemon.wait_for("reload-refused", [](const json& event) {
        return event.value("error", "").find("refused: its hooks would run as root") !=
               std::string::npos;
    });
    ASSERT_TRUE(untrusted) << daemon.output();
    // The next good file is compared with the old one, which was kept: nothing changes.
    ASSERT_EQ(chmod(config.c_str(), 0644), 0);
    daemon.signal(SIGHUP);
    const auto second = daemon.wait_for("reload", [](const json& event) {
        return event.value("added", "") == "-" && event.value("changed", "") == "-" &&
               event.value("removed", "") == "-";
    });
    ASSERT_TRUE(second) << daemon.output();
    EXPECT_EQ(second->at("services"), 3);

    daemon.signal(SIGTERM);
    EXPECT_EQ(daemon.wait_exit(std::chrono::seconds(20)), 0) << daemon.output();
    int kept_starts = 0;
    for (const auto& start : daemon.events("start")) {
        kept_starts += start.at("service") == "kept" ? 1 : 0;
    }
    EXPECT_EQ(kept_starts, 1) << "an unchanged service keeps running";
    EXPECT_TRUE(daemon.events("recycle").empty()) << daemon.output();
}

TEST(Daemon, AManagerInItsOwnPidNamespaceIsReachedThroughProcRootAndTheHostsNumberIsLeftAlone) {
    KR_REQUIRE_BPF();
    KR_REQUIRE_ROOT();
    // The host's manager: over the limit too, and its pid is the number the container's
    // manager has inside its namespace.
    const auto host = big_and_small();
    const TempDir dir;
    const std::string pidfile = (dir.path() / "app.pid").string();
    FixtureLaunch launch;
    launch.program = unshare_program();
    FixtureProcess container(
        testing::namespaced_fixture(
            host->manager(), pidfile,
            {"--preload", "16M", "--respawn", "--child", "big1=leak:24M", "--child", "small=idle"}),
        launch);
    container.wait_ready();
    ASSERT_EQ(container.manager(), host->manager()) << "ns_last_pid did not give the manager "
                                                       "the host manager's number";
    container.go_and_wait_done(2);
    const std::optional<pid_t> unshare = child_named(::getpid(), "unshare");
    ASSERT_TRUE(unshare);
    const std::optional<pid_t> init = child_named(*unshare, "sh");
    ASSERT_TRUE(init);
    const std::optional<pid_t> manager = child_named(*init, "kr-fixture");
    ASSERT_TRUE(manager);
    ASSERT_TRUE(testing::await([&] { return std::filesystem::exists(pidfile); }));

    const std::string through_root = "/proc/" + std::to_string(*init) + "/root" + pidfile;
    const auto config =
        dir.write("kidreaper.toml", kQuickDefaults + "once = true\n" +
                                        service_table("container", "pidfile", through_root));
    DaemonProcess daemon(daemon_argv(config));
    EXPECT_EQ(daemon.wait_exit(std::chrono::seconds(60)), 0) << daemon.output();
    const auto starts = daemon.events("start");
    ASSERT_EQ(starts.size(), 1u) << daemon.output();
    EXPECT_EQ(starts[0].at("manager"), *manager) << "the host pid of the container's manager";
    const auto recycles = daemon.events("recycle");
    ASSERT_EQ(recycles.size(), 1u) << daemon.output();
    const pid_t recycled = recycles[0].at("pid");
    EXPECT_NE(recycled, host->child("big1"));
    // The container's own big child, by its host pid: the one that exited.
    EXPECT_EQ(exited_children(container, std::chrono::milliseconds(500)),
              std::set<pid_t>{container.child("big1")});
    // The host's manager of that number, and its children, were never signalled.
    EXPECT_TRUE(exited_children(*host, std::chrono::milliseconds(300)).empty());
    EXPECT_TRUE(alive_child_of(host->child("big1"), host->manager()));
    EXPECT_EQ(kill(host->manager(), 0), 0);
}

// Datagrams from `notify` until one contains `text` (returned), up to `timeout`; `seen` gets
// them all.
std::optional<std::string> wait_for_message(const NotifySocket& notify, const std::string& text,
                                            std::vector<std::string>& seen,
                                            std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        const std::string message = notify.receive();
        if (message.empty()) {
            continue;
        }
        seen.push_back(message);
        if (message.find(text) != std::string::npos) {
            return message;
        }
    }
    return std::nullopt;
}

TEST(Daemon, TellsSystemdItIsReadyReloadingAndStoppingAndFeedsTheWatchdogThroughALongHook) {
    KR_REQUIRE_BPF();
    const auto server = big_and_small();
    const TempDir dir;
    const NotifySocket notify(std::chrono::milliseconds(200));
    const std::string pidfile = write_pidfile(dir, "app", server->manager());
    // The pre-hook outlasts the watchdog's interval (4 s; pinged every 2 s), then vetoes.
    const auto config =
        dir.write("kidreaper.toml", kQuickDefaults + "pre-hook = \"sleep 9; exit 1\"\n" +
                                        "hook-timeout = \"20s\"\n" +
                                        service_table("app", "pidfile", pidfile));
    DaemonProcess daemon(daemon_argv(config),
                         {"NOTIFY_SOCKET=" + notify.path(), "WATCHDOG_USEC=4000000"});
    std::vector<std::string> seen;
    ASSERT_TRUE(wait_for_message(notify, "READY=1", seen, std::chrono::seconds(30)))
        << daemon.output();

    // While the hook runs, the daemon is inside one step: the watchdog must still be fed.
    const ProcFs proc;
    const auto hook_runs = [&] { return !proc.children_of(daemon.pid()).empty(); };
    ASSERT_TRUE(testing::await(hook_runs)) << daemon.output();
    int pings_during_hook = 0;
    while (hook_runs()) {
        const std::string message = notify.receive();
        pings_during_hook += message.find("WATCHDOG=1") != std::string::npos ? 1 : 0;
        seen.push_back(message);
    }
    EXPECT_GE(pings_during_hook, 3) << "a 9 s hook with a 4 s watchdog";
    ASSERT_TRUE(daemon.wait_for("skip", [](const json& event) {
        return event.value("code", "") == "pre-hook-veto";
    })) << daemon.output();

    daemon.signal(SIGHUP);
    const auto reloading = wait_for_message(notify, "RELOADING=1", seen, std::chrono::seconds(20));
    ASSERT_TRUE(reloading) << daemon.output();
    EXPECT_NE(reloading->find("MONOTONIC_USEC="), std::string::npos) << *reloading;
    ASSERT_TRUE(wait_for_message(notify, "READY=1", seen, std::chrono::seconds(20)));
    ASSERT_TRUE(daemon.wait_for("reload")) << daemon.output();

    daemon.signal(SIGTERM);
    ASSERT_TRUE(wait_for_message(notify, "STOPPING=1", seen, std::chrono::seconds(30)))
        << daemon.output();
    EXPECT_EQ(daemon.wait_exit(std::chrono::seconds(20)), 0) << daemon.output();
    bool status_seen = false;
    for (const auto& message : seen) {
        status_seen =
            status_seen ||
            message.find("STATUS=watching 1 service(s), 1 with a manager") != std::string::npos;
    }
    EXPECT_TRUE(status_seen);
}

}  // namespace
}  // namespace kidreaper
