// tokmgr/testing/fake_transport.hpp — a scripted Transport for tests.
//
// Every call is counted and recorded, then answered by a handler (by default
// a fake_auth_server or any callable). Faults are injected by count, as
// Beast's test::fail_count does: `fail_call(n, code)` makes the n-th call
// fail. A code that proves the request never left (see request_not_sent)
// fails before the handler runs; any other code runs the handler first and
// then loses its answer, as a connection that dies after the server acted.
// Copies share one state, so a test keeps a copy to inspect and script.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "../errc.hpp"
#include "../http.hpp"

namespace tokmgr::testing {

/// A GET of `target` with no body: the protected call the fakes and the
/// reference server answer.
inline http_request get_request(std::string_view target) {
    http_request request;
    request.method = "GET";
    request.target = target;
    request.content_type = {};
    return request;
}

/// What the transport was asked to send (bodies included: test code only).
struct recorded_request {
    std::string method;
    std::string target;
    std::string body;
};

class fake_transport {
public:
    using handler = std::function<http_response(const http_request&)>;

    fake_transport() : state_(std::make_shared<state>()) {}
    explicit fake_transport(handler respond) : fake_transport() { state_->respond = std::move(respond); }

    http_response send(const http_request& request, std::error_code& ec) {
        ec.clear();
        const std::size_t call = state_->calls.fetch_add(1, std::memory_order_acq_rel) + 1;
        std::error_code injected;
        handler respond;
        std::chrono::nanoseconds delay{0};
        {
            std::lock_guard<std::mutex> lock(state_->mutex);
            state_->requests.push_back({request.method, request.target, std::string(request.body)});
            if (auto it = state_->faults.find(call); it != state_->faults.end()) injected = it->second;
            respond = state_->respond;
            delay = state_->delay;
        }
        if (delay.count() > 0) std::this_thread::sleep_for(delay);
        if (injected && request_not_sent(injected)) {
            ec = injected;
            return {};
        }
        http_response response = respond ? respond(request) : http_response{500, {}, "{}"};
        if (injected) {
            ec = injected;
            return {};
        }
        return response;
    }

    std::string endpoint() const { return "fake://textual"; }

    /// The n-th call (1-based, counted over the transport's life) fails with `code`.
    void fail_call(std::size_t n, std::error_code code) {
        std::lock_guard<std::mutex> lock(state_->mutex);
        state_->faults[n] = code;
    }

    void set_handler(handler respond) {
        std::lock_guard<std::mutex> lock(state_->mutex);
        state_->respond = std::move(respond);
    }

    /// Each call sleeps this long before answering: lets a crowd gather.
    void set_delay(std::chrono::nanoseconds delay) {
        std::lock_guard<std::mutex> lock(state_->mutex);
        state_->delay = delay;
    }

    std::size_t calls() const noexcept { return state_->calls.load(std::memory_order_acquire); }

    std::vector<recorded_request> requests() const {
        std::lock_guard<std::mutex> lock(state_->mutex);
        return state_->requests;
    }

private:
    struct state {
        std::atomic<std::size_t> calls{0};
        std::mutex mutex;  // guards the script and the record, which tests read while calls run
        handler respond;
        std::map<std::size_t, std::error_code> faults;
        std::chrono::nanoseconds delay{0};
        std::vector<recorded_request> requests;
    };
    std::shared_ptr<state> state_;
};

}  // namespace tokmgr::testing
