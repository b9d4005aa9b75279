// ServiceNotifier against a notification socket of our own: the exact datagrams, the
// watchdog's interval and schedule, and silence without NOTIFY_SOCKET.
#include "daemon/notify.h"

#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <regex>
#include <string>

#include <gtest/gtest.h>

#include "test_env.h"

namespace kidreaper {
namespace {

using namespace std::chrono_literals;
using testing::NotifySocket;
using testing::ScopedEnv;

std::uint64_t monotonic_usec() {
    timespec now = {};
    clock_gettime(CLOCK_MONOTONIC, &now);
    return static_cast<std::uint64_t>(now.tv_sec) * 1000000U +
           static_cast<std::uint64_t>(now.tv_nsec) / 1000U;
}

TEST(ServiceNotifier, SendsTheExactMessages) {
    NotifySocket socket;
    ScopedEnv notify("NOTIFY_SOCKET", socket.path());
    ScopedEnv watchdog("WATCHDOG_USEC", std::nullopt);
    ServiceNotifier notifier;
    ASSERT_TRUE(notifier.enabled());
    EXPECT_FALSE(notifier.watchdog_enabled());

    notifier.ready();
    EXPECT_EQ(socket.receive(), "READY=1");
    notifier.status("watching 3 services\n2 children over");
    EXPECT_EQ(socket.receive(), "STATUS=watching 3 services 2 children over");

    const std::uint64_t before = monotonic_usec();
    notifier.reloading();
    const std::uint64_t after = monotonic_usec();
    const std::string reloading = socket.receive();
    std::smatch match;
    ASSERT_TRUE(
        std::regex_match(reloading, match, std::regex("RELOADING=1\nMONOTONIC_USEC=(\\d+)")))
        << reloading;
    const std::uint64_t usec = std::stoull(match[1].str());
    EXPECT_GE(usec, before);
    EXPECT_LE(usec, after);

    notifier.ready_after_reload();
    EXPECT_EQ(socket.receive(), "READY=1");
    notifier.stopping();
    EXPECT_EQ(socket.receive(), "STOPPING=1");
    // Without a watchdog, pinging sends nothing.
    EXPECT_FALSE(notifier.watchdog_due());
    notifier.ping_watchdog();
    EXPECT_FALSE(socket.pending());
}

TEST(ServiceNotifier, WatchdogPingsAtHalfItsInterval) {
    NotifySocket socket;
    ScopedEnv notify("NOTIFY_SOCKET", socket.path());
    ScopedEnv watchdog("WATCHDOG_USEC", "2000000");
    ScopedEnv watchdog_pid("WATCHDOG_PID", std::to_string(getpid()));
    ServiceNotifier notifier;
    ASSERT_TRUE(notifier.watchdog_enabled());
    EXPECT_EQ(notifier.watchdog_interval(), 2s);

    const auto start = ServiceNotifier::Clock::now();
    EXPECT_TRUE(notifier.watchdog_due(start)) << "never pinged yet";
    notifier.ping_watchdog(start);
    EXPECT_EQ(socket.receive(), "WATCHDOG=1");
    EXPECT_FALSE(notifier.watchdog_due(start + 999ms));
    EXPECT_TRUE(notifier.watchdog_due(start + 1s));
    notifier.ping_watchdog(start + 1s);
    EXPECT_EQ(socket.receive(), "WATCHDOG=1");
    EXPECT_FALSE(notifier.watchdog_due(start + 1500ms));
}

TEST(ServiceNotifier, AWatchdogForAnotherPidIsNotOurs) {
    NotifySocket socket;
    ScopedEnv notify("NOTIFY_SOCKET", socket.path());
    ScopedEnv watchdog("WATCHDOG_USEC", "2000000");
    ScopedEnv watchdog_pid("WATCHDOG_PID", std::to_string(getpid() + 1));
    ServiceNotifier notifier;
    EXPECT_FALSE(notifier.watchdog_enabled());
}

TEST(ServiceNotifier, DoesNothingWithoutNotifySocket) {
    NotifySocket socket;
    ScopedEnv notify("NOTIFY_SOCKET", std::nullopt);
    ScopedEnv watchdog("WATCHDOG_USEC", "2000000");
    ScopedEnv watchdog_pid("WATCHDOG_PID", std::to_string(getpid()));
    ServiceNotifier notifier;
    EXPECT_FALSE(notifier.enabled());
    EXPECT_FALSE(notifier.watchdog_enabled());
    notifier.ready();
    notifier.reloading();
    notifier.stopping();
    notifier.status("x");
    notifier.ping_watchdog();
    EXPECT_FALSE(socket.pending());
}

}  // namespace
}  // namespace kidreaper
