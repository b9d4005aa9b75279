#include "cli/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <utility>

#include "common/units.h"

namespace kidreaper {

namespace {

constexpr std::uint64_t kMiB = 1ULL << 20;
constexpr std::size_t kWidth = 80;

// "95.0M", "512K", "12B": format_size without the space and the "iB".
std::string short_size(std::uint64_t bytes) {
    std::string text = format_size(bytes);
    if (auto space = text.find(' '); space != std::string::npos) {
        text.erase(space, 1);
    }
    if (auto unit = text.find("iB"); unit != std::string::npos) {
        text.erase(unit, 2);
    }
    return text;
}

std::string short_duration(double seconds) {
    return format_duration(std::chrono::milliseconds(static_cast<long long>(seconds * 1000)));
}

std::string clip(std::string line) {
    if (line.size() > kWidth) {
        line.resize(kWidth - 3);
        line += "...";
    }
    return line;
}

std::string projection(const ChildDiagnosis& child, const Diagnosis& diagnosis) {
    const Verdict verdict = child.classification.verdict;
    if (child.exited) {
        return "exited";
    }
    if ((verdict == Verdict::leak || verdict == Verdict::mixed)) {
        if (child.private_bytes >= diagnosis.limit_bytes) {
            return "over " + short_size(diagnosis.limit_bytes);
        }
        if (child.seconds_to_limit) {
            return short_size(diagnosis.limit_bytes) + " in " +
                   short_duration(*child.seconds_to_limit);
        }
    }
    if (verdict == Verdict::cow) {
        std::string text = "plateau " + short_size(child.plateau_bytes);
        if (child.seconds_to_plateau) {
            text += " in " + short_duration(*child.seconds_to_plateau);
        }
        return text;
    }
    return "-";
}

std::uint64_t round_up_mib(double bytes) {
    const auto mib = static_cast<std::uint64_t>(std::ceil(bytes / static_cast<double>(kMiB)));
    return std::max<std::uint64_t>(1, mib) * kMiB;
}

// Words wrapped to lines of at most kWidth, each starting with `indent`.
std::vector<std::string> wrap(const std::string& text, const std::string& indent) {
    std::vector<std::string> lines;
    std::string line = indent;
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t end = text.find(' ', start);
        if (end == std::string::npos) {
            end = text.size();
        }
        const std::string word = text.substr(start, end - start);
        start = end + 1;
        if (line.size() > indent.size() && line.size() + 1 + word.size() > kWidth) {
            lines.push_back(line);
            line = indent;
        }
        line += (line.size() > indent.size() ? " " : "") + word;
    }
    if (line.size() > indent.size()) {
        lines.push_back(line);
    }
    return lines;
}

std::string share_list(const std::vector<CowShare>& shares, std::size_t count) {
    std::string text;
    for (std::size_t i = 0; i < shares.size() && i < count; ++i) {
        if (i > 0 && shares[i].fraction < 0.01) {
            break;  // crumbs
        }
        char percent[16];
        std::snprintf(percent, sizeof percent, " %.0f%%", shares[i].fraction * 100);
        text += (i == 0 ? "" : ", ") + shares[i].name + percent;
    }
    return text;
}

}  // namespace

void attribute_children_cow(Diagnosis& diagnosis, const std::vector<CowSiteSample>& sites,
                            std::uint32_t sample_period, const ProcFs& proc) {
    std::map<pid_t, std::vector<CowSiteSample>> by_child;
    for (const auto& site : sites) {
        by_child[site.pid].push_back(site);
    }
    Symbolizer symbolizer;
    for (auto& child : diagnosis.children) {
        const auto found = by_child.find(child.pid);
        if (child.exited || found == by_child.end()) {
            continue;
        }
        const auto maps_text = proc.maps(child.pid);
        if (!maps_text) {
            continue;
        }
        child.cow_attribution =
            attribute_cow(found->second, parse_maps(*maps_text), child.comm, sample_period,
                          symbolizer, proc.root() / std::to_string(child.pid) / "root");
    }
}

