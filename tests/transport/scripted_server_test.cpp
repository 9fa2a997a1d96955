// asio_transport against the scripted server: framing, keep-alive and its
// failure modes, timeouts, size caps, TLS with the test CA, session
// resumption, error codes and messages, the async API.
#include <tokmgr/transport/asio.hpp>  // first: proves it is self-contained

#include <ostream>  // before doctest, so it can print std::error_code

#include <doctest/doctest.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "scripted_server.hpp"
#include "transport_test_support.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

using namespace std::chrono_literals;
using tokmgr::errc;
using tokmgr::transport_event_kind;
using namespace transport_test;

namespace {

script reply(int status, const std::string& body, const std::string& extra = "") {
    return {send(response(status, body, extra))};
}

}  // namespace

TEST_SUITE("scripted") {

TEST_CASE("a POST reaches base path + target, with Host, length and body, and the answer comes back") {
    scripted_server server([](const received_request&) {
        return reply(200, R"({"ok":true})", "X-Reply: Yes\r\ncontent-type: application/json\r\n");
    });
    auto transport = tokmgr::asio_transport(plain_options(server.url("/textual")));
    std::error_code ec;
    const auto response = transport.send(post("/api/auth/login", R"({"userName":"u","password":"pw"})"), ec);
    REQUIRE_FALSE(ec);
    CHECK(response.status == 200);
    CHECK(response.body == R"({"ok":true})");
    CHECK(tokmgr::find_header(response.headers, "x-reply") == std::string_view("Yes"));
    CHECK(tokmgr::find_header(response.headers, "Content-Type") == std::string_view("application/json"));

    const auto got = server.received();
    REQUIRE(got.size() == 1);
    CHECK(got[0].method == "POST");
    CHECK(got[0].target == "/textual/api/auth/login");
    CHECK(got[0].body == R"({"userName":"u","password":"pw"})");
    CHECK(tokmgr::find_header(got[0].headers, "Host") == std::string_view("127.0.0.1:" + std::to_string(server.port())));
    CHECK(tokmgr::find_header(got[0].headers, "Content-Type") == std::string_view("application/json"));
    CHECK(transport.endpoint() == "http://127.0.0.1:" + std::to_string(server.port()));
    CHECK_FALSE(transport.last_error());
}

TEST_CASE("any method, with the caller's headers") {
    scripted_server server([](const received_request&) { return reply(204, ""); });
    tokmgr::asio_transport transport(plain_options(server.url()));
    tokmgr::http_request get;
    get.method = "GET";
    get.target = "/api/users?page=2";
    get.headers.push_back({"Authorization", "Bearer abc.def.ghi"});
    const auto response = transport.send(get);
    CHECK(response.status == 204);
    const auto got = server.received();
    REQUIRE(got.size() == 1);
    CHECK(got[0].method == "GET");
    CHECK(got[0].target == "/api/users?page=2");
    CHECK(tokmgr::find_header(got[0].headers, "Authorization") == std::string_view("Bearer abc.def.ghi"));
    CHECK_FALSE(tokmgr::find_header(got[0].headers, "Content-Length"));
}

TEST_CASE("keep-alive: one connection carries many requests") {
    scripted_server server([](const received_request& r) { return reply(200, "n" + std::to_string(r.index)); });
    event_log events;
    tokmgr::asio_transport transport(plain_options(server.url(), &events));
    for (int i = 1; i <= 5; ++i) CHECK(transport.send(post("/x", "{}")).body == "n" + std::to_string(i));
    CHECK(server.connections() == 1);
    CHECK(events.count(transport_event_kind::connected) == 1);
    CHECK(events.count(transport_event_kind::connection_reused) == 4);
}

TEST_CASE("keep_alive = false: Connection: close and a new connection per request") {
    scripted_server server([](const received_request&) { return script{send(response(200, "x")), close_connection()}; });
    auto options = plain_options(server.url());
    options.keep_alive = false;
    tokmgr::asio_transport transport(options);
    transport.send(post("/x", "{}"));
    transport.send(post("/x", "{}"));
    CHECK(server.connections() == 2);
    CHECK(server.received()[0].head.find("Connection: close\r\n") != std::string::npos);
}

TEST_CASE("a chunked body with extensions and trailers, split across many writes") {
    scripted_server server([](const received_request&) {
        script s;
        const std::string wire =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n";
        for (std::size_t i = 0; i < wire.size(); i += 3) {
            s.push_back(send(wire.substr(i, 3)));
            s.push_back(pause(1ms));
        }
        return s;
    });
    event_log events;
    tokmgr::asio_transport transport(plain_options(server.url(), &events));
    CHECK(transport.send(post("/x", "{}")).body == "hello world");
    // The connection survives a chunked response.
    CHECK(transport.send(post("/x", "{}")).body == "hello world");
    CHECK(server.connections() == 1);
}

TEST_CASE("Connection: close and HTTP/1.0 are read to the end of the stream, then a new connection") {
    scripted_server server([](const received_request& r) {
        if (r.connection == 1)
            return script{send("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nfirst"), pause(5ms), send(" part"),
                          close_connection()};
        return script{send("HTTP/1.0 200 OK\r\n\r\nold"), close_connection()};
    });
    tokmgr::asio_transport transport(plain_options(server.url()));
    CHECK(transport.send(post("/x", "{}")).body == "first part");
    CHECK(transport.send(post("/x", "{}")).body == "old");
    CHECK(server.connections() == 2);
}

TEST_CASE("100 Continue is skipped") {
    scripted_server server([](const received_request&) {
        return script{send("HTTP/1.1 100 Continue\r\n\r\n"), pause(5ms), send(response(201, "made"))};
    });
    tokmgr::asio_transport transport(plain_options(server.url()));
    const auto response = transport.send(post("/x", "{}"));
    CHECK(response.status == 201);
    CHECK(response.body == "made");
}

TEST_CASE("a truncated body is an incomplete answer (a protocol error) that names the host") {
    scripted_server server([](const received_request&) {
        return script{send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"), close_connection()};
    });
    tokmgr::asio_transport transport(plain_options(server.url()));
    std::error_code ec;
    transport.send(post("/api/auth/login", "{}"), ec);
    CHECK(ec == errc::protocol_error);
    CHECK_FALSE(tokmgr::request_not_sent(ec));
    CHECK(transport.last_error().detail.find("127.0.0.1:" + std::to_string(server.port())) != std::string::npos);
    CHECK(transport.last_error().detail.find("91 bytes before the end") != std::string::npos);
}

TEST_CASE("malformed answers are protocol errors") {
    const std::vector<std::string> answers = {
        "HTTP/1.1 OK\r\n\r\n",
        "SSH-2.0-OpenSSH\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nnot-hex\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: twelve\r\n\r\n",
    };
    for (const auto& answer : answers) {
        INFO(answer);
        scripted_server server([&](const received_request&) { return script{send(answer), stall()}; });
        tokmgr::asio_transport transport(plain_options(server.url()));
        std::error_code ec;
        transport.send(post("/x", "{}"), ec);
        CHECK(ec == errc::protocol_error);
        CHECK(transport.last_error().message().find("127.0.0.1") != std::string::npos);
        server.stop();
    }
}

TEST_CASE("Content-Length with Transfer-Encoding is an error, and nothing of that connection is reused") {
    // RFC 9112 §6.3: such a message "ought to be handled as an error"; what
    // follows it on the connection may be a smuggled response.
    std::atomic<int> answered{0};
    scripted_server server([&answered](const received_request&) {
        if (++answered == 1)
            return script{send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"),
                          stall()};
        return reply(200, "honest");
    });
    tokmgr::asio_transport transport(plain_options(server.url()));
    std::error_code ec;
    transport.send(post("/x", "{}"), ec);
    CHECK(ec == errc::protocol_error);
    const auto next = transport.send(post("/x", "{}"), ec);
    CHECK_FALSE(ec);
    CHECK(next.body == "honest");
    CHECK(server.connections() == 2);
}

TEST_CASE("oversized headers and bodies are refused with their own error, without reading the rest") {
    SUBCASE("headers") {
        scripted_server server([](const received_request&) {
            return script{send("HTTP/1.1 200 OK\r\nX-Huge: " + std::string(100 * 1024, 'a') + "\r\n\r\n"), stall()};
        });
        tokmgr::asio_transport transport(plain_options(server.url()));
        std::error_code ec;
        transport.send(post("/x", "{}"), ec);
        CHECK(ec == errc::response_too_large);
    }
    SUBCASE("an announced body: refused before the body arrives") {
        scripted_server server([](const received_request&) {
            return script{send("HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n"), stall()};
        });
        tokmgr::asio_transport transport(plain_options(server.url()));
        std::error_code ec;
        const auto started = std::chrono::steady_clock::now();
        transport.send(post("/x", "{}"), ec);
        CHECK(ec == errc::response_too_large);
        CHECK(std::chrono::steady_clock::now() - started < 1s);  // did not wait for the body or the timeout
    }
    SUBCASE("a chunked body that grows past a configured cap") {
        scripted_server server([](const received_request&) {
            script s{send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")};
            for (int i = 0; i < 100; ++i) s.push_back(send("400\r\n" + std::string(1024, 'b') + "\r\n"));
            s.push_back(stall());
            return s;
        });
        auto options = plain_options(server.url());
        options.max_response_bytes = 10 * 1024;
        tokmgr::asio_transport transport(options);
        std::error_code ec;
        transport.send(post("/x", "{}"), ec);
        CHECK(ec == errc::response_too_large);
        CHECK(transport.last_error().detail.find("10240") != std::string::npos);
    }
}

TEST_CASE("a stalled response times out, cleanly and on time") {
    scripted_server server([](const received_request& r) {
        if (r.connection == 1) return script{send("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"), stall()};
        return reply(200, "recovered");
    });
    auto options = plain_options(server.url());
    options.request_timeout = 300ms;
    tokmgr::asio_transport transport(options);
    std::error_code ec;
    const auto started = std::chrono::steady_clock::now();
    transport.send(post("/x", "{}"), ec);
    const auto took = std::chrono::steady_clock::now() - started;
    CHECK(ec == errc::timeout);
    CHECK(took >= 300ms);
    CHECK(took < 2s);
    CHECK(transport.last_error().detail.find("300 ms") != std::string::npos);
    // The timed-out connection is not reused: the next request gets a new one.
    CHECK(transport.send(post("/x", "{}")).body == "recovered");
    CHECK(server.connections() == 2);
}

TEST_CASE("a request larger than the socket buffer is written whole, on a reused connection too") {
    // Over plain TCP the first send is one direct non-blocking call; what it
    // cannot write goes through Asio, and the server must get every byte.
    scripted_server server([](const received_request& r) { return reply(200, std::to_string(r.body.size())); });
    event_log events;
    tokmgr::asio_transport transport(plain_options(server.url(), &events));
    const std::string small(100, 's');
    const std::string big(8 * 1024 * 1024, 'b');
    CHECK(transport.send(post("/x", small)).body == "100");
    CHECK(transport.send(post("/x", big)).body == std::to_string(big.size()));
    CHECK(transport.send(post("/x", big)).body == std::to_string(big.size()));
    const auto got = server.received();
    REQUIRE(got.size() == 3);
    CHECK(got[1].body == big);
    CHECK(got[2].body == big);
    CHECK(server.connections() == 1);
    CHECK(events.count(transport_event_kind::connection_reused) == 2);
}

TEST_CASE("async_send on the caller's io_context times out through its timer, then leaves no work behind") {
    // The blocking send bounds its own waits; async_send keeps the timer.
    scripted_server server([](const received_request& r) {
        if (r.connection == 1) return script{stall()};
        return reply(200, "recovered");
    });
    asio::io_context io;
    auto options = plain_options(server.url());
    options.request_timeout = 300ms;
    tokmgr::asio_transport transport(io.get_executor(), options);
    std::optional<std::error_code> result;
    const auto started = std::chrono::steady_clock::now();
    transport.async_send(post("/x", "{}"), [&](std::error_code ec, tokmgr::http_response) { result = ec; });
    io.run();  // returns: the timer was the only work left, and it fired
    const auto took = std::chrono::steady_clock::now() - started;
    REQUIRE(result);
    CHECK(*result == errc::timeout);
    CHECK(took >= 300ms);
    CHECK(took < 2s);
    // An answered request cancels its timer: run() returns long before the limit.
    options.request_timeout = 5s;
    tokmgr::asio_transport answered(io.get_executor(), options);
    std::string body;
    io.restart();
    answered.async_send(post("/x", "{}"), [&](std::error_code ec, tokmgr::http_response r) {
        CHECK_FALSE(ec);
        body = r.body;
    });
    const auto second = std::chrono::steady_clock::now();
    io.run();
    CHECK(body == "recovered");
    CHECK(std::chrono::steady_clock::now() - second < 2s);
}

TEST_CASE("send times out again on the next stall and stays usable afterwards") {
    // Two stalls in a row on the same transport: each send enforces its own
    // limit, and nothing from the first (no stale deadline) affects the next.
    scripted_server server([](const received_request& r) {
        if (r.connection <= 2) return script{stall()};
        return reply(200, "ok");
    });
    auto options = plain_options(server.url());
    options.request_timeout = 200ms;
    tokmgr::asio_transport transport(options);
    for (int i = 0; i < 2; ++i) {
        std::error_code ec;
        const auto started = std::chrono::steady_clock::now();
        transport.send(post("/x", "{}"), ec);
        const auto took = std::chrono::steady_clock::now() - started;
        CHECK(ec == errc::timeout);
        CHECK(took >= 200ms);
        CHECK(took < 2s);
    }
    CHECK(transport.send(post("/x", "{}")).body == "ok");
    CHECK(server.connections() == 3);
}

TEST_CASE("a reset in the middle of the response is a broken connection") {
    scripted_server server([](const received_request&) {
        return script{send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"), pause(20ms), reset_connection()};
    });
    tokmgr::asio_transport transport(plain_options(server.url()));
    std::error_code ec;
    transport.send(post("/x", "{}"), ec);
    CHECK(ec == errc::connection_failed);
}

TEST_CASE("the server closing an idle keep-alive connection is detected before the next request") {
    scripted_server server([](const received_request& r) {
        // The first connection answers once, then the server closes it while idle.
        if (r.connection == 1) return script{send(response(200, "one")), close_connection()};
        return reply(200, "two");
    });
    event_log events;
    tokmgr::asio_transport transport(plain_options(server.url(), &events));
    CHECK(transport.send(post("/x", "{}")).body == "one");
    REQUIRE(server.wait_closed(1));
    std::error_code ec;
    CHECK(transport.send(post("/x", "{}"), ec).body == "two");
    CHECK_FALSE(ec);
    CHECK(server.connections() == 2);
    CHECK(server.requests() == 2);  // sent once each: nothing was replayed
    CHECK(events.count(transport_event_kind::stale_connection_replaced) == 1);
}

TEST_CASE("an idle connection reset by the server is replaced too") {
    scripted_server server([](const received_request& r) {
        if (r.connection == 1) return script{send(response(200, "one")), wait_gate(), reset_connection()};
        return reply(200, "two");
    });
    tokmgr::asio_transport transport(plain_options(server.url()));
    transport.send(post("/x", "{}"));
    server.open_gate();  // the reset comes after the client has read the answer
    REQUIRE(server.wait_closed(1));
    CHECK(transport.send(post("/x", "{}")).body == "two");
    CHECK(server.requests() == 2);
}

namespace {

/// This process's socket bound to loopback port `port`, or -1.
int socket_with_local_port(unsigned short port) {
    for (int fd = 3; fd < 1024; ++fd) {
        sockaddr_storage address{};
        socklen_t length = sizeof address;
        if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) continue;
        if (address.ss_family == AF_INET && ntohs(reinterpret_cast<sockaddr_in*>(&address)->sin_port) == port) return fd;
    }
    return -1;
}

}  // namespace

TEST_CASE("a write that fails on the reused connection before any byte left is sent once on a new one") {
    // The hook runs after the idle check and before the write; shutting the
    // client's sending side there makes the write fail with nothing sent,
    // the one case in which re-sending is provably safe.
    scripted_server server([](const received_request& r) { return reply(200, "c" + std::to_string(r.connection)); });
    event_log events;
    auto options = plain_options(server.url());
    bool sabotaged = false;
    options.on_event = [&](const tokmgr::transport_event& e) {
        events.kinds.push_back(e.kind);
        if (e.kind == transport_event_kind::connection_reused && !sabotaged) {
            sabotaged = true;
            const int fd = socket_with_local_port(server.received().at(0).peer_port);
            REQUIRE(fd >= 0);
            ::shutdown(fd, SHUT_WR);
        }
    };
    tokmgr::asio_transport transport(options);
    CHECK(transport.send(post("/x", "{}")).body == "c1");
    std::error_code ec;
    CHECK(transport.send(post("/x", "{}"), ec).body == "c2");
    CHECK_FALSE(ec);
    CHECK(events.count(transport_event_kind::request_resent) == 1);
    CHECK(server.requests() == 2);  // the failed write delivered nothing
    CHECK(server.connections() == 2);
}

TEST_CASE("a request whose answer was lost is not replayed") {
    // The second request on the kept-alive connection reaches the server,
    // which closes without answering: the transport cannot know whether it
    // was processed (a token_refresh may have rotated), so it reports
    // "maybe sent" and does not send it again.
    scripted_server server([](const received_request& r) {
        if (r.index == 2) return script{close_connection()};
        return reply(200, "ok");
    });
    tokmgr::asio_transport transport(plain_options(server.url()));
    transport.send(post("/api/auth/token_refresh", R"({"refreshToken":"r1"})"));
    std::error_code ec;
    transport.send(post("/api/auth/token_refresh", R"({"refreshToken":"r2"})"), ec);
    CHECK(ec == errc::connection_failed);
    CHECK_FALSE(tokmgr::request_not_sent(ec));
    CHECK(server.requests() == 2);
    CHECK(server.connections() == 1);
}

TEST_CASE("a 3xx is an answer, not followed and not an error") {
    scripted_server server([](const received_request&) {
        return reply(302, "", "Location: https://elsewhere.example/steal\r\n");
    });
    tokmgr::asio_transport transport(plain_options(server.url()));
    std::error_code ec;
    const auto response = transport.send(post("/api/auth/login", "{}"), ec);
    CHECK_FALSE(ec);
    CHECK(response.status == 302);
    CHECK(tokmgr::find_header(response.headers, "location") == std::string_view("https://elsewhere.example/steal"));
    CHECK_FALSE(transport.last_error());
    CHECK(server.requests() == 1);  // nothing went to the Location
    CHECK(transport.send(post("/api/auth/login", "{}")).status == 302);
    CHECK(server.requests() == 2);
}

TEST_CASE("4xx and 5xx statuses are answers, not transport errors") {
    scripted_server server([](const received_request&) { return reply(503, R"({"message":"down"})", "Retry-After: 5\r\n"); });
    tokmgr::asio_transport transport(plain_options(server.url()));
    std::error_code ec;
    const auto response = transport.send(post("/x", "{}"), ec);
    CHECK_FALSE(ec);
    CHECK(response.status == 503);
    CHECK(tokmgr::find_header(response.headers, "retry-after") == std::string_view("5"));
}

TEST_CASE("connection refused, unresolvable host, bad URL: 'not sent' errors that name the host") {
    unsigned short closed_port = 0;
    {
        scripted_server server([](const received_request&) { return script{}; });
        closed_port = server.port();
    }
    tokmgr::asio_transport refused(plain_options("http://127.0.0.1:" + std::to_string(closed_port)));
    std::error_code ec;
    refused.send(post("/x", "{}"), ec);
    CHECK(ec == errc::connection_refused);
    CHECK(tokmgr::request_not_sent(ec));
    CHECK(refused.last_error().detail.find("127.0.0.1:" + std::to_string(closed_port)) != std::string::npos);

    // An empty label: the resolver refuses it locally, with no DNS query.
    tokmgr::asio_transport unresolvable(plain_options("http://no..such.host:8080"));
    unresolvable.send(post("/x", "{}"), ec);
    CHECK(ec == errc::resolve_failed);
    CHECK(tokmgr::request_not_sent(ec));
    CHECK(unresolvable.last_error().detail.find("no..such.host") != std::string::npos);

    CHECK_THROWS_AS(tokmgr::asio_transport(plain_options("ftp://x")), tokmgr::error);
    try {
        tokmgr::asio_transport bad(plain_options("https://user:hunter2@host"));
        FAIL("a URL with credentials was accepted");
    } catch (const tokmgr::error& e) {
        CHECK(e.code() == errc::invalid_url);
        CHECK(std::string(e.what()).find("hunter2") == std::string::npos);
    }
    tokmgr::asio_transport deferred(plain_options("not a url"), ec);
    CHECK(ec == errc::invalid_url);
    CHECK(deferred.last_error().detail.find("http:// or https://") != std::string::npos);
    std::error_code send_ec;
    deferred.send(post("/x", "{}"), send_ec);
    CHECK(send_ec == errc::invalid_url);
}

TEST_CASE("connect timeout: a listener whose backlog is full never completes the handshake") {
    asio::io_context io;
    asio::ip::tcp::acceptor full(io, asio::ip::tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    full.listen(0);
    // Fill the accept queue (Linux admits backlog + 1); later SYNs are dropped.
    std::vector<asio::ip::tcp::socket> fillers;
    for (int i = 0; i < 4; ++i) {
        fillers.emplace_back(io);
        fillers.back().open(asio::ip::tcp::v4());
        fillers.back().non_blocking(true);
        // ::connect, since Asio's blocking connect would wait for the dropped SYN.
        const auto target = full.local_endpoint();
        [[maybe_unused]] const int rc = ::connect(fillers.back().native_handle(), target.data(),
                                                  static_cast<socklen_t>(target.size()));
    }
    std::this_thread::sleep_for(50ms);
    auto options = plain_options("http://127.0.0.1:" + std::to_string(full.local_endpoint().port()));
    options.connect_timeout = 300ms;
    tokmgr::asio_transport transport(options);
    std::error_code ec;
    const auto started = std::chrono::steady_clock::now();
    transport.send(post("/x", "{}"), ec);
    CHECK(ec == errc::connect_timeout);
    CHECK(tokmgr::request_not_sent(ec));
    CHECK(std::chrono::steady_clock::now() - started < 2s);
}

TEST_CASE("no secret in any error text") {
    const std::string password = "correct-horse-battery-staple";
    const std::string bearer = "Bearer eyJsecret.jwt.value";
    scripted_server server([](const received_request&) {
        return script{send("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\ncut"), close_connection()};
    });
    tokmgr::asio_transport transport(plain_options(server.url()));
    const std::string body = R"({"userName":"u","password":")" + password + "\"}";
    auto request = post("/api/auth/login?user=x", body);
    request.headers.push_back({"Authorization", bearer});
    std::error_code ec;
    transport.send(request, ec);
    REQUIRE(ec);
    const std::string text = transport.last_error().message();
    CHECK(text.find(password) == std::string::npos);
    CHECK(text.find("eyJsecret") == std::string::npos);
    CHECK(text.find("user=x") == std::string::npos);
    CHECK(text.find("/api/auth/login") != std::string::npos);

    request.headers = {{"Authorization", bearer + "\r\nX-Injected: 1"}};
    transport.send(request, ec);
    CHECK(ec == errc::invalid_configuration);
    CHECK(transport.last_error().message().find("eyJsecret") == std::string::npos);
}

TEST_CASE("the transport is movable; the moved-to one keeps the connection") {
    scripted_server server([](const received_request&) { return reply(200, "ok"); });
    tokmgr::asio_transport first(plain_options(server.url()));
    first.send(post("/x", "{}"));
    tokmgr::asio_transport second(std::move(first));
    CHECK(second.send(post("/x", "{}")).body == "ok");
    CHECK(server.connections() == 1);
    std::error_code ec;
    first.send(post("/x", "{}"), ec);  // NOLINT(bugprone-use-after-move): defined as an error
    CHECK(ec == errc::invalid_configuration);
}

TEST_CASE("IPv6 literal") {
    scripted_server server([](const received_request&) { return reply(200, "v6"); }, std::nullopt,
                           asio::ip::address_v6::loopback());
    tokmgr::asio_transport transport(plain_options(server.url("/base")));
    CHECK(transport.endpoint() == "http://[::1]:" + std::to_string(server.port()));
    CHECK(transport.send(post("/x", "{}")).body == "v6");
    CHECK(server.received()[0].target == "/base/x");
    CHECK(tokmgr::find_header(server.received()[0].headers, "Host") ==
          std::string_view("[::1]:" + std::to_string(server.port())));
}

}  // TEST_SUITE("scripted")

TEST_SUITE("scripted tls") {

TEST_CASE("verified TLS with the CA file; the session is resumed on reconnection") {
    scripted_server server([](const received_request&) { return script{send(response(200, "secure")), close_connection()}; },
                           server_tls("localhost"));
    event_log events;
    tokmgr::asio_transport transport(tls_options(server.url("/textual"), &events));
    CHECK(transport.send(post("/api/auth/login", "{}")).body == "secure");
    // The server closes after answering; waiting for that close makes the
    // second request find the connection closed (and open a new one) every
    // time, rather than racing the close on a loaded machine.
    REQUIRE(server.wait_closed(1));
    CHECK(transport.send(post("/api/auth/login", "{}")).body == "secure");
    CHECK(server.connections() == 2);
    CHECK(events.count(transport_event_kind::connected) == 2);
    CHECK(events.count(transport_event_kind::tls_session_resumed) == 1);
}

TEST_CASE("TLS keep-alive and a stale TLS connection") {
    scripted_server server([](const received_request& r) {
        if (r.connection == 1 && r.index == 2) return script{send(response(200, "b")), close_connection()};
        return reply(200, "ok");
    }, server_tls("localhost"));
    event_log events;
    tokmgr::asio_transport transport(tls_options(server.url(), &events));
    transport.send(post("/x", "{}"));
    CHECK(transport.send(post("/x", "{}")).body == "b");
    REQUIRE(server.wait_closed(1));
    CHECK(transport.send(post("/x", "{}")).body == "ok");
    CHECK(server.connections() == 2);
    CHECK(server.requests() == 3);
    CHECK(events.count(transport_event_kind::stale_connection_replaced) == 1);
    CHECK(events.count(transport_event_kind::tls_session_resumed) == 1);
}

TEST_CASE("the system trust store does not know the test CA") {
    scripted_server server([](const received_request&) { return reply(200, "x"); }, server_tls("localhost"));
    auto options = tls_options(server.url());
    options.ca_file.clear();
    tokmgr::asio_transport transport(options);
    std::error_code ec;
    transport.send(post("/x", "{}"), ec);
    CHECK(ec == errc::certificate_verification_failed);
    CHECK(tokmgr::request_not_sent(ec));
    CHECK(server.requests() == 0);
}

TEST_CASE("a missing CA file is a configuration error at construction") {
    auto options = tls_options("https://localhost:1");
    options.ca_file = tls_dir() + "/pki/no-such-file.pem";
    std::error_code ec;
    tokmgr::asio_transport transport(options, ec);
    CHECK(ec == errc::invalid_configuration);
    CHECK(transport.last_error().detail.find("no-such-file.pem") != std::string::npos);
    transport.send(post("/x", "{}"), ec);
    CHECK(ec == errc::invalid_configuration);
    CHECK(transport.last_error().detail.find("no-such-file.pem") != std::string::npos);
    CHECK_THROWS_AS(tokmgr::asio_transport{options}, tokmgr::error);
}

TEST_CASE("a TLS handshake that never finishes times out as a 'not sent' error") {
    // A plain server: it waits for an HTTP request that never comes, while
    // the client waits for a ServerHello.
    scripted_server server([](const received_request&) { return script{}; });
    auto options = tls_options("https://localhost:" + std::to_string(server.port()));
    options.handshake_timeout = 300ms;
    tokmgr::asio_transport transport(options);
    std::error_code ec;
    transport.send(post("/x", "{}"), ec);
    CHECK(ec == errc::connect_timeout);
    CHECK(tokmgr::request_not_sent(ec));
    CHECK(transport.last_error().detail.find("TLS handshake") != std::string::npos);
}

TEST_CASE("insecure_skip_tls_verify accepts an unknown CA and says so once") {
    scripted_server server([](const received_request&) { return reply(200, "anyone"); }, server_tls("untrusted"));
    event_log events;
    auto options = tls_options(server.url(), &events);
    options.ca_file.clear();
    options.insecure_skip_tls_verify = true;
    tokmgr::asio_transport transport(options);
    CHECK(events.count(transport_event_kind::tls_verification_disabled) == 1);
    CHECK(events.details.front().find("insecure_skip_tls_verify") != std::string::npos);
    CHECK(transport.send(post("/x", "{}")).body == "anyone");
    CHECK(transport.send(post("/x", "{}")).body == "anyone");
    CHECK(events.count(transport_event_kind::tls_verification_disabled) == 1);
}

TEST_CASE("a server offering only TLS 1.1 is refused") {
    scripted_server server([](const received_request&) { return reply(200, "old"); },
                           server_tls("localhost", TLS1_1_VERSION));
    tokmgr::asio_transport transport(tls_options(server.url()));
    std::error_code ec;
    transport.send(post("/x", "{}"), ec);
    CHECK(ec == errc::tls_handshake_failed);
    CHECK(tokmgr::request_not_sent(ec));
    CHECK(server.requests() == 0);
}

}  // TEST_SUITE("scripted tls")

#if defined(__cpp_impl_coroutine) && defined(ASIO_HAS_CO_AWAIT)
TEST_CASE("async_send from a C++20 coroutine on the caller's io_context") {
    scripted_server server([](const received_request& r) { return reply(200, "async " + std::to_string(r.index)); });
    asio::io_context io;
    tokmgr::asio_transport transport(io.get_executor(), plain_options(server.url()));
    std::vector<std::string> bodies;
    std::error_code last_ec;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            for (int i = 0; i < 3; ++i) {
                std::error_code ec;
                auto response =
                    co_await transport.async_send(post("/x", "{}"), asio::redirect_error(asio::use_awaitable, ec));
                last_ec = ec;
                bodies.push_back(response.body);
            }
        },
        asio::detached);
    io.run();
    CHECK_FALSE(last_ec);
    CHECK(bodies == std::vector<std::string>{"async 1", "async 2", "async 3"});
    CHECK(server.connections() == 1);

    // A transport on an external executor has no blocking send.
    std::error_code ec;
    transport.send(post("/x", "{}"), ec);
    CHECK(ec == errc::invalid_configuration);
}
#endif

