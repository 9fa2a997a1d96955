// tools/cli/token.hpp — `tokmgr token`: log in and print the JWT, like
// `gcloud auth print-access-token`; with `--store PATH` (or a redis:// URL),
// reuse and keep the token set in a file (or a Redis key) shared by every
// invocation and process.
#pragma once

namespace tokmgr_cli {

/// Prints the JWT on stdout; returns an exit_status. Throws usage_error for
/// a wrong command line.
int run_token(int argc, char** argv);

}  // namespace tokmgr_cli
