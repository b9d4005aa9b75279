#include "daemon/metrics.h"

#include <fcntl.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <stdexcept>

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "common/error.h"
#include "model/classifier.h"

namespace kidreaper {

namespace {

constexpr std::array kVerdicts = {Verdict::leak, Verdict::mixed, Verdict::cow, Verdict::stable,
                                  Verdict::unknown};
constexpr std::array<std::string_view, 4> kMemoryKinds = {"private", "shared", "rss", "pss"};

// A label value that must be a short fixed code (a verdict, a signal, a reason).
std::string code_label(std::string_view what, std::string_view value) {
    bool ok = !value.empty() && value.size() <= 32;
    for (const char c : value) {
        ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.');
    }
    if (!ok) {
        throw std::invalid_argument("metrics: " + std::string(what) + " \"" + std::string(value) +
                                    "\" is not a short code");
    }
    return std::string(value);
}

std::string verdict_label(std::string_view verdict) {
    for (const Verdict known : kVerdicts) {
        if (verdict_name(known) == verdict) {
            return std::string(verdict);
        }
    }
    throw std::invalid_argument("metrics: unknown verdict \"" + std::string(verdict) + "\"");
}

void check_service(const std::string& service) {
    if (service.empty()) {
        throw std::invalid_argument("metrics: a service needs a name");
    }
}

// "HOST:PORT" split; throws UsageError when it is not one.
std::pair<std::string, std::string> split_listen(const std::string& listen) {
    const auto colon = listen.rfind(':');
    std::string host = colon == std::string::npos ? "" : listen.substr(0, colon);
    const std::string port = colon == std::string::npos ? "" : listen.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    } else if (host.find(':') != std::string::npos) {
        host.clear();  // an IPv6 address needs brackets
    }
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (host.empty() || port.empty() || ec != std::errc() || end != port.data() + port.size() ||
        value > 65535) {
        throw UsageError("metrics listen \"" + listen +
                         "\": expected HOST:PORT (127.0.0.1:9977, [::1]:9977, 0.0.0.0:9977)");
    }
    return {host, port};
}

// Why binding host:port fails, found by trying it; empty when it binds.
std::string bind_failure(const std::string& host, const std::string& port) {
    addrinfo hints = {};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
    addrinfo* found = nullptr;
    if (const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
        return gai_strerror(rc);
    }
    std::unique_ptr<addrinfo, void (*)(addrinfo*)> addresses(found, freeaddrinfo);
    const int fd = socket(found->ai_family, found->ai_socktype | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return errno_message("socket", errno);
    }
    const int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));  // as civetweb does
    std::string reason;
    if (bind(fd, found->ai_addr, found->ai_addrlen) != 0) {
        const int err = errno;
        reason = err == EADDRINUSE ? "address in use" : errno_message("", err).substr(2);
        reason[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(reason[0])));
    }
    close(fd);
    return reason;
}

// The directory of a path ("." for a bare name) and its last component.
std::pair<std::string, std::string> split_path(const std::string& path) {
    const auto slash = path.rfind('/');
    if (slash == std::string::npos) {
        return {".", path};
    }
    return {slash == 0 ? "/" : path.substr(0, slash), path.substr(slash + 1)};
}

// An open temp file that is removed unless it was renamed into place.
class TempFile {
public:
    explicit TempFile(std::string path_template) : path_(std::move(path_template)) {
        fd_ = mkostemp(path_.data(), O_CLOEXEC);
        if (fd_ < 0) {
            path_.clear();
        }
    }
    ~TempFile() {
        if (fd_ >= 0) {
            close(fd_);
        }
        if (!path_.empty()) {
            unlink(path_.c_str());
        }
    }
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;

    int fd() const { return fd_; }
    const std::string& path() const { return path_; }
    // Closes the file; false (errno set) when the close reports a failed write.
    bool close_file() {
        const int fd = fd_;
        fd_ = -1;
        return close(fd) == 0;
    }
    void renamed() { path_.clear(); }

private:
    std::string path_;
    int fd_ = -1;
};

}  // namespace

