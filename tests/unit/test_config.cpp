// The config file of `reap --config` (daemon/config.h) and the settings it shares with the
// reap flags (daemon/reap_settings.h).
#include "daemon/config.h"

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "common/error.h"
#include "expect_usage_error.h"

namespace kidreaper {
namespace {

using testing::contains;
using testing::usage_error_message;

const std::string kPath = "/etc/kidreaper/kidreaper.toml";

DaemonConfig parse(const std::string& text, const ConfigOverrides& overrides = {}) {
    return parse_config(text, kPath, overrides);
}

std::string error_of(const std::string& text, const ConfigOverrides& overrides = {}) {
    return usage_error_message([&] { (void)parse(text, overrides); });
}

// A service that parses, for tests that add one key.
const std::string kMinimal = "[[service]]\nname = \"a\"\npid = 4242\nlimit = \"100MiB\"\n";

const char* const kExample = R"(interval = "2s"
log-format = "json"
[metrics]
listen = "127.0.0.1:19977"
textfile = "/var/lib/prometheus/node-exporter/kidreaper.prom"

[[service]]
name = "shop"
unit = "php8.2-fpm.service"
server = "php-fpm"
limit = "200MiB"
min-children = 4
)";

TEST(Config, FullExampleParses) {
    const DaemonConfig config = parse(kExample);
    EXPECT_EQ(config.path, kPath);
    EXPECT_EQ(config.interval, std::chrono::seconds(2));
    EXPECT_EQ(config.log_format, LogFormat::json);
    EXPECT_EQ(config.fault_source, FaultSource::automatic);
    EXPECT_EQ(config.metrics.listen, "127.0.0.1:19977");
    EXPECT_EQ(config.metrics.textfile, "/var/lib/prometheus/node-exporter/kidreaper.prom");
    ASSERT_EQ(config.services.size(), 1U);
    const ServiceConfig& shop = config.services[0];
    EXPECT_EQ(shop.name, "shop");
    EXPECT_EQ(shop.line, 7U);
    EXPECT_EQ(shop.options.manager.kind, ManagerSelector::Kind::unit);
    EXPECT_EQ(shop.options.manager.value, "php8.2-fpm.service");
    EXPECT_FALSE(shop.options.pid);
    EXPECT_FALSE(shop.options.pidfile);
    EXPECT_EQ(shop.options.server.name, "php-fpm");
    EXPECT_EQ(shop.options.policy.limit_bytes, 200ULL << 20);
    EXPECT_EQ(shop.options.policy.min_children, 4U);
    // Daemon-wide settings reach every service's options too.
    EXPECT_EQ(shop.options.interval, std::chrono::seconds(2));
    EXPECT_EQ(shop.options.log_format, LogFormat::json);
    EXPECT_EQ(describe_service(shop),
              "shop: unit \"php8.2-fpm.service\", server php-fpm, limit 200 MiB private (line 7)");
}

TEST(Config, DefaultsWithoutTopLevel) {
    const DaemonConfig config = parse(kMinimal);
    EXPECT_EQ(config.interval, std::chrono::seconds(1));
    EXPECT_EQ(config.log_format, LogFormat::text);
    EXPECT_FALSE(config.metrics.listen);
    EXPECT_FALSE(config.metrics.textfile);
    const ReapOptions& options = config.services.at(0).options;
    EXPECT_EQ(options.pid, 4242);
    EXPECT_EQ(options.manager.kind, ManagerSelector::Kind::pid);
    EXPECT_EQ(options.manager.value, "4242");
    EXPECT_EQ(options.metric, Metric::private_memory);
    EXPECT_EQ(options.server.name, "generic");
    EXPECT_EQ(options.policy.max_concurrent, 1U);
    EXPECT_EQ(options.policy.stagger, std::chrono::seconds(10));
    EXPECT_TRUE(options.idle_wait);
    EXPECT_FALSE(options.policy.dry_run);
}

TEST(Config, TopLevelIsEveryServicesDefaultAndAServiceKeyWins) {
    const DaemonConfig config = parse(R"(limit = "300MiB"
stagger = "30s"
max-concurrent = 2
no-idle-wait = true
pre-hook = "/usr/local/lib/kidreaper/drain"
jitter = 10

[[service]]
name = "a"
pid = 100

[[service]]
name = "b"
pidfile = "/run/b.pid"
limit = 1073741824
max-concurrent = 3
no-idle-wait = false
jitter = 2.5
wait-for-manager = true
)");
    ASSERT_EQ(config.services.size(), 2U);
    const ReapOptions& a = config.services[0].options;
    const ReapOptions& b = config.services[1].options;
    EXPECT_EQ(a.policy.limit_bytes, 300ULL << 20);
    EXPECT_EQ(a.policy.stagger, std::chrono::seconds(30));
    EXPECT_EQ(a.policy.max_concurrent, 2U);
    EXPECT_FALSE(a.idle_wait);
    EXPECT_EQ(a.pre_hook, "/usr/local/lib/kidreaper/drain");
    EXPECT_EQ(a.policy.jitter_percent, 10);
    EXPECT_EQ(b.policy.limit_bytes, 1ULL << 30);  // an integer limit is bytes
    EXPECT_EQ(b.policy.stagger, std::chrono::seconds(30));
    EXPECT_EQ(b.policy.max_concurrent, 3U);
    EXPECT_TRUE(b.idle_wait);
    EXPECT_EQ(b.pre_hook, "/usr/local/lib/kidreaper/drain");
    EXPECT_EQ(b.policy.jitter_percent, 2.5);
    EXPECT_TRUE(b.wait_for_manager);
    EXPECT_EQ(b.pidfile, "/run/b.pid");
}

// ---- every reap flag is a key -----------------------------------------------------------

// A valid value (TOML) for every key, mirrored from `reap`'s flags in cli/main.cpp.
const std::map<std::string, std::string>& valid_values() {
    static const std::map<std::string, std::string> values = {
        {"pid", "4242"},
        {"pidfile", "\"/run/app.pid\""},
        {"cgroup", "\"/sys/fs/cgroup/system.slice/apache2.service\""},
        {"unit", "\"app.service\""},
        {"limit", "\"1G\""},
        {"metric", "\"pss\""},
        {"server", "\"gunicorn\""},
        {"workers", "\"any\""},
        {"signal", "\"HUP\""},
        {"stagger", "\"5s\""},
        {"max-concurrent", "2"},
        {"min-children", "3"},
        {"grace", "\"2m\""},
        {"escalate", "true"},
        {"jitter", "12.5"},
        {"interval", "\"500ms\""},
        {"idle-timeout", "\"3s\""},
        {"no-idle-wait", "true"},
        {"replace-timeout", "\"90s\""},
        {"truth-every", "\"30s\""},
        {"pre-hook", "\"/bin/true\""},
        {"post-hook", "\"logger recycled\""},
        {"hook-timeout", "\"5s\""},
        {"dry-run", "true"},
        {"once", "true"},
        {"wait-for-manager", "true"},
        {"log-format", "\"json\""},
        {"fault-source", "\"mm\""},
    };
    return values;
}

// The flags of `reap` that are not per-server settings.
const std::set<std::string> kNotSettings = {"config", "check-config", "metrics-listen"};

TEST(ConfigKeys, EverySettingHasATestValue) {
    std::set<std::string> settings;
    for (const auto& setting : reap_settings()) {
        settings.emplace(setting.key);
    }
    std::set<std::string> tested;
    for (const auto& [key, value] : valid_values()) {
        tested.insert(key);
    }
    EXPECT_EQ(settings, tested);
}

// Every `reap->add_option("--x"` / `reap->add_flag("--x"` of main.cpp is a config key, and
// every key is a flag: a new flag without a key (or the reverse) fails here.
TEST(ConfigKeys, MatchTheReapFlagsOfMain) {
    std::ifstream in(std::string(KIDREAPER_SOURCE_DIR) + "/userspace/cli/main.cpp");
    ASSERT_TRUE(in) << "cannot read main.cpp";
    std::stringstream text;
    text << in.rdbuf();
    const std::string source = text.str();
    const std::regex flag(R"re(reap->add_(?:option|flag)\(\s*"--([a-z-]+)")re");
    std::set<std::string> flags;
    for (auto it = std::sregex_iterator(source.begin(), source.end(), flag);
         it != std::sregex_iterator(); ++it) {
        if (kNotSettings.count((*it)[1].str()) == 0) {
            flags.insert((*it)[1].str());
        }
    }
    EXPECT_GE(flags.size(), 25U);
    std::set<std::string> keys;
    for (const auto& setting : reap_settings()) {
        keys.emplace(setting.key);
    }
    EXPECT_EQ(flags, keys);
}

// The config text with `key = value` where it belongs, for a service named "s".
std::string with_key(const ReapSetting& setting, const std::string& value) {
    const std::string line = std::string(setting.key) + " = " + value + "\n";
    if (setting.scope == SettingScope::top_level) {
        return line + kMinimal;
    }
    if (setting.scope == SettingScope::selector) {
        return "[[service]]\nname = \"a\"\nlimit = \"100MiB\"\n" + line;
    }
    if (setting.key == "limit") {
        return "[[service]]\nname = \"a\"\npid = 4242\n" + line;
    }
    return kMinimal + line;
}

TEST(ConfigKeys, EveryKeyTakesItsType) {
    for (const auto& setting : reap_settings()) {
        const std::string key(setting.key);
        SCOPED_TRACE(key);
        std::string text = with_key(setting, valid_values().at(key));
        if (key == "wait-for-manager") {  // not with pid
            text =
                "[[service]]\nname = \"a\"\npidfile = \"/run/a.pid\"\nlimit = 1000\n"
                "wait-for-manager = true\n";
        }
        EXPECT_NO_THROW((void)parse(text));

        std::string wrong;
        switch (setting.type) {
            case SettingType::text:
            case SettingType::size:
            case SettingType::duration:
            case SettingType::pid:
                wrong = "true";
                break;
            case SettingType::flag:
                wrong = "\"yes\"";
                break;
            case SettingType::count:
                wrong = "1.5";
                break;
            case SettingType::percent:
                wrong = "\"10\"";
                break;
        }
        const std::string message = error_of(with_key(setting, wrong));
        std::size_t line = 5;
        if (setting.scope == SettingScope::top_level) {
            line = 1;
        } else if (setting.scope == SettingScope::selector || key == "limit") {
            line = 4;
        }
        EXPECT_TRUE(
            message.starts_with(kPath + ":" + std::to_string(line) + ": " + key + ": expected "))
            << message;
    }
}

TEST(ConfigKeys, EachValueReachesItsOption) {
    std::string text =
        "interval = \"500ms\"\nlog-format = \"json\"\nfault-source = \"mm\"\n"
        "[[service]]\nname = \"a\"\npidfile = \"/run/app.pid\"\n";
    for (const auto& [key, value] : valid_values()) {
        const ReapSetting* setting = find_reap_setting(key);
        ASSERT_NE(setting, nullptr) << key;
        if (setting->scope == SettingScope::service) {
            text += key + " = " + value + "\n";
        }
    }
    const DaemonConfig config = parse(text);
    EXPECT_EQ(config.interval, std::chrono::milliseconds(500));
    EXPECT_EQ(config.log_format, LogFormat::json);
    EXPECT_EQ(config.fault_source, FaultSource::mm);
    const ReapOptions& o = config.services.at(0).options;
    EXPECT_EQ(o.policy.limit_bytes, 1ULL << 30);
    EXPECT_EQ(o.metric, Metric::pss);
    EXPECT_EQ(o.server.name, "gunicorn");
    ASSERT_TRUE(o.workers);
    EXPECT_TRUE(o.workers->any);
    EXPECT_EQ(o.policy.signals.front(), SIGHUP);
    EXPECT_EQ(o.policy.stagger, std::chrono::seconds(5));
    EXPECT_EQ(o.policy.max_concurrent, 2U);
    EXPECT_EQ(o.policy.min_children, 3U);
    EXPECT_EQ(o.policy.grace, std::chrono::minutes(2));
    EXPECT_TRUE(o.policy.escalate);
    EXPECT_EQ(o.policy.jitter_percent, 12.5);
    EXPECT_EQ(o.interval, std::chrono::milliseconds(500));
    EXPECT_EQ(o.idle_timeout, std::chrono::seconds(3));
    EXPECT_FALSE(o.idle_wait);
    EXPECT_EQ(o.policy.replace_timeout, std::chrono::seconds(90));
    EXPECT_EQ(o.truth_every, std::chrono::seconds(30));
    EXPECT_EQ(o.pre_hook, "/bin/true");
    EXPECT_EQ(o.post_hook, "logger recycled");
    EXPECT_EQ(o.hook_timeout, std::chrono::seconds(5));
    EXPECT_TRUE(o.policy.dry_run);
    EXPECT_TRUE(o.once);
    EXPECT_TRUE(o.wait_for_manager);
    EXPECT_EQ(o.log_format, LogFormat::json);
    EXPECT_EQ(o.fault_source, FaultSource::mm);
}

// ---- errors: one line, FILE:LINE: KEY: ... -----------------------------------------------

TEST(ConfigErrors, ValueErrorsNameFileLineAndKey) {
    struct Case {
        std::string text;
        std::string expected;  // the whole message
    };
    const std::vector<Case> cases = {
        {kMinimal + "limit = \"200XB\"\n", ""},  // duplicate key: a TOML error, line 5
        {"[[service]]\nname = \"a\"\npid = 4242\nlimit = \"200XB\"\n",
         kPath + ":4: limit: invalid size \"200XB\": expected a number with an optional unit "
                 "(B, K, KiB, M, MiB, G, GiB, T, TiB)"},
        {"[[service]]\nname = \"a\"\npid = 4242\nlimit = 0\n",
         kPath + ":4: limit: must be greater than zero, got 0"},
        {"[[service]]\nname = \"a\"\npid = 4242\nlimit = \"0\"\n",
         kPath + ":4: limit: must be greater than zero, got \"0\""},
        {kMinimal + "min-children = -1\n",
         kPath + ":5: min-children: must not be negative, got -1"},
        {kMinimal + "max-concurrent = 0\n", kPath + ":5: max-concurrent: must be at least 1"},
        {kMinimal + "max-concurrent = 5000000000\n",
         kPath + ":5: max-concurrent: too large: 5000000000"},
        {kMinimal + "jitter = 101\n",
         kPath + ":5: jitter: takes a percentage from 0 to 100, got 101"},
        {kMinimal + "jitter = nan\n",
         kPath + ":5: jitter: takes a percentage from 0 to 100, got nan"},
        {kMinimal + "stagger = \"10 s\"\n", ""},
        {kMinimal + "metric = \"vsz\"\n",
         kPath + ":5: metric: invalid metric \"vsz\": expected private, pss, rss or anon"},
        {kMinimal + "server = \"nginx\"\n", ""},
        {kMinimal + "signal = \"FOO\"\n", ""},
        {kMinimal + "workers = \"exe,bogus\"\n", ""},
        {"interval = \"0s\"\n" + kMinimal,
         kPath + ":1: interval: must be greater than zero, got \"0s\""},
        {"log-format = \"xml\"\n" + kMinimal,
         kPath + ":1: log-format: invalid log-format \"xml\": expected text or json"},
        {"fault-source = \"kprobe\"\n" + kMinimal,
         kPath + ":1: fault-source: invalid fault-source \"kprobe\": expected auto, tracepoints "
                 "or mm"},
        {"[[service]]\nname = \"a\"\npid = -3\nlimit = 1\n", ""},
        {"[[service]]\nname = \"a\"\npidfile = \"\"\nlimit = 1\n",
         kPath + ":3: pidfile: must not be empty"},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.text);
        const std::string message = error_of(c.text);
        if (!c.expected.empty()) {
            EXPECT_EQ(message, c.expected);
        }
        EXPECT_TRUE(message.starts_with(kPath + ":")) << message;
    }
    // The ones without a whole expected message: their line and key.
    EXPECT_TRUE(error_of(kMinimal + "stagger = \"10 s\"\n")
                    .starts_with(kPath + ":5: stagger: invalid duration"));
    EXPECT_TRUE(error_of(kMinimal + "server = \"nginx\"\n")
                    .starts_with(kPath + ":5: server: unknown server \"nginx\""));
    EXPECT_TRUE(error_of(kMinimal + "signal = \"FOO\"\n")
                    .starts_with(kPath + ":5: signal: invalid signal"));
    EXPECT_TRUE(error_of(kMinimal + "workers = \"exe,bogus\"\n")
                    .starts_with(kPath + ":5: workers: invalid workers"));
    EXPECT_TRUE(error_of("[[service]]\nname = \"a\"\npid = -3\nlimit = 1\n")
                    .starts_with(kPath + ":3: pid: invalid pid"));
}

