// Benchmark 3: reaction time of the real `kidreaper reap`, from a child crossing the limit
// to that child receiving kidreaper's signal, against the interval.
//
// Each trial: a manager (--preload inherited) with 3 idle children and one grower; a fresh
// `kidreaper reap --pid M --limit L --interval I --log-format json --no-idle-wait
// --stagger 0s`; once kidreaper logged "start", the harness waits I plus a random part of
// I (so the crossing falls at a random phase of kidreaper's ticks), then tells the grower to
// go. The grower reads its own private memory from smaps_rollup, maps fresh memory and
// writes it page by page, noting CLOCK_MONOTONIC at the page that takes its private memory
// past L; its signal handler notes CLOCK_MONOTONIC on receipt. Reaction = receipt - crossing.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>

#include "bench_util.h"
#include "common/units.h"
#include "grower.h"
#include "observe/procfs.h"

namespace krbench {

namespace {

// A manager with idle children and one grower. Destruction kills them all.
class ReactionManager {
public:
    ReactionManager(std::uint64_t preload, std::uint64_t limit, std::uint64_t grow_bytes) {
        pid_ = fork_process([&]() {
            commands_.close_write();
            go_.close_write();
            results_.close_read();
            prctl(PR_SET_NAME, "kr-bench-mgr");
            unsigned char* memory = map_anonymous(preload);
            std::memset(memory, 0x5a, preload);
            Pipe hold;
            std::vector<pid_t> kids;
            for (int i = 0; i < 3; ++i) {
                kids.push_back(fork_process([&]() {
                    hold.close_write();
                    prctl(PR_SET_NAME, "kr-bench-idle");
                    char byte = 0;
                    while (read(hold.read_fd, &byte, 1) < 0 && errno == EINTR) {
                    }
                    return 0;
                }));
            }
            kids.push_back(fork_process(
                [&]() { return grower_main(go_.read_fd, results_.write_fd, limit, grow_bytes); }));
            write_all(results_.write_fd, "ready " + std::to_string(kids.back()) + "\n");
            wait_then_kill_children(commands_.read_fd, kids);
            return 0;
        });
        commands_.close_read();
        go_.close_read();
        results_.close_write();
        reader_ = std::make_unique<LineReader>(results_.read_fd);
        const auto line = reader_->next(60'000);
        if (!line || !line->starts_with("ready ")) {
            throw std::runtime_error("the reaction manager did not start");
        }
        grower_ = std::stoi(line->substr(6));
    }
    ~ReactionManager() {
        commands_.close_write();
        if (!wait_exit(pid_, 30'000)) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
    }
    ReactionManager(const ReactionManager&) = delete;
    ReactionManager& operator=(const ReactionManager&) = delete;

    pid_t pid() const { return pid_; }
    pid_t grower() const { return grower_; }
    void go() { write_all(go_.write_fd, "g"); }
    LineReader& results() { return *reader_; }

private:
    pid_t pid_ = -1;
    pid_t grower_ = -1;
    Pipe commands_;
    Pipe go_;
    Pipe results_;
    std::unique_ptr<LineReader> reader_;
};

std::vector<std::string> split_list(const std::string& text) {
    std::vector<std::string> items;
    std::istringstream in(text);
    for (std::string item; std::getline(in, item, ',');) {
        items.push_back(item);
    }
    return items;
}

}  // namespace

int run_reaction(const Args& args) {
    const std::string kidreaper = args.get_or("--kidreaper", "build-bench/kidreaper");
    const auto intervals = split_list(args.get_or("--intervals", "250ms,500ms,1s"));
    const int trials = static_cast<int>(args.get_long("--trials", 8));
    const std::uint64_t limit = static_cast<std::uint64_t>(args.get_long("--limit-mib", 64)) << 20;
    const std::uint64_t grow = static_cast<std::uint64_t>(args.get_long("--grow-mib", 96)) << 20;
    const std::uint64_t preload = static_cast<std::uint64_t>(args.get_long("--preload-mib", 32))
                                  << 20;
    std::mt19937_64 random(static_cast<std::uint64_t>(args.get_long("--seed", 20240601)));

    Json per_interval = Json::array();
    for (const auto& interval_text : intervals) {
        const auto interval_ms = kidreaper::parse_duration(interval_text).count();
        const std::uint64_t interval_ns = static_cast<std::uint64_t>(interval_ms) * 1'000'000;
        std::vector<double> reaction_ms;
        Json trial_docs = Json::array();
        for (int trial = 0; trial < trials; ++trial) {
            ReactionManager manager(preload, limit, grow);
            Pipe output;
            const pid_t reaper =
                spawn_program({kidreaper, "reap", "--pid", std::to_string(manager.pid()), "--limit",
                               std::to_string(limit) + "B", "--interval", interval_text,
                               "--log-format", "json", "--no-idle-wait", "--stagger", "0s"},
                              output.write_fd, true);
            output.close_write();
            LineReader log(output.read_fd);
            std::string log_text;
            bool started = false;
            while (const auto line = log.next(60'000)) {
                log_text += *line + "\n";
                if (line->find("\"event\":\"start\"") != std::string::npos) {
                    started = true;
                    break;
                }
            }
            Json doc{{"trial", trial}};
            if (!started) {
                stop_process(reaper, SIGTERM, 5'000);
                doc["error"] = "kidreaper did not start: " + log_text;
                trial_docs.push_back(doc);
                continue;
            }
            const std::uint64_t phase =
                std::uniform_int_distribution<std::uint64_t>(0, interval_ns - 1)(random);
            sleep_ns(interval_ns + phase);
            manager.go();
            std::uint64_t crossed = 0, grow_began = 0, grow_done = 0, baseline = 0;
            std::uint64_t received = 0;
            int signal = 0;
            const int timeout_ms = static_cast<int>(3 * interval_ms + 10'000);
            while (received == 0) {
                const auto line = manager.results().next(timeout_ms);
                if (!line) {
                    break;
                }
                std::istringstream fields(*line);
                std::string tag;
                fields >> tag;
                if (tag == "crossed") {
                    fields >> crossed >> grow_began >> grow_done >> baseline;
                } else if (tag == "signal") {
                    std::uint64_t crossed_then = 0;
                    fields >> signal >> received >> crossed_then;
                    if (crossed == 0) {
                        crossed = crossed_then;  // signalled while still writing
                    }
                }
            }
            while (const auto line = log.next(200)) {
                log_text += *line + "\n";
            }
            stop_process(reaper, SIGTERM, 5'000);
            while (const auto line = log.next(1'000)) {
                log_text += *line + "\n";
            }
            doc["phase_ms"] = static_cast<double>(phase) / 1e6;
            if (grow_done != 0) {
                doc["baseline_private_bytes"] = baseline;
                doc["grow_ms"] = static_cast<double>(grow_done - grow_began) / 1e6;
            } else {
                doc["signalled_while_growing"] = received != 0;
            }
            if (received != 0 && crossed == 0) {
                doc["error"] =
                    "signalled before the computed crossing; kidreaper said:\n" + log_text;
            } else if (crossed == 0 || received == 0) {
                doc["error"] = "no crossing or no signal within " + std::to_string(timeout_ms) +
                               " ms; kidreaper said:\n" + log_text;
            } else {
                const double ms =
                    (static_cast<double>(received) - static_cast<double>(crossed)) / 1e6;
                reaction_ms.push_back(ms);
                doc["reaction_ms"] = ms;
                doc["signal"] = signal;
                for (std::istringstream lines(log_text); !lines.eof();) {
                    std::string line;
                    std::getline(lines, line);
                    if (line.find("\"event\":\"recycle\"") != std::string::npos) {
                        doc["recycle_event"] = Json::parse(line, nullptr, false);
                    }
                }
            }
            trial_docs.push_back(doc);
        }
        const double bound_ms = static_cast<double>(interval_ms) + 100.0;
        per_interval.push_back(
            {{"interval", interval_text},
             {"interval_ms", interval_ms},
             {"bound_ms", bound_ms},
             {"reaction_ms", summary(reaction_ms)},
             {"within_bound", !reaction_ms.empty() && max_of(reaction_ms) <= bound_ms &&
                                  static_cast<int>(reaction_ms.size()) == trials},
             {"trials", trial_docs}});
        std::cerr << "reaction: interval " << interval_text << ": median " << median(reaction_ms)
                  << " ms, max " << max_of(reaction_ms) << " ms over " << reaction_ms.size()
                  << " trials\n";
    }
    emit(args, Json{{"benchmark", "reaction"},
                    {"machine", machine_facts()},
                    {"limit_bytes", limit},
                    {"grow_bytes", grow},
                    {"preload_bytes", preload},
                    {"trials_per_interval", trials},
                    {"intervals", per_interval}});
    return 0;
}

}  // namespace krbench
