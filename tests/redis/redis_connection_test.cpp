// detail::redis::connection, the Asio Redis connection, and redis_storage
// over TLS, against the fixtures' redis-servers: plaintext on TCP and a Unix
// socket (TOKMGR_TEST_REDIS_DIR), TLS only with the clients' certificates optional (TOKMGR_TEST_REDIS_TLS_DIR)
// and required (TOKMGR_TEST_REDIS_TLS_CLIENTS_DIR), each directory holding
// the server's port and, for TLS, the fixture's pki/. Plus sockets of the
// test's own: one that listens and never answers, one that refuses.
#include <doctest/doctest.h>

#include <tokmgr/storage/detail/redis_connection.hpp>
#include <tokmgr/storage/redis.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio/io_context.hpp>

#include <atomic>
#include <functional>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

using namespace std::chrono_literals;
using tokmgr::errc;
using tokmgr::error_info;
using tokmgr::redis_options;
using tokmgr::detail::redis::connection;
namespace resp = tokmgr::detail::resp;

namespace {

int port_in(const std::string& dir) {
    std::ifstream in(dir + "/port");
    int port = 0;
    in >> port;
    REQUIRE_MESSAGE(port > 0, "the redis fixture did not write its port in " << dir);
    return port;
}

std::string fresh_key() {
    static std::atomic<int> n{0};
    return "tokmgr-connection-test:" + std::to_string(::getpid()) + ":" + std::to_string(++n);
}

redis_options plain_options() {
    redis_options o;
    o.port = port_in(TOKMGR_TEST_REDIS_DIR);
    o.connect_timeout = 2s;
    o.command_timeout = 2s;
    return o;
}

const std::string tls_dir = TOKMGR_TEST_REDIS_TLS_DIR;
const std::string tls_clients_dir = TOKMGR_TEST_REDIS_TLS_CLIENTS_DIR;

redis_options tls_options(const std::string& dir = tls_dir) {
    redis_options o;
    o.tls = true;
    o.port = port_in(dir);
    o.tls_ca_file = dir + "/pki/ca.pem";
    return o;
}

/// Runs a command that must succeed, and returns its reply.
resp::reply must(connection& c, std::vector<std::string_view> args) {
    resp::reply out;
    error_info failed;
    const bool ok = c.command(args, out, failed);
    REQUIRE_MESSAGE(ok, failed.detail);
    return out;
}

/// A loopback port of the test's own. Listening, the kernel completes
/// connections into its backlog and nothing ever reads or answers them (a
/// silent server); not listening, it is bound, so no one else takes it
/// meanwhile, and a connection is refused.
struct loopback_port {
    int fd = -1;
    int port = 0;
    explicit loopback_port(bool listening) {
        fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        if (listening) REQUIRE(::listen(fd, 8) == 0);
        socklen_t len = sizeof a;
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
        port = ntohs(a.sin_port);
    }
    ~loopback_port() { ::close(fd); }
};

/// Checks that connecting with `o` fails with storage_unreachable and a
/// message holding `expected`.
void connect_refused(const redis_options& o, const std::string& expected) {
    connection c(o);
    error_info failed;
    CHECK_FALSE(c.connect(failed));
    CHECK(failed.code == errc::storage_unreachable);
    CHECK_MESSAGE(failed.detail.find(expected) != std::string::npos, failed.detail);
    CHECK_FALSE(c.is_open());
}

/// Checks that a first command with `o` fails (at connecting or after) with
/// a message holding `expected`.
void first_command_fails(const redis_options& o, const std::string& expected) {
    connection c(o);
    resp::reply out;
    error_info failed;
    CHECK_FALSE(c.command({"PING"}, out, failed));
    CHECK_MESSAGE(failed.detail.find(expected) != std::string::npos, failed.detail);
}

/// A SET and GET of a value with every byte RESP frames with, and a GET of
/// nothing: the round trip is binary-safe.
void round_trip(connection& c) {
    const std::string key = fresh_key();
    const std::string value("a\0b\r\n$3\r\n*-1\xff", 14);
    CHECK(must(c, {"SET", key, value}).text == "OK");
    const resp::reply got = must(c, {"GET", key});
    CHECK(got.type == resp::reply_type::bulk_string);
    CHECK(got.text == value);
    CHECK(must(c, {"GET", key + ":absent"}).type == resp::reply_type::null);
    CHECK(must(c, {"DEL", key}).integer == 1);
}

}  // namespace

