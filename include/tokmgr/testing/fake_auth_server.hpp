// tokmgr/testing/fake_auth_server.hpp — the Textual auth protocol in memory,
// on a manual clock, as a handler for fake_transport.
//
// Login issues a new token family; token_refresh retires the presented
// refresh token and issues the next pair; presenting a retired token counts as
// a reuse and revokes the family (RFC 9700 §4.14). Its counters let a test
// prove the client never broke or reused the chain. The reference server
// (tokmgr/server) is the real-socket counterpart.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "../detail/base64url.hpp"
#include "../http.hpp"
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

    struct statistics {
        std::size_t logins = 0;                 ///< successful
        std::size_t refreshes = 0;              ///< successful
        std::size_t rejected_logins = 0;
        std::size_t rejected_refreshes = 0;     ///< unknown, expired, retired or revoked token presented
        std::size_t reused_refresh_tokens = 0;  ///< a retired token presented: must stay 0
        std::size_t expired_refresh_tokens = 0; ///< an expired token presented
    };

    explicit fake_auth_server(manual_clock clock) : fake_auth_server(std::move(clock), settings{}) {}
    fake_auth_server(manual_clock clock, settings config)
        : state_(std::make_shared<state>(std::move(clock), std::move(config))) {}

    http_response operator()(const http_request& request) const {
        std::lock_guard<std::mutex> lock(state_->mutex);
        if (request.target == "/api/auth/login") return state_->login(request.body);
        if (request.target == "/api/auth/token_refresh") return state_->refresh(request.body);
        return {404, {}, R"({"title":"Not Found"})"};
    }

    statistics stats() const {
        std::lock_guard<std::mutex> lock(state_->mutex);
        return state_->counts;
    }

    /// The refresh token the server would accept now for the newest family.
    std::string current_refresh_token() const {
        std::lock_guard<std::mutex> lock(state_->mutex);
        return state_->newest_refresh_token;
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
    struct refresh_record {
        std::uint64_t family = 0;
        manual_clock::time_point expires{};
        bool retired = false;
    };

    struct state {
        state(manual_clock c, settings s) : clock(std::move(c)), config(std::move(s)) {}

        http_response login(std::string_view body) {
            const auto user = string_field(body, "userName");
            const auto password = string_field(body, "password");
            if (!user || !password) return {400, {}, R"({"title":"Bad Request","detail":"userName and password are required"})"};
            if (*user != config.user_name || *password != config.password) {
                ++counts.rejected_logins;
                return {401, {}, R"({"title":"Unauthorized","detail":"invalid user name or password"})"};
            }
            ++counts.logins;
            return issue(++last_family);
        }

        http_response refresh(std::string_view body) {
            const auto token = string_field(body, "refreshToken");
            if (!token) return {400, {}, R"({"title":"Bad Request","detail":"refreshToken is required"})"};
            const auto it = tokens.find(*token);
            const auto reject = [this] {
                ++counts.rejected_refreshes;
                return http_response{401, {}, R"({"title":"Unauthorized","detail":"invalid refresh token"})"};
            };
            if (it == tokens.end() || revoked_families.count(it->second.family) != 0) return reject();
            if (it->second.retired) {
                ++counts.reused_refresh_tokens;
                revoked_families[it->second.family] = true;
                return reject();
            }
            if (clock.now() >= it->second.expires) {
                ++counts.expired_refresh_tokens;
                return reject();
            }
            it->second.retired = true;
            ++counts.refreshes;
            return issue(it->second.family);
        }

        http_response issue(std::uint64_t family) {
            const std::int64_t now =
                std::chrono::duration_cast<std::chrono::seconds>(clock.wall_now().time_since_epoch()).count();
            std::string claims = R"({"sub":")" + config.user_name + "\"";
            if (config.jwt_has_iat) claims += ",\"iat\":" + std::to_string(now);
            if (config.jwt_has_exp) claims += ",\"exp\":" + std::to_string(now + config.jwt_lifetime.count());
            claims += ",\"jti\":\"" + std::to_string(++last_jti) + "\"}";
            const std::string jwt = detail::base64url_encode(R"({"alg":"HS256","typ":"JWT"})") + "." +
                                    detail::base64url_encode(claims) + ".c2lnbmF0dXJl";
            const std::string refresh_token = "rt-" + std::to_string(family) + "-" + std::to_string(last_jti);
            tokens[refresh_token] = {family, clock.now() + config.refresh_lifetime, false};
            newest_refresh_token = refresh_token;
            return {200, {{"Content-Type", "application/json"}},
                    R"({"jwt":")" + jwt + R"(","refreshToken":")" + refresh_token + R"(","extra":{"ignored":true}})"};
        }

        std::mutex mutex;
        manual_clock clock;
        settings config;
        statistics counts;
        std::map<std::string, refresh_record, std::less<>> tokens;
        std::map<std::uint64_t, bool> revoked_families;
        std::string newest_refresh_token;
        std::uint64_t last_family = 0;
        std::uint64_t last_jti = 0;
    };
    std::shared_ptr<state> state_;
};

}  // namespace tokmgr::testing
