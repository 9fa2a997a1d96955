// The reference server's answers, tested without sockets: the request parser,
// HS256 JWTs, refresh-token rotation and reuse detection, lifetimes and their
// environment variables, and every error status of the protocol.
#include <tokmgr/server/detail/auth_service.hpp>  // first: proves it is self-contained

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdlib>
#include <optional>
#include <set>
#include <string>

#include <tokmgr/server/detail/request_parser.hpp>

using namespace tokmgr::server;
using namespace tokmgr::server::detail;
using namespace std::chrono_literals;

namespace {

struct parsed_tokens {
    std::string jwt, refresh_token;
};

simdjson::dom::element parse_json(const std::string& text) {
    static thread_local simdjson::dom::parser parser;
    simdjson::dom::element doc;
    REQUIRE(parser.parse(text).get(doc) == simdjson::SUCCESS);
    return doc;
}

parsed_tokens tokens_of(const reply& r) {
    REQUIRE(r.status == 200);
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    REQUIRE(parser.parse(r.body).get(doc) == simdjson::SUCCESS);
    std::string_view jwt, refresh;
    REQUIRE(doc["jwt"].get_string().get(jwt) == simdjson::SUCCESS);
    REQUIRE(doc["refreshToken"].get_string().get(refresh) == simdjson::SUCCESS);
    return {std::string(jwt), std::string(refresh)};
}

/// The JWT's payload as JSON text.
std::string payload_of(const std::string& jwt) {
    const auto dot1 = jwt.find('.');
    const auto dot2 = jwt.find('.', dot1 + 1);
    auto decoded = tokmgr::detail::base64url_decode(std::string_view(jwt).substr(dot1 + 1, dot2 - dot1 - 1));
    REQUIRE(decoded);
    return *decoded;
}

std::int64_t claim(const std::string& jwt, const char* name) {
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    REQUIRE(parser.parse(payload_of(jwt)).get(doc) == simdjson::SUCCESS);
    std::int64_t value = 0;
    REQUIRE(doc[name].get_int64().get(value) == simdjson::SUCCESS);
    return value;
}

/// POSTs carry Content-Type: application/json unless `headers` are given.
parsed_request make_request(std::string method, std::string target, std::string body = {},
                            std::optional<std::vector<tokmgr::http_header>> headers = std::nullopt) {
    if (!headers) {
        headers.emplace();
        if (method == "POST") headers->push_back({"Content-Type", "application/json"});
    }
    parsed_request r;
    r.method = std::move(method);
    r.target = std::move(target);
    r.body = std::move(body);
    r.headers = std::move(*headers);
    return r;
}

/// An auth service on a hand-driven wall clock, with one user and an API key.
struct fixture {
    std::chrono::system_clock::time_point now = std::chrono::system_clock::time_point(1'800'000'000s);
    std::unique_ptr<auth_service> service;

    explicit fixture(std::chrono::seconds jwt_ttl = 60s, std::chrono::seconds refresh_ttl = 600s) {
        server_options options;
        options.users.emplace("alice", tokmgr::secret("wonderland"));
        options.users.emplace("bob", tokmgr::secret("builder"));
        options.api_key = tokmgr::secret("key-123");
        options.jwt_ttl = jwt_ttl;
        options.refresh_ttl = refresh_ttl;
        options.signing_secret = tokmgr::secret("test signing key");
        options.clock = [this] { return now; };
        settings resolved;
        tokmgr::error_info error;
        REQUIRE(resolve_settings(options, resolved, error));
        service = std::make_unique<auth_service>(options, std::move(resolved));
    }

    reply login(const std::string& user, const std::string& password) {
        return service->handle(make_request("POST", "/api/auth/login",
                                            R"({"userName":")" + user + R"(","password":")" + password + R"("})"));
    }
    reply refresh(const std::string& token) {
        return service->handle(make_request("POST", "/api/auth/token_refresh", R"({"refreshToken":")" + token + "\"}"));
    }
    reply get(const std::string& target, std::string authorization) {
        std::vector<tokmgr::http_header> headers;
        if (!authorization.empty()) headers.push_back({"Authorization", std::move(authorization)});
        return service->handle(make_request("GET", target, {}, std::move(headers)));
    }
};

void check_error_body(const reply& r, int status) {
    CHECK(r.status == status);
    auto doc = parse_json(r.body);
    std::string_view title, detail;
    CHECK(doc["title"].get_string().get(title) == simdjson::SUCCESS);
    CHECK(doc["detail"].get_string().get(detail) == simdjson::SUCCESS);
    CHECK(title == reason_phrase(status));
    CHECK_FALSE(detail.empty());
}

struct scoped_env {
    std::string name;
    scoped_env(const char* n, const char* value) : name(n) {
        if (value) ::setenv(n, value, 1);
        else ::unsetenv(n);
    }
    ~scoped_env() { ::unsetenv(name.c_str()); }
};

}  // namespace

// ---- Request parser ---------------------------------------------------------

