// The config file of `kidreaper reap --config FILE` (docs/config.md): daemon-wide settings and
// the defaults of every service at the top level, a [metrics] table, and one [[service]] table
// per reaped server, keyed like the reap flags without their dashes. Parsing is pure: text in,
// a DaemonConfig or a one-line UsageError "FILE:LINE: KEY: what is wrong" out.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/event_log.h"
#include "daemon/metrics_settings.h"
#include "daemon/reap_settings.h"
#include "daemon/reaper.h"
#include "observe/kernel_features.h"
#include "policy/pidfile_trust.h"

namespace kidreaper {

// One reaped server.
struct ServiceConfig {
    std::string name;  // unique; the `service` label of its metrics
    ReapOptions options;
    // Canonical text of every effective key = value (defaults merged): equal fingerprints
    // mean an unchanged service on reload.
    std::string fingerprint;
    std::size_t line = 0;  // where its [[service]] table starts (0: from the command line)
};

struct DaemonConfig {
    std::string path;  // empty when built from the command line
    std::chrono::milliseconds interval{1000};
    LogFormat log_format = LogFormat::text;
    FaultSource fault_source = FaultSource::automatic;
    MetricsSettings metrics;
    std::vector<ServiceConfig> services;  // at least one
};

// What the command line overrides in the file (--metrics-listen, --log-format, --fault-source,
// --dry-run). Pass the same overrides again on reload.
struct ConfigOverrides {
    std::optional<std::string> metrics_listen;
    std::optional<std::string> log_format;
    std::optional<std::string> fault_source;
    bool dry_run = false;  // every service is a dry run, whatever the file says
};

// Parses a config file's text; `path` names it in errors. Throws UsageError (one line).
DaemonConfig parse_config(std::string_view text, const std::string& path,
                          const ConfigOverrides& overrides = {});
// Reads the file (a one-line UsageError when it cannot be read or is not trusted, see
// config_trust_problem), then parse_config.
DaemonConfig load_config(const std::string& path, const ConfigOverrides& overrides = {});

// Why the file at `path` may not configure a kidreaper running as `runs_as`, in one line, or
// "" when it may. Its hooks run as kidreaper (root), so nobody else may be able to change it:
// the file and every directory above it follow the pidfile rule of pidfile_trust.h, and the
// one other user allowed is `runs_as` itself.
std::string config_trust_problem(const std::filesystem::path& path, const PathInspector& inspector,
                                 uid_t runs_as);

// The daemon config of `reap` without --config: one service from the flags, named after the
// server preset ("generic" without --server). `args` is what `options` was made from.
DaemonConfig single_service_config(const ReapOptions& options, const ReapArgs& args,
                                   const MetricsSettings& metrics = {});

// The fingerprint (see ServiceConfig) of a service named `name` with these settings.
std::string service_fingerprint(const std::string& name, const ReapArgs& args);

// One line about a service, for --check-config: name, manager, server, limit, metric, line.
std::string describe_service(const ServiceConfig& service);

// Checks a metrics listen address: IPV4:PORT or [IPV6]:PORT, port 1-65535. Throws UsageError.
void check_listen_address(std::string_view address);
// Checks a metrics textfile path: absolute, naming a file. Throws UsageError.
void check_textfile_path(std::string_view path);
// True for a safe Prometheus label value as a service name: letters, digits, '_', '-', '.'.
bool is_safe_service_name(std::string_view name);

}  // namespace kidreaper
