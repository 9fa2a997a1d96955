// tokmgr/impl/authorizing_transport_async.hpp — authorizing_transport::async_send;
// included by <tokmgr/async.hpp>, not meant to be included directly.
#pragma once

#include <memory>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <asio/compose.hpp>
#include <asio/post.hpp>

#include "../authorizing_transport.hpp"
#include "../token_handle.hpp"
#include "../token_manager.hpp"

namespace tokmgr {
namespace detail {

/// A token_manager whose own transport may be asynchronous: async_send awaits
/// async_get_token instead of blocking on authorization().
template <class M, class = void>
struct may_await_token : std::false_type {};
template <class M>
struct may_await_token<M, std::enable_if_t<has_executor_v<typename M::transport_type>>> : std::true_type {};

/// What async_send replays: the caller's request, copied into strings of its
/// own (whether http_request's fields are views or strings), wiped after.
struct owned_request {
    std::string method;
    std::string target;
    std::string content_type;
    std::string body;
    std::vector<http_header> headers;

    explicit owned_request(const http_request& r)
        : method(r.method), target(r.target), content_type(r.content_type), body(r.body), headers(r.headers) {}
    owned_request(const owned_request&) = delete;
    owned_request& operator=(const owned_request&) = delete;
    ~owned_request() {
        secure_clear(body);
        for (auto& h : headers) secure_clear(h.value);
    }

    http_request view() const {
        http_request r;
        r.method = method;
        r.target = target;
        r.content_type = content_type;
        r.body = body;
        r.headers = headers;
        return r;
    }
};

template <class Transport, class Manager>
class authorizing_send_op {
public:
    using wrapper = authorizing_transport<Transport, Manager>;

    authorizing_send_op(wrapper& transport, const http_request& request, bool replayable)
        : transport_(&transport), state_(std::make_unique<state>(request, replayable)) {}

    /// Started, or resumed after the post that keeps a synchronous manager's
    /// answer out of the initiating call.
    template <class Self>
    void operator()(Self& self) {
        if (!awaits() && !state_->posted) {
            state_->posted = true;
            asio::post(transport_->next_layer().get_executor(), std::move(self));
            return;
        }
        request_token(self);
    }

    template <class Self>
    void operator()(Self& self, std::error_code ec, token_handle handle) {
        with_token(self, ec, handle.authorization(), false);
    }

    template <class Self>
    void operator()(Self& self, std::error_code ec, http_response response) {
        if (ec) {
            transport_->record(transport_->transport_failure(ec, state_->request.view()));
            self.complete(ec, http_response{});
            return;
        }
        if (response.status == 401 && state_->attempts == 1) {
            ++transport_->mutable_counters().refused;
            transport_->manager().invalidate(state_->sent.view());
            if (state_->replayable) {
                state_->refused = std::move(response);
                request_token(self);
                return;
            }
        }
        transport_->record({});
        self.complete(std::error_code(), std::move(response));
    }

private:
    struct state {
        state(const http_request& request, bool can_replay) : request(request), replayable(can_replay) {}
        owned_request request;
        bool replayable;
        bool posted = false;
        int attempts = 0;
        secret sent;
        http_response refused;  // the first 401, returned when there is no other JWT to try
    };

    bool awaits() const {
        if constexpr (may_await_token<Manager>::value) return transport_->manager().core()->asynchronous();
        else return false;
    }

    template <class Self>
    void request_token(Self& self) {
        if constexpr (may_await_token<Manager>::value) {
            if (awaits()) {
                transport_->manager().async_get_token(std::move(self));
                return;
            }
        }
        std::error_code ec;
        const secret_view header = transport_->manager().authorization(ec);
        with_token(self, ec, header, true);
    }

    template <class Self>
    void with_token(Self& self, std::error_code ec, secret_view header, bool on_this_thread) {
        if (ec || header.empty()) {
            if (!ec) ec = make_error_code(errc::protocol_error);
            transport_->record(on_this_thread ? token_failure(ec) : error_info{ec, "getting a JWT for the request"});
            self.complete(ec, http_response{});
            return;
        }
        if (state_->attempts == 1) {
            // The same JWT again would be refused again (see the header).
            if (header == state_->sent.view()) {
                transport_->record({});
                self.complete(std::error_code(), std::move(state_->refused));
                return;
            }
            ++transport_->mutable_counters().replayed;
        }
        ++state_->attempts;
        state_->sent.assign(header.reveal());
        http_request sent = state_->request.view();
        const authorization_wiper wipe{sent};
        authorize_request(sent, header.reveal());
        // async_send copies what it needs before it returns; `self` (and
        // with it this object) is gone once it is passed on.
        transport_->next_layer().async_send(sent, std::move(self));
    }

    wrapper* transport_;
    std::unique_ptr<state> state_;
};

}  // namespace detail

template <class Transport, class Manager>
template <class CompletionToken>
auto authorizing_transport<Transport, Manager>::async_send(const http_request& request, CompletionToken&& token) {
    ++counters_.requests;
    return asio::async_compose<CompletionToken, void(std::error_code, http_response)>(
        detail::authorizing_send_op<Transport, Manager>(*this, request, true), token, transport_.get_executor());
}

template <class Transport, class Manager>
template <class CompletionToken>
auto authorizing_transport<Transport, Manager>::async_send(single_use_request once, CompletionToken&& token) {
    ++counters_.requests;
    return asio::async_compose<CompletionToken, void(std::error_code, http_response)>(
        detail::authorizing_send_op<Transport, Manager>(*this, once.request, false), token,
        transport_.get_executor());
}

}  // namespace tokmgr
