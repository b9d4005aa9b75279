// `kidreaper reap`'s hooks with the real binary: every failure is a veto (even when kidreaper
// inherits SIGCHLD ignored), a stop request wins over a running hook, a hook's output never
// mixes into the JSON event stream, and nothing a hook started outlives --hook-timeout.
#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>
#include <regex>
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
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::big_and_small;
using testing::FixtureProcess;
using testing::reap_argv;
using testing::reap_events;
using testing::run_command_with_stderr;

std::vector<std::string> reap_once(const FixtureProcess& fixture,
                                   const std::vector<std::string>& extra) {
    auto argv = reap_argv({"--pid", std::to_string(fixture.manager())}, extra);
    argv.emplace_back("--once");
    return argv;
}

bool alive_child_of(pid_t pid, pid_t manager) {
    const auto stat = ProcFs().stat(pid);
    return stat && stat->ppid == manager && stat->state != 'Z';
}

// No fixture child exited (was signalled) and all are alive.
void expect_children_untouched(FixtureProcess& fixture) {
    for (const auto& line : fixture.drain(milliseconds(300))) {
        EXPECT_NE(line.rfind("exited ", 0), 0u) << "a child was signalled: " << line;
    }
    for (const auto& [name, pid] : fixture.children()) {
        EXPECT_TRUE(alive_child_of(pid, fixture.manager())) << name;
    }
}

// A path under /tmp for a hook to write, removed on destruction (it does not exist yet).
class ScratchPath {
public:
    ScratchPath() {
        char pattern[] = "/tmp/kr-hook-XXXXXX";
        const int fd = mkstemp(pattern);
        close(fd);
        path_ = pattern;
        unlink(path_.c_str());
    }
    ~ScratchPath() {
        unlink(path_.c_str());
        unlink((path_ + ".tmp").c_str());
    }
    ScratchPath(const ScratchPath&) = delete;
    ScratchPath& operator=(const ScratchPath&) = delete;
    const std::string& path() const { return path_; }
    std::string text() const {
        std::ifstream file(path_);
        std::stringstream content;
        content << file.rdbuf();
        return content.str();
    }

private:
    std::string path_;
};

std::vector<pid_t> pids_in(const std::string& text) {
    std::vector<pid_t> pids;
    std::stringstream stream(text);
    for (long pid = 0; stream >> pid;) {
        pids.push_back(static_cast<pid_t>(pid));
    }
    return pids;
}

// Live (not zombie) processes whose process group is `group`.
std::vector<pid_t> live_members_of(pid_t group) {
    std::vector<pid_t> members;
    const std::unique_ptr<DIR, int (*)(DIR*)> proc(opendir("/proc"), closedir);
    while (dirent* entry = readdir(proc.get())) {
        const std::string name = entry->d_name;
        if (name.find_first_not_of("0123456789") != std::string::npos) {
            continue;
        }
        std::ifstream file("/proc/" + name + "/stat");
        std::string line;
        std::getline(file, line);
        const auto close_paren = line.rfind(')');
        if (close_paren == std::string::npos) {
            continue;
        }
        std::stringstream fields(line.substr(close_paren + 2));
        char state = '?';
        long ppid = 0;
        long pgrp = 0;
        fields >> state >> ppid >> pgrp;
        if (pgrp == group && state != 'Z') {
            members.push_back(static_cast<pid_t>(std::stol(name)));
        }
    }
    return members;
}