/// How often an asynchronous handler ran, and with what.
struct async_result_holder {
    int calls = 0;
    error_info failed;
};

TEST_CASE("TCP: commands round-trip binary-safe values; an error reply is a reply") {
    connection c(plain_options());
    error_info failed;
    REQUIRE_MESSAGE(c.connect(failed), failed.detail);
    round_trip(c);
    const resp::reply wrong = must(c, {"NOSUCHCOMMAND"});
    CHECK(wrong.type == resp::reply_type::error);
    CHECK(c.is_open());
    // A large value, read in many pieces.
    const std::string key = fresh_key();
    const std::string big(300 * 1024, 'x');
    must(c, {"SET", key, big});
    CHECK(must(c, {"GET", key}).text == big);
    must(c, {"DEL", key});
}

TEST_CASE("a Unix socket, and SELECT of the options' database") {
    redis_options o = plain_options();
    o.unix_socket = std::string(TOKMGR_TEST_REDIS_DIR) + "/redis.sock";
    o.database = 3;
    connection c(o);
    round_trip(c);  // connects on first use
    const std::string key = fresh_key();
    must(c, {"SET", key, "in 3"});
    connection zero(plain_options());
    CHECK(must(zero, {"EXISTS", key}).integer == 0);
    must(zero, {"SELECT", "3"});
    CHECK(must(zero, {"GET", key}).text == "in 3");
    must(c, {"DEL", key});
}

TEST_CASE("TLS with the fixture's CA: verified by address and by name (SNI)") {
    for (const char* host : {"127.0.0.1", "localhost"}) {
        CAPTURE(host);
        redis_options o = tls_options();
        o.host = host;
        connection c(o);
        error_info failed;
        REQUIRE_MESSAGE(c.connect(failed), failed.detail);
        round_trip(c);
    }
}

TEST_CASE("TLS refuses a certificate that does not verify, naming the host, and never falls back to plaintext") {
    SUBCASE("the system's CAs do not know the fixture's CA") {
        redis_options o = tls_options();
        o.tls_ca_file.clear();
        connection c(o);
        resp::reply out;
        error_info failed;
        CHECK_FALSE(c.command({"PING"}, out, failed));
        CHECK(failed.code == errc::storage_unreachable);
        CHECK_MESSAGE(failed.detail.find("did not verify for the host '127.0.0.1'") != std::string::npos, failed.detail);
        CHECK(failed.detail.find("rediss://127.0.0.1:") != std::string::npos);
        CHECK_FALSE(c.is_open());
    }
    SUBCASE("a host name the certificate does not carry") {
        redis_options o = tls_options();
        o.tls_server_name = "redis.other.example";
        connect_refused(o, "did not verify for the host 'redis.other.example'");
    }
    SUBCASE("a CA that did not sign the server's certificate") {
        redis_options o = tls_options();
        o.tls_ca_file = tls_clients_dir + "/pki/ca.pem";  // the other fixture's CA
        connect_refused(o, "did not verify for the host '127.0.0.1'");
    }
    SUBCASE("a TLS client on a plaintext port") {
        redis_options o = tls_options();
        o.port = port_in(TOKMGR_TEST_REDIS_DIR);
        connect_refused(o, "TLS handshake with Redis at rediss://127.0.0.1:");
    }
    SUBCASE("a CA file that is not there") {
        redis_options o = tls_options();
        o.tls_ca_file = tls_dir + "/pki/absent.pem";
        connect_refused(o, "absent.pem");
    }
    SUBCASE("a plaintext client on the TLS port fails") {
        redis_options o = tls_options();
        o.tls = false;
        o.command_timeout = 500ms;
        first_command_fails(o, "rediss://");
    }
}

