// Shared by the reap tests: the real binary's command line and its JSON event stream.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bpf_test_support.h"

namespace kidreaper::testing {

// The events named `name` in a --log-format json stream; every line must be JSON.
inline std::vector<nlohmann::json> reap_events(const std::string& output, const std::string& name) {
    std::vector<nlohmann::json> events;
    std::size_t start = 0;
    while (start < output.size()) {
        const std::size_t end = output.find('\n', start);
        const std::string line = output.substr(start, end - start);
        start = end == std::string::npos ? output.size() : end + 1;
        if (line.empty()) {
            continue;
        }
        const nlohmann::json event = nlohmann::json::parse(line);
        if (event.at("event") == name) {
            events.push_back(event);
        }
    }
    return events;
}

// `kidreaper reap` with the tests' quick settings (12 MiB limit, 200 ms interval, json),
// aimed by `target` ({"--pid", PID} or {"--pidfile", PATH}), then `extra`.
inline std::vector<std::string> reap_argv(const std::vector<std::string>& target,
                                          const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {sibling_path("../kidreaper"), "reap"};
    argv.insert(argv.end(), target.begin(), target.end());
    for (const char* option : {"--limit", "12MiB", "--stagger", "700ms", "--interval", "200ms",
                               "--idle-timeout", "2s", "--log-format", "json"}) {
        argv.emplace_back(option);
    }
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
}

}  // namespace kidreaper::testing
