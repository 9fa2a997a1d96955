// tools/cli/output.hpp — the one line the tokmgr program writes on failure.
#pragma once

#include <string>
#include <string_view>
#include <system_error>

#include <tokmgr/error.hpp>

namespace tokmgr_cli {

/// "tokmgr <command>: <what failed>" on one line of stderr. The texts come
/// from tokmgr's error_info, which never holds a secret; line breaks in a
/// server's message are flattened so the error stays one line.
void print_error(std::string_view command, std::string_view message);
void print_error(std::string_view command, const tokmgr::error_info& info);

/// What a transport, manager or store reported for `ec`: its last_error,
/// which says what failed in detail, or `ec` as the failure of `what` when
/// the component recorded nothing.
tokmgr::error_info failure_of(const tokmgr::error_info& last_error, std::error_code ec, std::string what);

/// Prints failure_of(...) and returns the exit status for `ec`.
int report_failure(std::string_view command, const tokmgr::error_info& last_error, std::error_code ec,
                   std::string what);

}  // namespace tokmgr_cli
