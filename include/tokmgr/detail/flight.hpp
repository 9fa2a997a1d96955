// tokmgr/detail/flight.hpp — one login or refresh in progress, and the result
// every caller waiting for it receives.
//
// Synchronous waiters park on a std::shared_future: libstdc++ implements its
// wait as a futex wait and set_value as one futex wake of all waiters, so a
// thousand waiters are released without each re-taking a mutex. Unlike C++20's
// atomic::wait, it is the same mechanism in C++17 and C++20 translation units,
// which matters for a header-only library compiled into both within one
// program (a flight that differed between them would be an ODR violation
// that loses wake-ups). Asynchronous waiters are linked into the flight
// itself (no allocation per waiter) and, when it ends, grouped by executor:
// each group is resumed by one post to its executor.
#pragma once

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <system_error>
#include <utility>

#include "../error.hpp"
#include "snapshot.hpp"

namespace tokmgr::detail {

/// A suspended async_get_token (async.hpp). The flight links it into its
/// list while it waits, owning it through `keep_`; when the flight ends,
/// waiters on one executor are chained behind a leader (`group_next_`) and
/// the leader resumes them all with one post.
class async_waiter {
public:
    virtual ~async_waiter() = default;

    /// True when `other` runs its handler on the same executor, so that one
    /// post can resume both.
    virtual bool shares_executor_with(const async_waiter& other) const noexcept = 0;

    /// Resumes this waiter and every one chained behind it by `group_next_`
    /// (all on its executor). Never under a lock; never runs a handler
    /// inline unless posting is impossible (no memory): each is answered
    /// exactly once.
    virtual void complete_group(std::error_code ec, std::shared_ptr<const snapshot> result) noexcept = 0;

    /// Answers this one waiter, on its executor (the leader's post runs it):
    /// the handler is invoked, or the waiter joins the next flight.
    virtual void deliver(std::error_code ec, const std::shared_ptr<const snapshot>& result) = 0;

    /// Waiters on equal executors have equal kinds (one per executor type).
    const void* executor_kind() const noexcept { return executor_kind_; }

    /// Makes `self` (this waiter) a group of one and completes it.
    static void complete_alone(std::shared_ptr<async_waiter> self, std::error_code ec,
                               std::shared_ptr<const snapshot> result) noexcept {
        async_waiter& waiter = *self;
        waiter.group_next_ = nullptr;
        waiter.keep_ = std::move(self);
        waiter.complete_group(ec, std::move(result));
    }

protected:
    friend class flight;
    explicit async_waiter(const void* executor_kind) noexcept : executor_kind_(executor_kind) {}

    /// The next waiter of `w`'s group, unlinked from it.
    static async_waiter* take_group_next(async_waiter& w) noexcept { return std::exchange(w.group_next_, nullptr); }
    /// `w` is let go unanswered (its executor destroyed the group's post).
    static void release(async_waiter& w) noexcept { std::shared_ptr<async_waiter> gone = std::move(w.keep_); }

    /// While linked into a flight, or chained in a group being resumed: the
    /// waiter itself (the list owns it). Released when it is answered.
    std::shared_ptr<async_waiter> keep_;
    async_waiter* group_next_ = nullptr;

private:
    const void* executor_kind_;
    async_waiter* prev_ = nullptr;  // the flight's list, under its mutex
    async_waiter* next_ = nullptr;
    bool linked_ = false;
    async_waiter* group_tail_ = nullptr;   // for a leader, while grouping
    async_waiter* leader_next_ = nullptr;  // leaders, while grouping
};

class flight {
public:
    flight() : ready_(promise_.get_future().share()) {}
    flight(const flight&) = delete;
    flight& operator=(const flight&) = delete;
    /// A flight never completed lets its waiters go (as a vector of them did).
    ~flight() {
        for (async_waiter* w = head_; w != nullptr;) {
            async_waiter* const next = w->next_;
            w->linked_ = false;
            std::shared_ptr<async_waiter> released = std::move(w->keep_);
            w = next;
        }
    }

