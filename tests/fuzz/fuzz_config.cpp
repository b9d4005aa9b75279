// The config file (parse_config): any text is a DaemonConfig or a one-line UsageError. A parsed
// config has services with unique, safe names and a manager each, and parsing it again gives
// the same fingerprints.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

#include "daemon/config.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using kidreaper::fuzz::check;
    const std::string_view text = kidreaper::fuzz::as_text(data, size);
    kidreaper::DaemonConfig config;
    if (!kidreaper::fuzz::accepts([&] { config = kidreaper::parse_config(text, "fuzz.toml"); })) {
        return 0;
    }
    check(!config.services.empty(), "a config has a service");
    check(config.interval.count() > 0, "the interval is positive");
    std::set<std::string> names;
    for (const auto& service : config.services) {
        check(kidreaper::is_safe_service_name(service.name), "a service name is safe");
        check(names.insert(service.name).second, "service names are unique");
        check(!service.options.manager.value.empty(), "a service names its manager");
        check(service.options.policy.limit_bytes > 0, "a service has a limit");
        check(service.line > 0, "a service has a line");
        (void)kidreaper::describe_service(service);
    }
    const kidreaper::DaemonConfig again = kidreaper::parse_config(text, "fuzz.toml");
    check(again.services.size() == config.services.size(), "parsing is deterministic");
    for (std::size_t i = 0; i < again.services.size(); ++i) {
        check(again.services[i].fingerprint == config.services[i].fingerprint,
              "fingerprints are deterministic");
    }
    return 0;
}
