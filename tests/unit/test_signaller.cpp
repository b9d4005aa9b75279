// The pidfd signaller against real processes: the test process is the "manager" of the
// children it forks, so no root is needed.
#include "act/signaller.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

#include "common/error.h"
#include "expect_usage_error.h"
#include "observe/procfs.h"
#include "policy/server_presets.h"

namespace kidreaper {
namespace {

// A child that sleeps until signalled; killed and reaped on destruction.
class SleepingChild {
public:
    SleepingChild() {
        pid_ = fork();
        if (pid_ == 0) {
            pause();
            _exit(0);
        }
    }
    ~SleepingChild() {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
    }
    SleepingChild(const SleepingChild&) = delete;
    SleepingChild& operator=(const SleepingChild&) = delete;
    pid_t pid() const { return pid_; }
    // The signal that ended it, or 0 when it is still alive after a moment.
    int ended_by() const {
        for (int attempt = 0; attempt < 100; ++attempt) {
            int status = 0;
            if (waitpid(pid_, &status, WNOHANG) == pid_) {
                return WIFSIGNALED(status) ? WTERMSIG(status) : -1;
            }
            usleep(10'000);
        }
        return 0;
    }

private:
    pid_t pid_ = -1;
};

std::uint64_t start_ticks(pid_t pid) {
    const auto stat = ProcFs().stat(pid);
    return stat ? stat->start_ticks : 0;
}

TEST(PidfdSignaller, SignalsTheVerifiedChild) {
    const ProcFs proc;
    PidfdSignaller signaller(proc);
    SleepingChild child;
    usleep(20'000);
    const SignalTarget target{child.pid(), start_ticks(child.pid()), getpid()};
    EXPECT_EQ(signaller.send(target, SIGUSR1), SignalOutcome::sent);
    EXPECT_EQ(child.ended_by(), SIGUSR1);
}

TEST(PidfdSignaller, LeavesAProcessWithAnotherStartTimeAlone) {
    const ProcFs proc;
    PidfdSignaller signaller(proc);
    SleepingChild child;
    usleep(20'000);
    const SignalTarget reused{child.pid(), start_ticks(child.pid()) + 1, getpid()};
    EXPECT_EQ(signaller.send(reused, SIGUSR1), SignalOutcome::not_our_child);
    EXPECT_EQ(child.ended_by(), 0) << "a pid whose start time differs is a stranger";
}

TEST(PidfdSignaller, LeavesAnotherManagersChildAlone) {
    const ProcFs proc;
    PidfdSignaller signaller(proc);
    SleepingChild child;
    usleep(20'000);
    const SignalTarget elsewhere{child.pid(), start_ticks(child.pid()), getppid()};
    EXPECT_EQ(signaller.send(elsewhere, SIGUSR1), SignalOutcome::not_our_child);
    EXPECT_EQ(child.ended_by(), 0);
}

TEST(PidfdSignaller, NeverTheManagerInitOrItself) {
    const ProcFs proc;
    PidfdSignaller signaller(proc);
    EXPECT_EQ(signaller.send({getpid(), start_ticks(getpid()), getppid()}, SIGUSR1),
              SignalOutcome::forbidden);
    EXPECT_EQ(signaller.send({1, start_ticks(1), 0}, SIGUSR1), SignalOutcome::forbidden);
    EXPECT_EQ(signaller.send({getppid(), 0, getppid()}, SIGUSR1), SignalOutcome::forbidden);
    EXPECT_EQ(signaller.send({0, 0, getpid()}, SIGUSR1), SignalOutcome::forbidden);
    EXPECT_EQ(signaller.send({-5, 0, getpid()}, SIGUSR1), SignalOutcome::forbidden);
}

TEST(PidfdSignaller, AGoneChildIsReportedGone) {
    const ProcFs proc;
    PidfdSignaller signaller(proc);
    pid_t pid = fork();
    if (pid == 0) {
        _exit(0);
    }
    waitpid(pid, nullptr, 0);
    EXPECT_EQ(signaller.send({pid, 1, getpid()}, SIGUSR1), SignalOutcome::gone);
}

TEST(ServerPresets, GracefulSignalsMatchEachServersDocs) {
    EXPECT_EQ(find_server_preset("fcgi").signals.front(), SIGHUP);
    EXPECT_EQ(find_server_preset("httpd-prefork").signals.front(), SIGUSR1);
    EXPECT_EQ(find_server_preset("gunicorn").signals.front(), SIGTERM);
    EXPECT_EQ(find_server_preset("uwsgi").signals.front(), SIGHUP);
    EXPECT_EQ(find_server_preset("php-fpm").signals.front(), SIGQUIT);
    EXPECT_EQ(find_server_preset("unicorn").signals.front(), SIGQUIT);
    EXPECT_EQ(find_server_preset("puma").signals.front(), SIGTERM);
    EXPECT_EQ(find_server_preset("starman").signals.front(), SIGHUP);
    for (const auto& preset : server_presets()) {
        EXPECT_EQ(preset.signals.back(), SIGKILL) << preset.name << " ends with KILL";
        EXPECT_FALSE(preset.idle_syscalls.empty()) << preset.name;
    }
    EXPECT_THROW(find_server_preset("nginx"), UsageError);
}

TEST(Signals, ParseNamesAndNumbers) {
    EXPECT_EQ(parse_signal("HUP"), SIGHUP);
    EXPECT_EQ(parse_signal("sigusr1"), SIGUSR1);
    EXPECT_EQ(parse_signal("SIGTERM"), SIGTERM);
    EXPECT_EQ(parse_signal("9"), SIGKILL);
    EXPECT_EQ(signal_name(SIGQUIT), "QUIT");
    for (const char* bad : {"", "FOO", "0", "65", "-1", "HUP2", "1x"}) {
        EXPECT_THROW(parse_signal(bad), UsageError) << bad;
    }
}

// Found by tests/fuzz/fuzz_signal.cpp: the user's text went into the message as it was.
TEST(Signals, BadNameGivesAOneLineMessage) {
    using testing::usage_error_message;
    EXPECT_EQ(usage_error_message([] { parse_signal("HUP\n"); }),
              "invalid signal \"HUP\\x0a\": expected a name such as HUP, TERM, USR1, QUIT or a "
              "number");
    EXPECT_EQ(usage_error_message([] { parse_signal("a\"b\\c\x1b"); }),
              "invalid signal \"a\\x22b\\x5cc\\x1b\": expected a name such as HUP, TERM, USR1, "
              "QUIT or a number");
    const std::string message = usage_error_message([] { parse_signal(std::string(100, 'X')); });
    EXPECT_TRUE(testing::contains(message, "\"" + std::string(64, 'X') + "...\"")) << message;
}

}  // namespace
}  // namespace kidreaper
