// tokmgr/storage/detail/redis_connection.hpp — one connection to Redis on
// Asio: TCP, a Unix socket, or TLS through OpenSSL (asio::ssl). The piece
// that is to replace hiredis under redis_storage (issue 21); redis_storage
// does not use it yet.
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

#include <array>
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <asio/connect.hpp>
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
    explicit connection(redis_options options) : options_(std::move(options)) {}
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    ~connection() { close(); }

    const redis_options& options() const noexcept { return options_; }
    bool is_open() const noexcept { return open_; }

    /// Opens the connection: resolve and connect (or the Unix socket), the
    /// TLS handshake, AUTH and SELECT. storage_unreachable on failure.
    bool connect(error_info& failed) {
        close();
        if (!open_transport(failed)) return close(), false;
        const auto send = [this](const std::vector<std::string_view>& args, std::string& refusal, error_info& io) {
            resp::reply answer;
            if (!exchange(args, answer, io)) {
                io = unreachable(io.detail);  // a handshake command: nothing of the caller's went out
                return false;
            }
            if (answer.type == resp::reply_type::error) refusal = std::move(answer.text);
            resp::secure_clear(answer);
            return true;
        };
        if (!open_session(options_, send, failed)) return close(), false;
        return true;
    }

    /// Sends one command and reads its reply into `out`; connects first when
    /// the connection is not open. An error reply is a reply (true): the
    /// caller decides what it means. On failure the connection is closed.
    bool command(const std::vector<std::string_view>& args, resp::reply& out, error_info& failed) {
        if (!open_ && !connect(failed)) return false;
        return exchange(args, out, failed);
    }

    /// Closes the socket; the next command connects again.
    void close() noexcept {
        std::error_code ignored;
        if (tls_) tls_->lowest_layer().close(ignored);
        if (tcp_) tcp_->close(ignored);
        if (unix_) unix_->close(ignored);
        tls_.reset();
        tcp_.reset();
        unix_.reset();
        reader_.reset();
        open_ = false;
    }

