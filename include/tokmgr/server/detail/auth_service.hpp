// tokmgr/server/detail/auth_service.hpp — what the reference server answers,
// independent of sockets: one parsed request in, one reply out. The
// connection layer (impl/connection.hpp) only moves bytes and keeps time, so
// every answer of the protocol is tested here without a network.
#pragma once

#include <simdjson.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

#include "../../protocol/refresh_registry.hpp"
#include "../../protocol/textual_api.hpp"
#include "../options.hpp"
#include "client_limits.hpp"
#include "crypto.hpp"
#include "jwt.hpp"
#include "reply.hpp"
#include "request_parser.hpp"
#include "settings.hpp"

namespace tokmgr::server::detail {

enum class request_kind { login, refresh, other };

inline request_kind kind_of(const parsed_request& request) noexcept {
    const auto path = request.path();
    if (path == protocol::login_path) return request_kind::login;
    if (path == protocol::refresh_path) return request_kind::refresh;
    return request_kind::other;
}

/// The reference server's refresh tokens: 256 random bits each, so guessing
/// one is hopeless (the spec asks for at least 128).
class refresh_registry : public protocol::refresh_registry<std::chrono::system_clock::time_point> {
public:
    explicit refresh_registry(std::size_t max_families = 100'000)
        : protocol::refresh_registry<std::chrono::system_clock::time_point>([] { return random_token(32); },
                                                                            max_families) {}
};

class auth_service {
public:
    auth_service(const server_options& options, settings resolved)
        : settings_(std::move(resolved)),
          users_(options.users),
          api_key_(options.api_key),
          clock_(options.clock),
          limits_(client_limits_config{options.max_connections, options.max_connections_per_client,
                                        settings_.auth_rpm_limit}),
          registry_(options.max_token_families) {
        if (!clock_) clock_ = [] { return std::chrono::system_clock::now(); };
    }

    auth_service(const auth_service&) = delete;
    auth_service& operator=(const auth_service&) = delete;

    /// The answer to one complete request from the client at address
    /// `client` (whose auth requests are rate-limited together). Thread-safe.
    reply handle(const parsed_request& request, std::string_view client = {}) {
        reply r = route(request, client);
        if (!request.keep_alive) r.close = true;
        return r;
    }

    // ---- Bookkeeping called by the connection layer -----------------------

    /// Marks a request as open from when it is fully received until its
    /// answer is written, so overlapping refreshes show up in the statistics.
    void request_started(request_kind kind) noexcept {
        if (kind == request_kind::other) return;
        raise_max(max_auth_in_flight_, ++auth_in_flight_);
        if (kind == request_kind::refresh) raise_max(max_refresh_in_flight_, ++refresh_in_flight_);
    }
    void request_finished(request_kind kind) noexcept {
        if (kind == request_kind::other) return;
        --auth_in_flight_;
        if (kind == request_kind::refresh) --refresh_in_flight_;
    }
    void count_answer() noexcept { ++requests_; }
    void count_connection() noexcept { ++connections_; }
    void count_timeout() noexcept { ++timeouts_; }
    void count_refused_connection() noexcept { ++connections_refused_; }
    void count_malformed() noexcept { ++malformed_; }

    /// Connection caps and the auth rate limit, shared by every connection.
    client_limits& limits() noexcept { return limits_; }

