// tokmgr/storage/detail/shared_store.hpp — what the stores shared by several
// processes (redis.hpp, postgres.hpp) both need: server text that is safe to
// put in a message, the random token that names a lease's holder, the lease
// guard, and the loop that waits for a lease.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <utility>

#include "../../errc.hpp"
#include "../../error.hpp"
#include "../../secret.hpp"

namespace tokmgr::detail {

/// A store's failure, as its connection reports it.
inline error_info storage_failure(std::string why) { return {make_error_code(errc::storage_failed), std::move(why)}; }
/// No connection could be made: nothing was read or written.
inline error_info unreachable(std::string why) { return {make_error_code(errc::storage_unreachable), std::move(why)}; }
/// The code a failed command is reported with: unreachable only when nothing
/// went out (a failure after a command was sent may have written).
inline errc code_of(const error_info& failed) noexcept {
    return failed.code == errc::storage_unreachable ? errc::storage_unreachable : errc::storage_failed;
}

/// Server text made safe for a message: never the password (servers do not
/// echo it, but a proxy might), then no control characters and at most 160
/// bytes. The password is taken out of the whole raw text first, so that
/// neither the cut at 160 bytes nor a control character inside it can leave
/// a piece of it.
inline std::string safe_server_text(std::string_view text, std::string_view password) {
    std::string raw(text);
    if (password.size() >= 4) {
        for (auto at = raw.find(password); at != std::string::npos; at = raw.find(password, at + 10))
            raw.replace(at, password.size(), "(redacted)");
    } else if (!password.empty() && raw.find(password) != std::string::npos) {
        detail::secure_clear(raw);
        return "(a message that is not shown because it may contain the password)";
    }
    std::string out;
    for (char c : std::string_view(raw).substr(0, 160))
        out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? ' ' : c;
    detail::secure_clear(raw);
    return out;
}

/// 128 bits from the system's random source, fresh for every lease: a
/// generator kept in memory would repeat itself in a fork()ed child, and two
/// holders with one token would both "hold" the lease.
inline std::string random_lease_token() {
    std::random_device device;
    static const char hex[] = "0123456789abcdef";
    std::string out;
    for (int word = 0; word < 4; ++word) {
        std::uint32_t v = device();
        for (int i = 0; i < 8; ++i, v >>= 4) out += hex[v & 15];
    }
    return out;
}

/// The lease guard of a shared store: while an object lives (and is not
/// moved from), its holder owns the store's lease — until it is released or
/// its time runs out, whichever comes first; the store's `holds` tells which.
/// `Link` is the store's connection: `mutex()`, and `release_lease(token)`,
/// a compare-and-delete that leaves a lease taken by another holder alone.
template <class Link>
class shared_lease {
public:
    shared_lease() noexcept = default;
    shared_lease(std::shared_ptr<Link> link, std::string token) noexcept
        : link_(std::move(link)), token_(std::move(token)) {}
    shared_lease(shared_lease&& other) noexcept : link_(std::move(other.link_)), token_(std::move(other.token_)) {}
    shared_lease& operator=(shared_lease&& other) noexcept {
        if (this != &other) {
            release();
            link_ = std::move(other.link_);
            token_ = std::move(other.token_);
        }
        return *this;
    }
    shared_lease(const shared_lease&) = delete;
    shared_lease& operator=(const shared_lease&) = delete;
    ~shared_lease() { release(); }

    explicit operator bool() const noexcept { return static_cast<bool>(link_); }
    const std::string& token() const noexcept { return token_; }

    /// Gives the guard up without releasing, for a caller that releases by
    /// the token itself (without blocking); returns the token.
    std::string abandon() noexcept {
        link_.reset();
        return std::move(token_);
    }

    /// Releases early. A release that cannot reach the server is not an
    /// error: the lease's own time ends it.
    void release() noexcept {
        if (!link_) return;
        try {
            std::lock_guard<std::mutex> lock(link_->mutex());
            link_->release_lease(token_);
        } catch (...) {
        }
        link_.reset();
    }

private:
    std::shared_ptr<Link> link_;
    std::string token_;
};

/// What one attempt to take a lease found.
enum class lease_attempt { taken, held_elsewhere, failed };

/// Tries `try_take()` until it answers taken or failed, or `deadline`
/// passes (then held_elsewhere), calling `wait_for_change(step)` between
/// attempts with a step of 1 ms doubling to 50 ms: a store's change
/// notification ends a wait early, and the growing polls cover the
/// notifications lost while a connection was down.
template <class TryTake, class WaitForChange>
lease_attempt take_lease_until(std::chrono::steady_clock::time_point deadline, TryTake&& try_take,
                               WaitForChange&& wait_for_change) {
    using clock = std::chrono::steady_clock;
    auto step = std::chrono::milliseconds(1);
    for (;;) {
        const lease_attempt attempt = try_take();
        if (attempt != lease_attempt::held_elsewhere) return attempt;
        const auto now = clock::now();
        if (now >= deadline) return attempt;
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) + std::chrono::milliseconds(1);
        wait_for_change(std::min(step, left));
        if (step < std::chrono::milliseconds(50)) step = std::min(step * 2, std::chrono::milliseconds(50));
    }
}

}  // namespace tokmgr::detail
