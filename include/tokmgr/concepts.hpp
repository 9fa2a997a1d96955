// tokmgr/concepts.hpp — what each policy of token_manager must provide.
//
// Under C++20 each policy is a named concept whose conjuncts are numbered
// below; under C++17 the same requirements are checked by one static_assert
// per member, whose message spells the missing signature.
//
// Transport — posts one HTTP request. A synchronous transport:
//   1. `http_response t.send(const http_request&, std::error_code&)`
//      On failure it sets the error_code (preferably a tokmgr::errc, so the
//      manager knows whether the request may have reached the server; see
//      `request_not_sent`) and returns a response whose content is ignored.
//      It reports what it received: no HTTP status is a transport error (the
//      manager judges statuses, 3xx included, in one place).
// An asynchronous transport (async_transport), instead of or besides 1:
//   2. `t.get_executor()` — an Asio executor (asio::any_io_executor for the
//      manager to post to and to recognise its own thread)
//   3. `t.async_send(const http_request&, Handler)` — completes with
//      `void(std::error_code, http_response)` through the executor of 2, with
//      the errors of 1; the request need not outlive the call
//   4. optional: `bool t.runs_on_executor() const` — which of 1 and 3 to use
//      when it has both (asio_transport: true when built with an executor).
//      Without it, a transport with both is used synchronously.
//   The manager runs its logins and refreshes as asynchronous operations on
//   such a transport; async_get_token needs one.
//
// Clock — the time the manager schedules by:
//   1. `C::time_point`, a std::chrono::time_point
//   2. `C::time_point c.now() const` — monotonic
//   3. `std::chrono::system_clock::time_point c.wall_now() const` — wall
//      time, used only to read a JWT that carries `exp` without `iat`
//
// Storage — where the token set is persisted; called by one thread at a time
// (the single refresh in flight), so it needs no lock of its own:
//   1. `std::optional<token_set> s.load(std::error_code&)`
//   2. `void s.store(const token_set&, std::error_code&)`
//   Write-ahead rule: before a refresh token is sent, the manager stores the
//   set with `refresh_token_spent` (generation + 1); a store that fails there
//   stops the refresh before anything is sent. Whoever loads that set next
//   logs in instead of sending the spent token. A storage without the
//   coordinating capability serves one process per store.
// Coordinating storage (coordinating_storage), an optional capability for
// stores shared by several processes or hosts:
//   3. `L s.lock(std::chrono::milliseconds max_wait, std::error_code&)` — a
//      lease: an RAII guard (movable; released when destroyed; `explicit
//      operator bool` true when held) held across one login or refresh.
//      Waits at most `max_wait`; errc::lease_timeout when another holder
//      kept it longer.
//   4. `bool s.holds(const L&, std::error_code&)` — still held? Checked just
//      before a refresh token is sent: a holder that lost its lease sends
//      nothing.
//   5. `bool s.store_if(const token_set&, std::uint64_t expected_generation,
//      std::error_code&)` — compare-and-swap: writes only when the stored
//      generation equals `expected_generation` (0: nothing stored); false,
//      with no error, when it differs. Every write of the manager is then one
//      store_if with the set's generation − 1, so a holder paused past its
//      lease can never overwrite a newer set.
//   The flight's sequence of these calls is written once, in
//   detail/flight_machine.hpp.
//  12. optional: `bool s.store_if_and_release(const token_set&, std::uint64_t
//      expected_generation, L&, std::error_code&)` — 5, and when the set was
//      written the lease released with it in one step (the store's write is
//      never after the lease's end); the L is then empty. When nothing was
//      written the L is still held. The manager uses it for a flight's last
//      write, saving the release's round trip (redis_storage).
// Asynchronous storage (async_storage), optional: a store whose calls can
// complete later, so that an asynchronous manager never blocks its executor
// on it. Each member starts the operation and returns at once; it calls the
// handler exactly once, on any thread (the manager posts back to its own
// executor), possibly before it returns. Handlers are copyable and their
// moves do not throw.
//   6. `s.async_load(H)` — H: `void(std::error_code, std::optional<token_set>)`
//   7. `s.async_store(const token_set&, H)` — H: `void(std::error_code)`
// With the coordinating capability (L is the lease type of 3):
//   8. `s.async_lock(std::chrono::milliseconds max_wait, H)` — H:
//      `void(std::error_code, L)`
//   9. `s.async_holds(const L&, H)` — H: `void(std::error_code, bool)`
//  10. `s.async_store_if(const token_set&, std::uint64_t expected_generation, H)`
//      — H: `void(std::error_code, bool)`
//  11. `s.async_release(L, H)` — H: `void(std::error_code)`; releases the
//      lease without blocking (destroying an L may block)
// The set passed to 7 and 10 need not outlive the call. A store without
// this form is run, by an asynchronous manager, on a thread of the
// manager's own (manager_options::storage_executor to supply one).
//
// Json — the JSON library of the user's choice, knowing no protocol; every
// input under the rules of detail/json_rules.hpp (else errc::protocol_error):
//   1. `jwt_claims j.parse_jwt_claims(std::string_view payload_json, std::error_code&) const`
//      — "iat" and "exp" of a JWT's payload, for the manager (JWT claims are
//      not a protocol's: any protocol may hand out JWTs)
//   2. `std::string j.write_object(const flat_object&) const` — one JSON
//      object of the members, in their order (flat_object.hpp); a string
//      that is not UTF-8 is written without an exception
//   3. `flat_object j.read_object(std::string_view body, std::error_code&) const`
//      — the string, number and boolean members of the object `body` is,
//      sorted by name; members of other types are skipped
//   A protocol builds its bodies with 2 and reads answers with 3. The
//   Textual-shaped members the shipped policies still have (login_body,
//   refresh_body, parse_token_response, error_message) are conveniences
//   outside the concept: textual_protocol does not use them.
//
// Protocol (concept token_protocol<P, J>; tokmgr::protocol is the namespace
// of the Textual facts) — what the login and refresh requests and their
// answers look like on the wire (textual_protocol, the default;
// tokmgr/protocol/). Used
// only inside a flight, under the manager's policy gate, never on the hot
// path. Each member is given the manager's Json policy J for the bodies
// (a member template serves any J):
//   1. `token_request p.login_request(const credentials&, std::string_view target, const J&) const`
//      — the request that obtains a first token set; `target` is
//      manager_options::login_path, which a protocol with its own endpoint
//      may ignore
//   2. `token_request p.refresh_request(std::string_view refresh_token,
//      std::string_view target, const J&) const` — the request that
//      exchanges the current refresh token; `target` is
//      manager_options::refresh_path
//   3. `token_answer p.read_tokens(std::string_view body, const J&, std::error_code&) const`
//      — a 2xx answer's tokens; sets an error (errc::protocol_error) when
//      the body does not hold them. An empty refresh token keeps the one
//      sent; an empty expires_in leaves the lifetime to the JWT's claims.
//   4. `std::string p.answer_shape() const` — what a 2xx body must hold, for
//      the message of 3's error
//   5. `errc p.classify(token_call, int status, std::string_view body, const J&) const`
//      — what a non-2xx answer means to the manager: credentials_rejected
//      (not retried for a while), refresh_rejected (the grant is dead: log
//      in again), rate_limited, service_unavailable or server_error (back
//      off, honouring Retry-After), unexpected_redirect, or another errc
//      reported as it is
//   6. `std::string p.error_message(std::string_view body, const J&) const`
//      — the server's own words, or empty; the manager redacts the secrets
//      it sent before showing them
// Secrets reach a protocol as `tokmgr::secret` (credentials) or as a view of
// one, and leave it in token_request::body or a header value, both wiped by
// the manager; a protocol must not put them in any other text.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

