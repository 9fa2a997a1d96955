// tokmgr/detail/flight.hpp — one login or refresh in progress, and the result
// every caller waiting for it receives.
//
// One mechanism in every language mode (a mutex and a condition variable):
// a header-only library is compiled into C++17 and C++20 translation units of
// the same program, and a layout or wake protocol that differed between them
// would be an ODR violation that loses wake-ups.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>

#include "../error.hpp"
#include "snapshot.hpp"

namespace tokmgr::detail {

class flight {
public:
    /// Publishes the result and wakes every waiter. The first call wins; a
    /// later one (an abandoned ticket racing a finished run) is ignored.
    void complete(std::shared_ptr<const snapshot> result, error_info error) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (done_) return;
            result_ = std::move(result);
            error_ = std::move(error);
            done_ = true;
        }
        cv_.notify_all();
    }

    void wait() const {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [this] { return done_; });
    }

    /// Valid after wait() returned, or after complete() on the same thread.
    const std::shared_ptr<const snapshot>& result() const noexcept { return result_; }
    const error_info& error() const noexcept { return error_; }

private:
    mutable std::mutex mutex_;
    mutable std::condition_variable cv_;
    bool done_ = false;
    std::shared_ptr<const snapshot> result_;
    error_info error_;
};

}  // namespace tokmgr::detail
