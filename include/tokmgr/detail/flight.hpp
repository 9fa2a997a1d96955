// tokmgr/detail/flight.hpp — one login or refresh in progress, and the result
// every caller waiting for it receives.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>

#include "../error.hpp"
#include "snapshot.hpp"

namespace tokmgr::detail {

class flight {
public:
    /// Publishes the result and wakes every waiter. Called once, with no lock
    /// of the manager held.
    void complete(std::shared_ptr<const snapshot> result, error_info error) {
        result_ = std::move(result);
        error_ = std::move(error);
#if defined(__cpp_lib_atomic_wait)
        done_.store(true, std::memory_order_release);
        done_.notify_all();  // a futex wake: waiters need no mutex to see the result
#else
        {
            std::lock_guard<std::mutex> lock(mutex_);
            done_.store(true, std::memory_order_release);
        }
        cv_.notify_all();
#endif
    }

    void wait() const {
#if defined(__cpp_lib_atomic_wait)
        done_.wait(false, std::memory_order_acquire);
        while (!done_.load(std::memory_order_acquire)) done_.wait(false, std::memory_order_acquire);
#else
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [this] { return done_.load(std::memory_order_acquire); });
#endif
    }

    /// Valid after wait() returned.
    const std::shared_ptr<const snapshot>& result() const noexcept { return result_; }
    const error_info& error() const noexcept { return error_; }

private:
    std::atomic<bool> done_{false};
    std::shared_ptr<const snapshot> result_;
    error_info error_;
#if !defined(__cpp_lib_atomic_wait)
    mutable std::mutex mutex_;
    mutable std::condition_variable cv_;
#endif
};

}  // namespace tokmgr::detail
