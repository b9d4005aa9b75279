#include "daemon/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <system_error>
#include <utility>

#include <toml++/toml.h>

#include "common/error.h"
#include "common/units.h"

namespace kidreaper {
namespace {

constexpr std::uintmax_t kMaxConfigBytes = 1024 * 1024;

// Control bytes escaped, so that a message stays on one line whatever the file holds.
std::string one_line(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (const char c : text) {
        const auto byte = static_cast<unsigned char>(c);
        if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c == '\t') {
            out += "\\t";
        } else if (byte < 0x20 || byte == 0x7f) {
            std::array<char, 8> buffer{};
            std::snprintf(buffer.data(), buffer.size(), "\\x%02x", static_cast<unsigned>(byte));
            out += buffer.data();
        } else {
            out += c;
        }
    }
    return out;
}

std::string quote(std::string_view text) {
    return "\"" + one_line(text) + "\"";
}

std::string type_name(const toml::node& node) {
    switch (node.type()) {
        case toml::node_type::string:
            return "a string";
        case toml::node_type::integer:
            return "an integer";
        case toml::node_type::floating_point:
            return "a float";
        case toml::node_type::boolean:
            return "a boolean";
        case toml::node_type::table:
            return "a table";
        case toml::node_type::array:
            return "an array";
        case toml::node_type::date:
        case toml::node_type::time:
        case toml::node_type::date_time:
            return "a date or time";
        case toml::node_type::none:
            break;
    }
    return "nothing";
}

// Edit distance, for "did you mean" hints.
std::size_t distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) {
        row[j] = j;
    }
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diagonal = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t above = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
            diagonal = above;
        }
    }
    return row[b.size()];
}

// " (did you mean \"limit\"?)" for the nearest known key within two edits, else "".
std::string hint(std::string_view key, const std::vector<std::string_view>& known) {
    std::string_view best;
    std::size_t best_distance = 3;
    for (const auto candidate : known) {
        const std::size_t d = distance(key, candidate);
        if (d < best_distance) {
            best = candidate;
            best_distance = d;
        }
    }
    return best.empty() ? "" : " (did you mean \"" + std::string(best) + "\"?)";
}

std::size_t line_of(const toml::source_region& source) {
    return std::max<std::size_t>(source.begin.line, 1);
}

// Builds the "FILE:LINE: KEY: message" errors of one file.
class Problems {
public:
    explicit Problems(const std::string& path) : path_(path) {}

    [[noreturn]] void at(std::size_t line, std::string_view key, const std::string& message) const {
        throw UsageError(one_line(path_ + ":" + std::to_string(line) + ": " + std::string(key) +
                                  ": " + message));
    }

private:
    const std::string& path_;
};

// A parser's message for a config key: "invalid --metric ..." reads "invalid metric ...".
std::string for_key(std::string message, std::string_view key) {
    const std::string flag = "--" + std::string(key);
    for (std::size_t at = message.find(flag); at != std::string::npos;
         at = message.find(flag, at)) {
        message.erase(at, 2);
        at += key.size();
    }
    return message;
}

// Stores `node` as the value of `setting` in `args`, then checks it. Throws through `problems`.
void store(const ReapSetting& setting, const toml::node& node, std::size_t line, ReapArgs& args,
           const Problems& problems) {
    const std::string_view key = setting.key;
    const auto wrong_type = [&](const std::string& expected) {
        problems.at(line, key, "expected " + expected + ", got " + type_name(node));
    };
    switch (setting.type) {
        case SettingType::text:
        case SettingType::duration:
            if (const auto* text = node.as_string()) {
                args.*setting.text = text->get();
            } else {
                wrong_type(setting.type == SettingType::duration
                               ? "a duration: a string such as \"10s\""
                               : "a string");
            }
            if (setting.scope == SettingScope::selector && (args.*setting.text).empty()) {
                problems.at(line, key, "must not be empty");
            }
            break;
        case SettingType::size:
            if (const auto* text = node.as_string()) {
                args.*setting.text = text->get();
                if (text->get().empty()) {
                    problems.at(line, key, "must not be empty");
                }
            } else if (const auto* number = node.as_integer()) {
                if (number->get() <= 0) {
                    problems.at(line, key,
                                "must be greater than zero, got " + std::to_string(number->get()));
                }
                args.*setting.text = std::to_string(number->get());
            } else {
                wrong_type("a size: a string such as \"300MiB\" or an integer number of bytes");
            }
            break;
        case SettingType::pid:
            if (const auto* text = node.as_string()) {
                args.*setting.text = text->get();
                if (text->get().empty()) {
                    problems.at(line, key, "must not be empty");
                }
            } else if (const auto* number = node.as_integer()) {
                args.*setting.text = std::to_string(number->get());
            } else {
                wrong_type("a process id (an integer)");
            }
            break;
        case SettingType::flag:
            if (const auto* flag = node.as_boolean()) {
                args.*setting.flag = flag->get();
            } else {
                wrong_type("true or false");
            }
            break;
        case SettingType::count:
            if (const auto* number = node.as_integer()) {
                const std::int64_t value = number->get();
                if (value < 0) {
                    problems.at(line, key, "must not be negative, got " + std::to_string(value));
                }
                if (static_cast<std::uint64_t>(value) > std::numeric_limits<unsigned>::max()) {
                    problems.at(line, key, "too large: " + std::to_string(value));
                }
                args.*setting.count = static_cast<unsigned>(value);
            } else {
                wrong_type("a non-negative integer");
            }
            break;
        case SettingType::percent:
            if (const auto* number = node.as_integer()) {
                args.*setting.number = static_cast<double>(number->get());
            } else if (const auto* real = node.as_floating_point()) {
                args.*setting.number = real->get();
            } else {
                wrong_type("a number from 0 to 100");
            }
            break;
    }
    try {
        check_setting(setting, args);
    } catch (const UsageError& e) {
        problems.at(line, key, for_key(e.what(), key));
    }
}