std::uint64_t recommend_limit(const std::vector<ChildDiagnosis>& children) {
    std::uint64_t highest_normal = 0;
    std::uint64_t highest_private = 0;
    bool any_normal = false;
    for (const auto& child : children) {
        if (child.helper) {
            continue;  // never recycled: no part of the limit
        }
        highest_private = std::max(highest_private, child.private_bytes);
        const Verdict verdict = child.classification.verdict;
        if (verdict == Verdict::leak || verdict == Verdict::mixed) {
            continue;
        }
        any_normal = true;
        highest_normal = std::max({highest_normal, child.plateau_bytes, child.private_bytes});
    }
    if (!any_normal) {
        return round_up_mib(1.5 * static_cast<double>(highest_private));
    }
    return round_up_mib(1.1 * static_cast<double>(highest_normal));
}

Diagnosis diagnose_children(const std::map<pid_t, ChildRecord>& records,
                            const ManagerSummary& manager, std::optional<std::uint64_t> limit,
                            const ClassifierConfig& config,
                            const std::map<pid_t, RoleJudgement>& roles,
                            const std::vector<ChildRecord>& displaced) {
    Diagnosis diagnosis;
    diagnosis.manager = manager;
    std::vector<std::pair<pid_t, const ChildRecord*>> all;
    all.reserve(records.size() + displaced.size());
    for (const auto& [pid, record] : records) {
        all.emplace_back(pid, &record);
    }
    for (const auto& record : displaced) {
        all.emplace_back(record.pid, &record);
    }
    for (const auto& [pid, each] : all) {
        const ChildRecord& record = *each;
        ChildDiagnosis child;
        child.pid = pid;
        child.comm = record.comm;
        child.exited = record.exited;
        child.pid_reused = record.pid_reused;
        child.born_in_window = !record.present_at_start;
        // A displaced child's pid is judged for its newer child: not for it.
        if (const auto role = roles.find(pid); role != roles.end() && !record.pid_reused) {
            child.helper = !role->second.worker;
            child.role_reason = role->second.reason;
        }
        child.seconds_watched = record.last_seen - record.first_seen;
        child.classification = classify(record.samples.samples(), config);
        child.cow_bytes = child.classification.cow_bytes;
        child.growth_bytes = static_cast<std::uint64_t>(
            std::max<std::int64_t>(0, child.classification.anon_delta_bytes));
        child.anon_bytes = record.latest.mem_bytes[KR_MEM_ANON];
        const auto delta = [](std::uint64_t last, std::uint64_t first) {
            return last > first ? last - first : 0;
        };
        child.cow_file_bytes =
            delta(record.account.file_cow_bytes, record.account_first.file_cow_bytes);
        child.excluded_write_bytes =
            delta(record.account.excluded_write_bytes, record.account_first.excluded_write_bytes);
        child.rss_bytes = record.latest.rss_bytes();
        if (const auto& smaps = record.smaps_last) {
            child.rss_bytes = smaps->rss;
            child.private_bytes = smaps->private_bytes();
            child.shared_bytes = smaps->shared_bytes();
            child.pss_bytes = smaps->pss;
            child.plateau_bytes = smaps->private_bytes() + smaps->shared_dirty;
            if (child.classification.cow_rate > 0) {
                child.seconds_to_plateau =
                    static_cast<double>(smaps->shared_dirty) / child.classification.cow_rate;
            }
        }
        diagnosis.total_private_bytes += child.private_bytes;
        diagnosis.children.push_back(child);
    }
    diagnosis.recommended_limit_bytes = recommend_limit(diagnosis.children);
    diagnosis.limit_given = limit.has_value();
    diagnosis.limit_bytes = limit.value_or(diagnosis.recommended_limit_bytes);
    for (auto& child : diagnosis.children) {
        const double rate = child.classification.growth_rate;
        const Verdict verdict = child.classification.verdict;
        if ((verdict == Verdict::leak || verdict == Verdict::mixed) && rate > 0 &&
            child.private_bytes < diagnosis.limit_bytes) {
            child.seconds_to_limit =
                static_cast<double>(diagnosis.limit_bytes - child.private_bytes) / rate;
        }
        if (!child.exited && !child.helper && child.private_bytes > diagnosis.limit_bytes) {
            diagnosis.would_recycle.push_back(child.pid);
        }
    }
    return diagnosis;
}

