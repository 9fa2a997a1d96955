// tokmgr/testing/crowd_gate.hpp — holds every arriving thread until a whole
// crowd has arrived, so that a test can make N callers meet the same state at
// once (the same JWT refused, the same refresh due) without relying on timing.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <mutex>

namespace tokmgr::testing {

class crowd_gate {
public:
    explicit crowd_gate(std::size_t expected) : expected_(expected) {}

    /// Returns once `expected` threads have called it (at once for the last).
    void arrive_and_wait() {
        std::unique_lock<std::mutex> lock(mutex_);
        if (++arrived_ >= expected_) {
            cv_.notify_all();
            return;
        }
        cv_.wait(lock, [this] { return arrived_ >= expected_; });
    }

    std::size_t arrived() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return arrived_;
    }

private:
    mutable std::mutex mutex_;
    std::condition_variable cv_;
    std::size_t arrived_ = 0;
    const std::size_t expected_;
};

}  // namespace tokmgr::testing
