// Faults, with real processes and the real kidreaper binary: the manager killed in the middle
// of a recycle, kidreaper itself killed, a child that ignores every signal, a child gone
// between the decision and the signal, and a churning manager watched for a minute.
#include <bpf/bpf.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "bpf_test_support.h"
#include "observe/procfs.h"
#include "reap_events.h"

namespace kidreaper {
namespace {

using nlohmann::json;
using testing::FixtureProcess;
using testing::reap_argv;
using testing::reap_events;
using testing::sibling_path;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;
using namespace std::chrono_literals;

// Polls `condition` every `step` until it holds or `timeout` passed; returns the last result.
bool await_condition(const std::function<bool()>& condition, milliseconds timeout,
                     milliseconds step = 20ms) {
    const auto deadline = Clock::now() + timeout;
    while (!condition()) {
        if (Clock::now() >= deadline) {
            return condition();
        }
        usleep(static_cast<useconds_t>(step.count() * 1000));
    }
    return true;
}

std::string read_text(const std::string& path) {
    std::ifstream file(path);
    std::stringstream text;
    text << file.rdbuf();
    return text.str();
}

// Alive (not a zombie) and the child of `parent`.
bool alive_child_of(pid_t pid, pid_t parent) {
    const auto stat = ProcFs().stat(pid);
    return stat && stat->ppid == parent && stat->state != 'Z';
}

bool alive(pid_t pid) {
    const auto stat = ProcFs().stat(pid);
    return stat && stat->state != 'Z';
}

// A temporary directory, removed with its contents on destruction.
class TempDir {
public:
    TempDir() {
        char pattern[] = "/tmp/kr-faults-XXXXXX";
        if (mkdtemp(pattern) == nullptr) {
            throw std::runtime_error("mkdtemp failed");
        }
        path_ = pattern;
    }
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

// A command run in the background, its stdout and stderr going to files the test reads
// while it runs (kidreaper flushes each event). SIGKILLed and reaped on destruction.
class BackgroundRun {
public:
    explicit BackgroundRun(const std::vector<std::string>& argv) {
        const std::string out = dir_.file("stdout");
        const std::string err = dir_.file("stderr");
        pid_ = fork();
        if (pid_ < 0) {
            throw std::runtime_error("fork failed");
        }
        if (pid_ == 0) {
            const int out_fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
            const int err_fd = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
            if (out_fd < 0 || err_fd < 0) {
                _exit(126);
            }
            dup2(out_fd, STDOUT_FILENO);
            dup2(err_fd, STDERR_FILENO);
            testing::exec_argv(argv);
        }
    }
    ~BackgroundRun() {
        if (!finished()) {
            kill(pid_, SIGKILL);
            int status = 0;
            waitpid(pid_, &status, 0);
        }
    }
    BackgroundRun(const BackgroundRun&) = delete;
    BackgroundRun& operator=(const BackgroundRun&) = delete;

    pid_t pid() const { return pid_; }
    // Its stdout so far, up to the last complete line.
    std::string output() const {
        const std::string text = read_text(dir_.file("stdout"));
        const auto last = text.rfind('\n');
        return last == std::string::npos ? std::string() : text.substr(0, last + 1);
    }
    std::string errors() const { return read_text(dir_.file("stderr")); }
    // Everything it said, for failure messages.
    std::string transcript() const { return output() + "--- stderr:\n" + errors(); }

    // True once it has exited (reaped here); status() then tells how.
    bool finished() {
        if (status_) {
            return true;
        }
        int status = 0;
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
            status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        return status_.has_value();
    }
    // Its exit status (128 + N when killed by signal N), once finished.
    std::optional<int> status() const { return status_; }

    // Waits up to `timeout` for it to exit; returns its status, or nullopt if it still runs.
    std::optional<int> await_exit(milliseconds timeout) {
        await_condition([this] { return finished(); }, timeout);
        return status_;
    }

