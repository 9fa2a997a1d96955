// tokmgr/storage/redis_options.hpp — where a Redis store is and how it is
// reached: redis_options, its URL forms and the credential AUTH sends. Free of
// Asio, so that a program (the command line's argument parsing, a
// configuration loader) can build its options without compiling the
// connection (detail/redis_connection.hpp).
#pragma once

#include <charconv>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "../detail/percent.hpp"
#include "../errc.hpp"
#include "../error.hpp"
#include "../secret.hpp"

namespace tokmgr {

/// What AUTH sends on one connection: an ACL user (empty: the default user)
/// and its password (empty: no AUTH).
struct redis_credential {
    std::string user;
    secret password;
};

/// Where the Redis store is and how it is used. Every member has a usable
/// default except `key` for a second account and `password` for a server
/// that asks for one.
struct redis_options {
    std::string host = "127.0.0.1";
    int port = 6379;
    /// A Unix socket path; when set, host and port are not used (a Redis on
    /// the same host: no TCP, no TLS needed).
    std::string unix_socket;
    int database = 0;  ///< SELECT after connecting

    /// TLS to host:port (a `rediss://` URL sets it), with the server's
    /// certificate and host name always verified: a certificate that does
    /// not verify fails the connection, never falls back to plaintext. Not
    /// for a Unix socket.
    bool tls = false;
    /// PEM file of the CA certificates that sign the server's certificate (a
    /// managed Redis's own CA, a private CA). Empty: the system's trusted CAs.
    std::string tls_ca_file;
    /// A client certificate (PEM) and its private key (PEM, unencrypted), for
    /// a server that asks for one (`tls-auth-clients yes`). Both or neither.
    std::string tls_cert_file;
    std::string tls_key_file;
    /// The name the server's certificate must carry and SNI sends, when it
    /// differs from `host` (a connection through a tunnel or to an address).
    /// Empty: `host`. An IP address is checked against the certificate's IP
    /// entries and sent without SNI (RFC 6066).
    std::string tls_server_name;
    /// The account's name in Redis; one key per account. The document is
    /// stored at "{<key>}", the lease at "{<key>}:lease", and the channel is
    /// "{<key>}:changed" (document_name(), lease_name(), channel_name()). It
    /// must not begin with '}' (see document_name()).
    std::string key = "tokmgr:textual";
    /// AUTH: the password (`requirepass`), with `user` for a Redis 6 ACL user.
    std::string user;
    secret password;
    /// Optional, in place of `user` and `password` (which must then be
    /// empty): called each time a connection opens, for the credential it
    /// authenticates with. For a credential that rotates — an IAM token that
    /// lives 15 minutes, a password a secret manager rewrites — the store
    /// never keeps one: a connection the server closes after a rotation
    /// (CLIENT KILL, a token's end of life) is reopened with what the
    /// provider returns then, and a refused AUTH asks it once more before
    /// failing. It runs on the thread of the store call that opens the
    /// connection (for an asynchronous manager, the storage executor's),
    /// possibly on several at once, and within no timeout of tokmgr's: make
    /// it quick (fetch the token ahead and cache it). What it throws fails
    /// that call with storage_unreachable and its what() in the message:
    /// keep secrets out of it.
    std::function<redis_credential()> credential_provider;

    /// Resolving and connecting; for TLS (the Asio connection), the
    /// handshake again after it.
    std::chrono::milliseconds connect_timeout = std::chrono::seconds(2);
    /// Each command's answer (an unanswered command fails with storage_failed).
    std::chrono::milliseconds command_timeout = std::chrono::seconds(2);

    /// How long a lease lives unless released. It must cover what the holder
    /// does under it: a login or refresh, i.e. the transport's connect,
    /// handshake and request timeouts, plus a margin for the store's own
    /// round trips; `lease_ttl_for` computes that. Too short, and a slow
    /// refresh outlives its lease: still never a reuse (the spent mark is
    /// written first), but the next holder logs in. Too long, and a holder
    /// killed mid-refresh blocks the others that long (they keep serving
    /// their JWT meanwhile). Default: asio_transport's defaults (10 + 10 +
    /// 30 s) plus 10 s.
    std::chrono::milliseconds lease_ttl = std::chrono::seconds(60);