#if defined(__cpp_impl_coroutine) && defined(ASIO_HAS_CO_AWAIT)
TEST_CASE("an async_send awaitable that is never awaited leaves the transport free") {
    scripted_server server([](const received_request& r) { return reply(200, "sent " + std::to_string(r.index)); });
    asio::io_context io;
    tokmgr::asio_transport transport(io.get_executor(), plain_options(server.url()));
    {
        // Prepared (the request serialised, the transport claimed), then dropped.
        auto never_awaited = transport.async_send(post("/x", "{\"password\":\"p\"}"), asio::use_awaitable);
    }
    std::optional<std::error_code> result;
    std::string body;
    transport.async_send(post("/x", "{}"), [&](std::error_code e, tokmgr::http_response r) {
        result = e;
        body = r.body;
    });
    io.run();
    REQUIRE(result);
    CHECK_FALSE(*result);  // not "another request is still in flight"
    CHECK(body == "sent 1");
    CHECK(server.requests() == 1);
}
#endif

TEST_CASE("runs_on_executor tells which of send and async_send the transport serves") {
    scripted_server server([](const received_request&) { return reply(200, "ok"); });

    tokmgr::asio_transport blocking(plain_options(server.url()));
    CHECK_FALSE(blocking.runs_on_executor());
    std::error_code ec;
    CHECK(blocking.send(post("/x", "{}"), ec).body == "ok");
    CHECK_FALSE(ec);

    asio::io_context io;
    tokmgr::asio_transport on_executor(io.get_executor(), plain_options(server.url()));
    CHECK(on_executor.runs_on_executor());
    on_executor.send(post("/x", "{}"), ec);
    CHECK(ec == errc::invalid_configuration);
    std::optional<std::error_code> async_result;
    on_executor.async_send(post("/x", "{}"), [&](std::error_code e, tokmgr::http_response) { async_result = e; });
    io.run();
    REQUIRE(async_result);
    CHECK_FALSE(*async_result);

    // The answer follows the transport when it moves; the moved-from one serves neither.
    tokmgr::asio_transport moved(std::move(on_executor));
    CHECK(moved.runs_on_executor());
    CHECK_FALSE(on_executor.runs_on_executor());  // NOLINT(bugprone-use-after-move): documented state
    tokmgr::asio_transport_options bad_url;
    bad_url.base_url = "ftp://x";
    tokmgr::asio_transport constructed_failing(bad_url, ec);
    CHECK(ec == errc::invalid_url);
    CHECK_FALSE(constructed_failing.runs_on_executor());
}