    // Waits until it emitted an event `name` for which `matches` holds (any such event
    // when not given); nullopt at the timeout or when it exited without one.
    std::optional<json> await_event(const std::string& name, milliseconds timeout,
                                    const std::function<bool(const json&)>& matches = {}) {
        std::optional<json> found;
        await_condition(
            [&] {
                const bool ended = finished();  // before reading: its last words count
                for (const auto& event : reap_events(output(), name)) {
                    if (!matches || matches(event)) {
                        found = event;
                        return true;
                    }
                }
                return ended;
            },
            timeout);
        return found;
    }

private:
    TempDir dir_;
    pid_t pid_ = -1;
    std::optional<int> status_;
};

// For the scope, orphans of this process's descendants (children of a killed fixture
// manager) are re-parented to it, not to init: the test can tell they were re-parented,
// and reaps them itself.
class SubreaperScope {
public:
    SubreaperScope() {
        if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
            throw std::runtime_error("PR_SET_CHILD_SUBREAPER failed");
        }
    }
    ~SubreaperScope() { prctl(PR_SET_CHILD_SUBREAPER, 0); }
    SubreaperScope(const SubreaperScope&) = delete;
    SubreaperScope& operator=(const SubreaperScope&) = delete;
};

// Children of a killed manager re-parented to the test: SIGKILLed and reaped at the end.
class Orphans {
public:
    explicit Orphans(std::vector<pid_t> pids) : pids_(std::move(pids)) {}
    ~Orphans() {
        for (const pid_t pid : pids_) {
            // Only ours: a pid that is not our child any more may be someone else's now.
            if (const auto stat = ProcFs().stat(pid); stat && stat->ppid == getpid()) {
                kill(pid, SIGKILL);
                waitpid(pid, nullptr, 0);
            }
        }
    }
    Orphans(const Orphans&) = delete;
    Orphans& operator=(const Orphans&) = delete;
    const std::vector<pid_t>& pids() const { return pids_; }

private:
    std::vector<pid_t> pids_;
};

std::vector<pid_t> child_pids(const FixtureProcess& fixture) {
    std::vector<pid_t> pids;
    for (const auto& [name, pid] : fixture.children()) {
        pids.push_back(pid);
    }
    return pids;
}

// Events in `output` (any name) after the first one named `marker`.
std::vector<json> events_after(const std::string& output, const std::string& marker) {
    std::vector<json> after;
    bool seen = false;
    std::istringstream lines(output);
    std::string line;
    while (std::getline(lines, line)) {
        if (line.empty()) {
            continue;
        }
        json event = json::parse(line);
        if (seen) {
            after.push_back(std::move(event));
        } else if (event.at("event") == marker) {
            seen = true;
        }
    }
    return after;
}

// Every event of kidreaper's that would have signalled (or did signal) `pid`.
std::vector<json> signalling_events_for(const std::string& output, pid_t pid) {
    std::vector<json> found;
    for (const char* name : {"recycle", "escalate"}) {
        for (auto& event : reap_events(output, name)) {
            if (event.at("pid") == pid) {
                found.push_back(std::move(event));
            }
        }
    }
    return found;
}

// A kidreaper run is under way (this process's run_command or BackgroundRun child):
// kidreaper has loaded its programs once more are loaded than before it started.
bool programs_loaded_beyond(int programs_before) {
    return testing::count_loaded_programs() > programs_before;
}

// After the manager is SIGKILLed in the middle of a recycle (here: while the pre-hook for
// its largest child runs), kidreaper says the manager is gone and exits 1, and signals none
// of the orphans: they were re-parented, each is alive when kidreaper has exited.
TEST(Faults, ManagerKilledDuringThePreHookLeavesItsOrphansAlone) {
    KR_REQUIRE_BPF();
    const SubreaperScope subreaper;
    FixtureProcess fixture({"--preload", "16M", "--orphans-survive", "--child", "big1=leak:24M",
                            "--child", "small1=idle", "--child", "small2=idle"});
    fixture.wait_ready();
    fixture.go_and_wait_done(3);
    const pid_t manager = fixture.manager();
    const Orphans orphans(child_pids(fixture));
    const TempDir dir;
    const std::string chosen = dir.file("chosen");
    const std::string release = dir.file("release");
    // The hook says whom it was asked about, then holds the recycle until released (or
    // until the directory is gone: a failed test must not leave it behind).
    const std::string hook = "echo $KIDREAPER_PID > " + chosen + ".tmp && mv " + chosen + ".tmp " +
                             chosen + "; while [ ! -e " + release + " ] && [ -e " + chosen +
                             " ]; do sleep 0.05; done";
    BackgroundRun kidreaper(reap_argv({"--pid", std::to_string(manager)},
                                      {"--pre-hook", hook, "--hook-timeout", "60s"}));
    ASSERT_TRUE(await_condition([&] { return std::filesystem::exists(chosen); }, 60s))
        << "the pre-hook never ran: " << kidreaper.transcript();
    EXPECT_EQ(std::stoi(read_text(chosen)), fixture.child("big1"));

    ASSERT_EQ(kill(manager, SIGKILL), 0);
    for (const pid_t pid : orphans.pids()) {
        ASSERT_TRUE(await_condition([&] { return alive_child_of(pid, getpid()); }, 10s))
            << pid << " was not re-parented to the test (or died)";
    }
    std::ofstream(release).close();  // the recycle goes on, its manager gone

    const auto status = kidreaper.await_exit(30s);
    ASSERT_TRUE(status) << "kidreaper still runs with its manager gone: " << kidreaper.transcript();
    EXPECT_EQ(*status, 1) << kidreaper.transcript();
    const std::string output = kidreaper.output();
    const auto gone = reap_events(output, "manager-gone");
    ASSERT_EQ(gone.size(), 1u) << output;
    EXPECT_EQ(gone[0].at("manager"), manager);
    EXPECT_EQ(gone[0].at("action"), "exit");
    for (const pid_t pid : orphans.pids()) {
        EXPECT_TRUE(alive_child_of(pid, getpid())) << pid << " died: signalled? " << output;
        // Not in this run at all: the only recycle under way was held by the hook until the
        // manager had gone, so any signal was to an orphan.
        EXPECT_TRUE(signalling_events_for(output, pid).empty()) << pid << ": " << output;
    }
}

// The same with the recycle in flight: the child ignores the graceful signal and waits out
// its grace; the manager dies before the grace ends. kidreaper exits 1 on manager-gone and
// never escalates to the orphan.
TEST(Faults, ManagerKilledWhileARecycleAwaitsItsGraceNothingEscalates) {
    KR_REQUIRE_BPF();
    const SubreaperScope subreaper;
    FixtureProcess fixture({"--preload", "16M", "--orphans-survive", "--children-ignore", "TERM",
                            "--child", "big1=leak:24M", "--child", "small=idle"});
    fixture.wait_ready();
    fixture.go_and_wait_done(2);
    const pid_t manager = fixture.manager();
    const pid_t big1 = fixture.child("big1");
    const Orphans orphans(child_pids(fixture));
    BackgroundRun kidreaper(reap_argv({"--pid", std::to_string(manager)},
                                      {"--grace", "5s", "--escalate", "--max-concurrent", "1"}));
    const auto recycle = kidreaper.await_event("recycle", 60s);
    ASSERT_TRUE(recycle) << kidreaper.transcript();
    ASSERT_EQ(recycle->at("pid"), big1);
    ASSERT_TRUE(alive_child_of(big1, manager)) << "it ignores TERM: the recycle is in flight";

    ASSERT_EQ(kill(manager, SIGKILL), 0);
    const auto status = kidreaper.await_exit(30s);
    ASSERT_TRUE(status) << "kidreaper still runs with its manager gone: " << kidreaper.transcript();
    EXPECT_EQ(*status, 1) << kidreaper.transcript();
    const std::string output = kidreaper.output();
    const auto gone = reap_events(output, "manager-gone");
    ASSERT_EQ(gone.size(), 1u) << output;
    EXPECT_EQ(gone[0].at("manager"), manager);
    EXPECT_TRUE(reap_events(output, "escalate").empty()) << output;
    for (const auto& event : events_after(output, "manager-gone")) {
        EXPECT_FALSE(event.contains("pid") &&
                     (event.at("event") == "recycle" || event.at("event") == "escalate"))
            << event.dump();
    }
    for (const pid_t pid : orphans.pids()) {
        EXPECT_TRUE(alive_child_of(pid, getpid())) << pid << " died: signalled? " << output;
    }
    EXPECT_EQ(signalling_events_for(output, big1).size(), 1u) << "only the first TERM: " << output;
}

// BPF object ids: programs, maps and links.
struct BpfIds {
    std::set<std::uint32_t> programs;
    std::set<std::uint32_t> maps;
    std::set<std::uint32_t> links;
};

std::string describe(const std::set<std::uint32_t>& ids) {
    std::string text;
    for (const auto id : ids) {
        text += (text.empty() ? "" : " ") + std::to_string(id);
    }
    return "{" + text + "}";
}

// The BPF objects `pid` holds file descriptors of, from /proc/PID/fdinfo ("prog_id:",
// "map_id:", "link_id:" lines; kernels that lack a line give an empty set for it).
BpfIds held_through_fdinfo(pid_t pid) {
    BpfIds ids;
    std::error_code error;
    for (const auto& entry :
         std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fdinfo", error)) {
        std::ifstream info(entry.path());
        std::string key;
        std::string value;
        while (info >> key >> value) {
            std::uint32_t id = 0;
            if (std::from_chars(value.data(), value.data() + value.size(), id).ec != std::errc()) {
                continue;
            }
            if (key == "prog_id:") {
                ids.programs.insert(id);
            } else if (key == "map_id:") {
                ids.maps.insert(id);
            } else if (key == "link_id:") {
                ids.links.insert(id);
            }
        }
    }
    return ids;
}

// Every id the kernel has now, of one kind (bpf_*_get_next_id).
std::set<std::uint32_t> loaded_ids(int (*next)(__u32, __u32*)) {
    std::set<std::uint32_t> ids;
    __u32 id = 0;
    while (next(id, &id) == 0) {
        ids.insert(id);
    }
    return ids;
}

BpfIds loaded_now() {
    return {loaded_ids(bpf_prog_get_next_id), loaded_ids(bpf_map_get_next_id),
            loaded_ids(bpf_link_get_next_id)};
}

std::set<std::uint32_t> still_there(const std::set<std::uint32_t>& ids,
                                    const std::set<std::uint32_t>& loaded) {
    std::set<std::uint32_t> left;
    for (const auto id : ids) {
        if (loaded.contains(id)) {
            left.insert(id);
        }
    }
    return left;
}

std::set<std::uint32_t> new_ids(const std::set<std::uint32_t>& now,
                                const std::set<std::uint32_t>& before) {
    std::set<std::uint32_t> added;
    for (const auto id : now) {
        if (!before.contains(id)) {
            added.insert(id);
        }
    }
    return added;
}

constexpr const char* kBpftool = "/usr/sbin/bpftool";

// `bpftool -j KIND show`, parsed; nullopt when it fails.
std::optional<json> bpftool_show(const std::string& kind) {
    const auto result = testing::run_command({kBpftool, "-j", kind, "show"}, 30s);
    if (result.exit_status != 0) {
        return std::nullopt;
    }
    try {
        return json::parse(result.output);
    } catch (const json::exception&) {
        return std::nullopt;
    }
}

// From a bpftool listing: every id listed, and the ids it says `pid` holds ("pids",
// where this bpftool can tell; `pids_known` false when no entry has the field).
struct BpftoolView {
    std::set<std::uint32_t> listed;
    std::set<std::uint32_t> held;
    bool pids_known = false;
};

BpftoolView bpftool_view(const json& listing, pid_t pid) {
    BpftoolView view;
    for (const auto& object : listing) {
        const auto id = object.at("id").get<std::uint32_t>();
        view.listed.insert(id);
        if (!object.contains("pids")) {
            continue;
        }
        view.pids_known = true;
        for (const auto& holder : object.at("pids")) {
            if (holder.at("pid") == pid) {
                view.held.insert(id);
            }
        }
    }
    return view;
}

// SIGKILLed, kidreaper cleans up nothing itself: the kernel must free every program, map
// and link it held once its descriptors are closed (programs after an RCU grace period).
TEST(Faults, KidreaperKilledLeavesNoProgramOrMapBehind) {
    KR_REQUIRE_BPF();
    const bool have_bpftool = access(kBpftool, X_OK) == 0;
    const bool in_testbed = std::getenv("KIDREAPER_TESTBED") != nullptr;
    if (!have_bpftool && testing::running_in_ci() && !in_testbed) {
        FAIL() << "CI=true and " << kBpftool << " is missing (Debian package bpftool)";
    }
    if (!have_bpftool) {
        std::cerr << "note: no " << kBpftool
                  << ": checking through fdinfo and the kernel's id lists only\n";
    }
    FixtureProcess fixture({"--preload", "4M", "--child", "small=idle"});
    fixture.wait_ready();
    const BpfIds before = loaded_now();
    BackgroundRun kidreaper(reap_argv({"--pid", std::to_string(fixture.manager())}, {}));
    ASSERT_TRUE(kidreaper.await_event("start", 60s)) << kidreaper.transcript();

    BpfIds held = held_through_fdinfo(kidreaper.pid());
    const BpfIds now = loaded_now();
    // A kernel without the fdinfo id lines: what appeared since kidreaper started (the BPF
    // lock keeps other runs out).
    if (held.programs.empty()) {
        held.programs = new_ids(now.programs, before.programs);
    }
    if (held.maps.empty()) {
        held.maps = new_ids(now.maps, before.maps);
    }
    if (have_bpftool) {
        const auto programs = bpftool_show("prog");
        const auto maps = bpftool_show("map");
        ASSERT_TRUE(programs && maps) << "bpftool -j prog/map show failed";
        for (const auto& [listing, ids, kind] : {std::tuple{&*programs, &held.programs, "program"},
                                                 std::tuple{&*maps, &held.maps, "map"}}) {
            const BpftoolView view = bpftool_view(*listing, kidreaper.pid());
            if (view.pids_known) {
                EXPECT_FALSE(view.held.empty()) << "bpftool names no " << kind << " of kidreaper";
                ids->insert(view.held.begin(), view.held.end());
            }
        }
    }
    ASSERT_FALSE(held.programs.empty()) << "kidreaper holds no program";
    ASSERT_FALSE(held.maps.empty()) << "kidreaper holds no map";
    EXPECT_TRUE(still_there(held.programs, now.programs) == held.programs);
    EXPECT_TRUE(still_there(held.maps, now.maps) == held.maps);

    ASSERT_EQ(kill(kidreaper.pid(), SIGKILL), 0);
    ASSERT_TRUE(kidreaper.await_exit(10s));
    EXPECT_EQ(kidreaper.status(), 128 + SIGKILL);
    BpfIds left;
    const bool freed = await_condition(
        [&] {
            const BpfIds loaded = loaded_now();
            left = {still_there(held.programs, loaded.programs),
                    still_there(held.maps, loaded.maps), still_there(held.links, loaded.links)};
            return left.programs.empty() && left.maps.empty() && left.links.empty();
        },
        10s, 100ms);
    EXPECT_TRUE(freed) << "still loaded 10 s after SIGKILL: programs " << describe(left.programs)
                       << ", maps " << describe(left.maps) << ", links " << describe(left.links)
                       << " (of programs " << describe(held.programs) << ", maps "
                       << describe(held.maps) << ", links " << describe(held.links) << ")";
    if (have_bpftool) {
        const auto programs = bpftool_show("prog");
        const auto maps = bpftool_show("map");
        ASSERT_TRUE(programs && maps);
        EXPECT_TRUE(still_there(held.programs, bpftool_view(*programs, 0).listed).empty());
        EXPECT_TRUE(still_there(held.maps, bpftool_view(*maps, 0).listed).empty());
    }
}

// /proc/PID/status SigIgn: the ignored signals as a mask (bit N-1 for signal N).
std::uint64_t ignored_signals(pid_t pid) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("SigIgn:", 0) == 0) {
            return std::stoull(line.substr(7), nullptr, 16);
        }
    }
    return 0;
}

