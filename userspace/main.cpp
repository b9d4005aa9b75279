// kidreaper's command line.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "error.h"
#include "kernel_features.h"
#include "log.h"

namespace kidreaper {
namespace {

int run_check(const Logger& log) {
    const KernelFeatures features = probe_features();
    std::fputs(format_features(features).c_str(), stdout);
    const auto problems = blocking_problems(features);
    for (const auto& problem : problems) {
        log.error(problem);
    }
    return problems.empty() ? 0 : 1;
}

int run(int argc, char** argv) {
    CLI::App app{"kidreaper: tells a memory leak from copy-on-write in a pre-fork server's "
                 "children, and recycles oversized children gracefully"};
    app.set_version_flag("--version", "kidreaper 0.1.0");
    bool verbose = false;
    app.add_flag("-v,--verbose", verbose, "Debug output, libbpf's log included");
    app.require_subcommand(1);

    auto* check = app.add_subcommand("check", "Report what this kernel supports and the mode kidreaper runs in");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    const Logger log(verbose ? LogLevel::debug : LogLevel::info);
    route_libbpf_log(verbose);
    if (check->parsed()) {
        return run_check(log);
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
