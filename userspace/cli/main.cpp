// kidreaper's command line.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>

#include "act/signals.h"
#include "cli/diagnose.h"
#include "common/error.h"
#include "common/log.h"
#include "common/units.h"
#include "daemon/config.h"
#include "daemon/daemon.h"
#include "daemon/reap_settings.h"
#include "daemon/reaper.h"
#include "observe/kernel_features.h"
#include "observe/observer.h"
#include "observe/procfs.h"
#include "policy/server_presets.h"
#include "version.h"

namespace kidreaper {
namespace {

// A path given on the command line, made absolute against the working directory (the
// daemon rereads it later, and the config file takes only absolute paths).
std::string absolute_path(const std::string& path) {
    if (path.empty() || path.front() == '/') {
        return path;
    }
    std::error_code error;
    const std::filesystem::path absolute = std::filesystem::absolute(path, error);
    return error ? path : absolute.lexically_normal().string();
}

int run_check(const std::string& fault_source, const Logger& log) {
    const FaultSource wanted = parse_fault_source(fault_source);
    const KernelFeatures features = probe_features();
    std::printf("version: %s\n", KIDREAPER_VERSION);
    std::fputs(format_features(features).c_str(), stdout);
    const auto problems = blocking_problems(features);
    for (const auto& problem : problems) {
        log.error(problem);
    }
    if (!problems.empty()) {
        return 1;
    }
    // Prove it: load and attach the programs, then detach.
    const Observer observer({.cow = features.cow_source(wanted)}, log);
    std::printf("BPF programs: loaded and attached (mode: %s)\n",
                cow_source_name(observer.cow_source()).c_str());
    return 0;
}

// Raw option text, parsed by our own parsers so that errors read the same everywhere.
struct DiagnoseArgs {
    std::string pid;
    std::string pidfile;
    std::string cgroup;
    std::string unit;
    std::string duration;
    std::string interval = "1s";
    std::string format = "table";
    std::string limit;
    std::string workers;
    std::string fault_source = "auto";
    bool demo = false;
};

DiagnoseOptions to_options(const DiagnoseArgs& args) {
    DiagnoseOptions options;
    options.demo = args.demo;
    if (!args.pid.empty()) {
        options.pid = parse_pid(args.pid);
    }
    if (!args.pidfile.empty()) {
        options.pidfile = args.pidfile;
    }
    if (!args.cgroup.empty()) {
        options.manager = ManagerSelector{ManagerSelector::Kind::cgroup, args.cgroup};
    }
    if (!args.unit.empty()) {
        options.manager = ManagerSelector{ManagerSelector::Kind::unit, args.unit};
    }
    const int selectors = (options.pid ? 1 : 0) + (options.pidfile ? 1 : 0) +
                          (args.cgroup.empty() ? 0 : 1) + (args.unit.empty() ? 0 : 1);
    if (args.demo && selectors > 0) {
        throw UsageError("--demo runs its own server: drop --pid/--pidfile/--cgroup/--unit");
    }
    if (selectors > 1) {
        throw UsageError("give only one of --pid, --pidfile, --cgroup, --unit");
    }
    if (!args.duration.empty()) {
        options.duration = parse_duration(args.duration);
    } else if (args.demo) {
        options.duration = std::chrono::seconds(10);
    }
    options.interval = parse_duration(args.interval);
    if (args.demo && args.interval == "1s") {
        options.interval = std::chrono::milliseconds(500);
    }
    if (args.format == "json") {
        options.format = OutputFormat::json;
    } else if (args.format != "table") {
        throw UsageError("invalid --format \"" + args.format + "\": expected table or json");
    }
    if (!args.limit.empty()) {
        options.limit = parse_size(args.limit);
    }
    if (!args.workers.empty()) {
        options.workers = parse_worker_rule(args.workers);
    }
    options.fault_source = parse_fault_source(args.fault_source);
    return options;
}

// `reap` beyond the per-server settings: the config file and what goes with it.
struct ReapCommand {
    ReapArgs args;
    std::string config;          // --config FILE: the file gives the services
    bool check_config = false;   // --check-config: validate the file, print the services
    std::string metrics_listen;  // --metrics-listen ADDR
};

// With --config, the only flags allowed beside it (the rest are the file's).
bool allowed_with_config(const std::string& flag) {
    for (const char* allowed : {"--config", "--check-config", "--metrics-listen", "--log-format",
                                "--fault-source", "--dry-run", "--help"}) {
        if (flag == allowed) {
            return true;
        }
    }
    return false;
}

int run_reap_command(const CLI::App& reap, const ReapCommand& command, const Logger& log) {
    if (command.config.empty()) {
        if (command.check_config) {
            throw UsageError("--check-config needs --config FILE");
        }
        ReapArgs args = command.args;
        args.pidfile = absolute_path(args.pidfile);
        args.cgroup = absolute_path(args.cgroup);
        const ReapOptions options = to_options(args);
        MetricsSettings metrics;
        if (!command.metrics_listen.empty()) {
            try {
                check_listen_address(command.metrics_listen);
            } catch (const UsageError& e) {
                throw UsageError(std::string("--metrics-listen: ") + e.what());
            }
            metrics.listen = command.metrics_listen;
        }
        return run_daemon(single_service_config(options, args, metrics), log);
    }
    for (const CLI::Option* option : reap.get_options()) {
        const std::string flag = option->get_name();
        if (option->count() > 0 && !allowed_with_config(flag)) {
            throw UsageError(flag + ": not with --config (the file gives the services; set " +
                             flag.substr(2) + " there)");
        }
    }
    ConfigOverrides overrides;
    if (!command.metrics_listen.empty()) {
        overrides.metrics_listen = command.metrics_listen;
    }
    if (reap.count("--log-format") > 0) {
        overrides.log_format = command.args.log_format;
    }
    if (reap.count("--fault-source") > 0) {
        overrides.fault_source = command.args.fault_source;
    }
    overrides.dry_run = command.args.dry_run;
    const DaemonConfig config = load_config(command.config, overrides);
    if (command.check_config) {
        for (const auto& service : config.services) {
            std::printf("%s\n", describe_service(service).c_str());
        }
        return 0;
    }
    return run_daemon(config, log, overrides);
}

int run(int argc, char** argv) {
    CLI::App app{
        "kidreaper: tells a memory leak from copy-on-write in a pre-fork server's "
        "children, and recycles oversized children gracefully"};
    app.set_version_flag("--version", std::string("kidreaper ") + KIDREAPER_VERSION);
    bool verbose = false;
    app.add_flag("-v,--verbose", verbose, "Debug output, libbpf's log included");
    app.require_subcommand(1);

    auto* check = app.add_subcommand(
        "check", "Report what this kernel supports and the mode kidreaper runs in");
    std::string check_fault_source = "auto";
    check->add_option("--fault-source", check_fault_source,
                      "Load with this fault source: auto (default), tracepoints or mm");

    DiagnoseArgs diagnose_args;
    auto* diagnose = app.add_subcommand(
        "diagnose", "Watch a server's children for a while and explain each one's memory");
    diagnose->add_option("--pid", diagnose_args.pid, "The manager (parent) process id");
    diagnose->add_option("--pidfile", diagnose_args.pidfile, "A file holding the manager's pid");
    diagnose->add_option("--cgroup", diagnose_args.cgroup,
                         "The manager is the cgroup's process whose parent is outside it");
    diagnose->add_option("--unit", diagnose_args.unit,
                         "The manager is the systemd unit's main process (MainPID)");
    diagnose->add_option("--duration", diagnose_args.duration,
                         "How long to watch: 500ms, 10s, 2m or seconds (default 30s; demo 10s)");
    diagnose->add_option("--interval", diagnose_args.interval, "Time between samples (default 1s)");
    diagnose->add_option("--format", diagnose_args.format, "table or json (default table)");
    diagnose->add_option("--limit", diagnose_args.limit,
                         "A private-memory limit to project leaks against: 50MiB, 1G, bytes");
    diagnose->add_option("--workers", diagnose_args.workers,
                         "Which children are workers: exe, listener, comm=GLOB, cmdline=GLOB "
                         "(all must hold) or any (default exe,listener; see docs/reap.md)");
    diagnose->add_option(
        "--fault-source", diagnose_args.fault_source,
        "Where page faults are seen: auto (default), tracepoints (x86 page-fault tracepoints) or "
        "mm (probes on the write-protect path only; see docs/kernels.md)");
    diagnose->add_flag("--demo", diagnose_args.demo,
                       "Start a built-in workload (cow, leak, idle children) and diagnose it");

    ReapCommand reap_command;
    ReapArgs& reap_args = reap_command.args;
    auto* reap = app.add_subcommand(
        "reap", "Recycle children over a limit gracefully, one at a time, continuously");
    reap->add_option("--pid", reap_args.pid, "The manager (parent) process id");
    reap->add_option("--pidfile", reap_args.pidfile,
                     "A file holding the manager's pid; re-read to follow restarts");
    reap->add_option("--cgroup", reap_args.cgroup,
                     "The manager is the cgroup's process whose parent is outside it");
    reap->add_option("--unit", reap_args.unit,
                     "The manager is the systemd unit's main process (MainPID)");
    reap->add_option("--limit", reap_args.limit, "Recycle children over this: 300MiB, 1G, bytes");
    reap->add_option("--metric", reap_args.metric,
                     "private (default: what a child holds alone), pss, rss or anon");
    reap->add_option("--server", reap_args.server,
                     "fcgi, httpd-prefork, gunicorn, uwsgi, php-fpm, unicorn, puma or starman: "
                     "its graceful signal, escalation and idle syscalls");
    reap->add_option("--workers", reap_args.workers,
                     "Which children are workers: exe, listener, comm=GLOB, cmdline=GLOB (all "
                     "must hold) or any; default: the server's (exe,listener; generic: exe)");
    reap->add_option("--signal", reap_args.signal, "Override the graceful signal (e.g. HUP)");
    reap->add_option("--stagger", reap_args.stagger, "At least this between signals (10s)");
    reap->add_option("--max-concurrent", reap_args.max_concurrent,
                     "Children recycling at once (1)");
    reap->add_option("--min-children", reap_args.min_children,
                     "Never signal when fewer would remain alive (0)");
    reap->add_option("--grace", reap_args.grace, "Report a child still alive after this (60s)");
    reap->add_flag("--escalate", reap_args.escalate,
                   "After --grace, send the next signal of the server's sequence");
    reap->add_option("--jitter", reap_args.jitter,
                     "Lower each child's limit by up to PCT percent (0)");
    reap->add_option("--interval", reap_args.interval, "Time between decisions (1s)");
    reap->add_option("--idle-timeout", reap_args.idle_timeout,
                     "Wait this long for the victim to be idle before signalling anyway (10s)");
    reap->add_flag("--no-idle-wait", reap_args.no_idle_wait, "Signal without waiting for idle");
    reap->add_option("--replace-timeout", reap_args.replace_timeout,
                     "Go on if no replacement appears within this (60s)");
    reap->add_option("--truth-every", reap_args.truth_every,
                     "Re-read each child's smaps_rollup at most this often (60s)");
    reap->add_option("--pre-hook", reap_args.pre_hook,
                     "Shell command run before each signal; non-zero vetoes it");
    reap->add_option("--post-hook", reap_args.post_hook,
                     "Shell command run after each recycled child is replaced");
    reap->add_option("--hook-timeout", reap_args.hook_timeout, "Kill a hook after this (30s)");
    reap->add_flag("--dry-run", reap_args.dry_run, "Decide and log, signal nobody");
    reap->add_flag("--once", reap_args.once,
                   "Exit when nothing is over the limit or recycling (cron style)");
    reap->add_flag("--wait-for-manager", reap_args.wait_for_manager,
                   "With --pidfile, --cgroup or --unit: keep waiting when the manager is gone");
    reap->add_option("--log-format", reap_args.log_format, "text (default) or json");
    reap->add_option(
        "--fault-source", reap_args.fault_source,
        "Where page faults are seen: auto (default), tracepoints (x86 page-fault tracepoints) or "
        "mm (probes on the write-protect path only; see docs/kernels.md)");
    reap->add_option("--config", reap_command.config,
                     "A TOML file of services to reap (docs/config.md); the per-server flags "
                     "are its keys then");
    reap->add_flag("--check-config", reap_command.check_config,
                   "With --config: validate the file, print one line per service, exit 0 or 2");
    reap->add_option("--metrics-listen", reap_command.metrics_listen,
                     "Serve Prometheus metrics on HOST:PORT (e.g. 127.0.0.1:19977)");

    // -v is accepted after the subcommand too.
    for (auto* subcommand : {check, diagnose, reap}) {
        subcommand->fallthrough();
    }

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::fprintf(stderr, "kidreaper: error: %s (see --help)\n", e.what());
        return 2;
    }
    const Logger log(verbose ? LogLevel::debug : LogLevel::info);
    route_libbpf_log(verbose);
    if (check->parsed()) {
        return run_check(check_fault_source, log);
    }
    if (diagnose->parsed()) {
        diagnose_args.pidfile = absolute_path(diagnose_args.pidfile);
        diagnose_args.cgroup = absolute_path(diagnose_args.cgroup);
        const DiagnoseOptions options = to_options(diagnose_args);
        return run_diagnose(options, log);
    }
    if (reap->parsed()) {
        return run_reap_command(*reap, reap_command, log);
    }
    return 2;
}

}  // namespace
}  // namespace kidreaper

int main(int argc, char** argv) {
    // Before anything else: an ignored SIGCHLD or a blocked SIGTERM from our parent would
    // turn hook vetoes into approvals and make us unstoppable (signals.h).
    kidreaper::reset_inherited_signals();
    try {
        return kidreaper::run(argc, argv);
    } catch (const kidreaper::Error& e) {
        std::fprintf(stderr, "kidreaper: error: %s\n", e.what());
        return e.exit_code();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "kidreaper: error: %s\n", e.what());
        return 1;
    }
}