// The fixture's "ignore-signals:" child really ignores everything catchable.
void expect_ignores_every_signal(pid_t pid) {
    const std::uint64_t mask = ignored_signals(pid);
    for (const int signal_number :
         {SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGTERM, SIGWINCH, SIGALRM}) {
        EXPECT_NE(mask & (std::uint64_t{1} << (signal_number - 1)), 0u)
            << "signal " << signal_number << " not ignored by " << pid;
    }
}

TEST(Faults, AChildThatIgnoresEverySignalIsKilledOnEscalation) {
    KR_REQUIRE_BPF();
    FixtureProcess fixture({"--preload", "16M", "--respawn", "--child",
                            "big1=ignore-signals:leak:24M", "--child", "small=idle"});
    fixture.wait_ready();
    fixture.go_and_wait_done(2);
    const pid_t big1 = fixture.child("big1");
    expect_ignores_every_signal(big1);
    const auto result =
        testing::run_command(reap_argv({"--pid", std::to_string(fixture.manager())},
                                       {"--grace", "600ms", "--escalate", "--once"}),
                             60s);
    ASSERT_EQ(result.exit_status, 0) << result.output;
    const auto recycles = reap_events(result.output, "recycle");
    ASSERT_EQ(recycles.size(), 1u) << result.output;
    EXPECT_EQ(recycles[0].at("pid"), big1);
    const auto escalations = reap_events(result.output, "escalate");
    ASSERT_FALSE(escalations.empty()) << result.output;
    for (const auto& escalation : escalations) {
        EXPECT_EQ(escalation.at("pid"), big1);
    }
    EXPECT_EQ(escalations.back().at("signal"), "KILL");
    EXPECT_EQ(escalations.back().at("outcome"), "sent");
    fixture.expect("exited " + std::to_string(big1), 10s);  // the manager reaped it
    EXPECT_FALSE(alive(big1));
    EXPECT_TRUE(alive_child_of(fixture.child("small"), fixture.manager()));
}