TEST_CASE("async_send with a plain callback completes outside the initiating call") {
    scripted_server server([](const received_request&) { return reply(200, "cb"); });
    asio::io_context io;
    tokmgr::asio_transport transport(io.get_executor(), plain_options(server.url()));
    bool done = false;
    tokmgr::http_response got;
    {
        std::string body = R"({"refreshToken":"temporary"})";  // the request need not outlive the call
        transport.async_send(post("/x", body), [&](std::error_code ec, tokmgr::http_response r) {
            CHECK_FALSE(ec);
            got = std::move(r);
            done = true;
        });
        body.assign(body.size(), 'x');
    }
    CHECK_FALSE(done);
    io.run();
    CHECK(done);
    CHECK(got.body == "cb");
    CHECK(server.received()[0].body == R"({"refreshToken":"temporary"})");
}

TEST_CASE("destroying the transport ends a pending async_send with an error") {
    scripted_server server([](const received_request&) { return script{stall()}; });
    asio::io_context io;
    auto transport = std::make_unique<tokmgr::asio_transport>(io.get_executor(), plain_options(server.url()));
    std::optional<std::error_code> result;
    transport->async_send(post("/x", "{}"), [&](std::error_code ec, tokmgr::http_response) { result = ec; });
    for (int i = 0; i < 500 && server.requests() == 0; ++i) io.run_for(10ms);
    REQUIRE(server.requests() == 1);
    REQUIRE_FALSE(result);  // the server stalls: the operation is pending
    transport.reset();
    io.run_for(2s);
    REQUIRE(result);
    CHECK(*result == errc::connection_failed);
}

TEST_CASE("a second async_send while one is in flight is refused without disturbing the first") {
    scripted_server server([](const received_request&) { return script{pause(100ms), send(response(200, "first"))}; });
    asio::io_context io;
    tokmgr::asio_transport transport(io.get_executor(), plain_options(server.url()));
    std::error_code first_ec, second_ec;
    std::string first_body;
    const std::string body(4096, 'b');
    transport.async_send(post("/x", body), [&](std::error_code ec, tokmgr::http_response r) {
        first_ec = ec;
        first_body = r.body;
    });
    transport.async_send(post("/x", "{}"), [&](std::error_code ec, tokmgr::http_response) { second_ec = ec; });
    io.run();
    CHECK(second_ec == errc::invalid_configuration);
    CHECK_FALSE(first_ec);
    CHECK(first_body == "first");
    REQUIRE(server.requests() == 1);
    CHECK(server.received()[0].body == body);
}