// True once `pid` is gone or a zombie (init reaps it in its own time), within `limit`.
bool dies_within(pid_t pid, milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (true) {
        const auto stat = ProcFs().stat(pid);
        if (!stat || stat->state == 'Z') {
            return true;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            return false;
        }
        usleep(20'000);
    }
}

TEST(ReapHooks, AVetoHoldsWhenKidreaperInheritsSigchldIgnored) {
    KR_REQUIRE_BPF();
    const auto fixture_owner = big_and_small();
    FixtureProcess& fixture = *fixture_owner;
    const ScratchPath runs;
    const auto result = run_command_with_stderr(
        reap_once(fixture, {"--pre-hook", "echo run >> " + runs.path() + "; exit 1"}), seconds(60),
        {SIGCHLD});
    ASSERT_EQ(result.exit_status, 0) << result.output << result.errors;
    EXPECT_TRUE(reap_events(result.output, "recycle").empty()) << result.output;
    const auto skips = reap_events(result.output, "skip");
    ASSERT_FALSE(skips.empty()) << result.output;
    const std::string hook_runs = runs.text();
    EXPECT_EQ(skips.size(),
              static_cast<std::size_t>(std::count(hook_runs.begin(), hook_runs.end(), '\n')))
        << "one skip per veto: " << result.output;
    for (const auto& skip : skips) {
        EXPECT_EQ(skip.at("pid"), fixture.child("big1"));
        // The exact status: kidreaper reset SIGCHLD, so it could wait for the hook.
        EXPECT_EQ(skip.at("reason"), "pre-hook vetoed it (exit status 1)") << skip;
    }
    expect_children_untouched(fixture);
}

TEST(ReapHooks, SigtermDuringASlowPreHookStopsAtOnceAndSignalsNobody) {
    KR_REQUIRE_BPF();
    const auto fixture_owner = big_and_small();
    FixtureProcess& fixture = *fixture_owner;
    const ScratchPath started;
    const pid_t parent = getpid();
    const pid_t stopper = fork();
    if (stopper == 0) {
        // Once the hook runs: SIGTERM to kidreaper (the test's kidreaper child), then it must
        // be gone within 10 s (a zombie, waiting for run_command to reap it).
        for (int attempt = 0; attempt < 1200 && access(started.path().c_str(), F_OK) != 0;
             ++attempt) {
            usleep(50'000);
        }
        pid_t kidreaper_pid = 0;
        for (const pid_t pid : ProcFs().children_of(parent)) {
            const auto stat = ProcFs().stat(pid);
            if (stat && stat->comm == "kidreaper") {
                kidreaper_pid = pid;
            }
        }
        if (kidreaper_pid == 0 || kill(kidreaper_pid, SIGTERM) != 0) {
            _exit(2);
        }
        _exit(dies_within(kidreaper_pid, seconds(10)) ? 0 : 3);
    }
    const std::string hook = "echo $$ > " + started.path() + ".tmp && mv " + started.path() +
                             ".tmp " + started.path() + "; sleep 30";
    const auto result = run_command_with_stderr(
        reap_once(fixture, {"--pre-hook", hook, "--hook-timeout", "120s"}), seconds(100));
    int stopper_status = 0;
    waitpid(stopper, &stopper_status, 0);
    ASSERT_TRUE(WIFEXITED(stopper_status));
    EXPECT_NE(WEXITSTATUS(stopper_status), 2) << "the hook never ran, or kidreaper not found";
    EXPECT_EQ(WEXITSTATUS(stopper_status), 0) << "kidreaper took more than 10 s to stop";
    EXPECT_EQ(result.exit_status, 0) << result.output << result.errors;
    const auto stops = reap_events(result.output, "stop");
    ASSERT_EQ(stops.size(), 1u) << result.output;
    EXPECT_EQ(stops[0].at("reason"), "signal TERM");
    EXPECT_TRUE(reap_events(result.output, "recycle").empty()) << result.output;
    expect_children_untouched(fixture);
    const auto hook_pids = pids_in(started.text());
    ASSERT_EQ(hook_pids.size(), 1u) << started.text();
    // The hook led its own process group (its sleep included): none of it may be left.
    const auto deadline = std::chrono::steady_clock::now() + seconds(5);
    while (!live_members_of(hook_pids[0]).empty() && std::chrono::steady_clock::now() < deadline) {
        usleep(20'000);
    }
    EXPECT_TRUE(live_members_of(hook_pids[0]).empty()) << "the hook's group lives on";
}

TEST(ReapHooks, HookOutputGoesToStderrPrefixedAndStdoutStaysJson) {
    KR_REQUIRE_BPF();
    const auto fixture_owner = big_and_small();
    FixtureProcess& fixture = *fixture_owner;
    const auto result = run_command_with_stderr(
        reap_once(fixture, {"--pre-hook", "echo pre-out; echo pre-err >&2; printf 'pre-last'",
                            "--post-hook", "echo post-out; exit 4"}),
        seconds(60));
    ASSERT_EQ(result.exit_status, 0) << result.output << result.errors;
    std::stringstream lines(result.output);
    for (std::string line; std::getline(lines, line);) {
        EXPECT_TRUE(json::accept(line)) << "not JSON: " << line;
    }
    EXPECT_EQ(result.output.find("pre-out"), std::string::npos);
    EXPECT_EQ(result.output.find("post-out"), std::string::npos);
    for (const char* expected : {"kidreaper: pre-hook\\[[0-9]+\\]: pre-out\n",
                                 "kidreaper: pre-hook\\[[0-9]+\\]: pre-err\n",
                                 "kidreaper: pre-hook\\[[0-9]+\\]: pre-last\n",
                                 "kidreaper: post-hook\\[[0-9]+\\]: post-out\n"}) {
        EXPECT_TRUE(std::regex_search(result.errors, std::regex(expected)))
            << expected << " not in stderr:\n"
            << result.errors;
    }
    ASSERT_EQ(reap_events(result.output, "recycle").size(), 1u) << result.output;
    const auto post = reap_events(result.output, "post-hook");
    ASSERT_EQ(post.size(), 1u) << result.output;
    EXPECT_EQ(post[0].at("outcome"), "exited");
    EXPECT_EQ(post[0].at("status"), 4);
}

TEST(ReapHooks, NothingAHookStartedOutlivesTheTimeoutAndTheVetoHolds) {
    KR_REQUIRE_BPF();
    const auto fixture_owner = big_and_small();
    FixtureProcess& fixture = *fixture_owner;
    const ScratchPath grandchildren;
    const auto result = run_command_with_stderr(
        reap_once(fixture,
                  {"--pre-hook", "sleep 300 & echo $! >> " + grandchildren.path() + "; wait",
                   "--hook-timeout", "1s"}),
        seconds(60));
    ASSERT_EQ(result.exit_status, 0) << result.output << result.errors;
    EXPECT_TRUE(reap_events(result.output, "recycle").empty()) << result.output;
    const auto skips = reap_events(result.output, "skip");
    ASSERT_FALSE(skips.empty()) << result.output;
    for (const auto& skip : skips) {
        EXPECT_EQ(skip.at("reason"), "pre-hook vetoed it (timed out after 1.0s)") << skip;
    }
    const auto sleepers = pids_in(grandchildren.text());
    ASSERT_EQ(sleepers.size(), skips.size()) << grandchildren.text();
    for (const pid_t sleeper : sleepers) {
        EXPECT_TRUE(dies_within(sleeper, seconds(5))) << "grandchild " << sleeper << " lives on";
    }
    expect_children_untouched(fixture);
}

}  // namespace
}  // namespace kidreaper
