// tokmgr/impl/manager_flight.hpp — the manager's flight, performed synchronously:
// detail::flight_machine decides each step, these bodies perform it (a store
// call, a request) and turn what happened into the machine's next input; an
// HTTP answer becomes an outcome in judge(), the flight ends in end_flight().
// Included by impl/token_manager.hpp, not meant to be included directly.
#pragma once

#include "token_manager.hpp"

namespace tokmgr {
namespace detail {

template <class Transport, class Clock, class Storage, class Json, class Protocol>
step_outcome manager_core<Transport, Clock, Storage, Json, Protocol>::perform_storage(const flight_step& step) noexcept {
    step_outcome done;
    std::error_code ec;
    try {
        switch (step.kind) {
        case step_kind::take_lease:
            if constexpr (coordinating) {
                lease_.emplace(storage_.lock(step.lease_wait, ec));
                if (!ec && !static_cast<bool>(*lease_)) ec = make_error_code(errc::lease_timeout);
                if (ec) lease_.reset();
            }
            done.yes = true;
            break;
        case step_kind::load:
            done.stored = storage_.load(ec);
            break;
        case step_kind::store_mark:
        case step_kind::persist:
            // For a coordinating store a compare-and-swap on the
            // generation this flight last saw, so nothing newer is
            // overwritten; the flight's last write may release the lease
            // with it (the lease is then empty).
            if constexpr (releases_with_write_v<Storage>) {
                if (step.kind == step_kind::persist && step.last && lease_ && *lease_) {
                    done.yes = storage_.store_if_and_release(*step.set, step.expected_generation, *lease_, ec);
                    break;
                }
            }
            if constexpr (coordinating) {
                done.yes = storage_.store_if(*step.set, step.expected_generation, ec);
            } else {
                storage_.store(*step.set, ec);
                done.yes = true;
            }
            break;
        case step_kind::check_lease:
            if constexpr (coordinating) done.yes = lease_ && storage_.holds(*lease_, ec);
            else done.yes = true;
            break;
        case step_kind::send:
        case step_kind::finish:
            break;
        }
    } catch (...) {
        if constexpr (coordinating) {
            if (step.kind == step_kind::take_lease) lease_.reset();
        }
        ec = make_error_code(errc::storage_failed);
    }
    if (ec) storage_failure(done, ec);
    return done;
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
void manager_core<Transport, Clock, Storage, Json, Protocol>::storage_failure(step_outcome& done, std::error_code ec) noexcept {
    done.yes = false;
    done.stored.reset();
    done.failure.code = ec;
    try {
        done.failure.detail = storage_detail();
    } catch (...) {
    }
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
error_info manager_core<Transport, Clock, Storage, Json, Protocol>::failure_info(errc code, const char* what) noexcept {
    error_info why;
    why.code = make_error_code(code);
    try {
        why.detail = what;
    } catch (...) {
    }
    return why;
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
flight_step manager_core<Transport, Clock, Storage, Json, Protocol>::started() noexcept {
    const std::int64_t now = now_ns();
    std::lock_guard<std::mutex> lock(mutex_);
    try {
        return machine_.start(options_.lease_wait);
    } catch (...) {
        return machine_.fail(failure_info(errc::policy_error, "out of memory starting a login or refresh"), now);
    }
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
flight_step manager_core<Transport, Clock, Storage, Json, Protocol>::advanced(step_outcome done) noexcept {
    const std::int64_t now = now_ns();
    const auto wall = clock_.wall_now();
    std::lock_guard<std::mutex> lock(mutex_);
    try {
        return machine_.advance(std::move(done), now, wall);
    } catch (...) {
        return machine_.fail(failure_info(errc::policy_error, "a policy threw during the login or refresh"), now);
    }
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
error_info manager_core<Transport, Clock, Storage, Json, Protocol>::expired_meanwhile() noexcept {
    return failure_info(errc::protocol_error,
                        "the login or refresh produced a JWT that expired before it could be served");
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
flight_step manager_core<Transport, Clock, Storage, Json, Protocol>::shut_down_step() noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    return machine_.fail(failure_info(errc::shut_down, "the token manager was destroyed"), now_ns());
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
void manager_core<Transport, Clock, Storage, Json, Protocol>::run_flight_claimed(
    const std::shared_ptr<flight>& pending) noexcept {
    flight_runner_mark mark(id_);
    std::lock_guard<std::mutex> gate(policy_gate_);
    flight_step step = started();
    for (;;) {
        if (closed_.load(std::memory_order_acquire)) step = shut_down_step();
        if (step.kind == step_kind::finish) break;
        account(step);
        step = advanced(step.kind == step_kind::send ? send_blocking(step) : perform_storage(step));
    }
    finish_flight(pending, step);
    lease_.reset();
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
step_outcome manager_core<Transport, Clock, Storage, Json, Protocol>::send_blocking(const flight_step& step) noexcept {
    std::optional<outgoing> sending;
    try {
        sending.emplace(prepare(step));
    } catch (...) {
        step_outcome done;
        done.failure = failure_info(errc::policy_error, "a policy threw before the login or refresh was sent");
        return done;
    }
    std::error_code ec;
    http_response response;
    try {
        if constexpr (detect<Transport, send_result>::value) response = transport_.send(sending->request, ec);
        else ec = make_error_code(errc::invalid_configuration);
    } catch (...) {
        ec = make_error_code(errc::policy_error);
    }
    return judged(*sending, step.request, ec, response);
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
outgoing manager_core<Transport, Clock, Storage, Json, Protocol>::prepare(const flight_step& step) {
    outgoing sending;
    sending.by_login = step.by_login;
    token_request built;
    if (step.by_login) {
        logins_.fetch_add(1, std::memory_order_relaxed);
        built = protocol_.login_request(credentials_, options_.login_path, json_);
        sending.sent_secret = credentials_.password;
    } else {
        refreshes_.fetch_add(1, std::memory_order_relaxed);
        built = protocol_.refresh_request(step.refresh_token.reveal(), options_.refresh_path, json_);
        sending.sent_secret = step.refresh_token;
    }
    sending.body = std::move(built.body);
    sending.request.method = std::move(built.method);
    sending.request.target = std::move(built.target);
    sending.request.content_type = std::move(built.content_type);
    sending.request.headers = std::move(built.headers);
    sending.request.body = sending.body.reveal();
    sending.started = std::chrono::steady_clock::now();
    return sending;
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
step_outcome manager_core<Transport, Clock, Storage, Json, Protocol>::judged(
    const outgoing& sent, std::uint64_t request, std::error_code ec, http_response& response) noexcept {
    step_outcome done;
    done.request = request;
    try {
        done.reply = judge(sent, ec, response);
        done.took = std::chrono::steady_clock::now() - sent.started;
    } catch (...) {
        secure_clear(response.body);
        done.reply.reset();
        done.failure = failure_info(errc::policy_error, sent.by_login
                                                            ? "login: a policy threw while its answer was read"
                                                            : "refresh: a policy threw while its answer was read");
    }
    return done;
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
void manager_core<Transport, Clock, Storage, Json, Protocol>::account(const flight_step& step) noexcept {
    if (step.counts_failure) failures_.fetch_add(1, std::memory_order_relaxed);
    for (std::size_t i = 0; i < step.note_count; ++i) emit_note(step.notes[i]);
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
void manager_core<Transport, Clock, Storage, Json, Protocol>::finish_flight(
    const std::shared_ptr<flight>& pending, const flight_step& step) noexcept {
    if (step.counts_failure) failures_.fetch_add(1, std::memory_order_relaxed);
    end_flight(pending, step.failure);
    for (std::size_t i = 0; i < step.note_count; ++i) emit_note(step.notes[i]);
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
answer manager_core<Transport, Clock, Storage, Json, Protocol>::judge(
    const outgoing& sent, std::error_code ec, http_response& response) {
    answer reply;
    reply.by_login = sent.by_login;
    // The JWT's lifetime is counted from here, not from after storing it.
    reply.received_ns = now_ns();
    reply.received_wall = clock_.wall_now();
    const std::string where = std::string(sent.by_login ? "login" : "refresh") + " at " + endpoint_of(transport_);
    if (ec && ec != errc::unexpected_redirect) {
        const std::string said = transport_detail(transport_);
        reply.error = {ec, said.empty() ? where : where + " (" + said + ")"};
        reply.not_sent = request_not_sent(ec);
        secure_clear(response.body);
        return reply;
    }
    const int status = response.status;
    if (status >= 200 && status < 300) {
        std::error_code parse_error;
        token_answer tokens = protocol_.read_tokens(response.body, json_, parse_error);
        secure_clear(response.body);
        if (parse_error) {
            reply.error = {make_error_code(errc::protocol_error),
                           where + ": status " + std::to_string(status) + " with a body that is not JSON with " +
                               protocol_.answer_shape()};
            return reply;
        }
        // No new refresh token: the one sent stays valid (a login sent a
        // password, so it keeps none).
        if (tokens.refresh_token.empty() && !sent.by_login) tokens.refresh_token = sent.sent_secret;
        reply.tokens = token_pair{std::move(tokens.access_token), std::move(tokens.refresh_token)};
        // A policy that throws here must not lose the pair: the session
        // gets it either way, with no lifetime if it cannot be read.
        try {
            std::error_code lifetime_error;
            auto lifetime =
                tokens.expires_in
                    ? stated_lifetime(*tokens.expires_in, lifetime_error)
                    : jwt_lifetime(json_, reply.tokens->jwt.reveal(), reply.received_wall,
                                   std::chrono::nanoseconds(session_lifetimes().jwt), lifetime_error);
            if (!lifetime_error && is_header_safe_token(reply.tokens->jwt.reveal()))
                reply.jwt_lifetime = std::min(lifetime, std::chrono::nanoseconds(max_lifetime));
            else
                reply.error = {make_error_code(errc::protocol_error),
                               where + (lifetime_error ? ": the JWT is already expired on arrival (check the clocks)"
                                                       : ": the JWT contains characters not allowed in a header")};
        } catch (...) {
            reply.error = {make_error_code(errc::policy_error), where + ": reading the JWT's claims threw"};
        }
        return reply;
    }
    errc code = errc::policy_error;
    try {
        code = protocol_.classify(sent.by_login ? token_call::login : token_call::refresh, status, response.body,
                                  json_);
    } catch (...) {
    }
    std::string detail = where + ": status " + std::to_string(status);
    std::string said;
    try {
        said = sanitize_server_message(protocol_.error_message(response.body, json_),
                                       {sent.sent_secret.reveal(), credentials_.password.reveal()});
    } catch (...) {
    }
    if (!said.empty()) detail += ": " + said;
    if (auto value = find_header(response.headers, "Retry-After"))
        reply.retry_after = parse_retry_after(*value, clock_.wall_now());
    secure_clear(response.body);
    reply.error = {make_error_code(code), std::move(detail)};
    return reply;
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
void manager_core<Transport, Clock, Storage, Json, Protocol>::end_flight(
    const std::shared_ptr<flight>& pending, const error_info& failure) noexcept {
    error_info why;
    copy_failure(why, failure);
    std::shared_ptr<const snapshot> result;
    {
        std::unique_lock<std::mutex> lock(mutex_);
        if (in_flight_ != pending) {  // already answered (shut down): a no-op but for a race with it
            lock.unlock();
            pending->complete(nullptr, std::move(why));
            return;
        }
        machine_.ended();
        result = session_.end_flight(now_ns());
        if (result && !session_.last_error()) last_load_error_ = {};  // "empty after a success"
        in_flight_.reset();
        publication_.fetch_add(1, std::memory_order_release);
        if (!result && !why) copy_failure(why, session_.last_error());
        // A JWT that expired while the flight went on (a store that
        // stalled, an io_context stopped) is handed over all the same:
        // every waiter checks the hard threshold and asks again.
        if (!result && !why && !session_.last_error()) result = session_.current();
        if (!result && !why) why = failure_info(errc::protocol_error, "the login or refresh produced no JWT");
    }
    pending->complete(result, result ? error_info{} : std::move(why));
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
void manager_core<Transport, Clock, Storage, Json, Protocol>::copy_failure(error_info& to, const error_info& from) noexcept {
    to.code = from.code;
    try {
        to.detail = from.detail;
    } catch (...) {
    }
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
void manager_core<Transport, Clock, Storage, Json, Protocol>::shut_down() noexcept {
    std::shared_ptr<flight> pending;
    {
        std::lock_guard<std::mutex> gate(policy_gate_);  // waits for a policy call in progress
        closed_.store(true, std::memory_order_release);
        lease_.reset();  // an asynchronous request may still be out: its token is already marked spent
    }
    {
        std::lock_guard<std::mutex> lock(mutex_);
        pending = in_flight_;
    }
    if (pending) {
        pending->abandon();  // an executor task not yet started now never runs
        pending->complete(nullptr, {make_error_code(errc::shut_down), "the token manager was destroyed"});
    }
    if constexpr (executor_ops<executor_type_or_void>::known && detect<Transport, close_result>::value) {
        if (asynchronous_) {
            try {
                auto self = this->shared_from_this();
                executor_ops<executor_type_or_void>::post(transport_.get_executor(),
                                                          [self] { self->transport_.close(); });
            } catch (...) {  // nothing to post with: the request ends by its timeout
            }
        }
    }
    storage_worker_.stop();  // a store call it was running has returned (the gate above)
}

}  // namespace detail
}  // namespace tokmgr
