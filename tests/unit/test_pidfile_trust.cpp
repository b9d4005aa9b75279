// Pidfile trust and the manager follow rule, on a fake file system and fake processes.
#include "policy/pidfile_trust.h"

#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <string>

#include <gtest/gtest.h>

#include "fake_proc.h"

namespace kidreaper {
namespace {

constexpr mode_t kDir = S_IFDIR | 0755;
constexpr mode_t kFile = S_IFREG | 0644;

// A file system given as lstat facts per path.
class FakeInspector final : public PathInspector {
public:
    FakeInspector() {
        add("/", 0, kDir);
        add("/run", 0, kDir);
        add("/tmp", 0, S_IFDIR | S_ISVTX | 0777);
        add("/var", 0, kDir);
    }
    void add(const std::string& path, uid_t uid, mode_t mode, gid_t gid = 0) {
        facts_[path] = PathFacts{uid, gid, mode};
    }
    void link(const std::string& path, const std::string& target, uid_t uid = 0) {
        add(path, uid, S_IFLNK | 0777);
        links_[path] = target;
    }
    std::optional<PathFacts> inspect(const std::filesystem::path& path) const override {
        const auto found = facts_.find(path.string());
        return found == facts_.end() ? std::nullopt : std::optional(found->second);
    }
    std::optional<std::filesystem::path> link_target(
        const std::filesystem::path& path) const override {
        const auto found = links_.find(path.string());
        return found == links_.end() ? std::nullopt
                                     : std::optional(std::filesystem::path(found->second));
    }

private:
    std::map<std::string, PathFacts> facts_;
    std::map<std::string, std::string> links_;
};

TEST(PidfileTrust, RootOwnedPathIsTrusted) {
    FakeInspector fs;
    fs.add("/run/apache2", 0, kDir);
    fs.add("/run/apache2/apache2.pid", 0, kFile);
    const PidfileTrust trust = assess_pidfile("/run/apache2/apache2.pid", fs);
    EXPECT_TRUE(trust.trusted()) << trust.reason;
}

TEST(PidfileTrust, ARootFileInAStickyDirectoryIsTrusted) {
    FakeInspector fs;
    fs.add("/tmp/server.pid", 0, kFile);
    EXPECT_TRUE(assess_pidfile("/tmp/server.pid", fs).trusted());
}

TEST(PidfileTrust, ADirectoryOwnedByTheAppUserLimitsItToThatUser) {
    FakeInspector fs;
    fs.add("/run/app", 33, kDir);  // RuntimeDirectory= with User=www-data
    fs.add("/run/app/app.pid", 0, kFile);
    const PidfileTrust trust = assess_pidfile("/run/app/app.pid", fs);
    EXPECT_FALSE(trust.trusted());
    EXPECT_FALSE(trust.names_nobody);
    ASSERT_TRUE(trust.only_user);
    EXPECT_EQ(*trust.only_user, 33U);
    EXPECT_NE(trust.reason.find("uid 33 (owner of /run/app)"), std::string::npos) << trust.reason;
}

TEST(PidfileTrust, AFileOwnedByAUserLimitsItToThatUser) {
    FakeInspector fs;
    fs.add("/tmp/app.pid", 1000, kFile);
    const PidfileTrust trust = assess_pidfile("/tmp/app.pid", fs);
    ASSERT_TRUE(trust.only_user);
    EXPECT_EQ(*trust.only_user, 1000U);
}

TEST(PidfileTrust, TwoUsersGroupsAndEverybodyNameNobody) {
    FakeInspector fs;
    fs.add("/run/app", 33, kDir);
    fs.add("/run/app/app.pid", 1000, kFile);
    EXPECT_TRUE(assess_pidfile("/run/app/app.pid", fs).names_nobody);

    fs.add("/run/app", 0, S_IFDIR | 0775, 50);
    fs.add("/run/app/app.pid", 0, kFile);
    const PidfileTrust group = assess_pidfile("/run/app/app.pid", fs);
    EXPECT_TRUE(group.names_nobody);
    EXPECT_NE(group.reason.find("group 50"), std::string::npos) << group.reason;

    fs.add("/run/app", 0, S_IFDIR | 0777);  // world-writable, no sticky bit
    EXPECT_TRUE(assess_pidfile("/run/app/app.pid", fs).names_nobody);

    fs.add("/run/app", 0, kDir);
    fs.add("/run/app/app.pid", 0, S_IFREG | 0666);
    EXPECT_TRUE(assess_pidfile("/run/app/app.pid", fs).names_nobody);
}

TEST(PidfileTrust, RootGroupWritableIsTrusted) {
    FakeInspector fs;
    fs.add("/run/app", 0, S_IFDIR | 0775, 0);
    fs.add("/run/app/app.pid", 0, S_IFREG | 0664, 0);
    EXPECT_TRUE(assess_pidfile("/run/app/app.pid", fs).trusted());
}

TEST(PidfileTrust, SymlinksAreFollowedAndCheckedOnTheWay) {
    FakeInspector fs;
    fs.link("/var/run", "/run");
    fs.add("/run/apache2", 0, kDir);
    fs.add("/run/apache2/apache2.pid", 0, kFile);
    EXPECT_TRUE(assess_pidfile("/var/run/apache2/apache2.pid", fs).trusted());

    // A user's link (in a sticky directory) leads into root's directory: the user decides.
    fs.link("/tmp/mine", "/run/apache2", 1000);
    const PidfileTrust via_user_link = assess_pidfile("/tmp/mine/apache2.pid", fs);
    ASSERT_TRUE(via_user_link.only_user);
    EXPECT_EQ(*via_user_link.only_user, 1000U);

    // A root link into a user's directory: the user decides.
    fs.add("/run/app", 33, kDir);
    fs.add("/run/app/app.pid", 0, kFile);
    fs.link("/run/app-link", "app");
    const PidfileTrust relative = assess_pidfile("/run/app-link/app.pid", fs);
    ASSERT_TRUE(relative.only_user);
    EXPECT_EQ(*relative.only_user, 33U);
}

TEST(PidfileTrust, LoopsMissingPathsAndALinkAsTheFileNameNobody) {
    FakeInspector fs;
    fs.link("/run/a", "/run/b");
    fs.link("/run/b", "/run/a");
    EXPECT_TRUE(assess_pidfile("/run/a/x.pid", fs).names_nobody);
    EXPECT_TRUE(assess_pidfile("/run/missing/x.pid", fs).names_nobody);
    fs.add("/run/real.pid", 0, kFile);
    fs.link("/run/x.pid", "/run/real.pid");
    EXPECT_TRUE(assess_pidfile("/run/x.pid", fs).names_nobody);
    fs.add("/run/file", 0, kFile);
    EXPECT_TRUE(assess_pidfile("/run/file/x.pid", fs).names_nobody);
    fs.add("/run/dir.pid", 0, kDir);
    EXPECT_TRUE(assess_pidfile("/run/dir.pid", fs).names_nobody);
}

TEST(PidfileTrust, DotDotIsResolvedOnTheWalk) {
    FakeInspector fs;
    fs.add("/run/app", 33, kDir);
    fs.add("/run/root.pid", 0, kFile);
    // /run/app/../root.pid goes through the user's directory first: it could be a link
    // there, so the user counts (stricter than the kernel, never looser).
    const PidfileTrust trust = assess_pidfile("/run/app/../root.pid", fs);
    EXPECT_FALSE(trust.trusted());
}

CandidateFacts process(pid_t pid, pid_t ppid, uid_t uid, const std::string& exe,
                       const std::string& cgroup = "0::/system.slice/app.service\n") {
    return CandidateFacts{pid, ppid, ProcessUids{uid, uid}, exe, cgroup};
}

TEST(FollowRule, AnUntrustedPidfileNamesOnlyItsUsersProcesses) {
    PidfileTrust trust;
    trust.only_user = 33;
    trust.reason = "pidfile /run/app/app.pid: it can be replaced by uid 33 (owner of /run/app)";
    EXPECT_FALSE(refuse_manager(trust, process(100, 1, 33, "/usr/bin/python3"), {}, 0));
    const auto refusal = refuse_manager(trust, process(200, 1, 0, "/usr/sbin/sshd"), {}, 0);
    ASSERT_TRUE(refusal);
    EXPECT_NE(refusal->find("pid 200 runs as uid 0/0"), std::string::npos) << *refusal;
    CandidateFacts setuid = process(300, 1, 33, "/usr/bin/python3");
    setuid.uids->effective = 0;
    EXPECT_TRUE(refuse_manager(trust, setuid, {}, 0));
}

TEST(FollowRule, APidfileThatNamesNobodyRefusesEveryone) {
    PidfileTrust trust;
    trust.names_nobody = true;
    trust.reason = "pidfile /x: anybody can replace it";
    EXPECT_TRUE(refuse_manager(trust, process(100, 1, 0, "/usr/sbin/apache2"), {}, 0));
}

TEST(FollowRule, ANewManagerMustMatchThePinnedIdentity) {
    const PidfileTrust trusted;
    const auto pinned = pin_identity(process(100, 1, 0, "/usr/sbin/apache2"));
    ASSERT_TRUE(pinned);
    EXPECT_FALSE(refuse_manager(trusted, process(150, 1, 0, "/usr/sbin/apache2"), pinned, 100));
    const auto other_exe =
        refuse_manager(trusted, process(150, 1, 0, "/usr/sbin/sshd"), pinned, 100);
    ASSERT_TRUE(other_exe);
    EXPECT_NE(other_exe->find("runs /usr/sbin/sshd"), std::string::npos) << *other_exe;
    EXPECT_TRUE(refuse_manager(trusted, process(150, 1, 1000, "/usr/sbin/apache2"), pinned, 100));
    EXPECT_TRUE(refuse_manager(trusted, process(150, 1, 0, "/usr/sbin/apache2", "0::/user.slice\n"),
                               pinned, 100));
    CandidateFacts unreadable = process(150, 1, 0, "/usr/sbin/apache2");
    unreadable.exe.reset();
    EXPECT_TRUE(refuse_manager(trusted, unreadable, pinned, 100));
    unreadable = process(150, 1, 0, "/usr/sbin/apache2");
    unreadable.uids.reset();
    EXPECT_TRUE(refuse_manager(trusted, unreadable, pinned, 100));
}

TEST(FollowRule, AChildOfTheOldManagerIsFollowed) {
    const PidfileTrust trusted;
    const auto pinned = pin_identity(process(100, 1, 1000, "/usr/bin/ruby3.1"));
    // unicorn's USR2: the old master forks and execs the new one (another binary path here).
    EXPECT_FALSE(
        refuse_manager(trusted, process(150, 100, 1000, "/opt/ruby/bin/ruby"), pinned, 100));
    // ...but still only as the pidfile's user when it is untrusted.
    PidfileTrust untrusted;
    untrusted.only_user = 1000;
    untrusted.reason = "r";
    EXPECT_TRUE(refuse_manager(untrusted, process(150, 100, 0, "/usr/bin/ruby3.1"), pinned, 100));
}

TEST(FollowRule, AnUnreadableIdentityIsNotPinned) {
    CandidateFacts facts = process(100, 1, 0, "/usr/sbin/apache2");
    facts.cgroup.reset();
    EXPECT_FALSE(pin_identity(facts));
}

TEST(PidfileTrust, TheRealFileSystem) {
    const testing::TempDir dir;
    const auto pidfile = dir.path() / "server.pid";
    std::ofstream(pidfile) << "123\n";
    const SystemPathInspector inspector;
    const PidfileTrust trust = assess_pidfile(pidfile, inspector);
    if (getuid() == 0) {
        EXPECT_TRUE(trust.trusted()) << trust.reason;
        ASSERT_EQ(::chown(dir.path().c_str(), 65534, 65534), 0);
        const PidfileTrust owned = assess_pidfile(pidfile, inspector);
        ASSERT_TRUE(owned.only_user) << owned.reason;
        EXPECT_EQ(*owned.only_user, 65534U);
    } else {
        ASSERT_TRUE(trust.only_user) << trust.reason;
        EXPECT_EQ(*trust.only_user, getuid());
    }
    ASSERT_EQ(::chmod(dir.path().c_str(), 0777), 0);
    EXPECT_TRUE(assess_pidfile(pidfile, inspector).names_nobody);
    const auto link = dir.path() / "link.pid";
    std::filesystem::create_symlink(pidfile, link);
    EXPECT_TRUE(assess_pidfile(link, inspector).names_nobody);
}

}  // namespace
}  // namespace kidreaper
