#include "model/sample_history.h"

#include <algorithm>

namespace kidreaper {

namespace {

constexpr std::size_t kMinCapacity = 16;

}  // namespace

SampleHistory::SampleHistory(std::size_t capacity) : capacity_(std::max(capacity, kMinCapacity)) {}

void SampleHistory::append(const GrowthSample& sample) {
    if (samples_.size() >= capacity_) {
        thin();
    }
    samples_.push_back(sample);
    ++appended_;
}

void SampleHistory::thin() {
    // Held samples: [0, thinned_count_) are appended #0, #stride_, #2*stride_, ...;
    // the rest are consecutive, ending with appended #(appended_ - 1).
    const std::uint64_t first_recent = appended_ - (samples_.size() - thinned_count_);
    const std::uint64_t old_stride = stride_;
    auto appended_index = [&](std::size_t position) -> std::uint64_t {
        return position < thinned_count_ ? position * old_stride
                                         : first_recent + (position - thinned_count_);
    };
    const std::size_t boundary = samples_.size() - capacity_ / 4;  // newest stay as they are
    const std::uint64_t last_thinned = appended_index(boundary - 1);
    while (last_thinned / stride_ + 1 > capacity_ / 2) {
        stride_ *= 2;
    }
    std::size_t out = 0;
    for (std::size_t position = 0; position < boundary; ++position) {
        if (appended_index(position) % stride_ == 0) {
            samples_[out++] = samples_[position];
        }
    }
    thinned_count_ = out;
    const auto recent = samples_.begin() + static_cast<std::ptrdiff_t>(boundary);
    std::move(recent, samples_.end(), samples_.begin() + static_cast<std::ptrdiff_t>(out));
    samples_.resize(out + (samples_.size() - boundary));
}

}  // namespace kidreaper
