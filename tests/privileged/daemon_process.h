// A `kidreaper reap` run in the background: its JSON events read as they come, so a test can
// wait for one, act (rewrite the config, send SIGHUP), and wait for the next.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kidreaper::testing {

class DaemonProcess {
public:
    // Starts argv (argv[0] a path) with stdout on a pipe; stderr is left to the test's.
    // `environment` ("NAME=VALUE") is added to the test's own.
    explicit DaemonProcess(const std::vector<std::string>& argv,
                           const std::vector<std::string>& environment = {});
    // Kills it (SIGKILL) when it still runs, and reaps it.
    ~DaemonProcess();
    DaemonProcess(const DaemonProcess&) = delete;
    DaemonProcess& operator=(const DaemonProcess&) = delete;

    pid_t pid() const { return pid_; }

    // The first event named `name` for which `match` is true, among every event so far and
    // those arriving within `timeout`; nullopt when none came (or the process ended).
    std::optional<nlohmann::json> wait_for(
        const std::string& name,
        const std::function<bool(const nlohmann::json&)>& match =
            [](const nlohmann::json&) { return true; },
        std::chrono::milliseconds timeout = std::chrono::seconds(30));
    // Every event named `name` so far.
    std::vector<nlohmann::json> events(const std::string& name) const;

    void signal(int signo) const;
    // Waits up to `timeout` for the process to end (reading its output); returns its exit
    // status, or -1 when it had to be killed or died by a signal.
    int wait_exit(std::chrono::milliseconds timeout);

    // Everything it printed so far.
    const std::string& output() const { return output_; }

private:
    // Reads what is ready within `wait`; false at end of file.
    bool read_some(std::chrono::milliseconds wait);

    pid_t pid_ = -1;
    int out_ = -1;
    bool exited_ = false;
    int status_ = -1;
    std::string output_;
    std::string partial_;
    std::vector<nlohmann::json> events_;
};

}  // namespace kidreaper::testing