TEST_CASE("parser: a complete request with a body, and one arriving in pieces") {
    const std::string wire = "POST /api/auth/login?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
    parsed_request request;
    request_limits limits;
    for (std::size_t cut = 0; cut < wire.size(); ++cut)
        CHECK(parse_request(std::string_view(wire).substr(0, cut), request, limits).state == parse_state::incomplete);
    const auto outcome = parse_request(wire, request, limits);
    REQUIRE(outcome.state == parse_state::complete);
    CHECK(outcome.consumed == wire.size());
    CHECK(request.method == "POST");
    CHECK(request.path() == "/api/auth/login");
    CHECK(request.body == "hello");
    CHECK(request.keep_alive);
}

TEST_CASE("parser: pipelined requests are consumed one at a time") {
    const std::string first = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
    const std::string second = "GET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    parsed_request request;
    const auto outcome = parse_request(first + second, request, {});
    REQUIRE(outcome.state == parse_state::complete);
    CHECK(outcome.consumed == first.size());
    CHECK(request.target == "/a");
    REQUIRE(parse_request(second, request, {}).state == parse_state::complete);
    CHECK_FALSE(request.keep_alive);
}

TEST_CASE("parser: HTTP/1.0 closes unless asked to keep alive, and needs no Host") {
    parsed_request request;
    REQUIRE(parse_request("GET / HTTP/1.0\r\n\r\n", request, {}).state == parse_state::complete);
    CHECK_FALSE(request.keep_alive);
    REQUIRE(parse_request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", request, {}).state ==
            parse_state::complete);
    CHECK(request.keep_alive);
}

