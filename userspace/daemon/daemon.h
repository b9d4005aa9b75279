// The reap daemon: every service of a DaemonConfig watched and reaped in one process, with
// metrics and SIGHUP reload (docs/config.md).
#pragma once

#include "daemon/config.h"

namespace kidreaper {

// Runs until SIGINT/SIGTERM (exit 0) or a fatal error; SIGHUP reloads config.path.
int run_daemon(const DaemonConfig& config, const Logger& log);

}  // namespace kidreaper