TEST(Faults, WithoutEscalationAChildThatIgnoresEverySignalKeepsItsSlot) {
    KR_REQUIRE_BPF();
    FixtureProcess fixture({"--preload", "16M", "--respawn", "--child",
                            "big1=ignore-signals:leak:24M", "--child", "big2=leak:20M", "--child",
                            "small=idle"});
    fixture.wait_ready();
    fixture.go_and_wait_done(3);
    const pid_t big1 = fixture.child("big1");
    const pid_t big2 = fixture.child("big2");
    expect_ignores_every_signal(big1);
    // big2 is over the limit too: with the one slot free it would go 700 ms (the stagger)
    // after big1.
    BackgroundRun kidreaper(reap_argv({"--pid", std::to_string(fixture.manager())},
                                      {"--grace", "500ms", "--max-concurrent", "1"}));
    const auto expired = kidreaper.await_event("grace-expired", 60s);
    ASSERT_TRUE(expired) << kidreaper.transcript();
    EXPECT_EQ(expired->at("pid"), big1);
    // The window: 3 s, fifteen intervals and four staggers; any recycle of another child in
    // it is a failure.
    const auto other = kidreaper.await_event(
        "recycle", 3s, [big1](const json& event) { return event.at("pid") != big1; });
    EXPECT_FALSE(other) << "recycled another child while one is in flight: " << other->dump();
    ASSERT_FALSE(kidreaper.finished()) << kidreaper.transcript();
    kill(kidreaper.pid(), SIGINT);
    ASSERT_TRUE(kidreaper.await_exit(20s)) << kidreaper.transcript();
    EXPECT_EQ(kidreaper.status(), 0) << kidreaper.transcript();

    const std::string output = kidreaper.output();
    const auto recycles = reap_events(output, "recycle");
    ASSERT_EQ(recycles.size(), 1u) << output;
    EXPECT_EQ(recycles[0].at("pid"), big1);
    EXPECT_TRUE(reap_events(output, "escalate").empty()) << output;
    EXPECT_TRUE(alive_child_of(big1, fixture.manager())) << "it ignores TERM";
    EXPECT_TRUE(alive_child_of(big2, fixture.manager()));
    EXPECT_TRUE(alive_child_of(fixture.child("small"), fixture.manager()));
}

