// tools/cli/load.hpp — `tokmgr load`: many threads sharing one token manager
// against a protected resource, the way a busy service uses tokmgr.
#pragma once

namespace tokmgr_cli {

/// Runs the load for --duration (or until SIGINT or SIGTERM) and prints one
/// JSON line of counts; returns an exit_status. Throws usage_error for a
/// wrong command line.
int run_load(int argc, char** argv);

}  // namespace tokmgr_cli