TEST(ConfigErrors, TomlSyntaxGivesTheLine) {
    const std::string message = error_of("interval = \"1s\"\n\nlimit = [\n");
    EXPECT_TRUE(message.starts_with(kPath + ":3: invalid TOML: ")) << message;
    EXPECT_TRUE(error_of(kMinimal + "limit = \"2G\"\n").starts_with(kPath + ":5: invalid TOML: "));
    EXPECT_TRUE(error_of("a = \"\xff\"\n").starts_with(kPath + ":1: invalid TOML: "));
}

TEST(ConfigErrors, UnknownKeysWithAHint) {
    EXPECT_EQ(error_of(kMinimal + "limt = \"1G\"\n"),
              kPath + ":5: limt: unknown key (did you mean \"limit\"?)");
    EXPECT_EQ(error_of(kMinimal + "max_concurrent = 2\n"),
              kPath + ":5: max_concurrent: unknown key (did you mean \"max-concurrent\"?)");
    EXPECT_EQ(error_of(kMinimal + "colour = 2\n"), kPath + ":5: colour: unknown key");
    EXPECT_EQ(error_of("servce = 1\n" + kMinimal),
              kPath + ":1: servce: unknown key (did you mean \"service\"?)");
    EXPECT_EQ(error_of("[metrics]\nlisten = \"127.0.0.1:1\"\nlsten = \"x\"\n" + kMinimal),
              kPath + ":3: metrics.lsten: unknown key (did you mean \"listen\"?)");
    // A key that is no plain word is quoted, escapes and all: still one line.
    EXPECT_EQ(error_of(kMinimal + "\"a\\nb\" = 1\n"), kPath + ":5: \"a\\nb\": unknown key");
    EXPECT_EQ(error_of("[other]\n" + kMinimal), kPath + ":1: other: unknown key");
}

