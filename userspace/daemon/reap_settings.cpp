#include "daemon/reap_settings.h"

#include <array>
#include <charconv>
#include <cstdio>
#include <string>
#include <system_error>
#include <utility>

#include "common/error.h"
#include "common/units.h"
#include "observe/kernel_features.h"
#include "observe/manager_lookup.h"
#include "observe/procfs.h"
#include "policy/server_presets.h"
#include "policy/worker_rule.h"

namespace kidreaper {
namespace {

LogFormat parse_log_format(const std::string& text) {
    if (text == "json") {
        return LogFormat::json;
    }
    if (text != "text") {
        throw UsageError("invalid --log-format \"" + text + "\": expected text or json");
    }
    return LogFormat::text;
}

// A string in double quotes; quotes, backslashes and control bytes escaped.
std::string quoted_text(const std::string& text) {
    std::string out = "\"";
    for (const char c : text) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
            std::array<char, 8> buffer{};
            std::snprintf(buffer.data(), buffer.size(), "\\x%02x",
                          static_cast<unsigned>(static_cast<unsigned char>(c)));
            out += buffer.data();
        } else {
            out += c;
        }
    }
    return out + "\"";
}

std::string shortest_number(double value) {
    std::array<char, 64> buffer{};
    const auto [end, error] = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);
    if (error != std::errc()) {
        return "?";
    }
    return {buffer.data(), end};
}

}  // namespace

const std::vector<ReapSetting>& reap_settings() {
    using T = SettingType;
    using S = SettingScope;
    static const std::vector<ReapSetting> settings = {
        {.key = "pid", .type = T::pid, .scope = S::selector, .text = &ReapArgs::pid},
        {.key = "pidfile", .type = T::text, .scope = S::selector, .text = &ReapArgs::pidfile},
        {.key = "cgroup", .type = T::text, .scope = S::selector, .text = &ReapArgs::cgroup},
        {.key = "unit", .type = T::text, .scope = S::selector, .text = &ReapArgs::unit},
        {.key = "limit", .type = T::size, .text = &ReapArgs::limit},
        {.key = "metric", .type = T::text, .text = &ReapArgs::metric},
        {.key = "server", .type = T::text, .text = &ReapArgs::server},
        {.key = "workers", .type = T::text, .text = &ReapArgs::workers},
        {.key = "signal", .type = T::text, .text = &ReapArgs::signal},
        {.key = "stagger", .type = T::duration, .text = &ReapArgs::stagger},
        {.key = "max-concurrent", .type = T::count, .count = &ReapArgs::max_concurrent},
        {.key = "min-children", .type = T::count, .count = &ReapArgs::min_children},
        {.key = "grace", .type = T::duration, .text = &ReapArgs::grace},
        {.key = "escalate", .type = T::flag, .flag = &ReapArgs::escalate},
        {.key = "jitter", .type = T::percent, .number = &ReapArgs::jitter},
        {.key = "interval",
         .type = T::duration,
         .scope = S::top_level,
         .text = &ReapArgs::interval},
        {.key = "idle-timeout", .type = T::duration, .text = &ReapArgs::idle_timeout},
        {.key = "no-idle-wait", .type = T::flag, .flag = &ReapArgs::no_idle_wait},
        {.key = "replace-timeout", .type = T::duration, .text = &ReapArgs::replace_timeout},
        {.key = "truth-every", .type = T::duration, .text = &ReapArgs::truth_every},
        {.key = "pre-hook", .type = T::text, .text = &ReapArgs::pre_hook},
        {.key = "post-hook", .type = T::text, .text = &ReapArgs::post_hook},
        {.key = "hook-timeout", .type = T::duration, .text = &ReapArgs::hook_timeout},
        {.key = "dry-run", .type = T::flag, .flag = &ReapArgs::dry_run},
        {.key = "once", .type = T::flag, .flag = &ReapArgs::once},
        {.key = "wait-for-manager", .type = T::flag, .flag = &ReapArgs::wait_for_manager},
        {.key = "log-format",
         .type = T::text,
         .scope = S::top_level,
         .text = &ReapArgs::log_format},
        {.key = "fault-source",
         .type = T::text,
         .scope = S::top_level,
         .text = &ReapArgs::fault_source},
    };
    return settings;
}

const ReapSetting* find_reap_setting(std::string_view key) {
    for (const auto& setting : reap_settings()) {
        if (setting.key == key) {
            return &setting;
        }
    }
    return nullptr;
}

