#include "client_setup.hpp"

#include <termios.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <iostream>

#include <tokmgr/secret.hpp>

namespace tokmgr_cli {

namespace {

/// The variable's value, empty when it is unset.
std::string environment(const char* name) {
    const char* value = std::getenv(name);
    return value ? std::string(value) : std::string();
}

/// Reads one line from stdin without echoing it when stdin is a terminal.
bool read_password_line(std::string& out) {
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

}  // namespace

const char* password_from_environment() {
    const char* value = std::getenv("TONIC_TEXTUAL_PASSWORD");
    return value != nullptr && *value != '\0' ? value : nullptr;
}

tokmgr::asio_transport_options transport_options(const parsed_options& args) {
    tokmgr::asio_transport_options options;  // its base_url is Textual's cloud
    if (auto url = args.get("url")) options.base_url = *url;
    else if (auto env = environment("TONIC_TEXTUAL_BASE_URL"); !env.empty()) options.base_url = env;
    if (auto ca = args.get("ca-file")) options.ca_file = *ca;
    // Without --proxy the transport follows https_proxy, http_proxy,
    // all_proxy and no_proxy (either case but http_proxy) as curl does.
    if (auto proxy = args.get("proxy")) options.proxy = *proxy;
    options.insecure_skip_tls_verify = args.flag("insecure");
    return options;
}

tokmgr::manager_options manager_options_from(const parsed_options& args) {
    tokmgr::manager_options options;
    if (auto wait = args.get("lease-wait"))
        options.lease_wait = std::chrono::milliseconds(
            static_cast<std::int64_t>(parse_positive_seconds(*wait, 3600, "--lease-wait") * 1000));
    return options;
}

tokmgr::credentials login_credentials(const parsed_options& args) {
    tokmgr::credentials creds;
    if (auto user = args.get("user")) creds.user_name = *user;
    else creds.user_name = environment("TONIC_TEXTUAL_USERNAME");
    if (creds.user_name.empty()) throw usage_error{"no user name: pass --user NAME or set TONIC_TEXTUAL_USERNAME"};

    if (const char* env = password_from_environment()) {
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
