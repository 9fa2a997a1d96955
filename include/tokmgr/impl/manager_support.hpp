// tokmgr/impl/manager_support.hpp — what the manager's core needs around it:
// what a transport offers (an endpoint, an executor, a last error), the
// flight-runner mark against self-deadlock, the request a flight sends.
// Included by token_manager.hpp, not meant to be included directly.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "../concepts.hpp"
#include "../error.hpp"
#include "../errc.hpp"
#include "../http.hpp"
#include "../secret.hpp"
#include "../detail/executor_ops.hpp"
#include "../detail/snapshot.hpp"

namespace tokmgr {
namespace detail {

template <class T, class = void>
struct has_endpoint : std::false_type {};
template <class T>
struct has_endpoint<T, std::void_t<decltype(std::declval<const T&>().endpoint())>> : std::true_type {};

/// Where a request went, for error text: the transport's own description if
/// it offers one.
template <class Transport>
std::string endpoint_of(const Transport& transport) {
    if constexpr (has_endpoint<Transport>::value) return std::string(transport.endpoint());
    else return "the server";
}

template <class T, class = void>
struct has_last_error : std::false_type {};
template <class T>
struct has_last_error<T, std::void_t<decltype(std::declval<const T&>().last_error().detail)>> : std::true_type {};

/// What the transport itself said about its last failure, if it keeps such a
/// description (asio_transport does: "certificate verify failed for host ...").
template <class Transport>
std::string transport_detail(const Transport& transport) {
    if constexpr (has_last_error<Transport>::value) return std::string(transport.last_error().detail);
    else return {};
}

/// Server-supplied text made safe to show: no control characters, at most 200
/// bytes, and no secret the manager knows of, even if the server echoed one.
inline std::string sanitize_server_message(std::string text, std::initializer_list<std::string_view> secrets) {
    for (std::string_view s : secrets) {
        if (s.empty()) continue;
        if (s.size() < 4) {
            // Redacting so short a secret would mangle ordinary words, and
            // leaving it could show it: drop the server's text altogether.
            if (text.find(s) != std::string::npos) return {};
            continue;
        }
        // Resume after the placeholder: a secret that occurs in the
        // placeholder itself would otherwise be found there again, forever.
        const std::string_view placeholder(redacted_text);
        for (auto at = text.find(s); at != std::string::npos; at = text.find(s, at + placeholder.size()))
            text.replace(at, s.size(), placeholder);
    }
    // The placeholder's end and the text after it can spell a secret again
    // ("]abc" + "abc..."): whatever still contains one is dropped whole.
    for (std::string_view s : secrets)
        if (!s.empty() && text.find(s) != std::string::npos) return {};
    for (char& c : text)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
    if (text.size() > 200) text.resize(200);
    return text;
}

/// Kept out of line and cold, so the throwing overloads' success path is the
/// error_code overload's.
[[noreturn]] inline void throw_last_failure(std::error_code ec, const char* call) {
    const thread_cache* cache = thread_cache::local();
    if (cache != nullptr && cache->last_failure.code == ec) throw error(cache->last_failure);
    throw error(error_info{ec, call});
}

inline std::uint64_t next_manager_id() noexcept {
    static std::atomic<std::uint64_t> last{0};
    return last.fetch_add(1, std::memory_order_relaxed) + 1;
}

// ---- asynchronous transports -------------------------------------------------

template <class T>
using transport_executor_t = decltype(std::declval<T&>().get_executor());
template <class T>
using runs_on_executor_result = decltype(std::declval<const T&>().runs_on_executor());

template <class T>
inline constexpr bool has_executor_v = detect<T, transport_executor_t>::value;

template <class T, bool = has_executor_v<T>>
struct transport_executor {
    using type = void;
};
template <class T>
struct transport_executor<T, true> {
    using type = std::decay_t<transport_executor_t<T>>;
};

template <class T>
using close_result = decltype(std::declval<T&>().close());

/// Keeps the transport's execution context running (an io_context's run()
/// from returning) while a store call made for it is out on another thread;
/// nothing for executors that cannot say so.
template <class E, class = void>
struct work_tracking {
    static int keep(const E&) noexcept { return 0; }
};
template <class E>
struct work_tracking<E, std::void_t<decltype(executor_ops<E>::tracked(std::declval<const E&>()))>> {
    static auto keep(const E& executor) { return executor_ops<E>::tracked(executor); }
};

template <class S, bool = is_coordinating_storage_v<S>>
struct storage_lease {
    using type = int;  // no lease: a placeholder that is never engaged
};
template <class S>
struct storage_lease<S, true> {
    using type = storage_lease_t<S>;
};

/// The manager runs its flights asynchronously, on the transport's executor,
/// when the transport says it works that way (asio_transport constructed with
/// an executor), or when it can only send asynchronously.
template <class Transport>
bool runs_asynchronously(const Transport& transport) noexcept {
    if constexpr (!has_executor_v<Transport>) {
        return false;
    } else if constexpr (detect<Transport, runs_on_executor_result>::value) {
        return transport.runs_on_executor();
    } else {
        return !detect<Transport, send_result>::value;
    }
}

/// Marks the thread running a manager's flight, so that a call from a hook
/// that would wait for that very flight fails instead of deadlocking. Marks
/// nest (a hook of A runs B's flight, whose hook calls A): every flight the
/// thread is inside counts, not only the innermost.
class flight_runner_mark {
public:
    explicit flight_runner_mark(std::uint64_t id) noexcept : id_(id), outer_(top()) { top() = this; }
    ~flight_runner_mark() { top() = outer_; }
    flight_runner_mark(const flight_runner_mark&) = delete;
    flight_runner_mark& operator=(const flight_runner_mark&) = delete;

    /// Whether this thread is inside a flight of manager `id`.
    static bool inside(std::uint64_t id) noexcept {
        for (const flight_runner_mark* mark = top(); mark != nullptr; mark = mark->outer_)
            if (mark->id_ == id) return true;
        return false;
    }

private:
    static const flight_runner_mark*& top() noexcept {
        static thread_local const flight_runner_mark* innermost = nullptr;
        return innermost;
    }
    std::uint64_t id_;
    const flight_runner_mark* outer_;
};

/// One request the flight sends, and how to read its answer.
struct outgoing {
    outgoing() = default;
    outgoing(outgoing&&) = default;
    outgoing& operator=(outgoing&&) = default;
    // A protocol's header may carry a secret (`Authorization: Basic`).
    ~outgoing() {
        for (auto& header : request.headers) secure_clear(header.value);
    }

    http_request request;
    secret body;  // the request's body views this
    bool by_login = false;
    secret sent_secret;  // redacted from whatever the server says back
    std::chrono::steady_clock::time_point started{};
};

/// An asynchronous request and whether its answer came: only the first
/// completion is an answer (read and written under the policy gate).
struct sent_request {
    outgoing sent;
    std::uint64_t request = 0;  // the machine's number for it
    bool answered = false;
};

}  // namespace detail
}  // namespace tokmgr
