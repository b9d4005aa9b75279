#include "daemon/event_log.h"

#include <sys/time.h>

#include <ctime>

namespace kidreaper {

namespace {

std::string utc_now() {
    timeval now{};
    gettimeofday(&now, nullptr);
    tm parts{};
    gmtime_r(&now.tv_sec, &parts);
    char text[40];
    const std::size_t length = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &parts);
    std::snprintf(text + length, sizeof text - length, ".%03ldZ",
                  static_cast<long>(now.tv_usec / 1000));
    return text;
}

bool needs_quotes(const std::string& text) {
    return text.empty() || text.find_first_of(" \"=\\\t\n") != std::string::npos;
}

}  // namespace

std::string EventLog::format_line(const std::string& event, const Fields& fields,
                                  const std::string& time) const {
    if (format_ == LogFormat::json) {
        nlohmann::ordered_json line;
        line["time"] = time;
        line["event"] = event;
        for (const auto& [key, value] : fields) {
            line[key] = value;
        }
        return line.dump();
    }
    std::string line = time + " " + event;
    for (const auto& [key, value] : fields) {
        std::string text = value.is_string() ? value.get<std::string>() : value.dump();
        if (needs_quotes(text)) {
            text = nlohmann::json(text).dump();  // quoted and escaped
        }
        line.append(" ").append(key).append("=").append(text);
    }
    return line;
}

void EventLog::emit(const std::string& event, const Fields& fields) const {
    const std::string line = format_line(event, fields, utc_now());
    std::fprintf(out_, "%s\n", line.c_str());
    std::fflush(out_);
}

}  // namespace kidreaper
