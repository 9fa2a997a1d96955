// What the Asio transport tests share: option presets, the test PKI made by
// tls_fixture.sh, and a recorder for transport events.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <tokmgr/transport/asio.hpp>

#include "scripted_server.hpp"

#ifndef TOKMGR_TEST_TLS_DIR
#error "TOKMGR_TEST_TLS_DIR must name the directory tls_fixture.sh fills"
#endif

namespace transport_test {

inline std::string tls_dir() { return TOKMGR_TEST_TLS_DIR; }
inline std::string pki_file(const std::string& name) { return tls_dir() + "/pki/" + name; }

/// Records every transport event (they arrive on the thread running send).
struct event_log {
    std::vector<tokmgr::transport_event_kind> kinds;
    std::vector<std::string> details;

    int count(tokmgr::transport_event_kind kind) const {
        int n = 0;
        for (auto k : kinds) n += k == kind ? 1 : 0;
        return n;
    }
};

inline tokmgr::asio_transport_options plain_options(const std::string& url, event_log* events = nullptr) {
    tokmgr::asio_transport_options options;
    options.base_url = url;
    options.connect_timeout = std::chrono::seconds(3);
    options.handshake_timeout = std::chrono::seconds(3);
    options.request_timeout = std::chrono::seconds(5);
    if (events != nullptr) {
        options.on_event = [events](const tokmgr::transport_event& e) {
            events->kinds.push_back(e.kind);
            events->details.emplace_back(e.detail);
        };
    }
    return options;
}

/// Trusts the test CA only.
inline tokmgr::asio_transport_options tls_options(const std::string& url, event_log* events = nullptr) {
    auto options = plain_options(url, events);
    options.ca_file = pki_file("ca.pem");
    return options;
}

/// `name`: "localhost" (test CA), "untrusted" (unknown CA) or "other-host".
inline tls_files server_tls(const std::string& name, int max_version = 0) {
    return tls_files{pki_file(name + ".pem"), pki_file(name + ".key"), max_version};
}

/// The body is viewed, not copied: keep it alive until the request is sent.
inline tokmgr::http_request post(std::string_view target, std::string_view body) {
    tokmgr::http_request request;
    request.method = "POST";
    request.target = target;
    request.body = body;
    return request;
}

}  // namespace transport_test
