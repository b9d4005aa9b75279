// Benchmark 1: the cost of a page fault in a tracked child, with nothing attached, with
// kidreaper's observer tracking the manager, with bpftrace doing the same job, and the
// cost to an untracked process while kidreaper tracks another manager.
//
// A storm manager preloads --cow of anonymous memory (4 KiB pages, written), and on each
// request forks a child pinned to one CPU that writes one byte per page of that inherited
// region (one COW fault per page), then maps --fresh of new memory and writes one byte per
// page of it (one first-touch fault per page). The child times each loop with its thread
// CPU clock and the monotonic clock and counts its minor faults (getrusage), so the figure
// is ns per fault as the child saw it. Conditions alternate within each round (the order
// rotates), with several storms per condition per round.
#include <bpf/bpf.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>

#include "bench_util.h"
#include "log.h"
#include "observer.h"
#include "procfs.h"

namespace krbench {

namespace {

struct StormResult {
    pid_t pid = 0;
    std::uint64_t cow_pages = 0;
    std::uint64_t cow_cpu_ns = 0;
    std::uint64_t cow_wall_ns = 0;
    std::uint64_t cow_faults = 0;  // minor faults during the COW loop
    std::uint64_t fresh_pages = 0;
    std::uint64_t fresh_cpu_ns = 0;
    std::uint64_t fresh_wall_ns = 0;
    std::uint64_t fresh_faults = 0;
    double cow_ns_per_fault() const { return per_fault(cow_cpu_ns, cow_faults, cow_pages); }
    double fresh_ns_per_fault() const {
        return per_fault(fresh_cpu_ns, fresh_faults, fresh_pages);
    }
    double cow_wall_per_fault() const { return per_fault(cow_wall_ns, cow_faults, cow_pages); }
    double fresh_wall_per_fault() const {
        return per_fault(fresh_wall_ns, fresh_faults, fresh_pages);
    }
    static double per_fault(std::uint64_t ns, std::uint64_t faults, std::uint64_t pages) {
        const std::uint64_t n = faults > 0 ? faults : pages;
        return n == 0 ? 0 : static_cast<double>(ns) / static_cast<double>(n);
    }
};

std::uint64_t minor_faults() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<std::uint64_t>(usage.ru_minflt);
}

// The storm itself, in the forked child.
std::string storm_child(unsigned char* inherited, std::uint64_t inherited_bytes,
                        std::uint64_t fresh_bytes, int cpu) {
    pin_to_cpu(cpu);
    prctl(PR_SET_NAME, "kr-bench-storm");
    // Warm the code path and the stack (not measured).
    unsigned char* fresh = map_anonymous(fresh_bytes);
    StormResult result;
    result.pid = getpid();
    result.cow_pages = inherited_bytes / kPage;
    result.fresh_pages = fresh_bytes / kPage;

    std::uint64_t faults0 = minor_faults();
    std::uint64_t cpu0 = thread_cpu_ns();
    std::uint64_t wall0 = mono_ns();
    store_per_page(inherited, inherited_bytes, 0x33);
    std::uint64_t wall1 = mono_ns();
    std::uint64_t cpu1 = thread_cpu_ns();
    std::uint64_t faults1 = minor_faults();
    result.cow_cpu_ns = cpu1 - cpu0;
    result.cow_wall_ns = wall1 - wall0;
    result.cow_faults = faults1 - faults0;

    faults0 = minor_faults();
    cpu0 = thread_cpu_ns();
    wall0 = mono_ns();
    store_per_page(fresh, fresh_bytes, 0x44);
    wall1 = mono_ns();
    cpu1 = thread_cpu_ns();
    faults1 = minor_faults();
    result.fresh_cpu_ns = cpu1 - cpu0;
    result.fresh_wall_ns = wall1 - wall0;
    result.fresh_faults = faults1 - faults0;

    std::ostringstream line;
    line << "result " << result.pid << ' ' << result.cow_pages << ' ' << result.cow_cpu_ns << ' '
         << result.cow_wall_ns << ' ' << result.cow_faults << ' ' << result.fresh_pages << ' '
         << result.fresh_cpu_ns << ' ' << result.fresh_wall_ns << ' ' << result.fresh_faults
         << '\n';
    return line.str();
}

// The manager whose children run storms; one child per request.
class StormManager {
public:
    StormManager(std::uint64_t inherited_bytes, std::uint64_t fresh_bytes, int cpu) {
        pid_ = fork_process([&]() {
            commands_.close_write();
            replies_.close_read();
            prctl(PR_SET_NAME, "kr-bench-stormm");
            unsigned char* inherited = map_anonymous(inherited_bytes);
            std::memset(inherited, 0x5a, inherited_bytes);
            write_all(replies_.write_fd, "ready\n");
            char command = 0;
            while (true) {
                const ssize_t n = read(commands_.read_fd, &command, 1);
                if (n < 0 && errno == EINTR) {
                    continue;
                }
                if (n <= 0) {
                    return 0;
                }
                const pid_t child = fork_process([&]() {
                    const std::string line =
                        storm_child(inherited, inherited_bytes, fresh_bytes, cpu);
                    write_all(replies_.write_fd, line);
                    return 0;
                });
                while (waitpid(child, nullptr, 0) < 0 && errno == EINTR) {
                }
                write_all(replies_.write_fd, "done\n");
            }
        });
        commands_.close_read();
        replies_.close_write();
        reader_ = std::make_unique<LineReader>(replies_.read_fd);
        const auto line = reader_->next(120'000);
        if (!line || *line != "ready") {
            throw std::runtime_error("the storm manager did not start");
        }
    }
    ~StormManager() {
        commands_.close_write();
        stop_process(pid_, SIGTERM, 10'000);
    }
    StormManager(const StormManager&) = delete;
    StormManager& operator=(const StormManager&) = delete;

    pid_t pid() const { return pid_; }

    StormResult storm() {
        write_all(commands_.write_fd, "s");
        StormResult result;
        bool have_result = false;
        while (true) {
            const auto line = reader_->next(120'000);
            if (!line) {
                throw std::runtime_error("the storm child did not answer");
            }
            if (*line == "done") {
                break;
            }
            std::istringstream fields(*line);
            std::string tag;
            fields >> tag >> result.pid >> result.cow_pages >> result.cow_cpu_ns >>
                result.cow_wall_ns >> result.cow_faults >> result.fresh_pages >>
                result.fresh_cpu_ns >> result.fresh_wall_ns >> result.fresh_faults;
            have_result = tag == "result" && !fields.fail();
        }
        if (!have_result) {
            throw std::runtime_error("the storm child failed");
        }
        return result;
    }

private:
    pid_t pid_ = -1;
    Pipe commands_;
    Pipe replies_;
    std::unique_ptr<LineReader> reader_;
};

// bpftrace doing kidreaper's job: track the manager's children (pre-registered ones and
// those it forks), count their faults by tgid and class (error_code & 3: PROT, WRITE),
// user and kernel mode apart.
std::string bpftrace_script(pid_t manager, const std::vector<pid_t>& existing) {
    std::ostringstream script;
    script << "BEGIN { @manager[" << manager << "] = 1; ";
    for (pid_t child : existing) {
        script << "@tracked[" << child << "] = 1; ";
    }
    script << "printf(\"ready\\n\"); }\n"
           << "tracepoint:sched:sched_process_fork /@manager[pid]/ "
              "{ @tracked[args->child_pid] = 1; }\n"
           << "tracepoint:sched:sched_process_exit /tid == pid && @tracked[pid]/ "
              "{ delete(@tracked[pid]); }\n"
           << "tracepoint:exceptions:page_fault_user /@tracked[pid]/ "
              "{ @user[pid, args->error_code & 3] = count(); }\n"
           << "tracepoint:exceptions:page_fault_kernel /@tracked[pid]/ "
              "{ @kernel[pid, args->error_code & 3] = count(); }\n"
           << "END { clear(@manager); clear(@tracked); }\n";
    return script.str();
}

class Bpftrace {
public:
    Bpftrace(const std::string& binary, const std::string& script) {
        pid_ = spawn_program({binary, "-B", "line", "-e", script}, output_.write_fd, true);
        output_.close_write();
        reader_ = std::make_unique<LineReader>(output_.read_fd);
        while (true) {
            const auto line = reader_->next(120'000);
            if (!line) {
                stop_process(pid_, SIGKILL, 5'000);
                pid_ = -1;
                throw std::runtime_error("bpftrace did not start: " + log_);
            }
            log_ += *line + "\n";
            if (*line == "ready") {
                break;
            }
        }
    }
    ~Bpftrace() {
        if (pid_ > 0) {
            stop_process(pid_, SIGKILL, 5'000);
        }
    }
    Bpftrace(const Bpftrace&) = delete;
    Bpftrace& operator=(const Bpftrace&) = delete;

    // Stops it (SIGINT: it prints its maps) and returns everything it printed.
    std::string stop() {
        kill(pid_, SIGINT);
        while (const auto line = reader_->next(30'000)) {
            log_ += *line + "\n";
        }
        stop_process(pid_, SIGKILL, 5'000);
        pid_ = -1;
        return log_;
    }

private:
    pid_t pid_ = -1;
    Pipe output_;
    std::unique_ptr<LineReader> reader_;
    std::string log_;
};

// "@user[PID, CLASS]: N" lines -> counts[pid][class] for one map.
std::map<pid_t, std::map<int, std::uint64_t>> parse_bpftrace_map(const std::string& output,
                                                                 const std::string& map) {
    std::map<pid_t, std::map<int, std::uint64_t>> counts;
    const std::regex line_re("@" + map + R"(\[(\d+), (\d+)\]: (\d+))");
    for (std::sregex_iterator it(output.begin(), output.end(), line_re), end; it != end; ++it) {
        counts[std::stoi((*it)[1])][std::stoi((*it)[2])] = std::stoull((*it)[3]);
    }
    return counts;
}

struct ProgStat {
    std::string name;
    std::uint64_t run_ns = 0;
    std::uint64_t run_cnt = 0;
};

std::map<std::uint32_t, ProgStat> prog_stats() {
    std::map<std::uint32_t, ProgStat> stats;
    __u32 id = 0;
    while (bpf_prog_get_next_id(id, &id) == 0) {
        const int fd = bpf_prog_get_fd_by_id(id);
        if (fd < 0) {
            continue;
        }
        bpf_prog_info info{};
        __u32 length = sizeof info;
        if (bpf_obj_get_info_by_fd(fd, &info, &length) == 0) {
            stats[id] = {info.name, info.run_time_ns, info.run_cnt};
        }
        close(fd);
    }
    return stats;
}

// Raw tracepoint links on page_fault_user in the whole system (anyone's).
int raw_fault_links() {
    int count = 0;
    __u32 id = 0;
    while (bpf_link_get_next_id(id, &id) == 0) {
        const int fd = bpf_link_get_fd_by_id(id);
        if (fd < 0) {
            continue;
        }
        char name[64] = {};
        bpf_link_info info{};
        info.raw_tracepoint.tp_name = reinterpret_cast<__u64>(name);
        info.raw_tracepoint.tp_name_len = sizeof name;
        __u32 length = sizeof info;
        if (bpf_obj_get_info_by_fd(fd, &info, &length) == 0 &&
            info.type == BPF_LINK_TYPE_RAW_TRACEPOINT &&
            std::strcmp(name, "page_fault_user") == 0) {
            ++count;
        }
        close(fd);
    }
    return count;
}

// Programs of any kind whose name mentions page faults (bpftrace's, other observers').
int fault_programs() {
    int count = 0;
    for (const auto& [id, stat] : prog_stats()) {
        if (stat.name.find("fault") != std::string::npos) {
            ++count;
        }
    }
    return count;
}

const std::vector<std::string> kConditions = {"none", "kidreaper", "bpftrace", "untracked"};

}  // namespace

int run_faults(const Args& args) {
    const std::uint64_t cow_bytes = static_cast<std::uint64_t>(args.get_long("--cow-mib", 256))
                                    << 20;
    const std::uint64_t fresh_bytes =
        static_cast<std::uint64_t>(args.get_long("--fresh-mib", 256)) << 20;
    const int rounds = static_cast<int>(args.get_long("--rounds", 9));
    const int storms = static_cast<int>(args.get_long("--storms", 3));
    const std::string bpftrace = args.get_or("--bpftrace", "/usr/bin/bpftrace");
    const int cpu = online_cpus() - 1;

    bool have_bpftrace = access(bpftrace.c_str(), X_OK) == 0;
    std::string bpftrace_skip;
    if (!have_bpftrace) {
        bpftrace_skip = bpftrace + " not found";
    } else if (!std::filesystem::exists("/sys/kernel/tracing/events/exceptions")) {
        have_bpftrace = false;
        bpftrace_skip = "tracefs not mounted at /sys/kernel/tracing";
    }

    kidreaper::Logger log(kidreaper::LogLevel::warn);
    const kidreaper::ProcFs proc;
    // Managers first: they are forked before any BPF object exists in this process.
    StormManager storm_manager(cow_bytes, fresh_bytes, cpu);
    IdleManager other_manager(8, 16ULL << 20);  // tracked in the "untracked" condition

    std::map<std::string, std::vector<double>> cow_ns, fresh_ns, cow_wall, fresh_wall;
    std::map<std::string, std::vector<std::vector<double>>> round_cow, round_fresh;
    Json samples = Json::array();
    Json checks = Json::array();
    Json anomalies = Json::array();

    std::vector<std::string> conditions;
    for (const auto& name : kConditions) {
        if (name != "bpftrace" || have_bpftrace) {
            conditions.push_back(name);
        }
    }

    const std::uint64_t started = mono_ns();
    for (int round = 0; round < rounds; ++round) {
        std::vector<std::string> order = conditions;
        std::rotate(order.begin(), order.begin() + (round % static_cast<int>(order.size())),
                    order.end());
        for (const auto& condition : order) {
            std::unique_ptr<kidreaper::Observer> observer;
            std::unique_ptr<Bpftrace> tracer;
            if (condition == "kidreaper" || condition == "untracked") {
                observer = std::make_unique<kidreaper::Observer>(kidreaper::ObserverOptions{}, log);
                kidreaper::track_manager(*observer, proc,
                                         condition == "kidreaper" ? storm_manager.pid()
                                                                  : other_manager.pid());
            } else if (condition == "bpftrace") {
                tracer = std::make_unique<Bpftrace>(
                    bpftrace, bpftrace_script(storm_manager.pid(),
                                              proc.children_of(storm_manager.pid())));
            }
            const int expected_links = observer ? 1 : 0;
            const int expected_programs = observer ? 2 : (tracer ? 2 : 0);
            std::vector<double> this_cow, this_fresh;
            std::vector<pid_t> storm_pids;
            for (int s = 0; s < storms; ++s) {
                const int links = raw_fault_links();
                const int programs = fault_programs();
                const StormResult result = storm_manager.storm();
                storm_pids.push_back(result.pid);
                const double cow = result.cow_ns_per_fault();
                const double fresh = result.fresh_ns_per_fault();
                samples.push_back({{"round", round},
                                   {"condition", condition},
                                   {"pid", result.pid},
                                   {"cow_ns", cow},
                                   {"fresh_ns", fresh},
                                   {"cow_wall_ns", result.cow_wall_per_fault()},
                                   {"fresh_wall_ns", result.fresh_wall_per_fault()},
                                   {"cow_faults", result.cow_faults},
                                   {"fresh_faults", result.fresh_faults}});
                if (links != expected_links || programs != expected_programs) {
                    anomalies.push_back({{"round", round},
                                         {"condition", condition},
                                         {"raw_tp_fault_links", links},
                                         {"fault_programs", programs},
                                         {"note", "another fault observer was attached"}});
                }
                cow_ns[condition].push_back(cow);
                fresh_ns[condition].push_back(fresh);
                cow_wall[condition].push_back(result.cow_wall_per_fault());
                fresh_wall[condition].push_back(result.fresh_wall_per_fault());
                this_cow.push_back(cow);
                this_fresh.push_back(fresh);
                if (observer) {
                    const auto reading = observer->read_child(result.pid);
                    if (round == 0 && s == 0) {
                        Json check{{"condition", condition},
                                   {"pid", result.pid},
                                   {"cow_pages", result.cow_pages},
                                   {"fresh_pages", result.fresh_pages},
                                   {"tracked", reading.has_value()}};
                        if (reading) {
                            check["write_present_user"] = reading->faults.write_present_user;
                            check["write_absent"] = reading->faults.write_absent;
                            check["other"] = reading->faults.other;
                        }
                        checks.push_back(check);
                    }
                    if (reading) {
                        observer->forget_child(result.pid);
                    }
                }
            }
            if (tracer) {
                const std::string output = tracer->stop();
                if (round == 0) {
                    const auto user = parse_bpftrace_map(output, "user");
                    const pid_t first = storm_pids.front();
                    Json check{{"condition", condition},
                               {"pid", first},
                               {"tracked", user.count(first) != 0}};
                    if (const auto found = user.find(first); found != user.end()) {
                        const auto& by_class = found->second;
                        auto get = [&](int cls) {
                            const auto it = by_class.find(cls);
                            return it == by_class.end() ? 0ULL : it->second;
                        };
                        check["write_present_user"] = get(3);
                        check["write_absent"] = get(2);
                        check["other"] = get(0) + get(1);
                    }
                    checks.push_back(check);
                }
            }
            round_cow[condition].push_back(this_cow);
            round_fresh[condition].push_back(this_fresh);
        }
        std::cerr << "faults: round " << (round + 1) << "/" << rounds << " done\n";
    }
    const double measure_seconds = static_cast<double>(mono_ns() - started) / 1e9;

    // Per-program BPF run time during one storm per condition (kernel BPF stats on only
    // for this pass: they add two clock reads per run, so the timed rounds run without).
    Json attribution = Json::array();
    {
        const int stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
        if (stats_fd >= 0) {
            for (const auto& condition : conditions) {
                if (condition == "none") {
                    continue;
                }
                std::unique_ptr<kidreaper::Observer> observer;
                std::unique_ptr<Bpftrace> tracer;
                if (condition == "bpftrace") {
                    tracer = std::make_unique<Bpftrace>(
                        bpftrace, bpftrace_script(storm_manager.pid(), {}));
                } else {
                    observer =
                        std::make_unique<kidreaper::Observer>(kidreaper::ObserverOptions{}, log);
                    kidreaper::track_manager(*observer, proc,
                                             condition == "kidreaper" ? storm_manager.pid()
                                                                      : other_manager.pid());
                }
                const auto before = prog_stats();
                const StormResult result = storm_manager.storm();
                const auto after = prog_stats();
                if (observer) {
                    observer->forget_child(result.pid);
                }
                if (tracer) {
                    tracer->stop();
                }
                Json programs = Json::array();
                std::uint64_t fault_ns = 0;
                for (const auto& [id, stat] : after) {
                    const auto old = before.find(id);
                    if (old == before.end() || stat.run_cnt == old->second.run_cnt) {
                        continue;
                    }
                    const std::uint64_t runs = stat.run_cnt - old->second.run_cnt;
                    const std::uint64_t ns = stat.run_ns - old->second.run_ns;
                    programs.push_back({{"name", stat.name},
                                        {"runs", runs},
                                        {"ns_per_run", static_cast<double>(ns) / double(runs)}});
                    if (stat.name.find("fault") != std::string::npos) {
                        fault_ns += ns;
                    }
                }
                const std::uint64_t faults = result.cow_faults + result.fresh_faults;
                attribution.push_back(
                    {{"condition", condition},
                     {"storm_faults", faults},
                     {"programs", programs},
                     {"fault_program_ns_per_fault",
                      faults ? static_cast<double>(fault_ns) / double(faults) : 0.0}});
            }
            close(stats_fd);
        }
    }

    Json results = Json::object();
    const double base_cow = median(cow_ns["none"]);
    const double base_fresh = median(fresh_ns["none"]);
    for (const auto& condition : conditions) {
        // Paired ratios: each round's median against the same round's unobserved median.
        std::vector<double> cow_ratios, fresh_ratios;
        for (std::size_t r = 0; r < round_cow[condition].size(); ++r) {
            cow_ratios.push_back(median(round_cow[condition][r]) / median(round_cow["none"][r]));
            fresh_ratios.push_back(median(round_fresh[condition][r]) /
                                   median(round_fresh["none"][r]));
        }
        results[condition] = {
            {"cow_ns", summary(cow_ns[condition])},
            {"fresh_ns", summary(fresh_ns[condition])},
            {"cow_wall_ns", summary(cow_wall[condition])},
            {"fresh_wall_ns", summary(fresh_wall[condition])},
            {"cow_ratio", median(cow_ns[condition]) / base_cow},
            {"fresh_ratio", median(fresh_ns[condition]) / base_fresh},
            {"cow_ratio_paired", summary(cow_ratios)},
            {"fresh_ratio_paired", summary(fresh_ratios)},
        };
    }

    emit(args, Json{{"benchmark", "faults"},
                    {"machine", machine_facts()},
                    {"cow_bytes", cow_bytes},
                    {"fresh_bytes", fresh_bytes},
                    {"rounds", rounds},
                    {"storms_per_round", storms},
                    {"storm_cpu", cpu},
                    {"seconds", measure_seconds},
                    {"bpftrace", have_bpftrace ? bpftrace : ""},
                    {"bpftrace_skipped", bpftrace_skip},
                    {"bpftrace_script", bpftrace_script(storm_manager.pid(), {})},
                    {"conditions", conditions},
                    {"results", results},
                    {"checks", checks},
                    {"attribution", attribution},
                    {"anomalies", anomalies},
                    {"samples", samples}});
    return 0;
}

}  // namespace krbench