private:
    using clock = std::chrono::steady_clock;

    /// Runs what `start` begins on the private io_context until its handler
    /// ran or `deadline` passed; in that case the socket is closed, which
    /// ends the operation, and `timed_out` is set. `start` gets a handler to
    /// call with the operation's error_code.
    template <class Start>
    std::error_code run_until(clock::time_point deadline, bool& timed_out, Start&& start) {
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
            close_sockets();
            io_.restart();
            io_.run();  // the aborted operation's handler, so nothing refers to this frame afterwards
            result = make_error_code(std::errc::timed_out);
        }
        return result;
    }

    void close_sockets() noexcept {
        std::error_code ignored;
        if (resolving_) resolving_->cancel();
        if (tls_) tls_->lowest_layer().close(ignored);
        if (tcp_) tcp_->close(ignored);
        if (unix_) unix_->close(ignored);
    }

    /// The stream commands travel on, whichever kind it is.
    template <class F>
    decltype(auto) with_stream(F&& f) {
        if (tls_) return f(*tls_);
        if (unix_) return f(*unix_);
        return f(*tcp_);
    }

    std::string ms(std::chrono::milliseconds d) const { return std::to_string(d.count()) + " ms"; }

    /// The name the certificate must carry and SNI sends.
    const std::string& tls_name() const noexcept {
        return options_.tls_server_name.empty() ? options_.host : options_.tls_server_name;
    }

    bool open_transport(error_info& failed) {
        const std::string where = options_.where();
        if (options_.connect_timeout.count() <= 0 || options_.command_timeout.count() <= 0)
            return failed = unreachable("the timeouts for Redis at " + where + " must be positive"), false;
        reader_.emplace();
        bool timed_out = false;
        auto deadline = clock::now() + options_.connect_timeout;
        const auto cannot_connect = [&](const std::error_code& ec) {
            failed = unreachable("cannot connect to Redis at " + where + ": " +
                                 (timed_out ? "no connection within connect_timeout (" + ms(options_.connect_timeout) + ")"
                                            : ec.message()) +
                                 "; check that redis-server runs there and that the address is right");
            return false;
        };
        if (!options_.unix_socket.empty()) {
            if (options_.tls)
                return failed = unreachable("Redis at " + where + ": TLS is for host and port, not a Unix socket; "
                                            "leave tls off or connect by host and port"),
                       false;
            unix_.emplace(io_);
            const asio::local::stream_protocol::endpoint endpoint(options_.unix_socket);
            const auto ec = run_until(deadline, timed_out, [&](auto handler) { unix_->async_connect(endpoint, handler); });
            if (ec) return cannot_connect(ec);
            open_ = true;
            return true;
        }
        asio::ip::tcp::resolver resolver(io_);
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
        if (ec) return cannot_connect(ec);
        if (options_.tls && !prepare_tls(failed)) return false;
        auto& socket = tls_ ? tls_->next_layer() : tcp_.emplace(io_);
        ec = run_until(deadline, timed_out, [&](auto handler) {
            asio::async_connect(socket, endpoints, [handler](std::error_code e, const asio::ip::tcp::endpoint&) mutable { handler(e); });
        });
        if (ec) return cannot_connect(ec);
        std::error_code ignored;
        socket.set_option(asio::ip::tcp::no_delay(true), ignored);
        socket.set_option(asio::socket_base::keep_alive(true), ignored);
        if (tls_ && !handshake(failed)) return false;
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
                context.use_private_key_file(options_.tls_key_file, asio::ssl::context::pem, ec);
                if (ec)
                    return failed = unreachable("TLS to Redis at " + where + ": the client key '" +
                                                options_.tls_key_file +
                                                "' could not be loaded as an unencrypted PEM key matching the "
                                                "certificate (" + ec.message() + ")"),
                           false;
            }
            tls_context_.emplace(std::move(context));
        }
        tls_.emplace(io_, *tls_context_);
        std::error_code ec;
        const bool is_ip = (asio::ip::make_address(tls_name(), ec), !ec);
        set_tls_peer_name(tls_->native_handle(), tls_name(), is_ip, /*verify=*/true);
        return true;
    }

    bool handshake(error_info& failed) {
        bool timed_out = false;
        const auto ec = run_until(clock::now() + options_.connect_timeout, timed_out, [&](auto handler) {
            tls_->async_handshake(asio::ssl::stream_base::client, handler);
        });
        if (!ec) return true;
        const std::string where = options_.where();
        if (timed_out)
            return failed = unreachable("the TLS handshake with Redis at " + where + " did not finish within " +
                                        ms(options_.connect_timeout) +
                                        "; check that the port speaks TLS (tls-port), or raise connect_timeout"),
                   false;
        const error_info why = classify_handshake_failure(tls_->native_handle(), /*verify=*/true, ec);
        if (why.code == errc::certificate_verification_failed)
            return failed = unreachable("the TLS certificate of Redis at " + where + " did not verify for the host '" +
                                        tls_name() + "' (" + why.detail +
                                        "); set tls_ca_file to the CA that signed it, or check the host name "
                                        "(tls_server_name)"),
                   false;
        return failed = unreachable("the TLS handshake with Redis at " + where + " failed (" + why.detail +
                                    "); check that the port speaks TLS, and whether the server asks for a client "
                                    "certificate (tls_cert_file, tls_key_file)"),
               false;
    }

    /// Writes one command and reads one reply, within command_timeout.
    bool exchange(const std::vector<std::string_view>& args, resp::reply& out, error_info& failed) {
        const std::string where = options_.where();
        const auto deadline = clock::now() + options_.command_timeout;
        const auto lost = [&](error_info why) {
            close();
            failed = std::move(why);
            return false;
        };
        const auto timeout = [&] {
            return storage_failure("Redis at " + where + " did not answer within command_timeout (" +
                                   ms(options_.command_timeout) +
                                   "); check the server's load and the network, or raise command_timeout");
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
        if (ec) {
            if (timed_out) return lost(written == 0 ? unreachable(timeout().detail) : timeout());
            error_info why = storage_failure("the connection to Redis at " + where + " failed while sending (" +
                                             ec.message() + "); check that redis-server runs there");
            if (written == 0) why.code = make_error_code(errc::storage_unreachable);
            return lost(std::move(why));
        }
        for (;;) {
            error_info parse_failed;
            if (reader_->next(out, parse_failed)) return failed = {}, true;
            if (parse_failed)
                return lost(storage_failure("Redis at " + where +
                                            " answered something that is not the Redis protocol (" +
                                            parse_failed.detail +
                                            "); check that this address is a Redis server, not another service"));
            std::size_t got = 0;
            ec = run_until(deadline, timed_out, [&](auto handler) {
                with_stream([&](auto& stream) {
                    stream.async_read_some(asio::buffer(incoming_), [&got, handler](std::error_code e, std::size_t n) mutable {
                        got = n;
                        handler(e);
                    });
                });
            });
            const bool fed = got == 0 || reader_->feed(std::string_view(incoming_.data(), got), parse_failed);
            secure_wipe(incoming_.data(), got);
            if (!fed) return lost(storage_failure("Redis at " + where + ": " + parse_failed.detail));
            if (timed_out) return lost(timeout());
            if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated)
                return lost(storage_failure("Redis at " + where +
                                            " closed the connection; it may have restarted, or it refused this "
                                            "client (maxclients)"));
            if (ec && tls_ && ec.category() == asio::error::get_ssl_category())
                return lost(storage_failure("TLS with Redis at " + where + " failed (" + ec.message() +
                                            "); if the server asks for a client certificate (tls-auth-clients), "
                                            "set tls_cert_file and tls_key_file"));
            if (ec)
                return lost(storage_failure("the connection to Redis at " + where + " failed while reading (" +
                                            ec.message() + "); check that redis-server runs there" +
                                            (options_.tls ? "" : ", and whether that port speaks TLS (rediss://)")));
        }
    }

    redis_options options_;
    asio::io_context io_{1};
    std::optional<asio::ssl::context> tls_context_;
    std::optional<asio::ip::tcp::socket> tcp_;
    std::optional<asio::local::stream_protocol::socket> unix_;
    std::optional<asio::ssl::stream<asio::ip::tcp::socket>> tls_;
    std::optional<resp::reader> reader_;
    asio::ip::tcp::resolver* resolving_ = nullptr;  // while connect() resolves: what a deadline cancels
    std::string encoded_;
    std::array<char, 16 * 1024> incoming_{};
    bool open_ = false;
};

}  // namespace tokmgr::detail::redis
