// Positive and negative checks of the policy requirements, with archetypes:
// the least a type must have to model each policy.
#include <tokmgr/concepts.hpp>
#include <tokmgr/clock.hpp>
#include <tokmgr/json/simdjson.hpp>
#include <tokmgr/storage/memory.hpp>
#include <tokmgr/testing/fake_transport.hpp>
#include <tokmgr/testing/manual_clock.hpp>
#include <tokmgr/token_manager.hpp>

#include <doctest/doctest.h>

namespace archetype {

struct transport {
    tokmgr::http_response send(const tokmgr::http_request&, std::error_code& ec) {
        ec = tokmgr::errc::connection_refused;
        return {};
    }
};

struct clock {
    using time_point = std::chrono::time_point<std::chrono::steady_clock, std::chrono::milliseconds>;
    time_point now() const { return time_point(std::chrono::milliseconds(0)); }
    std::chrono::system_clock::time_point wall_now() const { return {}; }
};

struct storage {
    std::optional<tokmgr::token_set> load(std::error_code& ec) {
        ec.clear();
        return std::nullopt;
    }
    void store(const tokmgr::token_set&, std::error_code& ec) { ec.clear(); }
};

struct json {
    tokmgr::jwt_claims parse_jwt_claims(std::string_view, std::error_code& ec) const {
        ec.clear();
        return {};
    }
    std::string write_object(const tokmgr::flat_object&) const { return "{}"; }
    tokmgr::flat_object read_object(std::string_view, std::error_code& ec) const {
        ec = tokmgr::errc::protocol_error;
        return {};
    }
};

struct protocol {
    tokmgr::token_request login_request(const tokmgr::credentials&, std::string_view, const json&) const {
        return {};
    }
    tokmgr::token_request refresh_request(std::string_view, std::string_view, const json&) const { return {}; }
    tokmgr::token_answer read_tokens(std::string_view, const json&, std::error_code& ec) const {
        ec = tokmgr::errc::protocol_error;
        return {};
    }
    std::string answer_shape() const { return {}; }
    tokmgr::errc classify(tokmgr::token_call, int, std::string_view, const json&) const {
        return tokmgr::errc::server_error;
    }
    std::string error_message(std::string_view, const json&) const { return {}; }
};

}  // namespace archetype

namespace wrong {
/// Reads the answer without the Json policy it is given.
struct protocol_without_json_in_read {
    tokmgr::token_request login_request(const tokmgr::credentials&, std::string_view,
                                        const archetype::json&) const;
    tokmgr::token_request refresh_request(std::string_view, std::string_view, const archetype::json&) const;
    tokmgr::token_answer read_tokens(std::string_view, std::error_code&) const;
    std::string answer_shape() const;
    tokmgr::errc classify(tokmgr::token_call, int, std::string_view, const archetype::json&) const;
    std::string error_message(std::string_view, const archetype::json&) const;
};
struct transport_returning_string {
    std::string send(const tokmgr::http_request&, std::error_code&);
};
struct transport_without_error_code {
    tokmgr::http_response send(const tokmgr::http_request&);
};
struct clock_without_wall {
    using time_point = std::chrono::steady_clock::time_point;
    time_point now() const;
};
struct clock_with_int_time_point {
    using time_point = long;
    time_point now() const;
    std::chrono::system_clock::time_point wall_now() const;
};
struct storage_without_store {
    std::optional<tokmgr::token_set> load(std::error_code&);
};
struct json_with_mutable_parse : archetype::json {
    tokmgr::flat_object read_object(std::string_view, std::error_code&);  // hides the const one
};
/// The Textual-shaped policy of old, without the flat objects.
struct json_of_textual_shape {
    std::string login_body(std::string_view, std::string_view) const;
    std::string refresh_body(std::string_view) const;
    tokmgr::token_pair parse_token_response(std::string_view, std::error_code&) const;
    tokmgr::jwt_claims parse_jwt_claims(std::string_view, std::error_code&) const;
    std::string error_message(std::string_view) const;
};
}  // namespace wrong

namespace archetype {
/// The asynchronous kind: an executor and async_send, no send.
struct async_only_transport {
    struct executor {};
    executor get_executor() const;
    template <class Handler>
    void async_send(const tokmgr::http_request&, Handler&&);
};
}  // namespace archetype

