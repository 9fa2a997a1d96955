// tokmgr/transport/detail/tls.hpp — the OpenSSL details of the Asio transport:
// the client context, per-connection verification settings, session reuse
// and telling a certificate failure from other handshake failures.
#pragma once

#include <memory>
#include <string>
#include <system_error>

#include <asio/ssl.hpp>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "../../errc.hpp"
#include "../../error.hpp"
#include "url.hpp"

namespace tokmgr::detail {

struct ssl_session_free {
    void operator()(SSL_SESSION* session) const noexcept { SSL_SESSION_free(session); }
};
/// A session kept to resume the next TLS connection to the same server.
using tls_session_ptr = std::unique_ptr<SSL_SESSION, ssl_session_free>;

/// The client context: TLS 1.2 or newer, peer verification against the
/// system store or `ca_file` unless `verify` is false. Sets `failed` to
/// errc::invalid_configuration and a reason when the CA file cannot be used.
inline asio::ssl::context make_client_tls_context(const std::string& ca_file, bool verify, error_info& failed) {
    asio::ssl::context context(asio::ssl::context::tls_client);
    context.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                        asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                        asio::ssl::context::no_tlsv1_1 | asio::ssl::context::no_compression);
    SSL_CTX_set_min_proto_version(context.native_handle(), TLS1_2_VERSION);
    // Sessions are kept by the transport itself (one per server), not in
    // OpenSSL's client cache.
    SSL_CTX_set_session_cache_mode(context.native_handle(), SSL_SESS_CACHE_OFF);
    if (!verify) {
        context.set_verify_mode(asio::ssl::verify_none);
        failed = {};
        return context;
    }
    context.set_verify_mode(asio::ssl::verify_peer);
    std::error_code load_ec;
    if (ca_file.empty()) {
        context.set_default_verify_paths(load_ec);
        if (load_ec) {
            failed = {make_error_code(errc::invalid_configuration),
                      "the system's trusted CA certificates could not be loaded (" + load_ec.message() +
                          "); install ca-certificates or set ca_file"};
            return context;
        }
    } else {
        context.load_verify_file(ca_file, load_ec);
        if (load_ec) {
            failed = {make_error_code(errc::invalid_configuration),
                      "the CA file '" + ca_file + "' could not be loaded as PEM certificates (" + load_ec.message() +
                          ")"};
            return context;
        }
    }
    failed = {};
    return context;
}

/// Per connection: SNI for a host name (RFC 6066 forbids it for an IP
/// literal), and the name or address the certificate must carry.
inline void set_tls_peer_name(SSL* ssl, const std::string& host, bool host_is_ip, bool verify) {
    if (!host_is_ip) SSL_set_tlsext_host_name(ssl, host.c_str());
    if (verify) {
        X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (host_is_ip) X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
        else X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
    }
}

/// Per connection: the peer's name as above and the session to resume.
inline void prepare_tls_connection(SSL* ssl, const parsed_url& url, bool verify, SSL_SESSION* resume) {
    set_tls_peer_name(ssl, url.host, url.host_is_ip(), verify);
    if (resume != nullptr) SSL_set_session(ssl, resume);
}

/// The session to resume next time, if the server offered a resumable one.
inline tls_session_ptr take_resumable_session(SSL* ssl) {
    tls_session_ptr session(SSL_get1_session(ssl));
    if (session && !SSL_SESSION_is_resumable(session.get())) session.reset();
    return session;
}

/// After a failed handshake: errc::certificate_verification_failed with
/// OpenSSL's reason ("hostname mismatch", "unable to get local issuer
/// certificate") when verification rejected the peer, else errc::tls_handshake_failed.
inline error_info classify_handshake_failure(SSL* ssl, bool verify, const std::error_code& handshake_ec) {
    const long verify_result = SSL_get_verify_result(ssl);
    if (verify && verify_result != X509_V_OK)
        return {make_error_code(errc::certificate_verification_failed), X509_verify_cert_error_string(verify_result)};
    return {make_error_code(errc::tls_handshake_failed), handshake_ec.message()};
}

}  // namespace tokmgr::detail