    server_stats stats() const {
        server_stats s;
        s.connections = connections_;
        s.connections_timed_out = timeouts_;
        s.connections_refused = connections_refused_;
        s.logins_refused_full = logins_refused_full_;
        s.auth_requests_limited = auth_limited_;
        s.requests_malformed = malformed_;
        s.unsupported_media_type = unsupported_media_;
        s.requests = requests_;
        s.logins = logins_;
        s.logins_rejected = logins_rejected_;
        s.refreshes = refreshes_;
        s.refreshes_rejected = refreshes_rejected_;
        s.refresh_tokens_reused = reused_;
        s.refresh_tokens_expired = refresh_expired_;
        s.refresh_tokens_unknown = refresh_unknown_;
        s.refresh_tokens_revoked = refresh_revoked_;
        {
            std::lock_guard<std::mutex> lock(registry_mutex_);
            s.families_revoked = registry_.families_revoked();
        }
        s.resources_served = resources_served_;
        s.api_key_requests = api_key_requests_;
        s.unauthorized = unauthorized_;
        s.expired_jwts_presented = expired_jwts_;
        s.invalid_jwts_presented = invalid_jwts_;
        s.revoked_jwts_presented = revoked_jwts_presented_;
        s.max_refreshes_in_flight = max_refresh_in_flight_;
        s.max_auth_requests_in_flight = max_auth_in_flight_;
        return s;
    }

    const settings& resolved() const noexcept { return settings_; }

    /// From now on `jwt` opens nothing (401), though well signed and
    /// unexpired: what a server that revokes a session does. For tests of
    /// how clients handle a 401; not reachable over HTTP.
    void revoke_jwt(std::string_view jwt) {
        std::lock_guard<std::mutex> lock(revoked_mutex_);
        revoked_jwts_.emplace(jwt);
        any_revoked_.store(true, std::memory_order_release);
    }

private:
    using counter = std::atomic<std::uint64_t>;

    static void raise_max(counter& max, std::uint64_t value) noexcept {
        auto seen = max.load(std::memory_order_relaxed);
        while (seen < value && !max.compare_exchange_weak(seen, value, std::memory_order_relaxed)) {
        }
    }

    reply route(const parsed_request& request, std::string_view client) {
        const auto kind = kind_of(request);
        if (kind != request_kind::other) {
            // Counted before anything else, so that no answer (not even a 400)
            // lets a client make unlimited guesses.
            std::chrono::seconds retry_after{0};
            if (!limits_.admit_auth_request(client, client_limits::clock::now(), retry_after)) {
                ++auth_limited_;
                reply r = error_reply(429, "too many login and token_refresh requests from this address: retry "
                                           "after the number of seconds in Retry-After");
                r.headers.push_back({"Retry-After", std::to_string(retry_after.count())});
                return r;
            }
            if (request.method != "POST") {
                reply r = error_reply(405, "this endpoint accepts POST only");
                r.headers.push_back({"Allow", "POST"});
                return r;
            }
            if (!is_json_media_type(find_header(request.headers, "Content-Type"))) {
                ++unsupported_media_;
                reply r = error_reply(415, "send the body with Content-Type: application/json");
                r.headers.push_back({"Accept-Post", "application/json"});
                return r;
            }
            return kind == request_kind::login ? login(request.body) : refresh(request.body);
        }
        if (request.path().substr(0, protocol::api_prefix.size()) == protocol::api_prefix) return resource(request);
        return error_reply(404, "no such resource: the API lives under /api/");
    }

    /// `application/json`, any case, optionally with parameters (a charset).
    static bool is_json_media_type(std::optional<std::string_view> value) {
        if (!value) return false;
        const auto media_type = tokmgr::detail::http_chars::trim_ows(value->substr(0, value->find(';')));
        return tokmgr::detail::iequals(media_type, "application/json");
    }

    /// Parses `body` as a JSON object and reads one string member; on failure
    /// sets `failure` to the 400 answer (which names the field, never its value).
    static bool string_field(simdjson::dom::object object, std::string_view name, std::string_view& value,
                             reply& failure) {
        simdjson::dom::element element;
        if (object.at_key(name).get(element) != simdjson::SUCCESS) {
            failure = error_reply(400, "the request body lacks the string field \"" + std::string(name) + "\"");
            return false;
        }
        if (element.get_string().get(value) != simdjson::SUCCESS) {
            failure = error_reply(400, "the field \"" + std::string(name) + "\" must be a string");
            return false;
        }
        return true;
    }

