#include "daemon/config.h"

namespace kidreaper {

DaemonConfig single_service_config(const ReapOptions& options) {
    DaemonConfig config;
    config.interval = options.interval;
    config.log_format = options.log_format;
    config.fault_source = options.fault_source;
    config.services.push_back({options.server.name, options});
    return config;
}

}  // namespace kidreaper
