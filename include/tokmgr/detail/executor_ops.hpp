// tokmgr/detail/executor_ops.hpp — what the manager needs from an
// asynchronous transport's executor, without including Asio in the core:
// a transport's header specialises this for its executor type.
#pragma once

namespace tokmgr::detail {

/// The primary template serves executors nobody described: the manager then
/// cannot tell whether the calling thread runs the executor, and never posts.
template <class Executor>
struct executor_ops {
    static constexpr bool known = false;
    template <class Unknown>
    static bool running_in_this_thread(const Unknown&) noexcept {
        return false;
    }
};

}  // namespace tokmgr::detail
