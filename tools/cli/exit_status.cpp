#include "exit_status.hpp"

#include <tokmgr/errc.hpp>

namespace tokmgr_cli {

int exit_status_for(std::error_code ec) noexcept {
    if (!ec) return exit_ok;
    if (ec.category() == tokmgr::error_category()) {
        switch (static_cast<tokmgr::errc>(ec.value())) {
        case tokmgr::errc::credentials_rejected:
        case tokmgr::errc::refresh_rejected:
            return exit_rejected;
        case tokmgr::errc::resolve_failed:
        case tokmgr::errc::connection_refused:
        case tokmgr::errc::connect_timeout:
        case tokmgr::errc::tls_handshake_failed:
        case tokmgr::errc::certificate_verification_failed:
        case tokmgr::errc::timeout:
        case tokmgr::errc::connection_failed:
        case tokmgr::errc::proxy_authentication_required:
        case tokmgr::errc::proxy_tunnel_failed:
            return exit_network;
        case tokmgr::errc::protocol_error:
        case tokmgr::errc::response_too_large:
        case tokmgr::errc::unexpected_redirect:
            return exit_protocol;
        case tokmgr::errc::invalid_url:
        case tokmgr::errc::no_credentials:
            return exit_usage;
        default:
            return exit_other;
        }
    }
    // Socket errors from the system (e.g. the port to serve on is taken).
    if (ec.category() == std::system_category() || ec.category() == std::generic_category()) return exit_network;
    return exit_other;
}

}  // namespace tokmgr_cli
