// `kidreaper diagnose`: watch a manager's children for a while, then explain each one.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "common/log.h"
#include "observe/kernel_features.h"
#include "observe/manager_lookup.h"
#include "policy/worker_rule.h"

namespace kidreaper {

class ProcFs;

enum class OutputFormat { table, json };

struct DiagnoseOptions {
    std::optional<pid_t> pid;
    std::optional<std::string> pidfile;
    // --cgroup or --unit (manager_lookup.h); unset with --pid, --pidfile or --demo.
    std::optional<ManagerSelector> manager;
    std::chrono::milliseconds duration{std::chrono::seconds(30)};
    std::chrono::milliseconds interval{std::chrono::seconds(1)};
    OutputFormat format = OutputFormat::table;
    std::optional<std::uint64_t> limit;
    bool demo = false;  // start the built-in workload and diagnose it
    // Which children are workers (--workers); default "exe,listener".
    std::optional<WorkerRule> workers;
    FaultSource fault_source = FaultSource::automatic;  // --fault-source
};

// Runs the diagnosis; prints the table or JSON on stdout. Returns the exit code.
int run_diagnose(const DiagnoseOptions& options, const Logger& log);

// The manager pid from --pid, --pidfile, --cgroup or --unit (find_manager: a pidfile under
// /proc/N/root is translated). Throws UsageError for a bad selector or pidfile, Error when
// no manager is found.
pid_t resolve_manager(const DiagnoseOptions& options, const ProcFs& proc);

}  // namespace kidreaper
