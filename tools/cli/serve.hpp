// tools/cli/serve.hpp — `tokmgr serve`: the reference server from the command line.
#pragma once

namespace tokmgr_cli {

/// Serves until SIGINT or SIGTERM, then prints the server's statistics.
/// Throws usage_error for a wrong command line.
int run_serve(int argc, char** argv);

}  // namespace tokmgr_cli