TEST(ConfigErrors, DaemonKeysOnlyAtTheTopLevel) {
    for (const std::string key : {"interval", "log-format", "fault-source"}) {
        SCOPED_TRACE(key);
        const std::string value = valid_values().at(key);
        EXPECT_EQ(error_of(kMinimal + key + " = " + value + "\n"),
                  kPath + ":5: " + key +
                      ": only at the top level: it is daemon-wide, the same for every service");
    }
    EXPECT_EQ(error_of("[[service]]\nname = \"a\"\npid = 1\nlimit = 1\n[service.metrics]\n"),
              kPath + ":5: metrics: only at the top level: one [metrics] table for the daemon");
    EXPECT_EQ(error_of(kMinimal + "[[service.service]]\n"), kPath + ":5: service: unknown key");
}

TEST(ConfigErrors, SelectorsAndNameOnlyInAService) {
    EXPECT_EQ(error_of("pidfile = \"/run/x.pid\"\n" + kMinimal),
              kPath +
                  ":1: pidfile: only in a [[service]] table: each service names its own "
                  "manager");
    EXPECT_EQ(error_of("name = \"x\"\n" + kMinimal),
              kPath + ":1: name: only in a [[service]] table: each service has its own");
}

TEST(ConfigErrors, ExactlyOneSelector) {
    EXPECT_EQ(error_of("limit = 1\n[[service]]\nname = \"web\"\nserver = \"gunicorn\"\n"),
              kPath +
                  ":2: service \"web\": names no manager: give one of pid, pidfile, cgroup, "
                  "unit");
    EXPECT_EQ(error_of("[[service]]\nname = \"web\"\npidfile = \"/run/w.pid\"\nlimit = 1\n"
                       "unit = \"w.service\"\n"),
              kPath +
                  ":5: unit: service \"web\" has pidfile already (line 3): give exactly one "
                  "of pid, pidfile, cgroup, unit");
    EXPECT_EQ(error_of("[[service]]\nname = \"web\"\ncgroup = \"/sys/fs/cgroup/w\"\npid = 3\n"
                       "limit = 1\n"),
              kPath +
                  ":4: pid: service \"web\" has cgroup already (line 3): give exactly one of "
                  "pid, pidfile, cgroup, unit");
}

