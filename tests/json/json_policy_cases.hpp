// The Json policy contract, as cases any policy must pass. A policy's test
// file includes its header first, then this, then instantiates the cases.
#pragma once

#include <tokmgr/testing/fake_auth_server.hpp>
#include <tokmgr/testing/fake_transport.hpp>
#include <tokmgr/testing/manual_clock.hpp>
#include <tokmgr/token_manager.hpp>

#include <doctest/doctest.h>

#include <string>

TEST_CASE_TEMPLATE_DEFINE("Json policy contract", Json, json_policy_contract) {
    const Json json{};
    std::error_code ec;

    SUBCASE("request bodies are JSON with the documented field names, escaped") {
        const std::string login = json.login_body("jdoe@company.com", "My\"Pass\\word\n!");
        CHECK(tokmgr::testing::fake_auth_server::string_field(login, "userName") == std::string("jdoe@company.com"));
        CHECK(login.find(R"(My\"Pass\\word\n!)") != std::string::npos);
        const std::string refresh = json.refresh_body("rt-123");
        CHECK(tokmgr::testing::fake_auth_server::string_field(refresh, "refreshToken") == std::string("rt-123"));
    }

    SUBCASE("a password that is not UTF-8 is encoded without an exception") {
        std::string body;
        CHECK_NOTHROW(body = json.login_body("user", "pa\xffss"));
        CHECK(body.find("userName") != std::string::npos);
    }

    SUBCASE("a token response yields both tokens and ignores unknown fields") {
        const auto pair = json.parse_token_response(R"({"jwt":"a.b.c","refreshToken":"r1","expiresIn":1800,"user":{}})", ec);
        CHECK_FALSE(ec);
        CHECK(pair.jwt.reveal() == "a.b.c");
        CHECK(pair.refresh_token.reveal() == "r1");
    }

    SUBCASE("a token response without both string fields is a protocol error") {
        for (const char* body : {"", "null", "[1]", "{", R"({"jwt":"a"})", R"({"refreshToken":"r"})",
                                 R"({"jwt":null,"refreshToken":"r"})", R"({"jwt":"a","refreshToken":7})"}) {
            CAPTURE(body);
            json.parse_token_response(body, ec);
            CHECK(ec == tokmgr::errc::protocol_error);
        }
    }

    SUBCASE("claims: integers, fractions, absence") {
        auto claims = json.parse_jwt_claims(R"({"iat":1700000000,"exp":1700001800.75,"sub":"x"})", ec);
        CHECK_FALSE(ec);
        CHECK(claims.issued_at == 1700000000);
        CHECK(claims.expires_at == 1700001800);
        claims = json.parse_jwt_claims(R"({"sub":"x","exp":"soon"})", ec);
        CHECK_FALSE(ec);
        CHECK_FALSE(claims.issued_at);
        CHECK_FALSE(claims.expires_at);
        json.parse_jwt_claims("not json", ec);
        CHECK(ec == tokmgr::errc::protocol_error);
    }

    SUBCASE("error messages come from message, detail, title or errorMessage, in that order") {
        CHECK(json.error_message(R"({"title":"T","detail":"D"})") == "D");
        CHECK(json.error_message(R"({"errorMessage":"E"})") == "E");
        CHECK(json.error_message(R"({"message":"M","title":"T"})") == "M");
        CHECK(json.error_message("<html>502</html>").empty());
        CHECK(json.error_message(R"({"detail":5})").empty());
    }

    SUBCASE("a token manager runs on this policy unchanged") {
        tokmgr::testing::manual_clock clock;
        tokmgr::testing::fake_auth_server server(clock);
        tokmgr::testing::fake_transport transport(server);
        tokmgr::manager_options options;
        options.assumed_lifetimes = tokmgr::lifetimes{};
        tokmgr::token_manager<tokmgr::testing::fake_transport, tokmgr::testing::manual_clock, tokmgr::memory_storage,
                              Json>
            manager(transport, tokmgr::credentials{"user@example.com", tokmgr::secret("correct horse battery staple")},
                    options, clock);
        const std::string first(manager.get_token().reveal());
        clock.advance(std::chrono::minutes(29));
        CHECK(manager.get_token().reveal() != first);
        CHECK(server.stats().refreshes == 1);
    }
}