TEST_CASE("TLS with a client certificate, where the server requires one") {
    redis_options o = tls_options(tls_clients_dir);
    // TLS 1.3 lets the client finish its handshake before the server checks
    // the certificate: the refusal comes at the handshake or the first command.
    first_command_fails(o, "tls_cert_file");
    o.tls_cert_file = tls_clients_dir + "/pki/client.pem";
    o.tls_key_file = tls_clients_dir + "/pki/client.key";
    connection with(o);
    error_info failed;
    REQUIRE_MESSAGE(with.connect(failed), failed.detail);
    round_trip(with);
    o.tls_key_file.clear();
    connection half(o);
    CHECK_FALSE(half.connect(failed));
    CHECK(failed.detail.find("both tls_cert_file and tls_key_file") != std::string::npos);

    // An encrypted key: refused at once, never a passphrase prompt on the
    // terminal (OpenSSL's default), which would block the call forever.
    const std::string encrypted = tls_clients_dir + "/pki/client-encrypted.key";
    const std::string make = "openssl pkey -in '" + tls_clients_dir +
                             "/pki/client.key' -aes256 -passout pass:secret-pass -out '" + encrypted + "' 2>/dev/null";
    REQUIRE(std::system(make.c_str()) == 0);
    o.tls_key_file = encrypted;
    connection locked(o);
    CHECK_FALSE(locked.connect(failed));
    CHECK(failed.code == errc::storage_unreachable);
    CHECK(failed.detail.find("could not be loaded as an unencrypted PEM key") != std::string::npos);
    std::remove(encrypted.c_str());
}

TEST_CASE("a Unix socket path longer than a socket address holds: refused, in both forms, without an exception") {
    redis_options o = plain_options();
    o.unix_socket = "/tmp/" + std::string(200, 'x') + ".sock";
    connection blocking(o);
    error_info failed;
    CHECK_FALSE(blocking.connect(failed));
    CHECK(failed.code == errc::storage_unreachable);
    CHECK(failed.detail.find("longer than the") != std::string::npos);
    asio::io_context io;
    connection c(io.get_executor(), o);
    async_result_holder result;
    c.async_command({"PING"}, [&](error_info f, resp::reply) {
        ++result.calls;
        result.failed = std::move(f);
    });
    io.run_for(5s);
    CHECK(result.calls == 1);
    CHECK(result.failed.detail.find("longer than the") != std::string::npos);
}

TEST_CASE("AUTH: the right password, a wrong one (never shown), a credential provider asked per connection") {
    connection admin(plain_options());
    const std::string user = "tokmgr-conn-" + std::to_string(::getpid());
    const std::string password = "hunter2-right-horse";
    REQUIRE(must(admin, {"ACL", "SETUSER", user, "on", ">" + password, "~*", "+@all"}).text == "OK");
    redis_options o = plain_options();
    o.user = user;
    SUBCASE("right") {
        o.password = tokmgr::secret(password);
        connection c(o);
        CHECK(must(c, {"ACL", "WHOAMI"}).text == user);
    }
    SUBCASE("wrong") {
        o.password = tokmgr::secret("hunter2-wrong-horse");
        connection c(o);
        resp::reply out;
        error_info failed;
        CHECK_FALSE(c.command({"PING"}, out, failed));
        CHECK(failed.code == errc::storage_unreachable);
        CHECK(failed.detail.find("refused the password") != std::string::npos);
        CHECK(failed.detail.find("hunter2") == std::string::npos);
    }
    SUBCASE("a provider, asked for each new connection") {
        int asked = 0;
        o.user.clear();
        o.credential_provider = [&] {
            ++asked;
            return tokmgr::redis_credential{user, tokmgr::secret(password)};
        };
        connection c(o);
        CHECK(must(c, {"ACL", "WHOAMI"}).text == user);
        CHECK(asked == 1);
        c.close();
        CHECK(must(c, {"PING"}).text == "PONG");
        CHECK(asked == 2);
    }
    SUBCASE("a provider that throws") {
        o.user.clear();
        o.credential_provider = []() -> tokmgr::redis_credential { throw std::runtime_error("vault is sealed"); };
        connect_refused(o, "vault is sealed");
    }
    must(admin, {"ACL", "DELUSER", user});
}

