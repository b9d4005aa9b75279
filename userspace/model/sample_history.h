// A bounded whole-life history of one child's samples, for long-running watches (reap).
//
// The newest samples are kept at full resolution; older ones are thinned to a stride (a
// power of two, in appended samples) that doubles as the child ages, so the history always
// spans the child's whole life, from its very first sample (the start of life) to its newest,
// evenly enough that each third of a life is represented. Memory is O(capacity).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "model/classifier.h"

namespace kidreaper {

class SampleHistory {
public:
    // At most `capacity` samples are held (a capacity under 16 is raised to 16).
    explicit SampleHistory(std::size_t capacity = 512);

    // Adds the newest sample (samples come in time order); amortised O(1).
    void append(const GrowthSample& sample);

    // The held samples, oldest first: the first ever appended, then every `stride()`-th
    // appended sample, then the newest ones at full resolution (at least capacity / 4).
    std::span<const GrowthSample> samples() const { return samples_; }
    std::size_t size() const { return samples_.size(); }
    bool empty() const { return samples_.empty(); }
    // The newest sample; the history must not be empty.
    const GrowthSample& back() const { return samples_.back(); }

    std::size_t capacity() const { return capacity_; }
    // How many samples were ever appended.
    std::uint64_t appended() const { return appended_; }
    // The stride of the thinned older part, in appended samples (1 until the first thinning).
    std::uint64_t stride() const { return stride_; }

private:
    // Makes room: keeps the newest capacity / 4 samples, thins the rest to a stride under
    // which at most capacity / 2 remain.
    void thin();

    std::size_t capacity_;
    std::vector<GrowthSample> samples_;
    std::size_t thinned_count_ = 0;  // leading samples at stride_: appended #0, #stride_, ...
    std::uint64_t stride_ = 1;
    std::uint64_t appended_ = 0;
};

}  // namespace kidreaper
