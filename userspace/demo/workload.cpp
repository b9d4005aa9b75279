#include "demo/workload.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <list>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include "common/error.h"
#include "common/units.h"
#include "observe/procfs.h"

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21  // Linux 5.4
#endif

namespace kidreaper {

namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;

constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t kStep = 1ULL << 20;  // work is done in 1 MiB steps
constexpr std::uint64_t kHugePage = 2ULL << 20;
constexpr int kDefaultRounds = 8;
constexpr int kMaxRounds = 1'000'000;
constexpr milliseconds kRequestCpu{2};     // burst: busy CPU per 1 MiB step
constexpr milliseconds kWarmupTick{20};    // warmup: after growing, every tick ...
constexpr milliseconds kWarmupTickCpu{5};  // ... this much busy CPU
constexpr int kWarmupGrowthPercent = 15;   // warmup: grows during this share of its run

std::uint64_t round_to_pages(std::uint64_t bytes) {
    return (bytes + kPage - 1) / kPage * kPage;
}

std::uint64_t steps_for(std::uint64_t bytes) {
    return std::max<std::uint64_t>(1, (bytes + kStep - 1) / kStep);
}

// How a warmup: child spends its run: growing, then this many ticks of work.
struct WarmupPlan {
    milliseconds growth_time{0};
    std::int64_t ticks = 0;
};

WarmupPlan warmup_plan(milliseconds run) {
    WarmupPlan plan;
    plan.growth_time = run * kWarmupGrowthPercent / 100;
    plan.ticks = (run - plan.growth_time) / kWarmupTick;
    return plan;
}

// Owns a file descriptor; closes it on destruction.
class UniqueFd {
public:
    explicit UniqueFd(int fd) : fd_(fd) {}
    ~UniqueFd() {
        if (fd_ >= 0) {
            close(fd_);
        }
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;

    int get() const { return fd_; }

private:
    int fd_;
};

void* map_or_throw(std::uint64_t bytes, int flags, int fd) {
    void* address = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, flags, fd, 0);
    if (address == MAP_FAILED) {
        throw Error(errno_message("mmap", errno));
    }
    return address;
}

// Writes `bytes` of data (not a hole) to `fd`.
void fill_file(int fd, std::uint64_t bytes) {
    const std::vector<unsigned char> chunk(kStep, 0xa5);
    std::uint64_t written = 0;
    while (written < bytes) {
        const std::size_t want = static_cast<std::size_t>(std::min(kStep, bytes - written));
        const ssize_t n = write(fd, chunk.data(), want);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            throw Error(errno_message("write to the fixture's file", n < 0 ? errno : ENOSPC));
        }
        written += static_cast<std::uint64_t>(n);
    }
}

// A memory mapping, unmapped at destruction. Empty when default-constructed.
class Mapping {
public:
    Mapping() = default;
    Mapping(void* data, std::uint64_t bytes)
        : bytes_(bytes), data_(static_cast<unsigned char*>(data)) {}
    ~Mapping() {
        if (data_ != nullptr) {
            munmap(data_, bytes_);
        }
    }
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    Mapping(Mapping&& other) noexcept
        : bytes_(std::exchange(other.bytes_, 0)), data_(std::exchange(other.data_, nullptr)) {}
    Mapping& operator=(Mapping&& other) noexcept {
        std::swap(bytes_, other.bytes_);
        std::swap(data_, other.data_);
        return *this;
    }

    // Fresh private anonymous memory in 4 KiB pages: the counts stay exact whatever the
    // THP setting. Empty for 0 bytes.
    static Mapping anonymous(std::uint64_t bytes) {
        if (bytes == 0) {
            return {};
        }
        Mapping mapping(map_or_throw(bytes, MAP_PRIVATE | MAP_ANONYMOUS, -1), bytes);
        madvise(mapping.data(), bytes, MADV_NOHUGEPAGE);
        return mapping;
    }

    // `bytes` (a multiple of 2 MiB) of anonymous memory aligned to 2 MiB and advised
    // MADV_HUGEPAGE, so that faults can map transparent huge pages.
    static Mapping huge(std::uint64_t bytes) {
        const std::uint64_t padded = bytes + kHugePage;
        auto* raw =
            static_cast<unsigned char*>(map_or_throw(padded, MAP_PRIVATE | MAP_ANONYMOUS, -1));
        const auto address = reinterpret_cast<std::uintptr_t>(raw);
        const std::uint64_t head = ((address + kHugePage - 1) & ~(kHugePage - 1)) - address;
        const std::uint64_t tail = padded - head - bytes;
        if (head > 0) {
            munmap(raw, head);
        }
        if (tail > 0) {
            munmap(raw + head + bytes, tail);
        }
        Mapping mapping(raw + head, bytes);
        if (madvise(mapping.data(), bytes, MADV_HUGEPAGE) != 0) {
            throw Error(errno_message("madvise(MADV_HUGEPAGE)", errno));
        }
        return mapping;
    }