std::string render_table(const Diagnosis& d) {
    std::ostringstream out;
    char line[256];
    std::snprintf(line, sizeof line, "%-7s %-7s %7s %7s %7s %7s %7s  %s", "PID", "VERDICT", "PRIV",
                  "SHARED", "RSS", "COW/s", "GROW/s", "PROJECTION");
    out << line << '\n';
    for (const auto& c : d.children) {
        const std::string pid = std::to_string(c.pid) + (c.born_in_window ? "+" : "");
        std::snprintf(
            line, sizeof line, "%-7s %-7s %7s %7s %7s %7s %7s  %s", pid.c_str(),
            std::string(verdict_name(c.classification.verdict)).c_str(),
            short_size(c.private_bytes).c_str(), short_size(c.shared_bytes).c_str(),
            short_size(c.rss_bytes).c_str(),
            short_size(static_cast<std::uint64_t>(c.classification.cow_rate)).c_str(),
            short_size(static_cast<std::uint64_t>(std::max(0.0, c.classification.growth_rate)))
                .c_str(),
            projection(c, d).c_str());
        out << clip(line) << '\n';
    }
    out << '\n';
    for (const auto& c : d.children) {
        // The reason is the verdict's evidence: wrapped, never cut.
        const std::string head = "  " + std::to_string(c.pid) + ": ";
        const std::string reason =
            c.helper ? "helper, never recycled (" + c.role_reason + "). " + c.classification.reason
                     : c.classification.reason;
        const auto lines = wrap(reason, std::string(head.size(), ' '));
        for (std::size_t i = 0; i < lines.size(); ++i) {
            out << (i == 0 ? head + lines[i].substr(head.size()) : lines[i]) << '\n';
        }
    }
    for (const auto& c : d.children) {
        const Verdict verdict = c.classification.verdict;
        if (!c.cow_attribution || (verdict != Verdict::cow && verdict != Verdict::mixed)) {
            continue;
        }
        const CowAttribution& cow = *c.cow_attribution;
        out << '\n';
        for (const auto& text_line : wrap("COW lands in: " + share_list(cow.regions, 3),
                                          "  " + std::to_string(c.pid) + " ")) {
            out << clip(text_line) << '\n';
        }
        if (!cow.sites.empty()) {
            for (const auto& text_line : wrap("written by: " + share_list(cow.sites, 3), "    ")) {
                out << clip(text_line) << '\n';
            }
        }
        for (const auto& text_line :
             wrap("advice (" + runtime_name(cow.runtime) + "): " + runtime_advice(cow.runtime),
                  "    ")) {
            out << text_line << '\n';
        }
    }
    out << '\n';
    const std::size_t born = static_cast<std::size_t>(std::count_if(
        d.children.begin(), d.children.end(), [](const auto& c) { return c.born_in_window; }));
    std::string manager = "manager " + std::to_string(d.manager.pid);
    if (!d.manager.comm.empty()) {
        manager += " (" + d.manager.comm + ")";
    }
    if (d.manager.smaps) {
        manager += ": rss " + format_size(d.manager.smaps->rss) + ", shared " +
                   format_size(d.manager.smaps->shared_bytes()) + ", private " +
                   format_size(d.manager.smaps->private_bytes());
    }
    out << clip(manager) << '\n';
    out << clip("children: " + std::to_string(d.children.size()) + " over " +
                short_duration(d.window_seconds) + (born ? " (+ born during the window)" : "") +
                ", private total " + format_size(d.total_private_bytes))
        << '\n';
    out << clip("recommended reap limit: --limit " + short_size(d.recommended_limit_bytes) +
                "iB --metric private")
        << '\n'
        << "  (above the COW plateau of every child that does not leak)\n";
    std::string would =
        d.limit_given ? "at --limit " + short_size(d.limit_bytes) + "iB" : "at that limit";
    if (d.would_recycle.empty()) {
        would += ": nobody is over it now";
    } else {
        would += ", it would recycle now:";
        for (pid_t pid : d.would_recycle) {
            would += " " + std::to_string(pid);
        }
    }
    for (const auto& c : d.children) {
        if (c.seconds_to_limit) {
            would += "; " + std::to_string(c.pid) + " in " + short_duration(*c.seconds_to_limit);
        }
    }
    out << clip(would) << '\n';
    return out.str();
}

