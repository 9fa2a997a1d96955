// tokmgr/detail/flight.hpp — one login or refresh in progress, and the result
// every caller waiting for it receives.
//
// Waiters park on a std::shared_future: libstdc++ implements its wait as a
// futex wait and set_value as one futex wake of all waiters, so a thousand
// waiters are released without each re-taking a mutex. Unlike C++20's
// atomic::wait, it is the same mechanism in C++17 and C++20 translation units,
// which matters for a header-only library compiled into both within one
// program (a flight that differed between them would be an ODR violation
// that loses wake-ups).
#pragma once

#include <future>
#include <memory>
#include <mutex>

#include "../error.hpp"
#include "snapshot.hpp"

namespace tokmgr::detail {

class flight {
public:
    flight() : ready_(promise_.get_future().share()) {}

    /// Publishes the result and wakes every waiter. The first call wins; a
    /// later one (an abandoned ticket racing a finished run) is ignored.
    void complete(std::shared_ptr<const snapshot> result, error_info error) {
        {
            std::lock_guard<std::mutex> lock(completing_);
            if (completed_) return;
            completed_ = true;
            result_ = std::move(result);
            error_ = std::move(error);
        }
        promise_.set_value();  // happens-before every wait() that returns
    }

    void wait() const { ready_.wait(); }

    /// Valid after wait() returned, or after complete() on the same thread.
    const std::shared_ptr<const snapshot>& result() const noexcept { return result_; }
    const error_info& error() const noexcept { return error_; }

private:
    std::mutex completing_;  // serialises complete(), never held by a waiter
    bool completed_ = false;
    std::shared_ptr<const snapshot> result_;
    error_info error_;
    std::promise<void> promise_;
    std::shared_future<void> ready_;
};

}  // namespace tokmgr::detail