TEST(ConfigErrors, WaitForManagerNotWithPid) {
    EXPECT_EQ(error_of(kMinimal + "wait-for-manager = true\n"),
              kPath +
                  ":5: wait-for-manager: service \"a\": wait-for-manager needs pidfile, "
                  "cgroup or unit (a new manager has a new pid)");
    // From the top level: the service's pid is named.
    EXPECT_EQ(error_of("wait-for-manager = true\n" + kMinimal),
              kPath +
                  ":4: pid: service \"a\": wait-for-manager needs pidfile, cgroup or unit (a "
                  "new manager has a new pid)");
    for (const std::string selector :
         {"pidfile = \"/run/a.pid\"", "cgroup = \"/sys/fs/cgroup/a\"", "unit = \"a.service\""}) {
        EXPECT_NO_THROW((void)parse("wait-for-manager = true\n[[service]]\nname = \"a\"\n" +
                                    selector + "\nlimit = 1\n"));
    }
}

TEST(ConfigErrors, LimitRequired) {
    EXPECT_EQ(error_of("[[service]]\nname = \"a\"\npid = 4242\n"),
              kPath +
                  ":1: limit: missing in service \"a\" and at the top level (e.g. limit = "
                  "\"300MiB\")");
}

TEST(ConfigErrors, Names) {
    EXPECT_EQ(error_of("[[service]]\npid = 4242\nlimit = 1\n"),
              kPath +
                  ":1: name: missing: every [[service]] needs a unique name (its metrics "
                  "label)");
    EXPECT_EQ(error_of("[[service]]\nname = \"\"\npid = 4242\nlimit = 1\n"),
              kPath + ":2: name: must not be empty");
    EXPECT_EQ(error_of("[[service]]\nname = \"my shop\"\npid = 4242\nlimit = 1\n"),
              kPath +
                  ":2: name: \"my shop\" is not a safe label value: use only letters, "
                  "digits, '_', '-' and '.'");
    EXPECT_EQ(error_of("[[service]]\nname = \"a\\\"b\\n\"\npid = 4242\nlimit = 1\n"),
              kPath +
                  ":2: name: \"a\"b\\n\" is not a safe label value: use only letters, "
                  "digits, '_', '-' and '.'");
    EXPECT_EQ(error_of("[[service]]\nname = 3\npid = 4242\nlimit = 1\n"),
              kPath + ":2: name: expected a string, got an integer");
    EXPECT_EQ(error_of(kMinimal + "\n[[service]]\nname = \"a\"\npid = 77\nlimit = 1\n"),
              kPath + ":6: name: \"a\" is already the name of the service at line 1");
    EXPECT_NO_THROW((void)parse("[[service]]\nname = \"Shop_2.eu-west\"\npid = 4242\nlimit = 1\n"));
}

