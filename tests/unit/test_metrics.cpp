// The metrics registry: the contract's names, labels and values after updates and counts,
// forgotten services, the monotonic COW counter, the atomic textfile, the HTTP endpoint,
// and Prometheus' own linter (promtool check metrics) on the exposition.
#include "daemon/metrics.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/error.h"
#include "fake_proc.h"

namespace kidreaper {
namespace {

using testing::TempDir;

// Every sample of an exposition: "name{label="value",...}" -> value (labels as written,
// which prometheus-cpp sorts by name).
std::map<std::string, double> samples(const std::string& text) {
    std::map<std::string, double> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') {
            continue;
        }
        const auto space = line.rfind(' ');
        out[line.substr(0, space)] = std::stod(line.substr(space + 1));
    }
    return out;
}

// The sample `name{labels}`; fails the test when it is missing.
double sample(const std::string& text, const std::string& series) {
    const auto all = samples(text);
    const auto it = all.find(series);
    if (it == all.end()) {
        ADD_FAILURE() << "no sample " << series << " in:\n" << text;
        return -1;
    }
    return it->second;
}

ServiceSnapshot web_snapshot() {
    ServiceSnapshot s;
    s.service = "web";
    s.manager_up = true;
    s.children = 3;
    s.private_bytes = 300 << 20;
    s.shared_bytes = 600 << 20;
    s.rss_bytes = 900 << 20;
    s.pss_bytes = 500 << 20;
    s.largest_child_bytes = 120 << 20;
    s.limit_bytes = 1ULL << 30;
    s.cow_bytes_total = 7 << 20;
    s.children_by_verdict = {{"cow", 2}, {"leak", 1}};
    return s;
}

TEST(Metrics, ServiceGaugesHaveTheContractNamesLabelsAndValues) {
    Metrics metrics({}, "1.2.3", "mm");
    metrics.update(web_snapshot());
    const std::string text = metrics.exposition();
    EXPECT_EQ(sample(text, R"(kidreaper_build_info{mode="mm",version="1.2.3"})"), 1);
    EXPECT_EQ(sample(text, R"(kidreaper_manager_up{service="web"})"), 1);
    EXPECT_EQ(sample(text, R"(kidreaper_children{service="web"})"), 3);
    EXPECT_EQ(sample(text, R"(kidreaper_children_memory_bytes{kind="private",service="web"})"),
              300 << 20);
    EXPECT_EQ(sample(text, R"(kidreaper_children_memory_bytes{kind="shared",service="web"})"),
              600 << 20);
    EXPECT_EQ(sample(text, R"(kidreaper_children_memory_bytes{kind="rss",service="web"})"),
              900 << 20);
    EXPECT_EQ(sample(text, R"(kidreaper_children_memory_bytes{kind="pss",service="web"})"),
              500 << 20);
    EXPECT_EQ(sample(text, R"(kidreaper_largest_child_bytes{service="web"})"), 120 << 20);
    EXPECT_EQ(sample(text, R"(kidreaper_limit_bytes{service="web"})"), 1073741824.0);
    EXPECT_EQ(sample(text, R"(kidreaper_cow_bytes_total{service="web"})"), 7 << 20);
    EXPECT_EQ(sample(text, R"(kidreaper_children_by_verdict{service="web",verdict="cow"})"), 2);
    EXPECT_EQ(sample(text, R"(kidreaper_children_by_verdict{service="web",verdict="leak"})"), 1);
    for (const char* verdict : {"mixed", "stable", "unknown"}) {
        EXPECT_EQ(
            sample(text, std::string(R"(kidreaper_children_by_verdict{service="web",verdict=")") +
                             verdict + "\"}"),
            0)
            << verdict;
    }
    EXPECT_NE(text.find("# TYPE kidreaper_cow_bytes_total counter"), std::string::npos);
    EXPECT_NE(text.find("# TYPE kidreaper_children gauge"), std::string::npos);
    EXPECT_EQ(text.find("pid"), std::string::npos) << "no pid labels";
}

