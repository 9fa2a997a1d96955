#include "token.hpp"

#include <atomic>
#include <chrono>
#include <iostream>

#include <tokmgr/tokmgr.hpp>

#include "client_setup.hpp"
#include "exit_status.hpp"
#include "output.hpp"
#include "store.hpp"

namespace tokmgr_cli {

namespace {

bool is_store_failure(std::error_code ec) {
    return ec == tokmgr::errc::storage_failed || ec == tokmgr::errc::storage_permissions ||
           ec == tokmgr::errc::storage_unreachable || ec == tokmgr::errc::storage_foreign;
}

/// `tokmgr token --store PATH|URL`: the stored JWT while it is fresh (no
/// request), a refresh with the stored refresh token when due, and a login —
/// the only case that needs the password — when neither serves.
template <class Storage>
int run_token_with_store(const parsed_options& args, const Storage& store) {
    using stored_manager =
        tokmgr::token_manager<tokmgr::asio_transport, tokmgr::steady_clock, Storage, tokmgr::simdjson_json>;
    auto attempt = [&](tokmgr::credentials creds, std::error_code& ec) -> int {
        tokmgr::asio_transport transport(transport_options(args), ec);
        if (ec) return report_failure("token", transport.last_error(), ec, "the transport");
        // A store that cannot keep the set sends the manager into a private
        // session: right for a long-lived service, but here the set would die
        // with the process and the next run, with no password at hand, would
        // fail unattended. The user named the store, so its failure is ours.
        auto options = manager_options_from(args);
        std::atomic<bool> went_private{false};
        options.on_event = [&went_private](const tokmgr::event& happened) {
            if (happened.kind == tokmgr::event_kind::private_session_started) went_private = true;
        };
        stored_manager manager(std::move(transport), std::move(creds), std::move(options), {}, Storage(store));
        const auto jwt = manager.get_token(ec);
        if (ec == tokmgr::errc::no_credentials) return -1;  // a login is needed: ask for the password
        if (ec) return report_failure("token", manager.last_error(), ec, "login");
        if (const auto unkept = manager.last_error(); went_private || is_store_failure(unkept.code)) {
            const auto code = unkept.code ? unkept.code : make_error_code(tokmgr::errc::storage_failed);
            return report_failure("token", unkept, code, "the store could not keep the token set");
        }
        std::cout << jwt.reveal() << '\n' << std::flush;
        return std::cout ? exit_ok : exit_other;
    };
    std::error_code ec;
    {
        // A store that cannot be used (permissions, a directory that cannot
        // be made, a Redis that cannot be reached or holds another type at
        // the key) is the error to report, not the login it would lead to.
        // Reading is not enough: a directory the store refuses to write in,
        // or cannot create, reads as empty. Taking the lease checks what a
        // write needs; a lease held elsewhere is the manager's to wait for.
        Storage probe(store);
        probe.load(ec);
        if (ec && ec != tokmgr::errc::storage_corrupt) return report_failure("token", probe.last_error(), ec, "the store");
        auto lease = probe.lock(std::chrono::milliseconds(0), ec);
        if (ec && ec != tokmgr::errc::lease_timeout) return report_failure("token", probe.last_error(), ec, "the store");
    }
    // The password from the environment, if there, serves a login at once;
    // otherwise the first attempt has none and asks only if it must.
    tokmgr::credentials first;
    if (password_from_environment() != nullptr) first = login_credentials(args);
    const int status = attempt(std::move(first), ec);
    if (status >= 0) return status;
    return attempt(login_credentials(args), ec);
}

}  // namespace

int run_token(int argc, char** argv) {
    option_spec spec;
    spec.valued = {"url",       "user",          "ca-file",         "store",         "lease-wait",
                   "lease-ttl", "store-ca-file", "store-cert-file", "store-key-file", "proxy"};
    spec.flags = {"insecure"};
    const auto args = parse_options(argc, argv, 2, spec, "token");
    if (auto store = args.get("store")) {
        if (store->empty())
            throw usage_error{"--store takes a file path (e.g. $XDG_STATE_HOME/tokmgr/textual.json) or a "
                              "redis://host:port/[db/]key or postgresql://host:port/db?key=K URL"};
        return with_store(args, *store, [&](const auto& storage) { return run_token_with_store(args, storage); });
    }
    if (args.get("lease-ttl")) throw usage_error{"--lease-ttl goes with --store redis://... or postgresql://..."};
    auto options = transport_options(args);
    auto creds = login_credentials(args);

    std::error_code ec;
    tokmgr::asio_transport transport(std::move(options), ec);
    if (ec) return report_failure("token", transport.last_error(), ec, "the transport");
    tokmgr::token_manager<> manager(std::move(transport), std::move(creds));
    const auto jwt = manager.get_token(ec);
    if (ec) return report_failure("token", manager.last_error(), ec, "login");
    std::cout << jwt.reveal() << '\n' << std::flush;
    return std::cout ? exit_ok : exit_other;
}

}  // namespace tokmgr_cli
