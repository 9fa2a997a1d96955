#include <tokmgr/api_key.hpp>

#include "harness.hpp"

#include <doctest/doctest.h>

#include <cstdlib>

namespace {
// A service's call site, written once for any credential source.
template <class Source>
std::string authorization_header(Source& source) {
    return std::string(source.authorization().reveal());
}
}  // namespace

TEST_CASE("API-key mode sends the bare key and never refreshes") {
    tokmgr::api_key_source key(tokmgr::secret("tt_live_abc123"));
    CHECK(authorization_header(key) == "tt_live_abc123");
    key.invalidate(key.get_token());
    CHECK(key.get_token().reveal() == "tt_live_abc123");
    CHECK(key.counters().refreshes == 0);
    CHECK_THROWS_AS(tokmgr::api_key_source(tokmgr::secret("")), tokmgr::error);
}

TEST_CASE("switching to JWT mode is a change of type: the header becomes 'Bearer <jwt>'") {
    test::harness h;
    auto manager = h.make();
    const std::string header = authorization_header(*manager);
    CHECK(header.rfind("Bearer ", 0) == 0);
    CHECK(header.substr(7) == manager->get_token().reveal());
}

TEST_CASE("the scheme word is configurable") {
    test::harness h;
    h.options.scheme = "JWT";
    auto manager = h.make();
    CHECK(std::string(manager->authorization().reveal()).rfind("JWT ", 0) == 0);
}

TEST_CASE("api_key_source::from_environment reads TONIC_TEXTUAL_API_KEY") {
    ::unsetenv("TONIC_TEXTUAL_API_KEY");
    CHECK_THROWS_AS(tokmgr::api_key_source::from_environment(), tokmgr::error);
    ::setenv("TONIC_TEXTUAL_API_KEY", "key-from-env", 1);
    CHECK(tokmgr::api_key_source::from_environment().get_token().reveal() == "key-from-env");
    ::unsetenv("TONIC_TEXTUAL_API_KEY");
}
