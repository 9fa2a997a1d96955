// tokmgr/detail/snapshot.hpp — the immutable, published state that the hot
// path reads, and the per-thread cache that lets it read without touching any
// memory another reader writes.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "../secret.hpp"

namespace tokmgr::detail {

/// One JWT as served: the full header value "<scheme> <jwt>" (one allocation,
/// the JWT is its suffix) and its two deadlines on the manager's clock, as
/// nanoseconds since that clock's epoch. Never modified once published.
struct snapshot {
    std::string authorization;
    std::size_t jwt_offset = 0;
    std::int64_t soft_ns = 0;
    std::int64_t hard_ns = 0;
    std::uint64_t generation = 0;  ///< of the token set it came from
    /// What a persisted set says of this JWT: when it arrived (wall clock)
    /// and its lifetime. Not read by the hot path.
    std::chrono::system_clock::time_point received_wall{};
    std::chrono::seconds lifetime{0};

    snapshot() = default;
    snapshot(const snapshot&) = delete;
    snapshot& operator=(const snapshot&) = delete;
    ~snapshot() { secure_clear(authorization); }

    secret_view jwt() const noexcept {
        return secret_view(std::string_view(authorization).substr(jwt_offset));
    }
    secret_view authorization_header() const noexcept { return secret_view(authorization); }
};

/// A thread's copy of one manager's current snapshot. While the manager's
/// publication counter still equals `publication` and the clock is before
/// `serve_until_ns`, the thread may hand out `current` without asking the
/// manager: reading it touches only this thread's memory and the immutable
/// snapshot.
struct cache_slot {
    std::uint64_t owner = 0;        ///< manager id; 0 = free
    std::uint64_t publication = 0;  ///< counter value `current` belongs to; 0 = ask again
    std::int64_t serve_until_ns = std::numeric_limits<std::int64_t>::min();
    std::shared_ptr<const snapshot> current;
    std::weak_ptr<const void> owner_alive;  ///< expires with the manager: its slot can go
};

/// One slot per manager this thread has used, the most recent one in front.
///
/// The view rule rests on this: a slot is replaced only by the same manager,
/// so a view get_token() returned stays valid until this thread calls that
/// manager again — however many other managers it uses meanwhile. Slots of
/// destroyed managers are dropped now and then, on a slow path.
struct thread_cache {
    cache_slot front;
    std::vector<cache_slot> others;
    /// Why this thread's last call failed, for the throwing overloads: kept
    /// here so the calls that succeed never build an error_info.
    error_info last_failure;

    /// The slot of `owner`, moved to the front. May throw std::bad_alloc
    /// (a first use of one more manager on this thread).
    cache_slot& slot_for(std::uint64_t owner, const std::weak_ptr<const void>& alive) {
        if (front.owner == owner) return front;
        for (auto& slot : others) {
            if (slot.owner == owner) {
                std::swap(front, slot);
                return front;
            }
        }
        if (others.size() >= 8 && others.size() % 8 == 0) {
            others.erase(std::remove_if(others.begin(), others.end(),
                                        [](const cache_slot& slot) { return slot.owner_alive.expired(); }),
                         others.end());
        }
        if (front.owner != 0) others.push_back(std::move(front));
        front = cache_slot{};
        front.owner = owner;
        front.owner_alive = alive;
        return front;
    }

    /// This thread's cache, or nullptr once it has been destroyed (a call
    /// from another thread_local's destructor at thread exit): callers then
    /// take the slow path and the manager keeps what it hands out alive.
    static thread_cache* local() noexcept {
        // Trivially destructible, so it can still be read while the thread's
        // other thread_local objects are destroyed.
        static thread_local bool destroyed = false;
        struct holder {
            thread_cache cache;
            ~holder() { destroyed = true; }
        };
        if (destroyed) return nullptr;
        static thread_local holder held;
        return &held.cache;
    }
};

}  // namespace tokmgr::detail
