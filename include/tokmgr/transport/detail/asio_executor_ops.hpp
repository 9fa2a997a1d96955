// tokmgr/transport/detail/asio_executor_ops.hpp — what token_manager needs
// from an Asio executor: post a flight to it, and tell whether the calling
// thread is running it (a synchronous wait there could never end).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <system_error>
#include <typeinfo>
#include <utility>

#include <asio/any_io_executor.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/prefer.hpp>
#include <asio/execution/outstanding_work.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <asio/thread_pool.hpp>

#include "../../detail/executor_ops.hpp"

namespace tokmgr::detail {

template <>
struct executor_ops<asio::any_io_executor> {
    static constexpr bool known = true;

    template <class Function>
    static void post(const asio::any_io_executor& executor, Function&& function) {
        asio::post(executor, std::forward<Function>(function));
    }

    /// The executor, counting as outstanding work while the copy lives: an
    /// io_context's run() does not return while a store call made for it is
    /// still out on another thread.
    static asio::any_io_executor tracked(const asio::any_io_executor& executor) {
        return asio::prefer(executor, asio::execution::outstanding_work.tracked);
    }

    /// Runs `function` on the executor after `delay` (a retry that must not
    /// block the executor's thread while it waits).
    template <class Function>
    static void post_after(const asio::any_io_executor& executor, std::chrono::nanoseconds delay,
                           Function&& function) {
        auto timer = std::make_shared<asio::steady_timer>(executor, delay);
        timer->async_wait([timer, f = std::forward<Function>(function)](std::error_code) mutable { f(); });
    }

    /// Knows the executors of an io_context and of a thread_pool (with any
    /// blocking, relationship and outstanding-work property) and strands on
    /// them or on an any_io_executor; for any other executor
    /// (system_executor, a user's own) it answers false, and a synchronous
    /// caller there is bounded by manager_options::max_wait.
    static bool running_in_this_thread(const asio::any_io_executor& executor) noexcept {
        return running_in_this_thread_any(executor,
                                          std::make_integer_sequence<std::uintptr_t, io_context_variants>{},
                                          std::make_integer_sequence<unsigned int, thread_pool_variants>{});
    }

private:
    // Every combination of the property bits in each executor's type.
    static constexpr std::uintptr_t io_context_variants = 8;
    static constexpr unsigned int thread_pool_variants = 16;
    template <std::uintptr_t Bits>
    using io_context_executor = asio::io_context::basic_executor_type<std::allocator<void>, Bits>;
    template <unsigned int Bits>
    using thread_pool_executor = asio::thread_pool::basic_executor_type<std::allocator<void>, Bits>;

    /// The target if it is a T, else null. any_io_executor::target<T>() does
    /// not check the type (Asio 1.22 casts whatever it holds), so the type is
    /// compared first. Without RTTI nothing is recognised.
    template <class T>
    static const T* target_if(const asio::any_io_executor& executor) noexcept {
#if defined(ASIO_NO_TYPEID)
        (void)executor;
        return nullptr;
#else
        if (!executor || executor.target_type() != typeid(T)) return nullptr;
        return executor.target<T>();
#endif
    }

    /// Whether the executor is an Inner or a strand on one; if so, `running`
    /// says whether this thread runs it: the strand's own thread, or a thread
    /// running what the strand runs on.
    template <class Inner>
    static bool recognise(const asio::any_io_executor& executor, bool& running) noexcept {
        if (const auto* plain = target_if<Inner>(executor)) {
            running = plain->running_in_this_thread();
            return true;
        }
        if (const auto* strand = target_if<asio::strand<Inner>>(executor)) {
            running = strand->running_in_this_thread() || strand->get_inner_executor().running_in_this_thread();
            return true;
        }
        return false;
    }

    template <std::uintptr_t... IoBits, unsigned int... PoolBits>
    static bool running_in_this_thread_any(const asio::any_io_executor& executor,
                                           std::integer_sequence<std::uintptr_t, IoBits...>,
                                           std::integer_sequence<unsigned int, PoolBits...>) noexcept {
        bool running = false;
        if ((recognise<io_context_executor<IoBits>>(executor, running) || ...)) return running;
        if ((recognise<thread_pool_executor<PoolBits>>(executor, running) || ...)) return running;
        // A strand over any executor (the transport wraps the one it is given).
        if (const auto* strand = target_if<asio::strand<asio::any_io_executor>>(executor))
            return strand->running_in_this_thread() || running_in_this_thread(strand->get_inner_executor());
        return false;
    }
};

}  // namespace tokmgr::detail
