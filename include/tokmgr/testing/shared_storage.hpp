// tokmgr/testing/shared_storage.hpp — a coordinating Storage policy in
// memory: copies share one token set, one lease and one record of writes, so
// several managers (threads standing in for processes) can share a store in
// tests, and a store can outlive the manager that wrote it (a "restart").
//
// It models the coordinating capability of concepts.hpp (lock, holds,
// store_if) and can be told to fail: the n-th load or store, or the lease
// (taken away from its holder, or held by an outsider).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <utility>

#include "../errc.hpp"
#include "../token_set.hpp"

namespace tokmgr::testing {

class shared_storage {
    struct state;

public:
    /// Held while alive; moving transfers it.
    class lease {
    public:
        lease() = default;
        lease(lease&& other) noexcept
            : state_(std::move(other.state_)), ticket_(std::exchange(other.ticket_, 0)) {}
        lease& operator=(lease&& other) noexcept {
            if (this != &other) {
                release();
                state_ = std::move(other.state_);
                ticket_ = std::exchange(other.ticket_, 0);
            }
            return *this;
        }
        lease(const lease&) = delete;
        lease& operator=(const lease&) = delete;
        ~lease() { release(); }

        explicit operator bool() const noexcept { return ticket_ != 0; }

    private:
        friend class shared_storage;
        lease(std::shared_ptr<state> s, std::uint64_t ticket) : state_(std::move(s)), ticket_(ticket) {}
        void release() noexcept {
            if (!state_ || ticket_ == 0) return;
            {
                std::lock_guard<std::mutex> lock(state_->mutex);
                if (state_->holder == ticket_) state_->holder = 0;
            }
            state_->released.notify_all();
            ticket_ = 0;
        }
        std::shared_ptr<state> state_;
        std::uint64_t ticket_ = 0;
    };

    shared_storage() : state_(std::make_shared<state>()) {}

    std::optional<token_set> load(std::error_code& ec) {
        std::lock_guard<std::mutex> lock(state_->mutex);
        ec.clear();
        if (++state_->loads == state_->fail_load_at || state_->down) {
            ec = make_error_code(state_->down ? errc::storage_unreachable : errc::storage_failed);
            return std::nullopt;
        }
        return state_->stored;
    }

    void store(const token_set& set, std::error_code& ec) {
        std::lock_guard<std::mutex> lock(state_->mutex);
        ec.clear();
        if (++state_->stores == state_->fail_store_at || state_->down) {
            ec = make_error_code(state_->down ? errc::storage_unreachable : errc::storage_failed);
            return;
        }
        state_->stored = set;
        ++state_->writes;
        if (state_->stores == state_->lose_lease_at) state_->holder = 0;
    }

    lease lock(std::chrono::milliseconds max_wait, std::error_code& ec) {
        std::unique_lock<std::mutex> lock(state_->mutex);
        ec.clear();
        if (state_->down) {
            ec = make_error_code(errc::storage_unreachable);
            return {};
        }
        const bool free = state_->released.wait_for(lock, max_wait, [&] { return state_->holder == 0; });
        if (!free) {
            ec = make_error_code(errc::lease_timeout);
            return {};
        }
        state_->holder = ++state_->last_ticket;
        ++state_->leases_taken;
        return lease(state_, state_->holder);
    }

    bool holds(const lease& held, std::error_code& ec) {
        std::function<void()> hook;
        with_lock([&] { hook = state_->on_holds; });
        if (hook) hook();  // outside the store's lock, as a slow network would be
        std::lock_guard<std::mutex> lock(state_->mutex);
        ec.clear();
        return held.ticket_ != 0 && state_->holder == held.ticket_;
    }

    bool store_if(const token_set& set, std::uint64_t expected_generation, std::error_code& ec) {
        std::lock_guard<std::mutex> lock(state_->mutex);
        ec.clear();
        if (++state_->stores == state_->fail_store_at || state_->down) {
            ec = make_error_code(state_->down ? errc::storage_unreachable : errc::storage_failed);
            return false;
        }
        const std::uint64_t current = state_->stored ? state_->stored->generation : 0;
        if (current != expected_generation) {
            ++state_->conflicts;
            return false;
        }
        state_->stored = set;
        ++state_->writes;
        if (state_->stores == state_->lose_lease_at) state_->holder = 0;
        return true;
    }

    // ---- for tests -------------------------------------------------------------

    /// The n-th load / store (1-based, over the store's life, all copies) fails.
    void fail_load(std::size_t n) { with_lock([&] { state_->fail_load_at = n; }); }
    void fail_store(std::size_t n) { with_lock([&] { state_->fail_store_at = n; }); }

    /// Every call fails with storage_failed until set back (a store that is
    /// down or unreachable).
    void set_down(bool down) { with_lock([&] { state_->down = down; }); }

    /// The holder loses its lease right after the n-th store succeeds.
    void lose_lease_at_store(std::size_t n) { with_lock([&] { state_->lose_lease_at = n; }); }

    /// The current holder loses its lease (as a Redis lease lapses).
    void break_lease() {
        with_lock([&] { state_->holder = 0; });
        state_->released.notify_all();
    }

    /// An outsider (another process) takes the lease and keeps it until the
    /// returned lease is destroyed.
    lease hold_from_outside() {
        std::error_code ec;
        return lock(std::chrono::hours(1), ec);
    }

    /// Puts `set` in the store (nothing: empties it), as an operator, an
    /// eviction, a restart without persistence or a failover to a stale
    /// replica would: no generation check, no lease.
    void replace(std::optional<token_set> set) { with_lock([&] { state_->stored = std::move(set); }); }

    /// Called at the start of every holds(), outside the store's lock: a
    /// test makes the lease check slow or watches it happen.
    void on_holds(std::function<void()> hook) { with_lock([&] { state_->on_holds = std::move(hook); }); }

    std::optional<token_set> stored() const {
        std::lock_guard<std::mutex> lock(state_->mutex);
        return state_->stored;
    }

    struct statistics {
        std::size_t writes = 0, conflicts = 0, leases_taken = 0, loads = 0, stores = 0;
    };
    statistics stats() const {
        std::lock_guard<std::mutex> lock(state_->mutex);
        return {state_->writes, state_->conflicts, state_->leases_taken, state_->loads, state_->stores};
    }

private:
    template <class F>
    void with_lock(F f) {
        std::lock_guard<std::mutex> lock(state_->mutex);
        f();
    }

    struct state {
        std::mutex mutex;
        std::condition_variable released;
        std::optional<token_set> stored;
        std::uint64_t holder = 0, last_ticket = 0;
        std::size_t loads = 0, stores = 0, writes = 0, conflicts = 0, leases_taken = 0;
        std::size_t fail_load_at = 0, fail_store_at = 0, lose_lease_at = 0;
        bool down = false;
        std::function<void()> on_holds;
    };
    std::shared_ptr<state> state_;
};

}  // namespace tokmgr::testing