TEST_CASE("timeouts: a server that never answers fails the command (storage_failed) or the handshake") {
    loopback_port silent(/*listening=*/true);
    redis_options o = plain_options();
    o.port = silent.port;
    o.command_timeout = 200ms;
    o.connect_timeout = 200ms;
    {
        connection c(o);
        error_info failed;
        REQUIRE_MESSAGE(c.connect(failed), failed.detail);  // no AUTH, no SELECT: nothing asked yet
        resp::reply out;
        const auto start = std::chrono::steady_clock::now();
        CHECK_FALSE(c.command({"PING"}, out, failed));
        CHECK(std::chrono::steady_clock::now() - start < 2s);
        CHECK(failed.code == errc::storage_failed);  // it was sent: it may have run
        CHECK(failed.detail.find("did not answer within command_timeout (200 ms)") != std::string::npos);
        CHECK_FALSE(c.is_open());
    }
    o.tls = true;
    o.tls_ca_file = tls_dir + "/pki/ca.pem";
    connection c(o);
    error_info failed;
    CHECK_FALSE(c.connect(failed));
    CHECK(failed.code == errc::storage_unreachable);
    CHECK(failed.detail.find("TLS handshake") != std::string::npos);
}

TEST_CASE("a refused connection is storage_unreachable, naming the server") {
    loopback_port nobody(/*listening=*/false);
    redis_options o = plain_options();
    o.port = nobody.port;
    connection c(o);
    resp::reply out;
    error_info failed;
    CHECK_FALSE(c.command({"PING"}, out, failed));
    CHECK(failed.code == errc::storage_unreachable);
    CHECK(failed.detail.find("cannot connect to Redis at redis://127.0.0.1:" + std::to_string(nobody.port)) !=
          std::string::npos);
}

// ---- the asynchronous form, on an io_context of the test's ----------------

namespace {

struct async_result {
    bool called = false;
    error_info failed;
    resp::reply reply;
};

/// Starts commands one after the other on `c` (each from the previous one's
/// handler), runs the io_context until all completed, and returns what each
/// handler got.
std::vector<async_result> run_async(asio::io_context& io, connection& c,
                                    std::vector<std::vector<std::string>> commands) {
    std::vector<async_result> results(commands.size());
    std::function<void(std::size_t)> start = [&](std::size_t i) {
        if (i == commands.size()) return;
        const std::vector<std::string_view> args(commands[i].begin(), commands[i].end());
        c.async_command(args, [&, i](error_info failed, resp::reply reply) {
            results[i] = {true, std::move(failed), std::move(reply)};
            start(i + 1);
        });
    };
    start(0);
    io.restart();
    io.run_for(10s);
    return results;
}

}  // namespace

TEST_CASE("async_command: connects, authenticates and round-trips on the caller's executor, over TCP and TLS") {
    for (bool tls : {false, true}) {
        CAPTURE(tls);
        asio::io_context io;
        redis_options o = tls ? tls_options() : plain_options();
        if (tls) o.host = "localhost";
        o.database = 2;
        connection c(io.get_executor(), o);
        const std::string key = fresh_key();
        const std::string value("x\0\r\ny", 5);
        const auto results = run_async(io, c, {{"SET", key, value}, {"GET", key}, {"DEL", key}});
        for (const auto& r : results) {
            CHECK(r.called);
            CHECK_MESSAGE(!r.failed, r.failed.detail);
        }
        CHECK(results[1].reply.text == value);
        CHECK(results[2].reply.integer == 1);
        CHECK(c.is_open());
        resp::reply out;
        error_info failed;
        CHECK_FALSE(c.command({"PING"}, out, failed));  // it would block the caller's executor
        CHECK(failed.detail.find("use async_command") != std::string::npos);
    }
}

