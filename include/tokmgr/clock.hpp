// tokmgr/clock.hpp — the Clock policies tokmgr ships.
//
// A token's deadlines are seconds apart, so the hot path needs a time source
// precise to milliseconds, not nanoseconds. On Linux the default is therefore
// CLOCK_MONOTONIC_COARSE, which the vDSO answers from the last timer tick
// without reading the TSC: a fraction of a steady_clock read on the KVM
// guests tokmgr is benchmarked on (BENCHMARKS.md §1). A clock that names its
// `resolution()` has it added to every leeway, so a reading a tick or two old
// does not serve a JWT past its hard threshold (a later tick is rare, and the
// leeway's 10% of the JWT's life keeps even that from serving an expired JWT).
//
// Across a suspended machine (a laptop lid, a paused VM) the monotonic clocks
// (steady_clock, coarse_steady_clock) stop, while the JWT's expiry, set by the
// server's wall clock, does not: after a resume the manager would serve a JWT
// the server considers expired until the server says 401. Hosts that suspend
// should use boottime_clock, which counts the time suspended.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

#if defined(__linux__)
#include <time.h>
#endif

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

/// The default: CLOCK_MONOTONIC_COARSE on Linux (steady_clock's epoch, read
/// from the last tick: cheap, and a tick or so behind), steady_clock
/// elsewhere. Its time points are steady_clock's, so they compare with
/// steady_clock's and with Asio's steady_timer.
class coarse_steady_clock {
public:
    using duration = std::chrono::steady_clock::duration;
    using time_point = std::chrono::steady_clock::time_point;

    coarse_steady_clock() noexcept : resolution_(measured_resolution()) {}

    time_point now() const noexcept {
#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
        timespec ts;
        ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
        return time_point(std::chrono::duration_cast<duration>(std::chrono::seconds(ts.tv_sec) +
                                                               std::chrono::nanoseconds(ts.tv_nsec)));
#else
        return std::chrono::steady_clock::now();
#endif
    }
    std::chrono::system_clock::time_point wall_now() const noexcept { return std::chrono::system_clock::now(); }

    /// How far behind the true time tokmgr takes a reading to be: two timer
    /// ticks (8 ms at the common CONFIG_HZ=250). One tick is the clock's
    /// resolution; the second is for a tick that comes late, as on a busy
    /// virtual machine (1.5 ticks under load on the 2-core KVM test machine,
    /// once 2.5 under ThreadSanitizer). Later still, rare, is absorbed by the
    /// leeway (10% of the JWT's life), as scheduling delay is for every clock. 0
    /// where steady_clock is read instead.
    std::chrono::nanoseconds resolution() const noexcept { return resolution_; }

private:
    static std::chrono::nanoseconds measured_resolution() noexcept {
#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
        timespec res;
        if (::clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0)
            return 2 * (std::chrono::seconds(res.tv_sec) + std::chrono::nanoseconds(res.tv_nsec));
        return 2 * std::chrono::milliseconds(10);  // CONFIG_HZ=100, the coarsest Linux has
#else
        return std::chrono::nanoseconds(0);
#endif
    }

    std::chrono::nanoseconds resolution_;
};

/// For hosts that suspend: CLOCK_BOOTTIME on Linux, which goes on counting
/// while the machine sleeps, so a JWT that expired during a suspend is not
/// served after the resume. Full precision (a read costs about what a
/// steady_clock read does). Elsewhere it reads steady_clock.
class boottime_clock {
public:
    /// A chrono clock of its own: boot time has its own epoch, so its time
    /// points must not be compared with steady_clock's.
    struct base {
        using rep = std::int64_t;
        using period = std::nano;
        using duration = std::chrono::nanoseconds;
        using time_point = std::chrono::time_point<base, duration>;
        static constexpr bool is_steady = true;
        static time_point now() noexcept {
#if defined(__linux__) && defined(CLOCK_BOOTTIME)
            timespec ts;
            ::clock_gettime(CLOCK_BOOTTIME, &ts);
            return time_point(std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec));
#else
            return time_point(std::chrono::duration_cast<duration>(
                std::chrono::steady_clock::now().time_since_epoch()));
#endif
        }
    };
    using duration = base::duration;
    using time_point = base::time_point;

    time_point now() const noexcept { return base::now(); }
    std::chrono::system_clock::time_point wall_now() const noexcept { return std::chrono::system_clock::now(); }
};

namespace detail {

/// A Clock policy's `resolution()` if it has one, else 0: how much earlier
/// than its leeway alone a JWT must stop being served. Kept within 0 to 1 s
/// (the least leeway there is), so a clock that reports nonsense can neither
/// move a deadline later nor overflow one.
template <class Clock>
auto clock_resolution(const Clock& clock, int) noexcept
    -> decltype(std::chrono::duration_cast<std::chrono::nanoseconds>(clock.resolution())) {
    const auto said = std::chrono::duration_cast<std::chrono::nanoseconds>(clock.resolution());
    return std::min(std::max(said, std::chrono::nanoseconds(0)), std::chrono::nanoseconds(std::chrono::seconds(1)));
}
template <class Clock>
std::chrono::nanoseconds clock_resolution(const Clock&, long) noexcept {
    return std::chrono::nanoseconds(0);
}

}  // namespace detail

}  // namespace tokmgr
