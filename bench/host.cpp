// Benchmark 6: a whole host. --managers pre-fork managers of --children idle children each
// (each manager writes --preload-mib that its children inherit; the children idle in read()).
// There is no multi-service daemon yet, so kidreaper runs as one process per manager: one
// real `kidreaper reap --pid M --limit 100GiB --interval 1s` each, spawned together.
//  - Start-up: until every instance logged "start"; the BPF objects and kernel memory
//    (fdinfo memlock) each holds; the kernel log lines that appeared during the run.
//  - During the warm-up, reaction on the loaded host: manager 0 forks a fresh grower per
//    trial and its instance has a real --limit; limit crossed -> signal received, as in
//    reaction.cpp. Then the first block of fault storms with the instances attached.
//  - The window (--seconds, --warmup after the last start): CPU of every instance
//    (/proc/K/schedstat), its polls (window / interval; voluntary context switches, one
//    sleep per tick, as a cross-check), summed VmRSS and summed PSS (/proc/K/smaps_rollup:
//    the instances share text pages).
//  - What the instances cost everyone else: each attaches its own programs to the global
//    page-fault tracepoints, so a storm process nobody tracks (COW then first-touch faults,
//    timed in chunks as in fault_storm.cpp) runs in blocks that alternate none / attached /
//    none / ... (the instances are stopped and started between blocks).
//  - The proxy for the future single daemon: one kidreaper process watching one manager
//    with --single-children children: CPU per poll, RSS, PSS, over its own window.
// Every process started here dies with the harness (fork_process, spawn_program).
#include <bpf/bpf.h>
#include <poll.h>
#include <signal.h>
#include <sys/klog.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <sstream>

#include "bench_util.h"
#include "common/units.h"
#include "grower.h"
#include "observe/procfs.h"