TEST(Metrics, AVerdictThatIsGoneDropsToZero) {
    Metrics metrics({}, "1", "mm");
    metrics.update(web_snapshot());
    ServiceSnapshot later = web_snapshot();
    later.children_by_verdict = {{"stable", 3}};
    metrics.update(later);
    const std::string text = metrics.exposition();
    EXPECT_EQ(sample(text, R"(kidreaper_children_by_verdict{service="web",verdict="leak"})"), 0);
    EXPECT_EQ(sample(text, R"(kidreaper_children_by_verdict{service="web",verdict="stable"})"), 3);
    ServiceSnapshot bad = web_snapshot();
    bad.children_by_verdict = {{"leaky", 1}};
    EXPECT_THROW(metrics.update(bad), std::invalid_argument);
}

TEST(Metrics, EventCountersHaveTheirLabels) {
    Metrics metrics({}, "1", "mm");
    metrics.count_recycle("web", "leak");
    metrics.count_recycle("web", "leak");
    metrics.count_recycle("web", "cow");
    metrics.count_signal("web", "TERM", "sent");
    metrics.count_signal("web", "KILL", "failed");
    metrics.count_skip("web", "min-children");
    metrics.count_skip("web", "stagger");
    metrics.count_skip("web", "stagger");
    const std::string text = metrics.exposition();
    EXPECT_EQ(sample(text, R"(kidreaper_recycles_total{service="web",verdict="leak"})"), 2);
    EXPECT_EQ(sample(text, R"(kidreaper_recycles_total{service="web",verdict="cow"})"), 1);
    EXPECT_EQ(
        sample(text, R"(kidreaper_signals_total{outcome="sent",service="web",signal="TERM"})"), 1);
    EXPECT_EQ(
        sample(text, R"(kidreaper_signals_total{outcome="failed",service="web",signal="KILL"})"),
        1);
    EXPECT_EQ(sample(text, R"(kidreaper_skips_total{reason="min-children",service="web"})"), 1);
    EXPECT_EQ(sample(text, R"(kidreaper_skips_total{reason="stagger",service="web"})"), 2);
    // Counted before any update: no gauge pretends the manager is down.
    EXPECT_EQ(text.find("kidreaper_manager_up{"), std::string::npos);
    // Free text is refused as a label value.
    EXPECT_THROW(metrics.count_skip("web", "61 MiB over the limit"), std::invalid_argument);
    EXPECT_THROW(metrics.count_recycle("web", "oversized"), std::invalid_argument);
    EXPECT_THROW(metrics.count_signal("", "TERM", "sent"), std::invalid_argument);
}

TEST(Metrics, ForgetRemovesEverySeriesOfTheService) {
    Metrics metrics({}, "1", "mm");
    metrics.update(web_snapshot());
    ServiceSnapshot api = web_snapshot();
    api.service = "api";
    metrics.update(api);
    metrics.count_recycle("web", "leak");
    metrics.count_signal("web", "TERM", "sent");
    metrics.count_skip("web", "stagger");
    metrics.forget("web");
    metrics.forget("never-seen");
    const std::string text = metrics.exposition();
    EXPECT_EQ(text.find(R"(service="web")"), std::string::npos) << text;
    EXPECT_EQ(sample(text, R"(kidreaper_children{service="api"})"), 3);
    // A service added again starts afresh.
    metrics.update(web_snapshot());
    EXPECT_EQ(sample(metrics.exposition(), R"(kidreaper_cow_bytes_total{service="web"})"), 7 << 20);
}

TEST(Metrics, CowCounterNeverGoesDown) {
    Metrics metrics({}, "1", "mm");
    ServiceSnapshot s = web_snapshot();
    const std::string series = R"(kidreaper_cow_bytes_total{service="web"})";
    s.cow_bytes_total = 100;
    metrics.update(s);
    EXPECT_EQ(sample(metrics.exposition(), series), 100);
    s.cow_bytes_total = 40;  // a child that had copied 60 bytes exited
    metrics.update(s);
    EXPECT_EQ(sample(metrics.exposition(), series), 100);
    s.cow_bytes_total = 70;  // the survivors copy 30 more
    metrics.update(s);
    EXPECT_EQ(sample(metrics.exposition(), series), 130);
    metrics.update(s);
    EXPECT_EQ(sample(metrics.exposition(), series), 130);
}

