// The reference server over real loopback sockets: starting and binding,
// keep-alive, the protocol end to end, 413 before the body, stalled and idle
// clients, overlapping refreshes in the statistics, and TLS.
#include <tokmgr/server/reference_server.hpp>  // first: proves it is self-contained

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "test_certificate.hpp"
#include "test_http_client.hpp"

using namespace std::chrono_literals;
using tokmgr::server::reference_server;
using tokmgr::server::server_options;
using tokmgr_test::test_client;

namespace {

server_options alice_options() {
    server_options options;
    options.users.emplace("alice", tokmgr::secret("wonderland"));
    options.api_key = tokmgr::secret("key-123");
    options.jwt_ttl = 60s;
    options.refresh_ttl = 600s;
    return options;
}

constexpr std::string_view alice_login = R"({"userName":"alice","password":"wonderland"})";

/// The string member `name` of a flat JSON object (enough for these answers).
std::string json_member(const std::string& body, const std::string& name) {
    const auto key = body.find("\"" + name + "\":\"");
    REQUIRE(key != std::string::npos);
    const auto start = key + name.size() + 4;
    return body.substr(start, body.find('"', start) - start);
}

}  // namespace

TEST_CASE("start binds a free loopback port and reports its URL; stop is idempotent") {
    reference_server server(alice_options());
    CHECK(server.port() == 0);
    server.start();
    CHECK(server.port() != 0);
    CHECK(server.url() == "http://127.0.0.1:" + std::to_string(server.port()));
    CHECK_FALSE(server.uses_tls());
    server.stop();
    server.stop();
}

TEST_CASE("start reports what is wrong: port in use, bad TLS files, invalid environment") {
    reference_server first(alice_options());
    first.start();

    server_options taken = alice_options();
    taken.port = first.port();
    reference_server second(taken);
    std::error_code ec;
    second.start(ec);
    CHECK(ec == std::errc::address_in_use);
    CHECK(second.last_error().detail.find(std::to_string(first.port())) != std::string::npos);
    CHECK_THROWS_AS(reference_server(taken).start(), tokmgr::error);

    server_options bad_tls = alice_options();
    bad_tls.tls_cert_file = "/nonexistent/cert.pem";
    bad_tls.tls_key_file = "/nonexistent/key.pem";
    reference_server third(bad_tls);
    third.start(ec);
    CHECK(ec == tokmgr::errc::invalid_configuration);
    CHECK(third.last_error().detail.find("/nonexistent/cert.pem") != std::string::npos);

    ::setenv("SOLAR_JWT_EXPIRATION_IN_MINUTES", "thirty", 1);
    server_options from_env;
    reference_server fourth(from_env);
    fourth.start(ec);
    ::unsetenv("SOLAR_JWT_EXPIRATION_IN_MINUTES");
    CHECK(ec == tokmgr::errc::invalid_configuration);
    CHECK(fourth.last_error().detail.find("SOLAR_JWT_EXPIRATION_IN_MINUTES") != std::string::npos);
}

TEST_CASE("login, refresh and a protected resource over one keep-alive connection") {
    reference_server server(alice_options());
    server.start();
    test_client client(server.port());

    auto login = client.request("POST", "/api/auth/login", alice_login);
    REQUIRE(login);
    CHECK(login->status == 200);
    CHECK(login->has_header_line("Connection: keep-alive"));
    CHECK(login->has_header_line("Content-Type: application/json"));
    const auto refresh_token = json_member(login->body, "refreshToken");

    auto refreshed = client.request("POST", "/api/auth/token_refresh", R"({"refreshToken":")" + refresh_token + "\"}");
    REQUIRE(refreshed);
    CHECK(refreshed->status == 200);
    const auto jwt = json_member(refreshed->body, "jwt");

    auto resource = client.request("GET", "/api/datasets", {}, "Authorization: Bearer " + jwt + "\r\n");
    REQUIRE(resource);
    CHECK(resource->status == 200);
    auto with_key = client.request("GET", "/api/datasets", {}, "Authorization: key-123\r\n");
    REQUIRE(with_key);
    CHECK(with_key->status == 200);

    auto reuse = client.request("POST", "/api/auth/token_refresh", R"({"refreshToken":")" + refresh_token + "\"}");
    REQUIRE(reuse);
    CHECK(reuse->status == 401);

    const auto stats = server.stats();
    CHECK(stats.connections == 1);
    CHECK(stats.requests == 5);
    CHECK(stats.logins == 1);
    CHECK(stats.refreshes == 1);
    CHECK(stats.refresh_tokens_reused == 1);
}