TEST_CASE("async_command fails as the blocking form does: a certificate that does not verify, a server that never answers") {
    asio::io_context io;
    SUBCASE("the system CAs") {
        redis_options o = tls_options();
        o.tls_ca_file.clear();
        connection c(io.get_executor(), o);
        const auto results = run_async(io, c, {{"PING"}});
        REQUIRE(results[0].called);
        CHECK(results[0].failed.code == errc::storage_unreachable);
        CHECK(results[0].failed.detail.find("did not verify for the host '127.0.0.1'") != std::string::npos);
    }
    SUBCASE("silence") {
        loopback_port silent(/*listening=*/true);
        redis_options o = plain_options();
        o.port = silent.port;
        o.command_timeout = 200ms;
        connection c(io.get_executor(), o);
        const auto start = std::chrono::steady_clock::now();
        const auto results = run_async(io, c, {{"PING"}, {"PING"}});
        CHECK(std::chrono::steady_clock::now() - start < 3s);
        for (const auto& r : results) {
            REQUIRE(r.called);
            CHECK(r.failed.code == errc::storage_failed);
            CHECK(r.failed.detail.find("did not answer within command_timeout (200 ms)") != std::string::npos);
        }
    }
    SUBCASE("a refused connection, a wrong password") {
        loopback_port nobody(/*listening=*/false);
        redis_options o = plain_options();
        o.port = nobody.port;
        connection refused(io.get_executor(), o);
        auto results = run_async(io, refused, {{"PING"}});
        REQUIRE(results[0].called);
        CHECK(results[0].failed.code == errc::storage_unreachable);
        CHECK(results[0].failed.detail.find("cannot connect to Redis at") != std::string::npos);
        o = plain_options();
        o.password = tokmgr::secret("hunter2-not-the-password");  // AUTH without a user: the server has none
        connection wrong(io.get_executor(), o);
        results = run_async(io, wrong, {{"PING"}});
        REQUIRE(results[0].called);
        CHECK(results[0].failed.code == errc::storage_unreachable);
        CHECK(results[0].failed.detail.find("hunter2") == std::string::npos);
        CHECK_MESSAGE(results[0].failed.detail.find("has no password set") != std::string::npos,
                      results[0].failed.detail);
    }
    SUBCASE("a second command while one runs") {
        connection c(io.get_executor(), plain_options());
        async_result first, second;
        c.async_command({"PING"}, [&](error_info f, resp::reply r) { first = {true, std::move(f), std::move(r)}; });
        c.async_command({"PING"}, [&](error_info f, resp::reply r) { second = {true, std::move(f), std::move(r)}; });
        io.run_for(5s);
        CHECK(first.called);
        CHECK_FALSE(first.failed);
        CHECK(first.reply.text == "PONG");
        CHECK(second.called);
        CHECK(second.failed.detail.find("run one at a time") != std::string::npos);
    }
}

TEST_CASE("async_command: close() while a command waits ends it with one call of its handler; the next reconnects") {
    asio::io_context io;
    loopback_port silent(/*listening=*/true);
    redis_options o = plain_options();
    o.port = silent.port;
    o.command_timeout = 5s;
    connection c(io.get_executor(), o);
    async_result_holder result;
    c.async_command({"PING"}, [&](error_info f, resp::reply) {
        ++result.calls;
        result.failed = std::move(f);
    });
    asio::steady_timer later(io, 100ms);  // connected by then, the PING unanswered
    later.async_wait([&](std::error_code) { c.close(); });
    const auto start = std::chrono::steady_clock::now();
    io.run_for(4s);
    CHECK(std::chrono::steady_clock::now() - start < 3s);  // not the 5 s command_timeout
    CHECK(result.calls == 1);
    CHECK(result.failed);
    CHECK_FALSE(c.is_open());

    connection fine(io.get_executor(), plain_options());
    async_result_holder first, second;
    fine.async_command({"PING"}, [&](error_info f, resp::reply) {
        ++first.calls;
        first.failed = std::move(f);
        fine.close();  // between two commands: the next one connects again
        fine.async_command({"PING"}, [&](error_info g, resp::reply r) {
            ++second.calls;
            second.failed = std::move(g);
            CHECK(r.text == "PONG");
        });
    });
    io.restart();
    io.run_for(5s);
    CHECK(first.calls == 1);
    CHECK_FALSE(first.failed);
    CHECK(second.calls == 1);
    CHECK_MESSAGE(!second.failed, second.failed.detail);
}

