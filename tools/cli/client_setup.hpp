// tools/cli/client_setup.hpp — what `token` and `load` share: where the
// server is, who logs in, and where the password comes from (the
// environment or stdin, never the command line, where `ps` would show it).
#pragma once

#include <termios.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>

#include <tokmgr/secret.hpp>
#include <tokmgr/options.hpp>
#include <tokmgr/transport/asio.hpp>

#include "args.hpp"

namespace tokmgr_cli {

inline std::string environment(const char* name) {
    const char* value = std::getenv(name);
    return value ? std::string(value) : std::string();
}

/// --url, else TONIC_TEXTUAL_BASE_URL, else Textual's cloud; --proxy, else
/// the proxy environment variables.
inline tokmgr::asio_transport_options transport_options(const parsed_options& args) {
    tokmgr::asio_transport_options options;
    if (auto url = args.get("url")) options.base_url = *url;
    else if (auto env = environment("TONIC_TEXTUAL_BASE_URL"); !env.empty()) options.base_url = env;
    else options.base_url = "https://textual.tonic.ai";
    if (auto ca = args.get("ca-file")) options.ca_file = *ca;
    // Without --proxy the transport follows https_proxy, http_proxy,
    // all_proxy and no_proxy (either case but http_proxy) as curl does.
    if (auto proxy = args.get("proxy")) options.proxy = *proxy;
    options.insecure_skip_tls_verify = args.flag("insecure");
    return options;
}

/// The manager's options from the command line: --lease-wait SECONDS, how
/// long a login or refresh waits for another process's hold on the --store.
inline tokmgr::manager_options manager_options_from(const parsed_options& args) {
    tokmgr::manager_options options;
    if (auto wait = args.get("lease-wait"))
        options.lease_wait = std::chrono::milliseconds(
            static_cast<std::int64_t>(parse_positive_seconds(*wait, 3600, "--lease-wait") * 1000));
    return options;
}

/// Reads one line from stdin without echoing it when stdin is a terminal.
inline bool read_password_line(std::string& out) {
    const bool terminal = ::isatty(STDIN_FILENO) == 1;
    termios saved{};
    if (terminal && ::tcgetattr(STDIN_FILENO, &saved) == 0) {
        termios quiet = saved;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        std::cerr << "Password: " << std::flush;
    }
    const bool got = static_cast<bool>(std::getline(std::cin, out));
    if (terminal) {
        ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
        std::cerr << std::endl;
    }
    if (!out.empty() && out.back() == '\r') out.pop_back();
    return got && !out.empty();
}

/// --user (else TONIC_TEXTUAL_USERNAME) and the password from
/// TONIC_TEXTUAL_PASSWORD, else one line on stdin. Throws usage_error.
inline tokmgr::credentials login_credentials(const parsed_options& args) {
    tokmgr::credentials creds;
    if (auto user = args.get("user")) creds.user_name = *user;
    else creds.user_name = environment("TONIC_TEXTUAL_USERNAME");
    if (creds.user_name.empty()) throw usage_error{"no user name: pass --user NAME or set TONIC_TEXTUAL_USERNAME"};

    if (const char* env = std::getenv("TONIC_TEXTUAL_PASSWORD"); env && *env) {
        creds.password = tokmgr::secret(env);
        return creds;
    }
    std::string line;
    const bool got = read_password_line(line);
    creds.password = tokmgr::secret(std::move(line));
    if (!got) throw usage_error{"no password: set TONIC_TEXTUAL_PASSWORD or write it as one line on stdin"};
    return creds;
}

}  // namespace tokmgr_cli
