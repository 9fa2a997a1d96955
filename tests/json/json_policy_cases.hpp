// The Json policy contract, as cases any policy must pass. A policy's test
// file includes its header first, then this, then instantiates the cases.
#pragma once

#include <tokmgr/testing/fake_auth_server.hpp>
#include <tokmgr/testing/fake_transport.hpp>
#include <tokmgr/testing/manual_clock.hpp>
#include <tokmgr/token_manager.hpp>

#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <vector>

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

    SUBCASE("the input rules of detail/json_rules.hpp, one table for every policy") {
        using namespace std::string_literals;
        const std::string good = R"({"jwt":"a.b.c","refreshToken":"r1"})";
        struct row {
            std::string body;
            bool accepted;
        };
        const row rows[] = {
            {good, true},
            {" \t\r\n" + good + " \t\r\n", true},                    // JSON whitespace around the value
            {good + "\0"s, false},                                   // a NUL after the object
            {good + "\0{}"s, false},
            {R"({"jwt":"a.b.c","refreshToken":"r1"})" "\0"s " ", false},
            {"\xEF\xBB\xBF" + good, false},                          // a byte-order mark
            {good + " x", false},                                    // trailing bytes
            {good + good, false},
            {R"({"jwt":"a.b.c","refreshToken":"r1","jwt":"x.y.z"})", false},  // a member named twice
            {R"({"jwt":"a.b.c","refreshToken":"r1","n":{"k":1,"k":2}})", true},  // nested twice: not read
            {R"({"jwt":"a.b.c","refreshToken":"r1","n":9223372036854775808})", true},   // fits uint64
            {R"({"jwt":"a.b.c","refreshToken":"r1","n":18446744073709551615})", true},
            {R"({"jwt":"a.b.c","refreshToken":"r1","n":18446744073709551616})", false},  // 2^64
            {R"({"jwt":"a.b.c","refreshToken":"r1","n":123456789012345678901234567890})", false},
            {R"({"jwt":"a.b.c","refreshToken":"r1","n":-9223372036854775809})", false},
            {R"({"jwt":"a.b.c","refreshToken":"r1","n":1e308})", true},
            {R"({"jwt":"a.b.c","refreshToken":"r1","n":1e400})", false},
            {R"({"jwt":"a.b.c","refreshToken":"r1","n":1.5e3})", true},
            {R"({"jwt":"a.b.c","refreshToken":"r1","s":"\ud800"})", false},  // a lone surrogate
            {"{\"jwt\":\"a.b.c\",\"refreshToken\":\"r\xff\"}", false},       // not UTF-8
            {R"({"jwt":"a.b.c","refreshToken":"r1","n":)" + std::string(1023, '[') + std::string(1023, ']') + "}",
             true},  // 1024 levels deep
            {R"({"jwt":"a.b.c","refreshToken":"r1","n":)" + std::string(1024, '[') + std::string(1024, ']') + "}",
             false},
        };
        for (const auto& r : rows) {
            CAPTURE(r.body.substr(0, 80));
            const auto pair = json.parse_token_response(r.body, ec);
            CHECK((ec == tokmgr::errc::protocol_error) == !r.accepted);
            if (r.accepted) CHECK(pair.jwt.reveal() == "a.b.c");
            // Error bodies and claims follow the same rules.
            CHECK(json.error_message(r.body + std::string()).empty());
            json.parse_jwt_claims(r.body, ec);
            CHECK((ec == tokmgr::errc::protocol_error) == !r.accepted);
        }
        CHECK(json.error_message(R"({"detail":"D","detail":"E"})").empty());
        CHECK(json.error_message("\xEF\xBB\xBF{\"detail\":\"D\"}").empty());
    }

    SUBCASE("claims out of range count as absent, never wrapped or rounded into a date") {
        struct row {
            const char* payload;
            std::optional<std::int64_t> exp;
        };
        const row rows[] = {
            {R"({"exp":1700000000})", 1700000000},
            {R"({"exp":-5})", -5},
            {R"({"exp":999999999999999})", 999999999999999},
            {R"({"exp":1000000000000000})", std::nullopt},  // 1e15: past the documented bound
            {R"({"exp":9223372036854775807})", std::nullopt},
            {R"({"exp":9223372036854775808})", std::nullopt},    // INT64_MAX + 1: must not wrap negative
            {R"({"exp":18446744073709551615})", std::nullopt},
            {R"({"exp":-9223372036854775808})", std::nullopt},
            {R"({"exp":1700000000.999})", 1700000000},
            {R"({"exp":-0.5})", -1},
            {R"({"exp":1e300})", std::nullopt},
            {R"({"exp":true})", std::nullopt},
            {R"({"exp":null})", std::nullopt},
            {R"({"exp":[1]})", std::nullopt},
        };
        for (const auto& r : rows) {
            CAPTURE(r.payload);
            const auto claims = json.parse_jwt_claims(r.payload, ec);
            CHECK_FALSE(ec);
            CHECK(claims.expires_at == r.exp);
        }
        json.parse_jwt_claims(R"({"exp":1,"exp":2})", ec);
        CHECK(ec == tokmgr::errc::protocol_error);
    }

    SUBCASE("error messages come from message, detail, title or errorMessage, in that order") {
        CHECK(json.error_message(R"({"title":"T","detail":"D"})") == "D");
        CHECK(json.error_message(R"({"errorMessage":"E"})") == "E");
        CHECK(json.error_message(R"({"message":"M","title":"T"})") == "M");
        CHECK(json.error_message("<html>502</html>").empty());
        CHECK(json.error_message(R"({"detail":5})").empty());
    }

    SUBCASE("flat objects: strings, numbers and booleans read back sorted by name; other members skipped") {
        const auto object = json.read_object(
            R"({"token_type":"Bearer","expires_in":3600,"ok":true,"no":false,"big":18446744073709551615,)"
            R"("neg":-42,"half":1.5,"nothing":null,"list":[1],"nested":{"a":"b"},"esc":"a\"b\u00e9\n"})",
            ec);
        REQUIRE_FALSE(ec);
        std::vector<std::string> names;
        for (const auto& member : object) names.push_back(member.name);
        CHECK(names == std::vector<std::string>{"big", "esc", "expires_in", "half", "neg", "no", "ok", "token_type"});
        CHECK(tokmgr::string_member(object, "token_type").reveal() == "Bearer");
        CHECK(tokmgr::string_member(object, "esc").reveal() == "a\"b\xc3\xa9\n");
        CHECK(tokmgr::find_member(object, "expires_in")->number == 3600);
        CHECK(tokmgr::find_member(object, "big")->number == 18446744073709551615.0);
        CHECK(tokmgr::find_member(object, "neg")->number == -42);
        CHECK(tokmgr::find_member(object, "half")->number == 1.5);
        CHECK(tokmgr::find_member(object, "ok")->boolean);
        CHECK_FALSE(tokmgr::find_member(object, "no")->boolean);
        CHECK(tokmgr::find_member(object, "nothing") == nullptr);
        CHECK(tokmgr::string_member(object, "expires_in").empty());  // a number is not a string
    }

    SUBCASE("flat objects: what read_object refuses, by the same rules as every other read") {
        for (const char* body : {"", "null", "[1]", "{", "\"s\"", R"({"a":1,"a":2})", R"({"a":1} x)",
                                 "\xEF\xBB\xBF{}"}) {
            CAPTURE(body);
            CHECK(json.read_object(body, ec).empty());
            CHECK(ec == tokmgr::errc::protocol_error);
        }
        CHECK(json.read_object("{}", ec).empty());
        CHECK_FALSE(ec);
    }

    SUBCASE("flat objects: what write_object writes reads back the same, in the members' order") {
        const tokmgr::flat_object written = {
            tokmgr::flat_member::of_string("grant_type", "password"),
            tokmgr::flat_member::of_string("password", "My\"Pass\\word\n!\x01"),
            tokmgr::flat_member::of_number("expires_in", 3600),
            tokmgr::flat_member::of_number("fraction", 0.1),
            tokmgr::flat_member::of_number("large", 1e300),
            tokmgr::flat_member::of_number("negative", -9007199254740992.0),
            tokmgr::flat_member::of_boolean("yes", true),
        };
        const std::string text = json.write_object(written);
        CHECK(text.find(R"("grant_type":"password")") < text.find(R"("password":)"));  // order kept
        CHECK(text.find(R"("expires_in":3600)") != std::string::npos);  // an integer, not 3600.0
        const auto back = json.read_object(text, ec);
        REQUIRE_FALSE(ec);
        REQUIRE(back.size() == written.size());
        for (const auto& member : written) {
            CAPTURE(member.name);
            const tokmgr::flat_member* read = tokmgr::find_member(back, member.name);
            REQUIRE(read != nullptr);
            CHECK(read->type == member.type);
            CHECK(read->text == member.text);
            CHECK(read->number == member.number);
            CHECK(read->boolean == member.boolean);
        }
        CHECK(json.write_object({}) == "{}");
        std::string not_utf8;
        CHECK_NOTHROW(not_utf8 = json.write_object({tokmgr::flat_member::of_string("p", "pa\xffss")}));
        CHECK(not_utf8.front() == '{');
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
