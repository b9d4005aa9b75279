#include "common/log.h"

#include <bpf/libbpf.h>

namespace kidreaper {

namespace {

const char* level_name(LogLevel level) {
    switch (level) {
        case LogLevel::error:
            return "error";
        case LogLevel::warn:
            return "warning";
        case LogLevel::info:
            return "info";
        case LogLevel::debug:
            return "debug";
    }
    return "?";
}

int libbpf_verbose_print(enum libbpf_print_level, const char* format, va_list args) {
    std::fputs("libbpf: ", stderr);
    return std::vfprintf(stderr, format, args);
}

int libbpf_quiet_print(enum libbpf_print_level, const char*, va_list) {
    return 0;
}

}  // namespace

void Logger::write(LogLevel level, const std::string& message) const {
    if (!enabled(level)) {
        return;
    }
    std::fprintf(out_, "kidreaper: %s: %s\n", level_name(level), message.c_str());
}

void route_libbpf_log(bool verbose) {
    libbpf_set_print(verbose ? libbpf_verbose_print : libbpf_quiet_print);
}

}  // namespace kidreaper