TEST(ConfigErrors, Services) {
    EXPECT_EQ(error_of(""), kPath +
                                ":1: service: no [[service]] table: give at least one (name, "
                                "a manager, limit)");
    EXPECT_EQ(error_of("interval = \"1s\"\n"),
              kPath +
                  ":1: service: no [[service]] table: give at least one (name, a manager, "
                  "limit)");
    EXPECT_EQ(error_of("[service]\nname = \"a\"\n"),
              kPath + ":1: service: write each service as a [[service]] table, got a table");
    EXPECT_EQ(error_of("service = [1, 2]\n"),
              kPath + ":1: service: write each service as a [[service]] table, got an array");
    EXPECT_EQ(error_of("service = []\n"),
              kPath + ":1: service: write each service as a [[service]] table, got an array");
    EXPECT_EQ(error_of("metrics = 1\n" + kMinimal),
              kPath + ":1: metrics: expected a [metrics] table, got an integer");
}

TEST(ConfigErrors, Metrics) {
    for (const std::string good :
         {"127.0.0.1:19977", "0.0.0.0:1", "[::1]:65535", "[::]:9100", "[fe80::1]:80"}) {
        EXPECT_NO_THROW(check_listen_address(good)) << good;
    }
    for (const std::string bad :
         {"", "127.0.0.1", "127.0.0.1:", ":9100", "localhost:9100", "127.0.0.1:0",
          "127.0.0.1:65536", "127.0.0.1:99999", "127.0.0.1:+80", "::1:80", "[::1]", "[::1]80",
          "[127.0.0.1]:80", "1.2.3:80", "127.0.0.1:80 ", "[::1]:", "127.0.0.1:0080x"}) {
        SCOPED_TRACE(bad);
        EXPECT_TRUE(contains(usage_error_message([&] { check_listen_address(bad); }),
                             "expected HOST:PORT"));
    }
    EXPECT_EQ(error_of("[metrics]\nlisten = \"localhost:9100\"\n" + kMinimal),
              kPath +
                  ":2: metrics.listen: invalid address \"localhost:9100\": expected "
                  "HOST:PORT, HOST an IPv4 address or an IPv6 one in brackets, PORT 1-65535 "
                  "(e.g. 127.0.0.1:19977 or [::1]:19977)");
    EXPECT_EQ(error_of("[metrics]\nlisten = 9100\n" + kMinimal),
              kPath + ":2: metrics.listen: expected a string, got an integer");
    EXPECT_EQ(error_of("[metrics]\n\ntextfile = \"kidreaper.prom\"\n" + kMinimal),
              kPath +
                  ":3: metrics.textfile: expected the absolute path of a file, got "
                  "\"kidreaper.prom\"");
    EXPECT_TRUE(error_of("[metrics]\ntextfile = \"/var/lib/\"\n" + kMinimal)
                    .starts_with(kPath + ":2: metrics.textfile: expected the absolute path"));
}

