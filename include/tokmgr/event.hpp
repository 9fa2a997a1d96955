// tokmgr/event.hpp — what the manager reports to an event hook. Carries no
// secret: kinds, error codes and generation numbers only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <system_error>

namespace tokmgr {

enum class event_kind {
    login_started,
    login_succeeded,
    login_failed,
    refresh_started,
    refresh_succeeded,
    refresh_failed,
    invalidated,  ///< invalidate() retired the current JWT
    /// The storage could not be reached past the JWT's hard threshold: this
    /// process logs in on its own and keeps that set in memory (`error` says
    /// why the store failed).
    private_session_started,
    /// The storage answers again and the private set was replaced by the
    /// shared one (or became it).
    private_session_ended,
};

struct event {
    event_kind kind;
    std::error_code error;          ///< set on *_failed
    std::uint64_t generation = 0;   ///< of the token set the event concerns
    std::chrono::nanoseconds duration{0};  ///< of the request, on *_succeeded / *_failed
};

inline const char* to_string(event_kind kind) noexcept {
    switch (kind) {
    case event_kind::login_started: return "login_started";
    case event_kind::login_succeeded: return "login_succeeded";
    case event_kind::login_failed: return "login_failed";
    case event_kind::refresh_started: return "refresh_started";
    case event_kind::refresh_succeeded: return "refresh_succeeded";
    case event_kind::refresh_failed: return "refresh_failed";
    case event_kind::invalidated: return "invalidated";
    case event_kind::private_session_started: return "private_session_started";
    case event_kind::private_session_ended: return "private_session_ended";
    }
    return "unknown";
}

using event_handler = std::function<void(const event&)>;

}  // namespace tokmgr
