// tokmgr/src.hpp — the one translation unit of a program built with
// TOKMGR_SEPARATE_COMPILATION: include this in exactly one .cpp (see
// tokmgr/tokmgr.hpp). It instantiates token_manager<> with the default
// policies, once for the whole program.
#pragma once

#include "tokmgr.hpp"

template class tokmgr::detail::manager_core<tokmgr::asio_transport, tokmgr::steady_clock, tokmgr::memory_storage,
                                            tokmgr::simdjson_json>;
template class tokmgr::token_manager<>;
