// tokmgr/storage/detail/redis_connection.hpp — one connection to Redis on
// Asio: TCP, a Unix socket, or TLS through OpenSSL (asio::ssl); what
// redis_storage runs on.
//
// - TLS always verifies the server's certificate (against the system's CAs
//   or redis_options::tls_ca_file) and its host name (tls_server_name, else
//   host), and sends SNI for a name; the client context is the Asio
//   transport's (transport/detail/tls.hpp). A certificate that does not
//   verify fails the connection (storage_unreachable, a message that says so
//   and names the host): there is no plaintext fallback.
// - Blocking, with deadlines: each call runs the asynchronous operations on
//   the connection's private io_context for at most the phase's timeout
//   (connect_timeout for resolving and connecting, connect_timeout again for
//   the TLS handshake, command_timeout for each command's write and reply),
//   then closes the socket, which ends what is still pending.
// - Asynchronous (async_command), for a connection made on the caller's
//   executor: the same steps and timeouts, a steady_timer closing the
//   socket at each deadline, the same errors.
// - Commands go out through resp::encode_command, whose buffer is wiped once
//   sent (AUTH carries the password); replies come in through resp::reader.
// - Errors: storage_unreachable when nothing of the command went out (the
//   connection could not be opened, authenticated or selected, or the write
//   failed before its first byte); storage_failed once it may have run.
//   Messages name the server (redis_options::where()) and never hold a
//   password or a reply's text (a reply may carry a token).
//
// One object serves one thread at a time.
#pragma once

#include <sys/un.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/connect.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/address.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/ssl.hpp>
#include <asio/write.hpp>

#include "../../errc.hpp"
#include "../../error.hpp"
#include "../../secret.hpp"
#include "../../transport/detail/tls.hpp"
#include "../redis_options.hpp"
#include "redis_auth.hpp"
#include "resp.hpp"
#include "shared_store.hpp"

namespace tokmgr::detail::redis {

class connection {
public:
    /// A connection whose blocking calls run its own io_context.
    explicit connection(redis_options options)
        : options_(std::move(options)), executor_(io_.get_executor()), timer_(executor_) {}
    /// A connection whose I/O runs on `executor`, for async_command only
    /// (the blocking calls fail: they would block the caller's executor).
    connection(asio::any_io_executor executor, redis_options options)
        : options_(std::move(options)),
          executor_(asio::make_strand(std::move(executor))),  // its handlers never run at once, on any executor
          timer_(executor_),
          own_context_(false) {}
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    ~connection() { reset(); }

    const redis_options& options() const noexcept { return options_; }
    bool is_open() const noexcept { return open_; }
    const asio::any_io_executor& get_executor() const noexcept { return executor_; }

    /// Opens the connection: resolve and connect (or the Unix socket), the
    /// TLS handshake, AUTH and SELECT. storage_unreachable on failure.
    bool connect(error_info& failed) {
        reset();
        if (!blocking_allowed(failed)) return false;
        if (!open_transport(failed)) return reset(), false;
        const auto send = [this](const std::vector<std::string_view>& args, std::optional<std::string>& refusal,
                                 error_info& io) {
            resp::reply answer;
            if (!exchange(args, answer, io)) {
                io = unreachable(io.detail);  // a handshake command: nothing of the caller's went out
                return false;
            }
            if (answer.type == resp::reply_type::error) refusal.emplace(std::move(answer.text));
            resp::secure_clear(answer);
            return true;
        };
        if (!open_session(options_, send, failed)) return reset(), false;
        return true;
    }

    /// Sends one command and reads its reply into `out`; connects first when
    /// the connection is not open. An error reply is a reply (true): the
    /// caller decides what it means. On failure the connection is closed.
    bool command(const std::vector<std::string_view>& args, resp::reply& out, error_info& failed) {
        if (!blocking_allowed(failed)) return false;
        if (!open_ && !connect(failed)) return false;
        return exchange(args, out, failed);
    }

