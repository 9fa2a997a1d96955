// asio_transport against nginx (started by the transport_tls fixture with the
// test PKI), and token_manager<> with its default transport logging in and
// refreshing over plain HTTP and over HTTPS.
#include <tokmgr/tokmgr.hpp>

#include <ostream>  // before doctest, so it can print std::error_code

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <fstream>
#include <map>
#include <string>

#include <tokmgr/detail/base64url.hpp>

#include "scripted_server.hpp"
#include "transport_test_support.hpp"

using tokmgr::errc;
using tokmgr::transport_event_kind;
using namespace transport_test;

namespace {

/// The ports tls_fixture.sh wrote: verified, untrusted, other_host, tls11, plain, sni.
std::map<std::string, std::string> nginx_ports() {
    std::map<std::string, std::string> ports;
    std::ifstream in(tls_dir() + "/nginx/ports");
    std::string line;
    while (std::getline(in, line)) {
        const auto eq = line.find('=');
        if (eq != std::string::npos) ports[line.substr(0, eq)] = line.substr(eq + 1);
    }
    REQUIRE_MESSAGE(ports.size() == 6, "nginx is not running: run the tests through ctest (fixture transport_tls)");
    return ports;
}

std::string nginx_url(const std::string& which, const std::string& host = "localhost") {
    return "https://" + host + ":" + nginx_ports().at(which) + "/textual";
}

}  // namespace

TEST_SUITE("nginx") {

TEST_CASE("a verified HTTPS request, by host name, IPv4 and IPv6 literal, on one kept-alive connection") {
    for (const std::string host : {"localhost", "127.0.0.1", "[::1]"}) {
        INFO(host);
        event_log events;
        tokmgr::asio_transport transport(tls_options(nginx_url("verified", host), &events));
        std::error_code ec;
        auto response = transport.send(post("/api/auth/login", R"({"userName":"u","password":"p"})"), ec);
        REQUIRE_MESSAGE(!ec, transport.last_error().message());
        CHECK(response.status == 200);
        CHECK(response.body == R"({"server":"nginx","path":"/textual/api/auth/login"})");
        CHECK(tokmgr::find_header(response.headers, "server").value_or("").substr(0, 5) == "nginx");
        response = transport.send(post("/api/auth/token_refresh", "{}"), ec);
        CHECK_FALSE(ec);
        CHECK(response.body.find("token_refresh") != std::string::npos);
        CHECK(events.count(transport_event_kind::connected) == 1);
        CHECK(events.count(transport_event_kind::connection_reused) == 1);
    }
}

TEST_CASE("the TLS session is resumed when the connection is re-established") {
    event_log events;
    tokmgr::asio_transport transport(tls_options(nginx_url("verified"), &events));
    transport.send(post("/api/a", "{}"));
    transport.close();
    transport.send(post("/api/a", "{}"));
    CHECK(events.count(transport_event_kind::connected) == 2);
    CHECK(events.count(transport_event_kind::tls_session_resumed) == 1);
}

TEST_CASE("a certificate from an unknown CA is refused") {
    tokmgr::asio_transport transport(tls_options(nginx_url("untrusted")));
    std::error_code ec;
    transport.send(post("/api/auth/login", "{}"), ec);
    CHECK(ec == errc::certificate_verification_failed);
    CHECK(tokmgr::request_not_sent(ec));
    CHECK_FALSE(tokmgr::is_retryable(ec));
    const std::string detail = transport.last_error().detail;
    CHECK(detail.find("localhost:" + nginx_ports().at("untrusted")) != std::string::npos);
    CHECK(detail.find("issuer") != std::string::npos);
    CHECK(detail.find("ca_file") != std::string::npos);
}

TEST_CASE("a certificate for another host name is refused") {
    tokmgr::asio_transport transport(tls_options(nginx_url("other_host")));
    std::error_code ec;
    transport.send(post("/api/auth/login", "{}"), ec);
    CHECK(ec == errc::certificate_verification_failed);
    CHECK(transport.last_error().detail.find("hostname mismatch") != std::string::npos);

    // ...and an IP literal must be in the certificate as an address.
    tokmgr::asio_transport by_address(tls_options(nginx_url("other_host", "127.0.0.1")));
    by_address.send(post("/api/auth/login", "{}"), ec);
    CHECK(ec == errc::certificate_verification_failed);
}

TEST_CASE("SNI: the server picks the certificate by the name the transport sends") {
    // nginx's default certificate on this port is other.example's; only the
    // server name "localhost" in the ClientHello selects the right one.
    tokmgr::asio_transport transport(tls_options(nginx_url("sni")));
    std::error_code ec;
    const auto response = transport.send(post("/api/sni", "{}"), ec);
    REQUIRE_MESSAGE(!ec, transport.last_error().message());
    CHECK(response.status == 200);

    // No SNI is sent for an IP literal (RFC 6066), so the default certificate
    // comes back, and it does not carry the address.
    tokmgr::asio_transport by_address(tls_options(nginx_url("sni", "127.0.0.1")));
    by_address.send(post("/api/sni", "{}"), ec);
    CHECK(ec == errc::certificate_verification_failed);
}

TEST_CASE("a server offering only TLS 1.1 or older is refused") {
    // First prove that this nginx really completes a TLS 1.1 handshake with a
    // client that allows it, so the refusal below is the transport's doing.
    {
        asio::io_context io;
        asio::ssl::context permissive(asio::ssl::context::tls_client);
        SSL_CTX_set_min_proto_version(permissive.native_handle(), TLS1_1_VERSION);
        SSL_CTX_set_max_proto_version(permissive.native_handle(), TLS1_1_VERSION);
        SSL_CTX_set_security_level(permissive.native_handle(), 0);
        SSL_CTX_set_cipher_list(permissive.native_handle(), "DEFAULT:@SECLEVEL=0");
        asio::ssl::stream<asio::ip::tcp::socket> stream(io, permissive);
        stream.next_layer().connect(asio::ip::tcp::endpoint(
            asio::ip::address_v4::loopback(), static_cast<unsigned short>(std::stoi(nginx_ports().at("tls11")))));
        std::error_code ec;
        stream.handshake(asio::ssl::stream_base::client, ec);
        REQUIRE_MESSAGE(!ec, "nginx did not offer TLS 1.1: " << ec.message());
        CHECK(SSL_version(stream.native_handle()) == TLS1_1_VERSION);
    }
    tokmgr::asio_transport transport(tls_options(nginx_url("tls11")));
    std::error_code ec;
    transport.send(post("/api/auth/login", "{}"), ec);
    CHECK(ec == errc::tls_handshake_failed);
    CHECK(tokmgr::request_not_sent(ec));
}

TEST_CASE("the CA-file option: the test CA is trusted only when named") {
    auto options = tls_options(nginx_url("verified"));
    options.ca_file.clear();  // the system store does not hold the test CA
    tokmgr::asio_transport system_store(options);
    std::error_code ec;
    system_store.send(post("/api/x", "{}"), ec);
    CHECK(ec == errc::certificate_verification_failed);

    options.ca_file = pki_file("unknown-ca.pem");  // a CA file, but the wrong CA
    tokmgr::asio_transport wrong_ca(options);
    wrong_ca.send(post("/api/x", "{}"), ec);
    CHECK(ec == errc::certificate_verification_failed);

    options.ca_file = pki_file("ca.pem");
    tokmgr::asio_transport named_ca(options);
    CHECK(named_ca.send(post("/api/x", "{}"), ec).status == 200);
    CHECK_FALSE(ec);
}

TEST_CASE("plain HTTP to nginx") {
    tokmgr::asio_transport transport(plain_options("http://127.0.0.1:" + nginx_ports().at("plain") + "/textual/"));
    const auto response = transport.send(post("/api/plain", "{}"));
    CHECK(response.status == 200);
    CHECK(response.body.find("/textual/api/plain") != std::string::npos);
}

}  // TEST_SUITE("nginx")