    // A new file of `bytes` in `dir`, filled with data, mapped read-write with `flags`
    // (MAP_SHARED or MAP_PRIVATE) and unlinked right after: the mapping keeps it alive.
    static Mapping file(const std::string& dir, std::uint64_t bytes, int flags) {
        std::string path = dir + "/kr-fixture-XXXXXX";
        const UniqueFd fd(mkostemp(path.data(), O_CLOEXEC));
        if (fd.get() < 0) {
            throw Error(errno_message("cannot create a file in " + dir, errno));
        }
        struct Unlink {
            const std::string& path;
            ~Unlink() { unlink(path.c_str()); }
        } unlink_at_exit{path};
        fill_file(fd.get(), bytes);
        return Mapping(map_or_throw(bytes, flags, fd.get()), bytes);
    }

    unsigned char* data() const { return data_; }
    std::uint64_t size() const { return bytes_; }

private:
    std::uint64_t bytes_ = 0;
    unsigned char* data_ = nullptr;
};

void write_all(int fd, const std::string& text) {
    std::size_t written = 0;
    while (written < text.size()) {
        ssize_t n = write(fd, text.data() + written, text.size() - written);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return;
        }
        written += static_cast<std::size_t>(n);
    }
}

// Blocks until a command byte arrives; 'x' on end of input (then *ended is set, when
// given). Waits in poll(), as a server's idle worker does, so that kidreaper's idle
// detection sees it idle.
char read_command(int fd, bool* ended = nullptr) {
    char command = 'x';
    while (true) {
        pollfd ready{fd, POLLIN, 0};
        if (poll(&ready, 1, -1) < 0 && errno == EINTR) {
            continue;
        }
        ssize_t n = read(fd, &command, 1);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n != 1 && ended != nullptr) {
            *ended = true;
        }
        return n == 1 ? command : 'x';
    }
}

// An orphan that outlives its manager: idles in poll() until killed.
[[noreturn]] void idle_until_killed() {
    while (true) {
        poll(nullptr, 0, -1);
    }
}

// Idles in poll() on the command pipe for `duration`, as an idle worker waits for work.
// False when told to exit ('x' or end of input) meanwhile.
bool idle_for(int fd, milliseconds duration) {
    const auto end = std::chrono::steady_clock::now() + duration;
    while (true) {
        const auto left = std::chrono::ceil<milliseconds>(end - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            return true;
        }
        pollfd ready{fd, POLLIN, 0};
        const int n = poll(&ready, 1, static_cast<int>(std::min<std::int64_t>(left.count(), 1000)));
        if (n > 0 && read_command(fd) == 'x') {
            return false;
        }
    }
}

// One plain store per page. Not a read-modify-write: under emulation (qemu TCG) that
// faults twice, a read then a write on a present page, and would pass for COW. `round`
// varies the bytes written from one round to the next.
void touch_pages(unsigned char* begin, std::uint64_t bytes, int round = 0) {
    for (std::uint64_t offset = 0; offset < bytes; offset += kPage) {
        begin[offset] =
            static_cast<unsigned char>(offset / kPage + 1 + static_cast<unsigned>(round));
    }
}

// One load per page (maps the zero page in fresh anon memory, the page cache in a file).
void read_pages(const unsigned char* begin, std::uint64_t bytes) {
    const volatile unsigned char* pages = begin;
    unsigned sum = 0;
    for (std::uint64_t offset = 0; offset < bytes; offset += kPage) {
        sum += pages[offset];
    }
    volatile unsigned sink = sum;
    static_cast<void>(sink);
}

nanoseconds thread_cpu_time() {
    timespec now{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return std::chrono::seconds(now.tv_sec) + nanoseconds(now.tv_nsec);
}

// Spends `cpu` of this thread's CPU time computing in user space (real work, not a sleep).
void burn_cpu(nanoseconds cpu) {
    if (cpu.count() <= 0) {
        return;
    }
    const nanoseconds end = thread_cpu_time() + cpu;
    std::uint64_t state = 0x9e3779b97f4a7c15ULL;
    volatile std::uint64_t sink = 0;
    while (thread_cpu_time() < end) {
        for (int i = 0; i < 4096; ++i) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
        }
        sink = state;
    }
    static_cast<void>(sink);
}

// Shares a script's pauses (its spread) and busy CPU (its +WORK) out evenly over its steps.
class Pacer {
public:
    Pacer(std::uint64_t steps, milliseconds spread, milliseconds work)
        : pause_(nanoseconds(spread) / static_cast<std::int64_t>(steps)),
          cpu_(nanoseconds(work) / static_cast<std::int64_t>(steps)) {}

    // After a step: its share of the CPU (plus `extra_cpu`), then of the pauses.
    void step_done(nanoseconds extra_cpu = nanoseconds(0)) const {
        burn_cpu(cpu_ + extra_cpu);
        if (pause_.count() > 0) {
            std::this_thread::sleep_for(pause_);
        }
    }

private:
    nanoseconds pause_;
    nanoseconds cpu_;
};

// Fresh memory allocated and written 1 MiB at a time, kept until the child exits.
class Leak {
public:
    explicit Leak(std::uint64_t bytes) : bytes_(bytes) {}

