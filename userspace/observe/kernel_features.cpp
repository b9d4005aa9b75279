#include "observe/kernel_features.h"

#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <memory>
#include <sstream>
#include <string_view>

#include "common/error.h"

namespace kidreaper {

namespace {

struct BtfDeleter {
    void operator()(btf* b) const { btf__free(b); }
};

bool btf_has_tracepoint(const btf* vmlinux, const char* name) {
    std::string type_name = std::string("btf_trace_") + name;
    return btf__find_by_name_kind(vmlinux, type_name.c_str(), BTF_KIND_TYPEDEF) >= 0;
}

bool mounted(const std::filesystem::path& proc, std::string_view fstype) {
    std::ifstream mounts(proc / "self/mounts");
    std::string device;
    std::string mount_point;
    std::string type;
    std::string rest;
    while (mounts >> device >> mount_point >> type && std::getline(mounts, rest)) {
        if (type == fstype) {
            return true;
        }
    }
    return false;
}

// True when `name` is `base` or `base` with a compiler suffix that still names the whole
// function (".isra.0", ".constprop.0"; not ".cold", a split-off part).
bool names_function(std::string_view name, std::string_view base) {
    if (!name.starts_with(base)) {
        return false;
    }
    const std::string_view suffix = name.substr(base.size());
    return suffix.empty() || ((suffix.starts_with(".isra.") || suffix.starts_with(".constprop.")) &&
                              suffix.find(".cold") == std::string_view::npos);
}

// A text symbol (t/T) of kallsyms' line, or empty; module symbols ("[mod]") are skipped.
std::string_view text_symbol(std::string_view line) {
    const auto first = line.find(' ');
    if (first == std::string_view::npos || first + 3 > line.size()) {
        return {};
    }
    const char kind = line[first + 1];
    if ((kind != 't' && kind != 'T') || line[first + 2] != ' ') {
        return {};
    }
    std::string_view name = line.substr(first + 3);
    const auto end = name.find_first_of(" \t");
    return end == std::string_view::npos ? name : std::string_view{};
}

}  // namespace

FaultSource parse_fault_source(const std::string& text) {
    if (text == "auto") {
        return FaultSource::automatic;
    }
    if (text == "tracepoints") {
        return FaultSource::tracepoints;
    }
    if (text == "mm") {
        return FaultSource::mm;
    }
    throw UsageError("invalid --fault-source \"" + text + "\": expected auto, tracepoints or mm");
}

ProbeSymbols find_probe_symbols(const std::filesystem::path& proc) {
    ProbeSymbols found;
    std::ifstream kallsyms(proc / "kallsyms");
    std::string line;
    auto keep = [](std::string& slot, std::string_view name, std::string_view base) {
        // The plain name wins over a suffixed one; the first suffixed one otherwise.
        if (names_function(name, base) && (slot.empty() || name == base)) {
            slot = std::string(name);
        }
    };
    while (std::getline(kallsyms, line)) {
        const std::string_view name = text_symbol(line);
        if (name.empty()) {
            continue;
        }
        keep(found.wp_page_copy, name, "wp_page_copy");
        keep(found.do_wp_page, name, "do_wp_page");
        keep(found.finish_fault, name, "finish_fault");
    }
    return found;
}

CowSource KernelFeatures::cow_source(FaultSource wanted) const {
    if (wanted == FaultSource::mm && !mm_fault_source()) {
        throw Error(
            std::string("the mm fault source needs kprobes on do_wp_page or wp_page_copy: ") +
            (kprobe_pmu ? "neither is in /proc/kallsyms (inlined)"
                        : "this kernel has no kprobe PMU (/sys/bus/event_source/devices/kprobe)"));
    }
    if (wanted == FaultSource::tracepoints && !fault_tracepoints()) {
        throw Error(
            "the tracepoints fault source needs exceptions:page_fault_user/kernel (x86-64 only); "
            "use --fault-source mm");
    }
    // mm where it counts the copies themselves (as exact as the tracepoints with the kprobe,
    // and nothing on the far more common other faults); where only do_wp_page is there,
    // pairing or fault codes on the tracepoints tell more, unless there are none (arm64).
    const bool use_mm =
        wanted == FaultSource::mm || (wanted == FaultSource::automatic && mm_fault_source() &&
                                      (exact_cow() || !fault_tracepoints()));
    if (use_mm) {
        return {.mm = true,
                .exact = exact_cow(),
                .exact_fills = exact_cow() && finish_fault_symbol,
                .wp_faults = do_wp_page_symbol};
    }
    // The kprobes count the copies themselves: where they exist, pairing would only add
    // hooks to the hot path.
    const bool paired = rss_stat_per_change && find_vma_helper && !exact_cow();
    return {.exact = exact_cow(),
            .exact_fills = exact_cow() && finish_fault_symbol,
            .paired = paired,
            .paired_fills = paired && tp_mm_filemap_fault};
}

bool fentry_usable(const std::string& release, const std::string& machine) {
    int major = 0;
    int minor = 0;
    if (!parse_kernel_release(release, major, minor)) {
        return false;
    }
    if (machine == "x86_64") {
        return major > 5 || (major == 5 && minor >= 13);
    }
    if (machine == "aarch64") {
        return major >= 6;
    }
    return false;
}

bool parse_kernel_release(const std::string& release, int& major, int& minor) {
    const char* begin = release.data();
    const char* end = begin + release.size();
    auto [after_major, major_error] = std::from_chars(begin, end, major);
    if (major_error != std::errc{} || after_major == end || *after_major != '.') {
        return false;
    }
    auto [after_minor, minor_error] = std::from_chars(after_major + 1, end, minor);
    return minor_error == std::errc{};
}

KernelFeatures probe_features(const SystemPaths& paths) {
    KernelFeatures features;
    utsname names{};
    if (uname(&names) == 0) {
        features.release = names.release;
        parse_kernel_release(features.release, features.version_major, features.version_minor);
    }
    features.is_root = geteuid() == 0;

    const auto btf_path = paths.sys / "kernel/btf/vmlinux";
    std::unique_ptr<btf, BtfDeleter> vmlinux(btf__parse(btf_path.c_str(), nullptr));
    features.btf = vmlinux != nullptr;
    if (vmlinux) {
        features.tp_page_fault_user = btf_has_tracepoint(vmlinux.get(), "page_fault_user");
        features.tp_page_fault_kernel = btf_has_tracepoint(vmlinux.get(), "page_fault_kernel");
        features.tp_rss_stat = btf_has_tracepoint(vmlinux.get(), "rss_stat");
        features.tp_sched_process_fork = btf_has_tracepoint(vmlinux.get(), "sched_process_fork");
        features.tp_sched_process_exit = btf_has_tracepoint(vmlinux.get(), "sched_process_exit");
        features.rss_stat_per_change =
            btf__find_by_name_kind(vmlinux.get(), "mm_rss_stat", BTF_KIND_STRUCT) < 0;
        features.tp_mm_filemap_fault = btf_has_tracepoint(vmlinux.get(), "mm_filemap_fault");
    }
    if (features.is_root) {
        features.raw_tracepoint_prog =
            libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_RAW_TRACEPOINT, nullptr) == 1;
        features.percpu_hash_map =
            libbpf_probe_bpf_map_type(BPF_MAP_TYPE_PERCPU_HASH, nullptr) == 1;
        features.find_vma_helper =
            libbpf_probe_bpf_helper(BPF_PROG_TYPE_RAW_TRACEPOINT, BPF_FUNC_find_vma, nullptr) == 1;
    }
    features.tracefs_mounted = mounted(paths.proc, "tracefs");
    std::error_code ignored;
    features.kprobe_pmu =
        std::filesystem::exists(paths.sys / "bus/event_source/devices/kprobe", ignored);
    const ProbeSymbols symbols = find_probe_symbols(paths.proc);
    features.wp_page_copy_symbol = !symbols.wp_page_copy.empty();
    features.finish_fault_symbol = !symbols.finish_fault.empty();
    features.do_wp_page_symbol = !symbols.do_wp_page.empty();
    return features;
}

