// Compile-time probe: everything a user of the default configuration pays.
// Includes tokmgr with its default policies and instantiates token_manager<>
// fully (every member), as a program using it would. See compile_time.sh.
#include <tokmgr/tokmgr.hpp>

template class tokmgr::token_manager<>;

tokmgr::secret_view compile_time_probe(tokmgr::token_manager<>& manager) { return manager.get_token(); }