std::uint64_t MonotonicTotal::advance(std::uint64_t total) {
    const std::uint64_t step = seen_ && total > last_ ? total - last_ : (seen_ ? 0 : total);
    seen_ = true;
    last_ = total;
    return step;
}

struct Metrics::ServiceSeries {
    prometheus::Gauge* manager_up = nullptr;  // the gauges: null until the first update()
    prometheus::Gauge* children = nullptr;
    std::array<prometheus::Gauge*, kMemoryKinds.size()> memory = {};
    prometheus::Gauge* largest = nullptr;
    prometheus::Gauge* limit = nullptr;
    prometheus::Counter* cow = nullptr;
    MonotonicTotal cow_total;
    std::map<std::string, prometheus::Gauge*> by_verdict;
    std::map<std::string, prometheus::Counter*> recycles;
    std::map<std::pair<std::string, std::string>, prometheus::Counter*> signals;
    std::map<std::string, prometheus::Counter*> skips;
};

Metrics::Metrics(const MetricsSettings& settings, std::string_view build_version,
                 std::string_view mode)
    : registry_(std::make_shared<prometheus::Registry>()), textfile_(settings.textfile) {
    using prometheus::BuildCounter;
    using prometheus::BuildGauge;
    auto& registry = *registry_;
    build_info_ = &BuildGauge()
                       .Name("kidreaper_build_info")
                       .Help("kidreaper's version and how it counts COW (mode); always 1")
                       .Register(registry);
    build_info_->Add({{"version", std::string(build_version)}, {"mode", std::string(mode)}}).Set(1);
    manager_up_ = &BuildGauge()
                       .Name("kidreaper_manager_up")
                       .Help("1 while the service's manager is found and watched, else 0")
                       .Register(registry);
    children_ = &BuildGauge()
                     .Name("kidreaper_children")
                     .Help("The service's live workers (helper children not counted)")
                     .Register(registry);
    memory_ = &BuildGauge()
                   .Name("kidreaper_children_memory_bytes")
                   .Help("Memory of the service's workers by kind (smaps_rollup), summed")
                   .Register(registry);
    largest_ = &BuildGauge()
                    .Name("kidreaper_largest_child_bytes")
                    .Help("The largest worker, in the metric the service's limit applies to")
                    .Register(registry);
    limit_ = &BuildGauge()
                  .Name("kidreaper_limit_bytes")
                  .Help("The service's limit per worker")
                  .Register(registry);
    cow_ = &BuildCounter()
                .Name("kidreaper_cow_bytes_total")
                .Help("Bytes the service's workers copied on write from what they inherited")
                .Register(registry);
    by_verdict_ = &BuildGauge()
                       .Name("kidreaper_children_by_verdict")
                       .Help("The service's workers by the classifier's verdict")
                       .Register(registry);
    recycles_ = &BuildCounter()
                     .Name("kidreaper_recycles_total")
                     .Help("Workers recycled (signalled; dry runs are not counted), by verdict")
                     .Register(registry);
    signals_ = &BuildCounter()
                    .Name("kidreaper_signals_total")
                    .Help("Signals sent to workers, by signal and outcome")
                    .Register(registry);
    skips_ = &BuildCounter()
                  .Name("kidreaper_skips_total")
                  .Help("Recycles not done (yet) over the limit, by reason")
                  .Register(registry);
    poll_seconds_ =
        &prometheus::BuildHistogram()
             .Name("kidreaper_poll_seconds")
             .Help("Duration of one tick of the daemon (every service)")
             .Register(registry)
             .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025,
                                                              0.05, 0.1, 0.25, 0.5, 1, 2.5});
    bpf_run_seconds_ =
        &BuildCounter()
             .Name("kidreaper_bpf_run_seconds_total")
             .Help("Time the kernel spent in the BPF program (0 unless kernel.bpf_stats_enabled=1)")
             .Register(registry);
    bpf_run_count_ = &BuildCounter()
                          .Name("kidreaper_bpf_run_count_total")
                          .Help("Runs of the BPF program (0 unless kernel.bpf_stats_enabled=1)")
                          .Register(registry);

    if (textfile_) {
        const auto [dir, base] = split_path(*textfile_);
        struct stat st = {};
        if (base.empty()) {
            throw Error("metrics textfile \"" + *textfile_ + "\" names a directory, not a file");
        }
        if (stat(dir.c_str(), &st) != 0) {
            throw Error(errno_message("cannot write the metrics textfile " + *textfile_, errno));
        }
        if (!S_ISDIR(st.st_mode)) {
            throw Error("cannot write the metrics textfile " + *textfile_ + ": " + dir +
                        " is not a directory");
        }
        if (access(dir.c_str(), W_OK) != 0) {
            throw Error(errno_message("cannot write the metrics textfile " + *textfile_, errno));
        }
    }
    if (settings.listen) {
        const auto [host, port] = split_listen(*settings.listen);
        try {
            exposer_ = std::make_unique<prometheus::Exposer>(*settings.listen, 2);
        } catch (const std::exception& e) {
            std::string reason = bind_failure(host, port);
            throw Error("cannot listen on " + *settings.listen +
                        " for metrics: " + (reason.empty() ? e.what() : reason));
        }
        exposer_->RegisterCollectable(registry_);
    }
}

