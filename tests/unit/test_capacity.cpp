// Full kernel maps are reported once per map; a pid's identity is its start time; the
// diagnosis keeps the exited child whose pid a newer one took.
#include "observe/capacity.h"

#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/report.h"
#include "daemon/event_log.h"
#include "observe/readings.h"

namespace kidreaper {
namespace {

TEST(CapacityNotices, ReportEachMapOnceWhenItFirstDrops) {
    CapacityNotices notices;
    CapacityCounts counts;
    counts.children = {0, 16384};
    counts.exits = {0, 4096};
    EXPECT_TRUE(notices.update(counts).empty()) << "nothing dropped yet";

    counts.children.dropped = 3;
    const auto first = notices.update(counts);
    ASSERT_EQ(first.size(), 1u);
    EXPECT_EQ(first[0].map, "children");
    EXPECT_EQ(first[0].dropped, 3u);
    EXPECT_EQ(first[0].capacity, 16384u);
    EXPECT_NE(first[0].message.find("16384"), std::string::npos) << first[0].message;
    EXPECT_NE(first[0].message.find("3 children"), std::string::npos) << first[0].message;

    counts.children.dropped = 7;  // more of the same map: said already
    counts.exits.dropped = 1;
    const auto second = notices.update(counts);
    ASSERT_EQ(second.size(), 1u);
    EXPECT_EQ(second[0].map, "exits");
    EXPECT_TRUE(notices.update(counts).empty());
}

TEST(CapacityNotices, EveryMapHasItsOwnExplanation) {
    CapacityNotices notices;
    CapacityCounts counts;
    counts.children = {1, 8};
    counts.faults = {2, 8};
    counts.exits = {3, 4};
    counts.managers = {4, 64};
    counts.cow_sites = {5, 32768};
    const auto all = notices.update(counts);
    ASSERT_EQ(all.size(), 5u);
    for (const auto& notice : all) {
        EXPECT_NE(notice.message.find(notice.map + " map is full"), std::string::npos)
            << notice.message;
        EXPECT_EQ(notice.message.find("entries were dropped"), std::string::npos)
            << "a generic text for " << notice.map;
    }
}

TEST(CapacityNotices, ReapEventCarriesTheMapAndTheCount) {
    const CapacityNotice notice{"children", 12, 16384, capacity_message("children", 12, 16384)};
    const EventLog log(LogFormat::json);
    const auto event = nlohmann::json::parse(
        log.format_line("capacity", capacity_event_fields(notice), "2026-01-01T00:00:00.000Z"));
    EXPECT_EQ(event.at("event"), "capacity");
    EXPECT_EQ(event.at("map"), "children");
    EXPECT_EQ(event.at("dropped"), 12);
    EXPECT_EQ(event.at("capacity"), 16384);
    EXPECT_EQ(event.at("detail"), notice.message);
}

TEST(StartTime, KernelNanosecondsBecomeProcTicks) {
    EXPECT_EQ(start_ticks_of_ns(12'345'678'901, 100), 1234u);
    EXPECT_EQ(start_ticks_of_ns(9'999'999, 100), 0u);
    EXPECT_EQ(start_ticks_of_ns(10'000'000, 100), 1u);
    EXPECT_EQ(start_ticks_of_ns(12'345'678'901, 1000), 12345u);
    EXPECT_FALSE(start_ticks_of_ns(1'000'000'000, 300).has_value()) << "1e9 % 300 != 0";
    EXPECT_FALSE(start_ticks_of_ns(1'000'000'000, 0).has_value());
    EXPECT_EQ(start_ns_of_ticks(1234, 100), 12'340'000'000u);
    EXPECT_FALSE(start_ns_of_ticks(1234, 300).has_value());
    // A start registered from /proc's ticks reads back as the same ticks.
    EXPECT_EQ(start_ticks_of_ns(*start_ns_of_ticks(987654, 100), 100), 987654u);
}

ChildRecord record_of(pid_t pid, std::uint64_t start_ns, bool exited) {
    ChildRecord record;
    record.pid = pid;
    record.start_ns = start_ns;
    record.exited = exited;
    record.comm = "kr-" + std::to_string(start_ns);
    return record;
}

TEST(DiagnoseChildren, ListsTheDisplacedChildApartFromItsPidsNewChild) {
    std::map<pid_t, ChildRecord> records;
    records.emplace(300, record_of(300, 2000, false));
    std::vector<ChildRecord> displaced = {record_of(300, 1000, true)};
    displaced.back().pid_reused = true;
    // The role judged for pid 300 is the new child's: a helper, not the old worker.
    const std::map<pid_t, RoleJudgement> roles = {{300, {.worker = false, .reason = "exec"}}};
    Diagnosis diagnosis = diagnose_children(records, {}, std::nullopt, {}, roles, displaced);
    ASSERT_EQ(diagnosis.children.size(), 2u);
    EXPECT_EQ(diagnosis.children[0].comm, "kr-2000");
    EXPECT_FALSE(diagnosis.children[0].pid_reused);
    EXPECT_TRUE(diagnosis.children[0].helper);
    EXPECT_EQ(diagnosis.children[1].comm, "kr-1000");
    EXPECT_TRUE(diagnosis.children[1].pid_reused);
    EXPECT_TRUE(diagnosis.children[1].exited);
    EXPECT_FALSE(diagnosis.children[1].helper);

    diagnosis.capacity_notices.push_back({"exits", 2, 4096, capacity_message("exits", 2, 4096)});
    const nlohmann::json json = to_json(diagnosis);
    ASSERT_EQ(json.at("warnings").size(), 1u);
    EXPECT_EQ(json.at("warnings")[0].at("kind"), "capacity");
    EXPECT_EQ(json.at("warnings")[0].at("map"), "exits");
    EXPECT_EQ(json.at("warnings")[0].at("dropped"), 2);
    EXPECT_EQ(json.at("children")[1].at("pid_reused"), true);
    EXPECT_EQ(json.at("children")[0].at("pid_reused"), false);
}

}  // namespace
}  // namespace kidreaper
