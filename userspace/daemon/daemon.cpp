#include "daemon/daemon.h"

#include <map>
#include <memory>

#include "act/signaller.h"
#include "act/signals.h"
#include "common/error.h"
#include "daemon/service.h"
#include "observe/kernel_features.h"
#include "observe/manager_lookup.h"
#include "observe/observer.h"
#include "observe/procfs.h"

namespace kidreaper {
namespace {

class Daemon {
public:
    Daemon(DaemonConfig config, Observer& observer, const ProcFs& proc, SignalGate& gate,
           Signaller& signaller)
        : config_(std::move(config)),
          observer_(observer),
          proc_(proc),
          gate_(gate),
          signaller_(signaller),
          events_(config_.log_format) {}

    int run() {
        for (const ServiceConfig& service : config_.services) {
            start_service(service);
        }
        while (true) {
            if (const int signal = gate_.wait_for(config_.interval); signal != 0) {
                return stop(signal);
            }
            if (gate_.take_reload()) {
                reload();
            }
            bool all_finished = !services_.empty();
            for (auto& [name, service] : services_) {
                const StepResult result = service->step();
                if (gate_.stop_requested()) {
                    return stop(gate_.received());
                }
                if (result == StepResult::gone) {
                    return 1;  // a manager is gone and its service does not wait for it
                }
                all_finished = all_finished && result == StepResult::finished;
            }
            if (all_finished) {
                events_.emit("stop", {{"reason", "once: nothing over the limit or in flight"}});
                return 0;
            }
        }
    }

private:
    ServiceContext context() {
        return ServiceContext{.observer = observer_,
                              .proc = proc_,
                              .signaller = signaller_,
                              .gate = gate_,
                              .claims = claims_,
                              .label_events = config_.services.size() > 1,
                              .log_format = config_.log_format};
    }

    void start_service(const ServiceConfig& config) {
        auto service = std::make_unique<Service>(config.name, config.options, context(),
                                                 config.options.wait_for_manager);
        service->start();
        services_[config.name] = std::move(service);
    }

    // SIGHUP: the command line has no file to read again.
    void reload() { events_.emit("reload", {{"detail", "no --config file: nothing to reload"}}); }

    int stop(int signal) {
        events_.emit("stop", {{"reason", "signal " + signal_name(signal)}});
        return 0;
    }

    DaemonConfig config_;
    Observer& observer_;
    const ProcFs& proc_;
    SignalGate& gate_;
    Signaller& signaller_;
    EventLog events_;
    ManagerClaims claims_;
    std::map<std::string, std::unique_ptr<Service>> services_;
};

}  // namespace

int run_daemon(const DaemonConfig& config, const Logger& log) {
    if (config.services.empty()) {
        throw UsageError("no service to watch");
    }
    require_host_pid_namespace();
    const KernelFeatures features = require_usable_kernel();
    const ProcFs proc;
    Observer observer({.cow = features.cow_source(config.fault_source)}, log);
    SignalGate gate;
    PidfdSignaller signaller(proc);
    Daemon daemon(config, observer, proc, gate, signaller);
    return daemon.run();
}

}  // namespace kidreaper
