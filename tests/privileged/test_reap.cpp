// `kidreaper reap` end to end on this kernel: the real binary against the fixture, a
// manager that respawns the children kidreaper recycles.
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "bpf_test_support.h"
#include "observe/procfs.h"
#include "reap_events.h"

namespace kidreaper {
namespace {

using nlohmann::json;
using testing::big_and_small;
using testing::FixtureProcess;
using testing::reap_events;
using testing::run_command;
using testing::sibling_path;

std::vector<std::string> reap_command(pid_t manager, std::vector<std::string> extra) {
    std::vector<std::string> argv = {sibling_path("../kidreaper"),
                                     "reap",
                                     "--pid",
                                     std::to_string(manager),
                                     "--limit",
                                     "12MiB",
                                     "--stagger",
                                     "700ms",
                                     "--interval",
                                     "200ms",
                                     "--idle-timeout",
                                     "2s",
                                     "--once",
                                     "--log-format",
                                     "json"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
}

// ISO-8601 UTC "...T12:34:56.789Z" to seconds of the day.
double seconds_of(const json& event) {
    const std::string time = event.at("time");
    const auto t = time.find('T');
    return std::stod(time.substr(t + 1, 2)) * 3600 + std::stod(time.substr(t + 4, 2)) * 60 +
           std::stod(time.substr(t + 7, 6));
}

bool alive_child_of(pid_t pid, pid_t manager) {
    const auto stat = ProcFs().stat(pid);
    return stat && stat->ppid == manager && stat->state != 'Z';
}

TEST(Reap, RecyclesOversizedChildrenOneAtATimeAndNeverOthers) {
    KR_REQUIRE_BPF();
    FixtureProcess fixture({"--preload", "16M", "--respawn", "--child", "big1=leak:24M", "--child",
                            "big2=leak:20M", "--child", "small=idle"});
    fixture.wait_ready();
    fixture.go_and_wait_done(3);
    const auto result = run_command(reap_command(fixture.manager(), {}), std::chrono::seconds(60));
    ASSERT_EQ(result.exit_status, 0) << result.output;

    const auto recycles = reap_events(result.output, "recycle");
    ASSERT_EQ(recycles.size(), 2u) << result.output;
    EXPECT_EQ(recycles[0].at("pid"), fixture.child("big1")) << "the largest first";
    EXPECT_EQ(recycles[1].at("pid"), fixture.child("big2"));
    for (const auto& recycle : recycles) {
        EXPECT_EQ(recycle.at("signal"), "TERM");
        EXPECT_EQ(recycle.at("idle"), "idle") << "fixture children wait in poll()";
        EXPECT_GT(recycle.at("private").get<std::uint64_t>(), 12u << 20);
        EXPECT_FALSE(recycle.contains("dry_run"));
    }
    EXPECT_GE(seconds_of(recycles[1]) - seconds_of(recycles[0]), 0.7) << "stagger";
    // One at a time: the second signal only after the first child was replaced.
    const auto replaced = reap_events(result.output, "replaced");
    ASSERT_FALSE(replaced.empty());
    EXPECT_EQ(replaced[0].at("pid"), fixture.child("big1"));
    EXPECT_LE(seconds_of(replaced[0]), seconds_of(recycles[1]));

    const auto lines = fixture.drain(std::chrono::milliseconds(500));
    std::set<std::string> exited;
    for (const auto& line : lines) {
        if (line.rfind("exited ", 0) == 0) {
            exited.insert(line.substr(7, line.find(' ', 7) - 7));
        }
    }
    EXPECT_EQ(exited, (std::set<std::string>{std::to_string(fixture.child("big1")),
                                             std::to_string(fixture.child("big2"))}));
    EXPECT_TRUE(alive_child_of(fixture.child("small"), fixture.manager()));
    EXPECT_EQ(kill(fixture.manager(), 0), 0) << "the manager is never signalled";
}

TEST(Reap, DryRunDecidesTheSameAndSignalsNobody) {
    KR_REQUIRE_BPF();
    FixtureProcess fixture({"--preload", "16M", "--respawn", "--child", "big1=leak:24M", "--child",
                            "big2=leak:20M", "--child", "small=idle"});
    fixture.wait_ready();
    fixture.go_and_wait_done(3);
    const auto result =
        run_command(reap_command(fixture.manager(), {"--dry-run"}), std::chrono::seconds(60));
    ASSERT_EQ(result.exit_status, 0) << result.output;
    const auto recycles = reap_events(result.output, "recycle");
    ASSERT_EQ(recycles.size(), 2u) << result.output;
    EXPECT_EQ(recycles[0].at("pid"), fixture.child("big1"));
    EXPECT_EQ(recycles[1].at("pid"), fixture.child("big2"));
    for (const auto& recycle : recycles) {
        EXPECT_EQ(recycle.at("dry_run"), true);
    }
    for (const auto& line : fixture.drain(std::chrono::milliseconds(500))) {
        EXPECT_NE(line.rfind("exited ", 0), 0u) << "dry run signalled someone: " << line;
    }
    for (const auto& [name, pid] : fixture.children()) {
        EXPECT_TRUE(alive_child_of(pid, fixture.manager())) << name;
    }
}

TEST(Reap, MinChildrenHoldsTheLastOnes) {
    KR_REQUIRE_BPF();
    const auto fixture_owner = big_and_small();
    FixtureProcess& fixture = *fixture_owner;
    const auto result = run_command(reap_command(fixture.manager(), {"--min-children", "2"}),
                                    std::chrono::seconds(30));
    ASSERT_EQ(result.exit_status, 0) << result.output;
    EXPECT_TRUE(reap_events(result.output, "recycle").empty()) << result.output;
    const auto held = reap_events(result.output, "held");
    ASSERT_EQ(held.size(), 1u) << result.output;
    EXPECT_EQ(held[0].at("pid"), fixture.child("big1"));
    EXPECT_TRUE(alive_child_of(fixture.child("big1"), fixture.manager()));
}

TEST(Reap, ManagerGoneEndsWithAnErrorAndSignalsNobody) {
    KR_REQUIRE_BPF();
    auto fixture = std::make_unique<FixtureProcess>(
        std::vector<std::string>{"--preload", "4M", "--child", "small=idle"});
    fixture->wait_ready();
    const pid_t manager = fixture->manager();
    auto argv = reap_command(manager, {});
    argv.erase(std::find(argv.begin(), argv.end(), "--once"));
    const int programs_before = testing::count_loaded_programs();
    pid_t stopper = fork();
    if (stopper == 0) {
        testing::wait_until_kidreaper_runs(programs_before);
        kill(manager, SIGKILL);
        _exit(0);
    }
    const auto result = run_command(argv, std::chrono::seconds(30));
    waitpid(stopper, nullptr, 0);
    EXPECT_EQ(result.exit_status, 1) << result.output;
    const auto gone = reap_events(result.output, "manager-gone");
    ASSERT_EQ(gone.size(), 1u) << result.output;
    EXPECT_EQ(gone[0].at("manager"), manager);
    EXPECT_TRUE(reap_events(result.output, "recycle").empty());
}

std::string read_text(const std::string& path) {
    std::ifstream file(path);
    std::stringstream text;
    text << file.rdbuf();
    return text.str();
}

// A temporary file path, removed on destruction.
class TempPath {
public:
    TempPath() {
        char pattern[] = "/tmp/kr-reap-test-XXXXXX";
        const int fd = mkstemp(pattern);
        close(fd);
        path_ = pattern;
    }
    ~TempPath() { unlink(path_.c_str()); }
    TempPath(const TempPath&) = delete;
    TempPath& operator=(const TempPath&) = delete;
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

TEST(Reap, EscalatesToTheNextSignalAfterTheGrace) {
    KR_REQUIRE_BPF();
    const auto fixture_owner = big_and_small({"--children-ignore", "TERM"});
    FixtureProcess& fixture = *fixture_owner;
    const auto result =
        run_command(reap_command(fixture.manager(), {"--grace", "600ms", "--escalate"}),
                    std::chrono::seconds(30));
    ASSERT_EQ(result.exit_status, 0) << result.output;
    const auto recycles = reap_events(result.output, "recycle");
    ASSERT_EQ(recycles.size(), 1u) << result.output;
    EXPECT_EQ(recycles[0].at("signal"), "TERM");
    const auto escalations = reap_events(result.output, "escalate");
    ASSERT_EQ(escalations.size(), 1u) << result.output;
    EXPECT_EQ(escalations[0].at("pid"), fixture.child("big1"));
    EXPECT_EQ(escalations[0].at("signal"), "KILL");
    EXPECT_EQ(escalations[0].at("outcome"), "sent");
    EXPECT_GE(seconds_of(escalations[0]) - seconds_of(recycles[0]), 0.6);
    EXPECT_FALSE(alive_child_of(fixture.child("big1"), fixture.manager()));
}

TEST(Reap, WithoutEscalationAStubbornChildIsReportedAndLeftAlone) {
    KR_REQUIRE_BPF();
    const auto fixture_owner = big_and_small({"--children-ignore", "TERM"});
    FixtureProcess& fixture = *fixture_owner;
    auto argv = reap_command(fixture.manager(), {"--grace", "500ms"});
    argv.erase(std::find(argv.begin(), argv.end(), "--once"));
    // Stopped at the deadline: room for a slow start under emulation (qemu guests).
    const auto result = run_command(argv, std::chrono::seconds(8));
    const auto expired = reap_events(result.output, "grace-expired");
    ASSERT_EQ(expired.size(), 1u) << result.output;
    EXPECT_EQ(expired[0].at("pid"), fixture.child("big1"));
    EXPECT_TRUE(reap_events(result.output, "escalate").empty());
    EXPECT_TRUE(alive_child_of(fixture.child("big1"), fixture.manager()));
}

TEST(Reap, APreHookVetoesAndBothHooksSeeTheChild) {
    KR_REQUIRE_BPF();
    {
        const auto fixture_owner = big_and_small();
        FixtureProcess& fixture = *fixture_owner;
        const auto result = run_command(reap_command(fixture.manager(), {"--pre-hook", "exit 3"}),
                                        std::chrono::seconds(30));
        ASSERT_EQ(result.exit_status, 0) << result.output;
        EXPECT_TRUE(reap_events(result.output, "recycle").empty()) << result.output;
        const auto skips = reap_events(result.output, "skip");
        ASSERT_EQ(skips.size(), 1u) << result.output;
        EXPECT_NE(skips[0].at("reason").get<std::string>().find("pre-hook"), std::string::npos);
        EXPECT_TRUE(alive_child_of(fixture.child("big1"), fixture.manager()));
    }
    const auto fixture_owner = big_and_small();
    FixtureProcess& fixture = *fixture_owner;
    const TempPath record;
    const std::string append = " >> " + record.path();
    const auto result = run_command(
        reap_command(
            fixture.manager(),
            {"--pre-hook",
             "echo $KIDREAPER_EVENT $KIDREAPER_PID $KIDREAPER_SIGNAL $KIDREAPER_METRIC" + append,
             "--post-hook", "echo $KIDREAPER_EVENT $KIDREAPER_PID" + append}),
        std::chrono::seconds(30));
    ASSERT_EQ(result.exit_status, 0) << result.output;
    ASSERT_EQ(reap_events(result.output, "recycle").size(), 1u) << result.output;
    const std::string big1 = std::to_string(fixture.child("big1"));
    EXPECT_EQ(read_text(record.path()), "pre " + big1 + " TERM private\npost " + big1 + "\n");
}

TEST(Reap, FollowsARestartedManagerThroughItsPidfile) {
    KR_REQUIRE_BPF();
    FixtureProcess old_manager({"--preload", "8M", "--child", "small=idle"});
    old_manager.wait_ready();
    const auto new_manager_owner = big_and_small();
    FixtureProcess& new_manager = *new_manager_owner;
    const TempPath pidfile;
    std::ofstream(pidfile.path()) << old_manager.manager() << "\n";
    // The "restart": the pidfile is rewritten, then the old manager dies.
    const int programs_before = testing::count_loaded_programs();
    const pid_t restarter = fork();
    if (restarter == 0) {
        testing::wait_until_kidreaper_runs(programs_before);
        const std::string next = pidfile.path() + ".new";
        std::ofstream(next) << new_manager.manager() << "\n";
        rename(next.c_str(), pidfile.path().c_str());
        kill(old_manager.manager(), SIGKILL);
        _exit(0);
    }
    auto argv = reap_command(0, {});
    argv[3] = pidfile.path();
    argv[2] = "--pidfile";
    argv.erase(std::find(argv.begin(), argv.end(), "--once"));
    const auto result = run_command(argv, std::chrono::seconds(5));
    waitpid(restarter, nullptr, 0);
    const auto restarted = reap_events(result.output, "manager-restarted");
    ASSERT_EQ(restarted.size(), 1u) << result.output;
    EXPECT_EQ(restarted[0].at("old"), old_manager.manager());
    EXPECT_EQ(restarted[0].at("manager"), new_manager.manager());
    const auto recycles = reap_events(result.output, "recycle");
    ASSERT_EQ(recycles.size(), 1u) << result.output;
    EXPECT_EQ(recycles[0].at("pid"), new_manager.child("big1"));
}

TEST(Reap, StopsCleanlyOnSigintAndLeavesNoProgramBehind) {
    KR_REQUIRE_BPF();
    FixtureProcess fixture({"--preload", "4M", "--child", "small=idle"});
    fixture.wait_ready();
    auto argv = reap_command(fixture.manager(), {});
    argv.erase(std::find(argv.begin(), argv.end(), "--once"));
    const int programs_before = testing::count_loaded_programs();
    const pid_t parent = getpid();
    const pid_t interrupter = fork();
    if (interrupter == 0) {
        testing::wait_until_kidreaper_runs(programs_before);
        // The newest kidreaper child of the test process is the one run_command started.
        for (pid_t pid : ProcFs().children_of(parent)) {
            const auto stat = ProcFs().stat(pid);
            if (stat && stat->comm == "kidreaper") {
                kill(pid, SIGINT);
            }
        }
        _exit(0);
    }
    const auto result = run_command(argv, std::chrono::seconds(20));
    waitpid(interrupter, nullptr, 0);
    EXPECT_EQ(result.exit_status, 0) << result.output;
    const auto stops = reap_events(result.output, "stop");
    ASSERT_EQ(stops.size(), 1u) << result.output;
    EXPECT_EQ(stops[0].at("reason"), "signal INT");
    EXPECT_EQ(testing::wait_for_loaded_programs(programs_before), programs_before);
    EXPECT_TRUE(alive_child_of(fixture.child("small"), fixture.manager()));
}

TEST(Reap, AManagerThatRemovesItsPidfileIsGone) {
    KR_REQUIRE_BPF();
    FixtureProcess fixture({"--preload", "4M", "--child", "small=idle"});
    fixture.wait_ready();
    const TempPath pidfile;
    std::ofstream(pidfile.path()) << fixture.manager() << "\n";
    const pid_t manager = fixture.manager();
    const int programs_before = testing::count_loaded_programs();
    const pid_t stopper = fork();
    if (stopper == 0) {
        testing::wait_until_kidreaper_runs(programs_before);
        unlink(pidfile.path().c_str());  // as FCGI::ProcManager does when it stops
        kill(manager, SIGKILL);
        _exit(0);
    }
    auto argv = reap_command(0, {});
    argv[2] = "--pidfile";
    argv[3] = pidfile.path();
    argv.erase(std::find(argv.begin(), argv.end(), "--once"));
    const auto result = run_command(argv, std::chrono::seconds(20));
    waitpid(stopper, nullptr, 0);
    EXPECT_EQ(result.exit_status, 1) << result.output;
    const auto gone = reap_events(result.output, "manager-gone");
    ASSERT_EQ(gone.size(), 1u) << result.output;
    EXPECT_EQ(gone[0].at("manager"), manager);
    EXPECT_EQ(gone[0].at("action"), "exit");
}

TEST(Reap, WaitsForAManagerThatIsNotThereYet) {
    KR_REQUIRE_BPF();
    const auto fixture_owner = big_and_small();
    FixtureProcess& fixture = *fixture_owner;
    const TempPath pidfile;
    unlink(pidfile.path().c_str());
    const int programs_before = testing::count_loaded_programs();
    const pid_t writer = fork();
    if (writer == 0) {
        // Only once kidreaper is up (its programs loaded) and has looked a few times: on a
        // slow (emulated) kernel its start-up alone can take seconds.
        testing::wait_until_kidreaper_runs(programs_before);
        std::ofstream(pidfile.path()) << fixture.manager() << "\n";
        _exit(0);
    }
    auto argv = reap_command(0, {"--wait-for-manager"});
    argv[2] = "--pidfile";
    argv[3] = pidfile.path();
    const auto result = run_command(argv, std::chrono::seconds(40));
    waitpid(writer, nullptr, 0);
    EXPECT_EQ(result.exit_status, 0) << result.output;
    ASSERT_EQ(reap_events(result.output, "manager-found").size(), 1u) << result.output;
    const auto recycles = reap_events(result.output, "recycle");
    ASSERT_EQ(recycles.size(), 1u) << result.output;
    EXPECT_EQ(recycles[0].at("pid"), fixture.child("big1"));
}

TEST(Reap, RefusesAHostilePidfile) {
    const TempPath pidfile;
    std::ofstream(pidfile.path()) << "1\n";
    auto argv = reap_command(0, {});
    argv[2] = "--pidfile";
    argv[3] = pidfile.path();
    const auto result = run_command(argv, std::chrono::seconds(10));
    EXPECT_EQ(result.exit_status, 2);
    EXPECT_TRUE(result.output.empty()) << "no events: " << result.output;
}

}  // namespace
}  // namespace kidreaper

// Inside a pid namespace of its own (a container without hostPID) kidreaper would see pids
// the kernel side does not report: it refuses with one line naming the namespace, exit 1.
TEST(ReapPidNamespace, RefusesToRunInsideAPidNamespace) {
    int pipe_fds[2];
    ASSERT_EQ(pipe(pipe_fds), 0);
    const std::string kidreaper = kidreaper::testing::sibling_path("../kidreaper");
    const pid_t outer = fork();
    ASSERT_GE(outer, 0);
    if (outer == 0) {
        // The next fork lands in a new pid namespace: that child is its pid 1.
        if (unshare(CLONE_NEWPID) != 0) {
            _exit(120);
        }
        const pid_t inner = fork();
        if (inner == 0) {
            dup2(pipe_fds[1], STDERR_FILENO);
            close(pipe_fds[0]);
            execl(kidreaper.c_str(), kidreaper.c_str(), "reap", "--pid", "99999", "--limit", "1G",
                  static_cast<char*>(nullptr));
            _exit(121);
        }
        int status = 0;
        waitpid(inner, &status, 0);
        _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 122);
    }
    close(pipe_fds[1]);
    std::string errors;
    char buffer[512];
    for (ssize_t got; (got = read(pipe_fds[0], buffer, sizeof buffer)) > 0;) {
        errors.append(buffer, static_cast<std::size_t>(got));
    }
    close(pipe_fds[0]);
    int status = 0;
    ASSERT_EQ(waitpid(outer, &status, 0), outer);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 1) << errors;
    EXPECT_NE(errors.find("kidreaper runs in pid namespace pid:["), std::string::npos) << errors;
    EXPECT_EQ(std::count(errors.begin(), errors.end(), '\n'), 1) << "one line: " << errors;
}
