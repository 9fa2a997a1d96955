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
//
// Resumption (one post per executor), the hard threshold checked again when a
// completion runs, and allocation failure: docs/async.md.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <type_traits>
#include <utility>

#include <asio/any_io_executor.hpp>
#include <asio/associated_allocator.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/error.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/system_executor.hpp>

#include "api_key.hpp"
#include "token_handle.hpp"
#include "token_manager.hpp"

namespace tokmgr {
namespace detail {

/// Room for what Asio allocates to post a group's resumption, inside the
/// waiter that leads the group: the operation, and for a strand the
/// strand's own invoker.
struct post_slot {
    static constexpr std::size_t cells = 2;
    static constexpr std::size_t cell_size = 128;
    alignas(std::max_align_t) unsigned char bytes[cells][cell_size];
    bool used[cells] = {};
};

/// Hands out a free cell of the slot when it fits, else allocates with the
/// handler's associated allocator.
template <class T, class Fallback>
class post_slot_allocator {
public:
    using value_type = T;
    template <class U>
    struct rebind {
        using other = post_slot_allocator<U, Fallback>;
    };

    post_slot_allocator(post_slot* slot, const Fallback& fallback) noexcept : slot_(slot), fallback_(fallback) {}
    template <class U>
    post_slot_allocator(const post_slot_allocator<U, Fallback>& other) noexcept
        : slot_(other.slot_), fallback_(other.fallback_) {}

    T* allocate(std::size_t n) {
        if (n <= post_slot::cell_size / sizeof(T) && alignof(T) <= alignof(std::max_align_t)) {
            for (std::size_t i = 0; i < post_slot::cells; ++i) {
                if (slot_->used[i]) continue;
                slot_->used[i] = true;
                return reinterpret_cast<T*>(slot_->bytes[i]);
            }
        }
        rebound other(fallback_);
        return std::allocator_traits<rebound>::allocate(other, n);
    }
    void deallocate(T* p, std::size_t n) noexcept {
        for (std::size_t i = 0; i < post_slot::cells; ++i) {
            if (reinterpret_cast<unsigned char*>(p) != slot_->bytes[i]) continue;
            slot_->used[i] = false;
            return;
        }
        rebound other(fallback_);
        std::allocator_traits<rebound>::deallocate(other, p, n);
    }

    friend bool operator==(const post_slot_allocator& a, const post_slot_allocator& b) noexcept {
        return a.slot_ == b.slot_;
    }
    friend bool operator!=(const post_slot_allocator& a, const post_slot_allocator& b) noexcept { return !(a == b); }

private:
    template <class, class>
    friend class post_slot_allocator;
    using rebound = typename std::allocator_traits<Fallback>::template rebind_alloc<T>;
    post_slot* slot_;
    Fallback fallback_;
};

template <class Executor>
inline const char executor_kind_of = 0;  // its address tells executor types apart

/// The waiters whose handlers run on executors of type `Executor`: they can
/// be compared with each other whatever their handlers are.
template <class Executor>
class async_waiter_on : public async_waiter {
public:
    explicit async_waiter_on(Executor executor) noexcept
        : async_waiter(&executor_kind_of<Executor>), executor_(std::move(executor)) {}

