// Benchmark 2: CPU per poll for N idle children holding S of inherited memory each:
//  - kidreaper's poll (Watcher::poll: the map read plus its per-child bookkeeping), and its
//    parts: Observer::read_children() alone, and the /proc/PID/stat read per child that
//    Watcher::poll does to confirm each child is still the manager's;
//  - reading /proc/PID/smaps_rollup of every child (what SizeLimit- and smem-style tools
//    do each poll);
//  - reading /proc/PID/status of every child (the cheap procfs alternative, for scale).
// CPU is the harness thread's CPU clock (user + system) around each poll.
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <sstream>
#include <stdexcept>

#include "bench_util.h"
#include "common/log.h"
#include "observe/observer.h"
#include "observe/procfs.h"
#include "observe/watcher.h"

namespace krbench {

namespace {

std::vector<long> parse_list(const std::string& text) {
    std::vector<long> values;
    std::istringstream items(text);
    for (std::string item; std::getline(items, item, ',');) {
        values.push_back(std::stol(item));
    }
    return values;
}

struct Timing {
    std::vector<double> cpu_ms;
    std::vector<double> wall_ms;
};

// Runs `poll` until it ran at least `min_runs` times and for `min_seconds` of wall time,
// or `max_runs` times, or (after its first run) for `max_seconds` of wall time.
template <typename Poll>
Timing time_polls(Poll&& poll, int min_runs, int max_runs, double min_seconds,
                  double max_seconds = 1e9) {
    Timing timing;
    const std::uint64_t started = mono_ns();
    for (int run = 0; run < max_runs; ++run) {
        const std::uint64_t cpu0 = thread_cpu_ns();
        const std::uint64_t wall0 = mono_ns();
        poll();
        const std::uint64_t wall1 = mono_ns();
        const std::uint64_t cpu1 = thread_cpu_ns();
        timing.cpu_ms.push_back(static_cast<double>(cpu1 - cpu0) / 1e6);
        timing.wall_ms.push_back(static_cast<double>(wall1 - wall0) / 1e6);
        const double elapsed = static_cast<double>(mono_ns() - started) / 1e9;
        if ((run + 1 >= min_runs && elapsed >= min_seconds) || elapsed >= max_seconds) {
            break;
        }
    }
    return timing;
}

Json timing_json(const Timing& timing) {
    return Json{{"cpu_ms", summary(timing.cpu_ms)},
                {"wall_ms", summary(timing.wall_ms)},
                {"cpu_ms_each", timing.cpu_ms}};
}

}  // namespace

int run_poll(const Args& args) {
    const auto counts = parse_list(args.get_or("--children", "10,100,1000"));
    const auto sizes = parse_list(args.get_or("--sizes-mib", "16,256"));
    // Watcher::poll re-checks /proc every 16th poll: a multiple of 16 polls gives the mean.
    const int polls = static_cast<int>(args.get_long("--polls", 32));
    const int smaps_polls = static_cast<int>(args.get_long("--smaps-polls", 5));
    // Reading smaps_rollup of 100 children of 4 GiB, or of 10,000 children, takes seconds:
    // after its first run, the comparison stops at this much wall time.
    const double smaps_seconds = static_cast<double>(args.get_long("--smaps-seconds", 3));
    // cross: every count at every size. curve: the cost curve, not the cross product: the
    // counts at --curve-mib (one of the sizes) and the sizes at --curve-children (one of
    // the counts).
    const std::string shape = args.get_or("--shape", "cross");
    const long curve_mib = args.get_long("--curve-mib", sizes.front());
    const long curve_children = args.get_long("--curve-children", 100);
    if (shape != "cross" && shape != "curve") {
        throw std::runtime_error("--shape must be cross or curve");
    }
    if (shape == "curve" &&
        (std::find(sizes.begin(), sizes.end(), curve_mib) == sizes.end() ||
         std::find(counts.begin(), counts.end(), curve_children) == counts.end())) {
        throw std::runtime_error(
            "--curve-mib must be one of --sizes-mib, --curve-children one of "
            "--children");
    }

    kidreaper::Logger log(kidreaper::LogLevel::warn);
    const kidreaper::ProcFs proc;
    Json configs = Json::array();
    for (long size_mib : sizes) {
        for (long count : counts) {
            if (shape == "curve" && size_mib != curve_mib && count != curve_children) {
                continue;
            }
            const std::uint64_t preload = static_cast<std::uint64_t>(size_mib) << 20;
            // The manager is forked before the observer exists (no BPF fds inherited).
            IdleManager manager(static_cast<std::size_t>(count), preload);
            const auto& children = manager.children();
            kidreaper::Observer observer(kidreaper::ObserverOptions{}, log);
            const std::uint64_t setup0 = thread_cpu_ns();
            kidreaper::Watcher watcher(observer, proc, manager.pid(), 120);
            const double watcher_setup_ms = static_cast<double>(thread_cpu_ns() - setup0) / 1e6;
            watcher.poll();  // warm-up: the first poll

            std::size_t seen = 0;
            const Timing map_read =
                time_polls([&]() { seen = observer.read_children().size(); }, polls, polls, 0);
            const Timing watcher_poll = time_polls([&]() { watcher.poll(); }, polls, polls, 0);
            const Timing stat_all = time_polls(
                [&]() {
                    for (pid_t child : children) {
                        (void)proc.stat(child);
                    }
                },
                polls, polls * 4, 0.5, 2.0);
            const Timing status_all = time_polls(
                [&]() {
                    for (pid_t child : children) {
                        (void)proc.status(child);
                    }
                },
                polls, polls * 4, 0.5, 2.0);
            std::uint64_t smaps_rss = 0;
            const Timing smaps_all = time_polls(
                [&]() {
                    smaps_rss = 0;
                    for (pid_t child : children) {
                        if (const auto smaps = proc.smaps_rollup(child)) {
                            smaps_rss += smaps->rss;
                        }
                    }
                },
                std::min(3, smaps_polls), smaps_polls, 1.0, smaps_seconds);
            const double n = static_cast<double>(count);
            configs.push_back({{"children", count},
                               {"inherited_mib", size_mib},
                               {"children_seen_in_maps", seen},
                               {"fork_seconds", manager.fork_seconds()},
                               {"watcher_setup_cpu_ms", watcher_setup_ms},
                               {"child_rss_mib", static_cast<double>(smaps_rss) / n / 1048576.0},
                               {"map_read", timing_json(map_read)},
                               {"watcher_poll", timing_json(watcher_poll)},
                               {"stat_every_child", timing_json(stat_all)},
                               {"status_every_child", timing_json(status_all)},
                               {"smaps_every_child", timing_json(smaps_all)},
                               {"us_per_child",
                                {{"map_read", median(map_read.cpu_ms) * 1000 / n},
                                 {"watcher_poll", mean(watcher_poll.cpu_ms) * 1000 / n},
                                 {"stat", median(stat_all.cpu_ms) * 1000 / n},
                                 {"status", median(status_all.cpu_ms) * 1000 / n},
                                 {"smaps", median(smaps_all.cpu_ms) * 1000 / n}}}});
            std::cerr << "poll: " << count << " children x " << size_mib << " MiB: kidreaper "
                      << mean(watcher_poll.cpu_ms) << " ms, smaps " << median(smaps_all.cpu_ms)
                      << " ms\n";
        }
    }
    emit(args, Json{{"benchmark", "poll"},
                    {"machine", machine_facts()},
                    {"possible_cpus", online_cpus()},
                    {"polls", polls},
                    {"shape", shape},
                    {"configs", configs}});
    return 0;
}

}  // namespace krbench
