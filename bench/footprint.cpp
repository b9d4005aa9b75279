// Benchmark 4: kidreaper's own footprint. The real `kidreaper reap --pid M --limit 100GiB
// --interval 1s` (a limit nobody reaches) watches a manager with --children idle children
// holding --preload-mib inherited memory each. After it logged "start" and a warm-up, the
// harness samples once a second: /proc/K/schedstat (CPU time in ns), /proc/K/stat
// utime+stime (clock ticks, as a cross-check), and VmRSS / VmHWM from /proc/K/status.
#include <signal.h>
#include <unistd.h>

#include <iostream>
#include <sstream>

#include "bench_util.h"
#include "common/units.h"
#include "observe/procfs.h"

namespace krbench {

namespace {

struct Sample {
    double seconds = 0;           // since "start"
    std::uint64_t cpu_ns = 0;     // schedstat field 1
    std::uint64_t cpu_ticks = 0;  // utime + stime
    std::uint64_t rss_kib = 0;
    std::uint64_t hwm_kib = 0;
};

std::uint64_t status_kib(const std::string& status, const std::string& key) {
    std::istringstream lines(status);
    for (std::string line; std::getline(lines, line);) {
        if (line.starts_with(key)) {
            std::istringstream fields(line.substr(key.size()));
            std::uint64_t kib = 0;
            fields >> kib;
            return kib;
        }
    }
    return 0;
}

std::optional<Sample> sample(pid_t pid, std::uint64_t since_ns) {
    const std::string base = "/proc/" + std::to_string(pid);
    const std::string schedstat = read_text(base + "/schedstat");
    const std::string stat = read_text(base + "/stat");
    const std::string status = read_text(base + "/status");
    if (schedstat.empty() || stat.empty() || status.empty()) {
        return std::nullopt;
    }
    Sample s;
    s.seconds = static_cast<double>(mono_ns() - since_ns) / 1e9;
    std::istringstream(schedstat) >> s.cpu_ns;
    // Fields after the command's closing parenthesis: state is field 3; utime 14, stime 15.
    std::istringstream rest(stat.substr(stat.rfind(')') + 2));
    std::string field;
    std::uint64_t utime = 0, stime = 0;
    for (int index = 3; index <= 15 && rest >> field; ++index) {
        if (index == 14) {
            utime = std::stoull(field);
        } else if (index == 15) {
            stime = std::stoull(field);
        }
    }
    s.cpu_ticks = utime + stime;
    s.rss_kib = status_kib(status, "VmRSS:");
    s.hwm_kib = status_kib(status, "VmHWM:");
    return s;
}

Json window(const std::vector<Sample>& samples, double from, double to) {
    const Sample* first = nullptr;
    const Sample* last = nullptr;
    std::vector<double> rss;
    for (const auto& s : samples) {
        if (s.seconds + 1e-6 < from || s.seconds > to + 0.5) {
            continue;
        }
        if (first == nullptr) {
            first = &s;
        }
        last = &s;
        rss.push_back(static_cast<double>(s.rss_kib) / 1024.0);
    }
    if (first == nullptr || last == first) {
        return Json{{"from_s", from}, {"to_s", to}, {"error", "not enough samples"}};
    }
    const double wall = last->seconds - first->seconds;
    const double cpu = static_cast<double>(last->cpu_ns - first->cpu_ns) / 1e9;
    const double ticks_per_second = static_cast<double>(sysconf(_SC_CLK_TCK));
    const double cpu_ticks =
        static_cast<double>(last->cpu_ticks - first->cpu_ticks) / ticks_per_second;
    return Json{{"from_s", first->seconds},
                {"to_s", last->seconds},
                {"cpu_percent", 100.0 * cpu / wall},
                {"cpu_percent_ticks", 100.0 * cpu_ticks / wall},
                {"cpu_ms_per_second", 1000.0 * cpu / wall},
                {"rss_mib", summary(rss)}};
}

}  // namespace

int run_footprint(const Args& args) {
    const std::string kidreaper = args.get_or("--kidreaper", "build-bench/kidreaper");
    const auto children = static_cast<std::size_t>(args.get_long("--children", 1000));
    const std::uint64_t preload = static_cast<std::uint64_t>(args.get_long("--preload-mib", 64))
                                  << 20;
    const double warmup = static_cast<double>(args.get_long("--warmup", 5));
    const double seconds = static_cast<double>(args.get_long("--seconds", 60));
    const std::string interval = args.get_or("--interval", "1s");
    const std::string truth_every = args.get_or("--truth-every", "60s");

    IdleManager manager(children, preload);
    std::cerr << "footprint: " << children << " idle children forked in " << manager.fork_seconds()
              << " s\n";
    Pipe output;
    const std::uint64_t spawned = mono_ns();
    const pid_t reaper = spawn_program(
        {kidreaper, "reap", "--pid", std::to_string(manager.pid()), "--limit", "100GiB",
         "--interval", interval, "--truth-every", truth_every, "--log-format", "json"},
        output.write_fd, true);
    output.close_write();
    LineReader log(output.read_fd);
    std::string log_text;
    bool started = false;
    while (const auto line = log.next(120'000)) {
        log_text += *line + "\n";
        if (line->find("\"event\":\"start\"") != std::string::npos) {
            started = true;
            break;
        }
    }
    if (!started) {
        stop_process(reaper, SIGTERM, 5'000);
        throw std::runtime_error("kidreaper did not start: " + log_text);
    }
    const std::uint64_t start_ns = mono_ns();
    const auto at_start = sample(reaper, start_ns);
    const double startup_wall = static_cast<double>(start_ns - spawned) / 1e9;

    std::vector<Sample> samples;
    const double end = warmup + seconds;
    for (int tick = 0;; ++tick) {
        const std::uint64_t due = start_ns + static_cast<std::uint64_t>(tick) * 1'000'000'000ULL;
        const std::uint64_t now = mono_ns();
        if (due > now) {
            // Drain kidreaper's log meanwhile (it prints nothing unless something happens).
            while (const auto line = log.next(static_cast<int>((due - now) / 1'000'000))) {
                log_text += *line + "\n";
                if (mono_ns() >= due) {
                    break;
                }
            }
            const std::uint64_t after = mono_ns();
            if (due > after) {
                sleep_ns(due - after);
            }
        }
        const auto s = sample(reaper, start_ns);
        if (!s) {
            break;
        }
        samples.push_back(*s);
        if (s->seconds >= end) {
            break;
        }
    }
    const double hwm_mib =
        samples.empty() ? 0.0 : static_cast<double>(samples.back().hwm_kib) / 1024.0;
    stop_process(reaper, SIGTERM, 10'000);
    while (const auto line = log.next(500)) {
        log_text += *line + "\n";
    }

    Json windows = Json::array();
    windows.push_back(window(samples, warmup, end));
    const double truth_seconds =
        static_cast<double>(kidreaper::parse_duration(truth_every).count()) / 1000.0;
    if (end > truth_seconds + 10) {
        // Before and after every child's ground truth fell due (one smaps_rollup per tick).
        windows.push_back(window(samples, warmup, truth_seconds));
        windows.push_back(window(samples, truth_seconds + 2, end));
    }
    Json series = Json::array();
    for (const auto& s : samples) {
        series.push_back({s.seconds, s.cpu_ns, s.rss_kib});
    }
    emit(args,
         Json{{"benchmark", "footprint"},
              {"machine", machine_facts()},
              {"children", children},
              {"preload_bytes", preload},
              {"interval", interval},
              {"truth_every", truth_every},
              {"warmup_s", warmup},
              {"seconds", seconds},
              {"startup_wall_s", startup_wall},
              {"startup_cpu_s", at_start ? static_cast<double>(at_start->cpu_ns) / 1e9 : 0},
              {"startup_rss_mib", at_start ? static_cast<double>(at_start->rss_kib) / 1024.0 : 0},
              {"hwm_mib", hwm_mib},
              {"windows", windows},
              {"series_seconds_cpu_ns_rss_kib", series},
              {"log", log_text}});
    return 0;
}

}  // namespace krbench
