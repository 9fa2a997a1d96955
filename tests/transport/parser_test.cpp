// The Asio-free parts of the Asio transport: URL parsing, request
// serialisation and the incremental response parser (including a
// fault-by-count sweep and a seeded fuzz loop). No sockets, so it builds and
// runs in a moment.
#include <tokmgr/transport/detail/response_parser.hpp>  // first: proves it is self-contained
#include <tokmgr/transport/detail/request_writer.hpp>
#include <tokmgr/transport/detail/url.hpp>

#include <ostream>  // before doctest, so it can print std::error_code

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

using tokmgr::errc;
using tokmgr::detail::parse_url;
using tokmgr::detail::parsed_url;
using tokmgr::detail::response_limits;
using tokmgr::detail::response_parser;

namespace {

parsed_url url_or_fail(std::string_view text) {
    parsed_url url;
    tokmgr::error_info failed;
    INFO(text);
    CHECK(parse_url(text, url, failed));
    CHECK_FALSE(failed);
    return url;
}

std::string url_error(std::string_view text) {
    parsed_url url;
    tokmgr::error_info failed;
    INFO(text);
    CHECK_FALSE(parse_url(text, url, failed));
    CHECK(failed.code == errc::invalid_url);
    CHECK_FALSE(failed.detail.empty());
    return failed.detail;
}

struct parse_result {
    std::error_code ec;
    bool done = false;
    bool keep_alive = false;
    std::size_t consumed = 0;
    tokmgr::http_response response;
    std::string detail;
};

// Feeds `wire` in pieces of `piece` bytes (0: all at once); `eof` then reports
// the end of the stream if the parser is not done.
parse_result parse(std::string_view wire, std::size_t piece = 0, bool eof = true, response_limits limits = {},
                   bool head = false) {
    response_parser parser(limits, head);
    parse_result r;
    std::size_t offset = 0;
    while (offset < wire.size() && !parser.done()) {
        const std::size_t n = piece == 0 ? wire.size() - offset : std::min(piece, wire.size() - offset);
        const std::size_t used = parser.feed(wire.substr(offset, n), r.ec);
        REQUIRE(used <= n);
        r.consumed += used;
        offset += n;
        if (r.ec) break;
        if (used < n) break;  // the response ended inside this piece
    }
    if (!r.ec && !parser.done() && eof) parser.finish(r.ec);
    r.done = parser.done();
    r.keep_alive = parser.keep_alive();
    r.detail = parser.last_error().detail;
    r.response = parser.release();
    return r;
}

// The same outcome however the bytes are split.
parse_result parse_every_split(std::string_view wire, bool eof = true, response_limits limits = {}) {
    const parse_result whole = parse(wire, 0, eof, limits);
    for (std::size_t piece : {1u, 2u, 3u, 7u, 64u}) {
        const parse_result split = parse(wire, piece, eof, limits);
        INFO("piece size " << piece);
        CHECK(split.ec == whole.ec);
        CHECK(split.done == whole.done);
        CHECK(split.response.status == whole.response.status);
        if (!whole.ec) CHECK(split.response.body == whole.response.body);
        CHECK(split.keep_alive == whole.keep_alive);
    }
    return whole;
}

}  // namespace

TEST_CASE("url: schemes, hosts, ports and base paths") {
    auto u = url_or_fail("https://textual.example.com/textual/");
    CHECK(u.tls);
    CHECK(u.host == "textual.example.com");
    CHECK(u.port == 443);
    CHECK(u.default_port);
    CHECK(u.base_path == "/textual");
    CHECK(u.endpoint() == "https://textual.example.com:443");
    CHECK(u.host_header() == "textual.example.com");

    u = url_or_fail("HTTP://Example.COM:8080");
    CHECK_FALSE(u.tls);
    CHECK(u.host == "example.com");
    CHECK(u.port == 8080);
    CHECK(u.host_header() == "example.com:8080");
    CHECK(u.base_path.empty());

    u = url_or_fail("http://127.0.0.1:80/");
    CHECK(u.host_is_ipv4);
    CHECK(u.default_port);
    CHECK(u.base_path.empty());

    u = url_or_fail("https://[::1]:8443/a/b");
    CHECK(u.host_is_ipv6);
    CHECK(u.host == "::1");
    CHECK(u.endpoint() == "https://[::1]:8443");
    CHECK(u.host_header() == "[::1]:8443");
    CHECK(u.base_path == "/a/b");

    CHECK(url_or_fail("http://[2001:db8::7:1]").host_is_ipv6);
    CHECK(url_or_fail("http://[::ffff:192.0.2.1]").host_is_ipv6);
    CHECK(url_or_fail("http://[1:2:3:4:5:6:7:8]").host_is_ipv6);
}