TEST(MonotonicTotal, AdvancesByIncreasesOnly) {
    MonotonicTotal total;
    EXPECT_EQ(total.advance(5), 5U);
    EXPECT_EQ(total.advance(9), 4U);
    EXPECT_EQ(total.advance(2), 0U);
    EXPECT_EQ(total.advance(3), 1U);
}

TEST(Metrics, TickHistogramAndBpfCounters) {
    Metrics metrics({}, "1", "mm");
    metrics.observe_tick(0.004);
    metrics.observe_tick(0.2);
    metrics.observe_bpf({{"handle_fault", 2'000'000'000, 10}, {"on_fork", 0, 0}});
    metrics.observe_bpf({{"handle_fault", 2'500'000'000, 15}, {"on_fork", 0, 0}});
    const std::string text = metrics.exposition();
    EXPECT_EQ(sample(text, "kidreaper_poll_seconds_count"), 2);
    EXPECT_NEAR(sample(text, "kidreaper_poll_seconds_sum"), 0.204, 1e-9);
    EXPECT_EQ(sample(text, R"(kidreaper_poll_seconds_bucket{le="0.005"})"), 1);
    EXPECT_EQ(sample(text, R"(kidreaper_poll_seconds_bucket{le="+Inf"})"), 2);
    EXPECT_NEAR(sample(text, R"(kidreaper_bpf_run_seconds_total{program="handle_fault"})"), 2.5,
                1e-9);
    EXPECT_EQ(sample(text, R"(kidreaper_bpf_run_count_total{program="handle_fault"})"), 15);
    EXPECT_EQ(sample(text, R"(kidreaper_bpf_run_count_total{program="on_fork"})"), 0);
}

TEST(BpfStats, EnabledReadsTheSysctl) {
    TempDir proc;
    EXPECT_FALSE(bpf_stats_enabled(proc.path().string()));
    proc.write("sys/kernel/bpf_stats_enabled", "0\n");
    EXPECT_FALSE(bpf_stats_enabled(proc.path().string()));
    proc.write("sys/kernel/bpf_stats_enabled", "1\n");
    EXPECT_TRUE(bpf_stats_enabled(proc.path().string()));
}

TEST(BpfStats, ABadFdIsAnErrorNamingTheProgram) {
    try {
        read_bpf_program_stats({{"handle_fault", -1}});
        FAIL() << "no error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("handle_fault"), std::string::npos) << e.what();
    }
}

std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(Metrics, TextfileIsTheExpositionWithNoTempFileLeft) {
    TempDir dir;
    const auto path = dir.path() / "kidreaper.prom";
    MetricsSettings settings;
    settings.textfile = path.string();
    Metrics metrics(settings, "1", "mm");
    metrics.update(web_snapshot());
    metrics.publish();
    EXPECT_EQ(read_file(path), metrics.exposition());
    EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::all,
              std::filesystem::perms(0644));
    ServiceSnapshot later = web_snapshot();
    later.children = 5;
    metrics.update(later);
    metrics.publish();
    EXPECT_EQ(read_file(path), metrics.exposition());
    EXPECT_EQ(sample(read_file(path), R"(kidreaper_children{service="web"})"), 5);
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
        names.push_back(entry.path().filename().string());
    }
    EXPECT_EQ(names, std::vector<std::string>{"kidreaper.prom"});
}

// A one-line kidreaper Error whose message contains `part`.
template <typename F>
void expect_one_line_error(F&& f, const std::string& part) {
    try {
        f();
        ADD_FAILURE() << "no error";
    } catch (const Error& e) {
        const std::string message = e.what();
        EXPECT_NE(message.find(part), std::string::npos) << message;
        EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    }
}

TEST(Metrics, ABadTextfileDirectoryIsAOneLineError) {
    TempDir dir;
    const auto file = dir.write("file", "x");
    for (const std::string& path :
         {(dir.path() / "missing" / "k.prom").string(), (file / "k.prom").string()}) {
        MetricsSettings settings;
        settings.textfile = path;
        expect_one_line_error([&] { Metrics metrics(settings, "1", "mm"); },
                              "cannot write the metrics textfile " + path);
    }
    // The directory goes away after the start: publish() says so, and leaves nothing.
    const auto gone = dir.path() / "gone";
    std::filesystem::create_directory(gone);
    MetricsSettings settings;
    settings.textfile = (gone / "k.prom").string();
    Metrics metrics(settings, "1", "mm");
    std::filesystem::remove(gone);
    expect_one_line_error([&] { metrics.publish(); }, "cannot write the metrics textfile");
}

// A port on 127.0.0.1 that was free a moment ago.
int free_port() {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    socklen_t length = sizeof(addr);
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length);
    close(fd);
    return ntohs(addr.sin_port);
}

// GET /metrics from 127.0.0.1:port, the whole response.
std::string http_get_metrics(int port) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        close(fd);
        return "";
    }
    const std::string request =
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    EXPECT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
    std::string response;
    char buffer[4096];
    ssize_t n = 0;
    while ((n = read(fd, buffer, sizeof(buffer))) > 0) {
        response.append(buffer, static_cast<std::size_t>(n));
    }
    close(fd);
    return response;
}

TEST(Metrics, ServesTheRegistryOverHttpAndABusyPortIsAOneLineError) {
    const int port = free_port();
    MetricsSettings settings;
    settings.listen = "127.0.0.1:" + std::to_string(port);
    Metrics metrics(settings, "1", "mm");
    EXPECT_EQ(metrics.listening_port(), port);
    metrics.update(web_snapshot());
    const std::string response = http_get_metrics(port);
    EXPECT_NE(response.find("200 OK"), std::string::npos) << response;
    EXPECT_NE(response.find(R"(kidreaper_children{service="web"} 3)"), std::string::npos)
        << response;
    expect_one_line_error([&] { Metrics second(settings, "1", "mm"); },
                          "cannot listen on " + *settings.listen + " for metrics: address in use");
}

TEST(Metrics, AMalformedListenAddressIsAUsageError) {
    for (const char* listen :
         {"9977", "localhost", ":9977", "127.0.0.1:http", "127.0.0.1:99999", "::1:9977"}) {
        MetricsSettings settings;
        settings.listen = listen;
        EXPECT_THROW(Metrics(settings, "1", "mm"), UsageError) << listen;
    }
}

TEST(Metrics, PromtoolAcceptsTheExposition) {
    const char* promtool = "/usr/bin/promtool";
    if (access(promtool, X_OK) != 0) {
        const char* ci = std::getenv("CI");
        if (ci != nullptr && std::string(ci) == "true") {
            FAIL() << "CI=true and " << promtool << " is missing (Debian package prometheus)";
        }
        GTEST_SKIP() << promtool << " is missing (Debian package prometheus)";
    }
    Metrics metrics({}, "1.2.3", "raw tracepoints (COW class from fault codes)");
    metrics.update(web_snapshot());
    metrics.count_recycle("web", "leak");
    metrics.count_signal("web", "TERM", "sent");
    metrics.count_skip("web", "stagger");
    metrics.observe_tick(0.01);
    metrics.observe_bpf({{"handle_fault", 1000, 1}});
    TempDir dir;
    const auto input = dir.write("metrics.txt", metrics.exposition());
    const auto output = dir.path() / "promtool.out";
    const std::string command = std::string(promtool) + " check metrics < '" + input.string() +
                                "' > '" + output.string() + "' 2>&1";
    const int status = std::system(command.c_str());
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << read_file(output) << "\n" << metrics.exposition();
}

}  // namespace
}  // namespace kidreaper
