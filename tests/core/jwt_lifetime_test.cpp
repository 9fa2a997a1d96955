#include <tokmgr/detail/base64url.hpp>
#include <tokmgr/detail/jwt_lifetime.hpp>
#include <tokmgr/json/simdjson.hpp>

#include <doctest/doctest.h>

using namespace std::chrono_literals;
using tokmgr::detail::base64url_decode;
using tokmgr::detail::base64url_encode;

namespace {
std::string jwt_with(const std::string& claims) {
    return base64url_encode(R"({"alg":"HS256"})") + "." + base64url_encode(claims) + ".sig";
}
const auto wall = std::chrono::system_clock::time_point(std::chrono::seconds(1'800'000'000));
}  // namespace

TEST_CASE("base64url round-trips every length and rejects foreign characters") {
    std::string data;
    for (int i = 0; i < 64; ++i) {
        CHECK(base64url_decode(base64url_encode(data)) == data);
        data += static_cast<char>(i * 37);
    }
    CHECK(base64url_encode("\xfb\xff") == "-_8");
    CHECK_FALSE(base64url_decode("ab+c"));
    CHECK_FALSE(base64url_decode("abcde"));
    CHECK(base64url_decode("YQ==") == std::string("a"));
}

TEST_CASE("with iat and exp, a wall clock that cannot place the receipt in iat's second costs the whole second") {
    // The wall clock is 57 years past iat (or before it): skewed, or the
    // answer took long. exp - iat counts, less the second iat's rounding may
    // have taken, whatever the skew.
    std::error_code ec;
    CHECK(tokmgr::detail::jwt_lifetime(tokmgr::simdjson_json{}, jwt_with(R"({"iat":100,"exp":400})"), wall, 30min,
                                       ec) == 299s);
    CHECK_FALSE(ec);
    const std::string claims = R"({"iat":1800000000,"exp":1800000030})";
    for (auto off : std::initializer_list<std::chrono::milliseconds>{-3h, -1ms, 1000ms, 1001ms, 3h}) {
        CAPTURE(off.count());
        CHECK(tokmgr::detail::jwt_lifetime(tokmgr::simdjson_json{}, jwt_with(claims), wall + off, 30min, ec) == 29s);
        CHECK_FALSE(ec);
    }
}

TEST_CASE("with iat and exp, a receipt within iat's second costs only the part of it gone by") {
    // iat is rounded down: a JWT received 250 ms into its iat's second has
    // at most exp - iat - 250 ms left, and the clocks agreeing to within the
    // claims' second, at least that.
    std::error_code ec;
    for (auto life : {1s, 2s, 3s, 30s}) {
        const std::string claims =
            R"({"iat":1800000000,"exp":)" + std::to_string(1'800'000'000 + life.count()) + "}";
        for (auto into : {0ms, 1ms, 250ms, 500ms, 900ms, 999ms}) {
            CAPTURE(life.count());
            CAPTURE(into.count());
            const auto left =
                tokmgr::detail::jwt_lifetime(tokmgr::simdjson_json{}, jwt_with(claims), wall + into, 30min, ec);
            CHECK_FALSE(ec);
            CHECK(left == life - into);
        }
    }
}

TEST_CASE("a 1-second JWT received a second or more after iat, or before it, has nothing left to use") {
    std::error_code ec;
    const std::string claims = R"({"iat":1800000000,"exp":1800000001})";
    for (auto off : std::initializer_list<std::chrono::milliseconds>{-1ms, -2s, 1000ms, 1200ms}) {
        CAPTURE(off.count());
        tokmgr::detail::jwt_lifetime(tokmgr::simdjson_json{}, jwt_with(claims), wall + off, 30min, ec);
        CHECK(ec == tokmgr::errc::protocol_error);
    }
}

TEST_CASE("with exp alone the lifetime runs against the local wall clock") {
    std::error_code ec;
    const auto lifetime = tokmgr::detail::jwt_lifetime(tokmgr::simdjson_json{},
                                                       jwt_with(R"({"exp":1800000090})"), wall, 30min, ec);
    CHECK_FALSE(ec);
    CHECK(lifetime == 90s);
}

TEST_CASE("without claims, or for an opaque token, the configured lifetime applies") {
    std::error_code ec;
    CHECK(tokmgr::detail::jwt_lifetime(tokmgr::simdjson_json{}, jwt_with(R"({"sub":"x"})"), wall, 7min, ec) == 7min);
    CHECK(tokmgr::detail::jwt_lifetime(tokmgr::simdjson_json{}, "opaque-token", wall, 7min, ec) == 7min);
    CHECK(tokmgr::detail::jwt_lifetime(tokmgr::simdjson_json{}, "a.!!!.c", wall, 7min, ec) == 7min);
    CHECK_FALSE(ec);
}

TEST_CASE("a JWT that is over on arrival is a protocol error") {
    std::error_code ec;
    tokmgr::detail::jwt_lifetime(tokmgr::simdjson_json{}, jwt_with(R"({"iat":400,"exp":400})"), wall, 30min, ec);
    CHECK(ec == tokmgr::errc::protocol_error);
    tokmgr::detail::jwt_lifetime(tokmgr::simdjson_json{}, jwt_with(R"({"exp":1700000000})"), wall, 30min, ec);
    CHECK(ec == tokmgr::errc::protocol_error);
}
