// The grower of benchmarks 3 and 6 (grower.h).
#include "grower.h"

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <string>

#include "bench_util.h"
#include "observe/procfs.h"

namespace krbench {

namespace {

int g_result_fd = -1;
// When the grower crossed the limit (0: not yet). The signal may arrive while the grower is
// still writing, before it reports the crossing itself: the handler reports it too.
std::atomic<std::uint64_t> g_crossed{0};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// Async-signal-safe: formats "signal SIG NS CROSSED_NS\n" by hand and writes it, then exits.
void on_grower_signal(int signal) {
    const std::uint64_t now = mono_ns();  // clock_gettime is async-signal-safe
    char text[80] = "signal ";
    std::size_t length = 7;
    char digits[24];
    auto append_number = [&](std::uint64_t value) {
        int n = 0;
        do {
            digits[n++] = static_cast<char>('0' + value % 10);
            value /= 10;
        } while (value != 0);
        while (n > 0) {
            text[length++] = digits[--n];
        }
    };
    append_number(static_cast<std::uint64_t>(signal));
    text[length++] = ' ';
    append_number(now);
    text[length++] = ' ';
    append_number(g_crossed.load());
    text[length++] = '\n';
    ssize_t ignored = write(g_result_fd, text, length);
    (void)ignored;
    _exit(0);
}

}  // namespace

int grower_main(int go_fd, int result_fd, std::uint64_t limit, std::uint64_t grow_bytes) {
    prctl(PR_SET_NAME, "kr-bench-grow");
    g_result_fd = result_fd;
    for (int signal : {SIGTERM, SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH}) {
        struct sigaction action {};
        action.sa_handler = on_grower_signal;
        sigemptyset(&action.sa_mask);
        sigaction(signal, &action, nullptr);
    }
    char byte = 0;
    while (read(go_fd, &byte, 1) < 0 && errno == EINTR) {
    }
    if (byte != 'g') {
        return 0;
    }
    const kidreaper::ProcFs proc;
    const auto smaps = proc.smaps_rollup(getpid());
    const std::uint64_t baseline = smaps ? smaps->private_bytes() : 0;
    const std::uint64_t crossing_page = limit > baseline ? (limit - baseline) / kPage : 0;
    unsigned char* region = map_anonymous(grow_bytes);
    const std::uint64_t pages = grow_bytes / kPage;
    volatile unsigned char* page = region;
    std::uint64_t crossed = 0;
    const std::uint64_t began = mono_ns();
    for (std::uint64_t i = 0; i < pages; ++i) {
        page[i * kPage] = 1;
        if (i == crossing_page) {
            crossed = mono_ns();
            g_crossed.store(crossed);
        }
    }
    const std::uint64_t done = mono_ns();
    write_all(result_fd, "crossed " + std::to_string(crossed) + " " + std::to_string(began) + " " +
                             std::to_string(done) + " " + std::to_string(baseline) + "\n");
    while (true) {
        pause();
    }
}

}  // namespace krbench