    std::uint64_t steps() const { return steps_for(bytes_); }
    // Allocates and writes the next MiB (nothing once all is done).
    void step() {
        const std::uint64_t now = std::min(kStep, bytes_ - done_);
        if (now > 0) {
            kept_.push_back(Mapping::anonymous(now));
            touch_pages(kept_.back().data(), now);
            done_ += now;
        }
    }
    // Asks the kernel to swap all of it out (a no-op without swap). Before Linux 5.4 it
    // cannot: says so on stderr and keeps it resident (the growth is the same).
    void page_out() const {
        for (const auto& mapping : kept_) {
            if (madvise(mapping.data(), mapping.size(), MADV_PAGEOUT) != 0) {
                const std::string message = errno_message("madvise(MADV_PAGEOUT)", errno);
                std::fprintf(stderr, "kr-fixture: %s (Linux 5.4+); not swapped out\n",
                             message.c_str());
                return;
            }
        }
    }
    std::vector<Mapping> take() { return std::move(kept_); }

private:
    std::uint64_t bytes_;
    std::uint64_t done_ = 0;
    std::vector<Mapping> kept_;
};

// Writes `region` (inherited or the child's own) 1 MiB per step.
void write_in_steps(const Mapping& region, const Pacer& pacer) {
    for (std::uint64_t done = 0; done < region.size(); done += kStep) {
        touch_pages(region.data() + done, std::min(kStep, region.size() - done));
        pacer.step_done();
    }
}

// What a child's script allocates and keeps until the child exits.
using Kept = std::vector<Mapping>;

Kept run_plain(const ChildScript& script, const Mapping& preload) {
    const std::uint64_t cow = std::min(script.cow_bytes, preload.size());
    Leak leak(script.leak_bytes);
    const std::uint64_t steps = std::max(steps_for(cow), leak.steps());
    const Pacer pacer(steps, script.spread, script.work);
    std::uint64_t cow_done = 0;
    for (std::uint64_t step = 0; step < steps; ++step) {
        const std::uint64_t cow_now = std::min(kStep, cow - cow_done);
        touch_pages(preload.data() + cow_done, cow_now);
        cow_done += cow_now;
        leak.step();
        pacer.step_done();
    }
    return leak.take();
}

void run_shared(const ChildScript& script, const Mapping& region) {
    const Pacer pacer(static_cast<std::uint64_t>(script.rounds), script.spread, script.work);
    for (int round = 0; round < script.rounds; ++round) {
        touch_pages(region.data(), region.size(), round);
        if (msync(region.data(), region.size(), MS_SYNC) != 0) {
            throw Error(errno_message("msync", errno));
        }
        pacer.step_done();
    }
}

Kept run_zero(const ChildScript& script) {
    Kept kept;
    kept.push_back(Mapping::anonymous(script.region_bytes));
    const Mapping& fresh = kept.back();
    const Pacer pacer(steps_for(fresh.size()), script.spread, script.work);
    for (std::uint64_t done = 0; done < fresh.size(); done += kStep) {
        const std::uint64_t now = std::min(kStep, fresh.size() - done);
        read_pages(fresh.data() + done, now);
        touch_pages(fresh.data() + done, now);
        pacer.step_done();
    }
    return kept;
}

Kept run_mprotect(const ChildScript& script) {
    Kept kept;
    kept.push_back(Mapping::anonymous(script.region_bytes));
    const Mapping& fresh = kept.back();
    const Pacer pacer(static_cast<std::uint64_t>(script.rounds) + 1, script.spread, script.work);
    touch_pages(fresh.data(), fresh.size());
    pacer.step_done();
    for (int round = 1; round <= script.rounds; ++round) {
        if (mprotect(fresh.data(), fresh.size(), PROT_READ) != 0 ||
            mprotect(fresh.data(), fresh.size(), PROT_READ | PROT_WRITE) != 0) {
            throw Error(errno_message("mprotect", errno));
        }
        touch_pages(fresh.data(), fresh.size(), round);
        pacer.step_done();
    }
    return kept;
}

Kept run_warmup(const ChildScript& script) {
    const WarmupPlan plan = warmup_plan(script.spread);
    Leak leak(script.leak_bytes);
    const Pacer pacer(leak.steps(), plan.growth_time, script.work);
    for (std::uint64_t step = 0; step < leak.steps(); ++step) {
        leak.step();
        pacer.step_done();
    }
    auto tick = std::chrono::steady_clock::now();
    for (std::int64_t i = 0; i < plan.ticks; ++i) {
        burn_cpu(kWarmupTickCpu);
        tick += kWarmupTick;
        std::this_thread::sleep_until(tick);
    }
    return leak.take();
}

Kept run_burst(const ChildScript& script) {
    Leak leak(script.leak_bytes);
    const Pacer pacer(leak.steps(), milliseconds(0), script.work);
    for (std::uint64_t step = 0; step < leak.steps(); ++step) {
        leak.step();
        pacer.step_done(kRequestCpu);
    }
    return leak.take();
}