std::vector<std::string_view> known_keys(bool in_service) {
    std::vector<std::string_view> keys;
    for (const auto& setting : reap_settings()) {
        keys.push_back(setting.key);
    }
    keys.emplace_back("name");
    if (!in_service) {
        keys.emplace_back("metrics");
        keys.emplace_back("service");
    }
    return keys;
}

// A key name as shown in an error: bare when plain, else quoted.
std::string shown_key(std::string_view key) {
    const bool plain = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '_';
    });
    return plain ? std::string(key) : quote(key);
}

MetricsSettings parse_metrics(const toml::table& table, const Problems& problems) {
    MetricsSettings metrics;
    for (auto&& [key, node] : table) {
        const std::size_t line = line_of(key.source());
        const std::string name = "metrics." + shown_key(key.str());
        if (key.str() != "listen" && key.str() != "textfile") {
            problems.at(line, name, "unknown key" + hint(key.str(), {"listen", "textfile"}));
        }
        const auto* text = node.as_string();
        if (text == nullptr) {
            problems.at(line, name, "expected a string, got " + type_name(node));
        }
        try {
            if (key.str() == "listen") {
                check_listen_address(text->get());
                metrics.listen = text->get();
            } else {
                check_textfile_path(text->get());
                metrics.textfile = text->get();
            }
        } catch (const UsageError& e) {
            problems.at(line, name, e.what());
        }
    }
    return metrics;
}

// The top level's settings: the defaults of every service, and where each was set.
struct Defaults {
    ReapArgs args;
    std::map<std::string, std::size_t, std::less<>> lines;
};

ServiceConfig parse_service(const toml::table& table, const Defaults& defaults,
                            const ConfigOverrides& overrides, const Problems& problems) {
    ServiceConfig service;
    service.line = line_of(table.source());
    ReapArgs args = defaults.args;
    std::map<std::string, std::size_t, std::less<>> lines;
    bool named = false;
    for (auto&& [key, node] : table) {
        const std::size_t line = line_of(key.source());
        const std::string_view name = key.str();
        if (name == "name") {
            const auto* text = node.as_string();
            if (text == nullptr) {
                problems.at(line, "name", "expected a string, got " + type_name(node));
            }
            if (text->get().empty()) {
                problems.at(line, "name", "must not be empty");
            }
            if (!is_safe_service_name(text->get())) {
                problems.at(line, "name",
                            quote(text->get()) +
                                " is not a safe label value: use only letters, digits, '_', "
                                "'-' and '.'");
            }
            service.name = text->get();
            named = true;
            continue;
        }
        if (name == "metrics") {
            problems.at(line, name, "only at the top level: one [metrics] table for the daemon");
        }
        const ReapSetting* setting = find_reap_setting(name);
        if (setting == nullptr) {
            problems.at(line, shown_key(name), "unknown key" + hint(name, known_keys(true)));
        }
        if (setting->scope == SettingScope::top_level) {
            problems.at(line, name,
                        "only at the top level: it is daemon-wide, the same for every service");
        }
        store(*setting, node, line, args, problems);
        lines.emplace(name, line);
    }
    if (!named) {
        problems.at(service.line, "name",
                    "missing: every [[service]] needs a unique name (its metrics label)");
    }
    const std::string who = "service \"" + service.name + "\"";
    // Exactly one selector.
    std::vector<std::pair<std::string_view, std::size_t>> selectors;
    for (const auto& setting : reap_settings()) {
        if (setting.scope != SettingScope::selector) {
            continue;
        }
        if (const auto it = lines.find(setting.key); it != lines.end()) {
            selectors.emplace_back(setting.key, it->second);
        }
    }
    std::sort(selectors.begin(), selectors.end(),
              [](const auto& a, const auto& b) { return a.second < b.second; });
    if (selectors.empty()) {
        problems.at(service.line, who, "names no manager: give one of pid, pidfile, cgroup, unit");
    }
    if (selectors.size() > 1) {
        problems.at(selectors[1].second, selectors[1].first,
                    who + " has " + std::string(selectors[0].first) + " already (line " +
                        std::to_string(selectors[0].second) +
                        "): give exactly one of pid, pidfile, cgroup, unit");
    }
    if (args.limit.empty()) {
        problems.at(service.line, "limit",
                    "missing in " + who + " and at the top level (e.g. limit = \"300MiB\")");
    }
    if (args.wait_for_manager && selectors[0].first == "pid") {
        const auto own = lines.find("wait-for-manager");
        const std::size_t line = own != lines.end() ? own->second : selectors[0].second;
        problems.at(line, own != lines.end() ? "wait-for-manager" : "pid",
                    who +
                        ": wait-for-manager needs pidfile, cgroup or unit (a new manager has "
                        "a new pid)");
    }
    if (overrides.dry_run) {
        args.dry_run = true;
    }
    try {
        service.options = to_options(args);
    } catch (const UsageError& e) {
        // Every value was checked on its own above; this is a combination of them.
        problems.at(service.line, who, e.what());
    }
    service.fingerprint = service_fingerprint(service.name, args);
    return service;
}