Metrics::~Metrics() = default;

Metrics::ServiceSeries& Metrics::series(const std::string& service) {
    check_service(service);
    auto& slot = services_[service];
    if (!slot) {
        slot = std::make_unique<ServiceSeries>();
    }
    return *slot;
}

void Metrics::update(const ServiceSnapshot& snapshot) {
    for (const auto& [verdict, count] : snapshot.children_by_verdict) {
        verdict_label(verdict);
    }
    ServiceSeries& s = series(snapshot.service);
    const prometheus::Labels service = {{"service", snapshot.service}};
    if (s.manager_up == nullptr) {
        s.manager_up = &manager_up_->Add(service);
        s.children = &children_->Add(service);
        for (std::size_t i = 0; i < kMemoryKinds.size(); ++i) {
            s.memory[i] = &memory_->Add(
                {{"service", snapshot.service}, {"kind", std::string(kMemoryKinds[i])}});
        }
        s.largest = &largest_->Add(service);
        s.limit = &limit_->Add(service);
        for (const Verdict verdict : kVerdicts) {
            const std::string name(verdict_name(verdict));
            s.by_verdict[name] =
                &by_verdict_->Add({{"service", snapshot.service}, {"verdict", name}});
        }
    }
    if (s.cow == nullptr) {
        s.cow = &cow_->Add(service);
    }
    s.manager_up->Set(snapshot.manager_up ? 1 : 0);
    s.children->Set(static_cast<double>(snapshot.children));
    const std::array<std::uint64_t, kMemoryKinds.size()> memory = {
        snapshot.private_bytes, snapshot.shared_bytes, snapshot.rss_bytes, snapshot.pss_bytes};
    for (std::size_t i = 0; i < memory.size(); ++i) {
        s.memory[i]->Set(static_cast<double>(memory[i]));
    }
    s.largest->Set(static_cast<double>(snapshot.largest_child_bytes));
    s.limit->Set(static_cast<double>(snapshot.limit_bytes));
    s.cow->Increment(static_cast<double>(s.cow_total.advance(snapshot.cow_bytes_total)));
    for (auto& [verdict, gauge] : s.by_verdict) {
        const auto it = snapshot.children_by_verdict.find(verdict);
        gauge->Set(it == snapshot.children_by_verdict.end() ? 0 : static_cast<double>(it->second));
    }
}