Kept run_swapleak(const ChildScript& script) {
    Leak leak(script.leak_bytes);
    const Pacer pacer(leak.steps(), script.spread, script.work);
    for (std::uint64_t step = 0; step < leak.steps(); ++step) {
        leak.step();
        pacer.step_done();
    }
    leak.page_out();
    return leak.take();
}

// Runs `script` in the child; `region` is the one the manager made for it (if any).
Kept run_script(const ChildScript& script, const Mapping& preload, const Mapping& region) {
    switch (script.kind) {
        case ChildKind::plain:
            return run_plain(script, preload);
        case ChildKind::shared:
            run_shared(script, region);
            return {};
        case ChildKind::zero:
            return run_zero(script);
        case ChildKind::mprotect:
            return run_mprotect(script);
        case ChildKind::file:
        case ChildKind::thp:
        case ChildKind::heapzero:
            write_in_steps(region, Pacer(steps_for(region.size()), script.spread, script.work));
            return {};
        case ChildKind::warmup:
            return run_warmup(script);
        case ChildKind::burst:
            return run_burst(script);
        case ChildKind::swapleak:
            return run_swapleak(script);
    }
    return {};
}

// The inherited region a child's script needs, made by the manager before forking:
// empty for the kinds that need none.
Mapping make_region(const ChildScript& script, const std::string& file_dir) {
    switch (script.kind) {
        case ChildKind::shared:
        case ChildKind::file: {
            Mapping mapping =
                Mapping::file(file_dir, script.region_bytes,
                              script.kind == ChildKind::shared ? MAP_SHARED : MAP_PRIVATE);
            read_pages(mapping.data(), mapping.size());
            return mapping;
        }
        case ChildKind::heapzero: {
            Mapping mapping = Mapping::anonymous(script.region_bytes);
            mapping.data()[0] = 1;  // the memory gets its anon_vma, which fork shares
            read_pages(mapping.data() + kPage, mapping.size() - kPage);
            return mapping;
        }
        case ChildKind::thp: {
            Mapping mapping = Mapping::huge(script.region_bytes);
            std::memset(mapping.data(), 0x5a, mapping.size());
            return mapping;
        }
        default:
            return {};
    }
}

// Sets every catchable signal to SIG_IGN (the C library's own ones refuse, harmlessly).
void ignore_every_signal() {
    for (int signal_number = 1; signal_number < NSIG; ++signal_number) {
        if (signal_number != SIGKILL && signal_number != SIGSTOP) {
            signal(signal_number, SIG_IGN);
        }
    }
}

// The child's life after fork: wait for 'g', run the script, report, wait for 'x'.
[[noreturn]] void child_main(const ChildScript& script, const Mapping& preload,
                             const Mapping& region, int command_fd, int done_fd, bool start_at_once,
                             int ignored_signal, bool die_with_manager) {
    if (die_with_manager) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
    }
    if (!script.exec_command.empty()) {
        execl("/bin/sh", "sh", "-c", script.exec_command.c_str(), static_cast<char*>(nullptr));
        _exit(127);
    }
    if (ignored_signal != 0) {
        signal(ignored_signal, SIG_IGN);
    }
    if (script.ignore_all_signals) {
        ignore_every_signal();
    }
    const std::string title = ("kr-" + script.name).substr(0, 15);
    prctl(PR_SET_NAME, title.c_str());
    // End of input: the manager has gone. Its children go too, unless they outlive it.
    bool manager_gone = false;
    const auto leave = [&manager_gone, die_with_manager] {
        if (manager_gone && !die_with_manager) {
            idle_until_killed();
        }
        _exit(0);
    };
    if (!start_at_once && read_command(command_fd, &manager_gone) != 'g') {
        leave();
    }
    try {
        const Kept kept = run_script(script, preload, region);
        if (script.idle.count() > 0 && !idle_for(command_fd, script.idle)) {
            _exit(0);
        }
        write_all(done_fd, std::to_string(getpid()) + "\n");
        while (read_command(command_fd, &manager_gone) != 'x') {
        }
        leave();  // here, not after the block: a leak keeps what it leaked until the end
    } catch (const std::exception& e) {
        std::fprintf(stderr, "kr-fixture: child %s: %s\n", script.name.c_str(), e.what());
        _exit(1);
    }
    _exit(0);
}

// A churn child (ChurnSpec): sleeps out its lifetime, idle in poll(), and exits.
[[noreturn]] void churn_child_main(milliseconds lifetime, bool die_with_manager) {
    if (die_with_manager) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
    }
    prctl(PR_SET_NAME, "kr-churn");
    const auto end = std::chrono::steady_clock::now() + lifetime;
    while (true) {
        const auto left = std::chrono::ceil<milliseconds>(end - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            _exit(0);
        }
        poll(nullptr, 0, static_cast<int>(std::min<std::int64_t>(left.count(), 1000)));
    }
}

struct RunningChild {
    pid_t pid = 0;
    const ChildScript* script = nullptr;
    int command_fd = -1;  // manager's end of the child's command pipe
};