    /// For a subscribed connection: waits at most `wait` for the next
    /// message (a RESP3 push, a RESP2 array) and reads it into `out`. False
    /// with `failed` empty when none came in time: the wait is cancelled,
    /// not the socket closed, so the subscription stays. Reading what
    /// arrived is bounded by `wait` too (at least 10 ms, so bytes already
    /// here are read): a server that sends part of a message, or of a TLS
    /// record, and stalls fails the connection then, never holding the
    /// caller past its wait. On failure (`failed` set) the connection is
    /// closed.
    bool next_message(std::chrono::milliseconds wait, resp::reply& out, error_info& failed) {
        failed = {};
        if (!blocking_allowed(failed)) return false;
        if (!open_) return failed = storage_failure("no subscription to Redis at " + options_.where()), false;
        const auto lost = [&](error_info why) {
            reset();
            failed = std::move(why);
            return false;
        };
        const auto deadline = clock::now() + wait;
        for (;;) {
            error_info parse_failed;
            if (reader_->next(out, parse_failed)) return true;
            if (parse_failed) return lost(not_resp(parse_failed));
            // OpenSSL may hold decrypted bytes the socket no longer signals.
            if (!(tls_ && SSL_pending(tls_->native_handle()) > 0)) {
                bool timed_out = false;
                const auto ec = run_until(deadline, timed_out, [&](auto handler) {
                    with_socket([&](auto& socket) { socket.async_wait(asio::socket_base::wait_read, handler); });
                }, on_timeout::cancel);
                if (timed_out) return false;
                if (ec) return lost(absorb(0, ec, false));
            }
            std::size_t got = 0;
            bool timed_out = false;
            const auto now = clock::now();
            const auto read_by = std::min(now + options_.command_timeout,
                                          std::max(deadline, now + std::chrono::milliseconds(10)));
            const auto ec = run_until(read_by, timed_out, [&](auto handler) {
                with_stream([&](auto& stream) {
                    stream.async_read_some(asio::buffer(incoming_), [&got, handler](std::error_code e, std::size_t n) mutable {
                        got = n;
                        handler(e);
                    });
                });
            });
            if (error_info why = absorb(got, ec, timed_out)) return lost(std::move(why));
        }
    }

    /// The same without blocking: on the connection's executor, connecting
    /// first when needed, with the same timeouts (a steady_timer) and the
    /// same errors; `handler(error_info, resp::reply)` is called once, on
    /// the executor. The arguments are encoded before this returns, so
    /// their views need not outlive the call; the connection must outlive
    /// the operation, and runs one at a time (a second one started before
    /// the first completed fails at once). The handler must be copyable.
    template <class Handler>
    void async_command(const std::vector<std::string_view>& args, Handler handler) {
        auto op = std::make_shared<async_op>();
        op->handler = std::move(handler);
        resp::encode_command(args, op->encoded);
        // Whether one is running is asked on the executor: on a
        // multi-threaded io_context the caller's thread may not be the one
        // where the running command ends.
        asio::post(executor_, [this, op] {
            if (busy_) {
                return op->handler(storage_failure("a command to Redis at " + options_.where() +
                                                   " was started while another was running; run one at a time"),
                                   resp::reply{});
            }
            busy_ = true;
            const auto send = [this, op] {
                async_exchange(std::move(op->encoded), [this, op](error_info failed, resp::reply out) {
                    finish(op, std::move(failed), std::move(out));
                });
            };
            if (open_) return send();
            async_open([this, op, send](error_info failed) {
                if (failed) return finish(op, std::move(failed), resp::reply{});
                send();
            });
        });
    }

    /// Closes the socket; the next command connects again. An asynchronous
    /// operation in flight ends (with an error, at the executor's next turn,
    /// unless its reply had already arrived): its socket is closed, and what
    /// it uses stays until its handler has run.
    void close() noexcept {
        if (!busy_) return reset();
        close_sockets();
        std::error_code ignored;
        timer_.cancel(ignored);
        open_ = false;  // the next command connects again, whatever this one's end
    }

private:
    using clock = std::chrono::steady_clock;

    struct async_op {
        std::function<void(error_info, resp::reply)> handler;
        std::string encoded;
        ~async_op() { secure_clear(encoded); }
    };

