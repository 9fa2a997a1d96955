// tokmgr/server/impl/reference_server.hpp — bodies of reference_server.
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>

#include <atomic>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "../detail/auth_service.hpp"
#include "../detail/settings.hpp"
#include "connection.hpp"

namespace tokmgr::server {

struct reference_server::impl {
    explicit impl(server_options opts) : options(std::move(opts)) {}

    server_options options;
    // Declared before the io_context: connections still queued in it refer
    // to the service and the TLS context until it is destroyed.
    std::unique_ptr<detail::auth_service> service;
    std::optional<asio::ssl::context> tls;
    asio::io_context io{1};
    asio::ip::tcp::acceptor acceptor{io};
    asio::steady_timer accept_retry{io};
    std::vector<std::thread> threads;
    std::atomic<unsigned short> bound_port{0};
    std::string host_for_url;

    mutable std::mutex state_mutex;
    bool started = false;
    bool stopped = false;
    error_info last_error;

    bool fail(std::error_code code, std::string detail, std::error_code& ec) {
        last_error = {code, std::move(detail)};
        ec = code;
        return false;
    }

    bool setup_tls(std::error_code& ec) {
        if (options.tls_cert_file.empty()) return true;
        tls.emplace(asio::ssl::context::tls_server);
        tls->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                         asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                         asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
        std::error_code load_ec;
        tls->use_certificate_chain_file(options.tls_cert_file, load_ec);
        if (load_ec)
            return fail(make_error_code(errc::invalid_configuration),
                        "cannot load the TLS certificate chain (PEM) from " + options.tls_cert_file, ec);
        tls->use_private_key_file(options.tls_key_file, asio::ssl::context::pem, load_ec);
        if (load_ec)
            return fail(make_error_code(errc::invalid_configuration),
                        "cannot load the TLS private key (PEM) from " + options.tls_key_file +
                            ", or it does not match the certificate",
                        ec);
        return true;
    }

    bool listen(std::error_code& ec) {
        asio::ip::tcp::resolver resolver(io);
        std::error_code resolve_ec;
        const auto results = resolver.resolve(options.host, std::to_string(options.port),
                                              asio::ip::resolver_base::passive, resolve_ec);
        if (resolve_ec || results.empty())
            return fail(make_error_code(errc::resolve_failed), "cannot resolve the listen address " + options.host, ec);
        const auto endpoint = results.begin()->endpoint();
        const std::string where = options.host + ":" + std::to_string(options.port);
        std::error_code sys;
        acceptor.open(endpoint.protocol(), sys);
        if (!sys) acceptor.set_option(asio::socket_base::reuse_address(true), sys);
        if (!sys) acceptor.bind(endpoint, sys);
        if (!sys) acceptor.listen(asio::socket_base::max_listen_connections, sys);
        if (sys) {
            std::error_code ignored;
            acceptor.close(ignored);
            // Asio reports errno values in its own category, which does not
            // compare equal to std::errc; hand callers the standard one.
            if (sys.category() == asio::system_category()) sys = std::error_code(sys.value(), std::system_category());
            return fail(sys, "cannot listen on " + where, ec);
        }
        bound_port = acceptor.local_endpoint(sys).port();
        const auto address = endpoint.address();
        host_for_url = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
        return true;
    }

    void accept() {
        acceptor.async_accept(asio::make_strand(io), [this](std::error_code ec, asio::ip::tcp::socket socket) {
            if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
            if (ec) {
                // Out of descriptors and the like: pause rather than spin.
                accept_retry.expires_after(std::chrono::milliseconds(50));
                accept_retry.async_wait([this](std::error_code wait_ec) {
                    if (!wait_ec) accept();
                });
                return;
            }
            std::error_code ignored;
            const auto peer = socket.remote_endpoint(ignored);
            std::string client = ignored ? std::string() : peer.address().to_string();
            if (!service->limits().open_connection(client)) {
                refuse(socket);
                return accept();
            }
            detail::connection_slot slot(service->limits(), std::move(client));
            socket.set_option(asio::ip::tcp::no_delay(true), ignored);
            if (tls) {
                std::make_shared<detail::connection<detail::tls_stream>>(
                    detail::tls_stream(std::move(socket), *tls), *service, options, std::move(slot))
                    ->start();
            } else {
                std::make_shared<detail::connection<detail::tcp::socket>>(std::move(socket), *service, options,
                                                                           std::move(slot))
                    ->start();
            }
            accept();
        });
    }