std::string resolve_file_dir(const std::string& file_dir) {
    if (!file_dir.empty()) {
        return file_dir;
    }
    const char* tmpdir = std::getenv("TMPDIR");
    return tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp";
}

class Manager {
public:
    Manager(const WorkloadSpec& spec, int out_fd)
        : spec_(spec), out_fd_(out_fd), preload_(Mapping::anonymous(spec.preload_bytes)) {
        if (preload_.size() > 0) {
            std::memset(preload_.data(), 0x5a, preload_.size());
        }
        const std::string file_dir = resolve_file_dir(spec.file_dir);
        for (const auto& script : spec_.children) {
            regions_.push_back(make_region(script, file_dir));
        }
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) != 0) {
            throw Error(errno_message("pipe", errno));
        }
        done_read_ = fds[0];
        done_write_ = fds[1];
    }
    ~Manager() {
        for (auto& child : children_) {
            stop(child);
        }
        for (const pid_t pid : churn_children_) {
            kill(pid, SIGKILL);  // churn children take no commands
            while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
            }
        }
        close(done_read_);
        close(done_write_);
    }
    Manager(const Manager&) = delete;
    Manager& operator=(const Manager&) = delete;

    // Forks the children that start with the manager.
    void fork_initial() {
        for (std::size_t i = 0; i < spec_.children.size(); ++i) {
            if (!spec_.children[i].late) {
                fork_child(spec_.children[i], regions_[i]);
            }
        }
        const ChurnSpec& churn = spec_.churn;
        for (unsigned i = 0; churn.forks_per_second > 0 && i < churn.children; ++i) {
            fork_churn_child(churn_lifetime() * (i + 1) / churn.children);
        }
    }

    void go() {
        for (auto& child : children_) {
            write_all(child.command_fd, "g");
        }
        for (std::size_t i = 0; i < spec_.children.size(); ++i) {
            if (spec_.children[i].late) {
                fork_child(spec_.children[i], regions_[i]);
            }
        }
        say("started");
    }

    void exit_child(const std::string& name) {
        for (auto it = children_.begin(); it != children_.end(); ++it) {
            if (it->script->name == name) {
                stop(*it);
                say("exited " + std::to_string(it->pid) + " " + name);
                children_.erase(it);
                return;
            }
        }
        say("error no child " + name);
    }

    void report_done() {
        char buffer[256];
        ssize_t n = read(done_read_, buffer, sizeof(buffer) - 1);
        if (n <= 0) {
            return;
        }
        pending_ += std::string(buffer, static_cast<std::size_t>(n));
        std::size_t newline;
        while ((newline = pending_.find('\n')) != std::string::npos) {
            const pid_t pid = std::stoi(pending_.substr(0, newline));
            pending_.erase(0, newline + 1);
            for (const auto& child : children_) {
                if (child.pid == pid) {
                    say("done " + std::to_string(pid) + " " + child.script->name);
                }
            }
        }
    }

    // Reaps children that exited unasked (e.g. signalled by kidreaper); with respawn,
    // forks an idle replacement for each, as a pre-fork manager does.
    void reap_exited() {
        int status = 0;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            if (churn_children_.erase(pid) != 0) {
                say("exited " + std::to_string(pid) + " churn");
                fork_churn_child(churn_lifetime());
                continue;
            }
            auto it = std::find_if(children_.begin(), children_.end(),
                                   [pid](const auto& child) { return child.pid == pid; });
            if (it == children_.end()) {
                continue;
            }
            const std::string name = it->script->name;
            close(it->command_fd);
            children_.erase(it);
            say("exited " + std::to_string(pid) + " " + name);
            if (spec_.respawn) {
                fork_child(respawn_script_, no_region_);
                say("respawned " + std::to_string(pid) + " " +
                    std::to_string(children_.back().pid));
            }
        }
    }

    // "fork PID SCRIPT": a child running SCRIPT at once, with the pid PID (fork_at_pid).
    void fork_child_at(const std::string& arguments) {
        try {
            const auto space = arguments.find(' ');
            const pid_t wanted = std::stoi(arguments.substr(0, space));
            ChildScript script =
                parse_child_script(space == std::string::npos ? "" : arguments.substr(space + 1));
            if (script.region_bytes != 0 || !script.exec_command.empty()) {
                throw UsageError("a forked child cannot have a region or exec");
            }
            script.late = true;  // starts at once
            fork_child(forked_scripts_.emplace_back(std::move(script)), no_region_, wanted);
        } catch (const std::exception& e) {
            say("error fork " + arguments + ": " + e.what());
        }
    }

    void say(const std::string& line) { write_all(out_fd_, line + "\n"); }
    int done_fd() const { return done_read_; }

