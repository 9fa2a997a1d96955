// tokmgr/impl/manager_async_driver.hpp — the asynchronous driver, and the
// entry of async_get_token's waiters. The driver performs the synchronous
// driver's steps as asynchronous operations: the request through the
// transport's async_send; the store through its asynchronous form or, for a
// blocking store, on the manager's storage thread (or
// manager_options::storage_executor). Each outcome is posted back to the
// transport's executor, where the machine is advanced: no policy call that
// can block runs on that executor.
// Included by impl/token_manager.hpp, not meant to be included directly.
#pragma once

#include "token_manager.hpp"

namespace tokmgr {
namespace detail {

template <class Transport, class Clock, class Storage, class Json, class Protocol>
std::shared_ptr<flight> manager_core<Transport, Clock, Storage, Json, Protocol>::acquire_async(
    const std::shared_ptr<async_waiter>& waiter, std::shared_ptr<const snapshot>& served, error_info& failed) {
    const std::int64_t now = now_ns();
    std::shared_ptr<flight> pending;
    bool start = false;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (closed_.load(std::memory_order_acquire)) {
            failed = {make_error_code(errc::shut_down), "async_get_token: the token manager was destroyed"};
            return nullptr;
        }
        const verdict said = session_.on_demand(now);
        switch (said.what) {
        case demand::serve:
            served = session_.current();
            return nullptr;
        case demand::fail:
            failed = session_.last_error();
            return nullptr;
        case demand::join:
            pending = in_flight_;
            joined_.fetch_add(1, std::memory_order_relaxed);
            break;
        case demand::serve_and_start:
        case demand::start_and_wait:
            pending = start_flight_locked();
            if (!pending) {
                failed = {make_error_code(errc::policy_error), "async_get_token: out of memory starting a refresh"};
                return nullptr;
            }
            start = true;
            if (said.what == demand::serve_and_start) served = session_.current();
            break;
        }
    }
    if (start) launch(pending);
    if (served) return nullptr;
    if (!pending->add_waiter(waiter)) {
        if (pending->result() && now_ns() < pending->result()->hard_ns) served = pending->result();
        else if (pending->result()) failed = expired_meanwhile();
        else failed = pending->error();
        return nullptr;
    }
    return pending;
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
void manager_core<Transport, Clock, Storage, Json, Protocol>::async_begin(const std::shared_ptr<flight>& pending) noexcept {
    if (!pending->claim()) return;
    async_perform(pending, started());
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
void manager_core<Transport, Clock, Storage, Json, Protocol>::async_perform(
    const std::shared_ptr<flight>& pending, flight_step step) noexcept {
    if (closed_.load(std::memory_order_acquire)) step = shut_down_step();
    if (step.kind == step_kind::finish) {
        // The lease goes back before the waiters are answered: a flight
        // one of them starts then finds it released (the storage thread
        // runs tasks in order).
        release_lease_async();
        std::lock_guard<std::mutex> gate(policy_gate_);  // ~token_manager() waits for its hooks
        finish_flight(pending, step);
        return;
    }
    {
        std::lock_guard<std::mutex> gate(policy_gate_);
        account(step);
    }
    if (step.kind == step_kind::send) async_send_step(pending, std::move(step));
    else async_storage_step(pending, std::move(step));
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
void manager_core<Transport, Clock, Storage, Json, Protocol>::async_advance(
    const std::shared_ptr<flight>& pending, step_outcome done) noexcept {
    if (!in_progress(pending)) return;  // shut down meanwhile: its waiters were answered
    async_perform(pending, advanced(std::move(done)));
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
void manager_core<Transport, Clock, Storage, Json, Protocol>::post_back(
    const std::shared_ptr<flight>& pending, step_outcome done) noexcept {
    if constexpr (executor_ops<executor_type_or_void>::known) {
        try {
            auto self = this->shared_from_this();
            auto box = std::make_shared<step_outcome>(std::move(done));
            executor_ops<executor_type_or_void>::post(
                transport_.get_executor(), [self, pending, box] { self->async_advance(pending, std::move(*box)); });
            return;
        } catch (...) {
        }
    }
    std::lock_guard<std::mutex> gate(policy_gate_);
    finish_flight(pending, [&] {
        std::lock_guard<std::mutex> lock(mutex_);
        return machine_.fail(failure_info(errc::policy_error,
                                          "could not post the storage's answer to the transport's executor"),
                             now_ns());
    }());
    lease_.reset();
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
void manager_core<Transport, Clock, Storage, Json, Protocol>::async_storage_step(
    const std::shared_ptr<flight>& pending, flight_step step) noexcept {
    if constexpr (storage_is_async) {
        async_storage_native(pending, std::move(step));
    } else {
        bool queued = false;
        try {
            auto self = this->shared_from_this();
            auto kept = std::make_shared<flight_step>(std::move(step));
            auto ticket = std::make_shared<storage_ticket>(self, pending);
            auto work = outstanding_work();
            queued = to_storage([self, pending, kept, ticket, work] {
                ticket->ran = true;
                step_outcome done;
                if (!self->perform_storage_gated(*kept, done)) return;  // shut down: its waiters were answered
                self->post_back(pending, std::move(done));
            });
            if (!queued) ticket->ran = true;  // answered below, not by the ticket
        } catch (...) {
        }
        if (!queued) {
            step_outcome failed;
            failed.failure = failure_info(errc::storage_failed, " (no thread to run the store on)");
            post_back(pending, std::move(failed));
        }
    }
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
bool manager_core<Transport, Clock, Storage, Json, Protocol>::perform_storage_gated(
    flight_step& step, step_outcome& done) noexcept {
    using namespace std::chrono;
    flight_runner_mark mark(id_);
    const auto deadline = std::chrono::steady_clock::now() + step.lease_wait;
    const milliseconds total = step.lease_wait;
    for (;;) {
        {
            std::lock_guard<std::mutex> gate(policy_gate_);
            if (closed_.load(std::memory_order_acquire)) return false;
            if (step.kind == step_kind::take_lease)
                step.lease_wait = std::clamp(duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now()),
                                             milliseconds(0), std::min(total, milliseconds(100)));
            done = perform_storage(step);
        }
        if (step.kind != step_kind::take_lease || done.failure.code != errc::lease_timeout ||
            std::chrono::steady_clock::now() >= deadline)
            return true;
    }
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
auto manager_core<Transport, Clock, Storage, Json, Protocol>::outstanding_work() {
    if constexpr (executor_ops<executor_type_or_void>::known)
        return work_tracking<executor_type_or_void>::keep(transport_.get_executor());
    else
        return 0;
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
bool manager_core<Transport, Clock, Storage, Json, Protocol>::to_storage(std::function<void()> task) noexcept {
    if (!options_.storage_executor) return storage_worker_.post(std::move(task));
    try {
        options_.storage_executor(std::move(task));
        return true;
    } catch (...) {
        return false;
    }
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
struct manager_core<Transport, Clock, Storage, Json, Protocol>::storage_ticket {
    std::weak_ptr<manager_core> core;
    std::shared_ptr<flight> pending;
    bool ran = false;
    storage_ticket(std::weak_ptr<manager_core> owner, std::shared_ptr<flight> flight_of)
        : core(std::move(owner)), pending(std::move(flight_of)) {}
    ~storage_ticket() {
        if (ran) return;
        if (auto owner = core.lock(); owner && !owner->closed_.load(std::memory_order_acquire)) {
            step_outcome dropped;
            dropped.failure =
                failure_info(errc::storage_failed, " (manager_options::storage_executor dropped the call unrun)");
            owner->post_back(pending, std::move(dropped));
        }
    }
};

template <class Transport, class Clock, class Storage, class Json, class Protocol>
void manager_core<Transport, Clock, Storage, Json, Protocol>::async_storage_native(
    const std::shared_ptr<flight>& pending, flight_step step) noexcept {
    if constexpr (storage_is_async) {
        std::lock_guard<std::mutex> gate(policy_gate_);
        if (closed_.load(std::memory_order_acquire)) return;
        try {
            auto self = this->shared_from_this();
            auto work = outstanding_work();
            auto failed = [self, pending, work](std::error_code ec) {
                self->post_storage_failure_later(pending, ec ? ec : make_error_code(errc::storage_failed));
            };
            auto decided = [self, pending, failed, work](std::error_code ec, bool yes) {
                if (ec) return failed(ec);
                step_outcome done;
                done.yes = yes;
                self->post_back_unlocked_later(pending, std::move(done));
            };
            switch (step.kind) {
            case step_kind::take_lease:
                if constexpr (coordinating) {
                    auto leased = [self, pending, failed, work](std::error_code ec, lease_type lease) {
                        if (!ec && !static_cast<bool>(lease)) ec = make_error_code(errc::lease_timeout);
                        if (ec) return failed(ec);
                        self->post_lease_back(pending, std::move(lease));
                    };
                    storage_.async_lock(step.lease_wait, std::move(leased));
                }
                break;
            case step_kind::load:
                storage_.async_load([self, pending, failed, work](std::error_code ec, std::optional<token_set> stored) {
                    if (ec) return failed(ec);
                    step_outcome done;
                    done.stored = std::move(stored);
                    self->post_back_unlocked_later(pending, std::move(done));
                });
                break;
            case step_kind::store_mark:
            case step_kind::persist:
                if constexpr (coordinating) {
                    storage_.async_store_if(*step.set, step.expected_generation, decided);
                } else {
                    storage_.async_store(*step.set, [decided](std::error_code ec) { decided(ec, true); });
                }
                break;
            case step_kind::check_lease:
                if constexpr (coordinating) {
                    if (lease_) storage_.async_holds(*lease_, decided);
                    else decided({}, false);
                }
                break;
            case step_kind::send:
            case step_kind::finish:
                break;
            }
        } catch (...) {
            // Posted, not advanced here: the policy gate is held.
            post_storage_failure_later(pending, make_error_code(errc::storage_failed));
        }
    }
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
void manager_core<Transport, Clock, Storage, Json, Protocol>::post_lease_back(
    const std::shared_ptr<flight>& pending, lease_type lease) noexcept {
    if constexpr (coordinating && executor_ops<executor_type_or_void>::known) {
        try {
            auto self = this->shared_from_this();
            auto box = std::make_shared<std::optional<lease_type>>(std::move(lease));
            executor_ops<executor_type_or_void>::post(transport_.get_executor(), [self, pending, box] {
                step_outcome done;
                {
                    std::lock_guard<std::mutex> gate(self->policy_gate_);
                    if (self->closed_.load(std::memory_order_acquire)) return;
                    self->lease_ = std::move(*box);
                    done.yes = true;
                }
                self->async_advance(pending, std::move(done));
            });
            return;
        } catch (...) {
        }
        post_storage_failure_later(pending, make_error_code(errc::storage_failed));
    }
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
void manager_core<Transport, Clock, Storage, Json, Protocol>::post_back_unlocked_later(
    const std::shared_ptr<flight>& pending, step_outcome done) noexcept {
    if constexpr (executor_ops<executor_type_or_void>::known) {
        try {
            auto self = this->shared_from_this();
            auto box = std::make_shared<step_outcome>(std::move(done));
            executor_ops<executor_type_or_void>::post(
                transport_.get_executor(), [self, pending, box] { self->async_advance(pending, std::move(*box)); });
        } catch (...) {  // no memory to post with: the flight ends at shut-down, its waiters by max_wait
        }
    }
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
void manager_core<Transport, Clock, Storage, Json, Protocol>::post_storage_failure_later(
    const std::shared_ptr<flight>& pending, std::error_code ec) noexcept {
    step_outcome done;
    storage_failure(done, ec);
    post_back_unlocked_later(pending, std::move(done));
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
void manager_core<Transport, Clock, Storage, Json, Protocol>::release_lease_async() noexcept {
    if constexpr (coordinating) {
        std::optional<lease_type> held;
        {
            std::lock_guard<std::mutex> gate(policy_gate_);
            if (!lease_) return;
            if (!static_cast<bool>(*lease_)) {  // released with the flight's last write
                lease_.reset();
                return;
            }
            held = std::move(lease_);
            lease_.reset();
            if constexpr (storage_is_async) {
                if (closed_.load(std::memory_order_acquire)) return;
                try {
                    storage_.async_release(std::move(*held), [](std::error_code) {});  // else it expires
                } catch (...) {
                }
                return;
            }
        }
        if constexpr (!storage_is_async) {
            try {
                auto self = this->shared_from_this();
                auto box = std::make_shared<std::optional<lease_type>>(std::move(held));
                if (to_storage([self, box, work = outstanding_work()] {
                        std::lock_guard<std::mutex> gate(self->policy_gate_);
                        box->reset();
                    }))
                    return;
            } catch (...) {
            }
            // No thread to release it on: here, rather than hold it to its expiry.
            std::lock_guard<std::mutex> gate(policy_gate_);
            held.reset();
        }
    }
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
void manager_core<Transport, Clock, Storage, Json, Protocol>::async_send_step(
    const std::shared_ptr<flight>& pending, flight_step step) noexcept {
    if constexpr (has_executor_v<Transport>) {
        std::shared_ptr<sent_request> kept;
        try {
            kept = std::make_shared<sent_request>();
            kept->sent = prepare(step);
            kept->request = step.request;
        } catch (...) {
            step_outcome done;
            done.failure = failure_info(errc::policy_error, "a policy threw before the login or refresh was sent");
            return async_perform(pending, advanced(std::move(done)));
        }
        try {
            auto self = this->shared_from_this();
            const http_request& request = kept->sent.request;
            transport_.async_send(request, [self, pending, kept](std::error_code ec, http_response response) {
                flight_runner_mark mark(self->id_);
                // A transport that completes twice, or answers a flight
                // that ended: the copy would rotate back to a spent
                // refresh token.
                if (std::exchange(kept->answered, true) || !self->awaits(pending, kept->request)) {
                    secure_clear(response.body);
                    self->ignored_answers_.fetch_add(1, std::memory_order_relaxed);
                    return;
                }
                step_outcome done;
                {
                    std::lock_guard<std::mutex> gate(self->policy_gate_);  // the Json policy, under the gate
                    if (self->closed_.load(std::memory_order_acquire)) {
                        secure_clear(response.body);
                        done.failure = failure_info(errc::shut_down, "the token manager was destroyed");
                    } else {
                        done = self->judged(kept->sent, kept->request, ec, response);
                    }
                }
                self->async_advance(pending, std::move(done));
            });
        } catch (...) {
            step_outcome done;
            done.failure = failure_info(errc::policy_error, "starting the request on the transport failed");
            async_perform(pending, advanced(std::move(done)));
        }
    }
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
bool manager_core<Transport, Clock, Storage, Json, Protocol>::awaits(
    const std::shared_ptr<flight>& pending, std::uint64_t request) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return in_flight_ == pending && machine_.awaits(request);
}

}  // namespace detail
}  // namespace tokmgr