TEST(ConfigErrors, ExitCodeIsTwoAndOneLine) {
    try {
        (void)parse("[[service]]\nname = \"a\"\nmetric = \"x\ny\"\n");
        FAIL();
    } catch (const UsageError& e) {
        EXPECT_EQ(e.exit_code(), 2);
    }
    // A parser's message quoting a value with a newline stays on one line.
    const std::string message = error_of(kMinimal + "metric = \"a\\nb\"\n");
    EXPECT_EQ(message, kPath +
                           ":5: metric: invalid metric \"a\\nb\": expected private, pss, rss "
                           "or anon");
}

// ---- command-line overrides ---------------------------------------------------------------

TEST(ConfigOverrides, CommandLineWinsOverTheTopLevel) {
    ConfigOverrides overrides;
    overrides.log_format = "text";
    overrides.fault_source = "tracepoints";
    overrides.metrics_listen = "[::1]:9999";
    overrides.dry_run = true;
    const DaemonConfig config = parse(std::string(kExample) + "dry-run = false\n", overrides);
    EXPECT_EQ(config.log_format, LogFormat::text);
    EXPECT_EQ(config.fault_source, FaultSource::tracepoints);
    EXPECT_EQ(config.metrics.listen, "[::1]:9999");
    EXPECT_TRUE(config.services.at(0).options.policy.dry_run);
    EXPECT_EQ(config.services.at(0).options.log_format, LogFormat::text);
    EXPECT_EQ(config.services.at(0).options.fault_source, FaultSource::tracepoints);

    overrides = {};
    overrides.metrics_listen = "nowhere";
    EXPECT_TRUE(error_of(kMinimal, overrides).starts_with("--metrics-listen: invalid address"));
    overrides = {};
    overrides.log_format = "xml";
    EXPECT_TRUE(error_of(kMinimal, overrides).starts_with("invalid --log-format \"xml\""));
}

// ---- fingerprints ----------------------------------------------------------------------------

std::string fingerprint_of(const std::string& text, std::size_t service = 0) {
    return parse(text).services.at(service).fingerprint;
}

TEST(ConfigFingerprint, SameForReorderedKeysAndOtherSpellings) {
    const std::string a = fingerprint_of(
        "[[service]]\nname = \"a\"\npid = 4242\nlimit = \"1G\"\nstagger = \"60s\"\n"
        "escalate = true\n");
    const std::string b = fingerprint_of(
        "escalate = true\n[[service]]\nstagger = \"1m\"\nlimit = 1073741824\nname = \"a\"\n"
        "pid = \"4242\"\n");
    EXPECT_EQ(a, b);
    EXPECT_TRUE(contains(a, "name=\"a\"\n")) << a;
    EXPECT_TRUE(contains(a, "limit=1073741824\n")) << a;
    EXPECT_TRUE(contains(a, "stagger=60000ms\n")) << a;
    // Defaults merged: every key is there.
    for (const auto& setting : reap_settings()) {
        if (setting.scope != SettingScope::top_level) {
            EXPECT_TRUE(contains(a, "\n" + std::string(setting.key) + "=")) << setting.key;
        }
    }
    // Another service of the same file does not change it.
    EXPECT_EQ(fingerprint_of(kMinimal + "[[service]]\nname = \"b\"\npid = 77\nlimit = 1\n"),
              fingerprint_of(kMinimal));
}

