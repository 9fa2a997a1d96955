// tools/cli/exit_status.hpp — the tokmgr program's exit statuses, one per
// thing a script can act on. Scripts and tests depend on these numbers.
#pragma once

#include <system_error>

namespace tokmgr_cli {

enum exit_status : int {
    exit_ok = 0,
    exit_other = 1,        ///< anything else (configuration, server error, ...)
    exit_usage = 2,        ///< the command line is wrong
    exit_rejected = 3,     ///< the server rejected the credentials or the refresh token
    exit_network = 4,      ///< network or TLS failure, certificate verification included
    exit_protocol = 5,     ///< the answer was malformed, incomplete or too large
};

int exit_status_for(std::error_code ec) noexcept;

}  // namespace tokmgr_cli
