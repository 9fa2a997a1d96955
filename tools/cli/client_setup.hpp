// tools/cli/client_setup.hpp — what `token` and `load` share: where the
// server is, who logs in, and where the password comes from (the
// environment or stdin, never the command line, where `ps` would show it).
#pragma once


#include <tokmgr/options.hpp>
#include <tokmgr/transport/asio_options.hpp>

#include "args.hpp"

namespace tokmgr_cli {

/// TONIC_TEXTUAL_PASSWORD when it is set and not empty, else null.
const char* password_from_environment();

/// --url, else TONIC_TEXTUAL_BASE_URL, else Textual's cloud; --proxy, else
/// the proxy environment variables.
tokmgr::asio_transport_options transport_options(const parsed_options& args);

/// The manager's options from the command line: --lease-wait SECONDS, how
/// long a login or refresh waits for another process's hold on the --store.
tokmgr::manager_options manager_options_from(const parsed_options& args);

/// --user (else TONIC_TEXTUAL_USERNAME) and the password from
/// TONIC_TEXTUAL_PASSWORD, else one line on stdin. Throws usage_error.
tokmgr::credentials login_credentials(const parsed_options& args);

}  // namespace tokmgr_cli
