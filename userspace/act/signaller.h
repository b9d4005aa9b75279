// Sending a signal to a chosen child, safely: the target is verified again right before
// the signal (still a child of the manager, same start time, not the manager, not us)
// and the signal goes through a pidfd, so a reused pid can never receive it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "observe/procfs.h"

namespace kidreaper {

// Who a signal is for, as chosen.
struct SignalTarget {
    pid_t pid = 0;
    std::uint64_t start_ticks = 0;  // /proc/PID/stat field 22 when chosen
    pid_t manager = 0;              // it must still be this process's child
};

enum class SignalOutcome {
    sent,
    gone,           // exited before the signal
    not_our_child,  // pid reused, re-parented, or a zombie: left alone
    forbidden,      // the manager, init, kidreaper itself, or a bad pid
    failed,         // the kernel refused (errno in the message)
};

std::string outcome_name(SignalOutcome outcome);

// The narrow interface the reaper signals through; tests record instead.
class Signaller {
public:
    virtual ~Signaller() = default;
    virtual SignalOutcome send(const SignalTarget& target, int signal) = 0;
};

// The real one: pidfd_open, verify /proc, pidfd_send_signal.
class PidfdSignaller final : public Signaller {
public:
    explicit PidfdSignaller(const ProcFs& proc) : proc_(proc) {}
    SignalOutcome send(const SignalTarget& target, int signal) override;

private:
    const ProcFs& proc_;
};

}  // namespace kidreaper