// ---- redis_storage over TLS: what the store does with the connection's refusals ----

TEST_CASE("redis_storage over TLS: a certificate that does not verify writes nothing; the right CA round-trips") {
    const std::string key = fresh_key();
    const auto document_exists = [&] {
        connection check(tls_options());
        return must(check, {"EXISTS", "{" + key + "}"}).integer == 1;
    };
    const tokmgr::token_set set = test::set_of(1);  // its refresh token is "rt-SECRET-1"

    struct refusal {
        const char* what;
        std::function<void(redis_options&)> change;
        const char* says;
    };
    const std::vector<refusal> refusals = {
        {"the system's CAs", [](redis_options& o) { o.tls_ca_file.clear(); }, "did not verify"},
        {"another host name", [](redis_options& o) { o.tls_server_name = "redis.example.com"; }, "did not verify"},
        {"a plaintext client on the TLS port", [](redis_options& o) { o.tls = false; }, "Redis at redis://"},
    };
    for (const auto& r : refusals) {
        CAPTURE(r.what);
        redis_options o = tls_options();
        o.key = key;
        o.connect_timeout = 2s;
        o.command_timeout = 2s;
        r.change(o);
        tokmgr::redis_storage store(o);
        std::error_code ec;
        CHECK_FALSE(store.store_if(set, 0, ec));
        CHECK(ec);
        CHECK(store.last_error().detail.find(r.says) != std::string::npos);
        CHECK(store.last_error().detail.find("rt-SECRET") == std::string::npos);
        auto lease = store.lock(100ms, ec);
        CHECK_FALSE(lease);
        CHECK(ec);
        CHECK_FALSE(document_exists());
    }

    redis_options o = tls_options();
    o.key = key;
    tokmgr::redis_storage store(o);
    std::error_code ec;
    auto lease = store.lock(1s, ec);
    REQUIRE_MESSAGE(lease, store.last_error().message());
    CHECK_FALSE(store.load(ec));
    CHECK(store.store_if_and_release(set, 0, lease, ec));
    CHECK_FALSE(lease);
    auto loaded = store.load(ec);
    REQUIRE(loaded);
    CHECK(loaded->refresh_token.reveal() == "rt-SECRET-1");
    CHECK(document_exists());
}

TEST_CASE("redis_storage over TLS with a client certificate, where the server requires one; a waiting lock() wakes on the channel") {
    redis_options o = tls_options(tls_clients_dir);
    o.key = fresh_key();
    o.tls_cert_file = tls_clients_dir + "/pki/client.pem";
    o.tls_key_file = tls_clients_dir + "/pki/client.key";
    tokmgr::redis_storage holder(o), waiter(o);
    std::error_code ec;
    auto held = holder.lock(1s, ec);
    REQUIRE_MESSAGE(held, holder.last_error().message());
    long long subscribed = -1;
    std::thread releaser([&] {
        std::this_thread::sleep_for(300ms);
        connection check(o);
        subscribed = must(check, {"PUBSUB", "NUMSUB", waiter.channel()}).elements.at(1).integer;
        held.release();
    });
    const auto started = std::chrono::steady_clock::now();
    auto second = waiter.lock(5s, ec);
    const auto waited = std::chrono::steady_clock::now() - started;
    releaser.join();
    CHECK_MESSAGE(second, waiter.last_error().message());
    CHECK(subscribed == 1);  // the waiter listened on the channel, over TLS
    CHECK(waited >= 250ms);
    CHECK(waited < 2s);
}
