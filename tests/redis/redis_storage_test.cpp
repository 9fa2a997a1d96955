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
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
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

redis_options options_for(const std::string& key) {
    redis_options o;
    o.port = redis_port();
    o.key = key;
    o.lease_ttl = 5s;
    return o;
}

/// A plain hiredis connection for arranging and inspecting the server.
class raw_redis {
public:
    raw_redis() : c_(redisConnect("127.0.0.1", redis_port())) { REQUIRE((c_ && !c_->err)); }
    std::string run(std::vector<std::string> args) {
        std::vector<std::string_view> views(args.begin(), args.end());
        tokmgr::detail::redis::reply_ptr r = tokmgr::detail::redis::link::run(c_.get(), views);
        REQUIRE(r);
        switch (r->type) {
        case REDIS_REPLY_NIL: return "(nil)";
        case REDIS_REPLY_INTEGER: return std::to_string(r->integer);
        case REDIS_REPLY_ARRAY: {
            // Flattened, one level: what PUBSUB NUMSUB and the like answer.
            std::string out;
            for (std::size_t i = 0; i < r->elements; ++i) {
                const redisReply* e = r->element[i];
                out += (i ? " " : "") + (e->type == REDIS_REPLY_INTEGER ? std::to_string(e->integer)
                                                                        : std::string(e->str ? e->str : "", e->len));
            }
            return out;
        }
        default: return std::string(r->str, r->len);
        }
    }

private:
    tokmgr::detail::redis::context_ptr c_;
};

using test::set_of;

