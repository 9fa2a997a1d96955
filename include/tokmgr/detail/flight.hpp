// tokmgr/detail/flight.hpp — one login or refresh in progress, and the result
// every caller waiting for it receives.
//
// Synchronous waiters park on a std::shared_future: libstdc++ implements its
// wait as a futex wait and set_value as one futex wake of all waiters, so a
// thousand waiters are released without each re-taking a mutex. Unlike C++20's
// atomic::wait, it is the same mechanism in C++17 and C++20 translation units,
// which matters for a header-only library compiled into both within one
// program (a flight that differed between them would be an ODR violation
// that loses wake-ups). Asynchronous waiters are kept in a list and each is
// completed through its own executor.
#pragma once

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <system_error>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "snapshot.hpp"

namespace tokmgr::detail {

/// A suspended async_get_token. `complete` is called at most once, never
/// under a lock, and must not run the user's handler inline (it posts).
class async_waiter {
public:
    virtual ~async_waiter() = default;
    virtual void complete(std::error_code ec, std::shared_ptr<const snapshot> result) noexcept = 0;
};

class flight {
public:
    flight() : ready_(promise_.get_future().share()) {}

    /// Publishes the result and wakes every waiter. The first call wins; a
    /// later one (an abandoned ticket racing a finished run) is ignored.
    void complete(std::shared_ptr<const snapshot> result, error_info error) noexcept {
        std::vector<std::shared_ptr<async_waiter>> waiting;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (completed_) return;
            completed_ = true;
            result_ = std::move(result);
            error_ = std::move(error);
            waiting.swap(async_waiters_);
        }
        promise_.set_value();  // happens-before every wait that returns true
        for (auto& waiter : waiting) waiter->complete(result_ ? std::error_code() : error_.code, result_);
    }

    /// False when `deadline` passed first.
    bool wait_until(std::chrono::steady_clock::time_point deadline) const {
        return ready_.wait_until(deadline) == std::future_status::ready;
    }

    bool ready() const { return ready_.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }

    /// False when the flight has already completed (the caller then answers
    /// the waiter itself from result()/error()).
    bool add_waiter(std::shared_ptr<async_waiter> waiter) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (completed_) return false;
        async_waiters_.push_back(std::move(waiter));
        return true;
    }

    /// A cancelled waiter leaves; true when it was still waiting (and so will
    /// not be completed by the flight).
    bool remove_waiter(const async_waiter* waiter) noexcept {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto it = async_waiters_.begin(); it != async_waiters_.end(); ++it) {
            if (it->get() == waiter) {
                async_waiters_.erase(it);
                return true;
            }
        }
        return false;
    }

    /// Valid after a wait returned true, or after complete() on the same thread.
    const std::shared_ptr<const snapshot>& result() const noexcept { return result_; }
    const error_info& error() const noexcept { return error_; }

    /// Who runs the flight, when it was handed to an executor: the executor's
    /// task or a waiter that got tired of waiting for it claims it, once.
    bool claim() noexcept {
        int expected = 0;
        return run_state_.compare_exchange_strong(expected, 1);
    }
    /// Claimed by nobody, and now never will be (the task was dropped).
    bool abandon() noexcept {
        int expected = 0;
        return run_state_.compare_exchange_strong(expected, 2);
    }

private:
    std::mutex mutex_;  // guards the fields below; never held by a parked waiter
    bool completed_ = false;
    std::shared_ptr<const snapshot> result_;
    error_info error_;
    std::vector<std::shared_ptr<async_waiter>> async_waiters_;
    std::atomic<int> run_state_{0};  // 0 unclaimed, 1 claimed, 2 abandoned
    std::promise<void> promise_;
    std::shared_future<void> ready_;
};

}  // namespace tokmgr::detail
