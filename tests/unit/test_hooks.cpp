// The hook runner against real shells (no root needed): outcomes, the process group, the
// timeout, output relayed to the stream given, and stop requests.
#include "act/hooks.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "act/signals.h"
#include "observe/procfs.h"

namespace kidreaper {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// A temporary file for the hook's output (or a pid it writes), removed on destruction.
class TempFile {
public:
    TempFile() {
        char pattern[] = "/tmp/kr-hook-test-XXXXXX";
        fd_ = mkstemp(pattern);
        path_ = pattern;
    }
    ~TempFile() {
        close(fd_);
        unlink(path_.c_str());
    }
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    int fd() const { return fd_; }
    const std::string& path() const { return path_; }
    std::string text() const {
        std::ifstream file(path_);
        std::stringstream content;
        content << file.rdbuf();
        return content.str();
    }

private:
    int fd_ = -1;
    std::string path_;
};

// Sets a signal's disposition for the test's lifetime.
class SignalDisposition {
public:
    SignalDisposition(int signal, sighandler_t handler)
        : signal_(signal), previous_(::signal(signal, handler)) {}
    ~SignalDisposition() { ::signal(signal_, previous_); }
    SignalDisposition(const SignalDisposition&) = delete;
    SignalDisposition& operator=(const SignalDisposition&) = delete;

private:
    int signal_;
    sighandler_t previous_;
};

HookRequest request_for(const std::string& command, milliseconds timeout = seconds(20)) {
    HookRequest request;
    request.label = "test-hook";
    request.command = command;
    request.timeout = timeout;
    return request;
}

HookResult run(const std::string& command, int output_fd, milliseconds timeout = seconds(20),
               std::vector<std::string> env = {}) {
    SignalGate gate;
    HookRequest request = request_for(command, timeout);
    request.env = std::move(env);
    return run_hook(request, gate, output_fd);
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::stringstream stream(text);
    for (std::string line; std::getline(stream, line);) {
        lines.push_back(line);
    }
    return lines;
}

// True once `pid` is gone or a zombie (its reaper may not have come by yet), within `limit`.
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
        usleep(10'000);
    }
}

pid_t pid_in(const TempFile& file) {
    const std::string text = file.text();
    return text.empty() ? 0 : static_cast<pid_t>(std::stol(text));
}

TEST(Hooks, ExitStatusZeroApprovesAndAnythingElseVetoes) {
    const TempFile output;
    const HookResult passed = run("exit 0", output.fd());
    EXPECT_EQ(passed.outcome, HookOutcome::exited);
    EXPECT_EQ(passed.status, 0);
    EXPECT_GT(passed.pid, 0);
    EXPECT_TRUE(approves(passed));
    EXPECT_EQ(describe(passed), "exit status 0");

    const HookResult vetoed = run("exit 3", output.fd());
    EXPECT_EQ(vetoed.outcome, HookOutcome::exited);
    EXPECT_EQ(vetoed.status, 3);
    EXPECT_FALSE(approves(vetoed));
    EXPECT_EQ(describe(vetoed), "exit status 3");
    EXPECT_EQ(hook_outcome_name(vetoed.outcome), "exited");
}

TEST(Hooks, AHookKilledByASignalVetoes) {
    const TempFile output;
    const HookResult result = run("kill -USR1 $$; sleep 5", output.fd());
    EXPECT_EQ(result.outcome, HookOutcome::killed_by_signal);
    EXPECT_EQ(result.signal, SIGUSR1);
    EXPECT_FALSE(approves(result));
    EXPECT_EQ(describe(result), "killed by signal " + std::to_string(SIGUSR1));
}