/// A one-connection TCP server on a loopback port that answers each read
/// with `answer` (or stays silent when it is empty).
class fake_server {
public:
    explicit fake_server(std::string answer) : answer_(std::move(answer)) {
        fd_ = test::listen_on_loopback(port_);
        thread_ = std::thread([this] {
            for (;;) {
                const int client = ::accept(fd_, nullptr, nullptr);
                if (client < 0 || stop_) {
                    if (client >= 0) ::close(client);
                    return;
                }
                char buffer[4096];
                while (!stop_ && ::recv(client, buffer, sizeof buffer, 0) > 0)
                    if (!answer_.empty()) (void)!::send(client, answer_.data(), answer_.size(), MSG_NOSIGNAL);
                ::close(client);
            }
        });
    }
    ~fake_server() {
        stop_ = true;
        ::shutdown(fd_, SHUT_RDWR);
        // Wake accept() with a connection of our own.
        const int poke = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = htons(static_cast<std::uint16_t>(port_));
        (void)::connect(poke, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
        ::close(poke);
        thread_.join();
        ::close(fd_);
    }
    int port() const { return port_; }

private:
    std::string answer_;
    int fd_ = -1;
    int port_ = 0;
    std::atomic<bool> stop_{false};
    std::thread thread_;
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
    CHECK(raw.run({"GET", key}) == std::string(tokmgr::encode_token_set(set_of(1)).reveal()));
    // A spent mark is stored without its refresh token.
    CHECK(store.store_if(set_of(2, true), 1, ec));
    CHECK(raw.run({"GET", key}).find("rt-SECRET") == std::string::npos);
    CHECK(store.load()->refresh_token_spent);
    // The throwing overloads agree.
    CHECK(store.store_if(set_of(3), 2));
    CHECK(store.load()->generation == 3);
    raw.run({"DEL", key});
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
    raw_redis().run({"DEL", key});
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
    CHECK(b.last_error().detail.find(key + ":lease") != std::string::npos);

    // b waits; a releases after 300 ms; the PUBLISH wakes b well before its
    // next poll would (by then the poll step is 50 ms).
    std::atomic<bool> released{false};
    std::chrono::steady_clock::time_point released_at;
    std::string subscribers;
    std::thread holder([&] {
        std::this_thread::sleep_for(300ms);
        subscribers = raw_redis().run({"PUBSUB", "NUMSUB", key + ":changed"});
        released_at = std::chrono::steady_clock::now();
        released = true;
        held.release();
    });
    auto taken = b.lock(5s, ec);
    const auto got_at = std::chrono::steady_clock::now();
    holder.join();
    REQUIRE(taken);
    CHECK(released);
    CHECK(subscribers == key + ":changed 1");  // b listened for the release while it waited
    CHECK(got_at - released_at < 500ms);
    CHECK_FALSE(a.holds(held, ec));
    CHECK(b.holds(taken, ec));
    raw_redis().run({"DEL", key + ":lease"});
}

TEST_CASE("a lock that waited unsubscribes when its wait ends, whether it got the lease or timed out") {
    const auto key = fresh_key();
    const std::string channel = key + ":changed";
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
            redisContext* c = redisConnect("127.0.0.1", options_for(key).port);
            for (int i = 0; i < 15 && c && !c->err; ++i) {
                std::error_code ec;
                auto lease = store.lock(20s, ec);
                if (!lease) {
                    status = 2;
                    break;
                }
                auto* r = static_cast<redisReply*>(redisCommand(c, "INCR %s", counter.c_str()));
                if (!r || r->integer != 1) status = 1;
                if (r) freeReplyObject(r);
                ::usleep(1000);
                r = static_cast<redisReply*>(redisCommand(c, "DECR %s", counter.c_str()));
                if (r) freeReplyObject(r);
            }
            if (c) redisFree(c);
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
    CHECK(b.store_if(set_of(2, true), 1, ec));  // b's spent mark, then its new pair
    CHECK(b.store_if(set_of(3), 2, ec));
    // a wakes up and writes what it had planned: refused, b's set stays.
    CHECK_FALSE(a.store_if(set_of(2, true, "a"), seen, ec));
    CHECK_FALSE(ec);
    CHECK(a.load(ec)->generation == 3);
    lapsed.release();  // compare-and-delete: b's lease survives
    CHECK(b.holds(next, ec));
    next.release();
    raw_redis().run({"DEL", key});
}

TEST_CASE("a list at the key: storage_foreign, what to do, and the list untouched") {
    const auto key = fresh_key();
    raw_redis raw;
    raw.run({"RPUSH", key, "somebody else's"});
    redis_storage store(options_for(key));
    std::error_code ec;
    CHECK_FALSE(store.load(ec));
    CHECK(ec == errc::storage_foreign);
    CHECK(store.last_error().detail.find("holds a list") != std::string::npos);
    CHECK(store.last_error().detail.find("DEL " + key) != std::string::npos);
    CHECK_FALSE(store.store_if(set_of(1), 0, ec));
    CHECK(ec == errc::storage_foreign);
    store.store(set_of(1), ec);
    CHECK(ec == errc::storage_foreign);
    CHECK(raw.run({"LLEN", key}) == "1");
    CHECK_THROWS_AS(store.load(), tokmgr::error);
    raw.run({"DEL", key});
}

TEST_CASE("garbage or a later version at the key: storage_foreign saying what to do, and never overwritten") {
    const auto key = fresh_key();
    raw_redis raw;
    redis_storage store(options_for(key));
    std::error_code ec;
    for (std::string value : {std::string("not json at all"), std::string("{\"format\":\"someone-else\"}"),
                              std::string("[1,2,3]")}) {
        raw.run({"SET", key, value});
        CHECK_FALSE(store.load(ec));
        CHECK(ec == errc::storage_foreign);
        CHECK(store.last_error().detail.find("never overwrites") != std::string::npos);
        CHECK_FALSE(store.store_if(set_of(1), 0, ec));
        CHECK(ec == errc::storage_foreign);
        CHECK(raw.run({"GET", key}) == value);
    }
    const std::string later = R"({"format":"tokmgr-token-set","version":2,"generation":4})";
    raw.run({"SET", key, later});
    CHECK_FALSE(store.load(ec));
    CHECK(ec == errc::storage_foreign);
    CHECK(store.last_error().detail.find("newer") != std::string::npos);
    CHECK_FALSE(store.store_if(set_of(5), 4, ec));  // even with the "right" generation
    CHECK(ec == errc::storage_failed);
    CHECK(raw.run({"GET", key}) == later);
    raw.run({"DEL", key});
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
    raw.run({"DEL", key});
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
        CHECK(store.last_error().detail.find("did not answer within 200 ms") != std::string::npos);
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
    raw_redis().run({"DEL", key});
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
    CHECK(raw.run({"EXISTS", key}) == "0");  // database 0 has nothing
    raw.run({"SELECT", "3"});
    CHECK(raw.run({"EXISTS", key}) == "1");
    raw.run({"DEL", key});
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
    raw_redis().run({"DEL", key});
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
    redisContext* r = redisConnect("127.0.0.1", replica_port);
    REQUIRE((r && !r->err));
    auto* reply = static_cast<redisReply*>(redisCommand(r, "GET %s", key.c_str()));
    REQUIRE(reply);
    CHECK(std::string(reply->str ? reply->str : "", reply->len).find("\"refresh_token_spent\":true") != std::string::npos);
    freeReplyObject(reply);
    redisFree(r);
    raw.run({"DEL", key});
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
    raw_redis().run({"DEL", key});
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
    raw_redis().run({"DEL", key});
}

TEST_CASE("a lease held elsewhere past lease_wait: the manager keeps serving, then reports lease_timeout") {
    const auto key = fresh_key();
    test::harness h;
    redis_storage outsider_store(options_for(key));
    test::a_lease_held_elsewhere_past_lease_wait(
        h, [&] { return make_manager(h, key); }, [&] { return outsider_store.lock(0ms); });
    raw_redis().run({"DEL", key, key + ":lease"});
}

TEST_CASE("garbage at the key: the manager logs in on its own (a private session), serves, and leaves the value alone") {
    const auto key = fresh_key();
    raw_redis raw;
    raw.run({"SET", key, "somebody else's value"});
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
    CHECK(raw.run({"GET", key}) == "somebody else's value");
    CHECK(manager->last_error().detail.find("DEL " + key) != std::string::npos);
    raw.run({"DEL", key});
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
    raw.run({"SET", key, "the store is unusable now"});
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
    raw.run({"DEL", key});
}

TEST_CASE("trust rule: a key deleted or evicted after another process refreshed costs a login, never the spent token") {
    // Two processes share the key; A refreshes (its old refresh token is
    // spent and the mark was in Redis); then the key is gone (DEL, an
    // eviction, a restart without persistence). B's next flight must not
    // send the token it adopted earlier: the server would revoke the family.
    const auto key = fresh_key();
    test::harness h;
    test::another_process_refreshes_then_the_store_loses_it(
        h, [&] { return make_manager(h, key); }, [&] { raw_redis().run({"DEL", key}); });
    CHECK(h.server.stats().logins == 2);  // B's login; A then adopts B's set
    raw_redis().run({"DEL", key, key + ":lease"});
}
