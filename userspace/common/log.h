// A small leveled logger writing to a stream (stderr by default). Owned, not global:
// whoever needs to log takes a Logger&.
#pragma once

#include <cstdarg>
#include <cstdio>
#include <string>

namespace kidreaper {

enum class LogLevel { error = 0, warn = 1, info = 2, debug = 3 };

class Logger {
public:
    explicit Logger(LogLevel level = LogLevel::info, std::FILE* out = stderr)
        : level_(level), out_(out) {}

    bool enabled(LogLevel level) const { return level <= level_; }
    LogLevel level() const { return level_; }
    void error(const std::string& message) const { write(LogLevel::error, message); }
    void warn(const std::string& message) const { write(LogLevel::warn, message); }
    void info(const std::string& message) const { write(LogLevel::info, message); }
    void debug(const std::string& message) const { write(LogLevel::debug, message); }
    void write(LogLevel level, const std::string& message) const;

private:
    LogLevel level_;
    std::FILE* out_;
};

// Routes libbpf's own messages to stderr at debug level when `verbose`, else drops
// all but its warnings. libbpf's print hook is process-wide; call once from main().
void route_libbpf_log(bool verbose);

}  // namespace kidreaper