TEST(ConfigFingerprint, DifferentForAChangedValue) {
    const std::string base = fingerprint_of(kMinimal);
    EXPECT_NE(base, fingerprint_of(kMinimal + "stagger = \"11s\"\n"));
    EXPECT_NE(base, fingerprint_of(kMinimal + "dry-run = true\n"));
    EXPECT_NE(base, fingerprint_of("jitter = 1\n" + kMinimal));  // an inherited default
    EXPECT_NE(base, fingerprint_of("[[service]]\nname = \"a\"\npid = 4243\nlimit = \"100MiB\"\n"));
    EXPECT_NE(base, fingerprint_of("[[service]]\nname = \"b\"\npid = 4242\nlimit = \"100MiB\"\n"));
    EXPECT_NE(base,
              fingerprint_of(
                  "[[service]]\nname = \"a\"\npidfile = \"/run/a.pid\"\nlimit = \"100MiB\"\n"));
    EXPECT_NE(base, fingerprint_of(kMinimal + "pre-hook = \"x\"\n"));
    // Explicitly the default value is the same as not given.
    EXPECT_EQ(base, fingerprint_of(kMinimal + "stagger = \"10s\"\nmetric = \"private\"\n"));
}

// ---- the command line ------------------------------------------------------------------------

ReapArgs cli_args() {
    ReapArgs args;
    args.limit = "100MiB";
    return args;
}

TEST(ReapSettings, ExactlyOneSelectorOnTheCommandLine) {
    ReapArgs args = cli_args();
    EXPECT_EQ(usage_error_message([&] { (void)to_options(args); }),
              "which server? give one of --pid, --pidfile, --cgroup, --unit");
    args.pidfile = "/run/x.pid";
    args.unit = "x.service";
    EXPECT_EQ(usage_error_message([&] { (void)to_options(args); }),
              "give only one of --pid, --pidfile, --cgroup, --unit");
    args.pidfile.clear();
    const ReapOptions options = to_options(args);
    EXPECT_EQ(options.manager.kind, ManagerSelector::Kind::unit);
    EXPECT_EQ(options.manager.value, "x.service");
    EXPECT_FALSE(options.pid);
    EXPECT_FALSE(options.pidfile);
    args.unit.clear();
    args.cgroup = "/sys/fs/cgroup/system.slice/apache2.service";
    EXPECT_EQ(to_options(args).manager.kind, ManagerSelector::Kind::cgroup);
    args.cgroup.clear();
    args.pid = "0042";
    EXPECT_EQ(to_options(args).manager.value, "42");
    EXPECT_EQ(to_options(args).pid, 42);
}

TEST(ReapSettings, WaitForManagerWithEverySelectorButPid) {
    ReapArgs args = cli_args();
    args.wait_for_manager = true;
    args.pid = "42";
    EXPECT_TRUE(contains(usage_error_message([&] { (void)to_options(args); }),
                         "--wait-for-manager needs --pidfile, --cgroup or --unit"));
    args.pid.clear();
    for (const auto& [selector, value] :
         std::vector<std::pair<std::string ReapArgs::*, std::string>>{
             {&ReapArgs::pidfile, "/run/x.pid"},
             {&ReapArgs::cgroup, "/sys/fs/cgroup/x"},
             {&ReapArgs::unit, "x.service"}}) {
        ReapArgs with = args;
        with.*selector = value;
        EXPECT_TRUE(to_options(with).wait_for_manager);
    }
}

TEST(ReapSettings, RangesCheckedOnTheCommandLine) {
    ReapArgs args = cli_args();
    args.pid = "42";
    args.limit = "0";
    EXPECT_EQ(usage_error_message([&] { (void)to_options(args); }),
              "--limit must be greater than zero");
    args = cli_args();
    args.pid = "42";
    args.max_concurrent = 0;
    EXPECT_EQ(usage_error_message([&] { (void)to_options(args); }),
              "--max-concurrent must be at least 1");
    args.max_concurrent = 1;
    args.interval = "0";
    EXPECT_EQ(usage_error_message([&] { (void)to_options(args); }),
              "--interval must be greater than zero");
}

