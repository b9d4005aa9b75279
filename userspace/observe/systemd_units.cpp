// systemd over the system bus (sd-bus): the real SystemdUnits. The static build, which has no
// libsystemd, compiles systemd_units_static.cpp instead.
#include <systemd/sd-bus.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "common/error.h"
#include "observe/manager_lookup.h"
#include "observe/procfs.h"

namespace kidreaper {
namespace {

constexpr std::uint64_t kBusTimeoutUsec = 5'000'000;

// RAII for sd-bus objects.
struct BusClose {
    void operator()(sd_bus* bus) const { sd_bus_flush_close_unref(bus); }
};
struct MessageUnref {
    void operator()(sd_bus_message* message) const { sd_bus_message_unref(message); }
};
struct FreeChars {
    void operator()(char* text) const { std::free(text); }  // NOLINT(*-no-malloc): sd-bus
};
class BusError {
public:
    BusError() = default;
    ~BusError() { sd_bus_error_free(&error_); }
    BusError(const BusError&) = delete;
    BusError& operator=(const BusError&) = delete;
    sd_bus_error* get() { return &error_; }
    // The message (or name, or errno text), made one printable line.
    std::string describe(int r) const {
        if (error_.message != nullptr) {
            return printable(error_.message);
        }
        if (error_.name != nullptr) {
            return printable(error_.name);
        }
        return std::generic_category().message(-r);
    }
    bool is(const char* name) const { return sd_bus_error_has_name(&error_, name) != 0; }

private:
    sd_bus_error error_{};  // SD_BUS_ERROR_NULL, a C compound literal, is all zeros
};

UnitQuery bus_problem(std::string text) {
    UnitQuery query;
    query.problem = std::move(text);
    return query;
}

const char* const kSystemd = "org.freedesktop.systemd1";

}  // namespace

UnitQuery SdBusSystemdUnits::facts(const std::string& name) const {
    const std::string unreachable = "cannot reach systemd over D-Bus: ";
    sd_bus* raw = nullptr;
    int r = sd_bus_open_system(&raw);
    if (r < 0) {
        return bus_problem(unreachable + std::generic_category().message(-r));
    }
    const std::unique_ptr<sd_bus, BusClose> bus(raw);
    sd_bus_set_method_call_timeout(bus.get(), kBusTimeoutUsec);

    sd_bus_message* raw_reply = nullptr;
    BusError get_unit;
    r = sd_bus_call_method(bus.get(), kSystemd, "/org/freedesktop/systemd1",
                           "org.freedesktop.systemd1.Manager", "GetUnit", get_unit.get(),
                           &raw_reply, "s", name.c_str());
    const std::unique_ptr<sd_bus_message, MessageUnref> reply(raw_reply);
    if (r < 0) {
        if (get_unit.is("org.freedesktop.systemd1.NoSuchUnit")) {
            return bus_problem("unit " + name + " is not loaded (systemctl status " + name + ")");
        }
        return bus_problem(unreachable + get_unit.describe(r));
    }
    const char* object = nullptr;
    r = sd_bus_message_read(reply.get(), "o", &object);
    if (r < 0 || object == nullptr) {
        return bus_problem("unit " + name + ": unexpected GetUnit reply from systemd");
    }
    const std::string path = object;

    const bool service = std::string_view(name).ends_with(".service");
    const char* const interface =
        service ? "org.freedesktop.systemd1.Service" : "org.freedesktop.systemd1.Scope";
    UnitFacts facts;
    if (service) {
        std::uint32_t main_pid = 0;
        BusError error;
        r = sd_bus_get_property_trivial(bus.get(), kSystemd, path.c_str(), interface, "MainPID",
                                        error.get(), 'u', &main_pid);
        if (r < 0) {
            return bus_problem("unit " + name + ": cannot read MainPID: " + error.describe(r));
        }
        if (main_pid > static_cast<std::uint32_t>(kPidMaxLimit)) {
            return bus_problem("unit " + name + ": systemd reports an invalid MainPID");
        }
        facts.main_pid = static_cast<pid_t>(main_pid);
    }
    char* raw_group = nullptr;
    BusError error;
    r = sd_bus_get_property_string(bus.get(), kSystemd, path.c_str(), interface, "ControlGroup",
                                   error.get(), &raw_group);
    const std::unique_ptr<char, FreeChars> group(raw_group);
    if (r < 0) {
        return bus_problem("unit " + name + ": cannot read ControlGroup: " + error.describe(r));
    }
    facts.control_group = group ? group.get() : "";
    UnitQuery query;
    query.facts = std::move(facts);
    return query;
}

}  // namespace kidreaper