TEST_CASE("url: what is refused, with a reason that does not repeat the URL") {
    CHECK(url_error("ftp://host").find("scheme") != std::string::npos);
    url_error("host/path");
    url_error("https://");
    url_error("https://:443");
    const std::string why = url_error("https://user:hunter2@host/");
    CHECK(why.find("hunter2") == std::string::npos);
    CHECK(why.find("password") != std::string::npos);
    url_error("https://host:0");
    url_error("https://host:65536");
    url_error("https://host:");
    url_error("https://host:8a");
    url_error("https://host:+80");  // digits only: no sign
    url_error("https://[::1");
    url_error("https://[fe80::1%25eth0]");
    url_error("https://[1:2:3:4:5:6:7:8:9]");
    url_error("https://[1::2::3]");
    url_error("https://[::1]x");
    url_error("https://256.1.1.1");
    url_error("https://1.2.3");
    url_error("https://host/path?query=1");
    url_error("https://host/#frag");
    url_error("https://host/pa th");
    url_error("https://host/%zz");
    url_error("https://ho st/");
}

TEST_CASE("request: one buffer, target joined to the base path, framing owned by the transport") {
    const auto url = url_or_fail("https://h.example:8443/textual/");
    tokmgr::http_request request;
    request.target = "/api/auth/login";
    request.body = R"({"userName":"u","password":"p"})";
    std::string out;
    tokmgr::error_info failed;
    REQUIRE(tokmgr::detail::write_request(url, request, true, out, failed));
    CHECK(out.rfind("POST /textual/api/auth/login HTTP/1.1\r\nHost: h.example:8443\r\n", 0) == 0);
    CHECK(out.find("Content-Length: " + std::to_string(request.body.size()) + "\r\n") != std::string::npos);
    CHECK(out.find("Content-Type: application/json\r\n") != std::string::npos);
    CHECK(out.find("Connection: close") == std::string::npos);
    CHECK(out.substr(out.size() - request.body.size()) == request.body);

    tokmgr::http_request get;
    get.method = "GET";
    get.target = "/api/users?x=1";
    get.headers.push_back({"Authorization", "Bearer abc"});
    REQUIRE(tokmgr::detail::write_request(url, get, false, out, failed));
    CHECK(out.rfind("GET /textual/api/users?x=1 HTTP/1.1\r\n", 0) == 0);
    CHECK(out.find("Content-Length") == std::string::npos);
    CHECK(out.find("Connection: close\r\n") != std::string::npos);
    CHECK(out.find("Authorization: Bearer abc\r\n") != std::string::npos);
    CHECK(out.size() >= 4);
    CHECK(out.substr(out.size() - 4) == "\r\n\r\n");
    CHECK(out.find("Accept: application/json\r\n") != std::string::npos);

    // The caller's Accept and User-Agent replace the defaults.
    get.headers = {{"Accept", "text/plain"}, {"User-Agent", "load-tool/1"}};
    REQUIRE(tokmgr::detail::write_request(url, get, true, out, failed));
    CHECK(out.find("Accept: application/json") == std::string::npos);
    CHECK(out.find("tokmgr/") == std::string::npos);
    CHECK(out.find("Accept: text/plain\r\nUser-Agent: load-tool/1\r\n") != std::string::npos);
}

TEST_CASE("request: injection is refused without echoing the header value") {
    const auto url = url_or_fail("http://h");
    std::string out;
    tokmgr::error_info failed;
    tokmgr::http_request request;
    request.target = "/x";
    request.headers.push_back({"Authorization", "Bearer secret-value\r\nX-Evil: 1"});
    CHECK_FALSE(tokmgr::detail::write_request(url, request, true, out, failed));
    CHECK(failed.code == errc::invalid_configuration);
    CHECK(failed.detail.find("Authorization") != std::string::npos);
    CHECK(failed.detail.find("secret-value") == std::string::npos);

    request.headers = {{"Content-Length", "5"}};
    CHECK_FALSE(tokmgr::detail::write_request(url, request, true, out, failed));
    request.headers = {{"Bad Name", "v"}};
    CHECK_FALSE(tokmgr::detail::write_request(url, request, true, out, failed));
    request.headers.clear();
    request.target = "/a b";
    CHECK_FALSE(tokmgr::detail::write_request(url, request, true, out, failed));
    request.target = "relative";
    CHECK_FALSE(tokmgr::detail::write_request(url, request, true, out, failed));
    request.target = "/ok";
    request.method = "PO\nST";
    CHECK_FALSE(tokmgr::detail::write_request(url, request, true, out, failed));
}

