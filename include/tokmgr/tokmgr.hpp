// tokmgr/tokmgr.hpp — everything, with the default policies: the Asio HTTP
// transport, the coarse monotonic clock, in-memory storage and simdjson.
//
// A translation unit that plugs in its own transport and JSON policy can
// include tokmgr/token_manager.hpp alone and never see Asio, simdjson or
// OpenSSL.
//
// Separate compilation: a program that defines TOKMGR_SEPARATE_COMPILATION
// (for every translation unit) and includes <tokmgr/src.hpp> in exactly one
// .cpp compiles token_manager<>, the Asio transport and the simdjson policy
// once, in that file, instead of in every file that uses them. The other
// files then skip generating their code and parsing Asio's I/O headers and
// simdjson.h, most of their compile time (see BENCHMARKS.md); the cost is
// that get_token() becomes an out-of-line call.
#pragma once

#include "api_key.hpp"
#include "async.hpp"
#include "clock.hpp"
#include "json/simdjson.hpp"
#include "storage/memory.hpp"
#include "token_manager.hpp"
#include "transport/asio.hpp"
#include "version.hpp"

#if defined(TOKMGR_SEPARATE_COMPILATION)
extern template class tokmgr::detail::manager_core<tokmgr::asio_transport, tokmgr::coarse_steady_clock,
                                                   tokmgr::memory_storage, tokmgr::simdjson_json,
                                                   tokmgr::textual_protocol>;
extern template class tokmgr::token_manager<>;
#endif