    /// Publishes the result and wakes every waiter. The first call wins; a
    /// later one (an abandoned ticket racing a finished run) is ignored.
    void complete(std::shared_ptr<const snapshot> result, error_info error) noexcept {
        async_waiter* waiting = nullptr;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (completed_) return;
            completed_ = true;
            result_ = std::move(result);
            error_ = std::move(error);
            waiting = std::exchange(head_, nullptr);
            tail_ = nullptr;
            for (async_waiter* w = waiting; w != nullptr; w = w->next_) w->linked_ = false;
        }
        promise_.set_value();  // happens-before every wait that returns true
        resume(waiting, result_ ? std::error_code() : error_.code, result_);
    }
    /// False when `deadline` passed first.
    bool wait_until(std::chrono::steady_clock::time_point deadline) const {
        return ready_.wait_until(deadline) == std::future_status::ready;
    }

    bool ready() const { return ready_.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }

    /// False when the flight has already completed (the caller then answers
    /// the waiter itself from result()/error()). Allocates nothing.
    bool add_waiter(std::shared_ptr<async_waiter> waiter) noexcept {
        std::lock_guard<std::mutex> lock(mutex_);
        if (completed_) return false;
        async_waiter& linked = *waiter;
        linked.keep_ = std::move(waiter);
        // Appended: waiters are resumed in the order they came.
        linked.next_ = nullptr;
        linked.prev_ = tail_;
        if (tail_ != nullptr) tail_->next_ = &linked;
        else head_ = &linked;
        tail_ = &linked;
        linked.linked_ = true;
        return true;
    }

    /// A cancelled waiter leaves: the waiter itself while it was still
    /// waiting (it will then not be completed by the flight), else nullptr.
    /// The caller releases it outside any lock.
    std::shared_ptr<async_waiter> remove_waiter(async_waiter* waiter) noexcept {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!waiter->linked_) return nullptr;
        if (waiter->prev_ != nullptr) waiter->prev_->next_ = waiter->next_;
        else head_ = waiter->next_;
        if (waiter->next_ != nullptr) waiter->next_->prev_ = waiter->prev_;
        else tail_ = waiter->prev_;
        waiter->prev_ = waiter->next_ = nullptr;
        waiter->linked_ = false;
        return std::move(waiter->keep_);
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
    /// Groups the waiters by executor, with no allocation, and has each
    /// group's leader resume its group. A waiter is compared with the few
    /// most recent leaders only, so thousands of distinct executors (a strand
    /// each) cost more posts, never quadratic time.
    static void resume(async_waiter* waiting, std::error_code ec,
                       const std::shared_ptr<const snapshot>& result) noexcept {
        constexpr int leaders_compared = 8;
        async_waiter* leaders = nullptr;
        for (async_waiter* w = waiting; w != nullptr;) {
            async_waiter* const next = w->next_;
            w->prev_ = w->next_ = nullptr;
            w->group_next_ = nullptr;
            async_waiter* leader = nullptr;
            int compared = 0;
            for (async_waiter* l = leaders; l != nullptr && compared < leaders_compared; l = l->leader_next_, ++compared)
                if (l->shares_executor_with(*w)) {
                    leader = l;
                    break;
                }
            if (leader != nullptr) {
                leader->group_tail_->group_next_ = w;
                leader->group_tail_ = w;
            } else {
                w->group_tail_ = w;
                w->leader_next_ = leaders;
                leaders = w;
            }
            w = next;
        }
        while (leaders != nullptr) {
            async_waiter* const leader = leaders;
            leaders = leader->leader_next_;
            leader->leader_next_ = leader->group_tail_ = nullptr;
            leader->complete_group(ec, result);
        }
    }

    std::mutex mutex_;  // guards the fields below; never held by a parked waiter
    bool completed_ = false;
    std::shared_ptr<const snapshot> result_;
    error_info error_;
    async_waiter* head_ = nullptr;  // the asynchronous waiters, owned through their keep_
    async_waiter* tail_ = nullptr;
    std::atomic<int> run_state_{0};  // 0 unclaimed, 1 claimed, 2 abandoned
    std::promise<void> promise_;
    std::shared_future<void> ready_;
};

}  // namespace tokmgr::detail
