// tokmgr/detail/snapshot.hpp — the immutable, published state that the hot
// path reads, and the per-thread cache that lets it read without touching any
// memory another reader writes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>

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

    snapshot() = default;
    snapshot(const snapshot&) = delete;
    snapshot& operator=(const snapshot&) = delete;
    ~snapshot() { secure_clear(authorization); }

    secret_view jwt() const noexcept {
        return secret_view(std::string_view(authorization).substr(jwt_offset));
    }
    secret_view header() const noexcept { return secret_view(authorization); }
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
    std::uint64_t last_used = 0;
    std::shared_ptr<const snapshot> current;
};

/// A few slots per thread, so a thread that alternates between a handful of
/// managers keeps a hit on each. The least recently used slot is evicted, so
/// a view a manager returned survives calls on up to slot_count - 1 others.
struct thread_cache {
    static constexpr std::size_t slot_count = 4;
    std::array<cache_slot, slot_count> slots{};
    std::uint64_t uses = 0;
    /// Why this thread's last call failed, for the throwing overloads: kept
    /// here so the calls that succeed never build an error_info.
    error_info last_failure;

    cache_slot& slot_for(std::uint64_t owner) noexcept {
        cache_slot* victim = &slots[0];
        for (auto& slot : slots) {
            if (slot.owner == owner) {
                slot.last_used = ++uses;
                return slot;
            }
            if (slot.last_used < victim->last_used) victim = &slot;
        }
        *victim = cache_slot{};
        victim->owner = owner;
        victim->last_used = ++uses;
        return *victim;
    }

    /// The one cache of this thread, shared by every manager type.
    static thread_cache& local() noexcept {
        static thread_local thread_cache cache;
        return cache;
    }
};

}  // namespace tokmgr::detail
