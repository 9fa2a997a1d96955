// asio_transport through HTTP proxies: real ones (tinyproxy, started by the
// transport_proxy fixture: open, with Basic authentication, and one that
// refuses CONNECT) in front of the nginx origin of the transport_tls fixture,
// and scripted ones for what a real proxy does only when it is broken
// (stalls, closes mid-tunnel, oversized or surplus answers). Also the idle
// limit on kept-alive connections.
#include <tokmgr/transport/asio.hpp>

#include <ostream>  // before doctest, so it can print std::error_code

#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "scripted_server.hpp"
#include "transport_test_support.hpp"

using tokmgr::errc;
using tokmgr::transport_event_kind;
using namespace transport_test;
using namespace std::chrono_literals;

namespace {

std::map<std::string, std::string> read_ports(const std::string& file, std::size_t expected, const char* fixture) {
    std::map<std::string, std::string> ports;
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line)) {
        const auto eq = line.find('=');
        if (eq != std::string::npos) ports[line.substr(0, eq)] = line.substr(eq + 1);
    }
    REQUIRE_MESSAGE(ports.size() == expected, "run the tests through ctest (fixture " << fixture << ")");
    return ports;
}

/// "http://127.0.0.1:PORT" of tinyproxy `which`: open, auth or refusing.
std::string proxy_url(const std::string& which, const std::string& credentials = "") {
    const auto ports = read_ports(tls_dir() + "/proxy/ports", 3, "transport_proxy");
    return "http://" + credentials + "127.0.0.1:" + ports.at(which);
}

std::string proxy_password() {
    std::ifstream in(tls_dir() + "/proxy/password");
    std::string password;
    std::getline(in, password);
    REQUIRE_FALSE(password.empty());
    return password;
}

std::string proxy_log(const std::string& which) {
    std::ifstream in(tls_dir() + "/proxy/" + which + ".log");
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

std::string origin(const std::string& which, const std::string& host = "localhost") {
    const auto ports = read_ports(tls_dir() + "/nginx/ports", 6, "transport_tls");
    return (which == "plain" ? "http://" : "https://") + host + ":" + ports.at(which) + "/textual";
}

/// Options for `base_url` through `proxy`, ignoring the test process's environment.
tokmgr::asio_transport_options via(const std::string& base_url, const std::string& proxy, event_log* events = nullptr) {
    auto options = tls_options(base_url, events);
    options.proxy = proxy;
    options.use_environment_proxy = false;
    return options;
}

/// A CONNECT proxy that tunnels one connection to a loopback origin port
/// (whatever the CONNECT names) and closes the tunnel when the test calls
/// cut(): a proxy dropping the connection in the middle of an exchange.
class cutting_proxy {
public:
    explicit cutting_proxy(unsigned short origin_port)
        : acceptor_(io_, asio::ip::tcp::endpoint(asio::ip::address_v4::loopback(), 0)), origin_port_(origin_port) {
        thread_ = std::thread([this] { run(); });
    }
    cutting_proxy(const cutting_proxy&) = delete;
    cutting_proxy& operator=(const cutting_proxy&) = delete;
    ~cutting_proxy() {
        cut();
        // Unblocks an accept still waiting (the client never came) with a
        // connection that closes at once; harmless once one was accepted.
        try {
            asio::io_context wake_io;
            asio::ip::tcp::socket wake(wake_io);
            wake.connect(acceptor_.local_endpoint());
        } catch (const std::exception&) {
        }
        thread_.join();
    }

    std::string url() const { return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()); }

    /// Closes both sides of the tunnel (shutdown(2) is safe from another
    /// thread; it wakes the relays blocked in a read).
    void cut() {
        std::lock_guard<std::mutex> lock(mutex_);
        cut_ = true;
        for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    }

private:
    void run() {
        try {
            asio::ip::tcp::socket client(io_);
            acceptor_.accept(client);
            std::string head;
            asio::read_until(client, asio::dynamic_buffer(head), "\r\n\r\n");
            asio::ip::tcp::socket origin(io_);
            origin.connect(asio::ip::tcp::endpoint(asio::ip::address_v4::loopback(), origin_port_));
            asio::write(client, asio::buffer(std::string("HTTP/1.1 200 Connection established\r\n\r\n")));
            {
                std::lock_guard<std::mutex> lock(mutex_);
                fds_ = {client.native_handle(), origin.native_handle()};
                if (cut_)
                    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
            }
            std::thread upstream([&] { relay(client, origin); });
            relay(origin, client);
            upstream.join();
            std::lock_guard<std::mutex> lock(mutex_);
            fds_.clear();
        } catch (const std::exception&) {
        }
    }

    static void relay(asio::ip::tcp::socket& from, asio::ip::tcp::socket& to) {
        std::array<char, 4096> buffer;
        std::error_code ec;
        while (true) {
            const std::size_t n = from.read_some(asio::buffer(buffer), ec);
            if (ec) break;
            asio::write(to, asio::buffer(buffer.data(), n), ec);
            if (ec) break;
        }
        to.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
    }

    asio::io_context io_;
    asio::ip::tcp::acceptor acceptor_;
    unsigned short origin_port_;
    std::mutex mutex_;
    std::vector<int> fds_;
    bool cut_ = false;
    std::thread thread_;
};

}  // namespace