TEST(Hooks, TheTimeoutKillsTheWholeGroupAndVetoes) {
    const TempFile output;
    const TempFile grandchild;
    const auto started = std::chrono::steady_clock::now();
    const HookResult result =
        run("sleep 300 & echo $! > " + grandchild.path() + "; wait", output.fd(), seconds(1));
    EXPECT_LT(std::chrono::steady_clock::now() - started, seconds(10));
    EXPECT_EQ(result.outcome, HookOutcome::timed_out);
    EXPECT_FALSE(approves(result));
    EXPECT_EQ(describe(result), "timed out after 1.0s");
    const pid_t sleeper = pid_in(grandchild);
    ASSERT_GT(sleeper, 0) << "the hook did not get to start its child within the timeout";
    EXPECT_TRUE(dies_within(sleeper, seconds(5))) << "grandchild " << sleeper << " outlived it";
}

TEST(Hooks, WhatAHookLeftBehindDiesWhenItExits) {
    const TempFile output;
    const TempFile grandchild;
    const auto started = std::chrono::steady_clock::now();
    // The backgrounded sleep holds the output pipe: the runner must not wait for it.
    const HookResult result =
        run("sleep 300 & echo $! > " + grandchild.path() + "; exit 0", output.fd());
    EXPECT_LT(std::chrono::steady_clock::now() - started, seconds(10));
    EXPECT_TRUE(approves(result));
    const pid_t sleeper = pid_in(grandchild);
    ASSERT_GT(sleeper, 0);
    EXPECT_TRUE(dies_within(sleeper, seconds(5))) << "grandchild " << sleeper << " lingers";
}

TEST(Hooks, OutputGoesToTheGivenStreamPrefixedLineByLine) {
    const TempFile output;
    const HookResult result =
        run("echo to-stdout; echo to-stderr >&2; printf 'no newline'", output.fd());
    ASSERT_TRUE(approves(result)) << describe(result);
    const std::string prefix = "kidreaper: test-hook[" + std::to_string(result.pid) + "]: ";
    EXPECT_EQ(lines_of(output.text()),
              (std::vector<std::string>{prefix + "to-stdout", prefix + "to-stderr",
                                        prefix + "no newline"}));
}

TEST(Hooks, ALongLineComesOutInPrefixedPieces) {
    const TempFile output;
    const HookResult result =
        run("head -c 10000 /dev/zero | tr '\\0' x; echo; echo end", output.fd());
    ASSERT_TRUE(approves(result)) << describe(result);
    const std::string prefix = "kidreaper: test-hook[" + std::to_string(result.pid) + "]: ";
    const auto lines = lines_of(output.text());
    ASSERT_GE(lines.size(), 3u) << output.text();
    std::size_t xs = 0;
    for (const auto& line : lines) {
        ASSERT_EQ(line.rfind(prefix, 0), 0u) << line;
        EXPECT_LE(line.size() - prefix.size(), 4096u);
        xs += line.substr(prefix.size()).find_first_not_of('x') == std::string::npos
                  ? line.size() - prefix.size()
                  : 0;
    }
    EXPECT_EQ(xs, 10000u);
    EXPECT_EQ(lines.back(), prefix + "end");
}

TEST(Hooks, NothingReachesOurStdout) {
    const TempFile output;
    const TempFile stdout_copy;
    std::fflush(stdout);
    const int saved = dup(STDOUT_FILENO);
    dup2(stdout_copy.fd(), STDOUT_FILENO);
    const HookResult result = run("echo loud; echo louder >&2", output.fd());
    dup2(saved, STDOUT_FILENO);
    close(saved);
    EXPECT_TRUE(approves(result));
    EXPECT_EQ(stdout_copy.text(), "");
    EXPECT_EQ(lines_of(output.text()).size(), 2u) << output.text();
}

TEST(Hooks, AShellThatCannotRunVetoes) {
    const TempFile output;
    SignalGate gate;
    HookRequest request = request_for("exit 0");
    request.shell = "/nonexistent/sh";
    const HookResult result = run_hook(request, gate, output.fd());
    EXPECT_EQ(result.outcome, HookOutcome::spawn_failed);
    EXPECT_EQ(result.pid, 0);
    EXPECT_FALSE(approves(result));
    EXPECT_EQ(describe(result).rfind("could not run: /nonexistent/sh: ", 0), 0u)
        << describe(result);
}

