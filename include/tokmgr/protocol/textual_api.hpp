// tokmgr/protocol/textual_api.hpp — the Textual auth API as it appears on the
// wire: the endpoint paths, the JSON member names and body shapes, and what
// each HTTP status of an answer means. The one home of these facts for the
// client, the reference server and the fake (see the protocol spec,
// "Endpoints" and "Errors").
//
// No Asio, no JSON library: the bodies the protocol sends are flat objects of
// strings, whose members are listed here; the client writes and reads them
// through its Json policy (textual.hpp), the server and the fake write them
// here and read them with simdjson, by the names below.
#pragma once

#include <array>
#include <string>
#include <string_view>

#include "../detail/json_text.hpp"
#include "../errc.hpp"
#include "../flat_object.hpp"

namespace tokmgr::protocol {

inline constexpr std::string_view login_path = "/api/auth/login";
inline constexpr std::string_view refresh_path = "/api/auth/token_refresh";
/// Everything else the API serves (the resources a JWT opens) lives below it.
inline constexpr std::string_view api_prefix = "/api/";

/// Our decision (the public docs show no example): `Authorization: Bearer <jwt>`.
inline constexpr std::string_view bearer_scheme = "Bearer";

/// JSON member names of the request and response bodies.
namespace field {
inline constexpr std::string_view user_name = "userName";
inline constexpr std::string_view password = "password";
inline constexpr std::string_view jwt = "jwt";
inline constexpr std::string_view refresh_token = "refreshToken";
inline constexpr std::string_view error_title = "title";
inline constexpr std::string_view error_detail = "detail";
}  // namespace field

/// Where the Textual stack's error bodies carry a human message, in the
/// order a client looks (the first present, non-empty one wins).
inline constexpr std::array<std::string_view, 4> error_message_fields = {"message", "detail", "title",
                                                                          "errorMessage"};

/// The JWT claims (RFC 7519 §4.1) the client reads for a token's lifetime.
namespace claim {
inline constexpr std::string_view issued_at = "iat";
inline constexpr std::string_view expires_at = "exp";
}  // namespace claim

enum class call { login, refresh };

inline constexpr std::string_view path_of(call c) noexcept { return c == call::login ? login_path : refresh_path; }

/// What a request body of `c` looks like, for messages that tell a sender
/// what to send: `{"userName": "...", "password": "..."}`.
inline std::string request_shape(call c) {
    auto member = [](std::string_view name) { return "\"" + std::string(name) + "\": \"...\""; };
    if (c == call::refresh) return "{" + member(field::refresh_token) + "}";
    return "{" + member(field::user_name) + ", " + member(field::password) + "}";
}

/// The fields a 2xx answer must carry, for the client's protocol_error text.
inline std::string token_response_fields() {
    return "string fields \"" + std::string(field::jwt) + "\" and \"" + std::string(field::refresh_token) + "\"";
}

/// The members of each body, for the writers below and for textual_protocol,
/// which writes them through the Json policy.
inline flat_object login_request_members(std::string_view user, std::string_view password) {
    return {flat_member::of_string(field::user_name, user), flat_member::of_string(field::password, password)};
}

inline flat_object refresh_request_members(std::string_view refresh_token) {
    return {flat_member::of_string(field::refresh_token, refresh_token)};
}

inline std::string login_request_json(std::string_view user, std::string_view password) {
    return tokmgr::detail::write_flat_object(login_request_members(user, password));
}

inline std::string refresh_request_json(std::string_view refresh_token) {
    return tokmgr::detail::write_flat_object(refresh_request_members(refresh_token));
}

/// The 2xx answer of both calls.
inline std::string token_response_json(std::string_view jwt, std::string_view refresh_token) {
    return tokmgr::detail::write_flat_object(
        {flat_member::of_string(field::jwt, jwt), flat_member::of_string(field::refresh_token, refresh_token)});
}

/// An error answer as the reference server and the fake write it:
/// `{"title": "<reason phrase>", "detail": "<what to do>"}`.
inline std::string error_json(std::string_view title, std::string_view explanation) {
    return tokmgr::detail::write_flat_object(
        {flat_member::of_string(field::error_title, title), flat_member::of_string(field::error_detail, explanation)});
}

/// What a non-2xx answer to `c` means (the spec's "Errors" table). A 3xx is
/// never followed: it could carry the credentials elsewhere.
inline errc error_for_status(call c, int status) noexcept {
    if (status >= 300 && status < 400) return errc::unexpected_redirect;
    if (c == call::login && (status == 401 || status == 403)) return errc::credentials_rejected;
    if (c == call::refresh && (status == 400 || status == 401)) return errc::refresh_rejected;
    if (status == 429) return errc::rate_limited;
    if (status == 503) return errc::service_unavailable;
    if (status >= 500 && status < 600) return errc::server_error;
    if (status >= 400 && status < 500) return errc::request_rejected;
    return errc::protocol_error;
}

}  // namespace tokmgr::protocol
