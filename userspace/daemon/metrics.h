// The daemon's Prometheus metrics: one registry, served over HTTP (prometheus-cpp's Exposer)
// and/or written to a textfile for node-exporter's textfile collector.
//
// The metric names and labels are a contract (also listed in docs/kubernetes.md):
//   kidreaper_build_info{version,mode}                   1
//   kidreaper_manager_up{service}                        1 while the service's manager is watched
//   kidreaper_children{service}                          live workers
//   kidreaper_children_memory_bytes{service,kind}        private, shared, rss, pss; summed
//   kidreaper_largest_child_bytes{service}               in the service's metric
//   kidreaper_limit_bytes{service}
//   kidreaper_cow_bytes_total{service}                   counter
//   kidreaper_children_by_verdict{service,verdict}       leak, mixed, cow, stable, unknown
//   kidreaper_recycles_total{service,verdict}
//   kidreaper_signals_total{service,signal,outcome}
//   kidreaper_skips_total{service,reason}
//   kidreaper_poll_seconds                               histogram of one tick
//   kidreaper_bpf_run_seconds_total{program}             0 unless kernel.bpf_stats_enabled=1
//   kidreaper_bpf_run_count_total{program}               0 unless kernel.bpf_stats_enabled=1
// No pid labels: a series per child would grow without bound as children are recycled.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "daemon/metrics_settings.h"
#include "observe/bpf_stats.h"

namespace prometheus {
class Counter;
class Exposer;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace kidreaper {

// One service as of one tick.
struct ServiceSnapshot {
    std::string service;
    bool manager_up = false;
    std::size_t children = 0;  // live workers (helpers not counted)
    std::uint64_t private_bytes = 0, shared_bytes = 0, rss_bytes = 0, pss_bytes = 0;  // summed
    std::uint64_t largest_child_bytes = 0;  // the largest worker, in the service's metric
    std::uint64_t limit_bytes = 0;
    std::uint64_t cow_bytes_total = 0;  // COW bytes copied so far (see Metrics::update)
    std::map<std::string, std::size_t> children_by_verdict;  // verdict_name() -> workers
};

// A counter that follows a total read from elsewhere: it advances by each increase of the
// total; a total that drops (the children it summed exited, a program was reloaded) is taken
// as the new base and the counter stays where it was. So it never goes down.
class MonotonicTotal {
public:
    // How much the counter advances for this reading of the total.
    std::uint64_t advance(std::uint64_t total);

private:
    bool seen_ = false;
    std::uint64_t last_ = 0;
};

// The registry and its outputs. Called from one thread (the daemon's tick); the Exposer's
// threads only read the registry, which prometheus-cpp locks.
class Metrics {
public:
    // Serves /metrics on settings.listen ("HOST:PORT", "[::1]:PORT") and checks that the
    // directory of settings.textfile is writable. Throws UsageError on a malformed listen
    // address and Error with one line ("cannot listen on 127.0.0.1:19977 for metrics:
    // Address already in use") when it cannot bind or the directory is not usable.
    Metrics(const MetricsSettings& settings, std::string_view build_version, std::string_view mode);
    ~Metrics();
    Metrics(const Metrics&) = delete;
    Metrics& operator=(const Metrics&) = delete;

    // Sets the service's gauges; kidreaper_cow_bytes_total advances as MonotonicTotal does.
    // Every verdict of verdict_name() gets a series (0 when absent from children_by_verdict);
    // a verdict it does not know throws std::invalid_argument.
    void update(const ServiceSnapshot& snapshot);
    // A service removed from the config: every series with its label disappears.
    void forget(const std::string& service);
    // Events. Label values are short fixed codes ([a-z0-9_-] or upper-case signal names, up
    // to 32 characters), never free text: anything else throws std::invalid_argument.
    void count_recycle(const std::string& service, std::string_view verdict);
    void count_signal(const std::string& service, std::string_view signal,
                      std::string_view outcome);
    void count_skip(const std::string& service, std::string_view reason);
    // The duration of one tick (all services).
    void observe_tick(double seconds);
    // The kernel's totals per program (read_bpf_program_stats()), as MonotonicTotal.
    void observe_bpf(const std::vector<BpfProgramStats>& programs);
    // Writes the textfile when one is set: a temp file in the same directory, fsync, rename.
    // Call once per tick. Throws Error with one line when it cannot.
    void publish() const;
    // The text exposition format of the registry, as served and as written.
    std::string exposition() const;

    // The port the HTTP endpoint listens on (useful with port 0); 0 without one.
    int listening_port() const;

private:
    struct ServiceSeries;
    ServiceSeries& series(const std::string& service);

    std::shared_ptr<prometheus::Registry> registry_;
    std::optional<std::string> textfile_;
    prometheus::Family<prometheus::Gauge>* build_info_;
    prometheus::Family<prometheus::Gauge>* manager_up_;
    prometheus::Family<prometheus::Gauge>* children_;
    prometheus::Family<prometheus::Gauge>* memory_;
    prometheus::Family<prometheus::Gauge>* largest_;
    prometheus::Family<prometheus::Gauge>* limit_;
    prometheus::Family<prometheus::Counter>* cow_;
    prometheus::Family<prometheus::Gauge>* by_verdict_;
    prometheus::Family<prometheus::Counter>* recycles_;
    prometheus::Family<prometheus::Counter>* signals_;
    prometheus::Family<prometheus::Counter>* skips_;
    prometheus::Histogram* poll_seconds_;
    prometheus::Family<prometheus::Counter>* bpf_run_seconds_;
    prometheus::Family<prometheus::Counter>* bpf_run_count_;
    std::map<std::string, std::unique_ptr<ServiceSeries>> services_;
    struct BpfSeries {
        prometheus::Counter* seconds = nullptr;
        prometheus::Counter* count = nullptr;
        MonotonicTotal time_ns, runs;
    };
    std::map<std::string, BpfSeries> bpf_;
    // Last: destroyed first, so no scrape runs while the registry goes away.
    std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace kidreaper
