// The static build's Metrics: Debian ships prometheus-cpp as a shared library only, so a
// static kidreaper has no metrics. Asking for them ([metrics], --metrics-listen) is an error
// at start; nothing else here is ever reached.
#include "common/error.h"
#include "daemon/metrics.h"

namespace prometheus {
class Exposer {};  // never made: the static build links no prometheus-cpp
}  // namespace prometheus

namespace kidreaper {

struct Metrics::ServiceSeries {};

Metrics::Metrics(const MetricsSettings& /*settings*/, std::string_view /*build_version*/,
                 std::string_view /*mode*/)
    : build_info_(nullptr),
      manager_up_(nullptr),
      children_(nullptr),
      memory_(nullptr),
      largest_(nullptr),
      limit_(nullptr),
      cow_(nullptr),
      by_verdict_(nullptr),
      recycles_(nullptr),
      signals_(nullptr),
      skips_(nullptr),
      poll_seconds_(nullptr),
      bpf_run_seconds_(nullptr),
      bpf_run_count_(nullptr) {
    throw Error(
        "metrics ([metrics], --metrics-listen) are not in the static build of kidreaper (it "
        "has no prometheus-cpp): use the packaged build");
}

Metrics::~Metrics() = default;

std::uint64_t MonotonicTotal::advance(std::uint64_t total) {
    const std::uint64_t step = seen_ && total > last_ ? total - last_ : (seen_ ? 0 : total);
    seen_ = true;
    last_ = total;
    return step;
}

void Metrics::update(const ServiceSnapshot& /*snapshot*/) {}
void Metrics::forget(const std::string& /*service*/) {}
void Metrics::count_recycle(const std::string& /*service*/, std::string_view /*verdict*/) {}
void Metrics::count_signal(const std::string& /*service*/, std::string_view /*signal*/,
                           std::string_view /*outcome*/) {}
void Metrics::count_skip(const std::string& /*service*/, std::string_view /*reason*/) {}
void Metrics::observe_tick(double /*seconds*/) {}
void Metrics::observe_bpf(const std::vector<BpfProgramStats>& /*programs*/) {}
void Metrics::publish() const {}
std::string Metrics::exposition() const {
    return {};
}
int Metrics::listening_port() const {
    return 0;
}

}  // namespace kidreaper