TEST_CASE("response: Content-Length, case-insensitive headers, keep-alive") {
    const auto r = parse_every_split("HTTP/1.1 200 OK\r\ncontent-LENGTH: 5\r\nX-A:  v  \r\n\r\nhello", false);
    REQUIRE_FALSE(r.ec);
    CHECK(r.done);
    CHECK(r.keep_alive);
    CHECK(r.response.status == 200);
    CHECK(r.response.body == "hello");
    CHECK(tokmgr::find_header(r.response.headers, "x-a") == std::string_view("v"));
}

TEST_CASE("response: the parser stops at the end of the response") {
    const std::string wire = "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n";
    const auto r = parse(wire, 0, false);
    CHECK(r.done);
    CHECK(r.response.status == 204);
    CHECK(r.consumed == wire.find("HTTP/1.1 200"));
}

TEST_CASE("response: chunked with extensions and trailers") {
    const auto r = parse_every_split(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "4;name=value\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Checksum: abc\r\n\r\n",
        false);
    REQUIRE_FALSE(r.ec);
    CHECK(r.done);
    CHECK(r.keep_alive);
    CHECK(r.response.body == "Wikipedia in\r\n\r\nchunks.");
    CHECK_FALSE(tokmgr::find_header(r.response.headers, "X-Checksum"));
}

TEST_CASE("response: bodies read to the end of the stream") {
    auto r = parse_every_split("HTTP/1.0 200 OK\r\n\r\nold server");
    REQUIRE_FALSE(r.ec);
    CHECK(r.response.body == "old server");
    CHECK_FALSE(r.keep_alive);

    r = parse_every_split("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end");
    REQUIRE_FALSE(r.ec);
    CHECK(r.response.body == "to the end");
    CHECK_FALSE(r.keep_alive);

    r = parse_every_split("HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 2\r\n\r\nok", false);
    REQUIRE_FALSE(r.ec);
    CHECK_FALSE(r.keep_alive);
}

TEST_CASE("response: interim 1xx responses are skipped; no body for 204, 304 and HEAD") {
    auto r = parse_every_split(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        false);
    REQUIRE_FALSE(r.ec);
    CHECK(r.response.status == 201);
    CHECK(r.response.body == "ok");
    CHECK_FALSE(tokmgr::find_header(r.response.headers, "Link"));

    r = parse_every_split("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", false);
    CHECK(r.done);
    CHECK(r.response.body.empty());
    r = parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 0, false, {}, true);
    CHECK(r.done);
}

TEST_CASE("response: malformed input is a protocol error") {
    const char* cases[] = {
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 abc OK\r\n\r\n",
        "ICY 200 OK\r\n\r\n",
        "HTTP/1.1 099 Low\r\n\r\n",
        "HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
        "HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
        "HTTP/1.1 200 OK\r\nBad Name: v\r\n\r\n",
        "HTTP/1.1 200 OK\r\nA: 1\r\n folded\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 x\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\x01" "b\r\n\r\n",
    };
    for (const char* wire : cases) {
        INFO(wire);
        const auto r = parse_every_split(wire);
        CHECK(r.ec == errc::protocol_error);
        CHECK_FALSE(r.detail.empty());
    }
}

TEST_CASE("response: bare LF ends status and header lines, but never a line of the chunked framing") {
    auto r = parse_every_split("HTTP/1.1 200 OK\nContent-Length: 2\nX: y\n\nok", false);
    REQUIRE_FALSE(r.ec);
    CHECK(r.response.body == "ok");
    r = parse_every_split("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\n\r\n2\r\nok\r\n0\r\n\r\n", false);
    REQUIRE_FALSE(r.ec);
    CHECK(r.response.body == "ok");

    for (const char* wire : {
             "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n",    // chunk-size line
             "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\n0\r\n\r\n",    // after the data
             "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\n\r\n",    // last chunk
             "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\n",    // end of trailers
             "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nT: 1\n\r\n",  // a trailer
             "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\rX0\r\n\r\n",   // bare CR after the data
             "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\r\n0\r\n\r\n",
         }) {
        CAPTURE(wire);
        r = parse_every_split(wire, false);
        CHECK(r.ec == errc::protocol_error);
        CHECK_FALSE(r.keep_alive);
    }
}

TEST_CASE("response: Content-Length with Transfer-Encoding is an error, and the connection is not reused") {
    for (const char* wire : {
             "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
             "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n",
             "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 100\r\n\r\n0\r\n\r\n",
         }) {
        CAPTURE(wire);
        const auto r = parse_every_split(wire, false);
        CHECK(r.ec == errc::protocol_error);
        CHECK_FALSE(r.keep_alive);
        CHECK(r.response.body.empty());
        CHECK(r.detail.find("Content-Length") != std::string::npos);
    }
}

