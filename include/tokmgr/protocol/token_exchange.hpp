// tokmgr/protocol/token_exchange.hpp — the values a Protocol policy exchanges
// with the manager: the request it builds for a login or a refresh, and the
// token set it reads from a 2xx answer. Plain data, like http.hpp: a
// protocol knows nothing of flights, stores or schedules.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "../http.hpp"
#include "../secret.hpp"

namespace tokmgr {

/// Which of the two requests of a flight.
enum class token_call { login, refresh };

/// A login or refresh request as the protocol wants it sent. The body is a
/// `secret` because it carries a password, a refresh token or a client
/// secret; the manager keeps it alive while the transport runs and wipes it
/// afterwards, and it wipes the header values too (an `Authorization: Basic`
/// carries the client secret).
struct token_request {
    std::string method = "POST";
    std::string target;  ///< relative to the transport's base URL
    std::string content_type = "application/json";
    std::vector<http_header> headers;
    secret body;
};

/// What a 2xx answer gave.
struct token_answer {
    secret access_token;
    /// Empty: the answer to a refresh carried none, and the refresh token
    /// sent stays valid (RFC 6749 §6 lets a server not rotate).
    secret refresh_token;
    /// The access token's lifetime when the protocol states it (OAuth 2.0's
    /// expires_in); otherwise the manager reads the JWT's claims.
    std::optional<std::chrono::seconds> expires_in;
};

}  // namespace tokmgr