private:
    // wanted_pid: fork with that pid (fork_at_pid); 0: any.
    void fork_child(const ChildScript& script, const Mapping& region, pid_t wanted_pid = 0) {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) != 0) {
            throw Error(errno_message("pipe", errno));
        }
        pid_t pid = wanted_pid > 0 ? fork_at_pid(wanted_pid) : fork();
        if (pid < 0) {
            throw Error(errno_message("fork", errno));
        }
        if (pid == 0) {
            close(fds[1]);
            child_main(script, preload_, region, fds[0], done_write_,
                       spec_.start_at_once || script.late, spec_.children_ignore,
                       !spec_.orphans_survive);
        }
        close(fds[0]);
        children_.push_back({pid, &script, fds[1]});
        say("child " + std::to_string(pid) + " " + script.name);
    }

    // A churn child's lifetime once the churn runs: children / forks_per_second.
    milliseconds churn_lifetime() const {
        return milliseconds(1000) * spec_.churn.children / spec_.churn.forks_per_second;
    }

    // Forks a churn child that lives `lifetime`; says "child PID churn START".
    void fork_churn_child(milliseconds lifetime) {
        const pid_t pid = fork();
        if (pid < 0) {
            throw Error(errno_message("fork", errno));
        }
        if (pid == 0) {
            churn_child_main(lifetime, !spec_.orphans_survive);
        }
        churn_children_.insert(pid);
        // Not reaped yet, so its stat is there: the start time is its identity.
        const auto stat = ProcFs().stat(pid);
        say("child " + std::to_string(pid) + " churn " +
            std::to_string(stat ? stat->start_ticks : 0));
    }

    static void stop(RunningChild& child) {
        if (child.command_fd >= 0) {
            write_all(child.command_fd, "x");
            close(child.command_fd);
            child.command_fd = -1;
        }
        while (waitpid(child.pid, nullptr, 0) < 0 && errno == EINTR) {
        }
    }

    const WorkloadSpec& spec_;
    const ChildScript respawn_script_{.name = "respawned", .late = true};
    int out_fd_;
    Mapping preload_;
    std::vector<Mapping> regions_;  // per script in spec_.children, made before forking
    const Mapping no_region_;
    int done_read_ = -1;
    int done_write_ = -1;
    std::vector<RunningChild> children_;
    std::set<pid_t> churn_children_;         // live (unreaped) churn children
    std::list<ChildScript> forked_scripts_;  // scripts of "fork" commands (stable addresses)
    std::string pending_;
};

std::optional<std::string> read_line(int fd, std::string& buffer) {
    while (true) {
        if (auto newline = buffer.find('\n'); newline != std::string::npos) {
            std::string line = buffer.substr(0, newline);
            buffer.erase(0, newline + 1);
            return line;
        }
        char chunk[256];
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return std::nullopt;
        }
        buffer.append(chunk, static_cast<std::size_t>(n));
        if (buffer.find('\n') == std::string::npos) {
            return std::string();  // partial line: let the caller poll again
        }
    }
}

constexpr const char* kScriptSyntax =
    "expected [NAME=][late:][ignore-signals:]KIND[@DURATION][+WORK], KIND one of idle, "
    "cow:SIZE, leak:SIZE, mixed:SIZE:SIZE, shared:SIZE[xROUNDS], zero:SIZE, "
    "mprotect:SIZE[xROUNDS], file:SIZE, thp:SIZE, warmup:SIZE@DURATION, burst:SIZE[@IDLE], "
    "swapleak:SIZE";

// The trap kinds by name, and whether they take "xROUNDS".
struct KindName {
    std::string_view name;
    ChildKind kind;
    bool rounds;
};
constexpr KindName kTrapKinds[] = {
    {"shared", ChildKind::shared, true},      {"zero", ChildKind::zero, false},
    {"mprotect", ChildKind::mprotect, true},  {"file", ChildKind::file, false},
    {"thp", ChildKind::thp, false},           {"warmup", ChildKind::warmup, false},
    {"heapzero", ChildKind::heapzero, false}, {"burst", ChildKind::burst, false},
    {"swapleak", ChildKind::swapleak, false},
};

}  // namespace