namespace krbench {

namespace {

// Closes every inherited descriptor but stdin/out/err and `keep`: a forked manager must not
// hold the harness's other pipes (another manager's command pipe would then never reach
// end of input).
void close_fds_except(const std::vector<int>& keep) {
    std::vector<int> fds;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
        fds.push_back(std::stoi(entry.path().filename().string()));
    }
    for (int fd : fds) {
        if (fd > 2 && std::find(keep.begin(), keep.end(), fd) == keep.end()) {
            close(fd);
        }
    }
}

// A pre-fork manager: `children` idle children holding `preload` inherited; on request
// ('f') it forks a grower (a fresh one per trial) and reaps it when it exits. Destruction
// (end of its command input) kills every child and waits for the manager.
class HostManager {
public:
    HostManager(std::size_t children, std::uint64_t preload, std::uint64_t limit = 0,
                std::uint64_t grow_bytes = 0) {
        const std::uint64_t started = mono_ns();
        pid_ = fork_process([&]() {
            close_fds_except({commands_.read_fd, replies_.write_fd, go_.read_fd});
            prctl(PR_SET_NAME, "kr-bench-mgr");
            if (preload > 0) {
                unsigned char* memory = map_anonymous(preload);
                std::memset(memory, 0x5a, preload);
            }
            Pipe hold;  // children block reading it; only the manager has its write end
            std::vector<pid_t> kids;
            for (std::size_t i = 0; i < children; ++i) {
                kids.push_back(fork_process([&]() {
                    close_fds_except({hold.read_fd});
                    prctl(PR_SET_NAME, "kr-bench-idle");
                    char byte = 0;
                    while (read(hold.read_fd, &byte, 1) < 0 && errno == EINTR) {
                    }
                    return 0;
                }));
            }
            std::string line = "ready";
            for (pid_t kid : kids) {
                line += ' ' + std::to_string(kid);
            }
            write_all(replies_.write_fd, line + "\n");
            while (true) {
                // Reaps exited growers at once (as a real manager does on SIGCHLD): a
                // manager with growers polls its commands with a short timeout.
                while (waitpid(-1, nullptr, WNOHANG) > 0) {
                }
                pollfd ready{commands_.read_fd, POLLIN, 0};
                if (poll(&ready, 1, grow_bytes > 0 ? 20 : -1) == 0) {
                    continue;
                }
                char command = 0;
                const ssize_t n = read(commands_.read_fd, &command, 1);
                if (n < 0 && errno == EINTR) {
                    continue;
                }
                if (n <= 0) {
                    break;
                }
                if (command == 'f') {
                    const pid_t grower = fork_process([&]() {
                        close_fds_except({go_.read_fd, replies_.write_fd});
                        return grower_main(go_.read_fd, replies_.write_fd, limit, grow_bytes);
                    });
                    kids.push_back(grower);
                    write_all(replies_.write_fd, "grower " + std::to_string(grower) + "\n");
                }
            }
            for (pid_t kid : kids) {
                kill(kid, SIGKILL);
            }
            while (waitpid(-1, nullptr, 0) > 0 || errno == EINTR) {
            }
            return 0;
        });
        commands_.close_read();
        replies_.close_write();
        go_.close_read();
        reader_ = std::make_unique<LineReader>(replies_.read_fd);
        const auto line = reader_->next(600'000);
        if (!line || !line->starts_with("ready")) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
            throw std::runtime_error("a manager did not start");
        }
        std::istringstream words(line->substr(5));
        for (pid_t kid = 0; words >> kid;) {
            children_.push_back(kid);
        }
        fork_seconds_ = static_cast<double>(mono_ns() - started) / 1e9;
    }
    ~HostManager() {
        commands_.close_write();
        if (!wait_exit(pid_, 120'000)) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
    }
    HostManager(const HostManager&) = delete;
    HostManager& operator=(const HostManager&) = delete;

    pid_t pid() const { return pid_; }
    const std::vector<pid_t>& children() const { return children_; }
    double fork_seconds() const { return fork_seconds_; }
    pid_t fork_grower() {
        write_all(commands_.write_fd, "f");
        while (const auto line = reader_->next(30'000)) {
            if (line->starts_with("grower ")) {
                return std::stoi(line->substr(7));
            }
        }
        throw std::runtime_error("the manager did not fork a grower");
    }
    void go() { write_all(go_.write_fd, "g"); }
    LineReader& replies() { return *reader_; }

private:
    pid_t pid_ = -1;
    std::vector<pid_t> children_;
    double fork_seconds_ = 0;
    Pipe commands_;
    Pipe replies_;
    Pipe go_;
    std::unique_ptr<LineReader> reader_;
};

// --- Fault storms in a process nobody tracks (as fault_storm.cpp: COW over inherited
// memory, then first touch of fresh memory, one store per page, timed in 64-page chunks).
constexpr std::uint64_t kChunkPages = 64;

double store_timed(unsigned char* begin, std::uint64_t bytes, unsigned char value) {
    std::vector<double> chunk_ns;
    volatile unsigned char* page = begin;
    const std::uint64_t pages = bytes / kPage;
    for (std::uint64_t first = 0; first < pages; first += kChunkPages) {
        const std::uint64_t last = std::min(pages, first + kChunkPages);
        const std::uint64_t t0 = mono_ns();
        for (std::uint64_t i = first; i < last; ++i) {
            page[i * kPage] = value;
        }
        chunk_ns.push_back(static_cast<double>(mono_ns() - t0) / static_cast<double>(last - first));
    }
    return median(std::move(chunk_ns));
}

std::uint64_t minor_faults() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<std::uint64_t>(usage.ru_minflt);
}

struct Storm {
    double cow_ns = 0;
    double fresh_ns = 0;
    std::uint64_t cow_faults = 0;
    std::uint64_t fresh_faults = 0;
};

class StormManager {
public:
    StormManager(std::uint64_t cow_bytes, std::uint64_t fresh_bytes, int cpu) {
        pid_ = fork_process([&]() {
            close_fds_except({commands_.read_fd, replies_.write_fd});
            prctl(PR_SET_NAME, "kr-bench-stormm");
            unsigned char* inherited = map_anonymous(cow_bytes);
            std::memset(inherited, 0x5a, cow_bytes);
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
                    pin_to_cpu(cpu);
                    prctl(PR_SET_NAME, "kr-bench-storm");
                    unsigned char* fresh = map_anonymous(fresh_bytes);
                    std::uint64_t faults0 = minor_faults();
                    const double cow = store_timed(inherited, cow_bytes, 0x33);
                    const std::uint64_t cow_faults = minor_faults() - faults0;
                    faults0 = minor_faults();
                    const double first_touch = store_timed(fresh, fresh_bytes, 0x44);
                    const std::uint64_t fresh_faults = minor_faults() - faults0;
                    std::ostringstream line;
                    line << "result " << cow << ' ' << first_touch << ' ' << cow_faults << ' '
                         << fresh_faults << '\n';
                    write_all(replies_.write_fd, line.str());
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

    Storm storm() {
        write_all(commands_.write_fd, "s");
        Storm result;
        bool have = false;
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
            fields >> tag >> result.cow_ns >> result.fresh_ns >> result.cow_faults >>
                result.fresh_faults;
            have = tag == "result" && !fields.fail();
        }
        if (!have) {
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

// Raw tracepoint links on page_fault_user in the whole system (anyone's).
int fault_links() {
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

// --- The kidreaper instances.
struct Instance {
    pid_t manager = 0;
    pid_t pid = -1;
    std::unique_ptr<Pipe> output;
    std::string pending;  // an incomplete last line
    std::string log;      // what it printed (the first 64 KiB)
    bool started = false;
    bool eof = false;
    std::uint64_t spawned_ns = 0;
    std::uint64_t started_ns = 0;
    int recycles = 0;
};

void spawn(Instance& instance, const std::string& kidreaper,
           const std::vector<std::string>& extra) {
    instance.output = std::make_unique<Pipe>();
    std::vector<std::string> argv = {kidreaper, "reap", "--pid", std::to_string(instance.manager)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.insert(argv.end(), {"--log-format", "json"});
    instance.spawned_ns = mono_ns();
    instance.pid = spawn_program(argv, instance.output->write_fd, true);
    instance.output->close_write();
    instance.pending.clear();
    instance.log.clear();
    instance.started = false;
    instance.eof = false;
    instance.recycles = 0;
}

// Reads whatever the instances printed, for up to `timeout_ms` (at least one poll).
void pump(std::vector<Instance>& instances, int timeout_ms) {
    const std::uint64_t deadline = mono_ns() + static_cast<std::uint64_t>(timeout_ms) * 1'000'000;
    do {
        std::vector<pollfd> fds;
        std::vector<Instance*> owners;
        for (auto& instance : instances) {
            if (instance.output && !instance.eof) {
                fds.push_back({instance.output->read_fd, POLLIN, 0});
                owners.push_back(&instance);
            }
        }
        if (fds.empty()) {
            return;
        }
        const std::uint64_t now = mono_ns();
        const int left = now >= deadline ? 0 : static_cast<int>((deadline - now) / 1'000'000);
        if (poll(fds.data(), fds.size(), left) <= 0) {
            continue;
        }
        for (std::size_t i = 0; i < fds.size(); ++i) {
            if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) {
                continue;
            }
            Instance& instance = *owners[i];
            char chunk[4096];
            const ssize_t n = read(fds[i].fd, chunk, sizeof chunk);
            if (n <= 0) {
                if (n == 0 || errno != EINTR) {
                    instance.eof = true;
                }
                continue;
            }
            instance.pending.append(chunk, static_cast<std::size_t>(n));
            for (auto newline = instance.pending.find('\n'); newline != std::string::npos;
                 newline = instance.pending.find('\n')) {
                const std::string line = instance.pending.substr(0, newline);
                instance.pending.erase(0, newline + 1);
                if (instance.log.size() < 65536) {
                    instance.log += line + "\n";
                }
                if (!instance.started && line.find("\"event\":\"start\"") != std::string::npos) {
                    instance.started = true;
                    instance.started_ns = mono_ns();
                }
                if (line.find("\"event\":\"recycle\"") != std::string::npos) {
                    ++instance.recycles;
                }
            }
        }
    } while (mono_ns() < deadline);
}

// Waits until every instance logged "start" or ended; true when all started.
bool wait_started(std::vector<Instance>& instances, int timeout_ms) {
    const std::uint64_t deadline = mono_ns() + static_cast<std::uint64_t>(timeout_ms) * 1'000'000;
    while (mono_ns() < deadline) {
        const bool waiting = std::any_of(instances.begin(), instances.end(),
                                         [](const Instance& i) { return !i.started && !i.eof; });
        if (!waiting) {
            break;
        }
        pump(instances, 100);
    }
    return std::all_of(instances.begin(), instances.end(),
                       [](const Instance& i) { return i.started; });
}

// SIGTERM to all at once, then waits for each (SIGKILL after 10 s).
void stop_all(std::vector<Instance>& instances) {
    for (auto& instance : instances) {
        if (instance.pid > 0) {
            kill(instance.pid, SIGTERM);
        }
    }
    for (auto& instance : instances) {
        if (instance.pid > 0) {
            stop_process(instance.pid, SIGTERM, 10'000);
            instance.pid = -1;
        }
    }
    pump(instances, 0);
    for (auto& instance : instances) {
        instance.output.reset();
    }
}

// --- Sampling one kidreaper process.
struct ProcSample {
    std::uint64_t cpu_ns = 0;  // schedstat
    std::uint64_t voluntary_switches = 0;
    std::uint64_t rss_kib = 0;  // VmRSS
    std::uint64_t hwm_kib = 0;  // VmHWM
};

std::uint64_t field_kib(const std::string& text, const std::string& key) {
    for (std::size_t at = text.find(key); at != std::string::npos; at = text.find(key, at + 1)) {
        if (at == 0 || text[at - 1] == '\n') {
            return std::stoull(text.substr(at + key.size()));
        }
    }
    return 0;
}

std::optional<ProcSample> sample_proc(pid_t pid) {
    const std::string base = "/proc/" + std::to_string(pid);
    const std::string schedstat = read_text(base + "/schedstat");
    const std::string status = read_text(base + "/status");
    if (schedstat.empty() || status.empty()) {
        return std::nullopt;
    }
    ProcSample s;
    std::istringstream(schedstat) >> s.cpu_ns;
    s.voluntary_switches = field_kib(status, "voluntary_ctxt_switches:");
    s.rss_kib = field_kib(status, "VmRSS:");
    s.hwm_kib = field_kib(status, "VmHWM:");
    return s;
}

struct MemorySample {
    std::uint64_t rss_kib = 0;
    std::uint64_t pss_kib = 0;
    std::uint64_t pss_anon_kib = 0;
    std::uint64_t pss_file_kib = 0;
};

MemorySample sample_memory(pid_t pid) {
    const std::string text = read_text("/proc/" + std::to_string(pid) + "/smaps_rollup");
    return {field_kib(text, "Rss:"), field_kib(text, "Pss:"), field_kib(text, "Pss_Anon:"),
            field_kib(text, "Pss_File:")};
}

// The BPF objects a process holds, from /proc/K/fdinfo: kernel memory (memlock) of its
// maps and programs, and how many of each.
Json bpf_objects(pid_t pid) {
    std::uint64_t memlock = 0;
    int maps = 0, programs = 0, links = 0;
    std::error_code ec;
    const std::string dir = "/proc/" + std::to_string(pid) + "/fdinfo";
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
        const std::string text = read_text(entry.path().string());
        if (text.find("\nmap_type:") != std::string::npos) {
            ++maps;
        } else if (text.find("\nprog_type:") != std::string::npos) {
            ++programs;
        } else if (text.find("\nlink_type:") != std::string::npos) {
            ++links;
        }
        if (const auto at = text.find("\nmemlock:"); at != std::string::npos) {
            memlock += std::stoull(text.substr(at + 9));
        }
    }
    return Json{
        {"memlock_bytes", memlock}, {"maps", maps}, {"programs", programs}, {"links", links}};
}

// The kernel log (dmesg) as lines.
std::vector<std::string> kernel_log() {
    const int size = klogctl(10, nullptr, 0);  // SYSLOG_ACTION_SIZE_BUFFER
    if (size <= 0) {
        return {};
    }
    std::string buffer(static_cast<std::size_t>(size), '\0');
    const int n = klogctl(3, buffer.data(), size);  // SYSLOG_ACTION_READ_ALL
    std::vector<std::string> lines;
    std::istringstream in(buffer.substr(0, n > 0 ? static_cast<std::size_t>(n) : 0));
    for (std::string line; std::getline(in, line);) {
        lines.push_back(line);
    }
    return lines;
}

// Lines of `after` that follow the last line of `before`.
Json new_log_lines(const std::vector<std::string>& before, const std::vector<std::string>& after) {
    std::size_t from = 0;
    if (!before.empty()) {
        const auto last = std::find(after.rbegin(), after.rend(), before.back());
        from = last == after.rend() ? 0 : static_cast<std::size_t>(after.rend() - last);
    }
    Json lines = Json::array();
    for (std::size_t i = from; i < after.size() && lines.size() < 50; ++i) {
        lines.push_back(after[i]);
    }
    return lines;
}

double mib(std::uint64_t kib) {
    return static_cast<double>(kib) / 1024.0;
}

// CPU and memory of `pids` over [warmup, warmup + seconds] after `since_ns`: one sample a
// second (schedstat, status), smaps_rollup every `memory_every` seconds; the instances'
// logs are read meanwhile.
Json measure_window(const std::vector<pid_t>& pids, std::vector<Instance>& logs,
                    std::uint64_t since_ns, double warmup, double seconds, double interval_s,
                    double memory_every) {
    auto wait_until = [&](double at) {
        const std::uint64_t due = since_ns + static_cast<std::uint64_t>(at * 1e9);
        for (std::uint64_t now = mono_ns(); now < due; now = mono_ns()) {
            pump(logs, static_cast<int>((due - now) / 1'000'000));
            if (logs.empty() ||
                std::all_of(logs.begin(), logs.end(), [](const Instance& i) { return i.eof; })) {
                const std::uint64_t later = mono_ns();
                if (due > later) {
                    sleep_ns(due - later);
                }
            }
        }
    };
    auto take = [&]() {
        std::vector<ProcSample> all;
        for (pid_t pid : pids) {
            all.push_back(sample_proc(pid).value_or(ProcSample{}));
        }
        return all;
    };
    wait_until(warmup);
    const std::uint64_t t0 = mono_ns();
    const auto first = take();
    std::vector<double> rss_sum_mib, pss_sum_mib, pss_anon_sum_mib, pss_file_sum_mib;
    std::vector<double> rss_each_mib, pss_each_mib;
    Json series = Json::array();
    std::vector<ProcSample> last = first;
    double next_memory = 0;
    for (int tick = 1;; ++tick) {
        const double at = warmup + std::min(static_cast<double>(tick), seconds);
        wait_until(at);
        last = take();
        std::uint64_t cpu = 0, rss = 0;
        for (const auto& s : last) {
            cpu += s.cpu_ns;
            rss += s.rss_kib;
        }
        series.push_back({at, cpu, rss});
        if (at - warmup >= next_memory || at >= warmup + seconds) {
            next_memory += memory_every;
            std::uint64_t r = 0, p = 0, pa = 0, pf = 0;
            for (pid_t pid : pids) {
                const MemorySample m = sample_memory(pid);
                r += m.rss_kib;
                p += m.pss_kib;
                pa += m.pss_anon_kib;
                pf += m.pss_file_kib;
                rss_each_mib.push_back(mib(m.rss_kib));
                pss_each_mib.push_back(mib(m.pss_kib));
            }
            rss_sum_mib.push_back(mib(r));
            pss_sum_mib.push_back(mib(p));
            pss_anon_sum_mib.push_back(mib(pa));
            pss_file_sum_mib.push_back(mib(pf));
        }
        if (at >= warmup + seconds) {
            break;
        }
    }
    const double wall = static_cast<double>(mono_ns() - t0) / 1e9;
    std::vector<double> per_poll_ms, switches_per_s, cpu_percent;
    double cpu_total_s = 0;
    std::uint64_t hwm_max = 0;
    int alive = 0;
    const double polls_each = wall / interval_s;
    for (std::size_t i = 0; i < pids.size(); ++i) {
        if (last[i].cpu_ns == 0) {
            continue;  // gone
        }
        ++alive;
        const double cpu = static_cast<double>(last[i].cpu_ns - first[i].cpu_ns) / 1e9;
        cpu_total_s += cpu;
        per_poll_ms.push_back(cpu * 1000 / polls_each);
        cpu_percent.push_back(100 * cpu / wall);
        switches_per_s.push_back(
            static_cast<double>(last[i].voluntary_switches - first[i].voluntary_switches) / wall);
        hwm_max = std::max(hwm_max, last[i].hwm_kib);
    }
    const double polls_total = polls_each * alive;
    return Json{{"from_s", static_cast<double>(t0 - since_ns) / 1e9},
                {"wall_s", wall},
                {"processes", alive},
                {"cpu_s_total", cpu_total_s},
                {"cpu_percent_total", 100 * cpu_total_s / wall},
                {"polls_per_process", polls_each},
                {"polls_total", polls_total},
                // total CPU / number of polls: one process's poll (tick), averaged
                {"cpu_ms_per_poll", polls_total > 0 ? cpu_total_s * 1000 / polls_total : 0},
                // every process polling once (all the children once): total CPU per interval
                {"cpu_ms_per_round", cpu_total_s * 1000 / polls_each},
                {"cpu_ms_per_poll_each", summary(per_poll_ms)},
                {"cpu_percent_each", summary(cpu_percent)},
                {"voluntary_switches_per_s_each", summary(switches_per_s)},
                {"rss_mib_sum", summary(rss_sum_mib)},
                {"pss_mib_sum", summary(pss_sum_mib)},
                {"pss_anon_mib_sum", summary(pss_anon_sum_mib)},
                {"pss_file_mib_sum", summary(pss_file_sum_mib)},
                {"rss_mib_each", summary(rss_each_mib)},
                {"pss_mib_each", summary(pss_each_mib)},
                {"hwm_mib_max", mib(hwm_max)},
                {"series_seconds_cpu_ns_rss_kib", series}};
}

Json startup_json(const std::vector<Instance>& instances, std::uint64_t spawned_ns) {
    std::vector<double> wall, cpu;
    std::uint64_t last = spawned_ns;
    int started = 0;
    Json errors = Json::array();
    for (const auto& instance : instances) {
        if (!instance.started) {
            if (errors.size() < 5) {
                errors.push_back({{"manager", instance.manager}, {"log", instance.log}});
            }
            continue;
        }
        ++started;
        last = std::max(last, instance.started_ns);
        wall.push_back(static_cast<double>(instance.started_ns - instance.spawned_ns) / 1e9);
        if (const auto s = sample_proc(instance.pid)) {
            cpu.push_back(static_cast<double>(s->cpu_ns) / 1e9);
        }
    }
    return Json{{"instances", instances.size()},
                {"started", started},
                {"all_started_s", static_cast<double>(last - spawned_ns) / 1e9},
                {"wall_s_each", summary(wall)},
                {"cpu_s_each_after_start", summary(cpu)},
                {"errors", errors}};
}

Json bpf_summary(const std::vector<Instance>& instances) {
    std::vector<double> memlock_mib, programs, maps, links;
    for (const auto& instance : instances) {
        if (!instance.started) {
            continue;
        }
        const Json objects = bpf_objects(instance.pid);
        memlock_mib.push_back(static_cast<double>(objects["memlock_bytes"].get<std::uint64_t>()) /
                              1048576.0);
        programs.push_back(objects["programs"].get<double>());
        maps.push_back(objects["maps"].get<double>());
        links.push_back(objects["links"].get<double>());
    }
    double total = 0;
    for (double value : memlock_mib) {
        total += value;
    }
    return Json{{"memlock_mib_each", summary(memlock_mib)},
                {"memlock_mib_total", total},
                {"programs_each", summary(programs)},
                {"maps_each", summary(maps)},
                {"links_each", summary(links)},
                {"page_fault_user_links_system", fault_links()}};
}

}  // namespace

int run_host(const Args& args) {
    const std::string kidreaper = args.get_or("--kidreaper", "build-bench/kidreaper");
    const auto managers = static_cast<std::size_t>(args.get_long("--managers", 100));
    const auto per_manager = static_cast<std::size_t>(args.get_long("--children", 20));
    const std::uint64_t preload = static_cast<std::uint64_t>(args.get_long("--preload-mib", 16))
                                  << 20;
    const std::string interval = args.get_or("--interval", "1s");
    const double interval_s =
        static_cast<double>(kidreaper::parse_duration(interval).count()) / 1000.0;
    const double warmup = static_cast<double>(args.get_long("--warmup", 62));
    const double seconds = static_cast<double>(args.get_long("--seconds", 60));
    const double memory_every = static_cast<double>(args.get_long("--memory-every", 10));
    const int trials = static_cast<int>(args.get_long("--trials", 5));
    const std::uint64_t limit = static_cast<std::uint64_t>(args.get_long("--limit-mib", 64)) << 20;
    const std::uint64_t grow = static_cast<std::uint64_t>(args.get_long("--grow-mib", 96)) << 20;
    const int storms = static_cast<int>(args.get_long("--storms", 10));
    const int attached_blocks = static_cast<int>(args.get_long("--fault-blocks", 2));
    const std::uint64_t storm_bytes = static_cast<std::uint64_t>(args.get_long("--storm-mib", 64))
                                      << 20;
    const auto single_children =
        static_cast<std::size_t>(args.get_long("--single-children", long(managers * per_manager)));
    const double single_warmup = static_cast<double>(args.get_long("--single-warmup", 62));
    const double single_seconds = static_cast<double>(args.get_long("--single-seconds", 60));
    std::mt19937_64 random(static_cast<std::uint64_t>(args.get_long("--seed", 20240601)));
    const std::uint64_t run_started = mono_ns();

    // One log pipe per instance and two pipes per manager stay open in the harness.
    rlimit files{};
    getrlimit(RLIMIT_NOFILE, &files);
    const rlim_t soft_before = files.rlim_cur;
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
    getrlimit(RLIMIT_NOFILE, &files);
    const auto log_before = kernel_log();
    const Json machine = machine_facts();

    // The storm manager first (it holds only its own memory and pipes).
    StormManager storm_manager(storm_bytes, storm_bytes, online_cpus() - 1);
    Json blocks = Json::array();
    auto storm_block = [&](const std::string& condition, int instances) {
        Json block{{"condition", condition},
                   {"instances", instances},
                   {"page_fault_user_links", fault_links()}};
        Json samples = Json::array();
        for (int s = 0; s < storms; ++s) {
            const Storm storm = storm_manager.storm();
            samples.push_back({{"cow_ns", storm.cow_ns},
                               {"fresh_ns", storm.fresh_ns},
                               {"cow_faults", storm.cow_faults},
                               {"fresh_faults", storm.fresh_faults}});
        }
        block["storms"] = samples;
        std::vector<double> cow;
        for (const auto& sample : samples) {
            cow.push_back(sample["cow_ns"].get<double>());
        }
        std::cerr << "host: storms with " << condition << ": COW " << median(cow)
                  << " ns/fault (median)\n";
        blocks.push_back(block);
    };

    // The fleet: manager 0 also forks growers on request.
    const std::uint64_t fork0 = mono_ns();
    std::vector<std::unique_ptr<HostManager>> fleet;
    for (std::size_t m = 0; m < managers; ++m) {
        fleet.push_back(m == 0 ? std::make_unique<HostManager>(per_manager, preload, limit, grow)
                               : std::make_unique<HostManager>(per_manager, preload));
    }
    const double fleet_fork_s = static_cast<double>(mono_ns() - fork0) / 1e9;
    std::cerr << "host: " << managers << " managers x " << per_manager << " children forked in "
              << fleet_fork_s << " s\n";

    std::vector<Instance> instances(managers);
    for (std::size_t m = 0; m < managers; ++m) {
        instances[m].manager = fleet[m]->pid();
    }
    const std::string limit_text = std::to_string(limit) + "B";
    auto start_fleet = [&]() {
        const std::uint64_t spawned = mono_ns();
        for (std::size_t m = 0; m < managers; ++m) {
            if (m == 0) {
                spawn(instances[m], kidreaper,
                      {"--limit", limit_text, "--interval", interval, "--no-idle-wait", "--stagger",
                       "0s"});
            } else {
                spawn(instances[m], kidreaper, {"--limit", "100GiB", "--interval", interval});
            }
        }
        wait_started(instances, 300'000);
        Json startup = startup_json(instances, spawned);
        std::cerr << "host: " << startup["started"] << " of " << managers
                  << " kidreaper instances started in " << startup["all_started_s"] << " s\n";
        return std::pair{startup, spawned};
    };

    storm_block("none", 0);
    auto [startup, fleet_started_ns] = start_fleet();
    const Json bpf = bpf_summary(instances);
    if (startup["started"].get<std::size_t>() == 0) {
        stop_all(instances);
        throw std::runtime_error("no kidreaper instance started: " + startup["errors"].dump());
    }

    // During the warm-up: reaction trials on manager 0, then the first attached storms.
    Json trial_docs = Json::array();
    std::vector<double> reaction_ms;
    const auto interval_ns = static_cast<std::uint64_t>(interval_s * 1e9);
    for (int trial = 0; trial < trials && instances[0].started; ++trial) {
        Json doc{{"trial", trial}};
        const pid_t grower = fleet[0]->fork_grower();
        const std::uint64_t phase =
            std::uniform_int_distribution<std::uint64_t>(0, interval_ns - 1)(random);
        pump(instances, static_cast<int>((interval_ns + phase) / 1'000'000));
        fleet[0]->go();
        std::uint64_t crossed = 0, received = 0;
        const std::uint64_t deadline = mono_ns() + 3 * interval_ns + 10'000'000'000ULL;
        while (received == 0 && mono_ns() < deadline) {
            pump(instances, 0);
            const auto line = fleet[0]->replies().next(50);
            if (!line) {
                continue;
            }
            std::istringstream fields(*line);
            std::string tag;
            fields >> tag;
            if (tag == "crossed") {
                fields >> crossed;
            } else if (tag == "signal") {
                int signal = 0;
                std::uint64_t crossed_then = 0;
                fields >> signal >> received >> crossed_then;
                crossed = crossed != 0 ? crossed : crossed_then;
                doc["signal"] = signal;
            }
        }
        doc["grower"] = grower;
        doc["phase_ms"] = static_cast<double>(phase) / 1e6;
        if (crossed == 0 || received == 0) {
            doc["error"] = "no crossing or no signal in time; kidreaper said:\n" + instances[0].log;
        } else {
            const double ms = (static_cast<double>(received) - static_cast<double>(crossed)) / 1e6;
            reaction_ms.push_back(ms);
            doc["reaction_ms"] = ms;
        }
        trial_docs.push_back(doc);
        // The grower is gone (its handler exits): the manager reaps it.
        while (kill(grower, 0) == 0 && mono_ns() < deadline) {
            pump(instances, 20);
        }
    }
    std::cerr << "host: reaction median " << median(reaction_ms) << " ms, max "
              << max_of(reaction_ms) << " ms over " << reaction_ms.size() << " trials\n";
    storm_block("attached", static_cast<int>(startup["started"].get<std::size_t>()));

    std::vector<pid_t> fleet_pids;
    for (const auto& instance : instances) {
        if (instance.started) {
            fleet_pids.push_back(instance.pid);
        }
    }
    // The warm-up counts from the last instance's start.
    std::uint64_t all_started_ns = fleet_started_ns;
    for (const auto& instance : instances) {
        all_started_ns = std::max(all_started_ns, instance.started_ns);
    }
    const Json fleet_window = measure_window(fleet_pids, instances, all_started_ns, warmup, seconds,
                                             interval_s, memory_every);
    std::cerr << "host: fleet: " << fleet_window["cpu_ms_per_poll"] << " ms per poll, "
              << fleet_window["cpu_ms_per_round"] << " ms per round, RSS sum "
              << fleet_window["rss_mib_sum"]["median"] << " MiB, PSS sum "
              << fleet_window["pss_mib_sum"]["median"] << " MiB\n";

    // More blocks: none / attached alternating (the instances are stopped and started).
    Json restarts = Json::array();
    std::string fleet_logs;
    auto keep_logs = [&]() {
        for (const auto& instance : instances) {
            if (!instance.log.empty() && fleet_logs.size() < 200'000 &&
                (instance.manager == instances[0].manager || !instance.started)) {
                fleet_logs += "manager " + std::to_string(instance.manager) + ":\n" + instance.log;
            }
        }
    };
    keep_logs();
    stop_all(instances);
    storm_block("none", 0);
    for (int block = 1; block < attached_blocks; ++block) {
        auto [again, ignored] = start_fleet();
        (void)ignored;
        restarts.push_back(again);
        pump(instances, 2'000);  // their first polls
        storm_block("attached", static_cast<int>(again["started"].get<std::size_t>()));
        stop_all(instances);
        storm_block("none", 0);
    }
    while (!fleet.empty()) {
        fleet.pop_back();  // newest first
    }

    // The proxy for one daemon: one kidreaper process, one manager, all the children.
    HostManager big(single_children, preload);
    std::cerr << "host: one manager with " << single_children << " children forked in "
              << big.fork_seconds() << " s\n";
    std::vector<Instance> single(1);
    single[0].manager = big.pid();
    spawn(single[0], kidreaper, {"--limit", "100GiB", "--interval", interval});
    wait_started(single, 300'000);
    Json single_doc{{"children", single_children},
                    {"fork_seconds", big.fork_seconds()},
                    {"startup", startup_json(single, single[0].spawned_ns)}};
    if (single[0].started) {
        single_doc["bpf"] = bpf_objects(single[0].pid);
        single_doc["window"] =
            measure_window({single[0].pid}, single, single[0].started_ns, single_warmup,
                           single_seconds, interval_s, memory_every);
        std::cerr << "host: one process: " << single_doc["window"]["cpu_ms_per_poll"]
                  << " ms per poll, RSS " << single_doc["window"]["rss_mib_sum"]["median"]
                  << " MiB\n";
    }
    stop_all(single);
    single_doc["log"] = single[0].log;

    emit(args, Json{{"benchmark", "host"},
                    {"machine", machine},
                    {"managers", managers},
                    {"children_per_manager", per_manager},
                    {"preload_bytes", preload},
                    {"interval", interval},
                    {"warmup_s", warmup},
                    {"seconds", seconds},
                    {"command", "kidreaper reap --pid M --limit 100GiB --interval " + interval +
                                    " --log-format json"},
                    {"rlimit_nofile", {{"soft_before", soft_before}, {"soft", files.rlim_cur}}},
                    {"fleet",
                     {{"fork_seconds", fleet_fork_s},
                      {"startup", startup},
                      {"restarts", restarts},
                      {"bpf", bpf},
                      {"window", fleet_window},
                      {"logs", fleet_logs}}},
                    {"reaction",
                     {{"limit_bytes", limit},
                      {"grow_bytes", grow},
                      {"interval_ms", interval_s * 1000},
                      {"bound_ms", interval_s * 1000 + 100},
                      {"reaction_ms", summary(reaction_ms)},
                      {"trials", trial_docs}}},
                    {"faults", {{"storm_bytes", storm_bytes}, {"blocks", blocks}}},
                    {"single", single_doc},
                    {"kernel_log", new_log_lines(log_before, kernel_log())},
                    {"run_seconds", static_cast<double>(mono_ns() - run_started) / 1e9}});
    return 0;
}

}  // namespace krbench
