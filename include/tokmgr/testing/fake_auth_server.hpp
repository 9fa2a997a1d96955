// tokmgr/testing/fake_auth_server.hpp — the Textual auth protocol in memory,
// on a manual clock, as a handler for fake_transport.
//
// Login issues a new token family; token_refresh retires the presented
// refresh token and issues the next pair; presenting a retired token counts as
// a reuse and revokes the family (RFC 9700 §4.14). The rules are the
// reference server's own (protocol/refresh_registry.hpp), and its counters
// carry the names of the server's (server_stats), so a test proves the client
// never broke or reused the chain the same way against either. The reference
// server (tokmgr/server) is the real-socket counterpart.
//
// Any other path under /api/ is a protected resource, as on the reference
// server: 200 for `Authorization: Bearer <a JWT this fake issued>` that has
// neither expired nor been revoked (`revoke_jwt`), else 401 with
// `WWW-Authenticate: Bearer`.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>

#include "../detail/base64url.hpp"
#include "../http.hpp"
#include "../protocol/refresh_registry.hpp"
#include "../protocol/textual_api.hpp"
#include "manual_clock.hpp"

namespace tokmgr::testing {

class fake_auth_server {
public:
    struct settings {
        std::string user_name = "user@example.com";
        std::string password = "correct horse battery staple";
        std::chrono::seconds jwt_lifetime{std::chrono::minutes(30)};
        std::chrono::seconds refresh_lifetime{std::chrono::minutes(10000)};
        bool jwt_has_iat = true;
        bool jwt_has_exp = true;
    };

    /// The counters of server::server_stats that this fake can see.
    struct statistics {
        std::uint64_t logins = 0;                  ///< successful
        std::uint64_t logins_rejected = 0;         ///< wrong user name or password
        std::uint64_t refreshes = 0;               ///< successful
        std::uint64_t refreshes_rejected = 0;      ///< unknown, expired, retired or revoked token presented
        std::uint64_t refresh_tokens_reused = 0;   ///< a retired token presented (its family is revoked): must stay 0
        std::uint64_t refresh_tokens_expired = 0;  ///< an expired token presented
        std::uint64_t refresh_tokens_unknown = 0;  ///< a token never issued presented
        std::uint64_t refresh_tokens_revoked = 0;  ///< a token of a revoked family presented
        std::uint64_t families_revoked = 0;
        std::uint64_t resources_served = 0;        ///< protected resources answered 200
        std::uint64_t unauthorized = 0;            ///< protected resources answered 401
        std::uint64_t revoked_jwts_presented = 0;  ///< of which for a JWT revoked by revoke_jwt
    };

    explicit fake_auth_server(manual_clock clock) : fake_auth_server(std::move(clock), settings{}) {}
    fake_auth_server(manual_clock clock, settings config)
        : state_(std::make_shared<state>(std::move(clock), std::move(config))) {}

    http_response operator()(const http_request& request) const {
        std::lock_guard<std::mutex> lock(state_->mutex);
        if (request.target == protocol::login_path) return state_->login(request.body);
        if (request.target == protocol::refresh_path) return state_->refresh(request.body);
        if (std::string_view(request.target).substr(0, protocol::api_prefix.size()) == protocol::api_prefix)
            return state_->resource(request);
        return {404, {}, protocol::error_json("Not Found", "no such endpoint")};
    }

    statistics stats() const {
        std::lock_guard<std::mutex> lock(state_->mutex);
        statistics counts = state_->counts;
        counts.families_revoked = state_->registry.families_revoked();
        return counts;
    }

    /// The refresh token the server would accept now for the newest family.
    std::string current_refresh_token() const {
        std::lock_guard<std::mutex> lock(state_->mutex);
        return state_->newest_refresh_token;
    }

    /// From now on the resource paths answer `jwt` 401 (a revoked session).
    void revoke_jwt(std::string_view jwt) {
        std::lock_guard<std::mutex> lock(state_->mutex);
        state_->revoked.emplace(jwt);
    }

    /// Changes the JWT lifetime of tokens issued from now on.
    void set_jwt_lifetime(std::chrono::seconds lifetime) {
        std::lock_guard<std::mutex> lock(state_->mutex);
        state_->config.jwt_lifetime = lifetime;
    }

    /// A string member of a flat JSON object as our encoders write it
    /// (enough for a test double; the reference server parses properly).
    static std::optional<std::string> string_field(std::string_view body, std::string_view key) {
        const std::string quoted = "\"" + std::string(key) + "\"";
        auto at = body.find(quoted);
        if (at == std::string_view::npos) return std::nullopt;
        at = body.find_first_not_of(" \t\r\n", at + quoted.size());
        if (at == std::string_view::npos || body[at] != ':') return std::nullopt;
        at = body.find_first_not_of(" \t\r\n", at + 1);
        if (at == std::string_view::npos || body[at] != '"') return std::nullopt;
        std::string value;
        for (++at; at < body.size(); ++at) {
            if (body[at] == '"') return value;
            if (body[at] == '\\' && at + 1 < body.size()) ++at;
            value += body[at];
        }
        return std::nullopt;
    }

private:
    struct state {
        state(manual_clock c, settings s)
            : clock(std::move(c)), config(std::move(s)), registry([this] { return next_refresh_token(); }) {}

