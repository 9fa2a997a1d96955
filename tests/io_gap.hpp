// How long an io thread went without running a 10 ms ticker while a store
// stalled, and the bound on it: 50 ms, as the goal says; under
// ThreadSanitizer, which slows every thread several times, 150 ms, still well
// below any stall (250 ms to 1.5 s in the tests) the store could have caused
// on that thread.
#pragma once

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <system_error>

namespace test {

#if defined(__SANITIZE_THREAD__)
inline constexpr std::chrono::milliseconds io_gap_bound{150};
#else
inline constexpr std::chrono::milliseconds io_gap_bound{50};
#endif

/// Runs `io` (at most `limit`) with a 10 ms ticker until `done()`, and
/// returns the widest gap between two ticks.
template <class Done>
std::chrono::steady_clock::duration widest_gap_while(asio::io_context& io, Done done,
                                                     std::chrono::seconds limit = std::chrono::seconds(20)) {
    auto widest = std::chrono::steady_clock::duration::zero();
    auto last = std::chrono::steady_clock::now();
    asio::steady_timer ticker(io);
    std::function<void(std::error_code)> tick = [&](std::error_code ec) {
        const auto now = std::chrono::steady_clock::now();
        widest = std::max(widest, now - last);
        last = now;
        if (ec || done()) return;
        ticker.expires_after(std::chrono::milliseconds(10));
        ticker.async_wait(tick);
    };
    tick({});
    io.restart();
    io.run_for(limit);
    return widest;
}

}  // namespace test