#include "errc.hpp"
#include "flat_object.hpp"
#include "http.hpp"
#include "protocol/token_exchange.hpp"
#include "token_set.hpp"

#if defined(__cpp_concepts) && __cpp_concepts >= 201907L && __has_include(<concepts>)
#include <concepts>
#define TOKMGR_HAS_CONCEPTS 1
#else
#define TOKMGR_HAS_CONCEPTS 0
#endif

namespace tokmgr {

struct credentials;

namespace detail {

template <class, template <class> class, class = void>
struct detect : std::false_type {};
template <class T, template <class> class Op>
struct detect<T, Op, std::void_t<Op<T>>> : std::true_type {};

template <class J, template <class> class Op, class R>
constexpr bool returns() {
    if constexpr (detect<J, Op>::value) return std::is_same_v<Op<J>, R>;
    else return false;
}

template <class T>
struct is_time_point : std::false_type {};
template <class C, class D>
struct is_time_point<std::chrono::time_point<C, D>> : std::true_type {};

// Transport
template <class T>
using send_result = decltype(std::declval<T&>().send(std::declval<const http_request&>(),
                                                     std::declval<std::error_code&>()));

// Clock
template <class C>
using clock_time_point = typename C::time_point;
template <class C>
using clock_now_result = decltype(std::declval<const C&>().now());
template <class C>
using clock_wall_now_result = decltype(std::declval<const C&>().wall_now());

template <class C>
constexpr bool clock_has_time_point() {
    if constexpr (detect<C, clock_time_point>::value) return is_time_point<typename C::time_point>::value;
    else return false;
}
template <class C>
constexpr bool clock_has_now() {
    if constexpr (clock_has_time_point<C>() && detect<C, clock_now_result>::value)
        return std::is_same_v<clock_now_result<C>, typename C::time_point>;
    else return false;
}
template <class C>
constexpr bool clock_has_wall_now() {
    if constexpr (detect<C, clock_wall_now_result>::value)
        return std::is_same_v<clock_wall_now_result<C>, std::chrono::system_clock::time_point>;
    else return false;
}

// Storage
template <class S>
using storage_load_result = decltype(std::declval<S&>().load(std::declval<std::error_code&>()));
template <class S>
using storage_store_result =
    decltype(std::declval<S&>().store(std::declval<const token_set&>(), std::declval<std::error_code&>()));

template <class S>
constexpr bool storage_has_load() {
    if constexpr (detect<S, storage_load_result>::value)
        return std::is_same_v<storage_load_result<S>, std::optional<token_set>>;
    else return false;
}
template <class S>
constexpr bool storage_has_store() { return detect<S, storage_store_result>::value; }

template <class S>
using storage_lease_t =
    decltype(std::declval<S&>().lock(std::chrono::milliseconds{}, std::declval<std::error_code&>()));
template <class S>
using storage_holds_result =
    decltype(std::declval<S&>().holds(std::declval<const storage_lease_t<S>&>(), std::declval<std::error_code&>()));
template <class S>
using storage_store_if_result = decltype(std::declval<S&>().store_if(
    std::declval<const token_set&>(), std::uint64_t{}, std::declval<std::error_code&>()));

template <class S>
using storage_store_if_and_release_result = decltype(std::declval<S&>().store_if_and_release(
    std::declval<const token_set&>(), std::uint64_t{}, std::declval<storage_lease_t<S>&>(),
    std::declval<std::error_code&>()));

template <class S>
constexpr bool storage_coordinates() {
    if constexpr (detect<S, storage_lease_t>::value)
        return returns<S, storage_holds_result, bool>() && returns<S, storage_store_if_result, bool>();
    else return false;
}

// Json
// Asynchronous storage: probed with handlers of the exact signatures.
struct async_load_probe {
    void operator()(std::error_code, std::optional<token_set>) const {}
};
struct async_done_probe {
    void operator()(std::error_code) const {}
};
struct async_bool_probe {
    void operator()(std::error_code, bool) const {}
};
template <class S>
using storage_async_load_result = decltype(std::declval<S&>().async_load(async_load_probe{}));
template <class S>
using storage_async_store_result =
    decltype(std::declval<S&>().async_store(std::declval<const token_set&>(), async_done_probe{}));
template <class S>
using storage_async_store_if_result = decltype(std::declval<S&>().async_store_if(
    std::declval<const token_set&>(), std::uint64_t{}, async_bool_probe{}));
template <class S>
using storage_async_holds_result =
    decltype(std::declval<S&>().async_holds(std::declval<const storage_lease_t<S>&>(), async_bool_probe{}));
template <class S>
using storage_async_release_result =
    decltype(std::declval<S&>().async_release(std::declval<storage_lease_t<S>>(), async_done_probe{}));
template <class S>
struct async_lock_probe {
    void operator()(std::error_code, storage_lease_t<S>) const {}
};
template <class S>
using storage_async_lock_result =
    decltype(std::declval<S&>().async_lock(std::chrono::milliseconds{}, async_lock_probe<S>{}));

template <class J>
using json_parse_claims =
    decltype(std::declval<const J&>().parse_jwt_claims(std::string_view{}, std::declval<std::error_code&>()));
template <class J>
using json_write_object = decltype(std::declval<const J&>().write_object(std::declval<const flat_object&>()));
template <class J>
using json_read_object =
    decltype(std::declval<const J&>().read_object(std::string_view{}, std::declval<std::error_code&>()));

// Protocol, probed with the Json policy J it will be given
template <class J>
struct protocol_probe {
    template <class P>
    using login_request = decltype(std::declval<const P&>().login_request(
        std::declval<const credentials&>(), std::string_view{}, std::declval<const J&>()));
    template <class P>
    using refresh_request = decltype(std::declval<const P&>().refresh_request(std::string_view{}, std::string_view{},
                                                                              std::declval<const J&>()));
    template <class P>
    using read_tokens = decltype(std::declval<const P&>().read_tokens(
        std::string_view{}, std::declval<const J&>(), std::declval<std::error_code&>()));
    template <class P>
    using answer_shape = decltype(std::declval<const P&>().answer_shape());
    template <class P>
    using classify = decltype(std::declval<const P&>().classify(token_call{}, int{}, std::string_view{},
                                                                std::declval<const J&>()));
    template <class P>
    using error_message =
        decltype(std::declval<const P&>().error_message(std::string_view{}, std::declval<const J&>()));
};


template <class T>
using executor_result = decltype(std::declval<T&>().get_executor());

template <class S>
constexpr bool storage_is_async() {
    if constexpr (!detect<S, storage_async_load_result>::value || !detect<S, storage_async_store_result>::value)
        return false;
    else if constexpr (storage_coordinates<S>())
        return detect<S, storage_async_lock_result>::value && detect<S, storage_async_holds_result>::value &&
               detect<S, storage_async_store_if_result>::value && detect<S, storage_async_release_result>::value;
    else
        return true;
}

}  // namespace detail

// ---- Traits usable in both language modes ---------------------------------

/// Has `get_executor()`: the asynchronous kind (async_send cannot be checked
/// without instantiating it; a missing one fails where it is called).
template <class T>
inline constexpr bool is_async_transport_v = detail::detect<T, detail::executor_result>::value;

template <class T>
inline constexpr bool is_transport_v =
    detail::returns<T, detail::send_result, http_response>() || is_async_transport_v<T>;


template <class C>
inline constexpr bool is_clock_v = detail::clock_has_time_point<C>() && detail::clock_has_now<C>() &&
                                   detail::clock_has_wall_now<C>();

template <class S>
inline constexpr bool is_storage_v = detail::storage_has_load<S>() && detail::storage_has_store<S>();

/// A storage with the coordinating capability (3–5 above).
template <class S>
inline constexpr bool is_coordinating_storage_v = is_storage_v<S> && detail::storage_coordinates<S>();

/// A coordinating storage that releases its lease with a write (12 above).
template <class S>
inline constexpr bool releases_with_write_v =
    is_coordinating_storage_v<S> && detail::returns<S, detail::storage_store_if_and_release_result, bool>();

/// A storage with the asynchronous form (6 and 7 above; 8–11 too when it
/// coordinates).
template <class S>
inline constexpr bool is_async_storage_v = is_storage_v<S> && detail::storage_is_async<S>();

template <class J>
inline constexpr bool is_json_v = detail::returns<J, detail::json_parse_claims, jwt_claims>() &&
                                  detail::returns<J, detail::json_write_object, std::string>() &&
                                  detail::returns<J, detail::json_read_object, flat_object>();

/// A Protocol policy usable with the Json policy J (1–6 above).
template <class P, class J>
inline constexpr bool is_token_protocol_v =
    detail::returns<P, detail::protocol_probe<J>::template login_request, token_request>() &&
    detail::returns<P, detail::protocol_probe<J>::template refresh_request, token_request>() &&
    detail::returns<P, detail::protocol_probe<J>::template read_tokens, token_answer>() &&
    detail::returns<P, detail::protocol_probe<J>::template answer_shape, std::string>() &&
    detail::returns<P, detail::protocol_probe<J>::template classify, errc>() &&
    detail::returns<P, detail::protocol_probe<J>::template error_message, std::string>();

#if TOKMGR_HAS_CONCEPTS

template <class T>
concept sync_transport = requires(T& t, const http_request& request, std::error_code& ec) {
    { t.send(request, ec) } -> std::same_as<http_response>;  // 1
};

template <class T>
concept async_transport = requires(T& t) {
    t.get_executor();  // 2 (3, async_send, is checked where it is called)
};

template <class T>
concept transport = sync_transport<T> || async_transport<T>;

template <class C>
concept clock = detail::is_time_point<typename C::time_point>::value  // 1
                && requires(const C& c) {
                       { c.now() } -> std::same_as<typename C::time_point>;                     // 2
                       { c.wall_now() } -> std::same_as<std::chrono::system_clock::time_point>;  // 3
                   };

template <class S>
concept storage = requires(S& s, const token_set& set, std::error_code& ec) {
    { s.load(ec) } -> std::same_as<std::optional<token_set>>;  // 1
    s.store(set, ec);                                          // 2
};

template <class S>
concept coordinating_storage =
    storage<S> && requires(S& s, const token_set& set, std::uint64_t generation, std::error_code& ec) {
        { s.lock(std::chrono::milliseconds{}, ec) };                      // 3
        { s.holds(s.lock(std::chrono::milliseconds{}, ec), ec) } -> std::same_as<bool>;  // 4
        { s.store_if(set, generation, ec) } -> std::same_as<bool>;        // 5
    };

template <class S>
concept async_storage = storage<S> && detail::storage_is_async<S>();  // 6–11

template <class J>
concept json = requires(const J& j, std::string_view text, const flat_object& object, std::error_code& ec) {
    { j.parse_jwt_claims(text, ec) } -> std::same_as<jwt_claims>;  // 1
    { j.write_object(object) } -> std::same_as<std::string>;       // 2
    { j.read_object(text, ec) } -> std::same_as<flat_object>;      // 3
};

template <class P, class J>
concept token_protocol = requires(const P& p, const credentials& login, const J& j, std::string_view text,
                            token_call call, int status, std::error_code& ec) {
    { p.login_request(login, text, j) } -> std::same_as<token_request>;       // 1
    { p.refresh_request(text, text, j) } -> std::same_as<token_request>;      // 2
    { p.read_tokens(text, j, ec) } -> std::same_as<token_answer>;            // 3
    { p.answer_shape() } -> std::same_as<std::string>;                       // 4
    { p.classify(call, status, text, j) } -> std::same_as<errc>;             // 5
    { p.error_message(text, j) } -> std::same_as<std::string>;               // 6
};

#endif

namespace detail {

/// One static_assert per requirement, so a wrong policy produces one line
/// naming the missing member. Used by token_manager in both language modes.
template <class Transport, class Clock, class Storage, class Json, class Protocol>
constexpr bool check_policies() {
    static_assert(is_transport_v<Transport>,
                  "tokmgr: the Transport policy needs "
                  "`http_response send(const tokmgr::http_request&, std::error_code&)`, or `get_executor()` and "
                  "`async_send(const tokmgr::http_request&, handler)` for an asynchronous transport");
    static_assert(clock_has_time_point<Clock>(),
                  "tokmgr: the Clock policy needs a nested `time_point` that is a std::chrono::time_point");
    static_assert(clock_has_now<Clock>(), "tokmgr: the Clock policy needs `time_point now() const`");
    static_assert(clock_has_wall_now<Clock>(),
                  "tokmgr: the Clock policy needs `std::chrono::system_clock::time_point wall_now() const`");
    static_assert(storage_has_load<Storage>(),
                  "tokmgr: the Storage policy needs `std::optional<tokmgr::token_set> load(std::error_code&)`");
    static_assert(storage_has_store<Storage>(),
                  "tokmgr: the Storage policy needs `void store(const tokmgr::token_set&, std::error_code&)`");
    static_assert(returns<Json, json_parse_claims, jwt_claims>(),
                  "tokmgr: the Json policy needs "
                  "`tokmgr::jwt_claims parse_jwt_claims(std::string_view, std::error_code&) const`");
    static_assert(returns<Json, json_write_object, std::string>(),
                  "tokmgr: the Json policy needs `std::string write_object(const tokmgr::flat_object&) const`");
    static_assert(returns<Json, json_read_object, flat_object>(),
                  "tokmgr: the Json policy needs "
                  "`tokmgr::flat_object read_object(std::string_view body, std::error_code&) const`");
    using probe = protocol_probe<Json>;
    static_assert(returns<Protocol, probe::template login_request, token_request>(),
                  "tokmgr: the Protocol policy needs `tokmgr::token_request login_request(const tokmgr::credentials&, "
                  "std::string_view target, const Json&) const`");
    static_assert(returns<Protocol, probe::template refresh_request, token_request>(),
                  "tokmgr: the Protocol policy needs `tokmgr::token_request refresh_request(std::string_view "
                  "refresh_token, std::string_view target, const Json&) const`");
    static_assert(returns<Protocol, probe::template read_tokens, token_answer>(),
                  "tokmgr: the Protocol policy needs `tokmgr::token_answer read_tokens(std::string_view body, "
                  "const Json&, std::error_code&) const`");
    static_assert(returns<Protocol, probe::template answer_shape, std::string>(),
                  "tokmgr: the Protocol policy needs `std::string answer_shape() const`");
    static_assert(returns<Protocol, probe::template classify, errc>(),
                  "tokmgr: the Protocol policy needs `tokmgr::errc classify(tokmgr::token_call, int status, "
                  "std::string_view body, const Json&) const`");
    static_assert(returns<Protocol, probe::template error_message, std::string>(),
                  "tokmgr: the Protocol policy needs `std::string error_message(std::string_view body, "
                  "const Json&) const`");
    return true;
}

}  // namespace detail
}  // namespace tokmgr
