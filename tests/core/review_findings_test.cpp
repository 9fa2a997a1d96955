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

namespace {

/// A coordinating store whose write can land yet report a failure: what
/// file_storage now does when the directory fsync after the rename fails
/// (the new file is in place, "the write counts as failed"), and what a
/// Redis reply lost after the server applied the write looks like.
struct flaky_store {
    struct knobs {
        std::size_t store_if_calls = 0;
        std::size_t landed_but_failed_at = 0;  ///< this store_if writes, then reports storage_failed
        bool load_fails = false;
    };
    tokmgr::testing::shared_storage inner;
    std::shared_ptr<knobs> k = std::make_shared<knobs>();

    std::optional<tokmgr::token_set> load(std::error_code& ec) {
        if (k->load_fails) {
            ec = make_error_code(tokmgr::errc::storage_failed);
            return std::nullopt;
        }
        return inner.load(ec);
    }
    void store(const tokmgr::token_set& set, std::error_code& ec) { inner.store(set, ec); }
    tokmgr::testing::shared_storage::lease lock(std::chrono::milliseconds wait, std::error_code& ec) {
        return inner.lock(wait, ec);
    }
    bool holds(const tokmgr::testing::shared_storage::lease& held, std::error_code& ec) {
        return inner.holds(held, ec);
    }
    bool store_if(const tokmgr::token_set& set, std::uint64_t expected, std::error_code& ec) {
        const bool written = inner.store_if(set, expected, ec);
        if (++k->store_if_calls == k->landed_but_failed_at && written && !ec) {
            ec = make_error_code(tokmgr::errc::storage_failed);
            return false;
        }
        return written;
    }
};

using flaky_manager = tokmgr::token_manager<tokmgr::testing::fake_transport, tokmgr::testing::manual_clock,
                                            flaky_store, tokmgr::simdjson_json>;

}  // namespace

// A's new pair reaches the store but the write reports a failure, so A takes
// it for private ("nobody else can hold it"). B reads it from the store and
// refreshes with it. A's next flight cannot read the store (the same flaky
// disk), and sends the pair's refresh token without a mark, as a private
// one: the server sees B's spent token again and revokes the family.
TEST_CASE("review: a write that landed but reported failure makes a 'private' token shared, then reused") {
    static_assert(tokmgr::is_coordinating_storage_v<flaky_store>);
    test::harness h;
    flaky_store store_a;
    auto a = std::make_unique<flaky_manager>(h.transport, login(), h.options, h.clock, store_a);
    auto b = std::make_unique<shared_manager>(h.transport, login(), h.options, h.clock, store_a.inner);
    REQUIRE_FALSE(a->get_token().empty());  // A logs in (store_if 1)
    REQUIRE_FALSE(b->get_token().empty());  // B adopts
    h.clock.advance(past_soft(h.options));
    store_a.k->landed_but_failed_at = store_a.k->store_if_calls + 2;  // the mark lands; the new pair lands, "fails"
    REQUIRE_FALSE(a->get_token().empty());  // A refreshes: R1 spent, R2 received, "private"
    REQUIRE(h.server.stats().refreshes == 1);
    CHECK(store_a.inner.stored()->generation == 3);  // yet it is in the store
    REQUIRE_FALSE(b->get_token().empty());  // B: soft-expired too; adopts generation 3 (R2)
    h.clock.advance(past_soft(h.options));
    REQUIRE_FALSE(b->get_token().empty());  // B refreshes with R2: spent on the server
    REQUIRE(h.server.stats().refreshes == 2);
    store_a.k->load_fails = true;           // A's next read fails
    std::error_code ec;
    a->get_token(ec);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().families_revoked == 0);
}

// ---- an answer that is not the flight's own releases the current flight's lease

namespace review_async {

struct inline_executor {
    bool operator==(const inline_executor&) const noexcept { return true; }
};

/// Answers the login from the fake server at once; keeps the handlers of the
/// calls listed in `deferred` for the test to complete later; the first of
/// them also throws from async_send after taking its handler (a transport
/// that failed to start, or says so, yet completes later).
class deferring_transport {
public:
    explicit deferring_transport(tokmgr::testing::fake_auth_server server) : server_(std::move(server)) {}
    inline_executor get_executor() const noexcept { return {}; }

    template <class Handler>
    void async_send(const tokmgr::http_request& request, Handler&& handler) {
        const std::size_t call = ++s_->calls;
        if (call == s_->throw_at || call == s_->defer_at) {
            s_->kept.push_back([h = std::decay_t<Handler>(handler)]() mutable {
                h(make_error_code(tokmgr::errc::connection_failed), tokmgr::http_response{});
            });
            if (call == s_->throw_at) throw std::runtime_error("could not start");
            return;
        }
        handler(std::error_code(), server_(request));
    }

    struct shared {
        std::size_t calls = 0, throw_at = 0, defer_at = 0;
        std::vector<std::function<void()>> kept;
    };
    std::shared_ptr<shared> s_ = std::make_shared<shared>();

private:
    tokmgr::testing::fake_auth_server server_;
};

}  // namespace review_async

template <>
struct tokmgr::detail::executor_ops<review_async::inline_executor> {
    static constexpr bool known = true;
    template <class Function>
    static void post(const review_async::inline_executor&, Function&& function) {
        function();
    }
    template <class Function>
    static void post_after(const review_async::inline_executor&, std::chrono::nanoseconds, Function&& function) {
        function();
    }
    static bool running_in_this_thread(const review_async::inline_executor&) noexcept { return false; }
};

// Flight 1's request is started, async_send throws, the flight ends. Flight 2
// (a login) takes the lease and is out. Flight 1's late completion is
// "ignored" (in_flight_ != pending) — but its handler still runs
// `if (!next) self->lease_.reset()`, releasing flight 2's lease while its
// request is out: another process may now take the lease and rotate too.
TEST_CASE("review: a late answer to an ended flight releases the lease of the flight in progress") {
    test::harness h;
    h.options.backoff_initial = 1s;
    h.options.backoff_max = 1s;
    review_async::deferring_transport transport(h.server);
    tokmgr::testing::shared_storage store;
    auto manager = std::make_unique<tokmgr::token_manager<review_async::deferring_transport,
                                                          tokmgr::testing::manual_clock,
                                                          tokmgr::testing::shared_storage, tokmgr::simdjson_json>>(
        transport, login(), h.options, h.clock, store);
    REQUIRE_FALSE(manager->get_token().empty());  // call 1: login, answered
    transport.s_->throw_at = 2;
    transport.s_->defer_at = 3;
    h.clock.advance(past_soft(h.options));
    manager->get_token();  // call 2: the refresh starts, async_send throws: flight 1 ends
    REQUIRE(transport.s_->calls == 2);
    h.clock.advance(2s);
    manager->get_token();  // call 3: flight 2 (a login: the token was marked spent), left out
    REQUIRE(transport.s_->calls == 3);
    std::error_code ec;
    {
        auto outsider = store.lock(std::chrono::milliseconds(0), ec);
        CHECK_FALSE(static_cast<bool>(outsider));  // flight 2 holds the lease
    }
    transport.s_->kept[0]();  // flight 1's late completion
    CHECK(manager->counters().ignored_answers == 1);
    {
        auto outsider = store.lock(std::chrono::milliseconds(0), ec);
        CHECK_FALSE(static_cast<bool>(outsider));  // still flight 2's
    }
    transport.s_->kept[1]();
    transport.s_->kept.clear();
}