std::vector<std::string> blocking_problems(const KernelFeatures& f) {
    std::vector<std::string> problems;
    if (!f.is_root) {
        problems.emplace_back(
            "not root: kidreaper loads BPF programs and signals other users' processes; run it "
            "with sudo");
        return problems;
    }
    if (f.version_major != 0 &&
        (f.version_major < 5 || (f.version_major == 5 && f.version_minor < 5))) {
        problems.push_back("kernel " + f.release +
                           " is too old: kidreaper needs Linux 5.5 or newer (kmem:rss_stat)");
    }
    if (!f.btf) {
        problems.emplace_back(
            "no kernel BTF at /sys/kernel/btf/vmlinux: boot a kernel built with "
            "CONFIG_DEBUG_INFO_BTF=y (Debian 11+, Ubuntu 20.10+, RHEL 8.2+)");
    }
    if (!f.raw_tracepoint_prog) {
        problems.emplace_back(
            "the kernel refuses raw tracepoint BPF programs: check CONFIG_BPF_SYSCALL and "
            "kernel.unprivileged_bpf_disabled / lockdown settings");
    }
    if (!f.percpu_hash_map) {
        problems.emplace_back("the kernel refuses per-CPU hash maps (needs Linux 4.6+)");
    }
    if (f.btf && !f.fault_tracepoints() && !f.mm_fault_source()) {
        problems.emplace_back(
            "no exceptions:page_fault_user/page_fault_kernel tracepoints (x86-64 only) and no "
            "kprobes on do_wp_page/wp_page_copy: kidreaper cannot see page faults here");
    }
    if (f.btf && !f.tp_rss_stat) {
        problems.emplace_back("no kmem:rss_stat tracepoint: kidreaper needs Linux 5.5 or newer");
    }
    if (f.btf && (!f.tp_sched_process_fork || !f.tp_sched_process_exit)) {
        problems.emplace_back("no sched_process_fork/exit tracepoints in this kernel's BTF");
    }
    return problems;
}

