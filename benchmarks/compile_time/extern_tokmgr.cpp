// Compile-time probe: a translation unit of a program built with
// TOKMGR_SEPARATE_COMPILATION, which compiles token_manager<>, the Asio
// transport and the simdjson policy once, in the one .cpp that includes
// <tokmgr/src.hpp>. What every other TU then pays.
#define TOKMGR_SEPARATE_COMPILATION
#include <tokmgr/tokmgr.hpp>

tokmgr::secret_view compile_time_probe(tokmgr::token_manager<>& manager) { return manager.get_token(); }