    bool shares_executor_with(const async_waiter& other) const noexcept final {
        return other.executor_kind() == executor_kind() &&
               static_cast<const async_waiter_on&>(other).executor_ == executor_;
    }

protected:
    Executor executor_;
};

/// One suspended async_get_token: its handler, a work guard on the handler's
/// executor, and the flight it waits for (to leave it when cancelled). `Core`
/// is the manager's core, asked again when the JWT expired before the
/// completion ran (void: nothing expires, as for an API key).
template <class Handler, class IoExecutor, class Core>
class async_get_token_waiter final
    : public async_waiter_on<asio::associated_executor_t<Handler, IoExecutor>>,
      public std::enable_shared_from_this<async_get_token_waiter<Handler, IoExecutor, Core>> {
    using base = async_waiter_on<asio::associated_executor_t<Handler, IoExecutor>>;

public:
    using executor_type = asio::associated_executor_t<Handler, IoExecutor>;
    using handler_allocator = asio::associated_allocator_t<Handler>;

    async_get_token_waiter(Handler handler, const IoExecutor& io_executor, std::weak_ptr<Core> core)
        : base(asio::get_associated_executor(handler, io_executor)),
          allocator_(asio::get_associated_allocator(handler)),
          handler_(std::move(handler)),
          work_(asio::make_work_guard(this->executor_)),
          core_(std::move(core)) {}

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

    void complete_group(std::error_code ec, std::shared_ptr<const snapshot> result) noexcept override {
        group_error_ = ec;
        group_result_ = std::move(result);
        // Asio moves the operation into wrappers before the executor can
        // refuse it, so a refusal destroys it uncalled: while posting, that
        // leaves the group to be answered here instead.
        // Held while posting: once posted, the group may run and release
        // this waiter on another thread before post returns.
        const std::shared_ptr<async_waiter> hold = this->keep_;
        posting_.store(true, std::memory_order_relaxed);
        try {
            if constexpr (std::is_same_v<executor_type, asio::any_io_executor>) {
                // A coroutine's executor, most often an io_context's: posted
                // there directly, the operation goes into the slot.
                if (auto* native = this->executor_.template target<asio::io_context::executor_type>()) {
                    asio::post(*native, resume_group(this));
                    posting_.store(false, std::memory_order_relaxed);
                    return;
                }
            }
            asio::post(this->executor_, resume_group(this));
            posting_.store(false, std::memory_order_relaxed);
        } catch (...) {
            posting_.store(false, std::memory_order_relaxed);
            answer_group_here();
        }
    }

    void deliver(std::error_code ec, const std::shared_ptr<const snapshot>& result) override {
        std::shared_ptr<async_waiter> self = std::move(this->keep_);
        if constexpr (!std::is_void_v<Core>) {
            if (!ec && result) {
                std::shared_ptr<Core> core = core_.lock();
                if (core && core->async_now_ns() >= result->hard_ns) {
                    ask_again(*core, std::move(self));
                    return;
                }
            }
        }
        invoke(ec, result);
    }

private:
    /// Carries a group's resumption to its executor. The leader owns itself
    /// (keep_) until resumed; never run (its executor was destroyed), the
    /// group goes uncalled, as every handler on that executor does.
    struct resume_group {
        async_get_token_waiter* leader;

        using allocator_type = post_slot_allocator<void, handler_allocator>;
        allocator_type get_allocator() const noexcept { return {&leader->slot_, leader->allocator_}; }

        explicit resume_group(async_get_token_waiter* first) noexcept : leader(first) {}
        resume_group(resume_group&& other) noexcept : leader(std::exchange(other.leader, nullptr)) {}
        resume_group& operator=(resume_group&&) = delete;
        ~resume_group() {
            if (leader != nullptr && leader->posting_.load(std::memory_order_relaxed)) return;  // refused: see complete_group
            for (async_waiter* w = leader; w != nullptr;) {
                async_waiter* const next = async_waiter::take_group_next(*w);
                async_waiter::release(*w);
                w = next;
            }
        }

        void operator()() { std::exchange(leader, nullptr)->resume_chain(); }
    };

    /// On the executor: every waiter of the group, in the order they came.
    void resume_chain() {
        const std::error_code ec = group_error_;
        const std::shared_ptr<const snapshot> result = std::move(group_result_);
        for (async_waiter* w = this; w != nullptr;) {
            async_waiter* const next = async_waiter::take_group_next(*w);
            try {
                w->deliver(ec, result);  // may release w
            } catch (...) {
                // A handler threw out of run(): the rest still get their
                // answer, by a post of their own.
                if (next != nullptr) next->complete_group(ec, result);
                throw;
            }
            w = next;
        }
    }

    /// Not even one post could be made (no memory, or the executor
    /// refused): every waiter of the group is answered here, with an error,
    /// rather than never.
    void answer_group_here() noexcept {
        for (async_waiter* w = this; w != nullptr;) {
            async_waiter* const next = async_waiter::take_group_next(*w);
            try {
                w->deliver(make_error_code(errc::policy_error), nullptr);
            } catch (...) {  // nowhere to carry it: the flight's completion cannot throw
            }
            w = next;
        }
    }

    /// The JWT expired between the answer and this completion (an
    /// io_context stopped in between): like a synchronous waiter, ask again,
    /// joining the next flight, for at most max_wait from the first time.
    template <class C>
    void ask_again(C& core, std::shared_ptr<async_waiter> self) {
        const auto now = std::chrono::steady_clock::now();
        if (!retry_deadline_) retry_deadline_ = now + core.max_wait();
        if (now >= *retry_deadline_) {
            invoke(make_error_code(errc::wait_timeout), nullptr);
            return;
        }
        std::shared_ptr<const snapshot> served;
        error_info failed;
        std::shared_ptr<flight> pending;
        try {
            pending = core.acquire_async(self, served, failed);
        } catch (...) {
            failed = {make_error_code(errc::policy_error), "async_get_token: out of memory asking again"};
        }
        if (pending) {
            waiting_for(std::move(pending));  // the flight owns the waiter now
            return;
        }
        invoke(served ? std::error_code() : failed.code, served);
    }

    void invoke(std::error_code ec, std::shared_ptr<const snapshot> result) {
        auto slot = asio::get_associated_cancellation_slot(handler_);
        if (slot.is_connected()) slot.clear();
        auto work = std::move(work_);
        Handler handler = std::move(handler_);
        std::move(handler)(ec, token_handle(std::move(result)));
    }

    void cancel() {
        std::shared_ptr<flight> pending;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            pending = flight_;
        }
        if (!pending) return;
        if (std::shared_ptr<async_waiter> self = pending->remove_waiter(this))
            async_waiter::complete_alone(std::move(self), asio::error::operation_aborted, nullptr);
    }

