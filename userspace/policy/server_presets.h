// What each pre-fork server wants: the signal that stops one child gracefully (after its
// current request), the escalation that follows, and the syscalls an idle child waits in.
// Sources per server are in docs/servers.md.
#pragma once

#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace kidreaper {

struct ServerPreset {
    std::string name;
    std::vector<int> signals;      // graceful first, then each escalation step
    std::set<long> idle_syscalls;  // the target's syscall numbers of a child waiting for work
    std::string note;
    // Which children are workers (worker_rule.h): they run the manager's executable and
    // hold its listening socket; helpers (piped loggers, attached daemons) do not.
    std::string workers = "exe,listener";
};

// The preset for --server NAME; throws UsageError listing the known names.
const ServerPreset& find_server_preset(std::string_view name);
const std::vector<ServerPreset>& server_presets();

// The preset used without --server: TERM, then KILL; accept() and the poll family idle.
ServerPreset default_preset();

// "HUP", "SIGHUP", "hup" or "1" -> 1. Throws UsageError.
int parse_signal(std::string_view text);
// 1 -> "HUP".
std::string signal_name(int signal);

}  // namespace kidreaper
