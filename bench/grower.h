// The grower of benchmarks 3 (reaction) and 6 (host): a child that, on "g" from go_fd,
// writes `grow_bytes` of fresh memory page by page and writes to result_fd
// "crossed CROSSED_NS BEGAN_NS DONE_NS BASELINE_BYTES" (CLOCK_MONOTONIC at the page that takes
// its private memory past `limit`); when kidreaper's signal arrives it writes
// "signal SIG NOW_NS CROSSED_NS" and exits. Run in a forked child; never returns after "g".
#pragma once

#include <cstdint>

namespace krbench {

int grower_main(int go_fd, int result_fd, std::uint64_t limit, std::uint64_t grow_bytes);

}  // namespace krbench
