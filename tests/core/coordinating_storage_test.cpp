// Managers that share a coordinating store (testing::shared_storage: a lease
// and a compare-and-swap on the generation), as processes sharing a file or
// a Redis key do: one refresh per expiry between them, no reuse, and the
// lease's failures stop a refresh before anything is sent.
#include <tokmgr/storage/file.hpp>
#include <tokmgr/testing/shared_storage.hpp>

#include <cstdlib>
#include <filesystem>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "harness.hpp"

using namespace std::chrono_literals;

namespace {

using shared_manager = tokmgr::token_manager<tokmgr::testing::fake_transport, tokmgr::testing::manual_clock,
                                             tokmgr::testing::shared_storage, tokmgr::simdjson_json>;

std::unique_ptr<shared_manager> make_shared_manager(test::harness& h, tokmgr::testing::shared_storage& store) {
    return std::make_unique<shared_manager>(h.transport,
                                            tokmgr::credentials{"user@example.com", tokmgr::secret(test::password)},
                                            h.options, h.clock, store);
}


}  // namespace

using test::temp_dir;

using file_manager = tokmgr::token_manager<tokmgr::testing::fake_transport, tokmgr::testing::manual_clock,
                                           tokmgr::file_storage, tokmgr::simdjson_json>;

static_assert(tokmgr::is_coordinating_storage_v<tokmgr::file_storage>);
static_assert(tokmgr::is_coordinating_storage_v<tokmgr::testing::shared_storage>);
static_assert(!tokmgr::is_coordinating_storage_v<tokmgr::memory_storage>);

TEST_CASE("four managers on one coordinating store, called from four threads across ten expiries: one refresh each") {
    test::harness h(60s);
    tokmgr::testing::shared_storage store;
    std::vector<std::unique_ptr<shared_manager>> managers;
    for (int i = 0; i < 4; ++i) managers.push_back(make_shared_manager(h, store));
    CHECK(call_across_ten_expiries(h, managers, 50) == 0);
    const auto stats = h.server.stats();
    CHECK(stats.refresh_tokens_reused == 0);
    CHECK(stats.refreshes_rejected == 0);
    CHECK(stats.logins == 1);
    CHECK(stats.refreshes == 9);  // one per expiry after the first login, not one per manager
}

TEST_CASE("a restarted manager on the store logs in after a refresh whose answer was lost, never reusing the token") {
    test::harness h;
    tokmgr::testing::shared_storage store;
    {
        auto first = make_shared_manager(h, store);
        first->get_token();
        h.clock.advance(29min);
        h.transport.fail_call(2, tokmgr::errc::timeout);  // the refresh reached the server; its answer did not come back
        std::error_code ec;
        first->get_token(ec);
        CHECK(ec == tokmgr::errc::timeout);
        REQUIRE(store.stored());
        CHECK(store.stored()->refresh_token_spent);  // written before the request went out
        CHECK(store.stored()->refresh_token.empty());
    }
    auto restarted = make_shared_manager(h, store);
    CHECK_FALSE(restarted->get_token().empty());
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().logins == 2);  // the unknown outcome cost a login, not the family
}

TEST_CASE("a lease held elsewhere past lease_wait: the JWT is served until its hard threshold, then lease_timeout") {
    test::harness h;
    h.options.lease_wait = 20ms;
    tokmgr::testing::shared_storage store;
    auto manager = make_shared_manager(h, store);
    const std::string first(manager->get_token().reveal());
    auto outsider = store.hold_from_outside();
    h.clock.advance(tokmgr::schedule_for(30min, h.options, 0).soft + 1s);  // soft-expired
    CHECK(manager->get_token().reveal() == first);  // the refresh could not start; still served
    h.clock.advance(30min);                         // hard-expired
    std::error_code ec;
    h.clock.advance(1h);  // past any backoff
    CHECK(manager->get_token(ec).empty());
    CHECK(ec == tokmgr::errc::lease_timeout);
    CHECK(h.server.stats().refreshes == 0);
}

TEST_CASE("a lease lost before the refresh is sent: nothing is sent, the token stays spent, the next attempt logs in") {
    test::harness h;
    tokmgr::testing::shared_storage store;
    auto manager = make_shared_manager(h, store);
    manager->get_token();
    h.clock.advance(29min);
    // The lease lapses right after the spent mark is written, as when the
    // holder is paused past a Redis lease's TTL.
    store.lose_lease_at_store(store.stats().stores + 1);
    std::error_code ec;
    manager->get_token(ec);
    CHECK(ec == tokmgr::errc::lease_timeout);
    CHECK(h.server.stats().refreshes == 0);  // nothing was sent
    REQUIRE(store.stored());
    CHECK(store.stored()->refresh_token_spent);
    h.clock.advance(1min);  // past the backoff
    CHECK_FALSE(manager->get_token(ec).empty());
    CHECK_FALSE(ec);
    CHECK(h.server.stats().logins == 2);
    CHECK(h.server.stats().refreshes == 0);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
}