    /// After storing the spent mark, `WAIT wait_replicas wait_timeout`: the
    /// refresh is sent only once that many replicas acknowledged the mark
    /// (storage_failed otherwise, and nothing is sent). 0: no WAIT. See
    /// docs/fleet.md for what an asynchronous failover loses without it.
    int wait_replicas = 0;
    std::chrono::milliseconds wait_timeout = std::chrono::seconds(1);

    /// The lease TTL for a transport whose connect, TLS handshake and request
    /// together take at most `request_time`.
    static std::chrono::milliseconds lease_ttl_for(std::chrono::milliseconds request_time,
                                                   std::chrono::milliseconds margin = std::chrono::seconds(10)) {
        return request_time + margin;
    }

    /// Reads `redis://[user][:password]@host[:port]/[<db>/]<key>` (one path
    /// segment is the key, two are database and key), the same with
    /// `rediss://` for TLS (`tls` set; the port's default is 6379 as well), or
    /// `redis+unix://[user][:password]@/path/to/redis.sock?[db=N&]key=K`.
    /// A password in the URL is visible to `ps`: prefer setting `password`
    /// from the environment. Errors (errc::invalid_configuration) never
    /// repeat the password.
    static redis_options from_url(std::string_view url, error_info& failed);
    static redis_options from_url(std::string_view url, std::error_code& ec) {
        return detail::code_only(ec, [&](error_info& failed) { return from_url(url, failed); });
    }
    static redis_options from_url(std::string_view url) {
        return detail::throw_on_failure([&](error_info& failed) { return from_url(url, failed); });
    }

    /// The names in Redis, each beginning with "{<key>}": Redis Cluster
    /// hashes only what lies between a name's first '{' and the first '}'
    /// after it (the hash tag), which is the same for the three names
    /// whatever the key holds, so they share one hash slot and every script
    /// can touch them together. The one exception is a key that begins with
    /// '}': its tag would be empty, and Redis would hash each whole name
    /// (three slots), so the store refuses such a key (storage_failed) and
    /// from_url rejects it.
    std::string document_name() const { return "{" + key + "}"; }
    std::string lease_name() const { return document_name() + ":lease"; }
    std::string channel_name() const { return document_name() + ":changed"; }

