#include "daemon/daemon.h"

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "act/signaller.h"
#include "act/signals.h"
#include "common/error.h"
#include "daemon/metrics.h"
#include "daemon/notify.h"
#include "daemon/service.h"
#include "observe/bpf_stats.h"
#include "observe/kernel_features.h"
#include "observe/manager_lookup.h"
#include "observe/observer.h"
#include "observe/procfs.h"
#include "policy/pidfile_trust.h"
#include "version.h"

namespace kidreaper {
namespace {

// Names joined with commas, or "-" when there are none (events stay one word per field).
std::string name_list(const std::vector<std::string>& names) {
    std::string text;
    for (const std::string& name : names) {
        text += (text.empty() ? "" : ",") + name;
    }
    return text.empty() ? "-" : text;
}

class Daemon {
public:
    Daemon(DaemonConfig config, ConfigOverrides overrides, Observer& observer, const ProcFs& proc,
           SignalGate& gate, Signaller& signaller)
        : config_(std::move(config)),
          overrides_(std::move(overrides)),
          observer_(observer),
          proc_(proc),
          gate_(gate),
          signaller_(signaller),
          events_(config_.log_format) {
        if (config_.metrics.listen || config_.metrics.textfile) {
            metrics_.emplace(config_.metrics, KIDREAPER_VERSION,
                             cow_source_name(observer_.cow_source()));
        }
        gate_.set_heartbeat([this] {
            if (notifier_.watchdog_due()) {
                notifier_.ping_watchdog();
            }
        });
    }
    ~Daemon() { gate_.set_heartbeat({}); }
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;

    int run() {
        if (metrics_ && config_.metrics.listen) {
            events_.emit("metrics", {{"listen", *config_.metrics.listen},
                                     {"port", metrics_->listening_port()}});
        }
        if (from_file()) {
            events_.emit("daemon-start", {{"config", config_.path},
                                          {"services", config_.services.size()},
                                          {"mode", cow_source_name(observer_.cow_source())}});
        }
        for (const ServiceConfig& service : config_.services) {
            start_service(service);
        }
        notifier_.ready();
        notifier_.status(status_line());
        while (true) {
            if (const int signal = gate_.wait_for(config_.interval); signal != 0) {
                return stop(signal);
            }
            if (gate_.take_reload()) {
                notifier_.reloading();
                reload();
                notifier_.ready_after_reload();
                notifier_.status(status_line());
            }
            const auto started = std::chrono::steady_clock::now();
            bool all_finished = !services_.empty();
            for (auto& [name, service] : services_) {
                const StepResult result = service->step();
                if (gate_.stop_requested()) {
                    return stop(gate_.received());
                }
                if (result == StepResult::gone) {
                    notifier_.stopping();
                    return 1;  // a manager is gone and its service does not wait for it
                }
                all_finished = all_finished && result == StepResult::finished;
            }
            publish(std::chrono::steady_clock::now() - started);
            if (all_finished) {
                notifier_.stopping();
                events_.emit("stop", {{"reason", "once: nothing over the limit or in flight"}});
                return 0;
            }
        }
    }

private:
    bool from_file() const { return !config_.path.empty(); }

    // The metrics of this tick: each service's snapshot, the tick's duration, the kernel's
    // run time of each program. A textfile that cannot be written is reported once per
    // distinct error and tried again next tick.
    void publish(std::chrono::steady_clock::duration tick) {
        if (!metrics_) {
            return;
        }
        for (const auto& [name, service] : services_) {
            metrics_->update(service->snapshot());
        }
        metrics_->observe_tick(std::chrono::duration<double>(tick).count());
        metrics_->observe_bpf(read_bpf_program_stats(observer_.program_fds()));
        try {
            metrics_->publish();
            last_publish_error_.clear();
        } catch (const Error& e) {
            if (e.what() != last_publish_error_) {
                events_.emit("metrics-error", {{"error", e.what()}});
                last_publish_error_ = e.what();
            }
        }
        if (++ticks_since_status_ >= kStatusEvery) {
            notifier_.status(status_line());
            ticks_since_status_ = 0;
        }
    }

    // systemctl status's line: how many services have their manager.
    std::string status_line() const {
        std::size_t up = 0;
        for (const auto& [name, service] : services_) {
            up += service->watching() ? 1 : 0;
        }
        return "watching " + std::to_string(services_.size()) + " service(s), " +
               std::to_string(up) + " with a manager";
    }

    ServiceContext context() {
        // Events name their service whenever there may be more than one.
        return ServiceContext{.observer = observer_,
                              .proc = proc_,
                              .signaller = signaller_,
                              .gate = gate_,
                              .claims = claims_,
                              .label_events = from_file() || config_.services.size() > 1,
                              .log_format = config_.log_format,
                              .metrics = metrics_ ? &*metrics_ : nullptr};
    }