KernelFeatures require_usable_kernel(const SystemPaths& paths) {
    KernelFeatures features = probe_features(paths);
    const auto problems = blocking_problems(features);
    if (!problems.empty()) {
        throw Error(problems.front());
    }
    return features;
}

std::string format_features(const KernelFeatures& f) {
    std::ostringstream out;
    auto line = [&out](std::string_view name, bool value, std::string_view note = {}) {
        out << "  " << name << ": " << (value ? "yes" : "no");
        if (!note.empty()) {
            out << " (" << note << ")";
        }
        out << '\n';
    };
    out << "kernel " << f.release << '\n';
    line("root", f.is_root);
    line("BTF", f.btf, "/sys/kernel/btf/vmlinux");
    line("raw tracepoint programs", f.raw_tracepoint_prog);
    line("per-CPU hash maps", f.percpu_hash_map);
    line("tracepoint exceptions:page_fault_user", f.tp_page_fault_user);
    line("tracepoint exceptions:page_fault_kernel", f.tp_page_fault_kernel);
    line("tracepoint kmem:rss_stat", f.tp_rss_stat);
    line("tracepoint sched:sched_process_fork", f.tp_sched_process_fork);
    line("tracepoint sched:sched_process_exit", f.tp_sched_process_exit);
    line("tracefs mounted", f.tracefs_mounted, "not needed");
    line("kprobe PMU", f.kprobe_pmu, "optional");
    line("wp_page_copy symbol", f.wp_page_copy_symbol, "optional");
    line("finish_fault symbol", f.finish_fault_symbol, "optional");
    line("do_wp_page symbol", f.do_wp_page_symbol, "optional, mm mode");
    line("mm fault source", f.mm_fault_source(), "kprobes on the write-protect path");
    line("every mm counter change traced", f.rss_stat_per_change, "optional, 6.2+");
    line("bpf_find_vma in raw tracepoints", f.find_vma_helper, "optional, 5.17+");
    line("tracepoint filemap:mm_filemap_fault", f.tp_mm_filemap_fault, "optional");
    const auto problems = blocking_problems(f);
    if (problems.empty()) {
        const CowSource chosen = f.cow_source();
        out << "usable: yes\nfault source: " << (chosen.mm ? "mm" : "tracepoints")
            << "\nmode: " << cow_source_name(chosen) << '\n';
    } else {
        out << "usable: no\n";
        for (const auto& problem : problems) {
            out << "  problem: " << problem << '\n';
        }
    }
    return out.str();
}

}  // namespace kidreaper