// IPv4 or IPv6 address text.
bool is_address(const std::string& host, int family) {
    std::array<unsigned char, sizeof(in6_addr)> buffer{};
    return inet_pton(family, host.c_str(), buffer.data()) == 1;
}

}  // namespace

bool is_safe_service_name(std::string_view name) {
    return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-' || c == '.';
    });
}

void check_listen_address(std::string_view address) {
    const std::string expected =
        ": expected HOST:PORT, HOST an IPv4 address or an IPv6 one in brackets, PORT 1-65535 "
        "(e.g. 127.0.0.1:19977 or [::1]:19977)";
    const auto bad = [&] { throw UsageError("invalid address " + quote(address) + expected); };
    std::string host;
    std::string_view port;
    if (!address.empty() && address.front() == '[') {
        const std::size_t close = address.find("]:");
        if (close == std::string_view::npos) {
            bad();
        }
        host = std::string(address.substr(1, close - 1));
        port = address.substr(close + 2);
        if (!is_address(host, AF_INET6)) {
            bad();
        }
    } else {
        const std::size_t colon = address.rfind(':');
        if (colon == std::string_view::npos) {
            bad();
        }
        host = std::string(address.substr(0, colon));
        port = address.substr(colon + 1);
        if (!is_address(host, AF_INET)) {
            bad();
        }
    }
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        bad();
    }
    const unsigned long number = std::stoul(std::string(port));
    if (number < 1 || number > 65535) {
        bad();
    }
}

void check_textfile_path(std::string_view path) {
    if (path.empty() || path.front() != '/' || path.back() == '/' ||
        path.find('\0') != std::string_view::npos) {
        throw UsageError("expected the absolute path of a file, got " + quote(path));
    }
}

std::string service_fingerprint(const std::string& name, const ReapArgs& args) {
    std::string text = "name=" + quote(name) + "\n";
    for (const auto& setting : reap_settings()) {
        if (setting.scope != SettingScope::top_level) {
            text += std::string(setting.key) + "=" + canonical_value(setting, args) + "\n";
        }
    }
    return text;
}