ChildScript parse_child_script(std::string_view text) {
    const std::string original(text);
    auto fail = [&original](const std::string& why) -> UsageError {
        return UsageError("invalid child script \"" + original + "\": " + why + "; " +
                          kScriptSyntax);
    };
    // parse_size and parse_duration name the bad part; this names the script too.
    auto size_of = [&fail](std::string_view part) {
        try {
            return parse_size(part);
        } catch (const UsageError& e) {
            throw fail(e.what());
        }
    };
    auto duration_of = [&fail](std::string_view part) {
        try {
            return parse_duration(part);
        } catch (const UsageError& e) {
            throw fail(e.what());
        }
    };
    ChildScript script;
    std::string explicit_name;
    if (auto equals = text.find('='); equals != std::string_view::npos) {
        explicit_name = std::string(text.substr(0, equals));
        text.remove_prefix(equals + 1);
        if (explicit_name.empty()) {
            throw fail("empty name");
        }
    }
    if (text.starts_with("exec:")) {
        script.exec_command = std::string(text.substr(5));
        script.name = explicit_name.empty() ? "exec" : explicit_name;
        if (script.exec_command.empty()) {
            throw fail("exec: needs a command");
        }
        return script;
    }
    if (text.starts_with("late:")) {
        script.late = true;
        text.remove_prefix(5);
    }
    if (constexpr std::string_view ignoring = "ignore-signals:"; text.starts_with(ignoring)) {
        script.ignore_all_signals = true;
        text.remove_prefix(ignoring.size());
    }
    if (auto plus = text.find('+'); plus != std::string_view::npos) {
        if (plus + 1 == text.size()) {
            throw fail("\"+\" without a duration of work");
        }
        script.work = duration_of(text.substr(plus + 1));
        text = text.substr(0, plus);
    }
    std::optional<milliseconds> duration;
    if (auto at = text.find('@'); at != std::string_view::npos) {
        duration = duration_of(text.substr(at + 1));
        text = text.substr(0, at);
    }
    std::vector<std::string_view> parts;
    while (true) {
        auto colon = text.find(':');
        parts.push_back(text.substr(0, colon));
        if (colon == std::string_view::npos) {
            break;
        }
        text.remove_prefix(colon + 1);
    }
    const std::string_view kind = parts[0];
    script.name =
        explicit_name.empty() ? (script.late ? "late-" : "") + std::string(kind) : explicit_name;
    script.spread = duration.value_or(milliseconds(0));
    if (kind == "idle" && parts.size() == 1) {
        return script;
    }
    if (kind == "cow" && parts.size() == 2) {
        script.cow_bytes = size_of(parts[1]);
        return script;
    }
    if (kind == "leak" && parts.size() == 2) {
        script.leak_bytes = size_of(parts[1]);
        return script;
    }
    if (kind == "mixed" && parts.size() == 3) {
        script.cow_bytes = size_of(parts[1]);
        script.leak_bytes = size_of(parts[2]);
        return script;
    }
    const auto* known = std::find_if(std::begin(kTrapKinds), std::end(kTrapKinds),
                                     [kind](const KindName& k) { return k.name == kind; });
    if (known == std::end(kTrapKinds)) {
        throw fail(parts.size() == 1 && kind.empty() ? "no kind" : "unknown kind or arguments");
    }
    if (parts.size() != 2) {
        throw fail(std::string(kind) + " takes one argument, a size");
    }
    script.kind = known->kind;
    std::string_view size_text = parts[1];
    if (known->rounds) {
        script.rounds = kDefaultRounds;
        if (auto x = size_text.find('x'); x != std::string_view::npos) {
            const std::string_view rounds_text = size_text.substr(x + 1);
            size_text = size_text.substr(0, x);
            int rounds = 0;
            const auto [end, error] = std::from_chars(
                rounds_text.data(), rounds_text.data() + rounds_text.size(), rounds);
            if (rounds_text.empty() || error != std::errc() ||
                end != rounds_text.data() + rounds_text.size() || rounds < 1 ||
                rounds > kMaxRounds) {
                throw fail("rounds must be a whole number from 1 to " + std::to_string(kMaxRounds));
            }
            script.rounds = rounds;
        }
    }
    const std::uint64_t bytes = size_of(size_text);
    if (bytes == 0) {
        throw fail("the size must be above zero");
    }
    switch (script.kind) {
        case ChildKind::thp:
            if (bytes % kHugePage != 0) {
                throw fail("a thp: size must be a multiple of 2 MiB");
            }
            [[fallthrough]];
        case ChildKind::shared:
        case ChildKind::zero:
        case ChildKind::mprotect:
        case ChildKind::heapzero:
        case ChildKind::file:
            script.region_bytes = bytes;
            break;
        case ChildKind::warmup:
            if (!duration || duration->count() == 0) {
                throw fail("warmup: needs @DURATION, the length of its run");
            }
            script.leak_bytes = bytes;
            break;
        case ChildKind::burst:
            script.leak_bytes = bytes;
            script.idle = script.spread;  // burst's @ is its idle time, not a spread
            script.spread = milliseconds(0);
            break;
        case ChildKind::swapleak:
            script.leak_bytes = bytes;
            break;
        case ChildKind::plain:
            break;
    }
    return script;
}

ChurnSpec parse_churn(std::string_view text) {
    const UsageError invalid("invalid churn \"" + std::string(text) +
                             "\": expected N@RATE, whole numbers above zero (e.g. 1000@50)");
    const auto whole_number = [&invalid](std::string_view part) {
        unsigned value = 0;
        const auto [end, error] = std::from_chars(part.data(), part.data() + part.size(), value);
        if (part.empty() || error != std::errc() || end != part.data() + part.size() ||
            value == 0) {
            throw invalid;
        }
        return value;
    };
    const auto at = text.find('@');
    if (at == std::string_view::npos) {
        throw invalid;
    }
    return {.children = whole_number(text.substr(0, at)),
            .forks_per_second = whole_number(text.substr(at + 1))};
}