// The chosen child dies between kidreaper's decision and its signal (the pre-hook kills
// it): kidreaper skips it, and signals nobody in its place.
TEST(Faults, AChildGoneBeforeItsSignalIsSkippedAndNobodyElseIsSignalled) {
    KR_REQUIRE_BPF();
    FixtureProcess fixture({"--preload", "16M", "--respawn", "--child", "big1=leak:24M", "--child",
                            "small1=idle", "--child", "small2=idle", "--child", "small3=idle"});
    fixture.wait_ready();
    fixture.go_and_wait_done(4);
    const pid_t big1 = fixture.child("big1");
    const TempDir dir;
    const std::string record = dir.file("chosen");
    const auto result = testing::run_command(
        reap_argv({"--pid", std::to_string(fixture.manager())},
                  {"--once", "--pre-hook",
                   "echo $KIDREAPER_PID >> " + record + "; kill -9 $KIDREAPER_PID; exit 0"}),
        60s);
    ASSERT_EQ(result.exit_status, 0) << result.output;
    EXPECT_EQ(read_text(record), std::to_string(big1) + "\n") << "the hook ran once, for big1";
    EXPECT_TRUE(reap_events(result.output, "recycle").empty()) << result.output;
    EXPECT_TRUE(reap_events(result.output, "escalate").empty()) << result.output;
    const auto skips = reap_events(result.output, "skip");
    ASSERT_EQ(skips.size(), 1u) << result.output;
    EXPECT_EQ(skips[0].at("pid"), big1);
    const std::string reason = skips[0].at("reason");
    EXPECT_TRUE(reason.find("not signalled") != std::string::npos ||
                reason.find("gone") != std::string::npos ||
                reason.find("exited") != std::string::npos)
        << reason;
    EXPECT_EQ(reason.find("vetoed"), std::string::npos) << reason;

    // Only big1 died (by the hook's hand); the others are as they were.
    fixture.expect("exited " + std::to_string(big1), 10s);
    for (const auto& line : fixture.drain(500ms)) {
        EXPECT_NE(line.rfind("exited ", 0), 0u) << "someone else died: " << line;
    }
    for (const auto& [name, pid] : fixture.children()) {
        if (pid != big1 && name != "respawned") {
            EXPECT_TRUE(alive_child_of(pid, fixture.manager())) << name;
        }
    }
}

