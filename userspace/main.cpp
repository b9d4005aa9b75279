// kidreaper's command line.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <optional>
#include <string>

#include "diagnose.h"
#include "error.h"
#include "kernel_features.h"
#include "log.h"
#include "observer.h"
#include "procfs.h"
#include "units.h"

namespace kidreaper {
namespace {

int run_check(const Logger& log) {
    const KernelFeatures features = probe_features();
    std::fputs(format_features(features).c_str(), stdout);
    const auto problems = blocking_problems(features);
    for (const auto& problem : problems) {
        log.error(problem);
    }
    if (!problems.empty()) {
        return 1;
    }
    // Prove it: load and attach the programs, then detach.
    const Observer observer({.exact_cow = features.exact_cow()}, log);
    std::printf("BPF programs: loaded and attached (mode: %s)\n",
                observer_mode(observer.exact_cow()).c_str());
    return 0;
}

// Raw option text, parsed by our own parsers so that errors read the same everywhere.
struct DiagnoseArgs {
    std::string pid;
    std::string pidfile;
    std::string duration;
    std::string interval = "1s";
    std::string format = "table";
    std::string limit;
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
    if (args.demo && (options.pid || options.pidfile)) {
        throw UsageError("--demo runs its own server: drop --pid/--pidfile");
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
    return options;
}

int run(int argc, char** argv) {
    CLI::App app{
        "kidreaper: tells a memory leak from copy-on-write in a pre-fork server's "
        "children, and recycles oversized children gracefully"};
    app.set_version_flag("--version", "kidreaper 0.1.0");
    bool verbose = false;
    app.add_flag("-v,--verbose", verbose, "Debug output, libbpf's log included");
    app.require_subcommand(1);

    auto* check = app.add_subcommand(
        "check", "Report what this kernel supports and the mode kidreaper runs in");

    DiagnoseArgs diagnose_args;
    auto* diagnose = app.add_subcommand(
        "diagnose", "Watch a server's children for a while and explain each one's memory");
    diagnose->add_option("--pid", diagnose_args.pid, "The manager (parent) process id");
    diagnose->add_option("--pidfile", diagnose_args.pidfile, "A file holding the manager's pid");
    diagnose->add_option("--duration", diagnose_args.duration,
                         "How long to watch: 500ms, 10s, 2m or seconds (default 30s; demo 10s)");
    diagnose->add_option("--interval", diagnose_args.interval, "Time between samples (default 1s)");
    diagnose->add_option("--format", diagnose_args.format, "table or json (default table)");
    diagnose->add_option("--limit", diagnose_args.limit,
                         "A private-memory limit to project leaks against: 50MiB, 1G, bytes");
    diagnose->add_flag("--demo", diagnose_args.demo,
                       "Start a built-in workload (cow, leak, idle children) and diagnose it");

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
        return run_check(log);
    }
    if (diagnose->parsed()) {
        return run_diagnose(to_options(diagnose_args), log);
    }
    return 2;
}

}  // namespace
}  // namespace kidreaper

int main(int argc, char** argv) {
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