TEST_CASE("parser: malformed framing fails with the right status") {
    struct row {
        const char* wire;
        int status;
    };
    const row rows[] = {
        {"GET /\r\n\r\n", 400},
        {"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\n\r\n", 400},  // no Host
        {"GET http://x/ HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"GET / HTTX/1.1\r\nHost: h\r\n\r\n", 400},
        {"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505},
        {"GET / HTTP/1.1\r\nHost h\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
    };
    for (const auto& r : rows) {
        CAPTURE(r.wire);
        parsed_request request;
        const auto outcome = parse_request(r.wire, request, {});
        CHECK(outcome.state == parse_state::failed);
        CHECK(outcome.status == r.status);
        CHECK_FALSE(outcome.reason.empty());
    }
}

TEST_CASE("parser: an oversized body is refused from its headers alone; oversized headers too") {
    parsed_request request;
    request_limits limits;
    limits.max_body_bytes = 64 * 1024;
    auto outcome = parse_request("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 65537\r\n\r\n", request, limits);
    CHECK(outcome.state == parse_state::failed);
    CHECK(outcome.status == 413);
    outcome = parse_request("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 65536\r\n\r\n", request, limits);
    CHECK(outcome.state == parse_state::incomplete);

    const std::string endless = "GET / HTTP/1.1\r\nX: " + std::string(limits.max_header_bytes, 'a');
    outcome = parse_request(endless, request, limits);
    CHECK(outcome.state == parse_state::failed);
    CHECK(outcome.status == 431);
}

TEST_CASE("parser: a line ending in a bare LF or a bare CR answers 400 at once, wherever it is") {
    for (const char* wire : {"GET / HTTP/1.1\nHost: h\r\n\r\n", "GET / HTTP/1.1\r\nHost: h\n\r\n",
                             "GET / HTTP/1.1\r\nHost: h\r\n\n", "\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
                             "GET / HTTP/1.1\rHost: h\r\n\r\n", "GET / HTTP/1.1\r\nX: a\rb\r\nHost: h\r\n\r\n"}) {
        CAPTURE(wire);
        parsed_request request;
        const auto outcome = parse_request(wire, request, {});
        CHECK(outcome.state == parse_state::failed);
        CHECK(outcome.status == 400);
    }
    // Without the blank line: the verdict comes at the bare LF, not at a timeout.
    parsed_request request;
    CHECK(parse_request("GET / HTTP/1.1\nHost: h\n", request, {}).state == parse_state::failed);
}

TEST_CASE("parser: empty lines before the request line are few and count against the head cap") {
    const std::string request_text = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    request_limits limits;
    parsed_request request;
    std::string wire;
    for (std::size_t n = 0; n <= limits.max_leading_empty_lines; ++n) {
        CAPTURE(n);
        const auto outcome = parse_request(wire + request_text, request, limits);
        REQUIRE(outcome.state == parse_state::complete);
        CHECK(outcome.consumed == wire.size() + request_text.size());
        CHECK(request.target == "/");
        wire += "\r\n";
    }
    auto outcome = parse_request(wire + request_text, request, limits);
    CHECK(outcome.state == parse_state::failed);
    CHECK(outcome.status == 400);
    // A flood of CR LF ends after a few lines, long before the head cap.
    outcome = parse_request(std::string(1 << 20, '\r').replace(1, std::string::npos, std::string((1 << 20) - 1, '\n')),
                            request, limits);
    CHECK(outcome.state == parse_state::failed);
    std::string flood;
    for (int i = 0; i < 100'000; ++i) flood += "\r\n";
    outcome = parse_request(flood, request, limits);
    CHECK(outcome.state == parse_state::failed);
    CHECK(outcome.status == 400);

    // They count against the cap: a head that fits only without them is refused.
    request_limits tight;
    tight.max_header_bytes = request_text.size();
    CHECK(parse_request(request_text, request, tight).state == parse_state::complete);
    outcome = parse_request("\r\n" + request_text, request, tight);
    CHECK(outcome.state == parse_state::failed);
    CHECK(outcome.status == 431);
}

TEST_CASE("parser: the head cap's verdict does not depend on how the bytes arrive") {
    request_limits limits;
    const std::string start = "GET / HTTP/1.1\r\nHost: h\r\nX: ";
    const std::string end = "\r\n\r\n";
    for (std::size_t total : {limits.max_header_bytes - 1, limits.max_header_bytes, limits.max_header_bytes + 1}) {
        CAPTURE(total);
        const std::string wire = start + std::string(total - start.size() - end.size(), 'a') + end;
        parsed_request whole_request;
        const auto whole = parse_request(wire, whole_request, limits);
        CHECK(whole.state == (total <= limits.max_header_bytes ? parse_state::complete : parse_state::failed));
        // The same bytes with the last 1..4 arriving late, and byte by byte.
        for (std::size_t late = 1; late <= 4; ++late) {
            CAPTURE(late);
            request_reader reader(limits);
            parsed_request request;
            auto first = reader.parse(std::string_view(wire).substr(0, wire.size() - late), request);
            if (first.state == parse_state::failed) {
                CHECK(whole.state == parse_state::failed);
                continue;
            }
            REQUIRE(first.state == parse_state::incomplete);
            const auto second = reader.parse(wire, request);
            CHECK(second.state == whole.state);
            CHECK(second.status == whole.status);
        }
        request_reader reader(limits);
        parsed_request request;
        parse_outcome last;
        for (std::size_t n = 1; n <= wire.size(); ++n) {
            last = reader.parse(std::string_view(wire).substr(0, n), request);
            if (last.state != parse_state::incomplete) break;
        }
        CHECK(last.state == whole.state);
        CHECK(last.status == whole.status);
    }
}

TEST_CASE("parser: a request trickled byte by byte is scanned once, and pipelining still works") {
    const std::string first = "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc";
    const std::string second = "GET /b HTTP/1.1\r\nHost: h\r\n\r\n";
    const std::string wire = first + second;
    request_reader reader;
    parsed_request request;
    std::string buffer;
    std::vector<std::string> targets;
    for (char c : wire) {
        buffer += c;
        for (;;) {
            const auto outcome = reader.parse(buffer, request);
            REQUIRE(outcome.state != parse_state::failed);
            if (outcome.state == parse_state::incomplete) break;
            targets.push_back(request.target + ":" + request.body);
            buffer.erase(0, outcome.consumed);
        }
    }
    CHECK(targets == std::vector<std::string>{"/a:abc", "/b:"});
    CHECK(buffer.empty());
}

// ---- JWTs -------------------------------------------------------------------

TEST_CASE("jwt: HS256 tokens verify under their key until exp, and only then") {
    jwt_fields fields{"alice \"quoted\"", 1000, 1060, "id-1"};
    const std::string token = sign_hs256("key", fields);
    auto check = verify_hs256(token, "key", 1059.9);
    CHECK(check.status == jwt_status::valid);
    CHECK(check.subject == "alice \"quoted\"");
    CHECK(verify_hs256(token, "key", 1060.0).status == jwt_status::expired);
    CHECK(verify_hs256(token, "other key", 1000).status == jwt_status::bad_signature);

    // The header is {"alg":"HS256","typ":"JWT"}, as RFC 7519 §3.1 shows it.
    const auto header = tokmgr::detail::base64url_decode(token.substr(0, token.find('.')));
    REQUIRE(header);
    CHECK(*header == R"({"alg":"HS256","typ":"JWT"})");
}

TEST_CASE("jwt: tampering, alg none and garbage are refused") {
    const std::string token = sign_hs256("key", {"alice", 1000, 1060, "id"});
    const auto dot1 = token.find('.'), dot2 = token.rfind('.');
    const std::string forged_payload = tokmgr::detail::base64url_encode(R"({"sub":"root","exp":99999999999})");
    CHECK(verify_hs256(token.substr(0, dot1 + 1) + forged_payload + token.substr(dot2), "key", 1000).status ==
          jwt_status::bad_signature);

    const std::string none = tokmgr::detail::base64url_encode(R"({"alg":"none","typ":"JWT"})") + "." +
                             token.substr(dot1 + 1, dot2 - dot1 - 1) + ".";
    CHECK(verify_hs256(none, "key", 1000).status == jwt_status::unsupported_algorithm);
    const std::string rs = tokmgr::detail::base64url_encode(R"({"alg":"RS256"})") + token.substr(dot1);
    CHECK(verify_hs256(rs, "key", 1000).status == jwt_status::unsupported_algorithm);

    for (const char* garbage : {"", "a.b", "a.b.c.d", "!!.??.**", "e30.e30.", "bm90IGpzb24.e30.e30"})
        CHECK(verify_hs256(garbage, "key", 1000).status == jwt_status::malformed);
}

TEST_CASE("jwt: only the canonical spelling verifies: no padding, no stray bits in the last character") {
    const std::string token = sign_hs256("key", {"alice", 1000, 1060, "id"});
    REQUIRE(verify_hs256(token, "key", 1000).status == jwt_status::valid);
    const auto dot2 = token.rfind('.');
    // A 32-byte HMAC is 43 characters: the last carries 2 unused bits.
    const std::string signature = token.substr(dot2 + 1);
    REQUIRE(signature.size() == 43);
    const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const auto last = alphabet.find(signature.back());
    for (std::size_t stray = 1; stray < 4; ++stray) {
        std::string respelled = token;
        respelled.back() = alphabet[last ^ stray];
        CAPTURE(respelled);
        CHECK(tokmgr::detail::base64url_decode(std::string_view(respelled).substr(dot2 + 1)) ==
              tokmgr::detail::base64url_decode(signature));  // the same bytes, spelled otherwise
        CHECK(verify_hs256(respelled, "key", 1000).status == jwt_status::malformed);
    }
    CHECK(verify_hs256(token + "=", "key", 1000).status == jwt_status::malformed);
    const auto dot1 = token.find('.');
    CHECK(verify_hs256(token.substr(0, dot1) + "=" + token.substr(dot1), "key", 1000).status == jwt_status::malformed);

    CHECK(tokmgr::detail::base64url_decode_canonical("") == std::optional<std::string>(""));
    CHECK(tokmgr::detail::base64url_decode_canonical("QQ") == std::optional<std::string>("A"));
    CHECK_FALSE(tokmgr::detail::base64url_decode_canonical("QR"));
    CHECK_FALSE(tokmgr::detail::base64url_decode_canonical("QQ=="));
    CHECK(tokmgr::detail::base64url_decode_canonical("QUI") == std::optional<std::string>("AB"));
    CHECK_FALSE(tokmgr::detail::base64url_decode_canonical("QUJ"));
}

// ---- Login ------------------------------------------------------------------

TEST_CASE("login answers a JWT with sub, iat, exp = iat + lifetime and a unique jti, and an opaque refresh token") {
    fixture f(90s);
    const reply r = f.login("alice", "wonderland");
    const auto tokens = tokens_of(r);
    CHECK(tokmgr::find_header(r.headers, "Cache-Control") == std::optional<std::string_view>("no-store"));
    const auto issued_at = claim(tokens.jwt, "iat");
    CHECK(issued_at == 1'800'000'000);
    CHECK(claim(tokens.jwt, "exp") - issued_at == 90);
    auto payload = parse_json(payload_of(tokens.jwt));
    std::string_view sub, jti;
    REQUIRE(payload["sub"].get_string().get(sub) == simdjson::SUCCESS);
    CHECK(sub == "alice");
    REQUIRE(payload["jti"].get_string().get(jti) == simdjson::SUCCESS);

    // At least 128 random bits, and nothing in it that looks like a JWT.
    const auto raw = tokmgr::detail::base64url_decode(tokens.refresh_token);
    REQUIRE(raw);
    CHECK(raw->size() >= 16);
    CHECK(tokens.refresh_token.find('.') == std::string::npos);

    std::set<std::string> ids{std::string(jti)};
    for (int i = 0; i < 20; ++i) {
        const auto more = tokens_of(f.login("alice", "wonderland"));
        auto doc = parse_json(payload_of(more.jwt));
        std::string_view id;
        REQUIRE(doc["jti"].get_string().get(id) == simdjson::SUCCESS);
        CHECK(ids.insert(std::string(id)).second);
    }
    CHECK(f.service->stats().logins == 21);
}

TEST_CASE("login refuses wrong credentials with 401 and never echoes the password") {
    fixture f;
    for (auto [user, password] : {std::pair{"alice", "builder"}, std::pair{"carol", "wonderland"},
                                  std::pair{"alice", ""}, std::pair{"", ""}}) {
        const reply r = f.login(user, password);
        check_error_body(r, 401);
        if (*password) CHECK(r.body.find(password) == std::string::npos);
    }
    CHECK(f.service->stats().logins_rejected == 4);
    CHECK(f.service->stats().logins == 0);
}

TEST_CASE("bad request bodies answer 400 with a JSON error that does not echo them") {
    fixture f;
    const char* login_bodies[] = {
        "",
        "{",
        "not json",
        R"(["userName","password"])",
        R"({"password":"s3cret-pw"})",
        R"({"userName":"alice"})",
        R"({"userName":42,"password":"s3cret-pw"})",
        R"({"userName":"alice","password":null})",
        R"({"userName":"alice","password":"s3cret-pw")",
    };
    for (const char* body : login_bodies) {
        CAPTURE(body);
        const reply r = f.service->handle(make_request("POST", "/api/auth/login", body));
        check_error_body(r, 400);
        CHECK(r.body.find("s3cret-pw") == std::string::npos);
    }
    for (const char* body : {"", "[]", "{}", R"({"refreshToken":7})", R"({"refresh_token":"x"})"}) {
        CAPTURE(body);
        check_error_body(f.service->handle(make_request("POST", "/api/auth/token_refresh", body)), 400);
    }
}

TEST_CASE("wrong methods answer 405 with Allow, unknown paths 404") {
    fixture f;
    for (const char* method : {"GET", "PUT", "DELETE"}) {
        for (const char* target : {"/api/auth/login", "/api/auth/token_refresh"}) {
            const reply r = f.service->handle(make_request(method, target));
            check_error_body(r, 405);
            CHECK(tokmgr::find_header(r.headers, "Allow") == std::optional<std::string_view>("POST"));
        }
    }
    check_error_body(f.service->handle(make_request("GET", "/")), 404);
    check_error_body(f.service->handle(make_request("POST", "/login")), 404);
    check_error_body(f.service->handle(make_request("GET", "/apix/datasets")), 404);
}

// ---- Refresh ----------------------------------------------------------------

TEST_CASE("refresh rotates: a new pair each time, the old refresh token retired") {
    fixture f;
    auto pair = tokens_of(f.login("alice", "wonderland"));
    for (int i = 0; i < 5; ++i) {
        f.now += 1s;
        const auto next = tokens_of(f.refresh(pair.refresh_token));
        CHECK(next.refresh_token != pair.refresh_token);
        CHECK(next.jwt != pair.jwt);
        CHECK(claim(next.jwt, "iat") == claim(pair.jwt, "iat") + 1);
        pair = next;
    }
    const auto s = f.service->stats();
    CHECK(s.refreshes == 5);
    CHECK(s.refresh_tokens_reused == 0);
}

TEST_CASE("presenting a retired refresh token answers 401 and revokes its whole family, and only it") {
    fixture f;
    const auto first = tokens_of(f.login("alice", "wonderland"));
    const auto other_family = tokens_of(f.login("alice", "wonderland"));
    const auto second = tokens_of(f.refresh(first.refresh_token));

    check_error_body(f.refresh(first.refresh_token), 401);  // reuse
    auto s = f.service->stats();
    CHECK(s.refresh_tokens_reused == 1);
    CHECK(s.families_revoked == 1);

    check_error_body(f.refresh(second.refresh_token), 401);  // the descendant is revoked too
    CHECK(f.service->stats().refresh_tokens_revoked == 1);

    const auto still_fine = tokens_of(f.refresh(other_family.refresh_token));
    CHECK_FALSE(still_fine.jwt.empty());

    // JWTs already issued stay valid until they expire: they are not tracked.
    CHECK(f.get("/api/datasets", "Bearer " + second.jwt).status == 200);
}

TEST_CASE("unknown and expired refresh tokens answer 401") {
    fixture f(60s, 600s);
    check_error_body(f.refresh("never-issued"), 401);
    CHECK(f.service->stats().refresh_tokens_unknown == 1);

    const auto pair = tokens_of(f.login("bob", "builder"));
    f.now += 599s;
    const auto next = tokens_of(f.refresh(pair.refresh_token));  // still valid at 599 s
    f.now += 600s;
    check_error_body(f.refresh(next.refresh_token), 401);  // a lifetime after its issue
    const auto s = f.service->stats();
    CHECK(s.refresh_tokens_expired == 1);
    CHECK(s.refreshes_rejected == 2);
}

// ---- Protected resources ----------------------------------------------------

TEST_CASE("protected resources: a valid JWT until exp, the API key, and 401 otherwise") {
    fixture f(30s);
    const auto pair = tokens_of(f.login("alice", "wonderland"));

    const reply ok = f.get("/api/datasets?page=2", "Bearer " + pair.jwt);
    REQUIRE(ok.status == 200);
    auto doc = parse_json(ok.body);
    std::string_view user;
    REQUIRE(doc["user"].get_string().get(user) == simdjson::SUCCESS);
    CHECK(user == "alice");
    CHECK(f.get("/api/datasets", "bearer " + pair.jwt).status == 200);  // the scheme ignores case
    CHECK(f.get("/api/datasets", "key-123").status == 200);

    const reply missing = f.get("/api/datasets", "");
    check_error_body(missing, 401);
    CHECK(tokmgr::find_header(missing.headers, "WWW-Authenticate") == std::optional<std::string_view>("Bearer"));
    check_error_body(f.get("/api/datasets", "key-124"), 401);
    check_error_body(f.get("/api/datasets", "Bearer key-123"), 401);
    check_error_body(f.get("/api/datasets", pair.jwt), 401);  // a JWT needs its scheme

    f.now += 29s;
    CHECK(f.get("/api/datasets", "Bearer " + pair.jwt).status == 200);
    f.now += 1s;
    check_error_body(f.get("/api/datasets", "Bearer " + pair.jwt), 401);

    const auto s = f.service->stats();
    CHECK(s.resources_served == 4);
    CHECK(s.api_key_requests == 1);
    CHECK(s.expired_jwts_presented == 1);
    CHECK(s.invalid_jwts_presented == 1);
    CHECK(s.unauthorized == 5);
}

TEST_CASE("a revoked JWT answers 401 with WWW-Authenticate though well signed and unexpired; others still open") {
    fixture f(30s);
    const auto first = tokens_of(f.login("alice", "wonderland"));
    const auto second = tokens_of(f.login("alice", "wonderland"));
    f.service->revoke_jwt(first.jwt);
    const reply refused = f.get("/api/datasets", "Bearer " + first.jwt);
    check_error_body(refused, 401);
    CHECK(tokmgr::find_header(refused.headers, "WWW-Authenticate") == std::optional<std::string_view>("Bearer"));
    CHECK(refused.body.find(first.jwt) == std::string::npos);
    CHECK(f.get("/api/datasets", "Bearer " + second.jwt).status == 200);
    const auto s = f.service->stats();
    CHECK(s.revoked_jwts_presented == 1);
    CHECK(s.unauthorized == 1);
    CHECK(s.resources_served == 1);
}

TEST_CASE("a JWT signed with alg none, or by another key, is refused") {
    fixture f;
    const auto pair = tokens_of(f.login("alice", "wonderland"));
    const auto dot1 = pair.jwt.find('.'), dot2 = pair.jwt.rfind('.');
    const std::string none = tokmgr::detail::base64url_encode(R"({"alg":"none"})") + "." +
                             pair.jwt.substr(dot1 + 1, dot2 - dot1 - 1) + ".";
    check_error_body(f.get("/api/x", "Bearer " + none), 401);
    const std::string foreign = sign_hs256("another key", {"alice", 1'800'000'000, 1'900'000'000, "j"});
    check_error_body(f.get("/api/x", "Bearer " + foreign), 401);
    CHECK(f.service->stats().invalid_jwts_presented == 2);
}

// ---- Lifetimes and the environment -----------------------------------------

TEST_CASE("lifetimes: documented defaults, SOLAR_* variables, options over both, invalid values refused") {
    const char* jwt_var = "SOLAR_JWT_EXPIRATION_IN_MINUTES";
    const char* refresh_var = "SOLAR_REFRESH_TOKEN_EXPIRATION_IN_MINUTES";
    settings s;
    tokmgr::error_info error;
    {
        scoped_env a(jwt_var, nullptr), b(refresh_var, nullptr);
        REQUIRE(resolve_settings(server_options{}, s, error));
        CHECK(s.jwt_ttl == 30min);
        CHECK(s.refresh_ttl == 10'000min);
    }
    {
        scoped_env a(jwt_var, "2"), b(refresh_var, "7");
        REQUIRE(resolve_settings(server_options{}, s, error));
        CHECK(s.jwt_ttl == 120s);
        CHECK(s.refresh_ttl == 420s);

        server_options options;
        options.jwt_ttl = 5s;
        options.refresh_ttl = 9s;
        REQUIRE(resolve_settings(options, s, error));
        CHECK(s.jwt_ttl == 5s);
        CHECK(s.refresh_ttl == 9s);
    }
    // Deliberately changed: an empty value was "the default" here; it is now
    // refused, as by the client (one rule: protocol/lifetime_variables.hpp).
    for (const char* bad : {"abc", "0", "-5", "1.5", "99999999999", "", "52560001"}) {
        CAPTURE(bad);
        scoped_env a(jwt_var, bad);
        error = {};
        CHECK_FALSE(resolve_settings(server_options{}, s, error));
        CHECK(error.code == tokmgr::errc::invalid_configuration);
        CHECK(error.detail.find(jwt_var) != std::string::npos);
    }
    {
        // Deliberately changed: the bound was 10,000,000 minutes; it is the
        // client's century now.
        scoped_env a(jwt_var, "52560000");
        REQUIRE(resolve_settings(server_options{}, s, error));
        CHECK(s.jwt_ttl == 52'560'000min);
    }
    {
        scoped_env b(refresh_var, "soon");
        error = {};
        CHECK_FALSE(resolve_settings(server_options{}, s, error));
        CHECK(error.detail.find(refresh_var) != std::string::npos);
    }
    server_options zero;
    zero.jwt_ttl = 0s;
    CHECK_FALSE(resolve_settings(zero, s, error));
    CHECK(error.code == tokmgr::errc::invalid_configuration);
}

TEST_CASE("a JWT issued with the configured lifetime from the environment") {
    scoped_env a("SOLAR_JWT_EXPIRATION_IN_MINUTES", "3");
    server_options options;
    options.users.emplace("alice", tokmgr::secret("wonderland"));
    settings resolved;
    tokmgr::error_info error;
    REQUIRE(resolve_settings(options, resolved, error));
    auth_service service(options, std::move(resolved));
    const auto tokens = tokens_of(service.handle(
        make_request("POST", "/api/auth/login", R"({"userName":"alice","password":"wonderland"})")));
    CHECK(claim(tokens.jwt, "exp") - claim(tokens.jwt, "iat") == 180);
}

TEST_CASE("the signing key: TOKMGR_SERVER_SECRET shared by two servers, else random per server") {
    auto issue_and_check = [](bool same_key_expected) {
        server_options options;
        options.users.emplace("alice", tokmgr::secret("wonderland"));
        settings first_settings, second_settings;
        tokmgr::error_info error;
        REQUIRE(resolve_settings(options, first_settings, error));
        REQUIRE(resolve_settings(options, second_settings, error));
        auth_service first(options, std::move(first_settings)), second(options, std::move(second_settings));
        const auto tokens = tokens_of(first.handle(
            make_request("POST", "/api/auth/login", R"({"userName":"alice","password":"wonderland"})")));
        const reply r = second.handle(
            make_request("GET", "/api/x", {}, std::vector<tokmgr::http_header>{{"Authorization", "Bearer " + tokens.jwt}}));
        CHECK((r.status == 200) == same_key_expected);
    };
    {
        scoped_env key("TOKMGR_SERVER_SECRET", "shared secret bytes");
        issue_and_check(true);
    }
    issue_and_check(false);
}

// ---- Defences ---------------------------------------------------------------

TEST_CASE("the auth POSTs need Content-Type: application/json, else 415") {
    fixture f;
    const std::string body = R"({"userName":"alice","password":"wonderland"})";
    using headers = std::vector<tokmgr::http_header>;
    for (const auto& h : {headers{}, headers{{"Content-Type", "text/plain"}},
                          headers{{"Content-Type", "application/x-www-form-urlencoded"}},
                          headers{{"Content-Type", "application/jsonx"}}}) {
        const reply r = f.service->handle(make_request("POST", "/api/auth/login", body, h));
        check_error_body(r, 415);
        CHECK(r.body.find("wonderland") == std::string::npos);
    }
    CHECK(f.service->handle(make_request("POST", "/api/auth/token_refresh", R"({"refreshToken":"x"})", headers{}))
              .status == 415);
    CHECK(f.service->handle(make_request("POST", "/api/auth/login", body,
                                         headers{{"content-type", " Application/JSON; charset=utf-8"}}))
              .status == 200);
    CHECK(f.service->stats().unsupported_media_type == 5);
    CHECK(f.service->stats().logins == 1);
}

TEST_CASE("SOLAR_AUTH_RPM_LIMIT: over the limit, 429 with Retry-After, per client address") {
    server_options options;
    options.users.emplace("alice", tokmgr::secret("wonderland"));
    options.signing_secret = tokmgr::secret("k");
    options.auth_rpm_limit = 3;
    settings resolved;
    tokmgr::error_info error;
    REQUIRE(resolve_settings(options, resolved, error));
    auth_service service(options, std::move(resolved));
    const auto wrong = make_request("POST", "/api/auth/login", R"({"userName":"alice","password":"guess"})");
    for (int i = 0; i < 3; ++i) CHECK(service.handle(wrong, "192.0.2.1").status == 401);
    const reply limited = service.handle(wrong, "192.0.2.1");
    check_error_body(limited, 429);
    const auto retry_after = tokmgr::find_header(limited.headers, "Retry-After");
    REQUIRE(retry_after);
    const int seconds = std::stoi(std::string(*retry_after));
    CHECK(seconds >= 1);
    CHECK(seconds <= 20);  // one slot of 60 s / 3 frees in at most 20 s
    // Even the right password waits: counting comes before checking.
    CHECK(service.handle(make_request("POST", "/api/auth/login", R"({"userName":"alice","password":"wonderland"})"),
                         "192.0.2.1")
              .status == 429);
    // Another address has its own quota; other paths are not limited.
    CHECK(service.handle(make_request("POST", "/api/auth/login", R"({"userName":"alice","password":"wonderland"})"),
                         "192.0.2.2")
              .status == 200);
    CHECK(service.handle(make_request("GET", "/api/x"), "192.0.2.1").status == 401);
    CHECK(service.stats().auth_requests_limited == 2);
    CHECK(service.stats().logins_rejected == 3);
}

TEST_CASE("rate limit: a burst of the limit, then one per 60 s / limit; recovered clients are forgotten") {
    client_limits_config config;
    config.auth_requests_per_minute = 60;
    config.max_tracked_clients = 2;
    client_limits limits(config);
    const auto t0 = client_limits::clock::time_point(std::chrono::hours(1));
    std::chrono::seconds retry{0};
    for (int i = 0; i < 60; ++i) REQUIRE(limits.admit_auth_request("a", t0, retry));
    CHECK_FALSE(limits.admit_auth_request("a", t0, retry));
    CHECK(retry == 1s);
    CHECK_FALSE(limits.admit_auth_request("a", t0 + 999ms, retry));
    CHECK(limits.admit_auth_request("a", t0 + 1s, retry));
    CHECK_FALSE(limits.admit_auth_request("a", t0 + 1s, retry));
    // In any minute: the burst plus one per second, never more.
    int admitted = 0;
    for (int ms = 1100; ms <= 61'000; ms += 100)  // one a second: at 2 s, 3 s, ... 61 s
        admitted += limits.admit_auth_request("a", t0 + std::chrono::milliseconds(ms), retry) ? 1 : 0;
    CHECK(admitted == 60);

    CHECK(limits.admit_auth_request("b", t0, retry));
    CHECK(limits.tracked_clients() == 2);
    // The table is full and nobody has recovered: a third address waits.
    CHECK_FALSE(limits.admit_auth_request("c", t0, retry));
    // Two minutes later both have recovered, so they make room.
    CHECK(limits.admit_auth_request("c", t0 + 200s, retry));
    CHECK(limits.tracked_clients() == 1);

    client_limits unlimited(client_limits_config{0, 0, 0});
    for (int i = 0; i < 10'000; ++i) REQUIRE(unlimited.admit_auth_request("a", t0, retry));
}

TEST_CASE("connection caps: per client address and in all, slots given back") {
    client_limits limits(client_limits_config{3, 2, 0});
    CHECK(limits.open_connection("a"));
    CHECK(limits.open_connection("a"));
    CHECK_FALSE(limits.open_connection("a"));
    CHECK(limits.open_connection("b"));
    CHECK_FALSE(limits.open_connection("c"));  // 3 in all
    limits.close_connection("a");
    CHECK(limits.open_connection("c"));
    CHECK(limits.open_connections() == 3);
    {
        connection_slot slot(limits, "b");  // over the global cap's count on purpose: the slot only gives back
        (void)slot;
    }
    CHECK(limits.open_connections() == 2);
}

TEST_CASE("token families are bounded: full means 503, never dropping a family whose token lives") {
    using clock_point = std::chrono::system_clock::time_point;
    const clock_point t0(1'800'000'000s);
    refresh_registry registry(3);
    std::vector<std::string> tokens;
    for (int i = 0; i < 3; ++i) tokens.push_back(registry.issue("u", t0, 100s));
    CHECK(registry.issue("u", t0 + 10s, 100s).empty());  // every family alive
    CHECK(registry.families_remembered() == 3);
    // Each family's token still rotates while full.
    auto r = registry.rotate(tokens[0], t0 + 20s, 100s);
    REQUIRE(r.outcome == refresh_registry::result::rotated);
    tokens[0] = r.new_token;
    // Families 1 and 2 expire at t0 + 100 s; family 0's token lives to t0 + 120 s.
    const std::string newer = registry.issue("u", t0 + 110s, 100s);
    CHECK_FALSE(newer.empty());
    CHECK(registry.families_remembered() == 2);
    CHECK(registry.rotate(tokens[0], t0 + 111s, 100s).outcome == refresh_registry::result::rotated);

    // Retired tokens per family are bounded too; the oldest are forgotten first.
    refresh_registry one(1);
    std::vector<std::string> chain{one.issue("u", t0, 1000s)};
    for (std::size_t i = 0; i < refresh_registry::max_retired_per_family + 5; ++i) {
        auto next = one.rotate(chain.back(), t0 + 1s, 1000s);
        REQUIRE(next.outcome == refresh_registry::result::rotated);
        chain.push_back(next.new_token);
    }
    const auto rotate = [&](std::size_t link) { return one.rotate(chain[link], t0 + 2s, 1000s).outcome; };
    const std::size_t oldest_kept = chain.size() - 1 - refresh_registry::max_retired_per_family;
    CHECK(rotate(0) == refresh_registry::result::unknown);
    CHECK(rotate(oldest_kept - 1) == refresh_registry::result::unknown);
    // The oldest retired token still remembered is caught as a reuse, which
    // revokes the family: its current token no longer rotates.
    CHECK(rotate(oldest_kept) == refresh_registry::result::reused);
    CHECK(rotate(chain.size() - 1) == refresh_registry::result::revoked);
}

TEST_CASE("a full family table answers a login 503 with Retry-After") {
    server_options options;
    options.users.emplace("alice", tokmgr::secret("wonderland"));
    options.signing_secret = tokmgr::secret("k");
    options.max_token_families = 2;
    options.jwt_ttl = 60s;
    options.refresh_ttl = 600s;
    settings resolved;
    tokmgr::error_info error;
    REQUIRE(resolve_settings(options, resolved, error));
    auth_service service(options, std::move(resolved));
    const auto login = make_request("POST", "/api/auth/login", R"({"userName":"alice","password":"wonderland"})");
    CHECK(service.handle(login).status == 200);
    CHECK(service.handle(login).status == 200);
    const reply full = service.handle(login);
    check_error_body(full, 503);
    CHECK(tokmgr::find_header(full.headers, "Retry-After"));
    CHECK(service.stats().logins_refused_full == 1);
}

TEST_CASE("SOLAR_AUTH_RPM_LIMIT from the environment, options over it, invalid values refused") {
    server_options options;
    settings out;
    tokmgr::error_info error;
    {
        scoped_env unset("SOLAR_AUTH_RPM_LIMIT", nullptr);
        REQUIRE(resolve_settings(options, out, error));
        CHECK(out.auth_rpm_limit == default_auth_rpm_limit);
    }
    {
        scoped_env env("SOLAR_AUTH_RPM_LIMIT", "42");
        REQUIRE(resolve_settings(options, out, error));
        CHECK(out.auth_rpm_limit == 42);
        options.auth_rpm_limit = 7;
        REQUIRE(resolve_settings(options, out, error));
        CHECK(out.auth_rpm_limit == 7);
        options.auth_rpm_limit.reset();
    }
    {
        scoped_env env("SOLAR_AUTH_RPM_LIMIT", "0");
        REQUIRE(resolve_settings(options, out, error));
        CHECK(out.auth_rpm_limit == 0);
    }
    for (const char* bad : {"-1", "ten", "99999999", "1.5"}) {
        CAPTURE(bad);
        scoped_env env("SOLAR_AUTH_RPM_LIMIT", bad);
        CHECK_FALSE(resolve_settings(options, out, error));
        CHECK(error.code == tokmgr::errc::invalid_configuration);
        CHECK(error.detail.find("SOLAR_AUTH_RPM_LIMIT") != std::string::npos);
    }
}

TEST_CASE("user names must be UTF-8, and a UTF-8 subject round-trips through a signed JWT (found by fuzzing)") {
    server_options options;
    options.users.emplace("na\xefve", tokmgr::secret("pw"));  // Latin-1, not UTF-8
    settings out;
    tokmgr::error_info error;
    CHECK_FALSE(resolve_settings(options, out, error));
    CHECK(error.code == tokmgr::errc::invalid_configuration);
    CHECK(error.detail.find("UTF-8") != std::string::npos);

    const std::string subject = "na\xc3\xafve \xf0\x9f\x94\x91 \"q\" \\ \x01";
    const std::string token = sign_hs256("key", {subject, 1000, 1060, "id"});
    const auto check = verify_hs256(token, "key", 1000);
    CHECK(check.status == jwt_status::valid);
    CHECK(check.subject == subject);
}