    static bool parse_object(const std::string& body, const std::string& expected, simdjson::dom::object& object,
                             reply& failure) {
        if (body.empty()) {
            failure = error_reply(400, "the request body is empty: send " + expected);
            return false;
        }
        simdjson::dom::element doc;
        if (json_parser().parse(body).get(doc) != simdjson::SUCCESS) {
            failure = error_reply(400, "the request body is not valid JSON: send " + expected);
            return false;
        }
        if (doc.get_object().get(object) != simdjson::SUCCESS) {
            failure = error_reply(400, "the request body must be a JSON object: send " + expected);
            return false;
        }
        return true;
    }

    reply login(const std::string& body) {
        simdjson::dom::object object;
        std::string_view user, password;
        reply failure;
        if (!parse_object(body, protocol::request_shape(protocol::call::login), object, failure) ||
            !string_field(object, protocol::field::user_name, user, failure) ||
            !string_field(object, protocol::field::password, password, failure))
            return failure;

        const auto account = users_.find(user);
        // Compare against something even for an unknown user, so the answer
        // time does not tell which user names exist.
        const std::string_view expected = account != users_.end() ? account->second.reveal() : std::string_view();
        const bool password_ok = tokmgr::detail::constant_time_equal(expected, password);
        if (account == users_.end() || !password_ok) {
            ++logins_rejected_;
            return error_reply(401, "the user name or password is wrong");
        }
        const auto now = clock_();
        std::string refresh_token;
        {
            std::lock_guard<std::mutex> lock(registry_mutex_);
            refresh_token = registry_.issue(user, now, settings_.refresh_ttl);
        }
        if (refresh_token.empty()) {
            ++logins_refused_full_;
            reply r = error_reply(503, "the server remembers as many logins as it may: retry later");
            r.headers.push_back({"Retry-After", "60"});
            return r;
        }
        ++logins_;
        return token_reply(std::string(user), now, std::move(refresh_token));
    }

    reply refresh(const std::string& body) {
        simdjson::dom::object object;
        std::string_view token;
        reply failure;
        if (!parse_object(body, protocol::request_shape(protocol::call::refresh), object, failure) ||
            !string_field(object, protocol::field::refresh_token, token, failure))
            return failure;

        const auto now = clock_();
        refresh_registry::rotation rotation;
        {
            std::lock_guard<std::mutex> lock(registry_mutex_);
            rotation = registry_.rotate(token, now, settings_.refresh_ttl);
        }
        switch (rotation.outcome) {
        case refresh_registry::result::rotated:
            ++refreshes_;
            return token_reply(std::move(rotation.user), now, std::move(rotation.new_token));
        case refresh_registry::result::reused:
            ++reused_;
            ++refreshes_rejected_;
            return error_reply(401, "the refresh token was already used; every token of this login is now "
                                    "revoked: log in again");
        case refresh_registry::result::revoked:
            ++refresh_revoked_;
            ++refreshes_rejected_;
            return error_reply(401, "the refresh token was revoked: log in again");
        case refresh_registry::result::expired:
            ++refresh_expired_;
            ++refreshes_rejected_;
            return error_reply(401, "the refresh token has expired: log in again");
        case refresh_registry::result::unknown:
            break;
        }
        ++refresh_unknown_;
        ++refreshes_rejected_;
        return error_reply(401, "the refresh token is not known to this server: log in again");
    }

    reply token_reply(std::string user, std::chrono::system_clock::time_point now, std::string refresh_token) {
        jwt_fields fields;
        fields.subject = std::move(user);
        fields.issued_at = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
        fields.expires_at = fields.issued_at + settings_.jwt_ttl.count();
        fields.id = random_token(16);
        reply r;
        std::string jwt = sign_hs256(settings_.signing_key.reveal(), fields);
        r.body = protocol::token_response_json(jwt, refresh_token);
        tokmgr::detail::secure_clear(jwt);
        tokmgr::detail::secure_clear(refresh_token);
        // RFC 6749 §5.1: token responses must not be cached.
        r.headers.push_back({"Cache-Control", "no-store"});
        return r;
    }

