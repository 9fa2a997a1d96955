// tokmgr/src.hpp — the one translation unit of a program built with
// TOKMGR_SEPARATE_COMPILATION: include this in exactly one .cpp (see
// tokmgr/tokmgr.hpp). It compiles the Asio transport and instantiates
// token_manager<> with the default policies, once for the whole program.
#pragma once

#include "tokmgr.hpp"
#include "json/impl/simdjson.hpp"   // the simdjson policy's bodies, compiled here once
#include "transport/impl/asio.hpp"  // the transport's bodies, compiled here once

template class tokmgr::detail::manager_core<tokmgr::asio_transport, tokmgr::coarse_steady_clock, tokmgr::memory_storage,
                                            tokmgr::simdjson_json, tokmgr::textual_protocol>;
template class tokmgr::token_manager<>;