TEST(Hooks, WithSigchldIgnoredAVetoIsStillAVeto) {
    // The kernel reaps the hook itself then: its status is lost, so nothing is approved.
    const SignalDisposition ignored(SIGCHLD, SIG_IGN);
    const TempFile output;
    for (const char* command : {"exit 1", "sleep 0.2; exit 1", "exit 0"}) {
        const HookResult result = run(command, output.fd());
        EXPECT_FALSE(approves(result)) << command << ": " << describe(result);
        EXPECT_NE(result.outcome, HookOutcome::exited) << command;
    }
}

// The hex mask of a /proc/self/status line ("SigBlk:", "SigIgn:") as the hook sees it: `exec`
// makes the shell itself the reader, at its own mask.
std::uint64_t hook_signal_mask(const std::string& field) {
    const TempFile output;
    const HookResult result =
        run("exec sed -n 's/^" + field + "[[:space:]]*//p' /proc/self/status", output.fd());
    EXPECT_TRUE(approves(result)) << describe(result);
    const auto lines = lines_of(output.text());
    if (lines.size() != 1) {
        ADD_FAILURE() << output.text();
        return ~std::uint64_t{0};
    }
    const std::string mask = lines[0].substr(lines[0].rfind(' ') + 1);
    return std::stoull(mask, nullptr, 16);
}

TEST(Hooks, AHookGetsNoneOfOurBlockedOrIgnoredSignals) {
    // run() holds a SignalGate: INT, TERM and HUP are blocked in the test process meanwhile.
    const SignalDisposition ignored(SIGUSR2, SIG_IGN);
    EXPECT_EQ(hook_signal_mask("SigBlk:"), 0u);
    // The C library's internal real-time signals (32, 33) are its own business.
    constexpr std::uint64_t standard_signals = (std::uint64_t{1} << 31) - 1;  // 1 to 31
    const std::uint64_t ignored_mask = hook_signal_mask("SigIgn:");
    EXPECT_EQ(ignored_mask & standard_signals, 0u) << std::hex << ignored_mask;
}

TEST(Hooks, AHookLeadsItsOwnGroupWithOurEnvironmentPlusItsOwn) {
    setenv("KR_HOOK_TEST", "inherited", 1);
    setenv("KR_HOOK_OTHER", "kept", 1);
    const TempFile output;
    const HookResult result =
        run("[ \"$(cut -d' ' -f5 /proc/$$/stat)\" = $$ ] || exit 10; "
            "[ \"$KR_HOOK_TEST\" = given ] || exit 11; "
            "[ \"$KR_HOOK_OTHER\" = kept ] || exit 12; "
            "cat; exit 0",  // stdin is /dev/null: cat ends at once
            output.fd(), seconds(20), {"KR_HOOK_TEST=given"});
    unsetenv("KR_HOOK_TEST");
    unsetenv("KR_HOOK_OTHER");
    EXPECT_TRUE(approves(result)) << describe(result) << "\n" << output.text();
}

TEST(Hooks, AHookInheritsNoDescriptorButItsThree) {
    const TempFile output;
    const TempFile held;  // an open descriptor of ours, without O_CLOEXEC
    ASSERT_GT(held.fd(), STDERR_FILENO);
    const HookResult result = run("[ ! -e /proc/self/fd/" + std::to_string(held.fd()) +
                                      " ] || exit 10; exec ls /proc/self/fd",
                                  output.fd());
    EXPECT_TRUE(approves(result)) << describe(result) << "\n" << output.text();
    std::vector<std::string> descriptors;
    const std::string prefix = "kidreaper: test-hook[" + std::to_string(result.pid) + "]: ";
    for (const auto& line : lines_of(output.text())) {
        descriptors.push_back(line.substr(prefix.size()));
    }
    // 0, 1, 2, and the one ls opened to list the directory.
    EXPECT_EQ(descriptors.size(), 4u) << output.text();
}