    void finish(const std::shared_ptr<async_op>& op, error_info failed, resp::reply out) {
        busy_ = false;
        auto handler = std::move(op->handler);
        handler(std::move(failed), std::move(out));
    }

    /// Closes the socket and drops what the connection held: for the
    /// blocking path and an asynchronous operation's own failures.
    void reset() noexcept {
        close_sockets();
        std::error_code ignored;
        timer_.cancel(ignored);
        tls_.reset();
        tcp_.reset();
        unix_.reset();
        reader_.reset();
        open_ = false;
    }

    bool blocking_allowed(error_info& failed) const {
        if (own_context_) return true;
        failed = unreachable("this connection to Redis at " + options_.where() +
                             " runs on the caller's executor; use async_command, not a blocking call");
        return false;
    }

    // ---- the blocking path: the private io_context, run with deadlines --

    /// Runs what `start` begins on the private io_context until its handler
    /// ran or `deadline` passed; in that case the socket is closed, which
    /// ends the operation, and `timed_out` is set. `start` gets a handler to
    /// call with the operation's error_code.
    /// What a deadline does to the operation still pending: closing the
    /// socket ends any operation; cancelling keeps the connection, and is
    /// for a wait that consumed nothing (a readiness wait).
    enum class on_timeout { close, cancel };

    template <class Start>
    std::error_code run_until(clock::time_point deadline, bool& timed_out, Start&& start,
                              on_timeout ending = on_timeout::close) {
        std::error_code result;
        bool done = false;
        timed_out = false;
        io_.restart();
        start([&](std::error_code ec, auto&&...) {
            result = ec;
            done = true;
        });
        const auto now = clock::now();
        if (deadline > now) io_.run_for(deadline - now);
        if (!done) {
            timed_out = true;
            if (ending == on_timeout::cancel) cancel_sockets();
            else close_sockets();
            io_.restart();
            io_.run();  // the aborted operation's handler, so nothing refers to this frame afterwards
            result = make_error_code(std::errc::timed_out);
        }
        return result;
    }

    // ---- the asynchronous path: the same steps, a timer for the deadline --

    /// One step of an asynchronous operation under a deadline: `start(h)`
    /// begins it; `then(ec, timed_out)` runs once it completed, or once the
    /// deadline closed the socket and ended it.
    template <class Start>
    void async_step(clock::time_point deadline, Start&& start, std::function<void(std::error_code, bool)> then) {
        struct phase {
            bool done = false;
            bool timed_out = false;
        };
        auto p = std::make_shared<phase>();
        timer_.expires_at(deadline);
        timer_.async_wait([this, p](std::error_code ec) {
            if (ec || p->done) return;
            p->timed_out = true;
            close_sockets();
        });
        start([this, p, then = std::move(then)](std::error_code ec, auto&&...) {
            p->done = true;
            std::error_code ignored;
            timer_.cancel(ignored);
            then(p->timed_out ? make_error_code(std::errc::timed_out) : ec, p->timed_out);
        });
    }

    void async_open(std::function<void(error_info)> then) {
        reset();
        error_info failed;
        if (!check_options(failed)) return then(std::move(failed));
        reader_.emplace();
        const auto deadline = clock::now() + options_.connect_timeout;
        const auto connected = [this, then](std::error_code ec, bool timed_out) {
            if (ec) return reset(), then(cannot_connect(ec, timed_out));
            after_connect(then);
        };
        if (!options_.unix_socket.empty()) {
            unix_.emplace(executor_);
            return async_step(deadline, [this](auto h) {
                unix_->async_connect(asio::local::stream_protocol::endpoint(options_.unix_socket), std::move(h));
            }, connected);
        }
        auto resolver = std::make_shared<asio::ip::tcp::resolver>(executor_);
        resolving_ = resolver.get();
        auto endpoints = std::make_shared<asio::ip::tcp::resolver::results_type>();
        async_step(deadline, [this, resolver, endpoints](auto h) {
            resolver->async_resolve(options_.host, std::to_string(options_.port),
                                    [endpoints, h](std::error_code e, asio::ip::tcp::resolver::results_type r) mutable {
                                        *endpoints = std::move(r);
                                        h(e);
                                    });
        }, [this, resolver, endpoints, deadline, then, connected](std::error_code ec, bool timed_out) {
            resolving_ = nullptr;
            if (ec) return reset(), then(cannot_connect(ec, timed_out));
            error_info failed;
            if (options_.tls && !prepare_tls(failed)) return reset(), then(std::move(failed));
            auto& socket = tls_ ? tls_->next_layer() : tcp_.emplace(executor_);
            async_step(deadline, [&socket, endpoints](auto h) {
                asio::async_connect(socket, *endpoints,
                                    [h](std::error_code e, const asio::ip::tcp::endpoint&) mutable { h(e); });
            }, connected);
        });
    }