        http_response login(std::string_view body) {
            const auto user = string_field(body, protocol::field::user_name);
            const auto password = string_field(body, protocol::field::password);
            if (!user || !password)
                return bad_request("send " + protocol::request_shape(protocol::call::login));
            if (*user != config.user_name || *password != config.password) {
                ++counts.logins_rejected;
                return unauthorized("invalid user name or password");
            }
            const std::string refresh_token = registry.issue(*user, clock.now(), config.refresh_lifetime);
            if (refresh_token.empty())
                return {503, {{"Retry-After", "60"}},
                        protocol::error_json("Service Unavailable", "as many logins as the server remembers are alive")};
            ++counts.logins;
            return issue(refresh_token);
        }

        http_response refresh(std::string_view body) {
            const auto token = string_field(body, protocol::field::refresh_token);
            if (!token) return bad_request("send " + protocol::request_shape(protocol::call::refresh));
            auto rotation = registry.rotate(*token, clock.now(), config.refresh_lifetime);
            using result = decltype(registry)::result;
            switch (rotation.outcome) {
            case result::rotated: ++counts.refreshes; return issue(rotation.new_token);
            case result::reused: ++counts.refresh_tokens_reused; break;
            case result::expired: ++counts.refresh_tokens_expired; break;
            case result::revoked: ++counts.refresh_tokens_revoked; break;
            case result::unknown: ++counts.refresh_tokens_unknown; break;
            }
            ++counts.refreshes_rejected;
            return unauthorized("invalid refresh token");
        }

        http_response resource(const http_request& request) {
            const auto authorization = find_header(request.headers, "Authorization");
            const std::string prefix = std::string(protocol::bearer_scheme) + " ";
            std::string_view jwt;
            if (authorization && authorization->substr(0, prefix.size()) == prefix)
                jwt = authorization->substr(prefix.size());
            const auto issued_jwt = issued.find(jwt);
            const bool revoked_jwt = revoked.count(jwt) != 0;
            if (issued_jwt == issued.end() || revoked_jwt || clock.wall_now() >= issued_jwt->second) {
                ++counts.unauthorized;
                if (revoked_jwt) ++counts.revoked_jwts_presented;
                http_response denied = unauthorized("the JWT is unknown, expired or revoked");
                denied.headers.push_back({"WWW-Authenticate", std::string(protocol::bearer_scheme)});
                return denied;
            }
            ++counts.resources_served;
            return {200, {{"Content-Type", "application/json"}}, "{\"resource\":\"" + std::string(request.target) + "\"}"};
        }

        static http_response bad_request(const std::string& what_to_send) {
            return {400, {}, protocol::error_json("Bad Request", what_to_send)};
        }
        static http_response unauthorized(std::string_view why) {
            return {401, {}, protocol::error_json("Unauthorized", why)};
        }

        /// Readable and unique: a test that prints one sees which it is.
        std::string next_refresh_token() { return "rt-" + std::to_string(++last_refresh_token); }

        http_response issue(const std::string& refresh_token) {
            const std::int64_t now =
                std::chrono::duration_cast<std::chrono::seconds>(clock.wall_now().time_since_epoch()).count();
            std::string claims = R"({"sub":")" + config.user_name + "\"";
            if (config.jwt_has_iat) claims += ",\"" + std::string(protocol::claim::issued_at) + "\":" + std::to_string(now);
            if (config.jwt_has_exp)
                claims += ",\"" + std::string(protocol::claim::expires_at) + "\":" +
                          std::to_string(now + config.jwt_lifetime.count());
            claims += ",\"jti\":\"" + std::to_string(++last_jti) + "\"}";
            const std::string jwt = detail::base64url_encode(R"({"alg":"HS256","typ":"JWT"})") + "." +
                                    detail::base64url_encode(claims) + ".c2lnbmF0dXJl";
            newest_refresh_token = refresh_token;
            issued.emplace(jwt, clock.wall_now() + config.jwt_lifetime);
            // A member the client does not know: the spec says to ignore it.
            std::string body = protocol::token_response_json(jwt, refresh_token);
            body.insert(body.size() - 1, R"(,"extra":{"ignored":true})");
            return {200, {{"Content-Type", "application/json"}}, std::move(body)};
        }

        std::mutex mutex;
        manual_clock clock;
        settings config;
        statistics counts;
        std::uint64_t last_refresh_token = 0;
        protocol::refresh_registry<manual_clock::time_point> registry;
        std::string newest_refresh_token;
        std::uint64_t last_jti = 0;
        std::map<std::string, std::chrono::system_clock::time_point, std::less<>> issued;  // JWT → its exp
        std::set<std::string, std::less<>> revoked;
    };
    std::shared_ptr<state> state_;
};

}  // namespace tokmgr::testing