TEST_SUITE("proxy") {

TEST_CASE("https:// through a real proxy: CONNECT, TLS to the server, keep-alive and session resumption") {
    event_log events;
    tokmgr::asio_transport transport(via(origin("verified"), proxy_url("open"), &events));
    std::error_code ec;
    auto response = transport.send(post("/api/auth/login", "{}"), ec);
    REQUIRE_MESSAGE(!ec, transport.last_error().message());
    CHECK(response.status == 200);
    CHECK(response.body == R"({"server":"nginx","path":"/textual/api/auth/login"})");
    CHECK(events.count(transport_event_kind::proxy_tunnel_opened) == 1);
    CHECK(transport.send(post("/api/a", "{}")).body.find("/textual/api/a") != std::string::npos);
    CHECK(events.count(transport_event_kind::connection_reused) == 1);  // the tunnel is kept alive
    transport.close();
    CHECK(transport.send(post("/api/b", "{}")).status == 200);
    CHECK(events.count(transport_event_kind::proxy_tunnel_opened) == 2);
    CHECK(events.count(transport_event_kind::tls_session_resumed) == 1);  // through a new tunnel
    // The proxy saw the CONNECTs: the requests did not bypass it.
    CHECK(proxy_log("open").find("CONNECT localhost:" + read_ports(tls_dir() + "/nginx/ports", 6, "transport_tls").at("verified")) !=
          std::string::npos);
}

TEST_CASE("through a tunnel the server's name is what TLS sends and verifies, never the proxy's") {
    // SNI: nginx picks the localhost certificate only for a client that names localhost.
    tokmgr::asio_transport sni(via(origin("sni"), proxy_url("open")));
    std::error_code ec;
    CHECK(sni.send(post("/api/x", "{}"), ec).status == 200);
    CHECK_MESSAGE(!ec, sni.last_error().message());
    // A certificate for another name fails verification, naming the server and the proxy.
    tokmgr::asio_transport other(via(origin("other_host"), proxy_url("open")));
    other.send(post("/api/x", "{}"), ec);
    CHECK(ec == errc::certificate_verification_failed);
    CHECK(other.last_error().detail.find("hostname mismatch") != std::string::npos);
    CHECK(other.last_error().detail.find("through the proxy " + proxy_url("open")) != std::string::npos);
}

TEST_CASE("http:// through a real proxy: the request goes in absolute form") {
    event_log events;
    tokmgr::asio_transport transport(via(origin("plain", "127.0.0.1"), proxy_url("open"), &events));
    std::error_code ec;
    const auto response = transport.send(post("/api/auth/login", "{}"), ec);
    REQUIRE_MESSAGE(!ec, transport.last_error().message());
    CHECK(response.status == 200);
    CHECK(response.body == R"({"server":"nginx","path":"/textual/api/auth/login"})");
    CHECK(events.count(transport_event_kind::proxy_tunnel_opened) == 0);
    REQUIRE(!events.details.empty());
    CHECK(events.details.front() == "connected to the proxy " + proxy_url("open"));
}

TEST_CASE("a proxy with Basic authentication: good credentials pass, bad or missing ones are a proxy error") {
    const std::string password = proxy_password();
    const auto get = [](std::string_view target) {
        // No body: tinyproxy closes after refusing, and an unread body would
        // turn its close into a reset that can discard the answer.
        tokmgr::http_request request;
        request.method = "GET";
        request.target = target;
        return request;
    };
    std::error_code ec;
    for (const std::string& base : {origin("verified"), origin("plain", "127.0.0.1")}) {
        INFO(base);
        tokmgr::asio_transport good(via(base, proxy_url("auth", "tokmgr:" + password + "@")));
        CHECK(good.send(get("/api/x"), ec).status == 200);
        CHECK_MESSAGE(!ec, good.last_error().message());

        tokmgr::asio_transport none(via(base, proxy_url("auth")));
        const auto response = none.send(get("/api/x"), ec);
        CHECK(ec == errc::proxy_authentication_required);
        CHECK(tokmgr::request_not_sent(ec));
        CHECK_FALSE(tokmgr::is_retryable(ec));
        CHECK(response.body.empty());  // the proxy's page is never taken for the server's answer
        CHECK(none.last_error().detail.find("the proxy " + proxy_url("auth") + " answered 407") != std::string::npos);
        CHECK(none.last_error().detail.find("give its user name and password") != std::string::npos);
    }
    // Wrong credentials on a CONNECT (tinyproxy answers them with 401, which
    // for CONNECT can only be the proxy's).
    tokmgr::asio_transport bad(via(origin("verified"), proxy_url("auth", "tokmgr:wrong-" + password + "@")));
    bad.send(post("/api/auth/login", R"({"userName":"u","password":"p"})"), ec);
    CHECK(ec == errc::proxy_authentication_required);
    const std::string message = bad.last_error().message();
    CHECK(message.find("the proxy " + proxy_url("auth") + " answered") != std::string::npos);
    CHECK(message.find("refused the user name and password") != std::string::npos);
    CHECK(message.find(password) == std::string::npos);
    CHECK(message.find("tokmgr:") == std::string::npos);
}

TEST_CASE("a 407 to a plain-HTTP request is the proxy's: an error, not the server's answer") {
    scripted_server proxy([](const received_request&) {
        return script{send(response(407, "<html>proxy page</html>", "Proxy-Authenticate: Basic realm=\"p\"\r\n"))};
    });
    tokmgr::asio_transport transport(via("http://auth.example:8080/textual", "http://u:hunter2@" + proxy.url().substr(7)));
    std::error_code ec;
    const auto response = transport.send(post("/api/auth/login", "{}"), ec);
    CHECK(ec == errc::proxy_authentication_required);
    CHECK(tokmgr::request_not_sent(ec));
    CHECK(response.body.empty());
    CHECK(transport.last_error().detail.find("refused the user name and password") != std::string::npos);
    CHECK(transport.last_error().detail.find("hunter2") == std::string::npos);
    REQUIRE(proxy.requests() == 1);
    const auto seen = proxy.received().at(0);
    CHECK(seen.target == "http://auth.example:8080/textual/api/auth/login");  // absolute form
    CHECK(tokmgr::find_header(seen.headers, "Host") == std::string_view("auth.example:8080"));
    // Basic base64("u:hunter2")
    CHECK(tokmgr::find_header(seen.headers, "Proxy-Authorization") == std::string_view("Basic dTpodW50ZXIy"));
}

TEST_CASE("a proxy that refuses CONNECT is an error naming the proxy and its status") {
    tokmgr::asio_transport transport(via(origin("verified"), proxy_url("refusing")));
    std::error_code ec;
    const auto response = transport.send(post("/api/auth/token_refresh", "{}"), ec);
    CHECK(ec == errc::proxy_tunnel_failed);
    CHECK(tokmgr::request_not_sent(ec));  // a refresh token sent nowhere is not spent
    CHECK(response.status == 0);
    CHECK(response.body.empty());
    CHECK(transport.last_error().detail.find("the proxy " + proxy_url("refusing") + " answered 403 to CONNECT localhost:") !=
          std::string::npos);
}

TEST_CASE("NO_PROXY: an exempt host is reached directly, others through the proxy") {
    const unsigned short closed_port = [] {
        asio::io_context io;
        asio::ip::tcp::acceptor probe(io, asio::ip::tcp::endpoint(asio::ip::address_v4::loopback(), 0));
        return probe.local_endpoint().port();
    }();
    const std::string dead_proxy = "http://u:hunter2@127.0.0.1:" + std::to_string(closed_port);
    auto options = via(origin("verified"), dead_proxy);
    options.no_proxy = "example.invalid, .localhost, localhost";
    tokmgr::asio_transport exempt(options);
    std::error_code ec;
    CHECK(exempt.send(post("/api/x", "{}"), ec).status == 200);
    CHECK_MESSAGE(!ec, exempt.last_error().message());

    options.no_proxy = "example.invalid";
    tokmgr::asio_transport proxied(options);
    proxied.send(post("/api/x", "{}"), ec);
    CHECK(ec == errc::connection_refused);
    const std::string message = proxied.last_error().message();
    CHECK(message.find("could not connect to the proxy http://127.0.0.1:" + std::to_string(closed_port)) !=
          std::string::npos);
    CHECK(message.find("hunter2") == std::string::npos);
}

TEST_CASE("a proxy that never answers CONNECT times out within connect_timeout, as 'not sent'") {
    scripted_server proxy([](const received_request&) { return script{stall()}; });
    auto options = via("https://localhost:1/textual", proxy.url());
    options.connect_timeout = 300ms;
    tokmgr::asio_transport transport(options);
    std::error_code ec;
    const auto start = std::chrono::steady_clock::now();
    transport.send(post("/api/x", "{}"), ec);
    const auto took = std::chrono::steady_clock::now() - start;
    CHECK(ec == errc::connect_timeout);
    CHECK(tokmgr::request_not_sent(ec));
    CHECK(took >= 300ms);
    CHECK(took < 3s);
    CHECK(transport.last_error().detail.find("the proxy " + proxy.url() + " did not answer CONNECT within 300 ms") !=
          std::string::npos);
    REQUIRE(proxy.requests() == 1);
    CHECK(proxy.received()[0].method == "CONNECT");
    CHECK(proxy.received()[0].target == "localhost:1");
}

TEST_CASE("a proxy that closes the tunnel before TLS finishes: a handshake failure through the proxy, not sent") {
    scripted_server proxy([](const received_request&) {
        return script{send("HTTP/1.1 200 Connection established\r\n\r\n"), close_connection()};
    });
    event_log events;
    tokmgr::asio_transport transport(via("https://localhost:1/textual", proxy.url(), &events));
    std::error_code ec;
    transport.send(post("/api/x", "{}"), ec);
    CHECK(ec == errc::tls_handshake_failed);
    CHECK(tokmgr::request_not_sent(ec));
    CHECK(events.count(transport_event_kind::proxy_tunnel_opened) == 1);
    CHECK(transport.last_error().detail.find("through the proxy " + proxy.url()) != std::string::npos);
}

TEST_CASE("a proxy that closes the tunnel while the answer is awaited: 'maybe sent', naming the proxy") {
    scripted_server server([](const received_request&) { return script{stall()}; }, server_tls("localhost"));
    cutting_proxy proxy(server.port());
    event_log events;
    tokmgr::asio_transport transport(via(server.url("/textual"), proxy.url(), &events));
    // Cut once the request has crossed the tunnel and reached the server.
    std::thread cutter([&] {
        for (int i = 0; i < 500 && server.requests() == 0; ++i) std::this_thread::sleep_for(10ms);
        proxy.cut();
    });
    std::error_code ec;
    transport.send(post("/api/auth/token_refresh", R"({"refreshToken":"r1"})"), ec);
    cutter.join();
    CHECK(events.count(transport_event_kind::proxy_tunnel_opened) == 1);
    CHECK(server.requests() == 1);
    CHECK(ec == errc::connection_failed);
    CHECK_FALSE(tokmgr::request_not_sent(ec));  // it reached the server: a refresh token may be spent
    CHECK(transport.last_error().detail.find("through the proxy " + proxy.url()) != std::string::npos);
}

TEST_CASE("a proxy that closes before answering CONNECT, answers too much, or sends bytes after its answer") {
    struct broken {
        const char* what;
        script answer;
        const char* expected;
    };
    const broken cases[] = {
        {"closes", script{close_connection()}, "closed the connection before answering CONNECT"},
        {"oversized", script{send("HTTP/1.1 200 OK\r\nX-Padding: " + std::string(8192, 'p') + "\r\n\r\n")},
         "is larger than max_header_bytes"},
        {"malformed", script{send("HTTP/9 whatever\r\n\r\n")}, "is not valid HTTP"},
        {"surplus", script{send("HTTP/1.1 200 OK\r\n\r\nunexpected")}, "sent data after its answer to CONNECT"},
    };
    for (const auto& c : cases) {
        INFO(c.what);
        scripted_server proxy([&](const received_request&) { return c.answer; });
        auto options = via("https://localhost:1/textual", proxy.url());
        options.max_header_bytes = 4096;
        tokmgr::asio_transport transport(options);
        std::error_code ec;
        transport.send(post("/api/x", "{}"), ec);
        CHECK(ec == errc::proxy_tunnel_failed);
        CHECK(tokmgr::request_not_sent(ec));
        CHECK(transport.last_error().detail.find(c.expected) != std::string::npos);
        CHECK(transport.last_error().detail.find(proxy.url()) != std::string::npos);
    }
}

TEST_CASE("async_send through a proxy: a tunnel on the caller's io_context, and a stalled CONNECT ended by its timer") {
    asio::io_context io;
    event_log events;
    tokmgr::asio_transport transport(io.get_executor(), via(origin("verified"), proxy_url("open"), &events));
    std::error_code result = make_error_code(errc::protocol_error);
    tokmgr::http_response got;
    transport.async_send(post("/api/async", "{}"), [&](std::error_code ec, tokmgr::http_response r) {
        result = ec;
        got = std::move(r);
    });
    io.run();
    CHECK_MESSAGE(!result, transport.last_error().message());
    CHECK(got.body.find("/textual/api/async") != std::string::npos);
    CHECK(events.count(transport_event_kind::proxy_tunnel_opened) == 1);

    scripted_server stalling([](const received_request&) { return script{stall()}; });
    auto options = via("https://localhost:1/textual", stalling.url());
    options.connect_timeout = 300ms;
    asio::io_context io2;
    tokmgr::asio_transport stalled(io2.get_executor(), options);
    std::optional<std::error_code> timed_out;
    stalled.async_send(post("/api/x", "{}"), [&](std::error_code ec, tokmgr::http_response) { timed_out = ec; });
    io2.run_for(5s);
    REQUIRE(timed_out);
    CHECK(*timed_out == errc::connect_timeout);
    CHECK(io2.stopped());  // no timer or socket left behind
}

TEST_CASE("an unusable proxy URL is refused at construction without repeating its password") {
    auto options = via("https://localhost:1", "https://u:hunter2@proxy.example:443");
    std::error_code ec;
    tokmgr::asio_transport transport(options, ec);
    CHECK(ec == errc::invalid_configuration);
    CHECK(transport.last_error().detail.find("the proxy option") != std::string::npos);
    CHECK(transport.last_error().detail.find("hunter2") == std::string::npos);
    CHECK_THROWS_AS(tokmgr::asio_transport{options}, tokmgr::error);
}

}  // TEST_SUITE("proxy")