    /// TCP options, the TLS handshake, then the session's commands.
    void after_connect(std::function<void(error_info)> then) {
        if (tcp_ || tls_) tune(tls_ ? tls_->next_layer() : *tcp_);
        const auto session = [this, then] {
            open_ = true;
            auto opener = std::make_shared<session_opener>(options_);
            async_session(opener, then);
        };
        if (!tls_) return session();
        async_step(clock::now() + options_.connect_timeout,
                   [this](auto h) { tls_->async_handshake(asio::ssl::stream_base::client, std::move(h)); },
                   [this, then, session](std::error_code ec, bool timed_out) {
                       if (ec) {
                           error_info failed = handshake_failure(ec, timed_out);
                           return reset(), then(std::move(failed));
                       }
                       session();
                   });
    }

    void async_session(std::shared_ptr<session_opener> opener, std::function<void(error_info)> then) {
        std::vector<std::string_view> next;
        error_info failed;
        if (!opener->next(next, failed)) {
            if (failed) reset();
            return then(std::move(failed));
        }
        std::string encoded;
        resp::encode_command(next, encoded);
        async_exchange(std::move(encoded), [this, opener, then](error_info io, resp::reply answer) {
            if (io) return then(unreachable(io.detail));  // nothing of the caller's went out
            opener->answered(answer.type == resp::reply_type::error ? std::optional<std::string_view>(answer.text)
                                                                    : std::nullopt);
            resp::secure_clear(answer);
            async_session(opener, then);
        });
    }

    /// Writes one encoded command (wiped once written) and reads one reply,
    /// within command_timeout.
    void async_exchange(std::string encoded, std::function<void(error_info, resp::reply)> then) {
        auto buffer = std::make_shared<std::string>(std::move(encoded));
        auto written = std::make_shared<std::size_t>(0);
        const auto deadline = clock::now() + options_.command_timeout;
        async_step(deadline, [this, buffer, written](auto h) {
            with_stream([&](auto& stream) {
                asio::async_write(stream, asio::buffer(*buffer), [written, h](std::error_code e, std::size_t n) mutable {
                    *written = n;
                    h(e);
                });
            });
        }, [this, buffer, written, deadline, then](std::error_code ec, bool timed_out) {
            secure_clear(*buffer);  // it may hold AUTH's password or a token set
            if (ec) {
                error_info failed = write_failure(ec, timed_out, *written);
                return reset(), then(std::move(failed), resp::reply{});
            }
            async_read_reply(deadline, then);
        });
    }

    void async_read_reply(clock::time_point deadline, std::function<void(error_info, resp::reply)> then) {
        resp::reply out;
        error_info failed;
        if (reader_->next(out, failed)) return then({}, std::move(out));
        if (failed) return reset(), then(not_resp(failed), resp::reply{});
        auto got = std::make_shared<std::size_t>(0);
        async_step(deadline, [this, got](auto h) {
            with_stream([&](auto& stream) {
                stream.async_read_some(asio::buffer(incoming_), [got, h](std::error_code e, std::size_t n) mutable {
                    *got = n;
                    h(e);
                });
            });
        }, [this, got, deadline, then](std::error_code ec, bool timed_out) {
            error_info failed = absorb(*got, ec, timed_out);
            if (failed) return reset(), then(std::move(failed), resp::reply{});
            async_read_reply(deadline, then);
        });
    }

    // ---- what both paths share ----------------------------------------

