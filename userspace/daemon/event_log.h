// One line per event on a stream: "TIME EVENT key=value ..." or a JSON object per line.
#pragma once

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace kidreaper {

enum class LogFormat { text, json };

class EventLog {
public:
    using Fields = std::vector<std::pair<std::string, nlohmann::json>>;

    explicit EventLog(LogFormat format, std::FILE* out = stdout) : format_(format), out_(out) {}
    void emit(const std::string& event, const Fields& fields) const;
    // The line emit() would write, without the time (for tests).
    std::string format_line(const std::string& event, const Fields& fields,
                            const std::string& time) const;

private:
    LogFormat format_;
    std::FILE* out_;
};

}  // namespace kidreaper
