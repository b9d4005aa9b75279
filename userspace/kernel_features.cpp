#include "kernel_features.h"

#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string_view>

#include "error.h"

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

// Which of `wanted` /proc/kallsyms lists (one pass over its lines).
std::set<std::string, std::less<>> kallsyms_find(const std::filesystem::path& proc,
                                                 std::initializer_list<std::string_view> wanted) {
    std::set<std::string, std::less<>> found;
    std::ifstream kallsyms(proc / "kallsyms");
    std::string address;
    std::string kind;
    std::string name;
    std::string line;
    while (std::getline(kallsyms, line)) {
        std::istringstream fields(line);
        if (fields >> address >> kind >> name &&
            std::find(wanted.begin(), wanted.end(), name) != wanted.end()) {
            found.insert(name);
        }
    }
    return found;
}

}  // namespace

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
    const auto symbols = kallsyms_find(paths.proc, {"wp_page_copy", "finish_fault"});
    features.wp_page_copy_symbol = symbols.contains("wp_page_copy");
    features.finish_fault_symbol = symbols.contains("finish_fault");
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
    if (f.btf && (!f.tp_page_fault_user || !f.tp_page_fault_kernel)) {
        problems.emplace_back(
            "no exceptions:page_fault_user/page_fault_kernel tracepoints: kidreaper's fault "
            "counting needs x86-64");
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
    line("every mm counter change traced", f.rss_stat_per_change, "optional, 6.2+");
    line("bpf_find_vma in raw tracepoints", f.find_vma_helper, "optional, 5.17+");
    line("tracepoint filemap:mm_filemap_fault", f.tp_mm_filemap_fault, "optional");
    const auto problems = blocking_problems(f);
    if (problems.empty()) {
        out << "usable: yes\nmode: " << cow_source_name(f.cow_source()) << '\n';
    } else {
        out << "usable: no\n";
        for (const auto& problem : problems) {
            out << "  problem: " << problem << '\n';
        }
    }
    return out.str();
}

}  // namespace kidreaper
