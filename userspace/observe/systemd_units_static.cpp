// The static build's SystemdUnits: Debian ships libsystemd as a shared library only, so a
// static kidreaper cannot ask systemd over D-Bus and says so.
#include "observe/manager_lookup.h"

namespace kidreaper {

UnitQuery SdBusSystemdUnits::facts(const std::string& name) const {
    UnitQuery query;
    query.problem = "unit " + name +
                    ": this kidreaper is the static build, which cannot ask systemd over D-Bus "
                    "(no libsystemd): name the server by --cgroup, --pidfile or --pid";
    return query;
}

}  // namespace kidreaper
