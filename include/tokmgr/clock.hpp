// tokmgr/clock.hpp — the default Clock policy.
#pragma once

#include <chrono>

namespace tokmgr {

/// Schedules by std::chrono::steady_clock, which no wall-clock adjustment
/// moves; `wall_now` serves only to read a JWT's `exp` when it has no `iat`.
class steady_clock {
public:
    using duration = std::chrono::steady_clock::duration;
    using time_point = std::chrono::steady_clock::time_point;

    time_point now() const noexcept { return std::chrono::steady_clock::now(); }
    std::chrono::system_clock::time_point wall_now() const noexcept { return std::chrono::system_clock::now(); }
};

}  // namespace tokmgr
