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

TEST_CASE("the JWT lifetime is exp - iat when both are present, whatever the wall clock says") {
    std::error_code ec;
    const auto lifetime = tokmgr::detail::jwt_lifetime(tokmgr::simdjson_json{}, jwt_with(R"({"iat":100,"exp":400})"),
                                                       wall, 30min, ec);
    CHECK_FALSE(ec);
    CHECK(lifetime == 300s);
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