    // A service from a file waits for a missing manager (and is reported); on the command
    // line only with --wait-for-manager.
    void start_service(const ServiceConfig& config) {
        const bool waits = from_file() || config.options.wait_for_manager;
        auto service = std::make_unique<Service>(config.name, config.options, context(), waits);
        service->start();
        services_[config.name] = std::move(service);
        fingerprints_[config.name] = config.fingerprint;
    }

    void stop_service(const std::string& name) {
        services_.erase(name);
        fingerprints_.erase(name);
        if (metrics_) {
            metrics_->forget(name);
        }
    }

    // SIGHUP: reads the file again. Unchanged services keep their state; removed ones stop;
    // changed ones start again with the new settings; new ones start. A file that does not
    // parse, or changes what only a restart can change, is refused and the old one kept.
    void reload() {
        if (!from_file()) {
            events_.emit("reload", {{"detail", "no --config file: nothing to reload"}});
            return;
        }
        DaemonConfig next;
        try {
            next = load_config(config_.path, overrides_);
            if (next.fault_source != config_.fault_source) {
                throw UsageError(config_.path +
                                 ": fault-source: changes only on a restart (the programs are "
                                 "loaded once)");
            }
            if (next.log_format != config_.log_format) {
                throw UsageError(config_.path + ": log-format: changes only on a restart");
            }
            if (next.metrics.listen != config_.metrics.listen ||
                next.metrics.textfile != config_.metrics.textfile) {
                throw UsageError(config_.path + ": [metrics]: changes only on a restart");
            }
        } catch (const Error& e) {
            events_.emit("reload-refused", {{"config", config_.path}, {"error", e.what()}});
            return;
        }
        std::vector<std::string> added;
        std::vector<std::string> changed;
        std::vector<std::string> removed;
        std::set<std::string> wanted;
        for (const ServiceConfig& service : next.services) {
            wanted.insert(service.name);
        }
        for (auto it = fingerprints_.begin(); it != fingerprints_.end();) {
            const std::string name = (it++)->first;
            if (wanted.count(name) == 0) {
                stop_service(name);
                removed.push_back(name);
            }
        }
        for (const ServiceConfig& service : next.services) {
            const auto known = fingerprints_.find(service.name);
            if (known != fingerprints_.end() && known->second == service.fingerprint) {
                continue;
            }
            if (known != fingerprints_.end()) {
                stop_service(service.name);
                changed.push_back(service.name);
            } else {
                added.push_back(service.name);
            }
            start_service(service);
        }
        config_.interval = next.interval;
        config_.metrics = next.metrics;
        config_.services = next.services;
        events_.emit("reload", {{"config", config_.path},
                                {"services", services_.size()},
                                {"added", name_list(added)},
                                {"changed", name_list(changed)},
                                {"removed", name_list(removed)}});
    }

    int stop(int signal) {
        notifier_.stopping();
        events_.emit("stop", {{"reason", "signal " + signal_name(signal)}});
        return 0;
    }

    DaemonConfig config_;
    ConfigOverrides overrides_;
    Observer& observer_;
    const ProcFs& proc_;
    SignalGate& gate_;
    Signaller& signaller_;
    EventLog events_;
    ManagerClaims claims_;
    std::map<std::string, std::unique_ptr<Service>> services_;
    std::map<std::string, std::string> fingerprints_;  // each running service's settings
    ServiceNotifier notifier_;
    std::optional<Metrics> metrics_;  // with [metrics] (or --metrics-listen) only
    std::string last_publish_error_;
    static constexpr int kStatusEvery = 10;  // ticks between status lines
    int ticks_since_status_ = 0;
};

// The command line's checks before anything is loaded: a pidfile that cannot be read is a
// usage error unless the service waits for its manager.
void check_command_line_services(const DaemonConfig& config) {
    if (!config.path.empty()) {
        return;
    }
    for (const ServiceConfig& service : config.services) {
        const ReapOptions& options = service.options;
        if (options.manager.kind == ManagerSelector::Kind::pidfile && !options.wait_for_manager) {
            read_pidfile(options.manager.value);
        }
    }
}

}  // namespace

int run_daemon(const DaemonConfig& config, const Logger& log, const ConfigOverrides& overrides) {
    if (config.services.empty()) {
        throw UsageError("no service to watch");
    }
    check_command_line_services(config);
    require_host_pid_namespace();
    const KernelFeatures features = require_usable_kernel();
    const ProcFs proc;
    Observer observer({.cow = features.cow_source(config.fault_source)}, log);
    SignalGate gate;
    PidfdSignaller signaller(proc);
    Daemon daemon(config, overrides, observer, proc, gate, signaller);
    return daemon.run();
}

}  // namespace kidreaper