TEST_CASE("an asynchronous transport models Transport without a synchronous send") {
    static_assert(tokmgr::is_async_transport_v<archetype::async_only_transport>);
    static_assert(tokmgr::is_transport_v<archetype::async_only_transport>);
    static_assert(!tokmgr::is_async_transport_v<tokmgr::testing::fake_transport>);
#if TOKMGR_HAS_CONCEPTS
    static_assert(tokmgr::async_transport<archetype::async_only_transport>);
    static_assert(tokmgr::transport<archetype::async_only_transport>);
    static_assert(!tokmgr::sync_transport<archetype::async_only_transport>);
#endif
    CHECK(true);
}

TEST_CASE("the shipped policies and the archetypes model their policies") {
    static_assert(tokmgr::is_transport_v<tokmgr::testing::fake_transport>);
    static_assert(tokmgr::is_transport_v<archetype::transport>);
    static_assert(tokmgr::is_clock_v<tokmgr::steady_clock>);
    static_assert(tokmgr::is_clock_v<tokmgr::testing::manual_clock>);
    static_assert(tokmgr::is_clock_v<archetype::clock>);
    static_assert(tokmgr::is_storage_v<tokmgr::memory_storage>);
    static_assert(tokmgr::is_storage_v<archetype::storage>);
    static_assert(tokmgr::is_json_v<tokmgr::simdjson_json>);
    static_assert(tokmgr::is_json_v<archetype::json>);
#if TOKMGR_HAS_CONCEPTS
    static_assert(tokmgr::transport<archetype::transport>);
    static_assert(tokmgr::clock<archetype::clock>);
    static_assert(tokmgr::storage<archetype::storage>);
    static_assert(tokmgr::json<archetype::json>);
    static_assert(tokmgr::json<tokmgr::simdjson_json>);
    static_assert(tokmgr::token_protocol<archetype::protocol, archetype::json>);
    static_assert(tokmgr::token_protocol<tokmgr::textual_protocol, tokmgr::simdjson_json>);
#endif
    static_assert(tokmgr::is_token_protocol_v<archetype::protocol, archetype::json>);
    static_assert(tokmgr::is_token_protocol_v<tokmgr::textual_protocol, tokmgr::simdjson_json>);
    static_assert(tokmgr::is_token_protocol_v<tokmgr::textual_protocol, archetype::json>);
    CHECK(true);
}

TEST_CASE("types that miss a requirement are rejected") {
    static_assert(!tokmgr::is_transport_v<int>);
    static_assert(!tokmgr::is_transport_v<wrong::transport_returning_string>);
    static_assert(!tokmgr::is_transport_v<wrong::transport_without_error_code>);
    static_assert(!tokmgr::is_clock_v<wrong::clock_without_wall>);
    static_assert(!tokmgr::is_clock_v<wrong::clock_with_int_time_point>);
    static_assert(!tokmgr::is_clock_v<std::chrono::steady_clock>);  // no wall_now
    static_assert(!tokmgr::is_storage_v<wrong::storage_without_store>);
    static_assert(!tokmgr::is_json_v<wrong::json_with_mutable_parse>);
    static_assert(!tokmgr::is_json_v<wrong::json_of_textual_shape>);
#if TOKMGR_HAS_CONCEPTS
    static_assert(!tokmgr::transport<wrong::transport_returning_string>);
    static_assert(!tokmgr::clock<wrong::clock_with_int_time_point>);
    static_assert(!tokmgr::storage<wrong::storage_without_store>);
    static_assert(!tokmgr::json<wrong::json_with_mutable_parse>);
    static_assert(!tokmgr::token_protocol<wrong::protocol_without_json_in_read, archetype::json>);
    static_assert(!tokmgr::token_protocol<archetype::protocol, tokmgr::simdjson_json>);  // another Json
#endif
    static_assert(!tokmgr::is_token_protocol_v<wrong::protocol_without_json_in_read, archetype::json>);
    static_assert(!tokmgr::is_token_protocol_v<archetype::protocol, tokmgr::simdjson_json>);
    static_assert(!tokmgr::is_token_protocol_v<int, archetype::json>);
    CHECK(true);
}

TEST_CASE("a manager built from the archetypes alone works and reports the transport's error") {
    tokmgr::manager_options options;
    options.assumed_lifetimes = tokmgr::lifetimes{};
    tokmgr::token_manager<archetype::transport, archetype::clock, archetype::storage, archetype::json,
                          archetype::protocol>
        manager(
        archetype::transport{}, tokmgr::credentials{"u", tokmgr::secret("p")}, options);
    std::error_code ec;
    CHECK(manager.get_token(ec).empty());
    CHECK(ec == tokmgr::errc::connection_refused);
    CHECK(manager.last_error().detail == "login at the server");
}
