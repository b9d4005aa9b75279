// The diagnosis of a manager's children: built from the watcher's records (pure),
// rendered as an 80-column table or as the JSON documented in docs/diagnose.md.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/classifier.h"
#include "observe/cow_sites.h"
#include "observe/procfs.h"
#include "observe/watcher.h"
#include "policy/worker_rule.h"

namespace kidreaper {

struct ChildDiagnosis {
    pid_t pid = 0;
    std::string comm;
    bool exited = false;
    bool pid_reused = false;  // exited, and a newer child has its pid (listed apart)
    bool born_in_window = false;
    bool helper = false;      // not a worker (worker_rule.h): reap never signals it
    std::string role_reason;  // why it is a worker or a helper (empty when not judged)
    double seconds_watched = 0;
    Classification classification;
    std::uint64_t rss_bytes = 0;
    std::uint64_t private_bytes = 0;
    std::uint64_t shared_bytes = 0;
    std::uint64_t pss_bytes = 0;
    std::uint64_t anon_bytes = 0;
    std::uint64_t cow_bytes = 0;     // unshared by COW during the window
    std::uint64_t growth_bytes = 0;  // fresh anon gained during the window (>= 0)
    // Of cow_bytes, what private file pages contributed (the rest: inherited anon pages).
    std::uint64_t cow_file_bytes = 0;
    // Write faults in the window that copied nothing inherited (shared-file writes, the
    // zero page, write-protect faults on the child's own memory): left out of cow_bytes.
    std::uint64_t excluded_write_bytes = 0;
    // COW plateau: private + the dirty memory still shared; the most COW alone can reach.
    std::uint64_t plateau_bytes = 0;
    std::optional<double> seconds_to_plateau;       // at the observed COW rate
    std::optional<double> seconds_to_limit;         // at the observed growth rate (leak, mixed)
    std::optional<CowAttribution> cow_attribution;  // where COW lands (alive children)
};

struct ManagerSummary {
    pid_t pid = 0;
    std::string comm;
    std::optional<SmapsRollup> smaps;
};

struct Diagnosis {
    ManagerSummary manager;
    double window_seconds = 0;
    double interval_seconds = 0;
    std::string mode;  // observer mode
    std::vector<ChildDiagnosis> children;
    std::uint64_t limit_bytes = 0;  // --limit, or the recommended one
    bool limit_given = false;
    std::uint64_t recommended_limit_bytes = 0;
    std::uint64_t total_private_bytes = 0;
    std::vector<pid_t> would_recycle;  // over the limit now
    // Kernel maps that were full during the window (each also warned about on stderr).
    std::vector<CapacityNotice> capacity_notices;
};

// Builds the diagnosis; `limit` is --limit when given.
// `roles`: each judged child's role; a child missing from it counts as a worker. Helpers
// are left out of the recommended limit and of would_recycle. `displaced`: exited children
// whose pid a newer child took (Watcher::displaced()), listed after the others.
Diagnosis diagnose_children(const std::map<pid_t, ChildRecord>& records,
                            const ManagerSummary& manager, std::optional<std::uint64_t> limit,
                            const ClassifierConfig& config = {},
                            const std::map<pid_t, RoleJudgement>& roles = {},
                            const std::vector<ChildRecord>& displaced = {});

// The recommended reap limit on private memory: above the COW plateau of every worker that
// does not leak (so only leaking children are recycled), rounded up to a MiB.
std::uint64_t recommend_limit(const std::vector<ChildDiagnosis>& children);

// Adds each live child's COW attribution from the sampled sites (reads /proc/PID/maps
// and the ELF files the faulting code is in).
void attribute_children_cow(Diagnosis& diagnosis, const std::vector<CowSiteSample>& sites,
                            std::uint32_t sample_period, const ProcFs& proc);

std::string render_table(const Diagnosis& diagnosis);
nlohmann::json to_json(const Diagnosis& diagnosis);

}  // namespace kidreaper