// Churn settings: KIDREAPER_CHURN_CHILDREN, KIDREAPER_CHURN_RATE (forks per second) and
// KIDREAPER_CHURN_SECONDS override them. On the host the full run (1000 at 50 a second for
// 60 s); in the emulated kernels of scripts/kernel-testbed (KIDREAPER_TESTBED set), where
// a fork costs milliseconds, a smaller one by default (200 at 10 a second for 30 s).
struct ChurnSettings {
    unsigned children = 1000;
    unsigned forks_per_second = 50;
    unsigned seconds = 60;
};

unsigned setting(const char* name, unsigned fallback) {
    const char* text = std::getenv(name);
    if (text == nullptr || *text == '\0') {
        return fallback;
    }
    unsigned value = 0;
    const std::string_view view(text);
    const auto [end, error] = std::from_chars(view.data(), view.data() + view.size(), value);
    if (error != std::errc() || end != view.data() + view.size() || value == 0) {
        throw std::runtime_error(std::string(name) + " must be a whole number above zero");
    }
    return value;
}

ChurnSettings churn_settings() {
    ChurnSettings settings;
    if (std::getenv("KIDREAPER_TESTBED") != nullptr) {
        settings = {.children = 200, .forks_per_second = 10, .seconds = 30};
    }
    settings.children = setting("KIDREAPER_CHURN_CHILDREN", settings.children);
    settings.forks_per_second = setting("KIDREAPER_CHURN_RATE", settings.forks_per_second);
    settings.seconds = setting("KIDREAPER_CHURN_SECONDS", settings.seconds);
    return settings;
}

std::uint64_t read_number(const std::string& path) {
    std::ifstream file(path);
    std::uint64_t value = 0;
    file >> value;
    return value;
}

std::size_t count_processes() {
    std::size_t count = 0;
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
        const std::string name = entry.path().filename().string();
        count += !name.empty() && name.find_first_not_of("0123456789") == std::string::npos;
    }
    return count;
}

// Whether this process may exceed RLIMIT_NPROC (CAP_SYS_ADMIN or CAP_SYS_RESOURCE).
bool exempt_from_nproc() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("CapEff:", 0) == 0) {
            const std::uint64_t caps = std::stoull(line.substr(7), nullptr, 16);
            return (caps & (std::uint64_t{1} << 21)) != 0 || (caps & (std::uint64_t{1} << 24)) != 0;
        }
    }
    return false;
}

// Empty when this machine can hold `children` more processes (twice over, for the
// replacements forked while the exited wait to be reaped), else why not.
std::string churn_capacity_problem(unsigned children) {
    const std::uint64_t needed = count_processes() + 2ULL * children + 256;
    const std::uint64_t pid_max = read_number("/proc/sys/kernel/pid_max");
    const std::uint64_t threads_max = read_number("/proc/sys/kernel/threads-max");
    rlimit nproc{};
    getrlimit(RLIMIT_NPROC, &nproc);
    std::string problem;
    if (pid_max < needed) {
        problem += "kernel.pid_max " + std::to_string(pid_max) + " < " + std::to_string(needed);
    }
    if (threads_max < needed) {
        problem +=
            " kernel.threads-max " + std::to_string(threads_max) + " < " + std::to_string(needed);
    }
    if (nproc.rlim_cur != RLIM_INFINITY && nproc.rlim_cur < needed && !exempt_from_nproc()) {
        problem += " ulimit -u " + std::to_string(nproc.rlim_cur) + " < " + std::to_string(needed);
    }
    return problem;
}

