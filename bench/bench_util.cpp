#include "bench_util.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>

namespace krbench {

std::uint64_t clock_ns(clockid_t clock) {
    timespec now{};
    clock_gettime(clock, &now);
    return static_cast<std::uint64_t>(now.tv_sec) * 1'000'000'000ULL +
           static_cast<std::uint64_t>(now.tv_nsec);
}

void sleep_ns(std::uint64_t ns) {
    timespec request{static_cast<time_t>(ns / 1'000'000'000ULL),
                     static_cast<long>(ns % 1'000'000'000ULL)};
    while (nanosleep(&request, &request) != 0 && errno == EINTR) {
    }
}

double percentile(std::vector<double> values, double fraction) {
    if (values.empty()) {
        return 0;
    }
    std::sort(values.begin(), values.end());
    const double rank = std::ceil(fraction * static_cast<double>(values.size()));
    const auto index = static_cast<std::size_t>(std::clamp(rank, 1.0, double(values.size()))) - 1;
    return values[index];
}

double median(std::vector<double> values) {
    if (values.empty()) {
        return 0;
    }
    std::sort(values.begin(), values.end());
    const std::size_t n = values.size();
    return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

double max_of(const std::vector<double>& values) {
    return values.empty() ? 0 : *std::max_element(values.begin(), values.end());
}

double min_of(const std::vector<double>& values) {
    return values.empty() ? 0 : *std::min_element(values.begin(), values.end());
}

double mean(const std::vector<double>& values) {
    double sum = 0;
    for (double value : values) {
        sum += value;
    }
    return values.empty() ? 0 : sum / static_cast<double>(values.size());
}

Json summary(const std::vector<double>& values) {
    return Json{{"median", median(values)},
                {"mean", mean(values)},
                {"p10", percentile(values, 0.10)},
                {"p90", percentile(values, 0.90)},
                {"min", min_of(values)},
                {"max", max_of(values)},
                {"n", values.size()}};
}

Pipe::Pipe() {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
    }
    read_fd = fds[0];
    write_fd = fds[1];
}

Pipe::~Pipe() {
    close_read();
    close_write();
}

void Pipe::close_read() {
    if (read_fd >= 0) {
        close(read_fd);
        read_fd = -1;
    }
}

void Pipe::close_write() {
    if (write_fd >= 0) {
        close(write_fd);
        write_fd = -1;
    }
}

void write_all(int fd, const std::string& text) {
    std::size_t written = 0;
    while (written < text.size()) {
        const ssize_t n = write(fd, text.data() + written, text.size() - written);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return;
        }
        written += static_cast<std::size_t>(n);
    }
}

std::optional<std::string> LineReader::next(int timeout_ms) {
    timed_out_ = false;
    const std::uint64_t deadline = mono_ns() + static_cast<std::uint64_t>(timeout_ms) * 1'000'000;
    while (true) {
        if (const auto newline = buffer_.find('\n'); newline != std::string::npos) {
            std::string line = buffer_.substr(0, newline);
            buffer_.erase(0, newline + 1);
            return line;
        }
        const std::uint64_t now = mono_ns();
        if (now >= deadline) {
            timed_out_ = true;
            return std::nullopt;
        }
        pollfd ready{fd_, POLLIN, 0};
        const int left_ms = static_cast<int>((deadline - now + 999'999) / 1'000'000);
        const int polled = poll(&ready, 1, left_ms);
        if (polled < 0 && errno == EINTR) {
            continue;
        }
        if (polled <= 0) {
            continue;  // re-checks the deadline
        }
        char chunk[4096];
        const ssize_t n = read(fd_, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            if (!buffer_.empty()) {
                std::string line = std::move(buffer_);
                buffer_.clear();
                return line;
            }
            return std::nullopt;
        }
        buffer_.append(chunk, static_cast<std::size_t>(n));
    }
}

// Closes inherited BPF object fds (links, programs, maps) so that a forked helper does
// not keep the harness's programs attached after the harness released them.
static void close_bpf_fds() {
    std::vector<int> fds;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
        char target[64] = {};
        const std::string path = entry.path().string();
        if (readlink(path.c_str(), target, sizeof target - 1) > 0 &&
            std::strncmp(target, "anon_inode:bpf", 14) == 0) {
            fds.push_back(std::stoi(entry.path().filename().string()));
        }
    }
    for (int fd : fds) {
        close(fd);
    }
}

pid_t fork_process(const std::function<int()>& body) {
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
        throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(1);  // the harness died between fork and prctl
        }
        close_bpf_fds();
        int status = 1;
        try {
            status = body();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "kr-bench child %d: %s\n", getpid(), e.what());
        }
        _exit(status);
    }
    return pid;
}

pid_t spawn_program(const std::vector<std::string>& argv, int stdout_fd, bool merge_stderr,
                    int stdin_fd) {
    std::vector<char*> args;
    for (const auto& arg : argv) {
        args.push_back(const_cast<char*>(arg.c_str()));
    }
    args.push_back(nullptr);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
        throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(1);
        }
        if (stdin_fd >= 0) {
            dup2(stdin_fd, STDIN_FILENO);
        } else {
            const int null_fd = open("/dev/null", O_RDONLY);
            dup2(null_fd, STDIN_FILENO);
        }
        if (stdout_fd >= 0) {
            dup2(stdout_fd, STDOUT_FILENO);
            if (merge_stderr) {
                dup2(stdout_fd, STDERR_FILENO);
            }
        }
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        execv(args[0], args.data());
        std::fprintf(stderr, "kr-bench: cannot run %s: %s\n", args[0], std::strerror(errno));
        _exit(127);
    }
    return pid;
}

