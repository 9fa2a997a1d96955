// tokmgr/fwd.hpp — forward declarations and the default policies.
//
// Including this header costs nothing: it names the defaults without pulling
// in Asio, simdjson or OpenSSL. `tokmgr/tokmgr.hpp` brings their definitions.
#pragma once

namespace tokmgr {

class asio_transport;  // <tokmgr/transport/asio.hpp>
class steady_clock;         // <tokmgr/clock.hpp>
class coarse_steady_clock;  // <tokmgr/clock.hpp>
class memory_storage;  // <tokmgr/storage/memory.hpp>
class simdjson_json;   // <tokmgr/json/simdjson.hpp>
class textual_protocol;  // <tokmgr/protocol/textual.hpp>

/// The token manager. `token_manager<>` is the everyday configuration: the
/// Asio HTTP transport, the coarse monotonic clock, in-memory storage,
/// simdjson and the Textual API.
template <class Transport = asio_transport, class Clock = coarse_steady_clock, class Storage = memory_storage,
          class Json = simdjson_json, class Protocol = textual_protocol>
class token_manager;

class api_key_source;

namespace testing {
class manual_clock;    // <tokmgr/testing/manual_clock.hpp>
class fake_transport;  // <tokmgr/testing/fake_transport.hpp>
}  // namespace testing

}  // namespace tokmgr
