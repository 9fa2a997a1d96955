// Policies for hostile tests: a storage whose state outlives the manager (a
// file or a database shared by processes, in memory), a JSON policy and a
// storage that fail on their n-th call, and helpers to read a fake JWT's
// expiry and to bound a call that might hang.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <tokmgr/detail/jwt_lifetime.hpp>
#include <tokmgr/json/simdjson.hpp>
#include <tokmgr/testing/fake_auth_server.hpp>
#include <tokmgr/testing/fake_transport.hpp>
#include <tokmgr/testing/manual_clock.hpp>
#include <tokmgr/token_manager.hpp>

namespace test {

/// How a faulty call fails.
enum class fault { none, error, exception };

/// Copies share one stored set and one script, so a manager destroyed and a
/// new one built on a copy see the same store, as a restarted process sees
/// its token file.
class shared_store {
public:
    struct state {
        std::mutex mutex;
        std::optional<tokmgr::token_set> stored;
        std::vector<tokmgr::token_set> written;  // every set ever stored, in order
        std::size_t loads = 0;
        std::size_t stores = 0;
        std::size_t fail_load_at = 0;  // 1-based call number; 0: never
        std::size_t fail_store_at = 0;
        fault how = fault::error;
        std::function<void(const tokmgr::token_set&)> on_store;  // after a successful store, without the lock
        std::function<void()> on_call;                           // at every load or store, without the lock
    };

    shared_store() : state_(std::make_shared<state>()) {}

    std::optional<tokmgr::token_set> load(std::error_code& ec) {
        ec.clear();
        std::function<void()> hook;
        {
            std::lock_guard<std::mutex> lock(state_->mutex);
            hook = state_->on_call;
        }
        if (hook) hook();
        std::lock_guard<std::mutex> lock(state_->mutex);
        const std::size_t call = ++state_->loads;
        if (call == state_->fail_load_at) {
            if (state_->how == fault::exception) throw std::runtime_error("injected load failure");
            ec = make_error_code(tokmgr::errc::storage_failed);
            return std::nullopt;
        }
        return state_->stored;
    }

    void store(const tokmgr::token_set& set, std::error_code& ec) {
        ec.clear();
        std::function<void(const tokmgr::token_set&)> after;
        std::function<void()> hook;
        {
            std::lock_guard<std::mutex> lock(state_->mutex);
            hook = state_->on_call;
        }
        if (hook) hook();
        {
            std::lock_guard<std::mutex> lock(state_->mutex);
            const std::size_t call = ++state_->stores;
            if (call == state_->fail_store_at) {
                if (state_->how == fault::exception) throw std::runtime_error("injected store failure");
                ec = make_error_code(tokmgr::errc::storage_failed);
                return;
            }
            state_->stored = set;
            state_->written.push_back(set);
            after = state_->on_store;
        }
        if (after) after(set);
    }

    state& shared() const { return *state_; }

    std::optional<tokmgr::token_set> stored() const {
        std::lock_guard<std::mutex> lock(state_->mutex);
        return state_->stored;
    }

private:
    std::shared_ptr<state> state_;
};

/// simdjson_json that throws (or, for parse_jwt_claims, may always throw) on
/// its n-th call, counted over all of its functions and all copies.
class faulty_json {
public:
    struct state {
        std::atomic<std::size_t> calls{0};
        std::atomic<std::size_t> throw_at{0};       // 1-based; 0: never
        std::atomic<bool> claims_always_throw{false};
    };

    faulty_json() : state_(std::make_shared<state>()) {}

    std::string write_object(const tokmgr::flat_object& object) const {
        count();
        return json_.write_object(object);
    }
    tokmgr::flat_object read_object(std::string_view body, std::error_code& ec) const {
        count();
        return json_.read_object(body, ec);
    }
    tokmgr::jwt_claims parse_jwt_claims(std::string_view payload, std::error_code& ec) const {
        count();
        if (state_->claims_always_throw.load()) throw std::runtime_error("injected claims failure");
        return json_.parse_jwt_claims(payload, ec);
    }

    state& shared() const { return *state_; }

private:
    void count() const {
        const std::size_t call = state_->calls.fetch_add(1) + 1;
        if (call == state_->throw_at.load()) throw std::runtime_error("injected JSON failure");
    }

    tokmgr::simdjson_json json_;
    std::shared_ptr<state> state_;
};

using store_manager = tokmgr::token_manager<tokmgr::testing::fake_transport, tokmgr::testing::manual_clock,
                                            shared_store, faulty_json>;

/// The `exp` claim of a JWT the fake auth server issued, in seconds since
/// the epoch; nothing if it has none.
inline std::optional<std::int64_t> jwt_exp(std::string_view jwt) {
    auto payload = tokmgr::detail::jwt_payload(jwt);
    if (!payload) return std::nullopt;
    std::error_code ec;
    const tokmgr::jwt_claims claims = tokmgr::simdjson_json().parse_jwt_claims(*payload, ec);
    if (ec) return std::nullopt;
    return claims.expires_at;
}

/// Whole seconds of the wall clock, as JWT claims count them.
inline std::int64_t wall_seconds(const tokmgr::testing::manual_clock& clock) {
    return std::chrono::duration_cast<std::chrono::seconds>(clock.wall_now().time_since_epoch()).count();
}

/// Runs `call` on its own thread and says whether it returned within
/// `limit`. A call that hangs is left running (detached) so the test can
/// report it instead of hanging the suite; whatever it uses must be shared.
inline bool finishes_within(std::chrono::milliseconds limit, std::function<void()> call) {
    auto done = std::make_shared<std::promise<void>>();
    std::future<void> finished = done->get_future();
    std::thread([done, call = std::move(call)] {
        call();
        done->set_value();
    }).detach();
    return finished.wait_for(limit) == std::future_status::ready;
}

}  // namespace test
