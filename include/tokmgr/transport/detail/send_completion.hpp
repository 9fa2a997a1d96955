// tokmgr/transport/detail/send_completion.hpp — async_send's completion
// handler behind one virtual call.
//
// The request's state machine (impl/asio_async.hpp) and every Asio operation
// it starts are then instantiated once, for one handler type, whatever the
// completion tokens of the program's calls, and compiled once under
// TOKMGR_SEPARATE_COMPILATION. A call of async_send instantiates only the
// small wrapper here.
#pragma once

#include <memory>
#include <system_error>
#include <type_traits>
#include <utility>

#include <asio/any_io_executor.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/dispatch.hpp>
#include <asio/executor_work_guard.hpp>

#include "../../http.hpp"

// Header-only, the transport's non-template functions are inline and come
// with their declarations. Under TOKMGR_SEPARATE_COMPILATION (see
// tokmgr/tokmgr.hpp) they are compiled once, in the file that includes
// <tokmgr/src.hpp>.
#if defined(TOKMGR_SEPARATE_COMPILATION)
#define TOKMGR_TRANSPORT_DECL
#else
#define TOKMGR_TRANSPORT_DECL inline
#endif

namespace tokmgr::detail {

struct asio_transport_state;
class send_op;

/// Where a finished request goes. Called once, on the transport's executor.
class send_completion {
public:
    virtual ~send_completion() = default;
    virtual void complete(std::error_code ec, http_response response) = 0;

    /// The caller's cancellation slot, which the operation's Asio steps
    /// listen on as they would on the handler's own; unconnected if none.
    const asio::cancellation_slot& cancellation_slot() const noexcept { return slot_; }

protected:
    asio::cancellation_slot slot_;
};

/// The caller's handler: runs through its associated executor (the
/// transport's when it has none), which a work guard keeps busy until then.
template <class Handler>
class handler_completion final : public send_completion {
public:
    handler_completion(Handler handler, const asio::any_io_executor& io_executor)
        : handler_(std::move(handler)),
          work_(asio::make_work_guard(asio::get_associated_executor(handler_, io_executor))) {
        if constexpr (std::is_same_v<asio::associated_cancellation_slot_t<Handler>, asio::cancellation_slot>)
            slot_ = asio::get_associated_cancellation_slot(handler_);
    }

    void complete(std::error_code ec, http_response response) override {
        auto work = std::move(work_);
        asio::dispatch(work.get_executor(),
                       [handler = std::move(handler_), ec, response = std::move(response)]() mutable {
                           std::move(handler)(ec, std::move(response));
                       });
    }

private:
    Handler handler_;
    asio::executor_work_guard<asio::associated_executor_t<Handler, asio::any_io_executor>> work_;
};

struct send_op_deleter {
    TOKMGR_TRANSPORT_DECL void operator()(send_op* op) const noexcept;
};
using send_op_ptr = std::unique_ptr<send_op, send_op_deleter>;

/// A request ready to start: serialised now, so that the caller's request
/// need not outlive the initiating call even when the completion token
/// starts the operation later (use_awaitable). `start_inline`: begin inside
/// start_send (only the blocking send, which waits anyway); otherwise the
/// first step is posted, so that the operation never completes inside the call.
TOKMGR_TRANSPORT_DECL send_op_ptr prepare_send(const std::shared_ptr<asio_transport_state>& state,
                                               const http_request& request, bool start_inline = false);

TOKMGR_TRANSPORT_DECL void start_send(send_op_ptr op, std::unique_ptr<send_completion> completion);

/// async_send's initiation: holds the prepared request until the token starts it.
struct initiate_send {
    mutable send_op_ptr op;
    asio::any_io_executor io_executor;

    template <class Handler>
    void operator()(Handler&& handler) const {
        start_send(std::move(op), std::make_unique<handler_completion<std::decay_t<Handler>>>(
                                      std::forward<Handler>(handler), io_executor));
    }
};

}  // namespace tokmgr::detail