void Metrics::forget(const std::string& service) {
    const auto it = services_.find(service);
    if (it == services_.end()) {
        return;
    }
    ServiceSeries& s = *it->second;
    if (s.manager_up != nullptr) {
        manager_up_->Remove(s.manager_up);
        children_->Remove(s.children);
        for (prometheus::Gauge* gauge : s.memory) {
            memory_->Remove(gauge);
        }
        largest_->Remove(s.largest);
        limit_->Remove(s.limit);
    }
    if (s.cow != nullptr) {
        cow_->Remove(s.cow);
    }
    for (const auto& [verdict, gauge] : s.by_verdict) {
        by_verdict_->Remove(gauge);
    }
    for (const auto& [verdict, counter] : s.recycles) {
        recycles_->Remove(counter);
    }
    for (const auto& [key, counter] : s.signals) {
        signals_->Remove(counter);
    }
    for (const auto& [reason, counter] : s.skips) {
        skips_->Remove(counter);
    }
    services_.erase(it);
}

void Metrics::count_recycle(const std::string& service, std::string_view verdict) {
    const std::string label = verdict_label(verdict);
    ServiceSeries& s = series(service);
    auto& counter = s.recycles[label];
    if (counter == nullptr) {
        counter = &recycles_->Add({{"service", service}, {"verdict", label}});
    }
    counter->Increment();
}

void Metrics::count_signal(const std::string& service, std::string_view signal,
                           std::string_view outcome) {
    auto key = std::make_pair(code_label("signal", signal), code_label("outcome", outcome));
    ServiceSeries& s = series(service);
    auto& counter = s.signals[key];
    if (counter == nullptr) {
        counter =
            &signals_->Add({{"service", service}, {"signal", key.first}, {"outcome", key.second}});
    }
    counter->Increment();
}

void Metrics::count_skip(const std::string& service, std::string_view reason) {
    const std::string label = code_label("reason", reason);
    ServiceSeries& s = series(service);
    auto& counter = s.skips[label];
    if (counter == nullptr) {
        counter = &skips_->Add({{"service", service}, {"reason", label}});
    }
    counter->Increment();
}

void Metrics::observe_tick(double seconds) {
    poll_seconds_->Observe(seconds);
}

void Metrics::observe_bpf(const std::vector<BpfProgramStats>& programs) {
    for (const BpfProgramStats& program : programs) {
        const std::string name = code_label("program", program.name);
        BpfSeries& s = bpf_[name];
        if (s.seconds == nullptr) {
            s.seconds = &bpf_run_seconds_->Add({{"program", name}});
            s.count = &bpf_run_count_->Add({{"program", name}});
        }
        s.seconds->Increment(static_cast<double>(s.time_ns.advance(program.run_time_ns)) / 1e9);
        s.count->Increment(static_cast<double>(s.runs.advance(program.run_count)));
    }
}

std::string Metrics::exposition() const {
    return prometheus::TextSerializer().Serialize(registry_->Collect());
}

void Metrics::publish() const {
    if (!textfile_) {
        return;
    }
    const std::string& path = *textfile_;
    const auto [dir, base] = split_path(path);
    const std::string text = exposition();
    const auto failed = [&path](int err) {
        return Error(errno_message("cannot write the metrics textfile " + path, err));
    };
    // A hidden name without .prom: the textfile collector never reads a partial file.
    TempFile temp(dir + "/." + base + ".XXXXXX");
    if (temp.fd() < 0) {
        throw failed(errno);
    }
    if (fchmod(temp.fd(), 0644) != 0) {  // node-exporter runs as another user
        throw failed(errno);
    }
    std::size_t done = 0;
    while (done < text.size()) {
        const ssize_t n = write(temp.fd(), text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            throw failed(errno);
        }
        done += static_cast<std::size_t>(n);
    }
    if (fsync(temp.fd()) != 0 || !temp.close_file()) {
        throw failed(errno);
    }
    if (rename(temp.path().c_str(), path.c_str()) != 0) {
        throw failed(errno);
    }
    temp.renamed();
    // The rename itself survives a crash once the directory is synced.
    const int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd >= 0) {
        fsync(dir_fd);
        close(dir_fd);
    }
}

int Metrics::listening_port() const {
    if (!exposer_) {
        return 0;
    }
    const auto ports = exposer_->GetListeningPorts();
    return ports.empty() ? 0 : ports.front();
}

}  // namespace kidreaper
