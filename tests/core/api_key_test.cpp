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

namespace {
// Call sites that keep the credential: a handle, and the failure if any.
template <class Source>
std::string held_header(Source& source) {
    std::error_code ec;
    const tokmgr::token_handle held = source.get_token_handle(ec);
    if (ec || source.last_error()) return "failed";
    return std::string(held.authorization().reveal());
}
}  // namespace

TEST_CASE("api_key_source has the manager's get_token_handle and last_error: code switches by a type") {
    tokmgr::api_key_source key(tokmgr::secret("tt_live_abc123"));
    CHECK(held_header(key) == "tt_live_abc123");
    CHECK_FALSE(key.last_error());
    tokmgr::token_handle kept;
    {
        tokmgr::api_key_source scoped(tokmgr::secret("scoped-key"));
        kept = scoped.get_token_handle();
    }
    // A handle owns what it serves: it outlives the source.
    REQUIRE(kept);
    CHECK(kept.jwt().reveal() == "scoped-key");
    CHECK(kept.authorization().reveal() == "scoped-key");
    CHECK(kept.generation() == 1);

    test::harness h;
    auto manager = h.make();
    CHECK(held_header(*manager).rfind("Bearer ", 0) == 0);
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