TEST(ReapSettings, SingleServiceConfigFromTheCommandLine) {
    ReapArgs args = cli_args();
    args.pidfile = "/run/app.pid";
    args.interval = "2s";
    args.log_format = "json";
    MetricsSettings metrics;
    metrics.listen = "127.0.0.1:19977";
    DaemonConfig config = single_service_config(to_options(args), args, metrics);
    EXPECT_TRUE(config.path.empty());
    EXPECT_EQ(config.interval, std::chrono::seconds(2));
    EXPECT_EQ(config.log_format, LogFormat::json);
    EXPECT_EQ(config.metrics.listen, "127.0.0.1:19977");
    ASSERT_EQ(config.services.size(), 1U);
    EXPECT_EQ(config.services[0].name, "generic");
    EXPECT_EQ(config.services[0].line, 0U);
    EXPECT_EQ(config.services[0].options.pidfile, "/run/app.pid");
    EXPECT_FALSE(config.services[0].fingerprint.empty());
    args.server = "gunicorn";
    config = single_service_config(to_options(args), args);
    EXPECT_EQ(config.services[0].name, "gunicorn");
    EXPECT_EQ(describe_service(config.services[0]),
              "gunicorn: pidfile \"/run/app.pid\", server gunicorn, limit 100 MiB private");
}

// The config's trust rule on a fake file system: root's files in root's directories, the
// user kidreaper runs as, and everybody else refused with the reason.
class FakePaths final : public PathInspector {
public:
    FakePaths() {
        add("/", 0, S_IFDIR | 0755);
        add("/etc", 0, S_IFDIR | 0755);
        add("/etc/kidreaper", 0, S_IFDIR | 0755);
        add("/home", 0, S_IFDIR | 0755);
        add("/home/ann", 1000, S_IFDIR | 0755);
    }
    void add(const std::string& path, uid_t uid, mode_t mode, gid_t gid = 0) {
        facts_[path] = PathFacts{uid, gid, mode};
    }
    std::optional<PathFacts> inspect(const std::filesystem::path& path) const override {
        const auto found = facts_.find(path.string());
        return found == facts_.end() ? std::nullopt : std::optional(found->second);
    }
    std::optional<std::filesystem::path> link_target(
        const std::filesystem::path& /*path*/) const override {
        return std::nullopt;
    }

private:
    std::map<std::string, PathFacts> facts_;
};

TEST(ConfigTrust, OnlyRootOrTheUserKidreaperRunsAsMayBeAbleToChangeIt) {
    FakePaths paths;
    paths.add("/etc/kidreaper/kidreaper.toml", 0, S_IFREG | 0644);
    EXPECT_EQ(config_trust_problem("/etc/kidreaper/kidreaper.toml", paths, 0), "");

    // Group- or world-writable, or owned by another user: its hooks would be theirs to write.
    paths.add("/etc/kidreaper/group.toml", 0, S_IFREG | 0664, 50);
    const std::string group = config_trust_problem("/etc/kidreaper/group.toml", paths, 0);
    EXPECT_TRUE(
        group.starts_with("/etc/kidreaper/group.toml: refused: its hooks would run as "
                          "root, and "))
        << group;
    paths.add("/home/ann/kidreaper.toml", 1000, S_IFREG | 0644);
    const std::string anns = config_trust_problem("/home/ann/kidreaper.toml", paths, 0);
    EXPECT_TRUE(contains(anns, "uid 1000")) << anns;
    EXPECT_EQ(anns.find('\n'), std::string::npos);
    // ... unless kidreaper runs as that user itself (the tests do).
    EXPECT_EQ(config_trust_problem("/home/ann/kidreaper.toml", paths, 1000), "");

    // A directory above it that another user can write: the file can be replaced.
    paths.add("/etc/open", 0, S_IFDIR | 0777);
    paths.add("/etc/open/kidreaper.toml", 0, S_IFREG | 0644);
    EXPECT_NE(config_trust_problem("/etc/open/kidreaper.toml", paths, 0), "");
    EXPECT_NE(config_trust_problem("/etc/open/kidreaper.toml", paths, 1000), "");
}

// ---- load_config -----------------------------------------------------------------------------

TEST(LoadConfig, ReadsTheFileOrSaysWhyNot) {
    const std::string dir = ::testing::TempDir();
    const std::string path = dir + "/kidreaper-test-config.toml";
    {
        std::ofstream out(path);
        out << kExample;
    }
    const DaemonConfig config = load_config(path);
    EXPECT_EQ(config.path, path);
    EXPECT_EQ(config.services.at(0).name, "shop");
    {
        std::ofstream out(path);
        out << "\n\n[[service]]\nname = \"x\"\nlimit = \"1XB\"\n";
    }
    EXPECT_TRUE(usage_error_message([&] {
                    (void)load_config(path);
                }).starts_with(path + ":5: limit: invalid size"));
    std::remove(path.c_str());
    EXPECT_EQ(usage_error_message([&] { (void)load_config(path); }),
              path + ": No such file or directory");
    EXPECT_EQ(usage_error_message([&] { (void)load_config(dir); }), dir + ": not a regular file");
}

}  // namespace
}  // namespace kidreaper