TEST_CASE("error answers over the wire: 400, 401, 404, 405, and Connection: close honoured") {
    reference_server server(alice_options());
    server.start();
    test_client client(server.port());
    const struct {
        const char* method;
        const char* target;
        const char* body;
        int status;
    } rows[] = {
        {"POST", "/api/auth/login", "", 400},
        {"POST", "/api/auth/login", "{not json", 400},
        {"POST", "/api/auth/login", R"({"userName":"alice","password":"nope-secret"})", 401},
        {"GET", "/api/auth/login", "", 405},
        {"GET", "/nothing/here", "", 404},
        {"GET", "/api/datasets", "", 401},
    };
    for (const auto& row : rows) {
        CAPTURE(row.target);
        auto r = client.request(row.method, row.target, row.body);
        REQUIRE(r);
        CHECK(r->status == row.status);
        CHECK(r->body.find("\"title\"") != std::string::npos);
        CHECK(r->body.find("nope-secret") == std::string::npos);
    }
    auto last = client.request("GET", "/nothing", {}, "Connection: close\r\n");
    REQUIRE(last);
    CHECK(last->has_header_line("Connection: close"));
    CHECK(client.closed_by_peer());
}

TEST_CASE("an ordinary close is not counted as a timeout, even when the client lingers after the answer") {
    reference_server server(alice_options());
    server.start();
    {
        test_client client(server.port(), nullptr, 3s);
        auto r = client.request("GET", "/nothing", {}, "Connection: close\r\n");
        REQUIRE(r);
        // The client keeps its end open past the server's 1 s linger.
        std::this_thread::sleep_for(1500ms);
        CHECK(client.closed_by_peer());
    }
    CHECK(server.stats().connections_timed_out == 0);
    CHECK(server.stats().requests == 1);
}

TEST_CASE("over the wire: bare LF answers 400 at once, a wrong Content-Type 415, over the auth limit 429") {
    server_options options = alice_options();
    options.auth_rpm_limit = 2;
    reference_server server(options);
    server.start();

    test_client bare_lf(server.port(), nullptr, 10s);
    const auto started = std::chrono::steady_clock::now();
    bare_lf.send("GET /api/datasets HTTP/1.1\nHost: 127.0.0.1\n");  // no blank line: nothing to wait for
    auto r = bare_lf.read_response();
    REQUIRE(r);
    CHECK(r->status == 400);
    // Far below the 10 s request timeout it used to wait for (generous: loaded CI).
    CHECK(std::chrono::steady_clock::now() - started < 5s);
    CHECK(bare_lf.closed_by_peer());

    test_client client(server.port());
    r = client.request("POST", "/api/auth/login", alice_login, "X-Ignored: 1\r\n");
    REQUIRE(r);
    CHECK(r->status == 200);
    client.send("POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: " +
                std::to_string(std::string_view(alice_login).size()) + "\r\n\r\n" + std::string(alice_login));
    r = client.read_response();
    REQUIRE(r);
    CHECK(r->status == 415);
    r = client.request("POST", "/api/auth/login", alice_login);
    REQUIRE(r);
    CHECK(r->status == 429);
    CHECK(r->has_header_line("Retry-After: "));
    // The same connection still serves what is not rate-limited.
    r = client.request("GET", "/nothing");
    REQUIRE(r);
    CHECK(r->status == 404);
    const auto stats = server.stats();
    CHECK(stats.auth_requests_limited == 1);
    CHECK(stats.unsupported_media_type == 1);
    CHECK(stats.requests_malformed == 1);
}

