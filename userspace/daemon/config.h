// What the daemon runs: its own settings and its services (each a server's reap settings
// and a name). Built from the single-server command line today.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "daemon/event_log.h"
#include "daemon/reaper.h"
#include "observe/kernel_features.h"

namespace kidreaper {

// One service: a server watched and recycled on its own.
struct ServiceConfig {
    std::string name;     // its name in events (service=NAME)
    ReapOptions options;  // its reap settings
};

struct DaemonConfig {
    std::chrono::milliseconds interval{1000};  // time between steps of every service
    LogFormat log_format = LogFormat::text;
    FaultSource fault_source = FaultSource::automatic;
    std::vector<ServiceConfig> services;
};

// The daemon of the single-server command line: one service, named after its server.
DaemonConfig single_service_config(const ReapOptions& options);

}  // namespace kidreaper
