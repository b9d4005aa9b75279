// Test helpers: a temporary directory removed on destruction, and a fake /proc tree
// built inside one, for running the ProcFs readers without root or real processes.
#pragma once

#include <sys/types.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

namespace kidreaper::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
class TempDir {
public:
    TempDir() {
        std::string templ =
            (std::filesystem::temp_directory_path() / "kidreaper-test-XXXXXX").string();
        if (::mkdtemp(templ.data()) == nullptr) {
            throw std::system_error(errno, std::generic_category(), "mkdtemp " + templ);
        }
        path_ = templ;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);  // best effort: never throw from here
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::filesystem::path& path() const { return path_; }

    // Writes `content` to path()/relative (creating parent directories); returns the path.
    std::filesystem::path write(const std::filesystem::path& relative,
                                std::string_view content) const {
        const std::filesystem::path file = path_ / relative;
        std::filesystem::create_directories(file.parent_path());
        std::ofstream out(file, std::ios::binary | std::ios::trunc);
        out.write(content.data(), static_cast<std::streamsize>(content.size()));
        out.close();
        if (!out) {
            throw std::runtime_error("cannot write " + file.string());
        }
        return file;
    }

private:
    std::filesystem::path path_;
};

// A fake proc root: ROOT/PID/{stat,status,smaps_rollup,...} and ROOT/uptime.
class FakeProc {
public:
    const std::filesystem::path& root() const { return dir_.path(); }

    // A stat line as Linux 6.x prints it (52 fields), with the given values.
    static std::string make_stat(pid_t pid, std::string_view comm, char state, pid_t ppid,
                                 unsigned long long start_ticks = 4242) {
        std::string s = std::to_string(pid) + " (" + std::string(comm) + ") " + state + " " +
                        std::to_string(ppid) + " " + std::to_string(pid) + " " +
                        std::to_string(pid) + " 0 -1 4194560 2211 0 0 0 5 3 0 0 20 0 1 0 " +
                        std::to_string(start_ticks) +
                        " 17334272 1531 18446744073709551615 94171361460224 94171361489657 "
                        "140727385640032 0 0 0 0 4096 0 1 0 0 17 3 0 0 0 0 0 94171361504880 "
                        "94171361506560 94171375714304 140727385646729 140727385646751 "
                        "140727385646751 140727385649131 0\n";
        return s;
    }

    // Creates ROOT/PID with a stat file and, when non-empty, status and smaps_rollup.
    void add_process(pid_t pid, std::string_view stat_text, std::string_view status_text = {},
                     std::string_view smaps_rollup_text = {}) const {
        write(pid, "stat", stat_text);
        if (!status_text.empty()) {
            write(pid, "status", status_text);
        }
        if (!smaps_rollup_text.empty()) {
            write(pid, "smaps_rollup", smaps_rollup_text);
        }
    }

    // Shorthand: a process with a generated stat line only.
    void add_simple(pid_t pid, pid_t ppid, std::string_view comm = "worker",
                    char state = 'S') const {
        add_process(pid, make_stat(pid, comm, state, ppid));
    }

    // Writes ROOT/PID/NAME (any file: syscall, a truncated stat, ...).
    void write(pid_t pid, std::string_view name, std::string_view content) const {
        dir_.write(std::filesystem::path(std::to_string(pid)) / std::string(name), content);
    }

    // Makes ROOT/PID/ns/pid a symbolic link reading "pid:[INODE]", as the kernel's does.
    void set_pid_namespace(pid_t pid, unsigned long long inode) const {
        const std::filesystem::path ns = root() / std::to_string(pid) / "ns";
        std::filesystem::create_directories(ns);
        std::filesystem::remove(ns / "pid");
        std::filesystem::create_symlink("pid:[" + std::to_string(inode) + "]", ns / "pid");
    }

    // A process in pid namespace `ns_inode` whose NSpid line is `nspid` ("600\t7": host
    // pid first); its status has the Tgid and PPid lines too.
    void add_namespaced(pid_t pid, pid_t ppid, unsigned long long ns_inode, std::string_view nspid,
                        char state = 'S') const {
        add_process(pid, make_stat(pid, "worker", state, ppid),
                    "Name:\tworker\nTgid:\t" + std::to_string(pid) + "\nNSpid:\t" +
                        std::string(nspid) + "\nPPid:\t" + std::to_string(ppid) + "\n");
        set_pid_namespace(pid, ns_inode);
    }

    // Writes ROOT/RELATIVE (a pidfile under ROOT/PID/root/, ...); returns its path.
    std::string write_path(const std::filesystem::path& relative, std::string_view content) const {
        return dir_.write(relative, content).string();
    }

    // Writes ROOT/uptime.
    void set_uptime(std::string_view content) const { dir_.write("uptime", content); }

    // Removes ROOT/PID entirely, as when the process exits and is reaped.
    void remove_process(pid_t pid) const {
        std::filesystem::remove_all(root() / std::to_string(pid));
    }

    // Removes one file of ROOT/PID (e.g. the process died between two reads).
    void remove_file(pid_t pid, std::string_view name) const {
        std::filesystem::remove(root() / std::to_string(pid) / std::string(name));
    }

private:
    TempDir dir_;
};

}  // namespace kidreaper::testing
