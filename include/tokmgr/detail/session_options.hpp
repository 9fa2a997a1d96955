// tokmgr/detail/session_options.hpp — the few options the session reads,
// apart from manager_options (options.hpp, a header above the session):
// `session_options_for` there fills them in.
#pragma once

#include <chrono>
#include <string>

#include "../schedule.hpp"

namespace tokmgr::detail {

struct session_options {
    schedule_options schedule;  ///< where the thresholds fall
    std::chrono::milliseconds backoff_initial{};
    std::chrono::milliseconds backoff_max{};
    std::chrono::seconds max_retry_after{};
    std::chrono::seconds rejected_credentials_backoff{};
    std::chrono::milliseconds min_forced_refresh_interval{};
    std::string scheme;                   ///< the word before the JWT in the Authorization value
    std::chrono::seconds refresh_lifetime{};  ///< the refresh token's assumed lifetime, from receipt
};

}  // namespace tokmgr::detail