DaemonConfig parse_config(std::string_view text, const std::string& path,
                          const ConfigOverrides& overrides) {
    const Problems problems(path);
    toml::table root;
    try {
        root = toml::parse(text, path);
    } catch (const toml::parse_error& e) {
        problems.at(line_of(e.source()), "invalid TOML", std::string(e.description()));
    }
    DaemonConfig config;
    config.path = path;
    Defaults defaults;
    const toml::array* services = nullptr;
    std::size_t services_line = 1;
    for (auto&& [key, node] : root) {
        const std::size_t line = line_of(key.source());
        const std::string_view name = key.str();
        if (name == "service") {
            services = node.as_array();
            services_line = line;
            if (services == nullptr || !services->is_array_of_tables()) {
                problems.at(line, "service",
                            "write each service as a [[service]] table, got " + type_name(node));
            }
            continue;
        }
        if (name == "metrics") {
            const auto* table = node.as_table();
            if (table == nullptr) {
                problems.at(line, "metrics", "expected a [metrics] table, got " + type_name(node));
            }
            config.metrics = parse_metrics(*table, problems);
            continue;
        }
        if (name == "name") {
            problems.at(line, "name", "only in a [[service]] table: each service has its own");
        }
        const ReapSetting* setting = find_reap_setting(name);
        if (setting == nullptr) {
            problems.at(line, shown_key(name), "unknown key" + hint(name, known_keys(false)));
        }
        if (setting->scope == SettingScope::selector) {
            problems.at(line, name,
                        "only in a [[service]] table: each service names its own manager");
        }
        store(*setting, node, line, defaults.args, problems);
        defaults.lines.emplace(name, line);
    }
    // The command line wins over the top level.
    if (overrides.log_format) {
        defaults.args.log_format = *overrides.log_format;
        check_setting(*find_reap_setting("log-format"), defaults.args);
    }
    if (overrides.fault_source) {
        defaults.args.fault_source = *overrides.fault_source;
        check_setting(*find_reap_setting("fault-source"), defaults.args);
    }
    if (overrides.metrics_listen) {
        try {
            check_listen_address(*overrides.metrics_listen);
        } catch (const UsageError& e) {
            throw UsageError(std::string("--metrics-listen: ") + e.what());
        }
        config.metrics.listen = overrides.metrics_listen;
    }
    if (services == nullptr || services->empty()) {
        problems.at(services_line, "service",
                    "no [[service]] table: give at least one (name, a manager, limit)");
    }
    config.interval = parse_duration(defaults.args.interval);
    config.log_format = defaults.args.log_format == "json" ? LogFormat::json : LogFormat::text;
    config.fault_source = parse_fault_source(defaults.args.fault_source);
    std::map<std::string, std::size_t, std::less<>> names;
    for (const auto& element : *services) {
        ServiceConfig service = parse_service(*element.as_table(), defaults, overrides, problems);
        const auto [it, fresh] = names.emplace(service.name, service.line);
        if (!fresh) {
            problems.at(service.line, "name",
                        quote(service.name) + " is already the name of the service at line " +
                            std::to_string(it->second));
        }
        config.services.push_back(std::move(service));
    }
    return config;
}

std::string config_trust_problem(const std::filesystem::path& path, const PathInspector& inspector,
                                 uid_t runs_as) {
    const PidfileTrust trust = assess_pidfile(path, inspector);
    if (trust.trusted() || (!trust.names_nobody && trust.only_user == runs_as)) {
        return {};
    }
    const std::string prefix = "pidfile " + path.string() + ": ";
    const std::string why =
        trust.reason.starts_with(prefix) ? trust.reason.substr(prefix.size()) : trust.reason;
    return one_line(path.string() + ": refused: its hooks would run as root, and " + why);
}

DaemonConfig load_config(const std::string& path, const ConfigOverrides& overrides) {
    std::error_code error;
    const auto status = std::filesystem::status(path, error);
    if (error) {
        throw UsageError(one_line(path + ": " + error.message()));
    }
    if (!std::filesystem::is_regular_file(status)) {
        throw UsageError(one_line(path + ": not a regular file"));
    }
    if (const std::string problem =
            config_trust_problem(std::filesystem::absolute(path), SystemPathInspector(), geteuid());
        !problem.empty()) {
        throw UsageError(problem);
    }
    const std::uintmax_t size = std::filesystem::file_size(path, error);
    if (!error && size > kMaxConfigBytes) {
        throw UsageError(one_line(path + ": larger than 1 MiB, not a kidreaper config"));
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw UsageError(one_line(errno_message(path, errno)));
    }
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) {
        throw UsageError(one_line(errno_message(path, errno)));
    }
    return parse_config(text.str(), path, overrides);
}

DaemonConfig single_service_config(const ReapOptions& options, const ReapArgs& args,
                                   const MetricsSettings& metrics) {
    DaemonConfig config;
    config.interval = options.interval;
    config.log_format = options.log_format;
    config.fault_source = options.fault_source;
    config.metrics = metrics;
    ServiceConfig service;
    service.name = options.server.name;
    service.options = options;
    service.fingerprint = service_fingerprint(service.name, args);
    config.services.push_back(std::move(service));
    return config;
}

std::string describe_service(const ServiceConfig& service) {
    const ReapOptions& options = service.options;
    std::string line = service.name + ": " + selector_key(options.manager.kind) + " " +
                       quote(options.manager.value) + ", server " + options.server.name +
                       ", limit " + format_size(options.policy.limit_bytes) + " " +
                       metric_name(options.metric);
    if (options.policy.dry_run) {
        line += ", dry run";
    }
    if (service.line != 0) {
        line += " (line " + std::to_string(service.line) + ")";
    }
    return one_line(line);
}

}  // namespace kidreaper
