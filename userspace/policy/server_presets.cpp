#include "policy/server_presets.h"

#include <signal.h>
#include <sys/syscall.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>

#include "common/error.h"

namespace kidreaper {

namespace {

// Waiting for a connection: accept, or the poll family on the listening sockets. The
// numbers are the build target's (/proc/PID/syscall gives the running architecture's);
// arm64 has only the newer calls of each family (no select, poll, epoll_wait).
std::set<long> accept_and_poll() {
    std::set<long> idle = {SYS_accept, SYS_accept4,     SYS_pselect6,
                           SYS_ppoll,  SYS_epoll_pwait, SYS_epoll_pwait2};
#ifdef SYS_select
    idle.insert(SYS_select);
#endif
#ifdef SYS_poll
    idle.insert(SYS_poll);
#endif
#ifdef SYS_epoll_wait
    idle.insert(SYS_epoll_wait);
#endif
    return idle;
}

// Apache prefork also waits on its accept mutex (SysV semaphore, flock, fcntl, pthread).
std::set<long> prefork_idle() {
    auto idle = accept_and_poll();
    idle.insert({SYS_semop, SYS_semtimedop, SYS_flock, SYS_fcntl, SYS_futex});
    return idle;
}

struct NamedSignal {
    const char* name;
    int number;
};

constexpr NamedSignal kSignals[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
    {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"WINCH", SIGWINCH},
    {"ABRT", SIGABRT}, {"ALRM", SIGALRM}, {"TTOU", SIGTTOU}, {"TTIN", SIGTTIN},
};

}  // namespace

const std::vector<ServerPreset>& server_presets() {
    static const std::vector<ServerPreset> presets = {
        {"fcgi",
         {SIGHUP, SIGKILL},  // a child handles TERM exactly like HUP: no use as a next step
         {SYS_accept, SYS_accept4},
         "FCGI::ProcManager: HUP or TERM, exits in pm_post_dispatch after the request"},
        {"httpd-prefork",
         {SIGUSR1, SIGTERM, SIGKILL},
         prefork_idle(),
         "Apache prefork: USR1 is graceful; HUP and TERM end the child mid-request"},
        {"gunicorn",
         {SIGTERM, SIGQUIT, SIGKILL},
         accept_and_poll(),
         "gunicorn worker: TERM is graceful; QUIT and INT are quick shutdown"},
        {"uwsgi",
         {SIGHUP, SIGTERM, SIGKILL},
         accept_and_poll(),
         "uWSGI worker: HUP is a graceful reload; TERM and INT end it at once"},
        {"php-fpm",
         {SIGQUIT, SIGTERM, SIGKILL},
         accept_and_poll(),
         "php-fpm child: QUIT is graceful; TERM has the default action"},
        {"unicorn",
         {SIGQUIT, SIGTERM, SIGKILL},
         accept_and_poll(),
         "unicorn worker: QUIT is graceful; TERM and INT are immediate"},
        {"puma",
         {SIGTERM, SIGKILL},
         accept_and_poll(),
         "puma worker: TERM finishes in-flight requests"},
        {"starman",
         {SIGHUP, SIGTERM, SIGKILL},
         accept_and_poll(),
         "Starman (Net::Server::PreFork) worker: HUP is graceful; INT, TERM and QUIT are "
         "immediate"},
    };
    return presets;
}

const ServerPreset& find_server_preset(std::string_view name) {
    std::string known;
    for (const auto& preset : server_presets()) {
        if (preset.name == name) {
            return preset;
        }
        known += (known.empty() ? "" : ", ") + preset.name;
    }
    throw UsageError("unknown --server \"" + std::string(name) + "\": expected one of " + known);
}

ServerPreset default_preset() {
    // A manager of unknown shape may hold no listening socket: the executable decides.
    return {"generic", {SIGTERM, SIGKILL}, accept_and_poll(), "TERM, then KILL", "exe"};
}

int parse_signal(std::string_view text) {
    std::string upper(text);
    std::transform(upper.begin(), upper.end(), upper.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    std::string_view name = upper;
    if (name.starts_with("SIG")) {
        name.remove_prefix(3);
    }
    for (const auto& known : kSignals) {
        if (name == known.name) {
            return known.number;
        }
    }
    int number = 0;
    auto [end, error] = std::from_chars(upper.data(), upper.data() + upper.size(), number);
    if (error == std::errc{} && end == upper.data() + upper.size() && number >= 1 &&
        number < NSIG) {
        return number;
    }
    // The text is the user's: escape what would break the one-line message.
    std::string shown;
    for (const char c : text.substr(0, 64)) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte < 0x20 || byte >= 0x7f || c == '"' || c == '\\') {
            char escaped[8];
            std::snprintf(escaped, sizeof escaped, "\\x%02x", static_cast<unsigned>(byte));
            shown += escaped;
        } else {
            shown += c;
        }
    }
    if (text.size() > 64) {
        shown += "...";
    }
    throw UsageError("invalid signal \"" + shown +
                     "\": expected a name such as HUP, TERM, USR1, QUIT or a number");
}

std::string signal_name(int signal) {
    for (const auto& known : kSignals) {
        if (known.number == signal) {
            return known.name;
        }
    }
    return std::to_string(signal);
}

}  // namespace kidreaper