    /// "redis://host:port/db/key" (rediss:// with TLS) or
    /// "redis+unix:///path?db=N&key=K", never with the password: for messages.
    std::string where() const {
        if (!unix_socket.empty())
            return "redis+unix://" + unix_socket + "?db=" + std::to_string(database) + "&key=" + key;
        return (tls ? "rediss://" : "redis://") + host + ":" + std::to_string(port) + "/" +
               std::to_string(database) + "/" + key;
    }
};

namespace detail::redis {

inline bool integer_arg(std::string_view text, std::uint64_t max, std::uint64_t& out) {
    if (text.empty() || text.find_first_not_of("0123456789") != std::string_view::npos) return false;
    const auto [end, result] = std::from_chars(text.data(), text.data() + text.size(), out);
    return result == std::errc() && end == text.data() + text.size() && out <= max;
}

}  // namespace detail::redis

inline redis_options redis_options::from_url(std::string_view url, error_info& failed) {
    failed = {};
    redis_options out;
    auto bad = [&](std::string text) {
        failed = {make_error_code(errc::invalid_configuration), "the Redis URL " + std::move(text)};
        return redis_options{};
    };
    const bool unix_socket = url.rfind("redis+unix://", 0) == 0;
    out.tls = url.rfind("rediss://", 0) == 0;
    if (!unix_socket && !out.tls && url.rfind("redis://", 0) != 0)
        return bad("must start with redis://, rediss:// (TLS) or redis+unix:// (e.g. "
                   "redis://127.0.0.1:6379/0/tokmgr:textual)");
    std::string_view rest = url.substr(url.find("://") + 3);
    // [[user]:password@] — the last '@' before the path, so a password may hold '@' as %40 or not at all.
    const std::size_t at = rest.substr(0, rest.find('/')).rfind('@');
    if (at != std::string_view::npos) {
        const std::string_view userinfo = rest.substr(0, at);
        // "user@" alone names an ACL user whose password comes from elsewhere
        // (redis_options::password, TOKMGR_REDIS_PASSWORD for the CLI).
        const std::size_t colon = userinfo.find(':');
        std::string user, password;
        if (!detail::percent_decode(userinfo.substr(0, colon), user) ||
            (colon != std::string_view::npos && !detail::percent_decode(userinfo.substr(colon + 1), password))) {
            detail::secure_clear(password);  // decoded up to the bad escape
            return bad("has a bad %-escape in its credentials (they are not shown)");
        }
        out.user = std::move(user);
        out.password = secret(std::move(password));
        rest.remove_prefix(at + 1);
    }
    std::string key;
    if (unix_socket) {
        const std::size_t query = rest.find('?');
        const std::string_view path = rest.substr(0, query);
        if (path.empty() || path.front() != '/') return bad("needs an absolute socket path: redis+unix:///path/to/redis.sock?key=K");
        out.unix_socket = std::string(path);
        std::string_view params = query == std::string_view::npos ? std::string_view() : rest.substr(query + 1);
        while (!params.empty()) {
            const std::size_t amp = params.find('&');
            const std::string_view param = params.substr(0, amp);
            params = amp == std::string_view::npos ? std::string_view() : params.substr(amp + 1);
            if (param.rfind("key=", 0) == 0) {
                if (!detail::percent_decode(param.substr(4), key)) return bad("has a bad %-escape in its key");
            } else if (param.rfind("db=", 0) == 0) {
                std::uint64_t db = 0;
                if (!detail::redis::integer_arg(param.substr(3), 1u << 20, db)) return bad("has a database that is not a number");
                out.database = static_cast<int>(db);
            } else {
                return bad("has an unknown parameter (use db=N and key=K)");
            }
        }
    } else {
        const std::size_t slash = rest.find('/');
        if (slash == std::string_view::npos) return bad("needs a key after the host: redis://host:port/[db/]key");
        std::string_view hostport = rest.substr(0, slash);
        std::string_view path = rest.substr(slash + 1);
        std::string_view port_text;
        bool has_port = false;
        if (!hostport.empty() && hostport.front() == '[') {
            const std::size_t close = hostport.find(']');
            if (close == std::string_view::npos) return bad("has an IPv6 address without its closing ']'");
            out.host = std::string(hostport.substr(1, close - 1));
            const std::string_view after = hostport.substr(close + 1);
            if (!after.empty()) {
                if (after.front() != ':') return bad("has bytes after the IPv6 address that are not ':port'");
                port_text = after.substr(1);
                has_port = true;
            }
        } else {
            const std::size_t colon = hostport.rfind(':');
            out.host = std::string(hostport.substr(0, colon));
            has_port = colon != std::string_view::npos;
            if (has_port) port_text = hostport.substr(colon + 1);
        }
        if (out.host.empty()) return bad("needs a host: redis://host:port/[db/]key");
        if (has_port) {
            std::uint64_t port = 0;
            if (!detail::redis::integer_arg(port_text, 65535, port) || port == 0)
                return bad("has a port that is not a number from 1 to 65535");
            out.port = static_cast<int>(port);
        }
        const std::size_t second = path.find('/');
        if (second != std::string_view::npos) {
            std::uint64_t db = 0;
            if (!detail::redis::integer_arg(path.substr(0, second), 1u << 20, db))
                return bad("has a database that is not a number (redis://host:port/<db>/<key>)");
            out.database = static_cast<int>(db);
            path.remove_prefix(second + 1);
            if (path.find('/') != std::string_view::npos)
                return bad("has more than two path segments (redis://host:port/[<db>/]<key>; a key cannot hold '/', "
                           "write it as %2F)");
        }
        if (!detail::percent_decode(path, key)) return bad("has a bad %-escape in its key");
    }
    if (key.empty()) return bad("needs a key (redis://host:port/[db/]key, or ?key=K for a socket)");
    if (key.front() == '}')
        return bad("has a key that begins with '}', which cannot be hash-tagged for Redis Cluster; choose another key");
    out.key = std::move(key);
    return out;
}

}  // namespace tokmgr