void check_setting(const ReapSetting& setting, const ReapArgs& args) {
    const std::string_view key = setting.key;
    switch (setting.type) {
        case SettingType::text: {
            const std::string& text = args.*setting.text;
            if (key == "metric") {
                (void)parse_metric(text);
            } else if (key == "server" && !text.empty()) {
                (void)find_server_preset(text);
            } else if (key == "workers" && !text.empty()) {
                (void)parse_worker_rule(text);
            } else if (key == "signal" && !text.empty()) {
                (void)parse_signal(text);
            } else if (key == "log-format") {
                (void)parse_log_format(text);
            } else if (key == "fault-source") {
                (void)parse_fault_source(text);
            }
            return;
        }
        case SettingType::size: {
            const std::string& text = args.*setting.text;
            if (!text.empty() && parse_size(text) == 0) {
                throw UsageError("must be greater than zero, got " + quoted_text(text));
            }
            return;
        }
        case SettingType::duration: {
            const std::string& text = args.*setting.text;
            if (parse_duration(text).count() <= 0 && key == "interval") {
                throw UsageError("must be greater than zero, got " + quoted_text(text));
            }
            return;
        }
        case SettingType::count:
            if (args.*setting.count == 0 && key == "max-concurrent") {
                throw UsageError("must be at least 1");
            }
            return;
        case SettingType::percent: {
            const double value = args.*setting.number;
            if (!(value >= 0 && value <= 100)) {
                throw UsageError("takes a percentage from 0 to 100, got " + shortest_number(value));
            }
            return;
        }
        case SettingType::pid:
            if (!(args.*setting.text).empty()) {
                (void)parse_pid(args.*setting.text);
            }
            return;
        case SettingType::flag:
            return;
    }
}

std::string canonical_value(const ReapSetting& setting, const ReapArgs& args) {
    switch (setting.type) {
        case SettingType::text:
            return quoted_text(args.*setting.text);
        case SettingType::size: {
            const std::string& text = args.*setting.text;
            return text.empty() ? "none" : std::to_string(parse_size(text));
        }
        case SettingType::duration:
            return std::to_string(parse_duration(args.*setting.text).count()) + "ms";
        case SettingType::flag:
            return args.*setting.flag ? "true" : "false";
        case SettingType::count:
            return std::to_string(args.*setting.count);
        case SettingType::percent:
            return shortest_number(args.*setting.number);
        case SettingType::pid: {
            const std::string& text = args.*setting.text;
            return text.empty() ? "none" : std::to_string(parse_pid(text));
        }
    }
    return {};
}

ReapOptions to_options(const ReapArgs& args) {
    ReapOptions options;
    // Exactly one way to name the manager.
    std::vector<ManagerSelector> selectors;
    if (!args.pid.empty()) {
        options.pid = parse_pid(args.pid);
        selectors.push_back({ManagerSelector::Kind::pid, std::to_string(*options.pid)});
    }
    if (!args.pidfile.empty()) {
        options.pidfile = args.pidfile;
        selectors.push_back({ManagerSelector::Kind::pidfile, args.pidfile});
    }
    if (!args.cgroup.empty()) {
        selectors.push_back({ManagerSelector::Kind::cgroup, args.cgroup});
    }
    if (!args.unit.empty()) {
        selectors.push_back({ManagerSelector::Kind::unit, args.unit});
    }
    if (selectors.empty()) {
        throw UsageError("which server? give one of --pid, --pidfile, --cgroup, --unit");
    }
    if (selectors.size() > 1) {
        throw UsageError("give only one of --pid, --pidfile, --cgroup, --unit");
    }
    options.manager = selectors.front();
    validate_selector(options.manager);
    if (args.wait_for_manager && options.manager.kind == ManagerSelector::Kind::pid) {
        throw UsageError(
            "--wait-for-manager needs --pidfile, --cgroup or --unit (a new manager has a new pid)");
    }
    if (args.limit.empty()) {
        throw UsageError("--limit is required (e.g. --limit 300MiB)");
    }
    options.policy.limit_bytes = parse_size(args.limit);
    if (options.policy.limit_bytes == 0) {
        throw UsageError("--limit must be greater than zero");
    }
    options.metric = parse_metric(args.metric);
    if (!args.server.empty()) {
        options.server = find_server_preset(args.server);
    }
    if (!args.workers.empty()) {
        options.workers = parse_worker_rule(args.workers);
    }
    options.fault_source = parse_fault_source(args.fault_source);
    options.policy.signals = options.server.signals;
    if (!args.signal.empty()) {
        // --signal replaces the graceful signal; escalation keeps the server's later steps.
        options.policy.signals.front() = parse_signal(args.signal);
    }
    options.policy.stagger = parse_duration(args.stagger);
    if (args.max_concurrent == 0) {
        throw UsageError("--max-concurrent must be at least 1");
    }
    options.policy.max_concurrent = args.max_concurrent;
    options.policy.min_children = args.min_children;
    options.policy.grace = parse_duration(args.grace);
    options.policy.escalate = args.escalate;
    if (!(args.jitter >= 0 && args.jitter <= 100)) {
        throw UsageError("--jitter takes a percentage from 0 to 100");
    }
    options.policy.jitter_percent = args.jitter;
    options.policy.replace_timeout = parse_duration(args.replace_timeout);
    options.policy.dry_run = args.dry_run;
    options.interval = parse_duration(args.interval);
    if (options.interval.count() <= 0) {
        throw UsageError("--interval must be greater than zero");
    }
    options.idle_timeout = parse_duration(args.idle_timeout);
    options.idle_wait = !args.no_idle_wait;
    options.truth_every = parse_duration(args.truth_every);
    options.pre_hook = args.pre_hook;
    options.post_hook = args.post_hook;
    options.hook_timeout = parse_duration(args.hook_timeout);
    options.once = args.once;
    options.wait_for_manager = args.wait_for_manager;
    options.log_format = parse_log_format(args.log_format);
    return options;
}

}  // namespace kidreaper