bool wait_exit(pid_t pid, int timeout_ms, int* status) {
    const std::uint64_t deadline = mono_ns() + static_cast<std::uint64_t>(timeout_ms) * 1'000'000;
    int local = 0;
    while (true) {
        const pid_t done = waitpid(pid, &local, WNOHANG);
        if (done == pid || (done < 0 && errno == ECHILD)) {
            if (status != nullptr) {
                *status = local;
            }
            return true;
        }
        if (mono_ns() >= deadline) {
            return false;
        }
        sleep_ns(2'000'000);
    }
}

void stop_process(pid_t pid, int signal, int timeout_ms) {
    if (pid <= 0) {
        return;
    }
    kill(pid, signal);
    if (!wait_exit(pid, timeout_ms)) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
    }
}

void wait_then_kill_children(int command_fd, const std::vector<pid_t>& kids) {
    char byte = 0;
    while (read(command_fd, &byte, 1) < 0 && errno == EINTR) {
    }
    for (pid_t kid : kids) {
        kill(kid, SIGKILL);
    }
    for (pid_t kid : kids) {
        while (waitpid(kid, nullptr, 0) < 0 && errno == EINTR) {
        }
    }
}

void pin_to_cpu(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(static_cast<std::size_t>(cpu), &set);
    sched_setaffinity(0, sizeof set, &set);
}

int online_cpus() {
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? static_cast<int>(n) : 1;
}

unsigned char* map_anonymous(std::uint64_t bytes) {
    void* address =
        mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (address == MAP_FAILED) {
        throw std::runtime_error(std::string("mmap: ") + std::strerror(errno));
    }
    madvise(address, bytes, MADV_NOHUGEPAGE);
    return static_cast<unsigned char*>(address);
}

void store_per_page(unsigned char* begin, std::uint64_t bytes, unsigned char value) {
    volatile unsigned char* page = begin;
    for (std::uint64_t offset = 0; offset < bytes; offset += kPage) {
        page[offset] = value;
    }
}