nlohmann::json to_json(const Diagnosis& d) {
    using nlohmann::json;
    json manager = {{"pid", d.manager.pid}, {"comm", d.manager.comm}};
    if (d.manager.smaps) {
        manager["rss_bytes"] = d.manager.smaps->rss;
        manager["private_bytes"] = d.manager.smaps->private_bytes();
        manager["shared_bytes"] = d.manager.smaps->shared_bytes();
        manager["pss_bytes"] = d.manager.smaps->pss;
    }
    json warnings = json::array();
    for (const auto& notice : d.capacity_notices) {
        warnings.push_back({{"kind", "capacity"},
                            {"map", notice.map},
                            {"dropped", notice.dropped},
                            {"capacity", notice.capacity},
                            {"message", notice.message}});
    }
    json children = json::array();
    for (const auto& c : d.children) {
        json child = {
            {"pid", c.pid},
            {"comm", c.comm},
            {"verdict", verdict_name(c.classification.verdict)},
            {"reason", c.classification.reason},
            {"exited", c.exited},
            {"pid_reused", c.pid_reused},
            {"born_during_window", c.born_in_window},
            {"role", c.helper ? "helper" : "worker"},
            {"role_reason", c.role_reason},
            {"seconds_watched", c.seconds_watched},
            {"rss_bytes", c.rss_bytes},
            {"private_bytes", c.private_bytes},
            {"shared_bytes", c.shared_bytes},
            {"pss_bytes", c.pss_bytes},
            {"anon_bytes", c.anon_bytes},
            {"cow_bytes", c.cow_bytes},
            {"growth_bytes", c.growth_bytes},
            {"cow_file_bytes", c.cow_file_bytes},
            {"excluded_write_bytes", c.excluded_write_bytes},
            {"work_cpu_seconds", c.classification.work_seconds},
            {"growth_per_cpu_second", c.classification.growth_per_work_second},
            {"anon_delta_bytes", c.classification.anon_delta_bytes},
            {"sustained_growth_bytes", c.classification.sustained_growth_bytes},
            {"cow_rate_bytes_per_second", c.classification.cow_rate},
            {"growth_rate_bytes_per_second", c.classification.growth_rate},
            {"cow_plateau_bytes", c.plateau_bytes},
            {"seconds_to_plateau", c.seconds_to_plateau ? json(*c.seconds_to_plateau) : json()},
            {"seconds_to_limit", c.seconds_to_limit ? json(*c.seconds_to_limit) : json()},
        };
        if (c.cow_attribution) {
            auto shares = [](const std::vector<CowShare>& list) {
                json array = json::array();
                for (const auto& share : list) {
                    array.push_back({{"name", share.name},
                                     {"bytes", share.bytes},
                                     {"fraction", share.fraction}});
                }
                return array;
            };
            child["cow_regions"] = shares(c.cow_attribution->regions);
            child["cow_sites"] = shares(c.cow_attribution->sites);
            child["runtime"] = runtime_name(c.cow_attribution->runtime);
            child["advice"] = runtime_advice(c.cow_attribution->runtime);
        }
        children.push_back(std::move(child));
    }
    return {
        {"manager", manager},
        {"window_seconds", d.window_seconds},
        {"interval_seconds", d.interval_seconds},
        {"mode", d.mode},
        {"children", children},
        {"warnings", warnings},
        {"summary",
         {{"total_private_bytes", d.total_private_bytes},
          {"recommended_limit_bytes", d.recommended_limit_bytes},
          {"limit_bytes", d.limit_bytes},
          {"would_recycle", d.would_recycle}}},
    };
}

}  // namespace kidreaper
