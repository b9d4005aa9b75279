// kr-bench: kidreaper's benchmark harness (run by scripts/bench; see docs/performance.md).
//   kr-bench faults    [--rounds N] [--storms N] [--cow-mib M] [--fresh-mib M] [--bpftrace PATH]
//   kr-bench poll      [--children 10,100,1000] [--sizes-mib 16,256] [--polls N] [--smaps-polls N]
//   kr-bench reaction  --kidreaper PATH [--intervals 250ms,500ms,1s] [--trials N] [--limit-mib M]
//   kr-bench footprint --kidreaper PATH [--children N] [--preload-mib M] [--seconds S] [--warmup S]
//   kr-bench host      --kidreaper PATH [--managers N] [--children N] [--seconds S] [--warmup S]
//                      [--trials N] [--storms N] [--single-children N] [--single-seconds S]
// Each writes one JSON document to --out FILE (or stdout). Needs root (BPF).
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <string>

#include "bench_util.h"

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr,
                     "usage: kr-bench faults|poll|reaction|footprint|host [--out FILE] ...\n");
        return 2;
    }
    if (geteuid() != 0) {
        std::fprintf(stderr, "kr-bench: loads BPF programs: run as root\n");
        return 1;
    }
    krbench::Args args;
    for (int i = 2; i < argc; ++i) {
        args.items.emplace_back(argv[i]);
    }
    const std::string command = argv[1];
    try {
        if (command == "faults") {
            return krbench::run_faults(args);
        }
        if (command == "poll") {
            return krbench::run_poll(args);
        }
        if (command == "reaction") {
            return krbench::run_reaction(args);
        }
        if (command == "footprint") {
            return krbench::run_footprint(args);
        }
        if (command == "host") {
            return krbench::run_host(args);
        }
        std::fprintf(stderr, "kr-bench: unknown benchmark %s\n", command.c_str());
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "kr-bench %s: %s\n", command.c_str(), e.what());
        return 1;
    }
}