    void close_sockets() noexcept {
        std::error_code ignored;
        if (resolving_) resolving_->cancel();
        if (tls_) tls_->lowest_layer().close(ignored);
        if (tcp_) tcp_->close(ignored);
        if (unix_) unix_->close(ignored);
    }

    void cancel_sockets() noexcept {
        std::error_code ignored;
        with_socket([&](auto& socket) { socket.cancel(ignored); });
    }

    /// The socket beneath the stream, whichever kind it is.
    template <class F>
    void with_socket(F&& f) {
        if (tls_) return f(tls_->lowest_layer());
        if (unix_) return f(*unix_);
        return f(*tcp_);
    }

    /// The stream commands travel on, whichever kind it is.
    template <class F>
    decltype(auto) with_stream(F&& f) {
        if (tls_) return f(*tls_);
        if (unix_) return f(*unix_);
        return f(*tcp_);
    }

    static void tune(asio::ip::tcp::socket& socket) {
        std::error_code ignored;
        socket.set_option(asio::ip::tcp::no_delay(true), ignored);
        socket.set_option(asio::socket_base::keep_alive(true), ignored);
    }

    std::string ms(std::chrono::milliseconds d) const { return std::to_string(d.count()) + " ms"; }

    /// The name the certificate must carry and SNI sends.
    const std::string& tls_name() const noexcept {
        return options_.tls_server_name.empty() ? options_.host : options_.tls_server_name;
    }

    bool check_options(error_info& failed) const {
        if (options_.connect_timeout.count() <= 0 || options_.command_timeout.count() <= 0)
            return failed = unreachable("the timeouts for Redis at " + options_.where() + " must be positive"), false;
        if (options_.tls && !options_.unix_socket.empty())
            return failed = unreachable("Redis at " + options_.where() +
                                        ": TLS is for host and port, not a Unix socket; leave tls off or connect "
                                        "by host and port"),
                   false;
        // asio's endpoint throws for a path its sockaddr_un cannot hold.
        if (options_.unix_socket.size() >= sizeof(sockaddr_un{}.sun_path))
            return failed = unreachable("the Unix socket path of Redis at " + options_.where() + " is " +
                                        std::to_string(options_.unix_socket.size()) + " bytes, longer than the " +
                                        std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) +
                                        " a socket address holds; use a shorter path"),
                   false;
        return true;
    }

    error_info cannot_connect(const std::error_code& ec, bool timed_out) const {
        return unreachable("cannot connect to Redis at " + options_.where() + ": " +
                           (timed_out ? "no connection within connect_timeout (" + ms(options_.connect_timeout) + ")"
                                      : ec.message()) +
                           "; check that redis-server runs there and that the address is right");
    }

    error_info timeout() const {
        return storage_failure("Redis at " + options_.where() + " did not answer within command_timeout (" +
                               ms(options_.command_timeout) +
                               "); check the server's load and the network, or raise command_timeout");
    }

    /// A write that failed: unreachable when none of it went out.
    error_info write_failure(const std::error_code& ec, bool timed_out, std::size_t written) const {
        error_info why = timed_out ? timeout()
                                   : storage_failure("the connection to Redis at " + options_.where() +
                                                     " failed while sending (" + ec.message() +
                                                     "); check that redis-server runs there" + what_else());
        if (written == 0) why.code = make_error_code(errc::storage_unreachable);
        return why;
    }

    error_info not_resp(const error_info& parse_failed) const {
        return storage_failure("Redis at " + options_.where() + " answered something that is not the Redis protocol (" +
                               parse_failed.detail + "); check that this address is a Redis server, not another service");
    }