IdleManager::IdleManager(std::size_t children, std::uint64_t preload_bytes) {
    const std::uint64_t started = mono_ns();
    pid_ = fork_process([&]() {
        commands_.close_write();
        replies_.close_read();
        unsigned char* preload = nullptr;
        if (preload_bytes > 0) {
            preload = map_anonymous(preload_bytes);
            std::memset(preload, 0x5a, preload_bytes);
        }
        Pipe hold;  // children block reading it; only the manager has its write end
        std::vector<pid_t> kids;
        for (std::size_t i = 0; i < children; ++i) {
            const pid_t kid = fork_process([&]() {
                hold.close_write();
                prctl(PR_SET_NAME, "kr-bench-idle");
                char byte = 0;
                while (read(hold.read_fd, &byte, 1) < 0 && errno == EINTR) {
                }
                return 0;
            });
            kids.push_back(kid);
        }
        std::string line = "ready";
        for (pid_t kid : kids) {
            line += ' ';
            line += std::to_string(kid);
        }
        write_all(replies_.write_fd, line + "\n");
        wait_then_kill_children(commands_.read_fd, kids);
        return 0;
    });
    commands_.close_read();
    replies_.close_write();
    LineReader reader(replies_.read_fd);
    const auto line = reader.next(600'000);
    if (!line || !line->starts_with("ready")) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        throw std::runtime_error("the idle manager did not start");
    }
    std::istringstream words(line->substr(5));
    pid_t kid = 0;
    while (words >> kid) {
        children_.push_back(kid);
    }
    fork_seconds_ = static_cast<double>(mono_ns() - started) / 1e9;
}

IdleManager::~IdleManager() {
    commands_.close_write();  // end of input: the manager kills its children and exits
    if (!wait_exit(pid_, 120'000)) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
    }
}

std::string read_text(const std::string& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

Json machine_facts() {
    utsname names{};
    uname(&names);
    std::string cpu_model = "?";
    std::istringstream cpuinfo(read_text("/proc/cpuinfo"));
    for (std::string line; std::getline(cpuinfo, line);) {
        if (line.starts_with("model name")) {
            cpu_model = line.substr(line.find(':') + 2);
            break;
        }
    }
    std::string memory = "?";
    std::istringstream meminfo(read_text("/proc/meminfo"));
    for (std::string line; std::getline(meminfo, line);) {
        if (line.starts_with("MemTotal:")) {
            std::istringstream fields(line.substr(9));
            std::uint64_t kib = 0;
            fields >> kib;
            char text[32];
            std::snprintf(text, sizeof text, "%.1f GiB", static_cast<double>(kib) / 1048576.0);
            memory = text;
        }
    }
    std::string load = read_text("/proc/loadavg");
    if (!load.empty() && load.back() == '\n') {
        load.pop_back();
    }
    return Json{{"kernel", names.release},
                {"machine", names.machine},
                {"cpu_model", cpu_model},
                {"cpus", online_cpus()},
                {"memory", memory},
                {"loadavg", load},
                {"thp", read_text("/sys/kernel/mm/transparent_hugepage/enabled")}};
}

std::optional<std::string> Args::get(const std::string& name) const {
    for (std::size_t i = 0; i + 1 < items.size(); ++i) {
        if (items[i] == name) {
            return items[i + 1];
        }
    }
    return std::nullopt;
}

bool Args::flag(const std::string& name) const {
    return std::find(items.begin(), items.end(), name) != items.end();
}

std::string Args::get_or(const std::string& name, const std::string& fallback) const {
    return get(name).value_or(fallback);
}

long Args::get_long(const std::string& name, long fallback) const {
    const auto value = get(name);
    return value ? std::stol(*value) : fallback;
}

void emit(const Args& args, const Json& doc) {
    const std::string text = doc.dump(2) + "\n";
    if (const auto path = args.get("--out")) {
        std::ofstream out(*path);
        out << text;
        if (!out) {
            throw std::runtime_error("cannot write " + *path);
        }
    } else {
        std::cout << text;
    }
}

}  // namespace krbench