namespace {

std::string make_jwt(int serial, long lifetime_seconds) {
    const long now = static_cast<long>(std::time(nullptr));
    const std::string header = tokmgr::detail::base64url_encode(R"({"alg":"HS256","typ":"JWT"})");
    const std::string claims = tokmgr::detail::base64url_encode(
        R"({"sub":"svc","n":)" + std::to_string(serial) + R"(,"iat":)" + std::to_string(now) + R"(,"exp":)" +
        std::to_string(now + lifetime_seconds) + "}");
    return header + "." + claims + ".c2lnbmF0dXJl";
}

/// Answers login and token_refresh the way the Textual API does, rotating
/// the refresh token and refusing any but the newest.
struct fake_textual {
    std::mutex mutex;
    int issued = 0;
    std::string current_refresh;
    std::vector<std::string> jwts;

    script answer(const received_request& r) {
        std::lock_guard<std::mutex> lock(mutex);
        if (r.target == "/textual/api/auth/login") {
            if (r.body != R"({"userName":"svc@example.com","password":"pw\"1"})") return {send(response(401, "{}"))};
        } else if (r.target == "/textual/api/auth/token_refresh") {
            if (current_refresh.empty() || r.body != R"({"refreshToken":")" + current_refresh + "\"}")
                return {send(response(401, R"({"message":"stale refresh token"})"))};
        } else {
            return {send(response(404, "{}"))};
        }
        ++issued;
        jwts.push_back(make_jwt(issued, 3600));
        current_refresh = "refresh-" + std::to_string(issued);
        return {send(response(200, R"({"jwt":")" + jwts.back() + R"(","refreshToken":")" + current_refresh + "\"}",
                              "Content-Type: application/json\r\n"))};
    }
};