    /// Feeds what a read brought (and wipes it), and turns the read's
    /// failure into a sentence; empty when reading may go on.
    error_info absorb(std::size_t got, const std::error_code& ec, bool timed_out) {
        error_info parse_failed;
        const bool fed = got == 0 || reader_->feed(std::string_view(incoming_.data(), got), parse_failed);
        secure_wipe(incoming_.data(), got);
        const std::string where = options_.where();
        if (!fed) return storage_failure("Redis at " + where + ": " + parse_failed.detail);
        if (timed_out) return timeout();
        if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated)
            return storage_failure("Redis at " + where +
                                   " closed the connection; it may have restarted, or it refused this client "
                                   "(maxclients)" + (options_.tls ? what_else() : std::string()));
        if (ec)
            return storage_failure("the connection to Redis at " + where + " failed while reading (" + ec.message() +
                                   "); check that redis-server runs there" + what_else());
        return {};
    }

    /// What else to check when a connection breaks: with TLS 1.3 a server
    /// that wants a client certificate refuses after the client's handshake
    /// ended, so the refusal shows at the first write or read.
    std::string what_else() const {
        if (options_.tls)
            return "; if it asks for a client certificate (tls-auth-clients), set tls_cert_file and tls_key_file";
        return ", and whether that port speaks TLS (rediss://)";
    }

    error_info handshake_failure(const std::error_code& ec, bool timed_out) {
        const std::string where = options_.where();
        if (timed_out)
            return unreachable("the TLS handshake with Redis at " + where + " did not finish within " +
                               ms(options_.connect_timeout) +
                               "; check that the port speaks TLS (tls-port), or raise connect_timeout");
        const error_info why = classify_handshake_failure(tls_->native_handle(), /*verify=*/true, ec);
        if (why.code == errc::certificate_verification_failed)
            return unreachable("the TLS certificate of Redis at " + where + " did not verify for the host '" +
                               tls_name() + "' (" + why.detail +
                               "); set tls_ca_file to the CA that signed it, or check the host name "
                               "(tls_server_name)");
        return unreachable("the TLS handshake with Redis at " + where + " failed (" + why.detail +
                           "); check that the port speaks TLS, and whether the server asks for a client "
                           "certificate (tls_cert_file, tls_key_file)");
    }

    bool open_transport(error_info& failed) {
        if (!check_options(failed)) return false;
        reader_.emplace();
        bool timed_out = false;
        auto deadline = clock::now() + options_.connect_timeout;
        if (!options_.unix_socket.empty()) {
            unix_.emplace(executor_);
            const asio::local::stream_protocol::endpoint endpoint(options_.unix_socket);
            const auto ec = run_until(deadline, timed_out, [&](auto handler) { unix_->async_connect(endpoint, handler); });
            if (ec) return failed = cannot_connect(ec, timed_out), false;
            open_ = true;
            return true;
        }
        asio::ip::tcp::resolver resolver(executor_);
        resolving_ = &resolver;
        struct forget_resolver {
            asio::ip::tcp::resolver*& resolving;
            ~forget_resolver() { resolving = nullptr; }
        } forget{resolving_};
        asio::ip::tcp::resolver::results_type endpoints;
        auto ec = run_until(deadline, timed_out, [&](auto handler) {
            resolver.async_resolve(options_.host, std::to_string(options_.port),
                                   [&endpoints, handler](std::error_code e, asio::ip::tcp::resolver::results_type r) mutable {
                                       endpoints = std::move(r);
                                       handler(e);
                                   });
        });
        if (ec) return failed = cannot_connect(ec, timed_out), false;
        if (options_.tls && !prepare_tls(failed)) return false;
        auto& socket = tls_ ? tls_->next_layer() : tcp_.emplace(executor_);
        ec = run_until(deadline, timed_out, [&](auto handler) {
            asio::async_connect(socket, endpoints, [handler](std::error_code e, const asio::ip::tcp::endpoint&) mutable { handler(e); });
        });
        if (ec) return failed = cannot_connect(ec, timed_out), false;
        tune(socket);
        if (tls_) {
            ec = run_until(clock::now() + options_.connect_timeout, timed_out, [&](auto handler) {
                tls_->async_handshake(asio::ssl::stream_base::client, handler);
            });
            if (ec) return failed = handshake_failure(ec, timed_out), false;
        }
        open_ = true;
        return true;
    }

    /// The TLS context (made once) and a stream set to verify tls_name().
    bool prepare_tls(error_info& failed) {
        const std::string where = options_.where();
        if (!tls_context_) {
            error_info context_failed;
            asio::ssl::context context = make_client_tls_context(options_.tls_ca_file, /*verify=*/true, context_failed);
            if (context_failed)
                return failed = unreachable("TLS to Redis at " + where + ": " + context_failed.detail), false;
            if (options_.tls_cert_file.empty() != options_.tls_key_file.empty())
                return failed = unreachable("TLS to Redis at " + where +
                                            ": set both tls_cert_file and tls_key_file for a client certificate, or "
                                            "neither"),
                       false;
            if (!options_.tls_cert_file.empty()) {
                std::error_code ec;
                context.use_certificate_chain_file(options_.tls_cert_file, ec);
                if (ec)
                    return failed = unreachable("TLS to Redis at " + where + ": the client certificate '" +
                                                options_.tls_cert_file + "' could not be loaded as PEM (" +
                                                ec.message() + ")"),
                           false;
                // No passphrase: OpenSSL's default would prompt on the terminal
                // and block; an encrypted key fails to load instead.
                context.set_password_callback(
                    [](std::size_t, asio::ssl::context::password_purpose) { return std::string(); }, ec);
                if (!ec) context.use_private_key_file(options_.tls_key_file, asio::ssl::context::pem, ec);
                if (ec)
                    return failed = unreachable("TLS to Redis at " + where + ": the client key '" +
                                                options_.tls_key_file +
                                                "' could not be loaded as an unencrypted PEM key matching the "
                                                "certificate (" + ec.message() + ")"),
                           false;
            }
            tls_context_.emplace(std::move(context));
        }
        tls_.emplace(executor_, *tls_context_);
        std::error_code ec;
        const bool is_ip = (asio::ip::make_address(tls_name(), ec), !ec);
        set_tls_peer_name(tls_->native_handle(), tls_name(), is_ip, /*verify=*/true);
        return true;
    }

    /// Writes one command and reads one reply, within command_timeout.
    bool exchange(const std::vector<std::string_view>& args, resp::reply& out, error_info& failed) {
        const auto deadline = clock::now() + options_.command_timeout;
        const auto lost = [&](error_info why) {
            reset();
            failed = std::move(why);
            return false;
        };
        resp::encode_command(args, encoded_);
        std::size_t written = 0;
        bool timed_out = false;
        auto ec = run_until(deadline, timed_out, [&](auto handler) {
            with_stream([&](auto& stream) {
                asio::async_write(stream, asio::buffer(encoded_), [&written, handler](std::error_code e, std::size_t n) mutable {
                    written = n;
                    handler(e);
                });
            });
        });
        secure_clear(encoded_);  // it may hold AUTH's password or a token set
        if (ec) return lost(write_failure(ec, timed_out, written));
        for (;;) {
            error_info parse_failed;
            if (reader_->next(out, parse_failed)) return failed = {}, true;
            if (parse_failed) return lost(not_resp(parse_failed));
            std::size_t got = 0;
            ec = run_until(deadline, timed_out, [&](auto handler) {
                with_stream([&](auto& stream) {
                    stream.async_read_some(asio::buffer(incoming_), [&got, handler](std::error_code e, std::size_t n) mutable {
                        got = n;
                        handler(e);
                    });
                });
            });
            if (error_info why = absorb(got, ec, timed_out)) return lost(std::move(why));
        }
    }

    redis_options options_;
    asio::io_context io_{1};  // the blocking calls' (unused by a connection on the caller's executor)
    asio::any_io_executor executor_;
    asio::steady_timer timer_;  // the asynchronous path's deadline
    bool own_context_ = true;
    bool busy_ = false;  // an asynchronous operation is in flight
    std::optional<asio::ssl::context> tls_context_;
    std::optional<asio::ip::tcp::socket> tcp_;
    std::optional<asio::local::stream_protocol::socket> unix_;
    std::optional<asio::ssl::stream<asio::ip::tcp::socket>> tls_;
    std::optional<resp::reader> reader_;
    asio::ip::tcp::resolver* resolving_ = nullptr;  // while connecting resolves: what a deadline cancels
    std::string encoded_;
    std::array<char, 16 * 1024> incoming_{};
    bool open_ = false;
};

}  // namespace tokmgr::detail::redis
