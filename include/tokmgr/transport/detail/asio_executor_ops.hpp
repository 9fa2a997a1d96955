// tokmgr/transport/detail/asio_executor_ops.hpp — what token_manager needs
// from an Asio executor: post a flight to it, and tell whether the calling
// thread is running it (a synchronous wait there could never end).
#pragma once

#include <chrono>
#include <memory>
#include <system_error>
#include <utility>

#include <asio/any_io_executor.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>

#include "../../detail/executor_ops.hpp"

namespace tokmgr::detail {

template <>
struct executor_ops<asio::any_io_executor> {
    static constexpr bool known = true;

    template <class Function>
    static void post(const asio::any_io_executor& executor, Function&& function) {
        asio::post(executor, std::forward<Function>(function));
    }

    /// Runs `function` on the executor after `delay` (a retry that must not
    /// block the executor's thread while it waits).
    template <class Function>
    static void post_after(const asio::any_io_executor& executor, std::chrono::nanoseconds delay,
                           Function&& function) {
        auto timer = std::make_shared<asio::steady_timer>(executor, delay);
        timer->async_wait([timer, f = std::forward<Function>(function)](std::error_code) mutable { f(); });
    }

    /// Knows io_context executors (with or without outstanding work) and
    /// strands on them; for any other executor it answers false, and a
    /// synchronous caller there is bounded by manager_options::max_wait.
    static bool running_in_this_thread(const asio::any_io_executor& executor) noexcept {
        using plain = asio::io_context::executor_type;
        using tracked = decltype(asio::prefer(std::declval<plain>(), asio::execution::outstanding_work.tracked));
        if (executor.target<plain>() != nullptr) return executor.target<plain>()->running_in_this_thread();
        if (executor.target<tracked>() != nullptr) return executor.target<tracked>()->running_in_this_thread();
        if (auto* strand = executor.target<asio::strand<plain>>()) return strand->running_in_this_thread();
        if (auto* strand = executor.target<asio::strand<asio::any_io_executor>>())
            return strand->running_in_this_thread();
        return false;
    }
};

}  // namespace tokmgr::detail