TEST_CASE("response: the size caps refuse without buffering the rest") {
    response_limits small;
    small.max_body_bytes = 10;
    small.max_header_bytes = 64;

    // An announced length over the cap is refused as soon as the headers end.
    const std::string announced = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n";
    auto r = parse(announced + std::string(11, 'x'), 0, false, small);
    CHECK(r.ec == errc::response_too_large);
    CHECK(r.consumed == announced.size());
    CHECK(r.response.body.empty());

    r = parse_every_split("HTTP/1.1 200 OK\r\n\r\n" + std::string(11, 'x'), true, small);
    CHECK(r.ec == errc::response_too_large);
    r = parse_every_split("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n5\r\nabcde\r\n0\r\n\r\n",
                          true, small);
    CHECK(r.ec == errc::response_too_large);
    r = parse_every_split("HTTP/1.1 200 OK\r\nX-Big: " + std::string(100, 'h') + "\r\n\r\n", true, small);
    CHECK(r.ec == errc::response_too_large);
    // Endless interim responses count against the header cap.
    std::string interim;
    for (int i = 0; i < 10; ++i) interim += "HTTP/1.1 100 Continue\r\n\r\n";
    r = parse_every_split(interim, true, small);
    CHECK(r.ec == errc::response_too_large);

    r = parse_every_split("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n" + std::string(10, 'x'), false, small);
    CHECK_FALSE(r.ec);
    CHECK(r.response.body.size() == 10);
}

TEST_CASE("response: an early end of stream is an incomplete answer, with how much was missing") {
    auto r = parse_every_split("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    CHECK(r.ec == errc::protocol_error);
    CHECK(r.detail.find("7 bytes") != std::string::npos);
    r = parse_every_split("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab");
    CHECK(r.ec == errc::protocol_error);
    r = parse_every_split("HTTP/1.1 200 OK\r\nContent-Le");
    CHECK(r.ec == errc::protocol_error);
    r = parse("", 0, true);
    CHECK(r.ec == errc::connection_failed);
    CHECK(r.detail.find("without answering") != std::string::npos);
}

TEST_CASE("response: error descriptions never repeat header values or body bytes") {
    auto r = parse("HTTP/1.1 200 OK\r\nSet-Cookie: topsecret\x01\r\n\r\n");
    CHECK(r.ec == errc::protocol_error);
    CHECK(r.detail.find("topsecret") == std::string::npos);
    r = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\ntopsecret\r\n");
    CHECK(r.ec == errc::protocol_error);
    CHECK(r.detail.find("topsecret") == std::string::npos);
}

// Beast-style fault by count: truncate a valid response after every byte and
// corrupt every byte in turn. Each variant must end in a result (done or an
// error) with no crash, no hang and no body beyond the cap.
TEST_CASE("response: truncation and corruption at every offset") {
    const std::string valid =
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n"
        "3\r\nabc\r\n2;e=1\r\nde\r\n0\r\nT: 1\r\n\r\n";
    REQUIRE_FALSE(parse(valid, 0, false).ec);
    for (std::size_t cut = 0; cut < valid.size(); ++cut) {
        INFO("cut at " << cut);
        const auto r = parse(std::string_view(valid).substr(0, cut));
        CHECK(r.ec == (cut == 0 ? errc::connection_failed : errc::protocol_error));
    }
    const char replacements[] = {'\0', '\r', '\n', ' ', ':', 'z', '9', ';', '\x7f', '\xff'};
    std::size_t errors = 0;
    for (std::size_t at = 0; at < valid.size(); ++at) {
        for (char c : replacements) {
            std::string wire = valid;
            wire[at] = c;
            response_limits limits;
            limits.max_body_bytes = 16;
            const auto r = parse(wire, 1, true, limits);
            CHECK((r.done || r.ec));
            CHECK(r.response.body.size() <= limits.max_body_bytes);
            if (r.ec) ++errors;
        }
    }
    CHECK(errors > 0);
}

TEST_CASE("response: seeded random input never crashes or overruns") {
    std::mt19937 rng(20261128);
    const std::string alphabet = "HTTP/1.0 200OK\r\n:;-chunkedContent-LengthTransfer-Encodingaf0123456789 \t";
    for (int round = 0; round < 3000; ++round) {
        std::string wire = round % 2 == 0 ? "HTTP/1.1 200 OK\r\n" : "";
        const int length = static_cast<int>(rng() % 200);
        for (int i = 0; i < length; ++i) {
            wire += rng() % 8 == 0 ? static_cast<char>(rng() % 256) : alphabet[rng() % alphabet.size()];
        }
        response_limits limits;
        limits.max_body_bytes = 64;
        limits.max_header_bytes = 128;
        const auto r = parse(wire, 1 + rng() % 5, true, limits);
        CHECK((r.done || r.ec));
        CHECK(r.consumed <= wire.size());
        CHECK(r.response.body.size() <= limits.max_body_bytes);
    }
}
