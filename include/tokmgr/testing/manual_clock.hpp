// tokmgr/testing/manual_clock.hpp — a clock that moves only when told.
//
// Days of token lifetimes pass in microseconds, deterministically. Copies
// share one time, so a test keeps a copy and advances the one it gave the
// manager. Safe to read and advance from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>

namespace tokmgr::testing {

class manual_clock {
public:
    using rep = std::int64_t;
    using period = std::nano;
    using duration = std::chrono::nanoseconds;
    using time_point = std::chrono::time_point<manual_clock, duration>;
    static constexpr bool is_steady = true;

    /// Starts at monotonic time zero and wall time `wall_start`
    /// (2026-01-01T00:00:00Z unless given).
    explicit manual_clock(std::chrono::system_clock::time_point wall_start = default_wall_start())
        : state_(std::make_shared<state>()) {
        state_->wall_at_zero_ns.store(
            std::chrono::duration_cast<duration>(wall_start.time_since_epoch()).count());
    }

    time_point now() const noexcept {
        return time_point(duration(state_->monotonic_ns.load(std::memory_order_acquire)));
    }

    std::chrono::system_clock::time_point wall_now() const noexcept {
        const auto ns = state_->wall_at_zero_ns.load(std::memory_order_acquire) +
                        state_->monotonic_ns.load(std::memory_order_acquire);
        return std::chrono::system_clock::time_point(
            std::chrono::duration_cast<std::chrono::system_clock::duration>(duration(ns)));
    }

    /// Moves both the monotonic and the wall time forward.
    template <class Rep, class Period>
    void advance(std::chrono::duration<Rep, Period> d) noexcept {
        state_->monotonic_ns.fetch_add(std::chrono::duration_cast<duration>(d).count(), std::memory_order_acq_rel);
    }

    /// Moves only the wall clock, as an NTP step or a skewed host would.
    template <class Rep, class Period>
    void skew_wall(std::chrono::duration<Rep, Period> d) noexcept {
        state_->wall_at_zero_ns.fetch_add(std::chrono::duration_cast<duration>(d).count(),
                                          std::memory_order_acq_rel);
    }

    /// What the manager reads as the clock's resolution when it is built (0
    /// unless set): a coarse clock's tick, which every leeway grows by.
    std::chrono::nanoseconds resolution() const noexcept {
        return duration(state_->resolution_ns.load(std::memory_order_acquire));
    }
    template <class Rep, class Period>
    void set_resolution(std::chrono::duration<Rep, Period> d) noexcept {
        state_->resolution_ns.store(std::chrono::duration_cast<duration>(d).count(), std::memory_order_release);
    }

    static std::chrono::system_clock::time_point default_wall_start() noexcept {
        return std::chrono::system_clock::time_point(std::chrono::seconds(1767225600));  // 2026-01-01
    }

private:
    struct state {
        std::atomic<std::int64_t> monotonic_ns{0};
        std::atomic<std::int64_t> wall_at_zero_ns{0};
        std::atomic<std::int64_t> resolution_ns{0};
    };
    std::shared_ptr<state> state_;
};

}  // namespace tokmgr::testing
