// tokmgr/detail/storage_worker.hpp — the thread an asynchronous manager runs
// a blocking store on, so that its executor never waits for the store (a
// Redis GET, a file's fsync, a lease held by another process).
//
// One thread, started when the first task comes, runs tasks in the order
// they came: a flight's lease release is queued before the next flight's
// lease request. It lives as long as the manager; a manager destroyed by its
// own last task (the task held the last reference) lets the thread finish
// on its own instead of joining itself.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

namespace tokmgr::detail {

class storage_worker {
public:
    storage_worker() = default;
    storage_worker(const storage_worker&) = delete;
    storage_worker& operator=(const storage_worker&) = delete;
    ~storage_worker() { stop(); }

    /// Queues `task`; false (the task dropped) once stopped, or when no
    /// thread or memory could be had.
    bool post(std::function<void()> task) noexcept {
        try {
            std::unique_lock<std::mutex> lock(mutex_);
            if (stopped_) return false;
            if (!state_) {
                auto state = std::make_shared<shared_state>();
                thread_ = std::thread([state] { run(*state); });
                state_ = std::move(state);
            }
            lock.unlock();
            std::lock_guard<std::mutex> queue_lock(state_->mutex);
            if (state_->stopping) return false;
            state_->tasks.push_back(std::move(task));
            state_->wake.notify_one();
            return true;
        } catch (...) {
            return false;
        }
    }

    /// Drops the tasks not yet started and waits for the one running, unless
    /// called from that very task.
    void stop() noexcept {
        std::thread thread;
        std::shared_ptr<shared_state> state;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stopped_ = true;
            thread = std::move(thread_);
            state = state_;
        }
        if (!state) return;
        std::deque<std::function<void()>> dropped;  // destroyed outside the lock: they may own the manager
        {
            std::lock_guard<std::mutex> lock(state->mutex);
            state->stopping = true;
            dropped.swap(state->tasks);
            state->wake.notify_one();
        }
        dropped.clear();
        if (!thread.joinable()) return;
        if (thread.get_id() == std::this_thread::get_id()) thread.detach();
        else thread.join();
    }

    /// True on the worker's own thread.
    bool running_in_this_thread() const noexcept {
        std::lock_guard<std::mutex> lock(mutex_);
        return thread_.joinable() && thread_.get_id() == std::this_thread::get_id();
    }

private:
    struct shared_state {
        std::mutex mutex;
        std::condition_variable wake;
        std::deque<std::function<void()>> tasks;
        bool stopping = false;
    };

    static void run(shared_state& state) noexcept {
        for (;;) {
            std::function<void()> task;
            {
                std::unique_lock<std::mutex> lock(state.mutex);
                state.wake.wait(lock, [&] { return state.stopping || !state.tasks.empty(); });
                if (state.stopping) return;
                task = std::move(state.tasks.front());
                state.tasks.pop_front();
            }
            try {
                task();
            } catch (...) {  // a task reports its own failures; nothing may end the thread
            }
        }
    }

    mutable std::mutex mutex_;
    bool stopped_ = false;
    std::thread thread_;
    std::shared_ptr<shared_state> state_;
};

}  // namespace tokmgr::detail
