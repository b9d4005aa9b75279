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
#include <linux/perf_event.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

#include "bench_util.h"
#include "common/log.h"
#include "observe/kernel_features.h"
#include "observe/observer.h"
#include "observe/procfs.h"

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
    double cow_chunk_ns = 0;  // median over chunks of the chunk's ns per page
    double fresh_chunk_ns = 0;
    double cow_ns_per_fault() const { return per_fault(cow_cpu_ns, cow_faults, cow_pages); }
    double fresh_ns_per_fault() const { return per_fault(fresh_cpu_ns, fresh_faults, fresh_pages); }
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

constexpr std::uint64_t kChunkPages = 64;

// One plain store per page, timed in chunks of kChunkPages pages with the monotonic clock
// (vDSO): the median chunk's ns per page ignores chunks in which the child was preempted
// or interrupted, which the whole-loop figure cannot.
double store_timed(unsigned char* begin, std::uint64_t bytes, unsigned char value) {
    std::vector<double> chunk_ns;
    chunk_ns.reserve(bytes / kPage / kChunkPages + 1);
    volatile unsigned char* page = begin;
    const std::uint64_t pages = bytes / kPage;
    for (std::uint64_t first = 0; first < pages; first += kChunkPages) {
        const std::uint64_t last = std::min(pages, first + kChunkPages);
        const std::uint64_t t0 = mono_ns();
        for (std::uint64_t i = first; i < last; ++i) {
            page[i * kPage] = value;
        }
        const std::uint64_t t1 = mono_ns();
        chunk_ns.push_back(static_cast<double>(t1 - t0) / static_cast<double>(last - first));
    }
    return median(std::move(chunk_ns));
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
    result.cow_chunk_ns = store_timed(inherited, inherited_bytes, 0x33);
    std::uint64_t wall1 = mono_ns();
    std::uint64_t cpu1 = thread_cpu_ns();
    std::uint64_t faults1 = minor_faults();
    result.cow_cpu_ns = cpu1 - cpu0;
    result.cow_wall_ns = wall1 - wall0;
    result.cow_faults = faults1 - faults0;

    faults0 = minor_faults();
    cpu0 = thread_cpu_ns();
    wall0 = mono_ns();
    result.fresh_chunk_ns = store_timed(fresh, fresh_bytes, 0x44);
    wall1 = mono_ns();
    cpu1 = thread_cpu_ns();
    faults1 = minor_faults();
    result.fresh_cpu_ns = cpu1 - cpu0;
    result.fresh_wall_ns = wall1 - wall0;
    result.fresh_faults = faults1 - faults0;

    std::ostringstream line;
    line << "result " << result.pid << ' ' << result.cow_pages << ' ' << result.cow_cpu_ns << ' '
         << result.cow_wall_ns << ' ' << result.cow_faults << ' ' << result.fresh_pages << ' '
         << result.fresh_cpu_ns << ' ' << result.fresh_wall_ns << ' ' << result.fresh_faults << ' '
         << result.cow_chunk_ns << ' ' << result.fresh_chunk_ns << '\n';
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
                    // Say who we are and wait for the go: the harness first does what the
                    // daemon's first poll would (kidreaper claims the child's counter slot).
                    write_all(replies_.write_fd, "forked " + std::to_string(getpid()) + "\n");
                    char go = 0;
                    while (read(commands_.read_fd, &go, 1) < 0 && errno == EINTR) {
                    }
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

    // Runs one storm; `before` sees the storm child's pid before it starts.
    StormResult storm(const std::function<void(pid_t)>& before = {}) {
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
            if (line->rfind("forked ", 0) == 0) {
                if (before) {
                    before(static_cast<pid_t>(std::stol(line->substr(7))));
                }
                write_all(commands_.write_fd, "g");
                continue;
            }
            std::istringstream fields(*line);
            std::string tag;
            fields >> tag >> result.pid >> result.cow_pages >> result.cow_cpu_ns >>
                result.cow_wall_ns >> result.cow_faults >> result.fresh_pages >>
                result.fresh_cpu_ns >> result.fresh_wall_ns >> result.fresh_faults >>
                result.cow_chunk_ns >> result.fresh_chunk_ns;
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

// Programs of any kind on the page-fault tracepoints by name (bpftrace's, other
// observers'; kidreaper's page-cache hook, on_filemap_fault, is not one).
int fault_programs() {
    int count = 0;
    for (const auto& [id, stat] : prog_stats()) {
        if (stat.name.find("fault") != std::string::npos &&
            stat.name.find("filemap") == std::string::npos) {
            ++count;
        }
    }
    return count;
}

// The conditions, in their base order (rotated each round).
//  none       nothing attached
//  kidreaper  kidreaper's observer attached, tracking the storm manager (its children), in
//             the COW mode kidreaper runs in on this kernel (KernelFeatures::cow_source())
//  kidreaper-class  the same in the fault-class mode (no mapping lookup, no pairing): the
//             hot path before COW was told by mapping, side by side
//  bpftrace   bpftrace tracking the storm manager's children, counting faults by class
//  untracked  kidreaper's observer attached, tracking another manager: the storm child
//             is a process kidreaper does not track
//  empty      empty raw_tp programs on kidreaper's three hot tracepoints (page_fault_user,
//             page_fault_kernel, rss_stat): the floor of any raw_tp design
//  perf-count a per-task software page-fault counter (perf_event_open, inherit) on the
//             storm manager: its children count their faults without any tracepoint
//  perf-other the same counter on another manager: the cost to an untracked process
//  kidreaper-tp / untracked-tp  kidreaper and untracked with the tracepoints fault source
//             forced, where the kernel's own choice is mm (the qemu guests): the two
//             sources side by side
//  kidreaper-mm-kprobe  mm attached by kprobes instead of fentry, tracking the storm
//             manager (where mm exists)
//  perf-bpf / perf-bpf-other  the per-task counter of perf-count / perf-other sampling every
//             fault into an empty BPF program: the floor of a per-task fault source
//  empty-rss  an empty raw_tp program on rss_stat alone: what untracked processes would
//             still pay with a per-task fault source
const std::vector<std::string> kConditions = {
    "none",           "kidreaper",    "kidreaper-class",     "bpftrace",
    "untracked",      "empty",        "perf-count",          "perf-other",
    "kidreaper-tp",   "untracked-tp", "kidreaper-mm-kprobe", "perf-bpf",
    "perf-bpf-other", "empty-rss"};

// Whether a condition can run on this kernel (the mm ones need mm; the -tp ones exist
// only where the kernel's own choice is mm, else they equal kidreaper and untracked).
bool condition_possible(const std::string& condition, const kidreaper::KernelFeatures& features) {
    if (condition == "kidreaper-tp" || condition == "untracked-tp") {
        return features.cow_source().mm && features.fault_tracepoints();
    }
    if (condition == "kidreaper-mm-kprobe") {
        return features.mm_fault_source();
    }
    if (condition == "kidreaper-class" || condition == "empty") {
        return features.fault_tracepoints();
    }
    return true;
}

// What a condition itself attaches: raw_tp links on page_fault_user, and programs whose
// name mentions faults (kidreaper: on_fault_user/kernel; bpftrace: page_fault_user/kern).
struct Hooks {
    int links = 0;
    int programs = 0;
    bool operator==(const Hooks&) const = default;
};

Hooks hooks_now() {
    return {raw_fault_links(), fault_programs()};
}

Hooks expected_hooks(const std::string& condition, const kidreaper::Observer* observer) {
    if (observer != nullptr) {
        // Fault tracepoints: a raw_tp link on page_fault_user and two fault programs; the
        // kprobe/fentry on finish_fault (either source) is a program whose name says fault.
        const kidreaper::CowSource& source = observer->cow_source();
        return {source.mm ? 0 : 1, (source.mm ? 0 : 2) + (source.exact_fills ? 1 : 0)};
    }
    if (condition == "bpftrace") {
        return {0, 2};
    }
    if (condition == "empty") {
        return {1, 0};
    }
    if (condition == "empty-rss") {
        return {0, 0};
    }
    return {0, 0};
}

// Waits up to `timeout_ms` for fault observers that are not ours (another kidreaper or
// bpftrace on this machine) to go away. True when only ours are attached.
bool wait_for_hooks(const Hooks& expected, int timeout_ms) {
    const std::uint64_t deadline = mono_ns() + static_cast<std::uint64_t>(timeout_ms) * 1'000'000;
    while (hooks_now() != expected) {
        if (mono_ns() >= deadline) {
            return false;
        }
        sleep_ns(500'000'000);
    }
    return true;
}

std::set<std::uint32_t> prog_ids() {
    std::set<std::uint32_t> ids;
    for (const auto& [id, stat] : prog_stats()) {
        ids.insert(id);
    }
    return ids;
}

// System-wide CPU time from /proc/stat, in clock ticks.
struct CpuTimes {
    std::uint64_t busy = 0;
    std::uint64_t steal = 0;
};

CpuTimes cpu_times() {
    std::istringstream line(read_text("/proc/stat"));
    std::string label;
    std::uint64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0,
                  steal = 0;
    line >> label >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
    return {user + nice + system + irq + softirq, steal};
}

double ticks_per_second() {
    return static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Waits (at most `timeout_ms`) until the machine is idle apart from us: less than
// `threshold` of a CPU busy over 100 ms. Returns the busy fraction last seen.
double wait_for_idle_machine(int timeout_ms, double threshold) {
    const std::uint64_t deadline = mono_ns() + static_cast<std::uint64_t>(timeout_ms) * 1'000'000;
    double busy = 0;
    while (true) {
        const CpuTimes before = cpu_times();
        sleep_ns(100'000'000);
        const CpuTimes after = cpu_times();
        busy = static_cast<double>(after.busy - before.busy) / ticks_per_second() / 0.1;
        if (busy < threshold || mono_ns() >= deadline) {
            return busy;
        }
    }
}

// Empty raw_tp programs (r0 = 0; exit) attached to the given tracepoints.
class EmptyRawTp {
public:
    // {tracepoint, program name}: names tell the programs apart in the BPF stats.
    explicit EmptyRawTp(const std::vector<std::pair<const char*, const char*>>& hooks) {
        bpf_insn program[2] = {};
        program[0].code = BPF_ALU64 | BPF_MOV | BPF_K;  // r0 = 0
        program[1].code = BPF_JMP | BPF_EXIT;
        for (const auto& [tracepoint, name] : hooks) {
            const int prog =
                bpf_prog_load(BPF_PROG_TYPE_RAW_TRACEPOINT, name, "GPL", program, 2, nullptr);
            if (prog < 0) {
                throw std::runtime_error("cannot load an empty raw_tp program");
            }
            const int link = bpf_raw_tracepoint_open(tracepoint, prog);
            if (link < 0) {
                close(prog);
                throw std::runtime_error(std::string("cannot attach to raw_tp ") + tracepoint);
            }
            fds_.push_back(prog);
            fds_.push_back(link);
        }
    }
    ~EmptyRawTp() {
        for (int fd : fds_) {
            close(fd);
        }
    }
    EmptyRawTp(const EmptyRawTp&) = delete;
    EmptyRawTp& operator=(const EmptyRawTp&) = delete;

private:
    std::vector<int> fds_;
};

// A software page-fault counter on one process and the children it forks from now on
// (inherit): no tracepoint, no BPF; the kernel counts in perf_sw_event().
// With `with_program`, every fault is also a sample (period 1) that runs an empty BPF
// program (BPF_PROG_TYPE_PERF_EVENT), inherited by the children like the counter: the
// floor of a per-task fault source that runs a program only in the tracked processes.
class PerfFaultCounter {
public:
    explicit PerfFaultCounter(pid_t pid, bool with_program = false) {
        perf_event_attr attr{};
        attr.size = sizeof attr;
        attr.type = PERF_TYPE_SOFTWARE;
        attr.config = PERF_COUNT_SW_PAGE_FAULTS;
        attr.inherit = 1;
        if (with_program) {
            attr.sample_period = 1;
            attr.disabled = 1;  // enabled once the program is set
        }
        fd_ = static_cast<int>(
            syscall(SYS_perf_event_open, &attr, pid, -1, -1, PERF_FLAG_FD_CLOEXEC));
        if (fd_ < 0) {
            throw std::runtime_error(std::string("perf_event_open: ") + std::strerror(errno));
        }
        if (!with_program) {
            return;
        }
        bpf_insn program[2] = {};
        program[0].code = BPF_ALU64 | BPF_MOV | BPF_K;  // r0 = 0
        program[1].code = BPF_JMP | BPF_EXIT;
        prog_ =
            bpf_prog_load(BPF_PROG_TYPE_PERF_EVENT, "kr_empty_perf", "GPL", program, 2, nullptr);
        if (prog_ < 0 || ioctl(fd_, PERF_EVENT_IOC_SET_BPF, prog_) != 0 ||
            ioctl(fd_, PERF_EVENT_IOC_ENABLE, 0) != 0) {
            const int error = errno;
            close(fd_);
            if (prog_ >= 0) {
                close(prog_);
            }
            throw std::runtime_error(std::string("perf event BPF program: ") +
                                     std::strerror(error));
        }
    }
    ~PerfFaultCounter() {
        close(fd_);
        if (prog_ >= 0) {
            close(prog_);
        }
    }
    PerfFaultCounter(const PerfFaultCounter&) = delete;
    PerfFaultCounter& operator=(const PerfFaultCounter&) = delete;
    // The process's faults plus those of its exited children.
    std::uint64_t count() const {
        std::uint64_t value = 0;
        return read(fd_, &value, sizeof value) == sizeof value ? value : 0;
    }

private:
    int fd_ = -1;
    int prog_ = -1;
};

// Whatever one condition attaches, for as long as it lives.
struct Attached {
    std::unique_ptr<kidreaper::Observer> observer;
    std::unique_ptr<Bpftrace> tracer;
    std::unique_ptr<EmptyRawTp> empty;
    std::unique_ptr<PerfFaultCounter> perf;
};

// What the daemon's first poll does for a new child: claim its counter slot.
std::function<void(pid_t)> first_poll(const Attached& attached) {
    kidreaper::Observer* observer = attached.observer.get();
    return [observer](pid_t child) {
        if (observer != nullptr) {
            observer->claim_slot(child);
        }
    };
}

Attached attach(const std::string& condition, const std::string& bpftrace, pid_t storm_manager,
                pid_t other_manager, const kidreaper::ProcFs& proc, const kidreaper::Logger& log) {
    Attached attached;
    if (condition.starts_with("kidreaper") || condition.starts_with("untracked")) {
        const kidreaper::KernelFeatures features = kidreaper::probe_features();
        kidreaper::CowSource source = features.cow_source();
        if (condition == "kidreaper-class") {
            source = {};
        } else if (condition.ends_with("-tp")) {
            source = features.cow_source(kidreaper::FaultSource::tracepoints);
        } else if (condition == "kidreaper-mm-kprobe") {
            source = features.cow_source(kidreaper::FaultSource::mm);
        }
        attached.observer = std::make_unique<kidreaper::Observer>(
            kidreaper::ObserverOptions{.cow = source,
                                       .prefer_fentry = condition != "kidreaper-mm-kprobe"},
            log);
        kidreaper::track_manager(
            *attached.observer, proc,
            condition.starts_with("untracked") ? other_manager : storm_manager);
    } else if (condition == "bpftrace") {
        attached.tracer = std::make_unique<Bpftrace>(
            bpftrace, bpftrace_script(storm_manager, proc.children_of(storm_manager)));
    } else if (condition == "empty") {
        attached.empty = std::make_unique<EmptyRawTp>(
            std::vector<std::pair<const char*, const char*>>{{"page_fault_user", "kr_empty_pfu"},
                                                             {"page_fault_kernel", "kr_empty_pfk"},
                                                             {"rss_stat", "kr_empty_rss"}});
    } else if (condition == "empty-rss") {
        attached.empty = std::make_unique<EmptyRawTp>(
            std::vector<std::pair<const char*, const char*>>{{"rss_stat", "kr_empty_rss"}});
    } else if (condition.starts_with("perf-")) {
        attached.perf = std::make_unique<PerfFaultCounter>(
            condition == "perf-count" || condition == "perf-bpf" ? storm_manager : other_manager,
            condition.starts_with("perf-bpf"));
    }
    return attached;
}

struct Series {
    std::vector<double> cow, fresh;          // median chunk, ns per fault (monotonic)
    std::vector<double> cow_cpu, fresh_cpu;  // whole loop, thread CPU ns per fault
    std::vector<std::vector<double>> round_cow, round_fresh;  // clean samples per round
};

}  // namespace

int run_faults(const Args& args) {
    const std::uint64_t cow_bytes = static_cast<std::uint64_t>(args.get_long("--cow-mib", 256))
                                    << 20;
    const std::uint64_t fresh_bytes = static_cast<std::uint64_t>(args.get_long("--fresh-mib", 256))
                                      << 20;
    const int rounds = static_cast<int>(args.get_long("--rounds", 9));
    const int storms = static_cast<int>(args.get_long("--storms", 3));
    const std::string bpftrace = args.get_or("--bpftrace", "/usr/bin/bpftrace");
    // Waiting for other observers to go, or for the machine to calm down, is bounded per
    // wait and in total (then storms run anyway and are marked).
    const int hooks_wait_ms = static_cast<int>(args.get_long("--hooks-wait-ms", 5'000));
    const int idle_wait_ms = static_cast<int>(args.get_long("--idle-wait-ms", 1'000));
    std::int64_t wait_budget_ns = args.get_long("--wait-budget-s", 120) * 1'000'000'000LL;
    auto budgeted = [&wait_budget_ns](int ms) {
        return wait_budget_ns > 0
                   ? static_cast<int>(std::min<std::int64_t>(ms, wait_budget_ns / 1'000'000))
                   : 0;
    };
    auto spend = [&wait_budget_ns](std::uint64_t since) {
        wait_budget_ns -= static_cast<std::int64_t>(mono_ns() - since);
    };
    const double busy_limit = 0.25;  // others' load above this during a storm: not clean
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

    const kidreaper::KernelFeatures features = kidreaper::probe_features();
    std::vector<std::string> conditions;
    const std::string wanted =
        "," +
        args.get_or("--conditions",
                    "none,kidreaper,kidreaper-class,bpftrace,untracked,empty,perf-count,perf-other,"
                    "perf-bpf,perf-bpf-other,empty-rss") +
        ",";
    for (const auto& name : kConditions) {
        if (wanted.find("," + name + ",") == std::string::npos) {
            continue;
        }
        if ((name != "bpftrace" || have_bpftrace) && condition_possible(name, features)) {
            conditions.push_back(name);
        }
    }
    if (conditions.empty() || conditions.front() != "none") {
        throw std::runtime_error("--conditions must include none (the baseline)");
    }
    std::map<std::string, Series> series;
    Json modes = Json::object();  // condition -> the observer's mode, as attached
    Json samples = Json::array();
    Json checks = Json::array();
    int foreign = 0;
    int busy_samples = 0;

    const std::string load_before = machine_facts()["loadavg"];
    const std::uint64_t started = mono_ns();
    for (int round = 0; round < rounds; ++round) {
        std::vector<std::string> order = conditions;
        std::rotate(order.begin(), order.begin() + (round % static_cast<int>(order.size())),
                    order.end());
        for (const auto& condition : order) {
            Attached attached =
                attach(condition, bpftrace, storm_manager.pid(), other_manager.pid(), proc, log);
            const Hooks expected = expected_hooks(condition, attached.observer.get());
            if (attached.observer && !modes.contains(condition)) {
                modes[condition] = kidreaper::cow_source_name(attached.observer->cow_source());
            }
            Series& data = series[condition];
            data.round_cow.emplace_back();
            data.round_fresh.emplace_back();
            std::vector<pid_t> storm_pids;
            std::uint64_t waited_from = mono_ns();
            wait_for_idle_machine(budgeted(idle_wait_ms), 0.10);
            spend(waited_from);
            for (int s = 0; s < storms; ++s) {
                waited_from = mono_ns();
                const bool hooks_ok = wait_for_hooks(expected, budgeted(hooks_wait_ms));
                spend(waited_from);
                const CpuTimes before = cpu_times();
                const std::uint64_t perf_before = attached.perf ? attached.perf->count() : 0;
                const std::uint64_t wall0 = mono_ns();
                const StormResult result = storm_manager.storm(first_poll(attached));
                const double wall = static_cast<double>(mono_ns() - wall0) / 1e9;
                const CpuTimes after = cpu_times();
                const bool hooks_after = hooks_now() == expected;
                const double child_cpu =
                    static_cast<double>(result.cow_cpu_ns + result.fresh_cpu_ns) / 1e9;
                const double others = std::max(0.0, static_cast<double>(after.busy - before.busy) /
                                                            ticks_per_second() -
                                                        child_cpu) /
                                      wall;
                const double steal =
                    static_cast<double>(after.steal - before.steal) / ticks_per_second() / wall;
                const bool ours_only = hooks_ok && hooks_after;
                const bool quiet = others < busy_limit;
                storm_pids.push_back(result.pid);
                const double cow = result.cow_chunk_ns;
                const double fresh = result.fresh_chunk_ns;
                samples.push_back({{"round", round},
                                   {"condition", condition},
                                   {"pid", result.pid},
                                   {"cow_ns", cow},
                                   {"fresh_ns", fresh},
                                   {"cow_cpu_ns", result.cow_ns_per_fault()},
                                   {"fresh_cpu_ns", result.fresh_ns_per_fault()},
                                   {"cow_wall_ns", result.cow_wall_per_fault()},
                                   {"fresh_wall_ns", result.fresh_wall_per_fault()},
                                   {"cow_faults", result.cow_faults},
                                   {"fresh_faults", result.fresh_faults},
                                   {"others_cpu", others},
                                   {"steal_cpu", steal},
                                   {"foreign_observer", !ours_only},
                                   {"used", ours_only && quiet}});
                foreign += ours_only ? 0 : 1;
                busy_samples += quiet ? 0 : 1;
                if (ours_only && quiet) {
                    data.cow.push_back(cow);
                    data.fresh.push_back(fresh);
                    data.cow_cpu.push_back(result.cow_ns_per_fault());
                    data.fresh_cpu.push_back(result.fresh_ns_per_fault());
                    data.round_cow.back().push_back(cow);
                    data.round_fresh.back().push_back(fresh);
                }
                if (attached.perf && round == 0 && s == 0) {
                    checks.push_back({{"condition", condition},
                                      {"pid", result.pid},
                                      {"faults_counted", attached.perf->count() - perf_before}});
                }
                if (attached.observer) {
                    const auto reading = attached.observer->read_child(result.pid);
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
                        attached.observer->forget_child(result.pid, reading->start_ns);
                    }
                }
            }
            if (attached.tracer) {
                const std::string output = attached.tracer->stop();
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
        }
        std::cerr << "faults: round " << (round + 1) << "/" << rounds << " done\n";
    }
    const double measure_seconds = static_cast<double>(mono_ns() - started) / 1e9;
    const std::string load_after = machine_facts()["loadavg"];

    // Per-program BPF run time, from the kernel's BPF stats (on only for this pass: they add
    // two clock reads per run, so the timed rounds run without). Several passes over the
    // conditions, alternating like the rounds; each program's figure is the median over passes.
    Json attribution = Json::array();
    const int passes = static_cast<int>(args.get_long("--attribution-passes", 5));
    if (const int stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME); stats_fd >= 0) {
        // condition -> program name -> ns per run, one value per pass
        std::map<std::string, std::map<std::string, std::vector<double>>> ns_per_run;
        std::map<std::string, std::map<std::string, std::uint64_t>> runs_per_storm;
        std::map<std::string, bool> clean;
        for (int pass = 0; pass < passes; ++pass) {
            for (const auto& condition : conditions) {
                if (condition == "none") {
                    continue;
                }
                const auto ids_before_setup = prog_ids();
                Attached attached = attach(condition, bpftrace, storm_manager.pid(),
                                           other_manager.pid(), proc, log);
                const bool ours_only =
                    wait_for_hooks(expected_hooks(condition, attached.observer.get()),
                                   std::max(budgeted(hooks_wait_ms), 1000));
                clean.try_emplace(condition, true);
                clean[condition] = clean[condition] && ours_only;
                const auto before = prog_stats();
                const StormResult result = storm_manager.storm(first_poll(attached));
                const auto after = prog_stats();
                if (attached.observer) {
                    if (const auto reading = attached.observer->read_child(result.pid)) {
                        attached.observer->forget_child(result.pid, reading->start_ns);
                    }
                }
                if (attached.tracer) {
                    attached.tracer->stop();
                }
                for (const auto& [id, stat] : after) {
                    const auto old = before.find(id);
                    if (old == before.end() || stat.run_cnt == old->second.run_cnt ||
                        ids_before_setup.count(id) != 0) {
                        continue;  // not run, or not this condition's (loaded before it)
                    }
                    const std::uint64_t runs = stat.run_cnt - old->second.run_cnt;
                    const std::uint64_t ns = stat.run_ns - old->second.run_ns;
                    ns_per_run[condition][stat.name].push_back(static_cast<double>(ns) /
                                                               static_cast<double>(runs));
                    runs_per_storm[condition][stat.name] = runs;
                }
            }
        }
        close(stats_fd);
        for (const auto& condition : conditions) {
            if (condition == "none") {
                continue;
            }
            Json programs = Json::array();
            for (const auto& [name, values] : ns_per_run[condition]) {
                programs.push_back({{"name", name},
                                    {"runs", runs_per_storm[condition][name]},
                                    {"ns_per_run", median(values)},
                                    {"ns_per_run_passes", values}});
            }
            attribution.push_back({{"condition", condition},
                                   {"clean", clean[condition]},
                                   {"passes", passes},
                                   {"programs", programs}});
        }
    }

    Json results = Json::object();
    const Series& base = series["none"];
    const double base_cow = median(base.cow);
    const double base_fresh = median(base.fresh);
    for (const auto& condition : conditions) {
        const Series& data = series[condition];
        // Paired ratios: each round's median against the same round's unobserved median.
        std::vector<double> cow_ratios, fresh_ratios;
        for (std::size_t r = 0; r < data.round_cow.size() && r < base.round_cow.size(); ++r) {
            if (data.round_cow[r].empty() || base.round_cow[r].empty()) {
                continue;
            }
            cow_ratios.push_back(median(data.round_cow[r]) / median(base.round_cow[r]));
            fresh_ratios.push_back(median(data.round_fresh[r]) / median(base.round_fresh[r]));
        }
        results[condition] = {
            {"cow_ns", summary(data.cow)},
            {"fresh_ns", summary(data.fresh)},
            {"cow_cpu_ns", summary(data.cow_cpu)},
            {"fresh_cpu_ns", summary(data.fresh_cpu)},
            {"cow_cpu_ratio", median(data.cow_cpu) / median(base.cow_cpu)},
            {"fresh_cpu_ratio", median(data.fresh_cpu) / median(base.fresh_cpu)},
            {"cow_ratio", median(data.cow) / base_cow},
            {"fresh_ratio", median(data.fresh) / base_fresh},
            {"cow_ratio_paired", summary(cow_ratios)},
            {"fresh_ratio_paired", summary(fresh_ratios)},
        };
    }

    emit(args, Json{{"benchmark", "faults"},
                    {"machine", machine_facts()},
                    {"loadavg_before", load_before},
                    {"loadavg_after", load_after},
                    {"cow_bytes", cow_bytes},
                    {"fresh_bytes", fresh_bytes},
                    {"rounds", rounds},
                    {"storms_per_round", storms},
                    {"storm_cpu", cpu},
                    {"seconds", measure_seconds},
                    {"busy_limit", busy_limit},
                    {"samples_with_foreign_observer", foreign},
                    {"samples_under_load", busy_samples},
                    {"bpftrace", have_bpftrace ? bpftrace : ""},
                    {"bpftrace_skipped", bpftrace_skip},
                    {"bpftrace_script", bpftrace_script(storm_manager.pid(), {})},
                    {"conditions", conditions},
                    {"modes", modes},
                    {"kernel_fault_source", features.cow_source().mm ? "mm" : "tracepoints"},
                    {"results", results},
                    {"checks", checks},
                    {"attribution", attribution},
                    {"samples", samples}});
    return 0;
}

}  // namespace krbench
