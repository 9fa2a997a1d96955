// The transport and token_manager<> as a C++17 program: the language baseline
// the library promises (the other transport tests are C++20). Sends real
// requests, so the C++17 instantiations are exercised, not only parsed.
#include <tokmgr/tokmgr.hpp>

#include <ostream>  // before doctest, so it can print std::error_code

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "scripted_server.hpp"
#include "transport_test_support.hpp"

static_assert(__cplusplus < 202002L, "this test is meant to build as C++17");
static_assert(tokmgr::is_transport_v<tokmgr::asio_transport>);
static_assert(std::is_nothrow_move_constructible_v<tokmgr::asio_transport>);
static_assert(!std::is_copy_constructible_v<tokmgr::asio_transport>);

using namespace transport_test;

TEST_CASE("C++17: send, async_send and token_manager<> over the Asio transport") {
    scripted_server server([](const received_request& r) {
        if (r.target == "/api/auth/login")
            return script{send(response(200, R"({"jwt":"a.eyJleHAiOjQxMDI0NDQ4MDB9.c","refreshToken":"r"})"))};
        return script{send(response(200, "ok"))};
    });
    tokmgr::asio_transport transport(plain_options(server.url()));
    CHECK(transport.send(post("/x", "{}")).body == "ok");

    asio::io_context io;
    tokmgr::asio_transport async_transport(io.get_executor(), plain_options(server.url()));
    std::string body;
    async_transport.async_send(post("/x", "{}"), [&](std::error_code ec, tokmgr::http_response r) {
        CHECK_FALSE(ec);
        body = r.body;
    });
    io.run();
    CHECK(body == "ok");

    tokmgr::token_manager<> manager(tokmgr::asio_transport(plain_options(server.url())),
                                    tokmgr::credentials{"u", tokmgr::secret("p")});
    std::error_code ec;
    const auto jwt = manager.get_token(ec);  // {"exp":4102444800}: valid until 2100
    CHECK_FALSE(ec);
    CHECK(jwt.reveal() == "a.eyJleHAiOjQxMDI0NDQ4MDB9.c");
    CHECK(manager.counters().logins == 1);
}
