#include "cli/diagnose.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>
#include <utility>

#include "act/signals.h"
#include "cli/report.h"
#include "common/error.h"
#include "common/units.h"
#include "demo/workload.h"
#include "observe/kernel_features.h"
#include "observe/manager_lookup.h"
#include "observe/observer.h"
#include "observe/procfs.h"
#include "observe/watcher.h"
#include "policy/worker_roles.h"

namespace kidreaper {

namespace {

// The built-in demo workload, run as a child process for the length of the diagnosis.
class DemoServer {
public:
    DemoServer() {
        int to[2];
        int from[2];
        if (pipe2(to, O_CLOEXEC) != 0 || pipe2(from, O_CLOEXEC) != 0) {
            throw Error(errno_message("pipe", errno));
        }
        process_ = fork();
        if (process_ < 0) {
            throw Error(errno_message("fork", errno));
        }
        if (process_ == 0) {
            close(to[1]);
            close(from[0]);
            prctl(PR_SET_NAME, "kr-demo");
            _exit(run_workload_manager(demo_workload(), to[0], from[1]));
        }
        close(to[0]);
        close(from[1]);
        control_ = to[1];
        events_ = from[0];
        wait_ready();
    }
    ~DemoServer() {
        close(control_);  // end of input: the manager stops its children and exits
        close(events_);
        while (waitpid(process_, nullptr, 0) < 0 && errno == EINTR) {
        }
    }
    DemoServer(const DemoServer&) = delete;
    DemoServer& operator=(const DemoServer&) = delete;

    pid_t manager() const { return process_; }

private:
    void wait_ready() {
        std::string text;
        char chunk[256];
        while (text.find("ready\n") == std::string::npos) {
            ssize_t n = read(events_, chunk, sizeof chunk);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                throw Error("the demo workload did not start");
            }
            text.append(chunk, static_cast<std::size_t>(n));
        }
    }

    pid_t process_ = -1;
    int control_ = -1;
    int events_ = -1;
};

// Progress on a terminal (stderr), nothing on a pipe.
class Progress {
public:
    Progress() : enabled_(isatty(STDERR_FILENO) == 1) {}
    ~Progress() { clear(); }
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;
    void show(double elapsed, double total, std::size_t children) {
        if (enabled_) {
            std::fprintf(stderr, "\r\033[Kwatching: %.0fs of %.0fs, %zu children", elapsed, total,
                         children);
            std::fflush(stderr);
        }
    }
    void clear() {
        if (enabled_) {
            std::fputs("\r\033[K", stderr);
            std::fflush(stderr);
        }
    }

private:
    bool enabled_;
};

}  // namespace

pid_t resolve_manager(const DiagnoseOptions& options, const ProcFs& proc) {
    if (options.pid && options.pidfile) {
        throw UsageError("give --pid or --pidfile, not both");
    }
    if (options.pid) {
        return *options.pid;
    }
    if (!options.pidfile && !options.manager) {
        throw UsageError("which server? give --pid, --pidfile, --cgroup or --unit (or --demo)");
    }
    const ManagerSelector selector =
        options.manager ? *options.manager
                        : ManagerSelector{ManagerSelector::Kind::pidfile, *options.pidfile};
    validate_selector(selector);
    if (selector.kind == ManagerSelector::Kind::pidfile) {
        (void)read_pidfile(selector.value, 1);  // a missing or malformed file: usage, exit 2
    }
    const ManagerLookup lookup = find_manager(selector, proc);
    if (!lookup.pid) {
        throw Error(lookup.problem);
    }
    return *lookup.pid;
}

int run_diagnose(const DiagnoseOptions& options, const Logger& log) {
    if (options.interval.count() <= 0) {
        throw UsageError("--interval must be greater than zero");
    }
    if (options.duration < options.interval) {
        throw UsageError("--duration must be at least one --interval");
    }
    const ProcFs proc;
    const pid_t given = options.demo ? 0 : resolve_manager(options, proc);
    const KernelFeatures features = require_usable_kernel();
    std::optional<DemoServer> demo;
    if (options.demo) {
        demo.emplace();
    }
    const pid_t manager = demo ? demo->manager() : given;
    if (!proc.stat(manager)) {
        throw Error("no process " + std::to_string(manager));
    }
    Observer observer({.cow = features.cow_source(options.fault_source), .record_cow_sites = true},
                      log);
    SignalGate signals;
    Watcher watcher(observer, proc, manager);
    const ProcessFacts facts(proc.root());
    WorkerRoles roles(options.workers ? *options.workers : parse_worker_rule("exe,listener"), facts,
                      manager);
    std::map<pid_t, RoleJudgement> judged;
    const auto judge_roles = [&] {
        const auto now = WorkerRoles::Clock::now();
        for (const auto& [pid, record] : watcher.children()) {
            if (!record.exited) {
                judged[pid] = roles.role(pid, record.start_ticks, now);
            }
        }
    };
    judge_roles();
    Progress progress;
    const double total = static_cast<double>(options.duration.count()) / 1000.0;
    bool manager_gone = false;
    while (watcher.elapsed_seconds() + 1e-3 < total) {
        const auto left = std::chrono::milliseconds(
            static_cast<long long>((total - watcher.elapsed_seconds()) * 1000));
        if (signals.wait_for(std::min(options.interval, left)) != 0) {
            break;
        }
        watcher.poll();
        judge_roles();
        progress.show(watcher.elapsed_seconds(), total, watcher.children().size());
        if (!watcher.manager_alive()) {
            manager_gone = true;
            break;
        }
    }
    progress.clear();
    if (signals.received() != 0) {
        log.warn("interrupted: reporting the " +
                 format_duration(std::chrono::milliseconds(
                     static_cast<long long>(watcher.elapsed_seconds() * 1000))) +
                 " watched");
    }
    if (manager_gone) {
        log.warn("manager " + std::to_string(manager) + " exited during the window");
    }
    watcher.refresh_ground_truth();

    ManagerSummary summary;
    summary.pid = manager;
    if (const auto stat = proc.stat(manager)) {
        summary.comm = stat->comm;
    }
    summary.smaps = proc.smaps_rollup(manager);
    Diagnosis diagnosis = diagnose_children(watcher.children(), summary, options.limit, {}, judged,
                                            watcher.displaced());
    diagnosis.window_seconds = watcher.elapsed_seconds();
    diagnosis.interval_seconds = static_cast<double>(options.interval.count()) / 1000.0;
    diagnosis.mode = cow_source_name(observer.cow_source());
    attribute_children_cow(diagnosis, observer.read_cow_sites(), observer.cow_sample_period(),
                           proc);
    // Full kernel maps: warned about on stderr as they were seen, and kept in the JSON.
    diagnosis.capacity_notices = watcher.take_capacity_notices();
    for (auto& notice : observer.take_capacity_notices()) {  // cow_sites, read just now
        diagnosis.capacity_notices.push_back(std::move(notice));
    }
    if (options.format == OutputFormat::json) {
        std::puts(to_json(diagnosis).dump(2).c_str());
    } else {
        std::fputs(render_table(diagnosis).c_str(), stdout);
    }
    return manager_gone ? 1 : 0;
}

}  // namespace kidreaper
