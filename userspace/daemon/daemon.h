// The daemon: one Observer (one load of the BPF programs) serving every configured
// service, each with its own policy, pace, floor, hooks and manager-following. SIGINT and
// SIGTERM stop; SIGHUP reloads the config file (docs/config.md).
#pragma once

#include "common/log.h"
#include "daemon/config.h"

namespace kidreaper {

// Runs until SIGINT/SIGTERM (exit 0), --once is done for every service (exit 0), or, on
// the single-server command line, the manager is gone without --wait-for-manager (exit 1).
// From the command line (config.path empty), a pidfile is read up front unless the service
// waits for its manager: a bad one is a UsageError. `overrides` are applied again on reload.
int run_daemon(const DaemonConfig& config, const Logger& log,
               const ConfigOverrides& overrides = {});

}  // namespace kidreaper