// One life of a churn child, as the fixture told it (times as the test read the lines).
struct ChildLife {
    pid_t pid = 0;
    std::uint64_t start_ticks = 0;
    Clock::time_point forked{};
    std::optional<Clock::time_point> exited;
};

// Follows the fixture's "child PID churn START" and "exited PID churn" lines.
class ChurnLedger {
public:
    void take(const std::vector<std::string>& lines, Clock::time_point at) {
        for (const auto& line : lines) {
            std::istringstream fields(line);
            std::string word;
            pid_t pid = 0;
            std::string name;
            fields >> word >> pid >> name;
            if (name != "churn") {
                continue;
            }
            if (word == "child") {
                ChildLife life;
                life.pid = pid;
                life.forked = at;
                fields >> life.start_ticks;
                live_[pid] = lives_.size();
                lives_.push_back(life);
            } else if (word == "exited") {
                const auto it = live_.find(pid);
                ASSERT_NE(it, live_.end()) << "an exit of an unknown child: " << line;
                lives_[it->second].exited = at;
                live_.erase(it);
            }
        }
    }
    const std::vector<ChildLife>& lives() const { return lives_; }
    std::size_t alive_now() const { return live_.size(); }

private:
    std::vector<ChildLife> lives_;
    std::map<pid_t, std::size_t> live_;  // pid -> index into lives_, while it lives
};

double seconds_between(Clock::time_point from, Clock::time_point to) {
    return std::chrono::duration<double>(to - from).count();
}

