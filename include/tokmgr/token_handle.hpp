// tokmgr/token_handle.hpp — a JWT that stays valid for as long as it is held.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>

#include "detail/snapshot.hpp"
#include "secret.hpp"

namespace tokmgr {

/// Shared ownership of one served JWT. Unlike the view `get_token()` returns,
/// a handle may be kept across coroutine suspensions, moved to other threads
/// and held through later calls. Copying it touches a shared reference count,
/// so the hot path returns views instead.
class token_handle {
public:
    token_handle() noexcept = default;
    explicit token_handle(std::shared_ptr<const detail::snapshot> snapshot) noexcept
        : snapshot_(std::move(snapshot)) {}

    explicit operator bool() const noexcept { return snapshot_ != nullptr; }

    /// The JWT; empty for an empty handle.
    secret_view jwt() const noexcept { return snapshot_ ? snapshot_->jwt() : secret_view(); }
    /// "<scheme> <jwt>", ready for the Authorization header.
    secret_view authorization() const noexcept { return snapshot_ ? snapshot_->authorization_header() : secret_view(); }
    /// 1 for the first token set, +1 per rotation.
    std::uint64_t generation() const noexcept { return snapshot_ ? snapshot_->generation : 0; }

private:
    std::shared_ptr<const detail::snapshot> snapshot_;
};

}  // namespace tokmgr