void login_then_refresh(scripted_server& server, fake_textual& textual, tokmgr::asio_transport_options options) {
    tokmgr::manager_options manager_options;
    manager_options.assumed_lifetimes = tokmgr::lifetimes{};
    tokmgr::token_manager<> manager(tokmgr::asio_transport(std::move(options)),
                                    tokmgr::credentials{"svc@example.com", tokmgr::secret(R"(pw"1)")},
                                    manager_options);
    std::error_code ec;
    const std::string first(manager.get_token(ec).reveal());
    REQUIRE_MESSAGE(!ec, manager.last_error().message());
    CHECK(first == textual.jwts.at(0));
    CHECK(manager.counters().logins == 1);
    CHECK(std::string(manager.get_token().reveal()) == first);  // served from memory
    CHECK(server.requests() == 1);

    manager.invalidate(manager.get_token());
    const std::string second(manager.get_token(ec).reveal());
    REQUIRE_MESSAGE(!ec, manager.last_error().message());
    CHECK(second == textual.jwts.at(1));
    CHECK(manager.counters().refreshes == 1);
    CHECK(manager.counters().logins == 1);
    const auto got = server.received();
    REQUIRE(got.size() == 2);
    CHECK(got[1].target == "/textual/api/auth/token_refresh");
    CHECK(got[1].body == R"({"refreshToken":"refresh-1"})");
    CHECK(server.connections() == 1);  // the refresh reused the login's connection
}

}  // namespace

TEST_SUITE("token_manager") {

TEST_CASE("token_manager<> logs in and refreshes over plain HTTP") {
    fake_textual textual;
    scripted_server server([&](const received_request& r) { return textual.answer(r); });
    login_then_refresh(server, textual, plain_options(server.url("/textual")));
}

TEST_CASE("token_manager<> logs in and refreshes over HTTPS") {
    fake_textual textual;
    scripted_server server([&](const received_request& r) { return textual.answer(r); }, server_tls("localhost"));
    login_then_refresh(server, textual, tls_options(server.url("/textual")));
}

TEST_CASE("token_manager<>: a refresh whose answer was lost is never sent again; the manager logs in") {
    fake_textual textual;
    std::atomic<bool> dropped{false};  // read by the server's connection threads
    scripted_server server([&](const received_request& r) {
        if (r.target == "/textual/api/auth/token_refresh" && !dropped.exchange(true)) {
            // The server rotates, but the answer never arrives.
            textual.answer(r);
            return script{close_connection()};
        }
        return textual.answer(r);
    });
    tokmgr::manager_options manager_options;
    manager_options.backoff_initial = std::chrono::milliseconds(50);
    tokmgr::token_manager<> manager(tokmgr::asio_transport(plain_options(server.url("/textual"))),
                                    tokmgr::credentials{"svc@example.com", tokmgr::secret(R"(pw"1)")},
                                    manager_options);
    manager.get_token();
    manager.invalidate(manager.get_token());
    std::error_code ec;
    std::string jwt;
    for (int attempt = 0; attempt < 50; ++attempt) {
        jwt = std::string(manager.get_token(ec).reveal());
        if (!ec) break;
        CHECK((ec == errc::connection_failed || manager.last_error().code == errc::connection_failed));
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    REQUIRE_MESSAGE(!ec, manager.last_error().message());
    int refreshes_with_first_token = 0;
    std::vector<std::string> targets;
    for (const auto& r : server.received()) {
        targets.push_back(r.target.substr(r.target.rfind('/') + 1));
        if (r.body == R"({"refreshToken":"refresh-1"})") ++refreshes_with_first_token;
    }
    CHECK(refreshes_with_first_token == 1);
    CHECK(targets == std::vector<std::string>{"login", "token_refresh", "login"});
    CHECK(jwt == textual.jwts.back());
}

TEST_CASE("token_manager<> reports a transport failure with the endpoint and without the password") {
    unsigned short closed_port = 0;
    {
        scripted_server server([](const received_request&) { return script{}; });
        closed_port = server.port();
    }
    tokmgr::token_manager<> manager(
        tokmgr::asio_transport(plain_options("http://127.0.0.1:" + std::to_string(closed_port))),
        tokmgr::credentials{"svc", tokmgr::secret("hunter2-password")});
    std::error_code ec;
    manager.get_token(ec);
    CHECK(ec == errc::connection_refused);
    const std::string text = manager.last_error().message();
    CHECK(text.find("127.0.0.1:" + std::to_string(closed_port)) != std::string::npos);
    CHECK(text.find("hunter2") == std::string::npos);
}

}  // TEST_SUITE("token_manager")