TEST_CASE("a newer set written by another writer is adopted with no request") {
    test::harness h;
    tokmgr::testing::shared_storage store;
    auto a = make_shared_manager(h, store);
    auto b = make_shared_manager(h, store);
    a->get_token();                            // logs in, stores generation 1
    CHECK_FALSE(b->get_token().empty());       // adopts it
    CHECK(h.server.stats().logins == 1);
    h.clock.advance(29min);
    a->get_token();                            // a refreshes: mark (2), new pair (3)
    CHECK(store.stored()->generation == 3);
    CHECK(b->get_token().reveal() == a->get_token().reveal());  // b adopts, no refresh of its own
    CHECK(h.server.stats().refreshes == 1);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
}

TEST_CASE("a spent mark that cannot be stored stops the refresh before anything is sent") {
    test::harness h;
    tokmgr::testing::shared_storage store;
    auto manager = make_shared_manager(h, store);
    const std::string first(manager->get_token().reveal());
    h.clock.advance(tokmgr::schedule_for(30min, h.options, 0).soft + 1s);
    store.fail_store(store.stats().stores + 1);  // the next write: the mark
    CHECK(manager->get_token().reveal() == first);  // still served
    CHECK(h.server.stats().refreshes == 0);
    CHECK(manager->last_error().code == tokmgr::errc::storage_failed);
    h.clock.advance(1min);  // past the backoff: the mark can be stored now
    CHECK(manager->get_token().reveal() != first);
    CHECK(h.server.stats().refreshes == 1);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
}

TEST_CASE("file_storage: four managers on one file across ten expiries, and a restart that reads the spent mark") {
    temp_dir dir;
    const std::string path = (dir.path / "state" / "token.json").string();  // the directory is created
    test::harness h(60s);
    auto make = [&] {
        return std::make_unique<file_manager>(h.transport,
                                              tokmgr::credentials{"user@example.com", tokmgr::secret(test::password)},
                                              h.options, h.clock, tokmgr::file_storage(path));
    };
    std::vector<std::unique_ptr<file_manager>> managers;
    for (int i = 0; i < 4; ++i) managers.push_back(make());
    CHECK(call_across_ten_expiries(h, managers, 20) == 0);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().logins == 1);
    CHECK(h.server.stats().refreshes == 9);

    // A refresh whose answer is lost, then a restart on the same file.
    managers.clear();
    {
        auto last = make();
        h.transport.fail_call(h.transport.calls() + 1, tokmgr::errc::timeout);
        std::error_code ec;
        last->get_token(ec);
        CHECK(ec == tokmgr::errc::timeout);
    }
    auto restarted = make();
    CHECK_FALSE(restarted->get_token().empty());
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().logins == 2);
}

TEST_CASE("file_storage: a corrupt file is moved aside and the manager logs in afresh, never reusing a token") {
    temp_dir dir;
    const std::string path = (dir.path / "token.json").string();
    test::harness h;
    auto make = [&] {
        return std::make_unique<file_manager>(h.transport,
                                              tokmgr::credentials{"user@example.com", tokmgr::secret(test::password)},
                                              h.options, h.clock, tokmgr::file_storage(path));
    };
    auto manager = make();
    manager->get_token();
    {
        std::FILE* f = std::fopen(path.c_str(), "w");
        std::fputs("{\"format\": garbage", f);
        std::fclose(f);
    }
    h.clock.advance(29min);  // due: the flight reads the corrupt file
    std::error_code ec;
    CHECK_FALSE(manager->get_token(ec).empty());
    CHECK_FALSE(ec);
    CHECK(h.server.stats().logins == 2);  // what the file said is unknown: log in rather than risk a reuse
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    int moved_aside = 0;
    for (const auto& entry : std::filesystem::directory_iterator(dir.path))
        moved_aside += entry.path().filename().string().find("corrupt") != std::string::npos;
    CHECK(moved_aside == 1);
    // The store holds the new set again, and a restarted manager uses it.
    auto restarted = make();
    CHECK(restarted->get_token().reveal() == manager->get_token().reveal());
    CHECK(h.server.stats().logins == 2);
}