TEST_SUITE("idle connections") {

TEST_CASE("a kept-alive connection idle longer than max_idle is closed, not reused; a fresher one is reused") {
    scripted_server server([](const received_request& r) { return script{send(response(200, "c" + std::to_string(r.connection)))}; });
    event_log events;
    auto options = plain_options(server.url(), &events);
    options.max_idle = 150ms;
    tokmgr::asio_transport transport(options);
    CHECK(transport.send(post("/x", "{}")).body == "c1");
    CHECK(transport.send(post("/x", "{}")).body == "c1");  // at once: well within max_idle
    CHECK(events.count(transport_event_kind::connection_reused) == 1);
    std::this_thread::sleep_for(300ms);
    CHECK(transport.send(post("/x", "{}")).body == "c2");
    CHECK(events.count(transport_event_kind::idle_connection_closed) == 1);
    CHECK(events.count(transport_event_kind::stale_connection_replaced) == 0);
    CHECK(events.count(transport_event_kind::connection_reused) == 1);
    CHECK(server.connections() == 2);
    CHECK(server.requests() == 3);  // nothing sent twice
    bool named = false;
    for (const auto& d : events.details) named = named || d.find("max_idle 150 ms") != std::string::npos;
    CHECK(named);
}

TEST_CASE("max_idle must be positive") {
    auto options = plain_options("http://127.0.0.1:1");
    options.max_idle = 0ms;
    std::error_code ec;
    tokmgr::asio_transport transport(options, ec);
    CHECK(ec == errc::invalid_configuration);
    CHECK(transport.last_error().detail.find("max_idle") != std::string::npos);
}

}  // TEST_SUITE("idle connections")
