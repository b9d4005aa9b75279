// The settings of one reaped server as the user writes them: the flags of `kidreaper reap` and
// the keys of a [[service]] table in the config file (config.h). Both fill ReapArgs and share
// one conversion, to_options, so a value means the same thing in either place.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "daemon/reaper.h"

namespace kidreaper {

// Raw option text for `reap`, parsed by our own parsers so that errors read the same everywhere.
struct ReapArgs {
    std::string pid;
    std::string pidfile;
    std::string cgroup;
    std::string unit;
    std::string limit;
    std::string metric = "private";
    std::string server;
    std::string workers;
    std::string signal;
    std::string stagger = "10s";
    unsigned max_concurrent = 1;
    unsigned min_children = 0;
    std::string grace = "60s";
    bool escalate = false;
    double jitter = 0;
    std::string interval = "1s";
    std::string idle_timeout = "10s";
    bool no_idle_wait = false;
    std::string replace_timeout = "60s";
    std::string truth_every = "60s";
    std::string pre_hook;
    std::string post_hook;
    std::string hook_timeout = "30s";
    bool dry_run = false;
    bool once = false;
    bool wait_for_manager = false;
    std::string log_format = "text";
    std::string fault_source = "auto";
};

// Converts and checks the whole set; throws UsageError naming the flag. Exactly one of pid,
// pidfile, cgroup, unit; --wait-for-manager needs pidfile, cgroup or unit.
ReapOptions to_options(const ReapArgs& args);

// How a setting's value is written.
enum class SettingType {
    text,      // a string: a name, a path, a command, a rule
    size,      // a string ("300MiB"); in the config file also an integer number of bytes
    duration,  // a string ("10s")
    flag,      // a boolean (a flag without a value on the command line)
    count,     // a non-negative integer
    percent,   // a number from 0 to 100
    pid,       // a process id: an integer (or a string of digits)
};

// Where a setting may appear in the config file.
enum class SettingScope {
    service,    // a [[service]] key; at the top level, the default of every service
    selector,   // pid, pidfile, cgroup, unit: names the manager, in a [[service]] only
    top_level,  // daemon-wide (interval, log-format, fault-source): top level only
};

// One setting: its config key (the flag without its dashes) and the ReapArgs field it fills.
// Exactly one of the member pointers is set, as `type` says.
struct ReapSetting {
    std::string_view key;
    SettingType type = SettingType::text;
    SettingScope scope = SettingScope::service;
    std::string ReapArgs::*text = nullptr;  // text, size, duration, pid
    bool ReapArgs::*flag = nullptr;
    unsigned ReapArgs::*count = nullptr;
    double ReapArgs::*number = nullptr;
};

// Every per-server flag of `kidreaper reap`, in the order of its --help.
const std::vector<ReapSetting>& reap_settings();
// The setting of a config key ("max-concurrent"), or nullptr.
const ReapSetting* find_reap_setting(std::string_view key);

// Checks one setting's value in `args` on its own, with the parser to_options uses (sizes,
// durations, names, ranges). Throws UsageError with that parser's one-line message.
void check_setting(const ReapSetting& setting, const ReapArgs& args);

// The value in canonical text: sizes in bytes, durations in ms, pids as digits, text quoted.
// Two spellings of one value ("1G", "1024MiB") give the same text.
std::string canonical_value(const ReapSetting& setting, const ReapArgs& args);

}  // namespace kidreaper