ScriptTruth script_truth(const ChildScript& script, std::uint64_t preload_bytes) {
    ScriptTruth truth;
    truth.busy_cpu = script.work;
    const std::uint64_t region = round_to_pages(script.region_bytes);
    const std::uint64_t leak = round_to_pages(script.leak_bytes);
    switch (script.kind) {
        case ChildKind::plain:
            truth.cow_bytes = round_to_pages(std::min(script.cow_bytes, preload_bytes));
            truth.growth_bytes = leak;
            break;
        case ChildKind::shared:
            break;
        case ChildKind::zero:
        case ChildKind::mprotect:
            truth.growth_bytes = region;
            break;
        case ChildKind::heapzero:
            truth.growth_bytes = region - kPage;  // the manager wrote the first page
            truth.cow_bytes = kPage;
            break;
        case ChildKind::file:
            truth.cow_bytes = region;
            truth.anon_rise_bytes = region;  // page cache copied into anon pages
            break;
        case ChildKind::thp:
            truth.cow_bytes = region;
            break;
        case ChildKind::warmup:
            truth.growth_bytes = leak;
            truth.busy_cpu += kWarmupTickCpu * warmup_plan(script.spread).ticks;
            break;
        case ChildKind::burst:
            truth.growth_bytes = leak;
            truth.busy_cpu += kRequestCpu * static_cast<std::int64_t>(steps_for(leak));
            break;
        case ChildKind::swapleak:
            truth.growth_bytes = leak;
            break;
    }
    truth.anon_rise_bytes += truth.growth_bytes;
    truth.leak = truth.growth_bytes > 0 && script.kind != ChildKind::warmup;
    return truth;
}

namespace {

// Closes a file descriptor on scope exit.
struct FdCloser {
    explicit FdCloser(int descriptor) : fd(descriptor) {}
    ~FdCloser() {
        if (fd >= 0) {
            close(fd);
        }
    }
    FdCloser(const FdCloser&) = delete;
    FdCloser& operator=(const FdCloser&) = delete;
    int fd;
};

}  // namespace

pid_t fork_at_pid(pid_t pid) {
    if (pid <= 1) {
        throw UsageError("cannot fork with pid " + std::to_string(pid));
    }
    const char* const path = "/proc/sys/kernel/ns_last_pid";
    FdCloser last_pid{open(path, O_RDWR | O_CLOEXEC)};
    if (last_pid.fd < 0) {
        throw Error(errno_message(std::string("cannot open ") + path, errno));
    }
    while (flock(last_pid.fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            throw Error(errno_message(std::string("cannot lock ") + path, errno));
        }
    }
    constexpr int kAttempts = 200;
    for (int attempt = 0; attempt < kAttempts; ++attempt) {
        if (kill(pid, 0) == 0 || errno == EPERM) {
            std::this_thread::sleep_for(milliseconds(10));  // taken: wait for it to be free
            continue;
        }
        const std::string last = std::to_string(pid - 1);
        if (pwrite(last_pid.fd, last.data(), last.size(), 0) != static_cast<ssize_t>(last.size())) {
            throw Error(errno_message(std::string("cannot write ") + path, errno));
        }
        const pid_t child = fork();
        if (child < 0) {
            throw Error(errno_message("fork", errno));
        }
        if (child == 0) {
            if (getpid() != pid) {
                _exit(0);  // another fork took the pid first
            }
            close(last_pid.fd);  // the lock is the open file's: the parent lets it go
            last_pid.fd = -1;
            return 0;
        }
        if (child == pid) {
            return child;
        }
        while (waitpid(child, nullptr, 0) < 0 && errno == EINTR) {
        }
    }
    throw Error("pid " + std::to_string(pid) + " stayed taken");
}

int run_workload_manager(const WorkloadSpec& spec, int in_fd, int out_fd) {
    Manager manager(spec, out_fd);
    manager.say("manager " + std::to_string(getpid()));
    manager.fork_initial();
    manager.say("ready");
    if (spec.start_at_once) {
        manager.go();
    }
    std::string buffer;
    while (true) {
        pollfd fds[2] = {{in_fd, POLLIN, 0}, {manager.done_fd(), POLLIN, 0}};
        if (poll(fds, 2, 100) < 0) {
            if (errno == EINTR) {
                continue;
            }
            return 1;
        }
        manager.reap_exited();
        if (fds[1].revents & POLLIN) {
            manager.report_done();
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            auto line = read_line(in_fd, buffer);
            if (!line || *line == "quit") {
                break;
            }
            if (*line == "go") {
                manager.go();
            } else if (line->starts_with("exit ")) {
                manager.exit_child(line->substr(5));
            } else if (line->starts_with("fork ")) {
                manager.fork_child_at(line->substr(5));
            }
        }
    }
    manager.say("bye");
    return 0;
}

WorkloadSpec demo_workload() {
    using namespace std::chrono_literals;
    WorkloadSpec spec;
    spec.preload_bytes = 128ULL << 20;
    spec.start_at_once = true;
    spec.children.push_back({.name = "cow", .cow_bytes = 96ULL << 20, .spread = 8s});
    spec.children.push_back({.name = "leak", .leak_bytes = 60ULL << 20, .spread = 12s});
    spec.children.push_back({.name = "idle"});
    return spec;
}

}  // namespace kidreaper