TEST(Hooks, AStopRequestKillsTheGroupAndStopsTheNextOne) {
    const TempFile output;
    const TempFile grandchild;
    const TempFile marker;
    unlink(marker.path().c_str());
    SignalGate gate;
    const auto started = std::chrono::steady_clock::now();
    const HookResult result = run_hook(
        request_for("sleep 300 & echo $! > " + grandchild.path() + "; kill -TERM $PPID; wait",
                    seconds(60)),
        gate, output.fd());
    EXPECT_LT(std::chrono::steady_clock::now() - started, seconds(10));
    EXPECT_EQ(result.outcome, HookOutcome::stopped);
    EXPECT_EQ(result.signal, SIGTERM);
    EXPECT_EQ(gate.received(), SIGTERM);
    EXPECT_FALSE(approves(result));
    EXPECT_EQ(describe(result), "stopped: kidreaper received TERM");
    const pid_t sleeper = pid_in(grandchild);
    ASSERT_GT(sleeper, 0);
    EXPECT_TRUE(dies_within(sleeper, seconds(5)));

    const HookResult next = run_hook(request_for("touch " + marker.path()), gate, output.fd());
    EXPECT_EQ(next.outcome, HookOutcome::stopped);
    EXPECT_EQ(next.pid, 0) << "not started";
    EXPECT_NE(access(marker.path().c_str(), F_OK), 0);
}

TEST(SignalGate, StaysPollableAndWaitsAsBefore) {
    SignalGate gate;
    const auto started = std::chrono::steady_clock::now();
    EXPECT_EQ(gate.wait_for(milliseconds(50)), 0);
    EXPECT_GE(std::chrono::steady_clock::now() - started, milliseconds(50));
    EXPECT_EQ(gate.collect(), 0);
    EXPECT_FALSE(gate.stop_requested());
    kill(getpid(), SIGTERM);
    EXPECT_EQ(gate.wait_for(seconds(5)), SIGTERM);
    EXPECT_EQ(gate.received(), SIGTERM);
    kill(getpid(), SIGINT);
    EXPECT_TRUE(gate.stop_requested());
    EXPECT_EQ(gate.received(), SIGTERM) << "the first one is kept";
}

TEST(SignalGate, HangupIsAReloadRequestNotAStop) {
    SignalGate gate;
    EXPECT_FALSE(gate.take_reload());
    kill(getpid(), SIGHUP);
    const auto started = std::chrono::steady_clock::now();
    EXPECT_EQ(gate.wait_for(seconds(30)), 0) << "a hangup is not a termination signal";
    EXPECT_LT(std::chrono::steady_clock::now() - started, seconds(30))
        << "the wait ends early so the reload is prompt";
    EXPECT_FALSE(gate.stop_requested());
    EXPECT_TRUE(gate.take_reload());
    EXPECT_FALSE(gate.take_reload()) << "taken once";
}

TEST(Signals, ResetClearsInheritedDispositionsAndMask) {
    struct sigaction saved_action {};
    sigaction(SIGCHLD, nullptr, &saved_action);
    sigset_t saved_mask;
    sigprocmask(SIG_SETMASK, nullptr, &saved_mask);
    signal(SIGCHLD, SIG_IGN);
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_BLOCK, &term, nullptr);

    reset_inherited_signals();

    struct sigaction now {};
    sigaction(SIGCHLD, nullptr, &now);
    EXPECT_EQ(now.sa_handler, SIG_DFL);
    sigset_t mask;
    sigprocmask(SIG_SETMASK, nullptr, &mask);
    EXPECT_FALSE(sigismember(&mask, SIGTERM));
    sigaction(SIGCHLD, &saved_action, nullptr);
    sigprocmask(SIG_SETMASK, &saved_mask, nullptr);
}

}  // namespace
}  // namespace kidreaper
