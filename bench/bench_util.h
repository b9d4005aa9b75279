// Shared pieces of the benchmark harness (kr-bench): clocks, statistics, child processes
// that die with the harness, line-oriented pipes, and the idle pre-fork manager.
#pragma once

#include <sys/types.h>
#include <time.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace krbench {

using Json = nlohmann::ordered_json;

constexpr std::uint64_t kPage = 4096;

std::uint64_t clock_ns(clockid_t clock);
inline std::uint64_t mono_ns() {
    return clock_ns(CLOCK_MONOTONIC);
}
inline std::uint64_t thread_cpu_ns() {
    return clock_ns(CLOCK_THREAD_CPUTIME_ID);
}
void sleep_ns(std::uint64_t ns);

// Statistics over a copy (the input is not reordered). Empty input gives 0.
double median(std::vector<double> values);
double percentile(std::vector<double> values, double fraction);  // nearest-rank, 0..1
double max_of(const std::vector<double>& values);
double mean(const std::vector<double>& values);
double min_of(const std::vector<double>& values);
// {"median":..,"mean":..,"p10":..,"p90":..,"min":..,"max":..,"n":..}
Json summary(const std::vector<double>& values);

// A pipe whose ends are closed on destruction. Both ends are O_CLOEXEC.
struct Pipe {
    int read_fd = -1;
    int write_fd = -1;
    Pipe();
    ~Pipe();
    Pipe(const Pipe&) = delete;
    Pipe& operator=(const Pipe&) = delete;
    void close_read();
    void close_write();
};

void write_all(int fd, const std::string& text);

// Reads lines from a file descriptor with a deadline.
class LineReader {
public:
    explicit LineReader(int fd) : fd_(fd) {}
    // The next line, without its newline; nullopt on end of file or when `timeout_ms`
    // passed (timed_out() tells which).
    std::optional<std::string> next(int timeout_ms);
    bool timed_out() const { return timed_out_; }
    int fd() const { return fd_; }

private:
    int fd_;
    std::string buffer_;
    bool timed_out_ = false;
};

// Forks a process that runs `body` and _exits with its return value. The child dies
// with the harness (PR_SET_PDEATHSIG SIGKILL) and closes nothing but what `body` does.
pid_t fork_process(const std::function<int()>& body);
// Forks and execs argv[0] with stdout (and stderr when `merge_stderr`) on `stdout_fd`
// (-1 keeps the harness's). The program dies with the harness (SIGKILL).
pid_t spawn_program(const std::vector<std::string>& argv, int stdout_fd, bool merge_stderr,
                    int stdin_fd = -1);
// Waits for `pid` up to `timeout_ms`; true and the status when it exited.
bool wait_exit(pid_t pid, int timeout_ms, int* status = nullptr);
// Sends `signal`, waits up to `timeout_ms`, then SIGKILLs and waits.
void stop_process(pid_t pid, int signal, int timeout_ms);

// In a manager process: blocks until a byte (or end of input) arrives on `command_fd`,
// then kills and reaps `kids`.
void wait_then_kill_children(int command_fd, const std::vector<pid_t>& kids);

// Pins the calling thread to one CPU (ignored when that fails).
void pin_to_cpu(int cpu);
int online_cpus();

// A pre-fork manager whose `children` children idle in read() on a pipe, holding
// `preload_bytes` of anonymous memory written by the manager before forking (inherited,
// shared, 4 KiB pages). Destruction kills the children and waits until they are gone.
class IdleManager {
public:
    IdleManager(std::size_t children, std::uint64_t preload_bytes);
    ~IdleManager();
    IdleManager(const IdleManager&) = delete;
    IdleManager& operator=(const IdleManager&) = delete;

    pid_t pid() const { return pid_; }
    const std::vector<pid_t>& children() const { return children_; }
    double fork_seconds() const { return fork_seconds_; }

private:
    pid_t pid_ = -1;
    std::vector<pid_t> children_;
    double fork_seconds_ = 0;
    Pipe commands_;
    Pipe replies_;
};

// Anonymous memory in 4 KiB pages (MADV_NOHUGEPAGE), not yet touched.
unsigned char* map_anonymous(std::uint64_t bytes);
// One plain store per 4 KiB page (no read-modify-write: a read first would fault twice).
void store_per_page(unsigned char* begin, std::uint64_t bytes, unsigned char value);

// Text of a small file; empty when unreadable.
std::string read_text(const std::string& path);
// Machine facts for the report: kernel, CPU model, CPUs, memory, load average.
Json machine_facts();

// Options of the form --name value; all keys are known to the caller.
struct Args {
    std::vector<std::string> items;
    std::optional<std::string> get(const std::string& name) const;
    bool flag(const std::string& name) const;
    std::string get_or(const std::string& name, const std::string& fallback) const;
    long get_long(const std::string& name, long fallback) const;
};

int run_faults(const Args& args);
int run_poll(const Args& args);
int run_reaction(const Args& args);
int run_footprint(const Args& args);
int run_host(const Args& args);

// Writes `doc` to the --out file (or stdout), pretty-printed.
void emit(const Args& args, const Json& doc);

}  // namespace krbench
