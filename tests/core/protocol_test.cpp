// The Textual protocol's facts: the SOLAR_* lifetime rule, the status table,
// the bodies, and the refresh-token registry shared by the reference server
// and the fake.
#include <tokmgr/protocol/lifetime_variables.hpp>
#include <tokmgr/protocol/refresh_registry.hpp>
#include <tokmgr/protocol/textual_api.hpp>
#include <tokmgr/detail/decimal.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <new>
#include <optional>
#include <string>
#include <vector>

using namespace std::chrono_literals;
namespace protocol = tokmgr::protocol;

TEST_CASE("SOLAR_* lifetimes: one rule for every reader") {
    struct row {
        const char* text;
        std::optional<std::chrono::seconds> lifetime;  ///< nothing: refused
    };
    const row table[] = {
        {"1", 1min},
        {"30", 30min},
        {"030", 30min},  // leading zeros are still a whole number
        {"10000", 10'000min},
        {"52560000", 52'560'000min},  // a century, the bound
        {"52560001", std::nullopt},
        {"99999999999999999999999", std::nullopt},  // beyond int64: refused, not wrapped
        {"0", std::nullopt},
        {"-5", std::nullopt},
        {"+5", std::nullopt},
        {"", std::nullopt},  // what a template leaves unfilled
        {" 5", std::nullopt},
        {"5 ", std::nullopt},
        {"1.5", std::nullopt},
        {"5m", std::nullopt},
        {"0x10", std::nullopt},
        {"thirty", std::nullopt},
    };
    for (const auto& r : table) {
        CAPTURE(r.text);
        std::chrono::seconds out{7};
        tokmgr::error_info failed;
        const bool parsed = protocol::parse_lifetime_minutes(protocol::jwt_lifetime_variable, r.text, out, failed);
        CHECK(parsed == r.lifetime.has_value());
        if (r.lifetime) {
            CHECK_FALSE(failed);
            CHECK(out == *r.lifetime);
        } else {
            CHECK(failed.code == tokmgr::errc::invalid_configuration);
            CHECK(out == 7s);  // untouched
            CHECK(failed.detail.find(protocol::jwt_lifetime_variable) != std::string::npos);
            CHECK(failed.detail.find("52560000") != std::string::npos);  // says the bound
        }
    }
}

TEST_CASE("SOLAR_* lifetimes: unset is the documented default, set is read") {
    ::unsetenv(std::string(protocol::jwt_lifetime_variable).c_str());
    ::setenv(std::string(protocol::refresh_lifetime_variable).c_str(), "120", 1);
    std::chrono::seconds jwt{0}, refresh{0};
    tokmgr::error_info failed;
    CHECK(protocol::lifetimes_from_environment(jwt, refresh, failed));
    CHECK_FALSE(failed);
    CHECK(jwt == 30min);
    CHECK(refresh == 120min);
    ::setenv(std::string(protocol::refresh_lifetime_variable).c_str(), "", 1);
    CHECK_FALSE(protocol::lifetimes_from_environment(jwt, refresh, failed));
    CHECK(failed.code == tokmgr::errc::invalid_configuration);
    CHECK(failed.detail.find(protocol::refresh_lifetime_variable) != std::string::npos);
    CHECK_MESSAGE(failed.detail.find("e.g. 10000") != std::string::npos,
                  "the example is the refresh token's default: " << failed.detail);
    ::unsetenv(std::string(protocol::refresh_lifetime_variable).c_str());
    CHECK(protocol::lifetimes_from_environment(jwt, refresh, failed));
    CHECK_FALSE(failed);
    CHECK(refresh == 10'000min);
}

TEST_CASE("parse_decimal: the whole text is digits, and the value fits") {
    using tokmgr::detail::parse_decimal;
    CHECK(parse_decimal<std::uint64_t>("18446744073709551615") == UINT64_MAX);
    CHECK_FALSE(parse_decimal<std::uint64_t>("18446744073709551616"));
    CHECK(parse_decimal<std::uint32_t>("0") == 0u);
    CHECK_FALSE(parse_decimal<std::int64_t>("-1"));
    CHECK_FALSE(parse_decimal<std::int64_t>("12a"));
    CHECK_FALSE(parse_decimal<std::int64_t>(""));
}

TEST_CASE("HTTP status to errc: what each answer means for login and refresh") {
    using protocol::call;
    using tokmgr::errc;
    struct row {
        int status;
        errc login, refresh;
    };
    const row table[] = {
        {301, errc::unexpected_redirect, errc::unexpected_redirect},
        {307, errc::unexpected_redirect, errc::unexpected_redirect},
        {400, errc::request_rejected, errc::refresh_rejected},
        {401, errc::credentials_rejected, errc::refresh_rejected},
        {403, errc::credentials_rejected, errc::request_rejected},
        {404, errc::request_rejected, errc::request_rejected},
        {429, errc::rate_limited, errc::rate_limited},
        {500, errc::server_error, errc::server_error},
        {502, errc::server_error, errc::server_error},
        {503, errc::service_unavailable, errc::service_unavailable},
        {100, errc::protocol_error, errc::protocol_error},
        {600, errc::protocol_error, errc::protocol_error},
    };
    for (const auto& r : table) {
        CAPTURE(r.status);
        CHECK(protocol::error_for_status(call::login, r.status) == r.login);
        CHECK(protocol::error_for_status(call::refresh, r.status) == r.refresh);
    }
}

TEST_CASE("the bodies carry the documented member names, escaped") {
    CHECK(protocol::login_request_json("a\"b", "p\\w") == R"({"userName":"a\"b","password":"p\\w"})");
    CHECK(protocol::refresh_request_json("rt") == R"({"refreshToken":"rt"})");
    CHECK(protocol::token_response_json("j", "r") == R"({"jwt":"j","refreshToken":"r"})");
    CHECK(protocol::error_json("Unauthorized", "log in") == R"({"title":"Unauthorized","detail":"log in"})");
    CHECK(protocol::request_shape(protocol::call::login) == R"({"userName": "...", "password": "..."})");
    CHECK(protocol::path_of(protocol::call::refresh) == "/api/auth/token_refresh");
}

TEST_CASE("the refresh registry: rotation, reuse revokes the family, expiry") {
    using time_point = std::chrono::steady_clock::time_point;
    using registry_type = protocol::refresh_registry<time_point>;
    using result = registry_type::result;
    int minted = 0;
    registry_type registry([&] { return "t" + std::to_string(++minted); });
    const time_point t0{};

    const std::string first = registry.issue("alice", t0, 100s);
    const auto second = registry.rotate(first, t0 + 10s, 100s);
    REQUIRE(second.outcome == result::rotated);
    CHECK(second.user == "alice");
    CHECK(second.new_token != first);

    const std::string other = registry.issue("bob", t0, 100s);
    CHECK(registry.rotate(other, t0 + 100s, 100s).outcome == result::expired);  // expiry is exclusive
    CHECK(registry.rotate("never issued", t0, 100s).outcome == result::unknown);

    CHECK(registry.rotate(first, t0 + 20s, 100s).outcome == result::reused);
    CHECK(registry.families_revoked() == 1);
    CHECK(registry.rotate(second.new_token, t0 + 20s, 100s).outcome == result::revoked);
    CHECK(registry.rotate(first, t0 + 20s, 100s).outcome == result::reused);
    CHECK(registry.families_revoked() == 1);  // a family is revoked once
}

TEST_CASE("the refresh registry does not overflow its clock with a century's lifetime") {
    using time_point = std::chrono::system_clock::time_point;
    protocol::refresh_registry<time_point> registry([n = 0]() mutable { return std::to_string(++n); }, 1);
    const time_point late = time_point::max() - 1h;
    const std::string token = registry.issue("u", late, tokmgr::max_lifetime);
    CHECK(registry.rotate(token, late + 1s, tokmgr::max_lifetime).outcome == decltype(registry)::result::rotated);
    // Full: the only family is alive, so a new login is refused.
    CHECK(registry.issue("u", late + 2s, tokmgr::max_lifetime).empty());
}

TEST_CASE("the refresh registry: a rotation that throws while minting leaves the presented token usable") {
    using time_point = std::chrono::steady_clock::time_point;
    using registry_type = protocol::refresh_registry<time_point>;
    int minted = 0;
    bool fail_next = false;
    registry_type registry([&]() -> std::string {
        if (fail_next) {
            fail_next = false;
            throw std::bad_alloc();
        }
        return "t" + std::to_string(++minted);
    });
    const time_point t0{};
    const std::string first = registry.issue("alice", t0, 100s);
    fail_next = true;
    CHECK_THROWS_AS(registry.rotate(first, t0 + 1s, 100s), std::bad_alloc);
    // The client's retry with the same token is a refresh, not a reuse.
    const auto retried = registry.rotate(first, t0 + 2s, 100s);
    CHECK(retried.outcome == registry_type::result::rotated);
    CHECK(registry.families_revoked() == 0);
}
