// Review of the trust rule (issue 20): cases that attack the merged rule.
#include <tokmgr/testing/shared_storage.hpp>

#include <chrono>
#include <memory>
#include <string>

#include <doctest/doctest.h>

#include "harness.hpp"

using namespace std::chrono_literals;

namespace {

using shared_manager = tokmgr::token_manager<tokmgr::testing::fake_transport, tokmgr::testing::manual_clock,
                                             tokmgr::testing::shared_storage, tokmgr::simdjson_json>;

tokmgr::credentials login() { return {"user@example.com", tokmgr::secret(test::password)}; }

std::chrono::seconds past_soft(const tokmgr::manager_options& options) {
    return std::chrono::duration_cast<std::chrono::seconds>(tokmgr::schedule_for(30min, options, 0).soft) + 1s;
}

/// One process rotates `rotations` times, then the store goes back to the
/// set of its login (a restored backup, a stale replica). The process spent
/// that token itself: it must not send it again.
void rollback_after(int rotations) {
    test::harness h;
    tokmgr::testing::shared_storage store;
    auto a = std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store);
    REQUIRE_FALSE(a->get_token().empty());
    const auto first = store.stored();
    REQUIRE(first);
    for (int i = 0; i < rotations; ++i) {
        h.clock.advance(past_soft(h.options));
        REQUIRE_FALSE(a->get_token().empty());
    }
    REQUIRE(h.server.stats().refreshes == std::uint64_t(rotations));
    store.replace(first);
    std::error_code ec;
    h.clock.advance(past_soft(h.options));
    a->get_token(ec);
    h.clock.advance(30min);
    a->get_token(ec);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().families_revoked == 0);
}

}  // namespace

TEST_CASE("review: a rollback within the last 8 rotations is refused (control)") { rollback_after(7); }

// The ring of retired fingerprints holds 8. A backup restored a few hours
// later (30-minute JWTs: 2 rotations an hour) shows a token the process
// itself spent, but no longer remembers: it is adopted and sent, and the
// server revokes the family. The rule documented in design.md ("a store that
// ... went back in time ... the token is not sent") does not hold past 8.
TEST_CASE("review: a rollback older than the retired-fingerprint ring makes the process reuse its own spent token") {
    rollback_after(9);
}

// Control for the give-back path: a refresh that provably never left gives
// its token back at generation + 1; the store then vouches for it, and the
// trust rule sends it (no login) — nor does another process reuse it.
TEST_CASE("review: a refresh token given back after request_not_sent is refreshed, not replaced by a login") {
    test::harness h;
    tokmgr::testing::shared_storage store;
    auto a = std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store);
    auto b = std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store);
    REQUIRE_FALSE(a->get_token().empty());
    REQUIRE_FALSE(b->get_token().empty());
    h.transport.fail_call(2, make_error_code(tokmgr::errc::connection_refused));
    h.clock.advance(past_soft(h.options));
    a->get_token();  // refresh not sent: the token is given back
    REQUIRE(h.transport.calls() == 2);
    h.clock.advance(5min);  // past the backoff
    std::error_code ec;
    CHECK_FALSE(b->get_token(ec).empty());  // B adopts the given-back set and refreshes with it
    CHECK_FALSE(a->get_token(ec).empty());  // A adopts B's
    h.clock.advance(past_soft(h.options));
    CHECK_FALSE(a->get_token(ec).empty());
    CHECK(h.server.stats().logins == 1);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().families_revoked == 0);
}

// A refresh token that ends before the JWT's soft threshold (a short
// SOLAR_REFRESH_TOKEN_EXPIRATION_IN_MINUTES): a process that adopts the set
// after its refresh token ended keeps no refresh token. At the soft
// threshold its flight reads the store: not vouched (no token of its own),
// so on_store_read adopts the same set again, the JWT is still servable, the
// flight ends without a request and with no backoff. Every get_token until
// the hard threshold then runs a flight (lease + read), and the login is
// put off to the hard threshold, where every caller waits for it.
TEST_CASE("review: a set whose refresh token ended is re-adopted by every flight between soft and hard") {
    test::harness h(30min, 10min);
    tokmgr::testing::shared_storage store;
    {
        auto a = std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store);
        REQUIRE_FALSE(a->get_token().empty());
    }
    h.clock.advance(15min);  // the stored refresh token has ended; the JWT has not
    auto b = std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store);
    h.clock.advance(past_soft(h.options) - 15min);
    const auto loads_before = store.stats().loads;
    for (int i = 0; i < 5; ++i) CHECK_FALSE(b->get_token().empty());
    CHECK(store.stats().loads - loads_before == 1);  // one flight for this soft expiry
    CHECK(h.server.stats().logins == 2);             // which logs in
}
