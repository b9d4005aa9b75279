// A --workers rule (parse_worker_rule): bad input is a one-line UsageError; a parsed rule
// has at least one condition, "any" alone, and parses back from its own text.
#include <cstddef>
#include <cstdint>

#include "fuzz_support.h"
#include "policy/worker_rule.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using kidreaper::fuzz::check;
    kidreaper::WorkerRule rule;
    if (!kidreaper::fuzz::accepts(
            [&] { rule = kidreaper::parse_worker_rule(kidreaper::fuzz::as_text(data, size)); })) {
        return 0;
    }
    const bool conditions =
        rule.same_exe || rule.listener || !rule.comm_globs.empty() || !rule.cmdline_globs.empty();
    check(rule.any != conditions, "a rule is \"any\" alone or has conditions");
    const kidreaper::WorkerRule again = kidreaper::parse_worker_rule(rule.text);
    check(again.same_exe == rule.same_exe && again.listener == rule.listener &&
              again.comm_globs == rule.comm_globs && again.cmdline_globs == rule.cmdline_globs,
          "a rule parses back from its text");
    // Judging never throws, whatever the facts.
    kidreaper::ChildFacts child;
    child.comm = std::string(kidreaper::fuzz::as_text(data, size));
    child.cmdline = child.comm;
    (void)kidreaper::judge_role(rule, child, {});
    return 0;
}
