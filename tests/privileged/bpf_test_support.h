// Support for privileged tests: the feature gate and the fixture process.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace kidreaper::testing {

// Empty when this kernel can run kidreaper's BPF programs, else the reason.
std::string bpf_unavailable_reason();

// Skips the test when the kernel lacks what kidreaper needs; with CI=true a missing
// feature is a failure, not a skip.
#define KR_REQUIRE_BPF()                                                              \
    do {                                                                              \
        const std::string kr_reason = ::kidreaper::testing::bpf_unavailable_reason(); \
        if (!kr_reason.empty()) {                                                     \
            if (::kidreaper::testing::running_in_ci()) {                              \
                FAIL() << "CI=true and BPF unavailable: " << kr_reason;               \
            }                                                                         \
            GTEST_SKIP() << kr_reason;                                                \
        }                                                                             \
    } while (false)

bool running_in_ci();

// How many kidreaper observers have programs loaded in the kernel (by the name of the
// rss_stat hook, which every fault source loads).
int count_loaded_programs();
// Waits (up to 5 s: programs are freed after an RCU grace period) until the count is
// `expected`; returns the last count.
int wait_for_loaded_programs(int expected);

// In a helper process racing a kidreaper run: returns once that run has loaded its
// programs (more than `programs_before` are loaded) and had `settle` to look around. On an
// emulated kernel, start-up alone can take seconds, so fixed sleeps are not enough.
void wait_until_kidreaper_runs(int programs_before,
                               std::chrono::milliseconds settle = std::chrono::milliseconds(800));

// A path next to the running test binary (the fixture is built beside it).
std::string sibling_path(const std::string& name);

// In a forked child: execs `argv` (argv[0] a path); exits 127 when that fails.
[[noreturn]] void exec_argv(const std::vector<std::string>& argv);

// A finished command: its exit status (-1 when killed at the timeout) and stdout.
struct CommandResult {
    int exit_status = -1;
    std::string output;
};

// Runs `argv` (argv[0] a path), collects stdout, kills it after `timeout`.
CommandResult run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout);

// A finished command with both of its streams apart.
struct FullCommandResult {
    int exit_status = -1;  // -1 when killed at the timeout, or killed by a signal
    std::string output;    // stdout
    std::string errors;    // stderr
};

// Like run_command, collecting stderr too. `ignored_signals` are set to SIG_IGN in the
// command before exec, as a careless parent would hand them down.
FullCommandResult run_command_with_stderr(const std::vector<std::string>& argv,
                                          std::chrono::milliseconds timeout,
                                          const std::vector<int>& ignored_signals = {});

// How to start the fixture: which binary (a copy elsewhere is another executable) and as
// which user (the uid and gid, dropped before exec).
struct FixtureLaunch {
    std::string program;          // default: kr-fixture beside the test binary
    std::optional<uid_t> run_as;  // default: as the test (root)
};

// kr-fixture, started with `args`, spoken to over pipes; quit and reaped on destruction.
class FixtureProcess {
public:
    explicit FixtureProcess(const std::vector<std::string>& args, const FixtureLaunch& launch = {});
    ~FixtureProcess();
    FixtureProcess(const FixtureProcess&) = delete;
    FixtureProcess& operator=(const FixtureProcess&) = delete;

    void send(const std::string& line);
    // Reads lines until one starts with `prefix`; returns it. Throws on timeout or EOF.
    std::string expect(const std::string& prefix,
                       std::chrono::milliseconds timeout = std::chrono::seconds(60));
    // Reads until "ready": records the manager pid and the children by name.
    void wait_ready();
    // Sends "go" and waits until `count` children reported "done".
    void go_and_wait_done(std::size_t count);

    // Reads whatever lines are ready within `wait`, noting them; returns them.
    std::vector<std::string> drain(std::chrono::milliseconds wait);

    pid_t manager() const { return manager_; }
    // The pid of the child named `name` (the first one).
    pid_t child(const std::string& name) const;
    const std::multimap<std::string, pid_t>& children() const { return children_; }

private:
    void note(const std::string& line);

    pid_t process_ = -1;
    int to_fixture_ = -1;
    int from_fixture_ = -1;
    std::string buffer_;
    pid_t manager_ = 0;
    std::multimap<std::string, pid_t> children_;
};

// A respawning manager with a child over the tests' 12 MiB limit ("big1": leak:24M over a
// 16M preload) and an idle one ("small"), both done with their scripts. `options` go to
// kr-fixture before the children.
std::unique_ptr<FixtureProcess> big_and_small(const std::vector<std::string>& options = {});

}  // namespace kidreaper::testing
