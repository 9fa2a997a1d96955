// redis_storage against a real redis-server (started by the ctest fixture,
// its port in TOKMGR_TEST_REDIS_DIR/port): what is stored, the lease between
// objects, threads and processes, its expiry, the fenced writes, and the
// failures — values tokmgr did not write, wrong AUTH, an unreachable server,
// a server that answers garbage — and the coordinating-store scenarios of the
// core suite with redis_storage.
#include <doctest/doctest.h>

#include <tokmgr/concepts.hpp>
#include <tokmgr/storage/redis.hpp>

#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <chrono>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

using namespace std::chrono_literals;
using tokmgr::errc;
using tokmgr::redis_options;
using tokmgr::redis_storage;

static_assert(tokmgr::is_coordinating_storage_v<redis_storage>);

namespace {

int redis_port() {
    static const int port = [] {
        std::ifstream in(std::string(TOKMGR_TEST_REDIS_DIR) + "/port");
        int p = 0;
        in >> p;
        return p;
    }();
    REQUIRE_MESSAGE(port > 0, "the redis fixture did not write its port");
    return port;
}

/// A key of its own for each test, so tests never see each other's data.
std::string fresh_key() {
    static std::atomic<int> n{0};
    return "tokmgr-test:" + std::to_string(::getpid()) + ":" + std::to_string(++n);
}

/// The names in Redis of an account's key: its document, lease and channel.
std::string doc(const std::string& key) { return "{" + key + "}"; }
std::string lease_of(const std::string& key) { return doc(key) + ":lease"; }
std::string channel_of(const std::string& key) { return doc(key) + ":changed"; }

redis_options options_for(const std::string& key) {
    redis_options o;
    o.port = redis_port();
    o.key = key;
    o.lease_ttl = 5s;
    return o;
}

/// A plain connection for arranging and inspecting the server.
class raw_redis {
public:
    explicit raw_redis(int port = redis_port()) : c_(options(port)) {}
    /// The reply as text; "(nil)" for a null, an array flattened one level
    /// (what PUBSUB NUMSUB and the like answer).
    std::string run(std::vector<std::string> args) {
        std::vector<std::string_view> views(args.begin(), args.end());
        tokmgr::detail::resp::reply r;
        tokmgr::error_info failed;
        REQUIRE_MESSAGE(c_.command(views, r, failed), failed.detail);
        return text_of(r);
    }

private:
    static redis_options options(int port) {
        redis_options o;
        o.port = port;
        return o;
    }
    static std::string text_of(const tokmgr::detail::resp::reply& r) {
        using tokmgr::detail::resp::reply_type;
        switch (r.type) {
        case reply_type::null: return "(nil)";
        case reply_type::integer: return std::to_string(r.integer);
        case reply_type::array:
        case reply_type::push: {
            std::string out;
            for (std::size_t i = 0; i < r.elements.size(); ++i) out += (i ? " " : "") + text_of(r.elements[i]);
            return out;
        }
        default: return r.text;
        }
    }

