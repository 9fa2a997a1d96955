// Compile-time probe: a file of a service that only uses a manager built
// elsewhere (the common case: one file constructs it, many call it),
// header-only. See compile_time.sh.
#include <tokmgr/tokmgr.hpp>

tokmgr::secret_view compile_time_probe(tokmgr::token_manager<>& manager) { return manager.get_token(); }
