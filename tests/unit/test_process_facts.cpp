// Process facts: the parsers on /proc's own text, and the readers on a fake /proc tree.
#include "observe/process_facts.h"

#include <unistd.h>

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "fake_proc.h"

namespace kidreaper {
namespace {

using testing::FakeProc;

constexpr const char* kTcp =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode\n"
    "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 "
    "5001 1 000000001f7c1055 100 0 0 10 0\n"
    "   1: 0100007F:1F90 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000    33        0 "
    "5002 1 000000005620fc2a 20 4 30 10 -1\n"
    "   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 "
    "0 1 000000001f7c1055 100 0 0 10 0\n"
    "garbage line\n"
    "   3: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 "
    "notanumber 1\n";

constexpr const char* kUnix =
    "Num       RefCount Protocol Flags    Type St Inode Path\n"
    "00000000b2bca8b9: 00000002 00000000 00010000 0001 01 6001 /run/php/php-fpm.sock\n"
    "000000005db14911: 00000003 00000000 00000000 0001 03 6002 /run/php/php-fpm.sock\n"
    "000000005db14912: 00000002 00000000 00010000 0005 01 6003\n"
    "000000005db14913: 00000002 00000000 0001000Z 0001 01 6004 /bad/flags\n";

TEST(ProcessFacts, ParsesTheUidLine) {
    const auto uids =
        parse_status_uids("Name:\tapache2\nUid:\t33\t0\t33\t33\nGid:\t33\t33\t33\t33\n");
    ASSERT_TRUE(uids);
    EXPECT_EQ(uids->real, 33U);
    EXPECT_EQ(uids->effective, 0U);
}

TEST(ProcessFacts, RejectsMalformedUidLines) {
    EXPECT_FALSE(parse_status_uids(""));
    EXPECT_FALSE(parse_status_uids("Name:\tx\n"));
    EXPECT_FALSE(parse_status_uids("Uid:\t33\t33\t33\n"));
    EXPECT_FALSE(parse_status_uids("Uid:\t33\t-1\t33\t33\n"));
    EXPECT_FALSE(parse_status_uids("Uid:\t33\t33\t33\t33\t33\n"));
    EXPECT_FALSE(parse_status_uids("Uid:\t99999999999\t0\t0\t0\n"));
}

TEST(ProcessFacts, ParsesSocketLinksOnly) {
    EXPECT_EQ(parse_socket_link("socket:[12345]"), 12345U);
    EXPECT_FALSE(parse_socket_link("pipe:[12345]"));
    EXPECT_FALSE(parse_socket_link("socket:[]"));
    EXPECT_FALSE(parse_socket_link("socket:[12a]"));
    EXPECT_FALSE(parse_socket_link("socket:[12"));
    EXPECT_FALSE(parse_socket_link("/dev/null"));
}

TEST(ProcessFacts, FindsListeningTcpSockets) {
    EXPECT_EQ(parse_tcp_listeners(kTcp), (std::set<std::uint64_t>{5001}));
    EXPECT_TRUE(parse_tcp_listeners("").empty());
    EXPECT_TRUE(parse_tcp_listeners("header only\n").empty());
}

TEST(ProcessFacts, FindsListeningUnixSockets) {
    EXPECT_EQ(parse_unix_listeners(kUnix), (std::set<std::uint64_t>{6001, 6003}));
}

TEST(ProcessFacts, StripsDeletedFromTheExecutable) {
    EXPECT_EQ(executable_identity("/usr/sbin/apache2 (deleted)"), "/usr/sbin/apache2");
    EXPECT_EQ(executable_identity("/usr/sbin/apache2"), "/usr/sbin/apache2");
}

TEST(ProcessFacts, ReadsAProcessFromAFakeTree) {
    const FakeProc proc;
    proc.add_simple(300, 1, "apache2");
    proc.write(300, "status", "Name:\tapache2\nUid:\t33\t33\t33\t33\n");
    proc.write(300, "comm", "apache2\n");
    proc.write(300, "cmdline", std::string("/usr/sbin/apache2\0-k\0start\0", 27));
    proc.write(300, "cgroup", "0::/system.slice/apache2.service\n");
    proc.write(300, "net/tcp", kTcp);
    proc.write(300, "net/unix", kUnix);
    const auto dir = proc.root() / "300";
    std::filesystem::create_symlink("/usr/sbin/apache2 (deleted)", dir / "exe");
    std::filesystem::create_directories(dir / "fd");
    std::filesystem::create_symlink("socket:[5001]", dir / "fd" / "3");
    std::filesystem::create_symlink("socket:[5002]", dir / "fd" / "4");
    std::filesystem::create_symlink("socket:[6001]", dir / "fd" / "5");
    std::filesystem::create_symlink("pipe:[7000]", dir / "fd" / "6");
    std::filesystem::create_symlink("/dev/null", dir / "fd" / "0");

    const ProcessFacts facts(proc.root());
    ASSERT_TRUE(facts.uids(300));
    EXPECT_EQ(facts.uids(300)->real, 33U);
    EXPECT_EQ(facts.executable(300), "/usr/sbin/apache2");
    EXPECT_EQ(facts.comm(300), "apache2");
    EXPECT_EQ(facts.cmdline(300), "/usr/sbin/apache2 -k start");
    EXPECT_EQ(facts.cgroup(300), "0::/system.slice/apache2.service\n");
    EXPECT_EQ(facts.socket_inodes(300), (std::vector<std::uint64_t>{5001, 5002, 6001}));
    EXPECT_EQ(facts.listening_sockets(300), (std::set<std::uint64_t>{5001, 6001}));
}

TEST(ProcessFacts, AGoneProcessHasNoFacts) {
    const FakeProc proc;
    const ProcessFacts facts(proc.root());
    EXPECT_FALSE(facts.uids(404));
    EXPECT_FALSE(facts.executable(404));
    EXPECT_FALSE(facts.cgroup(404));
    EXPECT_FALSE(facts.comm(404));
    EXPECT_FALSE(facts.cmdline(404));
    EXPECT_TRUE(facts.socket_inodes(404).empty());
    EXPECT_TRUE(facts.listening_sockets(404).empty());
}

TEST(ProcessFacts, ReadsThisProcess) {
    const ProcessFacts facts;
    const pid_t self = getpid();
    ASSERT_TRUE(facts.uids(self));
    EXPECT_EQ(facts.uids(self)->real, getuid());
    ASSERT_TRUE(facts.executable(self));
    EXPECT_EQ(*facts.executable(self), std::filesystem::read_symlink("/proc/self/exe").string());
}

}  // namespace
}  // namespace kidreaper