    tokmgr::detail::redis::connection c_;
};

using test::set_of;

sockaddr_in loopback(int port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    return addr;
}

/// A listening socket on a free loopback port whose thread hands each
/// connection to `on_client` (which closes it) until it is destroyed.
class loopback_acceptor {
public:
    explicit loopback_acceptor(std::function<void(int)> on_client) : on_client_(std::move(on_client)) {
        fd_ = test::listen_on_loopback(port_);
        thread_ = std::thread([this] {
            for (;;) {
                const int client = ::accept(fd_, nullptr, nullptr);
                if (client < 0 || stop_) {
                    if (client >= 0) ::close(client);
                    return;
                }
                on_client_(client);
            }
        });
    }
    ~loopback_acceptor() {
        stop_ = true;
        ::shutdown(fd_, SHUT_RDWR);
        // Wake accept() with a connection of our own.
        const int poke = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr = loopback(port_);
        (void)::connect(poke, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
        ::close(poke);
        thread_.join();
        ::close(fd_);
    }
    int port() const { return port_; }
    bool stopping() const { return stop_; }

private:
    std::function<void(int)> on_client_;
    int fd_ = -1;
    int port_ = 0;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

/// A one-connection TCP server on a loopback port that answers each read
/// with `answer` (or stays silent when it is empty).
class fake_server {
public:
    explicit fake_server(std::string answer)
        : answer_(std::move(answer)), acceptor_([this](int client) {
              char buffer[4096];
              while (!acceptor_.stopping() && ::recv(client, buffer, sizeof buffer, 0) > 0)
                  if (!answer_.empty()) (void)!::send(client, answer_.data(), answer_.size(), MSG_NOSIGNAL);
              ::close(client);
          }) {}
    int port() const { return acceptor_.port(); }

private:
    std::string answer_;
    loopback_acceptor acceptor_;
};

bool same(const tokmgr::token_set& a, const tokmgr::token_set& b) {
    return a.jwt.reveal() == b.jwt.reveal() && a.refresh_token.reveal() == b.refresh_token.reveal() &&
           a.generation == b.generation && a.refresh_token_spent == b.refresh_token_spent &&
           a.received_at == b.received_at && a.jwt_lifetime == b.jwt_lifetime &&
           a.refresh_lifetime == b.refresh_lifetime;
}

}  // namespace

TEST_CASE("round trip: the key holds exactly the token-set document; an empty key loads as nothing") {
    const auto key = fresh_key();
    redis_storage store(options_for(key));
    std::error_code ec;
    CHECK_FALSE(store.load(ec));
    CHECK_FALSE(ec);
    CHECK(store.store_if(set_of(1), 0, ec));
    CHECK_FALSE(ec);
    auto loaded = store.load(ec);
    REQUIRE(loaded);
    CHECK(same(*loaded, set_of(1)));
    raw_redis raw;
    CHECK(raw.run({"GET", doc(key)}) == std::string(tokmgr::encode_token_set(set_of(1)).reveal()));
    // A spent mark is stored without its refresh token.
    CHECK(store.store_if(set_of(2, true), 1, ec));
    CHECK(raw.run({"GET", doc(key)}).find("rt-SECRET") == std::string::npos);
    CHECK(store.load()->refresh_token_spent);
    // The throwing overloads agree.
    CHECK(store.store_if(set_of(3), 2));
    CHECK(store.load()->generation == 3);
    raw.run({"DEL", doc(key)});
}

TEST_CASE("store_if is a compare-and-swap on the stored generation") {
    const auto key = fresh_key();
    redis_storage a(options_for(key)), b(options_for(key));
    std::error_code ec;
    CHECK(a.store_if(set_of(1), 0, ec));
    CHECK_FALSE(b.store_if(set_of(5), 0, ec));  // something is stored: 0 no longer matches
    CHECK_FALSE(ec);
    CHECK(b.store_if(set_of(2), 1, ec));
    CHECK_FALSE(a.store_if(set_of(2, false, "a"), 1, ec));  // a still thinks generation 1: refused, no error
    CHECK_FALSE(ec);
    CHECK(a.load(ec)->generation == 2);
    // The generation only grows.
    CHECK_FALSE(a.store_if(set_of(2), 2, ec));
    CHECK(ec == errc::storage_failed);
    // The same write repeated (its answer was lost) counts as written.
    CHECK(a.store_if(set_of(3), 2, ec));
    CHECK(a.store_if(set_of(3), 2, ec));
    CHECK_FALSE(ec);
    // store() writes whatever is there.
    a.store(set_of(9), ec);
    CHECK_FALSE(ec);
    CHECK(b.load(ec)->generation == 9);
    raw_redis().run({"DEL", doc(key)});
}

TEST_CASE("the lease excludes other objects, and its release wakes a waiter at once") {
    const auto key = fresh_key();
    redis_storage a(options_for(key)), b(options_for(key));
    std::error_code ec;
    auto held = a.lock(0ms, ec);
    REQUIRE(held);
    CHECK(a.holds(held, ec));
    const auto started = std::chrono::steady_clock::now();
    auto refused = b.lock(100ms, ec);
    const auto waited = std::chrono::steady_clock::now() - started;
    CHECK_FALSE(refused);
    CHECK(ec == errc::lease_timeout);
    CHECK(waited >= 100ms);
    CHECK(waited < 1s);
    CHECK(b.last_error().detail.find(lease_of(key)) != std::string::npos);

    // b waits; a releases after 300 ms; the PUBLISH wakes b well before its
    // next poll would (by then the poll step is 50 ms).
    std::atomic<bool> released{false};
    std::chrono::steady_clock::time_point released_at;
    std::string subscribers;
    std::thread holder([&] {
        std::this_thread::sleep_for(300ms);
        subscribers = raw_redis().run({"PUBSUB", "NUMSUB", channel_of(key)});
        released_at = std::chrono::steady_clock::now();
        released = true;
        held.release();
    });
    auto taken = b.lock(5s, ec);
    const auto got_at = std::chrono::steady_clock::now();
    holder.join();
    REQUIRE(taken);
    CHECK(released);
    CHECK(subscribers == channel_of(key) + " 1");  // b listened for the release while it waited
    CHECK(got_at - released_at < 500ms);
    CHECK_FALSE(a.holds(held, ec));
    CHECK(b.holds(taken, ec));
    raw_redis().run({"DEL", lease_of(key)});
}

TEST_CASE("a lock that waited unsubscribes when its wait ends, whether it got the lease or timed out") {
    const auto key = fresh_key();
    const std::string channel = channel_of(key);
    redis_storage holder(options_for(key));
    auto held = holder.lock(0ms);
    REQUIRE(held);
    std::error_code ec;
    // Objects that live on after their wait, as a manager's store does.
    std::vector<std::unique_ptr<redis_storage>> waiters;
    for (int i = 0; i < 3; ++i) {
        waiters.push_back(std::make_unique<redis_storage>(options_for(key)));
        CHECK_FALSE(waiters.back()->lock(30ms, ec));
        CHECK(ec == errc::lease_timeout);
    }
    CHECK(raw_redis().run({"PUBSUB", "NUMSUB", channel}) == channel + " 0");

    std::thread releaser([&] {
        std::this_thread::sleep_for(100ms);
        held.release();
    });
    auto taken = waiters.front()->lock(5s, ec);
    releaser.join();
    REQUIRE(taken);
    CHECK(raw_redis().run({"PUBSUB", "NUMSUB", channel}) == channel + " 0");
    taken.release();
}

TEST_CASE("the lease between threads: never two holders at once") {
    const auto key = fresh_key();
    std::atomic<int> inside{0}, overlaps{0}, taken{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 6; ++t) {
        threads.emplace_back([&] {
            redis_storage store(options_for(key));
            for (int i = 0; i < 15; ++i) {
                std::error_code ec;
                auto lease = store.lock(10s, ec);
                if (!lease) continue;
                ++taken;
                if (++inside != 1) ++overlaps;
                std::this_thread::sleep_for(1ms);
                --inside;
            }
        });
    }
    for (auto& t : threads) t.join();
    CHECK(taken == 90);
    CHECK(overlaps == 0);
}

TEST_CASE("the lease between processes: never two holders at once") {
    const auto key = fresh_key();
    const std::string counter = key + ":inside";
    std::vector<pid_t> children;
    for (int p = 0; p < 4; ++p) {
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            // In the child: its own connections; exit status 1 on an overlap.
            int status = 0;
            redis_storage store(options_for(key));
            tokmgr::detail::redis::connection c(options_for(key));
            tokmgr::detail::resp::reply r;
            tokmgr::error_info failed;
            for (int i = 0; i < 15; ++i) {
                std::error_code ec;
                auto lease = store.lock(20s, ec);
                if (!lease) {
                    status = 2;
                    break;
                }
                if (!c.command({"INCR", counter}, r, failed) || r.integer != 1) status = 1;
                ::usleep(1000);
                if (!c.command({"DECR", counter}, r, failed)) status = 1;
            }
            ::_exit(status);
        }
        children.push_back(pid);
    }
    for (pid_t pid : children) {
        int status = -1;
        ::waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
    }
    raw_redis().run({"DEL", counter});
}

TEST_CASE("a lease that lapsed: holds() is false, its release spares the next holder, and it cannot overwrite a newer set") {
    const auto key = fresh_key();
    auto short_lease = options_for(key);
    short_lease.lease_ttl = 200ms;
    redis_storage a(short_lease), b(options_for(key));
    std::error_code ec;
    CHECK(a.store_if(set_of(1), 0, ec));
    auto lapsed = a.lock(0ms, ec);
    REQUIRE(lapsed);
    const auto seen = a.load(ec)->generation;  // what a saw under its lease
    std::this_thread::sleep_for(350ms);         // a is "paused" past its lease
    CHECK_FALSE(a.holds(lapsed, ec));           // a holder checks before it sends: it would send nothing
    CHECK_FALSE(ec);
    auto next = b.lock(0ms, ec);
    REQUIRE(next);
    // a's spent mark is fenced by its lease too: refused, though the generation matches.
    CHECK_FALSE(a.store_if(set_of(2, true, "a"), seen, ec));
    CHECK_FALSE(ec);
    CHECK(b.load(ec)->generation == 1);
    CHECK(b.store_if(set_of(2, true), 1, ec));  // b's spent mark, then its new pair
    CHECK(b.store_if(set_of(3), 2, ec));
    // a wakes up and writes what it had planned: refused, b's set stays.
    CHECK_FALSE(a.store_if(set_of(2, true, "a"), seen, ec));
    CHECK_FALSE(ec);
    CHECK(a.load(ec)->generation == 3);
    lapsed.release();  // compare-and-delete: b's lease survives
    CHECK(b.holds(next, ec));
    next.release();
    raw_redis().run({"DEL", doc(key)});
}

TEST_CASE("a list at the key: storage_foreign, what to do, and the list untouched") {
    const auto key = fresh_key();
    raw_redis raw;
    raw.run({"RPUSH", doc(key), "somebody else's"});
    redis_storage store(options_for(key));
    std::error_code ec;
    CHECK_FALSE(store.load(ec));
    CHECK(ec == errc::storage_foreign);
    CHECK(store.last_error().detail.find("holds a list") != std::string::npos);
    CHECK(store.last_error().detail.find("DEL " + doc(key)) != std::string::npos);
    CHECK_FALSE(store.store_if(set_of(1), 0, ec));
    CHECK(ec == errc::storage_foreign);
    store.store(set_of(1), ec);
    CHECK(ec == errc::storage_foreign);
    CHECK(raw.run({"LLEN", doc(key)}) == "1");
    CHECK_THROWS_AS(store.load(), tokmgr::error);
    {
        // The same through the read the lease brings.
        auto held = store.lock(0ms, ec);
        REQUIRE(held);
        CHECK_FALSE(store.load(ec));
        CHECK(ec == errc::storage_foreign);
        CHECK(store.last_error().detail.find("holds a list") != std::string::npos);
    }
    raw.run({"DEL", doc(key)});
}

TEST_CASE("garbage or a later version at the key: storage_foreign saying what to do, and never overwritten") {
    const auto key = fresh_key();
    raw_redis raw;
    redis_storage store(options_for(key));
    std::error_code ec;
    for (std::string value : {std::string("not json at all"), std::string("{\"format\":\"someone-else\"}"),
                              std::string("[1,2,3]")}) {
        raw.run({"SET", doc(key), value});
        CHECK_FALSE(store.load(ec));
        CHECK(ec == errc::storage_foreign);
        CHECK(store.last_error().detail.find("never overwrites") != std::string::npos);
        CHECK_FALSE(store.store_if(set_of(1), 0, ec));
        CHECK(ec == errc::storage_foreign);
        CHECK(raw.run({"GET", doc(key)}) == value);
    }
    const std::string later = R"({"format":"tokmgr-token-set","version":2,"generation":4})";
    raw.run({"SET", doc(key), later});
    CHECK_FALSE(store.load(ec));
    CHECK(ec == errc::storage_foreign);
    CHECK(store.last_error().detail.find("newer") != std::string::npos);
    CHECK_FALSE(store.store_if(set_of(5), 4, ec));  // even with the "right" generation
    CHECK(ec == errc::storage_failed);
    CHECK(raw.run({"GET", doc(key)}) == later);
    raw.run({"DEL", doc(key)});
}

TEST_CASE("AUTH: an ACL user with the right password works; a wrong one is a clear error that never shows it") {
    const auto key = fresh_key();
    raw_redis raw;
    const std::string user = "tokmgr-test-" + std::to_string(::getpid());
    raw.run({"ACL", "SETUSER", user, "on", ">right-password-1234", "~*", "&*", "+@all"});
    auto o = options_for(key);
    o.user = user;
    o.password = tokmgr::secret("right-password-1234");
    redis_storage good(o);
    std::error_code ec;
    CHECK(good.store_if(set_of(1), 0, ec));
    CHECK_FALSE(ec);

    o.password = tokmgr::secret("wrong-password-5678");
    redis_storage bad(o);
    CHECK_FALSE(bad.load(ec));
    CHECK(ec == errc::storage_unreachable);
    CHECK(bad.last_error().detail.find("refused the password") != std::string::npos);
    CHECK(bad.last_error().detail.find("wrong-password-5678") == std::string::npos);
    CHECK_FALSE(bad.lock(0ms, ec));
    CHECK(ec == errc::storage_unreachable);
    raw.run({"ACL", "DELUSER", user});
    raw.run({"DEL", doc(key)});
}

TEST_CASE("a credential provider: asked for each new connection, so a rotated password is followed; a refused one is "
          "asked once more; its failures are clear and never show a password") {
    const auto key = fresh_key();
    raw_redis raw;
    const std::string user = "tokmgr-rotating-" + std::to_string(::getpid());
    raw.run({"ACL", "SETUSER", user, "on", ">first-password-1234", "~*", "&*", "+@all"});
    std::mutex m;
    std::vector<std::string> answers{"first-password-1234"};  // the last one repeats
    int calls = 0;
    auto o = options_for(key);
    o.credential_provider = [&] {
        std::lock_guard<std::mutex> lock(m);
        const std::string& password = answers[std::min<std::size_t>(calls, answers.size() - 1)];
        ++calls;
        return tokmgr::redis_credential{user, tokmgr::secret(password)};
    };
    const auto rotate = [&](const std::string& next, std::vector<std::string> from_now) {
        raw.run({"ACL", "SETUSER", user, "resetpass", ">" + next});
        raw.run({"CLIENT", "KILL", "USER", user});  // as a provider's rotation or a token's end of life does
        std::lock_guard<std::mutex> lock(m);
        answers.insert(answers.end(), from_now.begin(), from_now.end());
    };
    redis_storage store(o);
    std::error_code ec;
    REQUIRE(store.store_if(set_of(1), 0, ec));
    CHECK(calls == 1);
    CHECK(store.load(ec));
    CHECK(calls == 1);  // the connection is kept: no new credential

    SUBCASE("the server closes the connection after a rotation: the next call reconnects with the new password") {
        rotate("second-password-5678", {"second-password-5678"});
        CHECK(store.load(ec));
        CHECK_FALSE(ec);
        CHECK(calls == 2);
        CHECK(store.lock(0ms, ec));  // a lease and its release, on the same connection
        CHECK(calls == 2);
    }
    SUBCASE("a credential stale by the time AUTH goes out: refused, asked once more, then accepted") {
        rotate("third-password-9012", {"first-password-1234", "third-password-9012"});
        CHECK(store.load(ec));
        CHECK_FALSE(ec);
        CHECK(calls == 3);
    }
    SUBCASE("refused twice: a failure naming the provider, never the password") {
        rotate("fourth-password-3456", {"wrong-password-0000"});
        CHECK_FALSE(store.load(ec));
        CHECK(ec == errc::storage_failed);  // not unreachable: the GET on the killed connection may have run
        CHECK(calls == 3);
        const std::string said = store.last_error().detail;
        CHECK(said.find("refused the password; check the credential provider") != std::string::npos);
        CHECK(said.find("wrong-password-0000") == std::string::npos);
        CHECK(said.find("fourth-password-3456") == std::string::npos);
    }
    SUBCASE("a provider that throws: storage_unreachable with what it said") {
        auto failing = options_for(key);
        failing.credential_provider = []() -> tokmgr::redis_credential {
            throw std::runtime_error("the IAM endpoint timed out");
        };
        redis_storage s(failing);
        CHECK_FALSE(s.load(ec));
        CHECK(ec == errc::storage_unreachable);
        CHECK(s.last_error().detail.find("credential provider for redis://") != std::string::npos);
        CHECK(s.last_error().detail.find("the IAM endpoint timed out") != std::string::npos);
    }
    SUBCASE("a provider and a password both set: refused before anything is sent") {
        auto both = o;
        both.password = tokmgr::secret("first-password-1234");
        redis_storage s(both);
        const int before = calls;
        CHECK_FALSE(s.load(ec));
        CHECK(ec == errc::storage_unreachable);
        CHECK(s.last_error().detail.find("set both credential_provider and user/password") != std::string::npos);
        CHECK(calls == before);
    }
    raw.run({"ACL", "DELUSER", user});
    raw.run({"DEL", doc(key)});
}

TEST_CASE("Redis unreachable: storage_unreachable at once, naming the address") {
    auto o = options_for(fresh_key());
    {
        // A port nobody listens on: bound, then freed.
        fake_server gone("");
        o.port = gone.port();
    }
    redis_storage store(o);
    std::error_code ec;
    const auto started = std::chrono::steady_clock::now();
    CHECK_FALSE(store.load(ec));
    CHECK(ec == errc::storage_unreachable);
    CHECK(store.last_error().detail.find("cannot connect to Redis at redis://127.0.0.1:" + std::to_string(o.port) + "/") != std::string::npos);
    CHECK_FALSE(store.lock(5s, ec));  // no waiting for a lease nobody can give
    CHECK(ec == errc::storage_unreachable);
    CHECK_FALSE(store.store_if(set_of(1), 0, ec));
    CHECK(ec == errc::storage_unreachable);
    CHECK(std::chrono::steady_clock::now() - started < 2s);
}

namespace {

/// Reads one RESP command (an array of bulk strings) from `fd` into its
/// arguments; empty when the connection closed first.
std::vector<std::string> read_command(int fd, std::string& buffer) {
    for (;;) {
        tokmgr::detail::resp::reader reader;
        tokmgr::error_info failed;
        tokmgr::detail::resp::reply command;
        if (reader.feed(buffer, failed) && reader.next(command, failed)) {
            // One command at a time from these clients: whatever is buffered is it.
            buffer.clear();
            std::vector<std::string> args;
            for (auto& a : command.elements) args.push_back(a.text);
            return args;
        }
        char chunk[4096];
        const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
        if (n <= 0) return {};
        buffer.append(chunk, static_cast<std::size_t>(n));
    }
}

/// A loopback port where nothing listens.
int closed_port() {
    int port = 0;
    const int fd = test::listen_on_loopback(port);
    ::close(fd);
    return port;
}

}  // namespace

TEST_CASE("a write whose answer was lost is never reported as not sent, though its resending is redirected to a node that cannot be reached") {
    const std::string key = fresh_key();
    redis_options named;
    named.key = key;
    const auto slot = tokmgr::detail::redis::cluster::key_slot(named.document_name());
    const int dead = closed_port();
    std::atomic<int> connections{0};
    std::atomic<bool> write_executed{false};
    loopback_acceptor server([&](int client) {
        const int n = ++connections;
        std::string buffer;
        for (auto args = read_command(client, buffer); !args.empty(); args = read_command(client, buffer)) {
            std::string answer;
            if (args[0] == "GET") answer = "$-1\r\n";
            else if (args[0] == "CLUSTER") {
                const std::string nodes = "abc 127.0.0.1:" + std::to_string(dead) + "@1 master - 0 0 1 connected 0-16383\n";
                answer = "$" + std::to_string(nodes.size()) + "\r\n" + nodes + "\r\n";
            } else if (args[0] == "EVAL" && n == 1) {
                write_executed = true;  // carried out; its answer is lost with the connection
                break;
            } else if (args[0] == "EVAL") answer = "-MOVED " + std::to_string(slot) + " 127.0.0.1:" + std::to_string(dead) + "\r\n";
            else answer = "+OK\r\n";
            (void)!::send(client, answer.data(), answer.size(), MSG_NOSIGNAL);
        }
        ::close(client);
    });
    redis_options o = named;
    o.port = server.port();
    o.command_timeout = 2s;
    redis_storage store(o);
    std::error_code ec;
    CHECK_FALSE(store.load(ec));  // the connection is kept
    REQUIRE_FALSE(ec);
    CHECK_FALSE(store.store_if(set_of(1), 0, ec));
    CHECK(write_executed);
    CHECK(ec == errc::storage_failed);  // may have landed: never storage_unreachable
}

TEST_CASE("a redirection is followed only to a node the cluster lists: a server that is not a cluster node sends the store nowhere") {
    const std::string key = fresh_key();
    redis_options named;
    named.key = key;
    const auto slot = tokmgr::detail::redis::cluster::key_slot(named.document_name());
    std::atomic<int> elsewhere{0};
    loopback_acceptor other([&](int client) {
        ++elsewhere;
        ::close(client);
    });
    loopback_acceptor server([&](int client) {
        std::string buffer;
        for (auto args = read_command(client, buffer); !args.empty(); args = read_command(client, buffer)) {
            std::string answer = "-ERR This instance has cluster support disabled\r\n";
            if (args[0] == "AUTH") answer = "+OK\r\n";
            else if (args[0] == "EVAL" || args[0] == "GET")
                answer = "-MOVED " + std::to_string(slot) + " 127.0.0.1:" + std::to_string(other.port()) + "\r\n";
            (void)!::send(client, answer.data(), answer.size(), MSG_NOSIGNAL);
        }
        ::close(client);
    });
    redis_options o = named;
    o.port = server.port();
    o.password = tokmgr::secret("the-redis-password");
    redis_storage store(o);
    std::error_code ec;
    CHECK_FALSE(store.store_if(set_of(1), 0, ec));
    CHECK(ec == errc::storage_failed);
    CHECK(store.last_error().detail.find("does not list") != std::string::npos);
    CHECK(store.last_error().detail.find("the-redis-password") == std::string::npos);
    CHECK_FALSE(store.load(ec));
    CHECK(ec == errc::storage_failed);
    CHECK(elsewhere == 0);  // neither the password nor the token set went there
}

TEST_CASE("a server that answers garbage, asks for a password, or does not answer") {
    std::error_code ec;
    SUBCASE("garbage RESP") {
        fake_server garbage("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        auto o = options_for(fresh_key());
        o.port = garbage.port();
        redis_storage store(o);
        CHECK_FALSE(store.load(ec));
        CHECK(ec == errc::storage_failed);
        CHECK(store.last_error().detail.find("not the Redis protocol") != std::string::npos);
        CHECK_FALSE(store.store_if(set_of(1), 0, ec));
        CHECK(ec == errc::storage_failed);
    }
    SUBCASE("NOAUTH") {
        fake_server noauth("-NOAUTH Authentication required.\r\n");
        auto o = options_for(fresh_key());
        o.port = noauth.port();
        redis_storage store(o);
        CHECK_FALSE(store.load(ec));
        CHECK(ec == errc::storage_failed);
        CHECK(store.last_error().detail.find("TOKMGR_REDIS_PASSWORD") != std::string::npos);
    }
    SUBCASE("silence: the command timeout") {
        fake_server silent("");
        auto o = options_for(fresh_key());
        o.port = silent.port();
        o.command_timeout = 200ms;
        redis_storage store(o);
        const auto started = std::chrono::steady_clock::now();
        CHECK_FALSE(store.load(ec));
        CHECK(ec == errc::storage_failed);
        CHECK(store.last_error().detail.find("did not answer within command_timeout (200 ms)") != std::string::npos);
        CHECK(std::chrono::steady_clock::now() - started < 2s);
    }
}

TEST_CASE("a dropped connection is reopened on the next call") {
    const auto key = fresh_key();
    redis_storage store(options_for(key));
    std::error_code ec;
    CHECK(store.store_if(set_of(1), 0, ec));
    raw_redis().run({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"});
    auto loaded = store.load(ec);
    CHECK_FALSE(ec);
    REQUIRE(loaded);
    CHECK(loaded->generation == 1);
    raw_redis().run({"DEL", doc(key)});
}

TEST_CASE("a Unix socket and a database number") {
    const auto key = fresh_key();
    std::error_code ec;
    auto o = redis_options::from_url("redis+unix://" + std::string(TOKMGR_TEST_REDIS_DIR) + "/redis.sock?db=3&key=" + key,
                                     ec);
    REQUIRE_FALSE(ec);
    redis_storage store(o);
    CHECK(store.store_if(set_of(1), 0, ec));
    CHECK_FALSE(ec);
    raw_redis raw;
    CHECK(raw.run({"EXISTS", doc(key)}) == "0");  // database 0 has nothing
    raw.run({"SELECT", "3"});
    CHECK(raw.run({"EXISTS", doc(key)}) == "1");
    raw.run({"DEL", doc(key)});
}

TEST_CASE("WAIT for replicas after the spent mark: with none to acknowledge it, nothing may be sent") {
    const auto key = fresh_key();
    auto o = options_for(key);
    o.wait_replicas = 1;
    o.wait_timeout = 100ms;
    redis_storage store(o);
    std::error_code ec;
    CHECK(store.store_if(set_of(1), 0, ec));  // a pair: no WAIT
    CHECK_FALSE(ec);
    CHECK_FALSE(store.store_if(set_of(2, true), 1, ec));
    CHECK(ec == errc::storage_failed);
    CHECK(store.last_error().detail.find("reached 0 of 1 replicas") != std::string::npos);
    raw_redis().run({"DEL", doc(key)});
}

TEST_CASE("WAIT with a replica: the spent mark is acknowledged, and the replica holds it before anything is sent") {
    // A replica of the fixture's Redis, for this test only.
    int replica_port = 0;
    {
        fake_server probe("");  // a free port: bound, then freed
        replica_port = probe.port();
    }
    const std::string port_text = std::to_string(replica_port), primary = std::to_string(redis_port());
    const std::string dir = TOKMGR_TEST_REDIS_DIR, log = dir + "/replica.log";
    const pid_t replica = ::fork();
    REQUIRE(replica >= 0);
    if (replica == 0) {
        ::execl(TOKMGR_TEST_REDIS_SERVER, TOKMGR_TEST_REDIS_SERVER, "--port", port_text.c_str(), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", dir.c_str(), "--logfile",
                log.c_str(), "--dbfilename", "replica.rdb", "--replicaof", "127.0.0.1", primary.c_str(),
                static_cast<char*>(nullptr));
        ::_exit(127);
    }
    struct stop_replica {
        pid_t pid;
        ~stop_replica() {
            ::kill(pid, SIGTERM);
            ::waitpid(pid, nullptr, 0);
        }
    } stop{replica};
    raw_redis raw;
    bool online = false;
    for (int i = 0; i < 200 && !online; ++i) {
        online = raw.run({"INFO", "replication"}).find("state=online") != std::string::npos;
        if (!online) std::this_thread::sleep_for(50ms);
    }
    REQUIRE_MESSAGE(online, "the replica did not come online");

    const auto key = fresh_key();
    auto o = options_for(key);
    o.wait_replicas = 1;
    o.wait_timeout = 2s;
    redis_storage store(o);
    std::error_code ec;
    CHECK(store.store_if(set_of(1), 0, ec));
    CHECK(store.store_if(set_of(2, true), 1, ec));
    CHECK_FALSE(ec);
    raw_redis replica_client(replica_port);
    CHECK(replica_client.run({"GET", doc(key)}).find("\"refresh_token_spent\":true") != std::string::npos);
    raw.run({"DEL", doc(key)});
}

TEST_CASE("redis URLs: host, port, database, key, credentials; errors never show the password") {
    std::error_code ec;
    auto o = redis_options::from_url("redis://cache.internal:6380/2/tokmgr:prod", ec);
    CHECK_FALSE(ec);
    CHECK(o.host == "cache.internal");
    CHECK(o.port == 6380);
    CHECK(o.database == 2);
    CHECK(o.key == "tokmgr:prod");
    CHECK(o.password.empty());
    o = redis_options::from_url("redis://:s3cret%40x@[::1]/k", ec);
    CHECK_FALSE(ec);
    CHECK(o.host == "::1");
    CHECK(o.port == 6379);
    CHECK(o.database == 0);
    CHECK(o.key == "k");
    CHECK(o.password.reveal() == "s3cret@x");
    o = redis_options::from_url("redis://svc:pw@h:1/k", ec);
    CHECK(o.user == "svc");
    CHECK(o.password.reveal() == "pw");
    CHECK(o.where() == "redis://h:1/0/k");
    o = redis_options::from_url("redis://acl-user@h/k", ec);  // the password from elsewhere
    CHECK_FALSE(ec);
    CHECK(o.user == "acl-user");
    CHECK(o.password.empty());
    for (const char* bad : {"http://h/k", "redis://h", "redis://h:99999/k", "redis://:hunter22@h/", "redis://h/x/y/z",
                            "redis://h/notanumber/k", "redis://h:/k", "redis+unix://relative?key=k",
                            "redis://:hunter22%zz@h/k"}) {
        CAPTURE(bad);
        tokmgr::error_info failed;
        redis_options::from_url(bad, failed);
        CHECK(failed.code == errc::invalid_configuration);
        CHECK(failed.detail.find("hunter22") == std::string::npos);
        redis_options::from_url(bad, ec);
        CHECK(ec == errc::invalid_configuration);
    }
    CHECK_THROWS_AS(redis_options::from_url("redis://h"), tokmgr::error);
    CHECK(redis_options::lease_ttl_for(50s) == 60s);
}

TEST_CASE("rediss URLs ask for TLS, with the same forms and defaults as redis://") {
    std::error_code ec;
    auto o = redis_options::from_url("rediss://svc:pw@cache.example.com/3/tokmgr:prod", ec);
    CHECK_FALSE(ec);
    CHECK(o.tls);
    CHECK(o.host == "cache.example.com");
    CHECK(o.port == 6379);
    CHECK(o.database == 3);
    CHECK(o.key == "tokmgr:prod");
    CHECK(o.user == "svc");
    CHECK(o.password.reveal() == "pw");
    CHECK(o.tls_ca_file.empty());  // the system's CAs unless told otherwise
    CHECK(o.where() == "rediss://cache.example.com:6379/3/tokmgr:prod");
    o = redis_options::from_url("rediss://[::1]:6380/k", ec);
    CHECK_FALSE(ec);
    CHECK(o.tls);
    CHECK(o.host == "::1");
    CHECK(o.port == 6380);
    CHECK_FALSE(redis_options::from_url("redis://h/k").tls);
    CHECK_FALSE(redis_options::from_url("redis+unix:///run/redis.sock?key=k").tls);
    for (const char* bad : {"rediss://h", "rediss://:hunter22@h/", "rediss://h:0/k", "redisss://h/k", "rediss:/h/k"}) {
        CAPTURE(bad);
        tokmgr::error_info failed;
        redis_options::from_url(bad, failed);
        CHECK(failed.code == errc::invalid_configuration);
        CHECK(failed.detail.find("hunter22") == std::string::npos);
    }
}

TEST_CASE("redis_storage with TLS on a plaintext port fails; it never falls back to plaintext") {
    redis_options o;
    o.port = redis_port();  // a plaintext server: connecting in plaintext would work, and must not happen
    o.key = fresh_key();
    o.tls = true;
    o.connect_timeout = 2s;
    redis_storage store(o);
    std::error_code ec;
    CHECK_FALSE(store.load(ec));
    CHECK(ec == errc::storage_unreachable);
    CHECK(store.last_error().detail.find("TLS") != std::string::npos);
    CHECK(store.last_error().detail.find("rediss://127.0.0.1:") != std::string::npos);
    CHECK(raw_redis().run({"EXISTS", doc(o.key)}) == "0");
}

// ---- the manager on redis_storage: the core's coordinating-store scenarios ----

namespace {

using redis_manager = tokmgr::token_manager<tokmgr::testing::fake_transport, tokmgr::testing::manual_clock,
                                            redis_storage, tokmgr::simdjson_json>;

std::unique_ptr<redis_manager> make_manager(test::harness& h, const std::string& key) {
    return std::make_unique<redis_manager>(h.transport,
                                           tokmgr::credentials{"user@example.com", tokmgr::secret(test::password)},
                                           h.options, h.clock, redis_storage(options_for(key)));
}

}  // namespace

TEST_CASE("four managers on one Redis key, called from four threads across ten expiries: one refresh each") {
    const auto key = fresh_key();
    test::harness h(60s);
    std::vector<std::unique_ptr<redis_manager>> managers;
    for (int i = 0; i < 4; ++i) managers.push_back(make_manager(h, key));
    const int failures = test::call_across_ten_expiries(h, managers, 20);
    const auto stats = h.server.stats();
    CHECK(failures == 0);
    CHECK(stats.refresh_tokens_reused == 0);
    CHECK(stats.refreshes_rejected == 0);
    CHECK(stats.logins == 1);
    CHECK(stats.refreshes == 9);  // one per expiry after the first login, not one per manager
    raw_redis().run({"DEL", doc(key)});
}

TEST_CASE("four managers whose store's password rotates twice mid-run (ACL SETUSER, then CLIENT KILL): the fleet keeps going") {
    const auto key = fresh_key();
    raw_redis raw;
    const std::string user = "tokmgr-fleet-rotating-" + std::to_string(::getpid());
    std::mutex m;
    std::string current = "fleet-password-0";
    raw.run({"ACL", "SETUSER", user, "on", ">" + current, "~*", "&*", "+@all"});
    const auto rotate = [&](const std::string& next) {
        raw.run({"ACL", "SETUSER", user, "resetpass", ">" + next});
        {
            std::lock_guard<std::mutex> lock(m);
            current = next;  // the provider's source (an IAM token cache, a secret manager) has the new one
        }
        raw.run({"CLIENT", "KILL", "USER", user});
    };
    test::harness h(60s);
    std::vector<std::unique_ptr<redis_manager>> managers;
    for (int i = 0; i < 4; ++i) {
        auto o = options_for(key);
        o.credential_provider = [&] {
            std::lock_guard<std::mutex> lock(m);
            return tokmgr::redis_credential{user, tokmgr::secret(current)};
        };
        managers.push_back(std::make_unique<redis_manager>(
            h.transport, tokmgr::credentials{"user@example.com", tokmgr::secret(test::password)}, h.options, h.clock,
            redis_storage(o)));
    }
    const auto step = tokmgr::schedule_for(60s, h.options, 0).hard;
    int failures = 0;
    for (int expiry = 0; expiry < 10; ++expiry) {
        if (expiry == 3) rotate("fleet-password-1");
        if (expiry == 7) rotate("fleet-password-2");
        for (auto& manager : managers) {
            for (int call = 0; call < 5; ++call) {
                std::error_code ec;
                if (manager->get_token(ec).empty() || ec) ++failures;
            }
        }
        h.clock.advance(step + 1s);
    }
    const auto stats = h.server.stats();
    CHECK(failures == 0);
    CHECK(stats.refresh_tokens_reused == 0);
    CHECK(stats.logins == 1);
    CHECK(stats.refreshes == 9);  // one per expiry, the rotations cost none
    raw.run({"DEL", doc(key)});
    raw.run({"ACL", "DELUSER", user});
}

TEST_CASE("a restarted manager on the key logs in after a refresh whose answer was lost, never reusing the token") {
    const auto key = fresh_key();
    test::harness h;
    {
        auto first = make_manager(h, key);
        first->get_token();
        h.clock.advance(29min);
        h.transport.fail_call(2, tokmgr::errc::timeout);  // the refresh reached the server; its answer did not come back
        std::error_code ec;
        first->get_token(ec);
        CHECK(ec == tokmgr::errc::timeout);
        auto stored = redis_storage(options_for(key)).load();
        REQUIRE(stored);
        CHECK(stored->refresh_token_spent);  // written before the request went out
    }
    auto restarted = make_manager(h, key);
    CHECK_FALSE(restarted->get_token().empty());
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(h.server.stats().logins == 2);  // the unknown outcome cost a login, not the family
    raw_redis().run({"DEL", doc(key)});
}

TEST_CASE("a lease held elsewhere past lease_wait: the manager keeps serving, then reports lease_timeout") {
    const auto key = fresh_key();
    test::harness h;
    redis_storage outsider_store(options_for(key));
    test::a_lease_held_elsewhere_past_lease_wait(
        h, [&] { return make_manager(h, key); }, [&] { return outsider_store.lock(0ms); });
    raw_redis().run({"DEL", doc(key), lease_of(key)});
}

TEST_CASE("garbage at the key: the manager logs in on its own (a private session), serves, and leaves the value alone") {
    const auto key = fresh_key();
    raw_redis raw;
    raw.run({"SET", doc(key), "somebody else's value"});
    test::harness h;
    auto manager = make_manager(h, key);
    std::error_code ec;
    CHECK_FALSE(manager->get_token(ec).empty());
    CHECK_FALSE(ec);
    h.clock.advance(29min);  // due: the next refresh is a private one, without a mark
    CHECK_FALSE(manager->get_token(ec).empty());
    CHECK_FALSE(ec);
    CHECK(h.server.stats().logins == 1);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(raw.run({"GET", doc(key)}) == "somebody else's value");
    CHECK(manager->last_error().detail.find("DEL " + doc(key)) != std::string::npos);
    raw.run({"DEL", doc(key)});
}

TEST_CASE("the store failing just before the hard threshold: no caller error past it (a private login, not a backoff)") {
    // Redis down for the whole fleet looks like this to each manager: its
    // refresh cannot start because the store cannot be used (here: a value
    // at the key that tokmgr did not write, the same storage_failed path as
    // an unreachable server, but under the manual clock). The failed attempt
    // sets a backoff; when that backoff reaches past the JWT's hard
    // threshold, callers in between must still get a JWT (the private
    // login), not the store's error: a JWT could be had from the server.
    const auto key = fresh_key();
    test::harness h;
    auto manager = make_manager(h, key);
    const std::string first(manager->get_token().reveal());
    raw_redis raw;
    raw.run({"SET", doc(key), "the store is unusable now"});
    const auto hard = tokmgr::schedule_for(30min, h.options, 0).hard;
    h.clock.advance(hard - 100ms);
    std::error_code ec;
    CHECK(manager->get_token(ec).reveal() == first);  // soft-expired, still served; the attempt failed
    CHECK_FALSE(ec);
    h.clock.advance(101ms);  // past the hard threshold, inside the failed attempt's backoff (at least 100 ms)
    const auto jwt = manager->get_token(ec);
    CHECK_FALSE(ec);
    CHECK_FALSE(jwt.empty());
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    raw.run({"DEL", doc(key)});
}

TEST_CASE("trust rule: a key deleted or evicted after another process refreshed costs a login, never the spent token") {
    // Two processes share the key; A refreshes (its old refresh token is
    // spent and the mark was in Redis); then the key is gone (DEL, an
    // eviction, a restart without persistence). B's next flight must not
    // send the token it adopted earlier: the server would revoke the family.
    const auto key = fresh_key();
    test::harness h;
    test::another_process_refreshes_then_the_store_loses_it(
        h, [&] { return make_manager(h, key); }, [&] { raw_redis().run({"DEL", doc(key)}); });
    CHECK(h.server.stats().logins == 2);  // B's login; A then adopts B's set
    raw_redis().run({"DEL", doc(key), lease_of(key)});
}

// ---- issue 21: names that share a Cluster slot, three round trips per refresh ----

namespace {

/// A TCP proxy in front of the fixture's Redis. It counts the commands
/// clients send through it — one command is one round trip: the store
/// sends the next only after the answer — and, for fault
/// injection, cuts a connection at chosen commands: before the command goes
/// out (nothing was executed), or after Redis answered it (it was executed,
/// its answer is lost).
class redis_proxy {
public:
    enum class cut { before, after };

    explicit redis_proxy(int target) : target_(target) {
        acceptor_.emplace([this](int client) {
            std::lock_guard<std::mutex> lock(mutex_);
            connections_.emplace_back([this, client] { relay(client); });
        });
    }
    ~redis_proxy() {
        acceptor_.reset();  // no connection arrives after this
        stop_ = true;
        for (auto& t : connections_) t.join();
    }
    int port() const { return acceptor_->port(); }
    std::size_t commands() const { return commands_; }
    /// Cuts the connection at commands first … first + count − 1 (1-based,
    /// counted since the proxy started).
    void cut_at(std::size_t first, std::size_t count, cut how) {
        cut_first_ = first;
        cut_count_ = count;
        cut_after_ = how == cut::after;
    }

private:
    /// The length of the first complete RESP command in `in`, or 0.
    static std::size_t complete(const std::string& in) {
        auto number = [&](std::size_t& at, long& out) {
            const std::size_t end = in.find("\r\n", at);
            if (end == std::string::npos) return false;
            out = std::stol(in.substr(at + 1, end - at - 1));
            at = end + 2;
            return true;
        };
        std::size_t at = 0;
        long n = 0;
        if (in.empty() || in[0] != '*' || !number(at, n)) return 0;
        for (long i = 0; i < n; ++i) {
            long len = 0;
            if (at >= in.size() || !number(at, len)) return 0;
            at += static_cast<std::size_t>(len) + 2;
            if (at > in.size()) return 0;
        }
        return at;
    }

    static bool send_all(int fd, const char* data, std::size_t size) {
        while (size > 0) {
            const ssize_t sent = ::send(fd, data, size, MSG_NOSIGNAL);
            if (sent <= 0) return false;
            data += sent;
            size -= static_cast<std::size_t>(sent);
        }
        return true;
    }

    void relay(int client) {
        const int server = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr = loopback(target_);
        if (::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
            ::close(server);
            ::close(client);
            return;
        }
        std::string pending;
        char buffer[65536];
        bool open = true;
        while (open && !stop_) {
            pollfd fds[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
            if (::poll(fds, 2, 50) <= 0) continue;
            if (fds[1].revents) {
                const ssize_t got = ::recv(server, buffer, sizeof buffer, 0);
                open = got > 0 && send_all(client, buffer, static_cast<std::size_t>(got));
            }
            if (open && fds[0].revents) {
                const ssize_t got = ::recv(client, buffer, sizeof buffer, 0);
                if (got <= 0) break;
                pending.append(buffer, static_cast<std::size_t>(got));
                for (std::size_t size = complete(pending); open && size > 0; size = complete(pending)) {
                    const std::size_t n = ++commands_;
                    const bool cut_here = n >= cut_first_ && n < cut_first_ + cut_count_;
                    if (cut_here && !cut_after_) {
                        open = false;
                        break;
                    }
                    open = send_all(server, pending.data(), size);
                    pending.erase(0, size);
                    if (cut_here && open) {
                        pollfd answer{server, POLLIN, 0};  // executed once Redis answers
                        if (::poll(&answer, 1, 2000) > 0) (void)::recv(server, buffer, sizeof buffer, 0);
                        open = false;
                    }
                }
            }
        }
        ::close(server);
        ::close(client);
    }

    int target_;
    std::atomic<bool> stop_{false};
    std::atomic<std::size_t> commands_{0};
    std::atomic<std::size_t> cut_first_{0}, cut_count_{0};
    std::atomic<bool> cut_after_{false};
    std::mutex mutex_;
    std::vector<std::thread> connections_;
    std::optional<loopback_acceptor> acceptor_;
};

redis_options through(const redis_proxy& proxy, const std::string& key) {
    redis_options o = options_for(key);
    o.port = proxy.port();
    return o;
}

std::unique_ptr<redis_manager> make_manager(test::harness& h, redis_options options) {
    return std::make_unique<redis_manager>(h.transport,
                                           tokmgr::credentials{"user@example.com", tokmgr::secret(test::password)},
                                           h.options, h.clock, redis_storage(std::move(options)));
}

/// A manager on `options` logs in, then refreshes past the soft threshold,
/// without an error; the store then holds generation 3.
void login_then_refresh(const redis_options& options) {
    test::harness h;
    auto manager = make_manager(h, options);
    std::error_code ec;
    CHECK_FALSE(manager->get_token(ec).empty());
    CHECK_FALSE(ec);
    h.clock.advance(test::past_soft(h.options));
    CHECK_FALSE(manager->get_token(ec).empty());
    CHECK_FALSE(ec);
    CHECK(h.server.stats().logins == 1);
    CHECK(h.server.stats().refreshes == 1);
    CHECK(redis_storage(options).load()->generation == 3);
}

}  // namespace

TEST_CASE("the document, the lease and the channel share one hash slot, whatever the key holds") {
    // A one-node Redis Cluster, for this test only: CLUSTER KEYSLOT answers
    // what Redis hashes, and its scripts refuse keys of two slots.
    int port = 0;
    for (int tries = 0; tries < 100 && (port == 0 || port > 55535); ++tries) {
        fake_server probe("");  // a free port, at most 55535: the cluster bus takes the port 10000 above
        port = probe.port();
    }
    REQUIRE(port <= 55535);
    const std::string port_text = std::to_string(port), dir = TOKMGR_TEST_REDIS_DIR;
    const std::string config = dir + "/cluster-" + port_text + ".conf", log = dir + "/cluster.log";
    const pid_t node = ::fork();
    REQUIRE(node >= 0);
    if (node == 0) {
        ::execl(TOKMGR_TEST_REDIS_SERVER, TOKMGR_TEST_REDIS_SERVER, "--port", port_text.c_str(), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", dir.c_str(), "--logfile",
                log.c_str(), "--cluster-enabled", "yes", "--cluster-config-file", config.c_str(),
                static_cast<char*>(nullptr));
        ::_exit(127);
    }
    struct stop_node {
        pid_t pid;
        std::string config;
        ~stop_node() {
            ::kill(pid, SIGTERM);
            ::waitpid(pid, nullptr, 0);
            std::remove(config.c_str());
        }
    } stop{node, config};
    redis_options node_options;
    node_options.port = port;
    tokmgr::detail::redis::connection c(node_options);
    tokmgr::error_info failed;
    for (int i = 0; i < 100 && !c.connect(failed); ++i) std::this_thread::sleep_for(50ms);
    REQUIRE_MESSAGE(c.is_open(), failed.detail);
    auto ask = [&](std::vector<std::string_view> args) {
        tokmgr::detail::resp::reply r;
        REQUIRE_MESSAGE(c.command(args, r, failed), failed.detail);
        return r.type == tokmgr::detail::resp::reply_type::integer ? std::to_string(r.integer) : r.text;
    };
    ask({"CLUSTER", "ADDSLOTSRANGE", "0", "16383"});
    bool ready = false;
    for (int i = 0; i < 200 && !ready; ++i) {
        ready = ask({"CLUSTER", "INFO"}).find("cluster_state:ok") != std::string::npos;
        if (!ready) std::this_thread::sleep_for(50ms);
    }
    REQUIRE_MESSAGE(ready, "the one-node cluster did not come up");

    // The old names "<key>" and "<key>:lease" did not share a slot.
    CHECK(ask({"CLUSTER", "KEYSLOT", "tokmgr:textual"}) != ask({"CLUSTER", "KEYSLOT", "tokmgr:textual:lease"}));
    for (std::string key : {"tokmgr:textual", "a{b}c", "{x}", "{}y", "x}y{z", "}{", "{", "tenant{42}:textual"}) {
        CAPTURE(key);
        redis_options o;
        o.key = key;
        const std::string slot = ask({"CLUSTER", "KEYSLOT", o.document_name()});
        if (key.front() == '}') {
            // An empty hash tag: Redis would hash each whole name. Refused.
            CHECK(ask({"CLUSTER", "KEYSLOT", o.lease_name()}) != slot);
            continue;
        }
        CHECK(ask({"CLUSTER", "KEYSLOT", o.lease_name()}) == slot);
        CHECK(ask({"CLUSTER", "KEYSLOT", o.channel_name()}) == slot);
    }

    // A manager on the cluster node: a login and a refresh, every script
    // accepted (they would fail with CROSSSLOT were their keys apart).
    auto o = options_for(fresh_key() + "{tenant}");
    o.port = port;
    login_then_refresh(o);
    std::error_code ec;

    // A key that begins with '}' is refused before anything is sent.
    o.key = "}odd";
    redis_storage odd(o);
    CHECK_FALSE(odd.load(ec));
    CHECK(ec == errc::storage_failed);
    CHECK(odd.last_error().detail.find("begins with '}'") != std::string::npos);
    CHECK_FALSE(odd.lock(0ms, ec));
    CHECK(ec == errc::storage_failed);
    redis_options::from_url("redis://h/%7Dodd", ec);
    CHECK(ec == errc::invalid_configuration);
}

TEST_CASE("migration: the names of an older tokmgr populated, the new ones empty: a login, never the old refresh token") {
    const auto key = fresh_key();
    test::harness h;
    // An older tokmgr stored its set at "<key>" (and held "<key>:lease"):
    // a live refresh token R the server issued, in a document of its own.
    {
        const auto elsewhere = fresh_key();
        make_manager(h, elsewhere)->get_token();
        raw_redis raw;
        const std::string old_document = raw.run({"GET", doc(elsewhere)});
        REQUIRE(old_document.find("refresh_token") != std::string::npos);
        raw.run({"SET", key, old_document});
        raw.run({"SET", key + ":lease", "an older process's lease token", "PX", "60000"});
        raw.run({"DEL", doc(elsewhere)});
    }
    const auto old_set = tokmgr::decode_token_set(raw_redis().run({"GET", key}));
    const std::string old_refresh_token(old_set.refresh_token.reveal());
    REQUIRE_FALSE(old_refresh_token.empty());

    auto manager = make_manager(h, key);
    std::error_code ec;
    CHECK_FALSE(manager->get_token(ec).empty());  // the old lease does not block the new names
    CHECK_FALSE(ec);
    h.clock.advance(test::past_soft(h.options));
    CHECK_FALSE(manager->get_token(ec).empty());  // and its own refresh, under its own names
    CHECK(h.server.stats().logins == 2);           // the older process's, and one on upgrade
    CHECK(h.server.stats().refreshes == 1);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    for (const auto& request : h.transport.requests()) CHECK(request.body.find(old_refresh_token) == std::string::npos);
    raw_redis raw;
    CHECK(raw.run({"GET", key}).find(old_refresh_token) != std::string::npos);  // the old names are left alone
    CHECK(raw.run({"EXISTS", key + ":lease"}) == "1");
    CHECK(redis_storage(options_for(key)).load()->generation == 3);
    raw.run({"DEL", key, key + ":lease", doc(key)});
}

TEST_CASE("three round trips per refresh: the lease brings the document, the fenced mark vouches for the lease, "
          "the new pair releases it") {
    const auto key = fresh_key();
    redis_proxy proxy(redis_port());
    test::harness h;
    auto manager = make_manager(h, through(proxy, key));
    CHECK(proxy.commands() == 1);  // the manager's first read, when it is built
    manager->get_token();
    CHECK(proxy.commands() == 3);  // a login: the lease with the read, the new pair with the release
    for (int cycle = 1; cycle <= 3; ++cycle) {
        CAPTURE(cycle);
        const std::size_t before = proxy.commands();
        h.clock.advance(test::past_soft(h.options));
        std::error_code ec;
        CHECK_FALSE(manager->get_token(ec).empty());
        CHECK_FALSE(ec);
        CHECK(proxy.commands() - before == 3);
        CHECK(h.server.stats().refreshes == static_cast<std::uint64_t>(cycle));
    }
    raw_redis raw;
    CHECK(raw.run({"EXISTS", lease_of(key)}) == "0");  // released with the last write
    CHECK(redis_storage(options_for(key)).load()->generation == 7);

    // The store on its own: what answers without a round trip, and what not.
    redis_storage store(through(proxy, key));
    std::error_code ec;
    auto count = [&, last = proxy.commands()]() mutable {
        const std::size_t now = proxy.commands(), sent = now - last;
        last = now;
        return sent;
    };
    CHECK(store.load(ec)->generation == 7);  // no lease before it: read from Redis
    CHECK(count() == 1);
    auto held = store.lock(0ms, ec);
    REQUIRE(held);
    auto current = store.load(ec);  // right after the lease: its read
    REQUIRE(current);
    CHECK(current->generation == 7);
    CHECK(count() == 1);
    CHECK(store.load(ec)->generation == 7);  // a second load reads Redis
    CHECK(count() == 1);
    CHECK(store.holds(held, ec));  // no mark before it: read from Redis
    CHECK(count() == 1);
    CHECK(store.store_if(set_of(8, true), 7, ec));
    CHECK(store.holds(held, ec));  // right after the fenced mark: its answer
    CHECK(count() == 1);
    CHECK(store.holds(held, ec));  // not right after it any more
    CHECK(count() == 1);
    CHECK(store.store_if(set_of(9, true), 8, ec));
    CHECK(store.load(ec)->generation == 9);  // anything in between, and holds reads Redis again
    CHECK(store.holds(held, ec));
    CHECK(count() == 3);
    CHECK(store.store_if_and_release(set_of(10), 9, held, ec));
    CHECK_FALSE(held);  // released by the write
    CHECK(count() == 1);
    CHECK(raw.run({"EXISTS", lease_of(key)}) == "0");
    raw.run({"DEL", doc(key)});
}

TEST_CASE("an ACL user with exactly the names and commands docs/fleet.md lists: logins, refreshes, waits") {
    const auto key = fresh_key();
    raw_redis raw;
    const std::string user = "tokmgr-fleet-" + std::to_string(::getpid());
    raw.run({"ACL", "SETUSER", user, "on", ">fleet-password-1234", "resetkeys", "~" + doc(key) + "*", "resetchannels",
             "&" + channel_of(key), "-@all", "+get", "+set", "+eval", "+subscribe", "+auth", "+select", "+type",
             "+del", "+publish", "+pttl", "+wait", "+asking", "+cluster|nodes"});
    auto o = options_for(key);
    o.user = user;
    o.password = tokmgr::secret("fleet-password-1234");
    login_then_refresh(o);
    std::error_code ec;
    // load and holds on their own (GET), and a lock that waits (SUBSCRIBE).
    redis_storage holder(o), waiter(o);
    CHECK(holder.load(ec)->generation == 3);
    auto held = holder.lock(0ms, ec);
    REQUIRE(held);
    CHECK(holder.holds(held, ec));
    std::string subscribers;
    std::thread releaser([&] {
        std::this_thread::sleep_for(150ms);
        subscribers = raw_redis().run({"PUBSUB", "NUMSUB", channel_of(key)});
        held.release();
    });
    auto taken = waiter.lock(5s, ec);
    releaser.join();
    CHECK(taken);
    CHECK(subscribers == channel_of(key) + " 1");  // the waiter's SUBSCRIBE was allowed
    CHECK_FALSE(ec);
    taken.release();
    raw.run({"ACL", "DELUSER", user});
    raw.run({"DEL", doc(key)});
}

TEST_CASE("the write that releases: a refused write keeps the lease, one that lands releases it") {
    const auto key = fresh_key();
    redis_storage store(options_for(key));
    std::error_code ec;
    CHECK(store.store_if(set_of(1), 0, ec));
    auto held = store.lock(0ms, ec);
    REQUIRE(held);
    CHECK_FALSE(store.store_if_and_release(set_of(3), 2, held, ec));  // generation 1 is stored, not 2
    CHECK_FALSE(ec);
    CHECK(held);
    CHECK(store.holds(held, ec));
    CHECK(store.store_if_and_release(set_of(2), 1, held, ec));
    CHECK_FALSE(held);
    CHECK(raw_redis().run({"EXISTS", lease_of(key)}) == "0");
    raw_redis().run({"DEL", doc(key)});
}

TEST_CASE("fault injection: the connection cut at the n-th command, for every n, before it went out or after it was "
          "executed, once or twice running: never a reuse, and both managers served after") {
    // Once: the store sends the command again on a new connection, so each
    // script meets its own earlier effect (the lease already its own, the
    // mark or pair already written, the lease already released). Twice: the
    // call fails, and the manager goes on without the store.
    // The scenario: two managers on one key through the proxy, three rounds
    // of a refresh and an adoption; the commands it sent.
    auto scenario = [](std::size_t n, std::size_t times, redis_proxy::cut how) {
        const auto key = fresh_key();
        redis_proxy proxy(redis_port());
        proxy.cut_at(n, times, how);
        test::harness h;
        h.options.lease_wait = 400ms;  // outlasts a lease left behind (lease_ttl 300 ms)
        auto o = through(proxy, key);
        o.lease_ttl = 300ms;
        auto a = make_manager(h, o), b = make_manager(h, o);
        std::error_code ec;
        for (int round = 0; round < 3; ++round) {
            a->get_token(ec);
            b->get_token(ec);
            h.clock.advance(test::past_soft(h.options));
            a->get_token(ec);
            b->get_token(ec);
        }
        test::served_again_without_reuse(h, *a, *b);
        raw_redis().run({"DEL", doc(key), lease_of(key)});
        return proxy.commands();
    };
    const std::size_t commands = scenario(0, 0, redis_proxy::cut::before);
    CHECK(commands >= 20);
    for (const auto how : {redis_proxy::cut::before, redis_proxy::cut::after}) {
        for (std::size_t times = 1; times <= 2; ++times) {
            for (std::size_t n = 1; n <= commands; ++n) {
                CAPTURE(how == redis_proxy::cut::after);
                CAPTURE(times);
                CAPTURE(n);
                scenario(n, times, how);
            }
        }
    }
}
