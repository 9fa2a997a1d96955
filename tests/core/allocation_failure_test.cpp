// Allocation failure by count: the test binary's operator new fails the n-th
// allocation of the calling thread when told to (never otherwise), and a
// login or refresh is run once for every n. Whatever allocation fails, the
// caller gets a JWT or an error, no flight is left that nobody completes (the
// next caller does not wait), and no refresh token is sent twice.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdlib>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <vector>

using namespace std::chrono_literals;

#include "../failing_new.hpp"


namespace {

/// A caller's answer is either a JWT or an error, never both or neither.
void check_answer(tokmgr::secret_view jwt, std::error_code ec) {
    if (ec) CHECK(jwt.empty());
    else CHECK_FALSE(jwt.empty());
}

}  // namespace

TEST_CASE("allocation failure: fail the n-th allocation of a login, then of a refresh, for every n") {
    for (const bool refresh : {false, true}) {
        std::size_t n = 1;
        for (;; ++n) {
            CAPTURE(refresh);
            CAPTURE(n);
            test::harness h;
            h.options.max_wait = 2s;  // a flight left uncompleted would make the next call wait
            auto manager = h.make();
            if (refresh) {
                manager->get_token();
                h.clock.advance(29min + 1s);
            }
            std::error_code ec;
            fail_allocation(n);
            tokmgr::secret_view jwt;
            try {
                jwt = manager->get_token(ec);
            } catch (...) {
                stop_failing();
                FAIL("get_token(ec) threw");
            }
            const bool failed = stop_failing();
            check_answer(jwt, ec);
            // Nothing is left half done: after any backoff the next caller
            // gets a JWT without waiting for a flight nobody runs.
            h.clock.advance(h.options.backoff_max + 1s);
            const std::string next(manager->get_token(ec).reveal());
            CHECK_FALSE(ec);
            CHECK_FALSE(next.empty());
            CHECK(h.server.stats().refresh_tokens_reused == 0);
            if (!failed) break;
            REQUIRE(n < 5000);
        }
        CHECK(n > 10);
    }
}

TEST_CASE("allocation failure: fail the n-th allocation while a refresh is handed to an executor") {
    std::size_t n = 1;
    for (;; ++n) {
        CAPTURE(n);
        test::harness h;
        h.options.max_wait = 2s;
        // Parks the task, as a busy pool would; nobody ever runs it.
        auto parked = std::make_shared<std::vector<std::function<void()>>>();
        h.options.executor = [parked](std::function<void()> task) { parked->push_back(std::move(task)); };
        auto manager = h.make();
        const std::string first(manager->get_token().reveal());
        h.clock.advance(tokmgr::schedule_for(30min, h.options, 0).soft);
        parked->reserve(4);  // the test's own vector does not take part
        std::error_code ec;
        fail_allocation(n);
        tokmgr::secret_view jwt;
        try {
            jwt = manager->get_token(ec);
        } catch (...) {
            stop_failing();
            FAIL("get_token(ec) threw");
        }
        const bool failed = stop_failing();
        check_answer(jwt, ec);
        // Past the hard threshold the refresh, parked or lost, is run by the
        // caller: a JWT without waiting.
        h.clock.advance(30min);
        const std::string next(manager->get_token(ec).reveal());
        CHECK_FALSE(ec);
        CHECK(next != first);
        CHECK(h.server.stats().refresh_tokens_reused == 0);
        if (!failed) break;
        REQUIRE(n < 5000);
    }
    CHECK(n > 3);
}