    handler_allocator allocator_;
    Handler handler_;
    asio::executor_work_guard<executor_type> work_;
    std::weak_ptr<Core> core_;
    std::optional<std::chrono::steady_clock::time_point> retry_deadline_;
    post_slot slot_;
    std::atomic<bool> posting_{false};  // inside complete_group's post
    std::error_code group_error_;  // what the group this waiter leads is resumed with
    std::shared_ptr<const snapshot> group_result_;
    std::mutex mutex_;
    std::shared_ptr<flight> flight_;
};

/// The waiter for `handler`, allocated with the handler's associated
/// allocator (the operation's one allocation).
template <class Waiter, class Handler, class IoExecutor, class Core>
std::shared_ptr<Waiter> make_waiter(Handler&& handler, const IoExecutor& io_executor, std::weak_ptr<Core> core) {
    using allocator = typename std::allocator_traits<asio::associated_allocator_t<std::decay_t<Handler>>>::template
        rebind_alloc<Waiter>;
    allocator alloc(asio::get_associated_allocator(handler));
    return std::allocate_shared<Waiter>(alloc, std::forward<Handler>(handler), io_executor, std::move(core));
}

template <class Core>
struct initiate_async_get_token {
    std::shared_ptr<Core> core;

    template <class Handler>
    void operator()(Handler&& handler) const {
        using handler_type = std::decay_t<Handler>;
        if (!core->asynchronous()) {
            // Waiting would mean blocking this thread on a synchronous send.
            // The transport's private io_context runs only inside its send,
            // so a handler without an executor of its own completes on the
            // system executor instead.
            using failed_type = async_get_token_waiter<handler_type, asio::system_executor, void>;
            async_waiter::complete_alone(
                make_waiter<failed_type>(std::forward<Handler>(handler), asio::system_executor(), std::weak_ptr<void>()),
                make_error_code(errc::invalid_configuration), nullptr);
            return;
        }
        auto io_executor = core->transport_executor();
        using waiter_type = async_get_token_waiter<handler_type, decltype(io_executor), Core>;
        auto waiter = make_waiter<waiter_type>(std::forward<Handler>(handler), io_executor, std::weak_ptr<Core>(core));
        waiter->watch_cancellation();
        std::shared_ptr<const snapshot> served;
        error_info failed;
        std::shared_ptr<flight> pending = core->acquire_async(waiter, served, failed);
        if (pending) {
            waiter->waiting_for(std::move(pending));
            return;
        }
        async_waiter::complete_alone(std::move(waiter), served ? std::error_code() : failed.code, std::move(served));
    }
};

/// api_key_source::async_get_token: nothing to wait for, but the manager's
/// conventions hold, so a service can switch types: the same signature, the
/// handler posted to its associated executor under a work guard.
struct initiate_async_api_key {
    std::shared_ptr<const snapshot> served;

    template <class Handler>
    void operator()(Handler&& handler) const {
        using waiter_type = async_get_token_waiter<std::decay_t<Handler>, asio::system_executor, void>;
        async_waiter::complete_alone(
            make_waiter<waiter_type>(std::forward<Handler>(handler), asio::system_executor(), std::weak_ptr<void>()),
            std::error_code(), served);
    }
};

}  // namespace detail

template <class CompletionToken>
auto api_key_source::async_get_token(CompletionToken&& token) const {
    return asio::async_initiate<CompletionToken, void(std::error_code, token_handle)>(
        detail::initiate_async_api_key{served_}, token);
}

template <class Transport, class Clock, class Storage, class Json, class Protocol>
template <class CompletionToken>
auto token_manager<Transport, Clock, Storage, Json, Protocol>::async_get_token(CompletionToken&& token) {
    static_assert(detail::has_executor_v<Transport>,
                  "tokmgr: async_get_token needs a Transport with `get_executor()` and `async_send(request, token)` "
                  "(asio_transport constructed with an executor)");
    return asio::async_initiate<CompletionToken, void(std::error_code, token_handle)>(
        detail::initiate_async_get_token<detail::manager_core<Transport, Clock, Storage, Json, Protocol>>{core()}, token);
}

}  // namespace tokmgr

#include "impl/authorizing_transport_async.hpp"