// A manager keeping N children and replacing RATE of them per second (1000 and 50 by
// default), watched by `kidreaper diagnose` for a minute: every child the fixture had
// during the window is reported exactly once, none that it did not have, the exits are
// right, no kernel map overflowed, and kidreaper's memory stays flat.
TEST(Faults, ChurnLosesNoChildCountsNoneTwiceAndKeepsMemoryFlat) {
    KR_REQUIRE_BPF();
    const ChurnSettings churn = churn_settings();
    ASSERT_GE(churn.seconds, 20u) << "KIDREAPER_CHURN_SECONDS: at least 20 (the memory is "
                                     "sampled at 15 s and near the end)";
    const std::string capacity = churn_capacity_problem(churn.children);
    ASSERT_TRUE(capacity.empty()) << "this machine cannot hold the churn (lower "
                                     "KIDREAPER_CHURN_CHILDREN): "
                                  << capacity;
    const std::string churn_spec =
        std::to_string(churn.children) + "@" + std::to_string(churn.forks_per_second);
    FixtureProcess fixture({"--preload", "1M", "--churn", churn_spec});
    ChurnLedger ledger;
    bool ready = false;
    const auto start_deadline = Clock::now() + 120s;
    while (!ready) {
        ASSERT_LT(Clock::now(), start_deadline) << "the churn fixture never got ready";
        const auto lines = fixture.drain(100ms);
        ledger.take(lines, Clock::now());
        for (const auto& line : lines) {
            ready = ready || line == "ready";
        }
    }
    ASSERT_EQ(ledger.alive_now(), churn.children);

    const int programs_before = testing::count_loaded_programs();
    const auto launched = Clock::now();
    BackgroundRun kidreaper({sibling_path("../kidreaper"), "diagnose", "--pid",
                             std::to_string(fixture.manager()), "--format", "json", "--duration",
                             std::to_string(churn.seconds) + "s", "--interval", "1s"});
    std::optional<Clock::time_point> loaded;  // kidreaper's programs seen loaded
    // The last look that saw them not loaded yet: they were loaded between the two, so a
    // child that exited after this may have been seen (its programs ran before `loaded`).
    auto unloaded_last = launched;
    std::optional<std::uint64_t> early_rss;  // ~15 s into the window
    std::optional<std::uint64_t> late_rss;   // the last sample, 2 s before the window ends
    auto next_sample = Clock::now();
    const auto run_deadline = launched + seconds(churn.seconds) + 180s;
    while (!kidreaper.finished()) {
        ASSERT_LT(Clock::now(), run_deadline) << kidreaper.transcript();
        ledger.take(fixture.drain(100ms), Clock::now());
        const auto now = Clock::now();
        if (!loaded) {
            if (programs_loaded_beyond(programs_before)) {
                loaded = now;
            } else {
                unloaded_last = now;
            }
        }
        if (!loaded || now < next_sample) {
            continue;
        }
        next_sample = now + 1s;
        const double into = seconds_between(*loaded, now);
        if (into >= churn.seconds - 2.0) {
            continue;  // the report is being written: not the watch's memory
        }
        const auto status = ProcFs().status(kidreaper.pid());
        if (!status) {
            continue;
        }
        if (!early_rss && into >= 15.0) {
            early_rss = status->vm_rss;
        } else if (early_rss) {
            late_rss = status->vm_rss;
        }
    }
    const auto ended = Clock::now();
    ledger.take(fixture.drain(200ms), Clock::now());
    ASSERT_EQ(kidreaper.status(), 0) << kidreaper.errors();
    ASSERT_TRUE(loaded) << "kidreaper's programs were never seen loaded";
    const json report = json::parse(kidreaper.output());
    EXPECT_TRUE(report.at("warnings").empty())
        << "a kernel map overflowed: " << report.at("warnings");
    const double window = report.at("window_seconds");
    EXPECT_GE(window, churn.seconds - 1.0);

    // The watch began after the programs were loaded and ended before kidreaper exited, so
    // it covered [ended - window, loaded + window]. A child alive then (a second of margin
    // for the line timestamps and the last poll) must be reported; a reported child lived
    // between the last look before the load and `ended`.
    const auto must_from = ended - std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(window - 1.0));
    const auto must_until = *loaded + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(window - 1.0));
    ASSERT_LT(must_from, must_until) << "start-up took longer than the window";
    std::map<pid_t, std::vector<json>> reported;
    for (const auto& child : report.at("children")) {
        reported[child.at("pid").get<pid_t>()].push_back(child);
    }
    std::map<pid_t, std::vector<const ChildLife*>> lives_of;
    for (const auto& life : ledger.lives()) {
        lives_of[life.pid].push_back(&life);
    }
    std::size_t must_count = 0;
    for (const auto& [pid, lives] : lives_of) {
        std::size_t must = 0;
        std::size_t may = 0;
        bool must_be_exited = false;
        bool must_be_alive = false;
        for (const ChildLife* life : lives) {
            const bool overlaps_must =
                life->forked <= must_until && (!life->exited || *life->exited >= must_from);
            const bool overlaps_may =
                life->forked <= ended + 1s && (!life->exited || *life->exited >= unloaded_last);
            must += overlaps_must;
            may += overlaps_may;
            if (overlaps_must && life == lives.back()) {
                must_be_exited = life->exited && *life->exited <= must_until;
                must_be_alive = !life->exited || *life->exited > ended;
            }
            EXPECT_NE(life->start_ticks, 0u) << "the fixture could not read " << pid;
        }
        must_count += must;
        const auto found = reported.find(pid);
        const std::size_t count = found == reported.end() ? 0 : found->second.size();
        EXPECT_GE(count, must) << "child " << pid << " lost";
        EXPECT_LE(count, may) << "child " << pid << " counted twice (or never existed then)";
        if (found != reported.end() && count == must && must > 0) {
            const json& last = found->second.back();
            if (must_be_exited) {
                EXPECT_TRUE(last.at("exited").get<bool>()) << "exit of " << pid << " missed";
            }
            if (must_be_alive) {
                EXPECT_FALSE(last.at("exited").get<bool>()) << pid << " alive, reported exited";
            }
        }
    }
    for (const auto& [pid, children] : reported) {
        EXPECT_TRUE(lives_of.contains(pid)) << "reported " << pid << ", never a child";
    }
    // The full run sees the N alive plus RATE a second for the window.
    EXPECT_GE(must_count, churn.children + churn.forks_per_second * (churn.seconds - 10) * 9 / 10)
        << "the churn did not run at its rate";

    // Memory: the end value at most 1.25x the one at 15 s, plus 4 MiB. Diagnose keeps what
    // it reports: a record per child it saw (~0.6 KiB, with 32 B per sample: under 3 KiB
    // for a child of 20 s), nothing per poll or event beyond that. Between 15 s and the end
    // of the full run it sees ~2150 more children: up to ~6 MiB of records, under the ~8 MiB
    // the bound leaves over a ~17 MiB start (loader and BTF memory, freed early, absorbs
    // much of it). A leak per fork, exit or poll of a few KiB (~2150 forks, ~45 polls of
    // 1000 children) goes past it.
    ASSERT_TRUE(early_rss && late_rss) << "too short to sample the memory";
    const std::uint64_t bound = *early_rss * 5 / 4 + (4ULL << 20);
    EXPECT_LE(*late_rss, bound) << "VmRSS at 15 s " << *early_rss << " B, at the end " << *late_rss
                                << " B";
    RecordProperty("early_rss_bytes", std::to_string(*early_rss));
    RecordProperty("late_rss_bytes", std::to_string(*late_rss));
    std::cerr << "churn " << churn_spec << " for " << churn.seconds << " s: " << must_count
              << " children in the window, " << report.at("children").size() << " reported; VmRSS "
              << (*early_rss >> 10) << " KiB at 15 s, " << (*late_rss >> 10) << " KiB at the end\n";
}

}  // namespace
}  // namespace kidreaper
