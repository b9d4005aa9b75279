// Where the daemon publishes its metrics: the [metrics] table of the config file.
#pragma once

#include <optional>
#include <string>

namespace kidreaper {

struct MetricsSettings {
    std::optional<std::string> listen;    // "HOST:PORT": serve /metrics over HTTP
    std::optional<std::string> textfile;  // a .prom file for node-exporter's textfile collector
};

}  // namespace kidreaper
