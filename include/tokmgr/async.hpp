// tokmgr/async.hpp — token_manager::async_get_token: the JWT for coroutines
// and callbacks, with Asio completion tokens (standalone Asio 1.22); and
// api_key_source::async_get_token, the same call in API-key mode; and
// authorizing_transport::async_send, which awaits either.
//
//   asio::io_context io;
//   tokmgr::token_manager<> manager(tokmgr::asio_transport(io.get_executor(), transport_options), credentials);
//   tokmgr::token_handle h = co_await manager.async_get_token(asio::use_awaitable);   // C++20
//   manager.async_get_token([](std::error_code ec, tokmgr::token_handle h) { /* ... */ });
//   std::future<tokmgr::token_handle> f = manager.async_get_token(asio::use_future);
//
// Completion signature: void(std::error_code, tokmgr::token_handle). The
// handler runs through its associated executor (the transport's when it has
// none), never inside the initiating call; a work guard keeps that executor
// busy until then. Cancellation through the associated cancellation slot
// (any type) completes that one waiter with asio::error::operation_aborted;
// the login or refresh goes on for everybody else.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <system_error>
#include <type_traits>
#include <utility>

#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/error.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <asio/system_executor.hpp>

#include "api_key.hpp"
#include "token_handle.hpp"
#include "token_manager.hpp"

namespace tokmgr {
namespace detail {

/// One suspended async_get_token: its handler, a work guard on the handler's
/// executor, and the flight it waits for (to leave it when cancelled).
template <class Handler, class IoExecutor>
class async_get_token_waiter final : public async_waiter,
                                     public std::enable_shared_from_this<async_get_token_waiter<Handler, IoExecutor>> {
public:
    using executor_type = asio::associated_executor_t<Handler, IoExecutor>;

    async_get_token_waiter(Handler handler, const IoExecutor& io_executor)
        : handler_(std::move(handler)),
          work_(asio::make_work_guard(asio::get_associated_executor(handler_, io_executor))) {}

    /// Installs the cancellation handler, if the completion token has a slot.
    void watch_cancellation() {
        auto slot = asio::get_associated_cancellation_slot(handler_);
        if (!slot.is_connected()) return;
        std::weak_ptr<async_get_token_waiter> weak = this->shared_from_this();
        slot.assign([weak](asio::cancellation_type) {
            if (auto self = weak.lock()) self->cancel();
        });
    }

    void waiting_for(std::shared_ptr<flight> pending) {
        std::lock_guard<std::mutex> lock(mutex_);
        flight_ = std::move(pending);
    }

    void complete(std::error_code ec, std::shared_ptr<const snapshot> result) noexcept override {
        if (done_.exchange(true)) return;
        auto self = this->shared_from_this();
        try {
            asio::post(work_.get_executor(), [self, ec, result = std::move(result)]() mutable {
                auto slot = asio::get_associated_cancellation_slot(self->handler_);
                if (slot.is_connected()) slot.clear();
                auto work = std::move(self->work_);
                Handler handler = std::move(self->handler_);
                std::move(handler)(ec, token_handle(std::move(result)));
                work.reset();
            });
        } catch (...) {
            // Posting allocates; without memory the handler cannot be run
            // anywhere it is allowed to run. Its work guard goes with it.
        }
    }

private:
    void cancel() {
        std::shared_ptr<flight> pending;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            pending = flight_;
        }
        if (pending && pending->remove_waiter(this))
            complete(asio::error::operation_aborted, nullptr);
    }

    Handler handler_;
    asio::executor_work_guard<executor_type> work_;
    std::atomic<bool> done_{false};
    std::mutex mutex_;
    std::shared_ptr<flight> flight_;
};

template <class Core>
struct initiate_async_get_token {
    std::shared_ptr<Core> core;

    template <class Handler>
    void operator()(Handler&& handler) const {
        if (!core->asynchronous()) {
            // Waiting would mean blocking this thread on a synchronous send.
            // The transport's private io_context runs only inside its send,
            // so a handler without an executor of its own completes on the
            // system executor instead.
            using failed_type = async_get_token_waiter<std::decay_t<Handler>, asio::system_executor>;
            std::make_shared<failed_type>(std::forward<Handler>(handler), asio::system_executor())
                ->complete(make_error_code(errc::invalid_configuration), nullptr);
            return;
        }
        auto io_executor = core->transport_executor();
        using waiter_type = async_get_token_waiter<std::decay_t<Handler>, decltype(io_executor)>;
        auto waiter = std::make_shared<waiter_type>(std::forward<Handler>(handler), io_executor);
        waiter->watch_cancellation();
        std::shared_ptr<const snapshot> served;
        error_info failed;
        std::shared_ptr<flight> pending = core->acquire_async(waiter, served, failed);
        if (pending) {
            waiter->waiting_for(std::move(pending));
            return;
        }
        waiter->complete(served ? std::error_code() : failed.code, std::move(served));
    }
};

/// api_key_source::async_get_token: nothing to wait for, but the manager's
/// conventions hold, so a service can switch types: the same signature, the
/// handler posted to its associated executor under a work guard.
struct initiate_async_api_key {
    std::shared_ptr<const snapshot> served;

    template <class Handler>
    void operator()(Handler&& handler) const {
        using waiter_type = async_get_token_waiter<std::decay_t<Handler>, asio::system_executor>;
        std::make_shared<waiter_type>(std::forward<Handler>(handler), asio::system_executor())
            ->complete(std::error_code(), served);
    }
};

}  // namespace detail

template <class CompletionToken>
auto api_key_source::async_get_token(CompletionToken&& token) const {
    return asio::async_initiate<CompletionToken, void(std::error_code, token_handle)>(
        detail::initiate_async_api_key{served_}, token);
}

template <class Transport, class Clock, class Storage, class Json>
template <class CompletionToken>
auto token_manager<Transport, Clock, Storage, Json>::async_get_token(CompletionToken&& token) {
    static_assert(detail::has_executor_v<Transport>,
                  "tokmgr: async_get_token needs a Transport with `get_executor()` and `async_send(request, token)` "
                  "(asio_transport constructed with an executor)");
    return asio::async_initiate<CompletionToken, void(std::error_code, token_handle)>(
        detail::initiate_async_get_token<detail::manager_core<Transport, Clock, Storage, Json>>{core()}, token);
}

}  // namespace tokmgr

#include "impl/authorizing_transport_async.hpp"
