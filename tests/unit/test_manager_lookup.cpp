#include "observe/manager_lookup.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "expect_usage_error.h"
#include "fake_proc.h"
#include "observe/procfs.h"
#include "test_env.h"

namespace kidreaper {
namespace {

using testing::FakeProc;
using testing::ScopedEnv;
using testing::TempDir;
using testing::usage_error_message;

constexpr unsigned long long kHostNs = kInitialPidNamespace;
constexpr unsigned long long kContainerNs = 4026532001ULL;
constexpr unsigned long long kOtherContainerNs = 4026532002ULL;

// Answers from a table, as systemd would; counts the questions.
class FakeUnits final : public SystemdUnits {
public:
    void add(const std::string& name, UnitQuery query) { units_[name] = std::move(query); }
    UnitQuery facts(const std::string& name) const override {
        ++asked_;
        const auto it = units_.find(name);
        if (it == units_.end()) {
            UnitQuery query;
            query.problem = "unit " + name + " is not loaded (systemctl status " + name + ")";
            return query;
        }
        return it->second;
    }
    int asked() const { return asked_; }

private:
    std::map<std::string, UnitQuery> units_;
    mutable int asked_ = 0;
};

UnitQuery unit_facts(pid_t main_pid, std::string control_group) {
    UnitQuery query;
    query.facts = UnitFacts{main_pid, std::move(control_group)};
    return query;
}

ManagerSelector selector(ManagerSelector::Kind kind, std::string value) {
    ManagerSelector s;
    s.kind = kind;
    s.value = std::move(value);
    return s;
}

bool has(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

// ---- NSpid and namespace links -----------------------------------------------------

TEST(ParseStatusNspid, ReadsEveryLevelOutermostFirst) {
    EXPECT_EQ(parse_status_nspid("Name:\tx\nTgid:\t600\nNSpid:\t600\t7\nPPid:\t500\n"),
              (std::vector<pid_t>{600, 7}));
    EXPECT_EQ(parse_status_nspid("NSpid:\t42\n"), (std::vector<pid_t>{42}));
    EXPECT_EQ(parse_status_nspid("NSpid:\t900\t30\t7"), (std::vector<pid_t>{900, 30, 7}));
    EXPECT_EQ(parse_status_nspid("NSpid:  12   3  \n"), (std::vector<pid_t>{12, 3}));
}

TEST(ParseStatusNspid, RejectsHostileLines) {
    EXPECT_EQ(parse_status_nspid("Name:\tx\nTgid:\t1\n"), std::nullopt);  // Linux < 4.1
    EXPECT_EQ(parse_status_nspid("NSpid:\n"), std::nullopt);
    EXPECT_EQ(parse_status_nspid("NSpid:\t\t\n"), std::nullopt);
    EXPECT_EQ(parse_status_nspid("NSpid:\t600\t0\n"), std::nullopt);
    EXPECT_EQ(parse_status_nspid("NSpid:\t600\t-7\n"), std::nullopt);
    EXPECT_EQ(parse_status_nspid("NSpid:\t600\t+7\n"), std::nullopt);
    EXPECT_EQ(parse_status_nspid("NSpid:\t600\t7x\n"), std::nullopt);
    EXPECT_EQ(parse_status_nspid("NSpid:\t99999999999\n"), std::nullopt);
    EXPECT_EQ(parse_status_nspid("NSpid:\t600\t7\nNSpid:\t601\t8\n"), std::nullopt);
    EXPECT_EQ(parse_status_nspid(std::string_view("NSpid:\t6\0\t7\n", 10)), std::nullopt);
}

TEST(ParseStatusNspid, ANameCannotForgeTheLine) {
    // The kernel escapes a newline in comm, so a name holding "NSpid:" stays the Name line.
    EXPECT_EQ(parse_status_nspid("Name:\tNSpid:\t1\nNSpid:\t600\t7\n"),
              (std::vector<pid_t>{600, 7}));
}

TEST(ParseStatusNspid, AtMostTheKernelsNesting) {
    std::string line = "NSpid:";
    for (std::size_t i = 0; i < kMaxNsPids; ++i) {
        line += "\t" + std::to_string(100 + i);
    }
    ASSERT_TRUE(parse_status_nspid(line + "\n"));
    EXPECT_EQ(parse_status_nspid(line + "\t7\n"), std::nullopt);
}

TEST(ParseNsLink, ReadsTheInodeOfTheRightType) {
    EXPECT_EQ(parse_ns_link("pid:[4026531836]", "pid"), 4026531836ULL);
    EXPECT_EQ(parse_ns_link("net:[4026531840]", "net"), 4026531840ULL);
    EXPECT_EQ(parse_ns_link("net:[4026531840]", "pid"), std::nullopt);
    EXPECT_EQ(parse_ns_link("pid:[]", "pid"), std::nullopt);
    EXPECT_EQ(parse_ns_link("pid:[0]", "pid"), std::nullopt);
    EXPECT_EQ(parse_ns_link("pid:[-1]", "pid"), std::nullopt);
    EXPECT_EQ(parse_ns_link("pid:[+1]", "pid"), std::nullopt);
    EXPECT_EQ(parse_ns_link("pid:[12", "pid"), std::nullopt);
    EXPECT_EQ(parse_ns_link("pid:[12]x", "pid"), std::nullopt);
    EXPECT_EQ(parse_ns_link("pid:[1 2]", "pid"), std::nullopt);
    EXPECT_EQ(parse_ns_link("pid:[18446744073709551616]", "pid"), std::nullopt);
    EXPECT_EQ(parse_ns_link("pid:", "pid"), std::nullopt);
    EXPECT_EQ(parse_ns_link("", "pid"), std::nullopt);
}

TEST(ProcFsNamespaces, ReadsLinksNspidAndEveryPid) {
    const FakeProc proc;
    proc.add_namespaced(600, 500, kContainerNs, "600\t7");
    proc.add_simple(42, 1);
    proc.set_pid_namespace(42, kHostNs);
    proc.write(43, "status", "Name:\tx\nTgid:\t43\nPPid:\t1\n");
    const ProcFs fs(proc.root());
    EXPECT_EQ(fs.pids(), (std::vector<pid_t>{42, 43, 600}));
    EXPECT_EQ(fs.pid_namespace(600), kContainerNs);
    EXPECT_EQ(fs.pid_namespace(42), kHostNs);
    EXPECT_EQ(fs.pid_namespace(43), std::nullopt);
    EXPECT_EQ(fs.pid_namespace(0), std::nullopt);
    EXPECT_EQ(fs.ns_pids(600), (std::vector<pid_t>{600, 7}));
    EXPECT_EQ(fs.ns_pids(43), std::nullopt);
    EXPECT_EQ(fs.ns_pids(44), std::nullopt);
}

// ---- pid -----------------------------------------------------------------------------

TEST(FindManagerPid, ALiveProcess) {
    const FakeProc proc;
    proc.add_simple(4242, 1, "manager");
    const ManagerLookup lookup =
        find_manager(selector(ManagerSelector::Kind::pid, "4242"), ProcFs(proc.root()));
    EXPECT_EQ(lookup.pid, 4242);
    EXPECT_EQ(lookup.problem, "");
}

TEST(FindManagerPid, GoneZombieOrMalformedIsAProblemNotAThrow) {
    const FakeProc proc;
    proc.add_simple(4243, 1, "dead", 'Z');
    const ProcFs fs(proc.root());
    for (const auto& [value, expected] :
         std::vector<std::pair<std::string, std::string>>{{"4242", "process 4242 is not running"},
                                                          {"4243", "process 4243 is a zombie"},
                                                          {"42x", "invalid pid"},
                                                          {"1", "invalid pid"},
                                                          {"", "invalid pid"}}) {
        const ManagerLookup lookup = find_manager(selector(ManagerSelector::Kind::pid, value), fs);
        EXPECT_EQ(lookup.pid, std::nullopt) << value;
        EXPECT_TRUE(has(lookup.problem, expected)) << value << ": " << lookup.problem;
    }
}

// ---- pidfile -------------------------------------------------------------------------

TEST(FindManagerPidfile, PlainPidfileNamesAHostPid) {
    const FakeProc proc;
    const TempDir dir;
    proc.add_simple(4242, 1, "manager");
    const auto pidfile = dir.write("app.pid", "4242\n");
    const ManagerLookup lookup =
        find_manager(selector(ManagerSelector::Kind::pidfile, pidfile), ProcFs(proc.root()));
    EXPECT_EQ(lookup.pid, 4242);
}

TEST(FindManagerPidfile, MissingMalformedOrDeadIsAProblem) {
    const FakeProc proc;
    const TempDir dir;
    const ProcFs fs(proc.root());
    const ManagerLookup missing = find_manager(
        selector(ManagerSelector::Kind::pidfile, (dir.path() / "none.pid").string()), fs);
    EXPECT_EQ(missing.pid, std::nullopt);
    EXPECT_TRUE(has(missing.problem, "does not exist")) << missing.problem;

    const ManagerLookup malformed =
        find_manager(selector(ManagerSelector::Kind::pidfile, dir.write("bad.pid", "12 13\n")), fs);
    EXPECT_EQ(malformed.pid, std::nullopt);
    EXPECT_TRUE(has(malformed.problem, "expected one decimal process id")) << malformed.problem;

    const ManagerLookup dead =
        find_manager(selector(ManagerSelector::Kind::pidfile, dir.write("dead.pid", "4242")), fs);
    EXPECT_EQ(dead.pid, std::nullopt);
    EXPECT_TRUE(has(dead.problem, "process 4242 is not running")) << dead.problem;
    EXPECT_EQ(dead.problem.find('\n'), std::string::npos);
}

// A container: its init is host pid 500 (pid 1 inside), its manager host pid 600 (pid 7
// inside). Host pid 7 is some other process of the host; another container also has a 7.
class NamespacedPidfile : public ::testing::Test {
protected:
    void SetUp() override {
        proc_.add_namespaced(500, 1, kContainerNs, "500\t1");
        proc_.add_namespaced(600, 500, kContainerNs, "600\t7");
        proc_.add_namespaced(601, 600, kContainerNs, "601\t8");
        proc_.add_namespaced(7, 1, kHostNs, "7");
        proc_.add_namespaced(9, 1, kHostNs, "9");
        proc_.add_namespaced(700, 1, kOtherContainerNs, "700\t1");
        proc_.add_namespaced(701, 700, kOtherContainerNs, "701\t7");
    }
    // Writes the container's pidfile (ROOT/500/root/run/app.pid) holding `content`.
    std::string pidfile(std::string_view content, pid_t owner = 500) const {
        return proc_.write_path(std::filesystem::path(std::to_string(owner)) / "root/run/app.pid",
                                content);
    }
    ManagerLookup lookup(const std::string& path) const {
        return find_manager(selector(ManagerSelector::Kind::pidfile, path), ProcFs(proc_.root()));
    }
    FakeProc proc_;
};

TEST_F(NamespacedPidfile, TranslatesTheContainersPidToTheHosts) {
    const ManagerLookup found = lookup(pidfile("7\n"));
    EXPECT_EQ(found.pid, 600);  // never 7, the host's process of that number
    EXPECT_EQ(found.problem, "");
    EXPECT_EQ(lookup(pidfile("8")).pid, 601);
}

TEST_F(NamespacedPidfile, ThroughAnyProcessOfTheNamespace) {
    // /proc/600/root reaches the same files and the same pid namespace as /proc/500/root.
    EXPECT_EQ(lookup(pidfile("7", 600)).pid, 600);
    // The other container: its 7 is host pid 701.
    EXPECT_EQ(lookup(pidfile("7", 700)).pid, 701);
}

TEST_F(NamespacedPidfile, NoMatchIsAProblemEvenWhenTheHostHasThatPid) {
    const ManagerLookup none = lookup(pidfile("9"));  // host pid 9 exists
    EXPECT_EQ(none.pid, std::nullopt);
    EXPECT_EQ(none.problem,
              "pid 9 of the pid namespace of process 500 (pid:[4026532001]) is not "
              "running");
}

TEST_F(NamespacedPidfile, AZombieOrAForgedNspidIsNotTaken) {
    proc_.add_namespaced(602, 600, kContainerNs, "602\t10", 'Z');
    EXPECT_EQ(lookup(pidfile("10")).pid, std::nullopt);
    // An NSpid whose first pid is not the process's own (a /proc of another namespace).
    proc_.add_namespaced(603, 600, kContainerNs, "9999\t11");
    EXPECT_EQ(lookup(pidfile("11")).pid, std::nullopt);
    // No NSpid line at all (Linux < 4.1).
    proc_.add_process(604, FakeProc::make_stat(604, "old", 'S', 600),
                      "Name:\told\nTgid:\t604\nPPid:\t600\n");
    proc_.set_pid_namespace(604, kContainerNs);
    EXPECT_EQ(lookup(pidfile("12")).pid, std::nullopt);
}

TEST_F(NamespacedPidfile, NestedNamespacesMatchTheInnermostPid) {
    constexpr unsigned long long kInnerNs = 4026532003ULL;
    proc_.add_namespaced(800, 600, kInnerNs, "800\t30\t1");
    proc_.add_namespaced(801, 800, kInnerNs, "801\t31\t7");
    EXPECT_EQ(lookup(pidfile("7", 800)).pid, 801);
    EXPECT_EQ(lookup(pidfile("7", 500)).pid, 600);
}

TEST_F(NamespacedPidfile, TheOwnerMustBeReadable) {
    const std::string path = pidfile("7", 900);  // no process 900
    const ManagerLookup gone = lookup(path);
    EXPECT_EQ(gone.pid, std::nullopt);
    EXPECT_TRUE(has(gone.problem, "pid namespace of process 900")) << gone.problem;
}

TEST_F(NamespacedPidfile, DotDotIsNotFollowed) {
    pidfile("7");
    const std::string path = (proc_.root() / "500/root/run/../run/app.pid").string();
    const ManagerLookup climbed = lookup(path);
    EXPECT_EQ(climbed.pid, std::nullopt);
    EXPECT_TRUE(has(climbed.problem, "'..'")) << climbed.problem;
}

TEST_F(NamespacedPidfile, TheContainersInitMayBeTheManager) {
    // gunicorn as a container's init writes "1": that is host pid 500.
    EXPECT_EQ(lookup(pidfile("1\n")).pid, 500);
    EXPECT_TRUE(has(lookup(pidfile("0")).problem, "must be greater than 0"));
    // In the host's own namespace, pid 1 is init: never a manager.
    proc_.add_namespaced(1, 0, kHostNs, "1");
    const ManagerLookup init = lookup(pidfile("1", 9));
    EXPECT_EQ(init.pid, std::nullopt);
    EXPECT_TRUE(has(init.problem, "names init (pid 1)")) << init.problem;
}

TEST_F(NamespacedPidfile, AHostOwnerMeansHostPids) {
    // /proc/9/root/...: process 9 is in the host's namespace, so the file holds a host pid.
    EXPECT_EQ(lookup(pidfile("7", 9)).pid, 7);
}

TEST_F(NamespacedPidfile, OtherPathsUnderProcArePlain) {
    const std::string self = proc_.write_path("self/root/run/app.pid", "7");
    EXPECT_EQ(lookup(self).pid, 7);
}

// ---- cgroup --------------------------------------------------------------------------

class CgroupLookup : public ::testing::Test {
protected:
    ManagerLookup lookup(const std::filesystem::path& dir) const {
        return find_manager(selector(ManagerSelector::Kind::cgroup, dir.string()),
                            ProcFs(proc_.root()));
    }
    FakeProc proc_;
    TempDir cgroups_;
};

TEST_F(CgroupLookup, TheOneProcessWhoseParentIsOutside) {
    proc_.add_simple(100, 1, "manager");
    proc_.add_simple(101, 100);
    proc_.add_simple(102, 100);
    cgroups_.write("app.service/cgroup.procs", "101\n100\n102\n");
    const ManagerLookup found = lookup(cgroups_.path() / "app.service");
    EXPECT_EQ(found.pid, 100);
    EXPECT_EQ(found.problem, "");
}

TEST_F(CgroupLookup, NoProcess) {
    cgroups_.write("app.service/cgroup.procs", "");
    proc_.add_simple(100, 1, "zombie", 'Z');
    cgroups_.write("zombie.service/cgroup.procs", "100\n");
    const ManagerLookup none = lookup(cgroups_.path() / "app.service");
    EXPECT_EQ(none.pid, std::nullopt);
    EXPECT_EQ(none.problem, "no process in " + (cgroups_.path() / "app.service").string());
    EXPECT_EQ(lookup(cgroups_.path() / "zombie.service").pid, std::nullopt);
}

TEST_F(CgroupLookup, TwoRootsAreAProblemNamingThem) {
    proc_.add_simple(100, 1, "a");
    proc_.add_simple(200, 50, "b");
    proc_.add_simple(201, 200);
    cgroups_.write("two.scope/cgroup.procs", "100\n200\n201\n");
    const ManagerLookup two = lookup(cgroups_.path() / "two.scope");
    EXPECT_EQ(two.pid, std::nullopt);
    EXPECT_EQ(two.problem, "2 processes in " + (cgroups_.path() / "two.scope").string() +
                               " have a parent outside it: pids 100, 200; name the manager "
                               "with --pid or --pidfile");
}

TEST_F(CgroupLookup, NestedCgroupsCount) {
    // The manager in the top cgroup, its workers in sub-cgroups (and deeper).
    proc_.add_simple(100, 1, "manager");
    proc_.add_simple(101, 100);
    proc_.add_simple(102, 100);
    proc_.add_simple(103, 102);
    cgroups_.write("svc/cgroup.procs", "100\n");
    cgroups_.write("svc/workers/cgroup.procs", "101\n102\n");
    cgroups_.write("svc/workers/deep/cgroup.procs", "103\n");
    cgroups_.write("svc/empty/cgroup.procs", "");
    EXPECT_EQ(lookup(cgroups_.path() / "svc").pid, 100);
    // Only the workers' cgroup: 101 and 102 both have their parent outside it.
    const ManagerLookup workers = lookup(cgroups_.path() / "svc/workers");
    EXPECT_EQ(workers.pid, std::nullopt);
    EXPECT_TRUE(has(workers.problem, "pids 101, 102")) << workers.problem;
}

TEST_F(CgroupLookup, AManagerOnlyInASubCgroup) {
    proc_.add_simple(100, 1, "manager");
    proc_.add_simple(101, 100);
    cgroups_.write("svc/cgroup.procs", "");
    cgroups_.write("svc/payload/cgroup.procs", "100\n101\n");
    EXPECT_EQ(lookup(cgroups_.path() / "svc").pid, 100);
}

TEST_F(CgroupLookup, ExitedProcessesAreLeftOut) {
    proc_.add_simple(100, 1, "manager");
    proc_.add_simple(101, 100);
    cgroups_.write("svc/cgroup.procs", "100\n101\n150\n");  // 150 exited meanwhile
    EXPECT_EQ(lookup(cgroups_.path() / "svc").pid, 100);
}

TEST_F(CgroupLookup, RefusesWhatIsNotACgroup) {
    cgroups_.write("plain/file", "x");
    for (const std::filesystem::path& dir :
         {cgroups_.path() / "plain", cgroups_.path() / "plain/file", cgroups_.path() / "none"}) {
        const ManagerLookup refused = lookup(dir);
        EXPECT_EQ(refused.pid, std::nullopt);
        EXPECT_TRUE(has(refused.problem, "not a cgroup directory (no cgroup.procs)"))
            << refused.problem;
    }
    const ManagerLookup relative = lookup("system.slice/x.service");
    EXPECT_TRUE(has(relative.problem, "not an absolute path")) << relative.problem;
}

TEST_F(CgroupLookup, AMalformedCgroupProcsIsAProblem) {
    cgroups_.write("svc/cgroup.procs", "100\nhello\n");
    const ManagerLookup bad = lookup(cgroups_.path() / "svc");
    EXPECT_EQ(bad.pid, std::nullopt);
    EXPECT_TRUE(has(bad.problem, "not a pid: \"hello\"")) << bad.problem;
    cgroups_.write("svc2/cgroup.procs", "-5\n");
    EXPECT_EQ(lookup(cgroups_.path() / "svc2").pid, std::nullopt);
    cgroups_.write("svc3/cgroup.procs", "99999999\n");
    EXPECT_EQ(lookup(cgroups_.path() / "svc3").pid, std::nullopt);
}

TEST_F(CgroupLookup, SymlinkedDirectoriesAreNotFollowed) {
    proc_.add_simple(100, 1, "manager");
    proc_.add_simple(200, 1, "other");
    cgroups_.write("svc/cgroup.procs", "100\n");
    cgroups_.write("elsewhere/cgroup.procs", "200\n");
    std::filesystem::create_directory_symlink(cgroups_.path() / "elsewhere",
                                              cgroups_.path() / "svc/link");
    EXPECT_EQ(lookup(cgroups_.path() / "svc").pid, 100);
    const ManagerLookup link = lookup(cgroups_.path() / "svc/link");
    EXPECT_EQ(link.pid, std::nullopt);
}

// ---- unit ----------------------------------------------------------------------------

class UnitLookup : public ::testing::Test {
protected:
    ManagerLookup lookup(const std::string& unit) const {
        return find_manager(selector(ManagerSelector::Kind::unit, unit), ProcFs(proc_.root()),
                            units_, mounts_);
    }
    FakeProc proc_;
    TempDir cgroups_;
    FakeUnits units_;
    CgroupMounts mounts_{cgroups_.path() / "unified", cgroups_.path() / "systemd"};
};

TEST_F(UnitLookup, MainPid) {
    proc_.add_simple(100, 1, "gunicorn");
    proc_.write(100, "cgroup", "0::/system.slice/gunicorn.service\n");
    units_.add("gunicorn.service", unit_facts(100, "/system.slice/gunicorn.service"));
    const ManagerLookup found = lookup("gunicorn.service");
    EXPECT_EQ(found.pid, 100);
    EXPECT_EQ(found.problem, "");
}

TEST_F(UnitLookup, AMainPidOfAnotherNamespaceIsNeverTaken) {
    // A systemd in a container says MainPID 22; host pid 22 is a kernel thread.
    proc_.add_simple(22, 2, "cpuhp/1");
    proc_.write(22, "cgroup", "12:pids:/\n1:name=systemd:/\n0::/\n");
    units_.add("app.service", unit_facts(22, "/system.slice/app.service"));
    const ManagerLookup other = lookup("app.service");
    EXPECT_EQ(other.pid, std::nullopt);
    EXPECT_EQ(other.problem,
              "unit app.service: MainPID 22 is not a process in its cgroup "
              "/system.slice/app.service (a systemd of another pid namespace?)");
    // No cgroup file to read: not taken either.
    proc_.add_simple(23, 1, "x");
    units_.add("b.service", unit_facts(23, "/system.slice/b.service"));
    EXPECT_EQ(lookup("b.service").pid, std::nullopt);
}

TEST_F(UnitLookup, AMainPidInASubCgroupOrOnTheV1Line) {
    proc_.add_simple(100, 1, "app");
    proc_.write(100, "cgroup", "9:name=systemd:/system.slice/app.service/payload\n");
    units_.add("app.service", unit_facts(100, "/system.slice/app.service"));
    EXPECT_EQ(lookup("app.service").pid, 100);
}

TEST(InCgroup, TheV2OrNameSystemdLineAtOrBelowTheGroup) {
    EXPECT_TRUE(in_cgroup("0::/system.slice/a.service\n", "/system.slice/a.service"));
    EXPECT_TRUE(in_cgroup("0::/system.slice/a.service/sub\n", "/system.slice/a.service"));
    EXPECT_TRUE(in_cgroup("4:cpu:/\n1:name=systemd:/system.slice/a.service\n0::/\n",
                          "/system.slice/a.service"));
    EXPECT_FALSE(in_cgroup("0::/system.slice/a.service2\n", "/system.slice/a.service"));
    EXPECT_FALSE(in_cgroup("0::/system.slice\n", "/system.slice/a.service"));
    EXPECT_FALSE(in_cgroup("4:cpu:/system.slice/a.service\n", "/system.slice/a.service"));
    EXPECT_FALSE(in_cgroup("0:x:/system.slice/a.service\n", "/system.slice/a.service"));
    EXPECT_FALSE(in_cgroup("0::/kr/system.slice/a.service\n", "/system.slice/a.service"));
    EXPECT_FALSE(in_cgroup("garbage", "/system.slice/a.service"));
    EXPECT_FALSE(in_cgroup("0::/a\n", ""));
    EXPECT_FALSE(in_cgroup("", "/a"));
}

TEST_F(UnitLookup, ADeadMainPidIsAProblem) {
    units_.add("gunicorn.service", unit_facts(100, "/system.slice/gunicorn.service"));
    const ManagerLookup dead = lookup("gunicorn.service");
    EXPECT_EQ(dead.pid, std::nullopt);
    EXPECT_EQ(dead.problem, "unit gunicorn.service: MainPID: process 100 is not running");
}

TEST_F(UnitLookup, WithoutMainPidTheCgroupRuleOnItsControlGroup) {
    proc_.add_simple(100, 1, "httpd");
    proc_.add_simple(101, 100);
    cgroups_.write("unified/system.slice/httpd.service/cgroup.procs", "100\n101\n");
    units_.add("httpd.service", unit_facts(0, "/system.slice/httpd.service"));
    EXPECT_EQ(lookup("httpd.service").pid, 100);
}

TEST_F(UnitLookup, AScopeThroughTheV1Hierarchy) {
    proc_.add_simple(100, 1, "php-fpm");
    proc_.add_simple(101, 100);
    cgroups_.write("systemd/machine.slice/app.scope/cgroup.procs", "100\n101\n");
    units_.add("app.scope", unit_facts(0, "/machine.slice/app.scope"));
    EXPECT_EQ(lookup("app.scope").pid, 100);
    const ManagerLookup missing = [&] {
        units_.add("gone.scope", unit_facts(0, "/machine.slice/gone.scope"));
        return lookup("gone.scope");
    }();
    EXPECT_TRUE(has(missing.problem, "under no mounted cgroup v2 or name=systemd hierarchy"))
        << missing.problem;
}

TEST_F(UnitLookup, AnInactiveUnitOrAStrangeCgroupIsAProblem) {
    units_.add("idle.service", unit_facts(0, ""));
    EXPECT_EQ(lookup("idle.service").problem,
              "unit idle.service has no processes (is it running?)");
    units_.add("odd.service", unit_facts(0, "/system.slice/../../etc"));
    EXPECT_TRUE(has(lookup("odd.service").problem, "unexpected ControlGroup"));
    units_.add("rel.service", unit_facts(0, "system.slice/rel.service"));
    EXPECT_TRUE(has(lookup("rel.service").problem, "unexpected ControlGroup"));
}

TEST_F(UnitLookup, TheBusProblemIsPassedOn) {
    UnitQuery unreachable;
    unreachable.problem = "cannot reach systemd over D-Bus: No such file or directory";
    units_.add("app.service", unreachable);
    EXPECT_EQ(lookup("app.service").problem, unreachable.problem);
    EXPECT_EQ(lookup("nothere.service").problem,
              "unit nothere.service is not loaded (systemctl status nothere.service)");
}

TEST_F(UnitLookup, ABadNameIsNotAsked) {
    EXPECT_TRUE(has(lookup("app").problem, ".service or .scope")) << lookup("app").problem;
    EXPECT_EQ(units_.asked(), 0);
}

#ifndef KIDREAPER_STATIC_BUILD
TEST(SdBusSystemdUnits, NoSystemBusIsOneLine) {
    const TempDir dir;
    const std::string address = "unix:path=" + (dir.path() / "no-bus").string();
    const ScopedEnv env("DBUS_SYSTEM_BUS_ADDRESS", address);
    const UnitQuery query = SdBusSystemdUnits().facts("gunicorn.service");
    EXPECT_EQ(query.facts, std::nullopt);
    EXPECT_EQ(query.problem, "cannot reach systemd over D-Bus: No such file or directory");
}
#else
TEST(SdBusSystemdUnits, TheStaticBuildSaysItCannotAskAndNamesTheOtherSelectors) {
    const UnitQuery query = SdBusSystemdUnits().facts("gunicorn.service");
    EXPECT_EQ(query.facts, std::nullopt);
    EXPECT_EQ(query.problem,
              "unit gunicorn.service: this kidreaper is the static build, which cannot ask "
              "systemd over D-Bus (no libsystemd): name the server by --cgroup, --pidfile or "
              "--pid");
}
#endif

TEST(UnitNameProblem, SystemdsCharactersAndSuffixes) {
    for (const char* good : {"gunicorn.service", "kidreaper@gunicorn.service", "a-b_c:d.service",
                             "run-r0123abc.scope", "x\\x2dy.service", "A.service"}) {
        EXPECT_EQ(unit_name_problem(good), "") << good;
    }
    for (const char* bad :
         {"", "gunicorn", "gunicorn.socket", ".service", ".x.service", "a b.service", "a/b.service",
          "a;b.service", "kidreaper@.service", "@x.service", "a@b@c.service", "a\n.service"}) {
        const std::string why = unit_name_problem(bad);
        EXPECT_NE(why, "") << bad;
        EXPECT_EQ(why.find('\n'), std::string::npos) << why;
    }
    EXPECT_NE(unit_name_problem(std::string(248, 'a') + ".service"), "");
    EXPECT_EQ(unit_name_problem(std::string(247, 'a') + ".service"), "");
}

// ---- selectors -----------------------------------------------------------------------

TEST(Selector, KeysAndSyntax) {
    EXPECT_STREQ(selector_key(ManagerSelector::Kind::pid), "pid");
    EXPECT_STREQ(selector_key(ManagerSelector::Kind::pidfile), "pidfile");
    EXPECT_STREQ(selector_key(ManagerSelector::Kind::cgroup), "cgroup");
    EXPECT_STREQ(selector_key(ManagerSelector::Kind::unit), "unit");
    validate_selector(selector(ManagerSelector::Kind::pid, "4242"));
    validate_selector(selector(ManagerSelector::Kind::pidfile, "/run/app.pid"));
    validate_selector(selector(ManagerSelector::Kind::cgroup, "/sys/fs/cgroup/x.service"));
    validate_selector(selector(ManagerSelector::Kind::unit, "x.service"));
    EXPECT_TRUE(has(
        usage_error_message([] { validate_selector(selector(ManagerSelector::Kind::pid, "-1")); }),
        "invalid pid"));
    EXPECT_TRUE(has(usage_error_message([] {
                        validate_selector(selector(ManagerSelector::Kind::pidfile, "app.pid"));
                    }),
                    "--pidfile \"app.pid\": give an absolute path"));
    EXPECT_TRUE(has(
        usage_error_message([] { validate_selector(selector(ManagerSelector::Kind::cgroup, "")); }),
        "--cgroup"));
    EXPECT_TRUE(has(usage_error_message([] {
                        validate_selector(selector(ManagerSelector::Kind::unit, "x.timer"));
                    }),
                    ".service or .scope"));
}

// ---- pid namespace of kidreaper itself -----------------------------------------------

TEST(PidNamespaceProblem, OnlyTheInitialNamespaceIsFine) {
    EXPECT_EQ(pid_namespace_problem(4026531836ULL), "");
    EXPECT_EQ(pid_namespace_problem(4026532451ULL),
              "kidreaper runs in pid namespace pid:[4026532451], not the host's: the kernel "
              "reports host pids (run it with hostPID)");
}

TEST(RequireHostPidNamespace, PassesWhereTheTestsRun) {
    // The unit tests run on the host (the privileged tests check a namespace's refusal).
    std::optional<std::uint64_t> own = ProcFs().pid_namespace(::getpid());
    ASSERT_TRUE(own);
    if (*own != kInitialPidNamespace) {
        GTEST_SKIP() << "the tests run in a pid namespace";
    }
    require_host_pid_namespace();
}

}  // namespace
}  // namespace kidreaper
