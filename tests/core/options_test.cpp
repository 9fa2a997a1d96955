#include <tokmgr/options.hpp>

#include <doctest/doctest.h>

#include <cstdlib>

using namespace std::chrono_literals;

namespace {
struct scoped_env {
    const char* name;
    scoped_env(const char* n, const char* value) : name(n) { ::setenv(n, value, 1); }
    ~scoped_env() { ::unsetenv(name); }
};
}  // namespace

TEST_CASE("lifetimes default to 30 and 10,000 minutes") {
    ::unsetenv("SOLAR_JWT_EXPIRATION_IN_MINUTES");
    ::unsetenv("SOLAR_REFRESH_TOKEN_EXPIRATION_IN_MINUTES");
    const auto l = tokmgr::lifetimes_from_environment();
    CHECK(l.jwt == 30min);
    CHECK(l.refresh == 10000min);
}

TEST_CASE("the SOLAR_* variables set the lifetimes") {
    scoped_env jwt("SOLAR_JWT_EXPIRATION_IN_MINUTES", "5");
    scoped_env refresh("SOLAR_REFRESH_TOKEN_EXPIRATION_IN_MINUTES", "120");
    const auto l = tokmgr::lifetimes_from_environment();
    CHECK(l.jwt == 5min);
    CHECK(l.refresh == 120min);
}

TEST_CASE("an invalid SOLAR_* value is a configuration error that names the variable") {
    for (const char* bad : {"abc", "0", "-3", "", "1.5", "99999999999", "52560001"}) {
        scoped_env jwt("SOLAR_JWT_EXPIRATION_IN_MINUTES", bad);
        tokmgr::error_info failed;
        tokmgr::lifetimes_from_environment(failed);
        CHECK(failed.code == tokmgr::errc::invalid_configuration);
        CHECK(failed.detail.find("SOLAR_JWT_EXPIRATION_IN_MINUTES") != std::string::npos);
        std::error_code ec;
        tokmgr::lifetimes_from_environment(ec);
        CHECK(ec == tokmgr::errc::invalid_configuration);
        CHECK_THROWS_AS(tokmgr::lifetimes_from_environment(), tokmgr::error);
    }
}

TEST_CASE("validate names the option that makes no sense") {
    tokmgr::manager_options options;
    CHECK_FALSE(tokmgr::validate(options));
    options.refresh_ahead_fraction = 1.5;
    CHECK(tokmgr::validate(options).detail.find("refresh_ahead_fraction") != std::string::npos);
    options = {};
    options.login_path = "api/auth/login";
    CHECK(tokmgr::validate(options).code == tokmgr::errc::invalid_configuration);
}