TEST_CASE("connection caps: a client over its quota is refused, another address is still served") {
    server_options options = alice_options();
    options.max_connections_per_client = 3;
    options.max_connections = 6;
    reference_server server(options);
    server.start();
    std::vector<std::unique_ptr<test_client>> held;
    for (int i = 0; i < 3; ++i) held.push_back(std::make_unique<test_client>(server.port(), nullptr, 10s, "127.0.0.2"));
    test_client over(server.port(), nullptr, 10s, "127.0.0.2");
    auto refused = over.read_response();
    if (refused) CHECK(refused->status == 503);  // or reset before it could be read
    CHECK(over.closed_by_peer());

    test_client honest(server.port(), nullptr, 10s, "127.0.0.1");
    auto r = honest.request("POST", "/api/auth/login", alice_login);
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(server.stats().connections_refused == 1);

    held.clear();  // slots come back when the server sees the closes
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    bool served = false;
    while (!served && std::chrono::steady_clock::now() < deadline) {
        test_client again(server.port(), nullptr, 10s, "127.0.0.2");
        auto answer = again.request("GET", "/nothing");
        served = answer && answer->status == 404;
        if (!served) std::this_thread::sleep_for(50ms);
    }
    CHECK(served);
}

TEST_CASE("a body over the limit answers 413 without waiting for the body, then closes") {
    reference_server server(alice_options());
    server.start();
    test_client client(server.port(), nullptr, 3s);
    const auto started = std::chrono::steady_clock::now();
    client.send("POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                "Content-Length: 10485760\r\n\r\n{\"userName\":");
    auto r = client.read_response();
    REQUIRE(r);
    CHECK(r->status == 413);
    CHECK(std::chrono::steady_clock::now() - started < 2s);
    CHECK(client.closed_by_peer());

    // Malformed framing likewise answers and closes.
    test_client chunked(server.port());
    auto te = chunked.request("POST", "/api/auth/login", {}, "Transfer-Encoding: chunked\r\n");
    REQUIRE(te);
    CHECK(te->status == 501);
}

TEST_CASE("a stalled client does not block others, and is cut off at its deadline") {
    server_options options = alice_options();
    options.threads = 1;  // the hardest case: one event-loop thread for everybody
    options.request_timeout = 3s;
    options.idle_timeout = 3s;
    reference_server server(options);
    server.start();

    test_client stalled(server.port(), nullptr, 5s);
    stalled.send("POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"user");
    test_client silent(server.port(), nullptr, 5s);  // connects and never sends a byte

    // Meanwhile, others are served at once, many times over, well before the
    // stalled ones are cut off (generous bounds: sanitizer builds are slow).
    const auto stall_started = std::chrono::steady_clock::now();
    for (int i = 0; i < 5; ++i) {
        const auto started = std::chrono::steady_clock::now();
        test_client other(server.port());
        auto r = other.request("POST", "/api/auth/login", alice_login);
        REQUIRE(r);
        CHECK(r->status == 200);
        CHECK(std::chrono::steady_clock::now() - started < 1s);
    }
    CHECK(std::chrono::steady_clock::now() - stall_started < 2500ms);

    auto timed_out = stalled.read_response();
    REQUIRE(timed_out);
    CHECK(timed_out->status == 408);
    CHECK(stalled.closed_by_peer());
    CHECK(silent.closed_by_peer());
    CHECK(server.stats().connections_timed_out >= 2);
}

TEST_CASE("a client trickling a request byte by byte is cut off at the request deadline, not the idle one") {
    server_options options = alice_options();
    options.request_timeout = 600ms;
    options.idle_timeout = 5s;
    reference_server server(options);
    server.start();
    test_client trickler(server.port(), nullptr, 5s);
    const std::string wire = "GET /api/datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + std::string(100, 'a');
    const auto started = std::chrono::steady_clock::now();
    bool cut_off = false;
    for (char c : wire) {
        try {
            trickler.send(std::string_view(&c, 1));
        } catch (const std::system_error&) {
            cut_off = true;
            break;
        }
        std::this_thread::sleep_for(50ms);
        if (std::chrono::steady_clock::now() - started > 3s) break;
    }
    if (!cut_off) {
        auto r = trickler.read_response();
        cut_off = !r || r->status == 408;
    }
    CHECK(cut_off);
    CHECK(std::chrono::steady_clock::now() - started < 3s);
}

TEST_CASE("many clients at once, each over its own keep-alive connection") {
    server_options options = alice_options();
    reference_server server(options);
    server.start();
    std::atomic<int> ok{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 16; ++t) {
        threads.emplace_back([&] {
            test_client client(server.port());
            auto login = client.request("POST", "/api/auth/login", alice_login);
            if (!login || login->status != 200) return;
            const auto jwt = json_member(login->body, "jwt");
            for (int i = 0; i < 20; ++i) {
                auto r = client.request("GET", "/api/items/" + std::to_string(i), {},
                                        "Authorization: Bearer " + jwt + "\r\n");
                if (r && r->status == 200) ++ok;
            }
        });
    }
    for (auto& t : threads) t.join();
    CHECK(ok == 16 * 20);
    const auto stats = server.stats();
    CHECK(stats.connections == 16);
    CHECK(stats.resources_served == 16 * 20);
}

TEST_CASE("overlapping refreshes show in max_refreshes_in_flight") {
    server_options options = alice_options();
    options.auth_delay = 300ms;
    reference_server server(options);
    server.start();
    test_client a(server.port()), b(server.port());
    const auto token_a = json_member(a.request("POST", "/api/auth/login", alice_login)->body, "refreshToken");
    const auto token_b = json_member(b.request("POST", "/api/auth/login", alice_login)->body, "refreshToken");
    CHECK(server.stats().max_refreshes_in_flight == 0);

    a.send("POST /api/auth/token_refresh HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
           std::to_string(token_a.size() + 19) + "\r\n\r\n{\"refreshToken\":\"" + token_a + "\"}");
    b.send("POST /api/auth/token_refresh HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
           std::to_string(token_b.size() + 19) + "\r\n\r\n{\"refreshToken\":\"" + token_b + "\"}");
    CHECK(a.read_response()->status == 200);
    CHECK(b.read_response()->status == 200);
    const auto stats = server.stats();
    CHECK(stats.max_refreshes_in_flight == 2);
    CHECK(stats.max_auth_requests_in_flight == 2);
}

TEST_CASE("TLS: HTTPS with a certificate the client verifies; plain HTTP to it fails") {
    auto cert = tokmgr_test::make_test_certificate();
    server_options options = alice_options();
    options.tls_cert_file = cert->cert_file;
    options.tls_key_file = cert->key_file;
    reference_server server(options);
    server.start();
    CHECK(server.uses_tls());
    CHECK(server.url() == "https://127.0.0.1:" + std::to_string(server.port()));

    asio::ssl::context verifying(asio::ssl::context::tls_client);
    verifying.load_verify_file(cert->cert_file);
    verifying.set_verify_mode(asio::ssl::verify_peer);
    test_client client(server.port(), &verifying);
    auto login = client.request("POST", "/api/auth/login", alice_login);
    REQUIRE(login);
    CHECK(login->status == 200);
    const auto jwt = json_member(login->body, "jwt");
    auto resource = client.request("GET", "/api/datasets", {}, "Authorization: Bearer " + jwt + "\r\n");
    REQUIRE(resource);
    CHECK(resource->status == 200);

    // A client that does not trust the certificate fails the handshake.
    asio::ssl::context untrusting(asio::ssl::context::tls_client);
    untrusting.set_default_verify_paths();
    untrusting.set_verify_mode(asio::ssl::verify_peer);
    CHECK_THROWS_AS(test_client(server.port(), &untrusting, 3s), std::system_error);

    // Plain HTTP to the TLS port gets no HTTP answer.
    test_client plain(server.port(), nullptr, 3s);
    plain.send("GET /api/datasets HTTP/1.1\r\nHost: x\r\n\r\n");
    auto r = plain.read_response();
    CHECK_FALSE(r);
}
