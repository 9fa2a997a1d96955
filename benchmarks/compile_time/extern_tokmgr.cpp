// Compile-time probe: a translation unit that uses token_manager<> while the
// program instantiates it once elsewhere (in one .cpp holding
// `template class tokmgr::token_manager<>;` and the same for manager_core).
// What that would save every other TU is the remedy measured in BENCHMARKS.md.
#include <tokmgr/tokmgr.hpp>

extern template class tokmgr::token_manager<>;
extern template class tokmgr::detail::manager_core<tokmgr::asio_transport, tokmgr::steady_clock,
                                                   tokmgr::memory_storage, tokmgr::simdjson_json>;

tokmgr::secret_view compile_time_probe(tokmgr::token_manager<>& manager) { return manager.get_token(); }