    /// Over a connection cap: a short 503 if the socket takes it at once (a
    /// new socket's send buffer is empty), then close without reading, so a
    /// client holding its quota costs the server nothing more.
    void refuse(asio::ip::tcp::socket& socket) {
        service->count_refused_connection();
        static const std::string answer = [] {
            auto r = detail::error_reply(503, "too many connections from this address or in all: retry later");
            r.headers.push_back({"Retry-After", "1"});
            return detail::serialize(r, false);
        }();
        std::error_code ignored;
        socket.non_blocking(true, ignored);
        socket.write_some(asio::buffer(answer.data(), answer.size()), ignored);
        socket.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
        socket.close(ignored);
    }

    void run_loop() {
        for (;;) {
            try {
                io.run();
                return;
            } catch (const std::exception&) {
                // A handler threw (out of memory, say): that connection is
                // lost, the server carries on.
            }
        }
    }
};

inline reference_server::reference_server(server_options options)
    : impl_(std::make_unique<impl>(std::move(options))) {}

inline reference_server::~reference_server() { stop(); }

inline void reference_server::start(std::error_code& ec) {
    ec.clear();
    std::lock_guard<std::mutex> lock(impl_->state_mutex);
    if (impl_->started) {
        impl_->fail(make_error_code(errc::invalid_configuration), "the reference server was already started", ec);
        return;
    }
    detail::settings resolved;
    if (!detail::resolve_settings(impl_->options, resolved, impl_->last_error)) {
        ec = impl_->last_error.code;
        return;
    }
    if (!impl_->setup_tls(ec) || !impl_->listen(ec)) return;
    impl_->service = std::make_unique<detail::auth_service>(impl_->options, std::move(resolved));
    impl_->started = true;
    impl_->last_error = {};
    impl_->accept();
    for (unsigned i = 0; i < impl_->options.threads; ++i) impl_->threads.emplace_back([this] { impl_->run_loop(); });
}

inline void reference_server::start() {
    std::error_code ec;
    start(ec);
    if (ec) tokmgr::detail::throw_error(last_error());
}

inline void reference_server::stop() noexcept {
    std::lock_guard<std::mutex> lock(impl_->state_mutex);
    if (!impl_->started || impl_->stopped) return;
    impl_->stopped = true;
    impl_->io.stop();
    for (auto& t : impl_->threads) t.join();
    impl_->threads.clear();
    // No thread runs the loop any more, so the acceptor may be touched here.
    std::error_code ignored;
    impl_->acceptor.close(ignored);
}

inline unsigned short reference_server::port() const noexcept { return impl_->bound_port; }

inline std::string reference_server::url() const {
    std::lock_guard<std::mutex> lock(impl_->state_mutex);
    return std::string(impl_->tls ? "https://" : "http://") + impl_->host_for_url + ":" +
           std::to_string(impl_->bound_port.load());
}

inline bool reference_server::uses_tls() const noexcept { return impl_->tls.has_value(); }

inline server_stats reference_server::stats() const {
    // The service lives until the server is destroyed, so this is safe after stop().
    if (!impl_->service) return {};
    return impl_->service->stats();
}

inline bool reference_server::revoke_jwt(std::string_view jwt) {
    if (!impl_->service) return false;
    impl_->service->revoke_jwt(jwt);
    return true;
}

inline error_info reference_server::last_error() const {
    std::lock_guard<std::mutex> lock(impl_->state_mutex);
    return impl_->last_error;
}

}  // namespace tokmgr::server
