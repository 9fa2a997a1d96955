// tokmgr/tokmgr.hpp — everything, with the default policies: the Asio HTTP
// transport, the steady clock, in-memory storage and simdjson.
//
// A translation unit that plugs in its own transport and JSON policy can
// include tokmgr/token_manager.hpp alone and never see Asio, simdjson or
// OpenSSL.
#pragma once

#include "api_key.hpp"
#include "clock.hpp"
#include "json/simdjson.hpp"
#include "storage/memory.hpp"
#include "token_manager.hpp"
#include "transport/asio.hpp"