    reply resource(const parsed_request& request) {
        const auto authorization = find_header(request.headers, "Authorization");
        std::string user;
        reply denied;
        if (!authorization || !authorize(*authorization, user, denied)) {
            ++unauthorized_;
            if (!authorization)
                denied = error_reply(401, "send Authorization: " + std::string(protocol::bearer_scheme) + " <jwt> (from " +
                                              std::string(protocol::login_path) + ") or the API key");
            denied.headers.push_back({"WWW-Authenticate", std::string(protocol::bearer_scheme)});
            return denied;
        }
        ++resources_served_;
        reply r;
        r.body = "{\"resource\":";
        append_json_string(r.body, request.path());
        r.body += ",\"user\":";
        append_json_string(r.body, user);
        r.body += '}';
        return r;
    }

    bool authorize(std::string_view value, std::string& user, reply& denied) {
        const std::string_view scheme = protocol::bearer_scheme;
        if (value.size() > scheme.size() + 1 && tokmgr::detail::iequals(value.substr(0, scheme.size()), scheme) &&
            value[scheme.size()] == ' ') {
            auto token = value.substr(scheme.size() + 1);
            while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
            const double now = std::chrono::duration<double>(clock_().time_since_epoch()).count();
            auto check = verify_hs256(token, settings_.signing_key.reveal(), now);
            switch (check.status) {
            case jwt_status::valid:
                if (is_revoked(token)) {
                    ++revoked_jwts_presented_;
                    denied = error_reply(401, "the JWT was revoked: refresh it");
                    return false;
                }
                user = std::move(check.subject);
                return true;
            case jwt_status::expired:
                ++expired_jwts_;
                denied = error_reply(401, "the JWT has expired: refresh it");
                return false;
            case jwt_status::unsupported_algorithm:
                ++invalid_jwts_;
                denied = error_reply(401, "the JWT is not signed with HS256");
                return false;
            case jwt_status::bad_signature:
                ++invalid_jwts_;
                denied = error_reply(401, "the JWT's signature does not verify");
                return false;
            case jwt_status::malformed:
                break;
            }
            ++invalid_jwts_;
            denied = error_reply(401, "the JWT is malformed");
            return false;
        }
        if (!api_key_.empty() && tokmgr::detail::constant_time_equal(value, api_key_.reveal())) {
            ++api_key_requests_;
            user = "api-key";
            return true;
        }
        denied = error_reply(401, "the Authorization header holds neither a valid JWT nor the API key");
        return false;
    }

    bool is_revoked(std::string_view jwt) const {
        if (!any_revoked_.load(std::memory_order_acquire)) return false;
        std::lock_guard<std::mutex> lock(revoked_mutex_);
        return revoked_jwts_.find(jwt) != revoked_jwts_.end();
    }

    settings settings_;
    std::map<std::string, secret, std::less<>> users_;
    secret api_key_;
    std::function<std::chrono::system_clock::time_point()> clock_;

    client_limits limits_;
    mutable std::mutex registry_mutex_;
    refresh_registry registry_;

    counter connections_{0}, timeouts_{0}, requests_{0}, connections_refused_{0}, malformed_{0};
    counter logins_refused_full_{0}, auth_limited_{0}, unsupported_media_{0};
    counter logins_{0}, logins_rejected_{0}, refreshes_{0}, refreshes_rejected_{0};
    counter reused_{0}, refresh_expired_{0}, refresh_unknown_{0}, refresh_revoked_{0};
    counter resources_served_{0}, api_key_requests_{0}, unauthorized_{0}, expired_jwts_{0}, invalid_jwts_{0};
    counter revoked_jwts_presented_{0};
    mutable std::mutex revoked_mutex_;
    std::set<std::string, std::less<>> revoked_jwts_;
    std::atomic<bool> any_revoked_{false};
    counter auth_in_flight_{0}, refresh_in_flight_{0}, max_auth_in_flight_{0}, max_refresh_in_flight_{0};
};

}  // namespace tokmgr::server::detail