TEST_CASE("a store that is down: the JWT is served to its hard threshold, then a private login; never the shared token") {
    test::harness h;
    std::vector<tokmgr::event_kind> events;
    std::mutex events_mutex;
    h.options.on_event = [&](const tokmgr::event& e) {
        std::lock_guard<std::mutex> lock(events_mutex);
        events.push_back(e.kind);
    };
    tokmgr::testing::shared_storage store;
    auto a = make_shared_manager(h, store);
    const std::string first(a->get_token().reveal());
    store.set_down(true);
    h.clock.advance(tokmgr::schedule_for(30min, h.options, 0).soft + 1s);
    CHECK(a->get_token().reveal() == first);  // soft-expired: the shared token cannot be marked, so it is not sent
    CHECK(h.server.stats().refreshes == 0);
    h.clock.advance(10min);  // past the hard threshold
    std::error_code ec;
    const std::string privately(a->get_token(ec).reveal());
    CHECK_FALSE(ec);  // no caller error while a JWT can be had from the server
    CHECK(privately != first);
    CHECK(h.server.stats().logins == 2);
    CHECK(h.server.stats().refreshes == 0);
    {
        std::lock_guard<std::mutex> lock(events_mutex);
        CHECK(std::count(events.begin(), events.end(), tokmgr::event_kind::private_session_started) == 1);
    }
    // Still down at the next expiry: the private refresh token (nobody else
    // has it) is refreshed without a mark.
    h.clock.advance(29min);
    CHECK(a->get_token(ec).reveal() != privately);
    CHECK_FALSE(ec);
    CHECK(h.server.stats().refreshes == 1);
    CHECK(h.server.stats().logins == 2);

    // The store is back and still holds the set from before: the private
    // family becomes the shared one at the next refresh.
    store.set_down(false);
    h.clock.advance(29min);
    CHECK_FALSE(a->get_token(ec).empty());
    CHECK_FALSE(ec);
    CHECK(h.server.stats().refreshes == 2);
    {
        std::lock_guard<std::mutex> lock(events_mutex);
        CHECK(std::count(events.begin(), events.end(), tokmgr::event_kind::private_session_ended) == 1);
    }
    auto b = make_shared_manager(h, store);  // a process that starts now shares it
    CHECK(b->get_token().reveal() == a->get_token().reveal());
    CHECK(h.server.stats().logins == 2);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().refreshes_rejected == 0);
}

TEST_CASE("a private session rejoins a set another process wrote while it was away, and drops its own family") {
    test::harness h;
    tokmgr::testing::shared_storage store;
    auto a = make_shared_manager(h, store);
    auto b = make_shared_manager(h, store);
    a->get_token();
    b->get_token();  // adopts a's set
    store.set_down(true);
    h.clock.advance(30min);
    std::error_code ec;
    const std::string a_private(a->get_token(ec).reveal());  // a: private login
    CHECK_FALSE(ec);
    CHECK(h.server.stats().logins == 2);
    store.set_down(false);
    h.clock.advance(1s);
    const std::string b_jwt(b->get_token(ec).reveal());  // b: refreshes the shared token (marked first)
    CHECK_FALSE(ec);
    CHECK(h.server.stats().refreshes == 1);
    h.clock.advance(29min);  // a is due: it finds b's newer set and takes it
    CHECK(a->get_token(ec).reveal() == b->get_token().reveal());
    CHECK_FALSE(ec);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().refreshes_rejected == 0);
}

TEST_CASE("a store that goes down just before the hard threshold: past it, a private login, not the failed attempt's error") {
    test::harness h;
    h.options.backoff_initial = 20s;  // a backoff that would outlast the JWT
    h.options.backoff_max = 40s;
    tokmgr::testing::shared_storage store;
    auto manager = make_shared_manager(h, store);
    const std::string first(manager->get_token().reveal());
    const auto hard = tokmgr::schedule_for(30min, h.options, 0).hard;
    store.set_down(true);
    h.clock.advance(hard - 2s);  // soft-expired: the refresh fails on the store, nothing is sent
    CHECK(manager->get_token().reveal() == first);
    CHECK(manager->last_error().code == tokmgr::errc::storage_unreachable);
    h.clock.advance(3s);  // past the hard threshold, still inside the 10-20 s backoff
    std::error_code ec;
    CHECK_FALSE(manager->get_token(ec).empty());
    CHECK_FALSE(ec);  // a private login, not the storage error
    CHECK(h.server.stats().logins == 2);
    CHECK(h.server.stats().refreshes == 0);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
}
