// The Cluster logic (storage/detail/redis_cluster.hpp) against a real
// three-master Redis Cluster that the redis_cluster fixture starts
// (TOKMGR_TEST_REDIS_CLUSTER_DIR holds its ports), through the Asio
// connection: what the nodes send is what the parsers read, and a route
// reaches the owner of a slot from any node, before, during and after a
// migration of that slot (the fixture's migrate-slot); and redis_storage on
// that cluster: stores pointed at different nodes share one set, through a
// migration of its slot.
#include <doctest/doctest.h>

#include <tokmgr/storage/detail/redis_cluster.hpp>
#include <tokmgr/storage/detail/redis_connection.hpp>
#include <tokmgr/storage/redis.hpp>
#include <tokmgr/storage/redis_async.hpp>

#include <asio/io_context.hpp>

#include "harness.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
using tokmgr::error_info;
using tokmgr::redis_options;
using tokmgr::detail::redis::connection;
namespace cluster = tokmgr::detail::redis::cluster;
namespace resp = tokmgr::detail::resp;
using cluster::node_address;

namespace {

const std::string cluster_dir = TOKMGR_TEST_REDIS_CLUSTER_DIR;

std::vector<int> cluster_ports() {
    std::ifstream in(cluster_dir + "/ports");
    std::vector<int> ports;
    for (int port = 0; in >> port;) ports.push_back(port);
    REQUIRE_MESSAGE(ports.size() == 3, "the redis_cluster fixture did not write three ports in " << cluster_dir);
    return ports;
}

node_address node_on(int port) { return {"127.0.0.1", port}; }

/// One connection per node, opened when first used, as a store would keep.
class connections {
public:
    connection& to(const node_address& node) {
        REQUIRE(node.host == "127.0.0.1");
        auto& slot = open_[node.port];
        if (!slot) {
            redis_options o;
            o.host = node.host;
            o.port = node.port;
            o.connect_timeout = 2s;
            o.command_timeout = 5s;
            slot = std::make_unique<connection>(o);
        }
        return *slot;
    }

private:
    std::map<int, std::unique_ptr<connection>> open_;
};

resp::reply must(connection& c, const std::vector<std::string_view>& args) {
    resp::reply out;
    error_info failed;
    REQUIRE_MESSAGE(c.command(args, out, failed), failed.detail);
    return out;
}

/// The command loop a store runs on a cluster (redis_cluster.hpp, `route`).
bool routed(cluster::route& route, connections& nodes, const std::vector<std::string_view>& args,
            resp::reply& out, error_info& failed) {
    route.begin_command();
    for (;;) {
        const cluster::route::attempt to = route.next();
        connection& c = nodes.to(to.node);
        if (to.asking) {
            if (!c.command({"ASKING"}, out, failed)) return false;
            REQUIRE(out.text == "OK");
        }
        if (!c.command(args, out, failed)) return false;
        switch (route.on_reply(out, failed)) {
        case cluster::route::verdict::done: return true;
        case cluster::route::verdict::retry: continue;
        case cluster::route::verdict::retry_later: std::this_thread::sleep_for(10ms); continue;
        case cluster::route::verdict::failed: return false;
        }
    }
}

resp::reply must_route(cluster::route& route, connections& nodes, const std::vector<std::string_view>& args) {
    resp::reply out;
    error_info failed;
    REQUIRE_MESSAGE(routed(route, nodes, args, out, failed), failed.detail);
    return out;
}

/// The redirection an error reply must be.
cluster::redirect redirect_in(const resp::reply& reply) {
    REQUIRE(reply.type == resp::reply_type::error);
    const auto redirect = cluster::parse_redirect(reply.text);
    REQUIRE_MESSAGE(redirect, "not a redirection: " << reply.text);
    return *redirect;
}

cluster::slot_map slots_from(connections& nodes, int port) {
    cluster::slot_map map;
    error_info failed;
    REQUIRE_MESSAGE(map.parse(must(nodes.to(node_on(port)), {"CLUSTER", "SLOTS"}), node_on(port), failed),
                    failed.detail);
    return map;
}

/// The nodes of a slot migration: from the owner to another node.
struct migration {
    int source = 0;
    int target = 0;
};

/// Runs the fixture's `migrate-slot DIR KEY PHASE`: "start" marks the slot
/// of `key` MIGRATING on its owner and IMPORTING on another node, "finish"
/// moves the keys left and gives the slot to the target, "all" does both.
/// Keys of that slot may be moved one by one in between (MIGRATE), which is
/// when the source answers ASK for them.
migration migrate_slot(const std::string& key, const std::string& phase) {
    REQUIRE(key.find('\'') == std::string::npos);
    const std::string command = "'" TOKMGR_TEST_BASH "' '" TOKMGR_TEST_REDIS_FIXTURE "' migrate-slot '" +
                                cluster_dir + "' '" + key + "' " + phase;
    FILE* out = ::popen(command.c_str(), "r");
    REQUIRE(out != nullptr);
    migration m;
    const int read = std::fscanf(out, "%d %d", &m.source, &m.target);
    REQUIRE(::pclose(out) == 0);
    REQUIRE(read == 2);
    return m;
}

std::string fresh_key(const char* what) {
    return "{tokmgr-cluster-test:" + std::to_string(::getpid()) + ":" + what + "}";
}

}  // namespace

TEST_CASE("CLUSTER SLOTS from every node reads as one map of all 16384 slots, and the nodes agree on key slots") {
    connections nodes;
    const std::vector<int> ports = cluster_ports();
    const cluster::slot_map first = slots_from(nodes, ports[0]);
    CHECK(first.covers_all());
    for (const int port : ports) {
        CAPTURE(port);
        const cluster::slot_map map = slots_from(nodes, port);
        REQUIRE(map.ranges().size() == first.ranges().size());
        for (std::size_t i = 0; i < map.ranges().size(); ++i) {
            CHECK(map.ranges()[i].first == first.ranges()[i].first);
            CHECK(map.ranges()[i].last == first.ranges()[i].last);
            CHECK(map.ranges()[i].primary == first.ranges()[i].primary);
        }
        bool owns_some = false;
        for (const auto& range : map.ranges()) owns_some = owns_some || range.primary == node_on(port);
        CHECK(owns_some);  // three masters, each with its share
    }
    for (const std::string key : {"foo", "{user1000}.following", "{}foo", "foo{{bar}}zap", "{tokmgr}:lease", ""}) {
        CAPTURE(key);
        const resp::reply slot = must(nodes.to(node_on(ports[0])), {"CLUSTER", "KEYSLOT", key});
        CHECK(slot.integer == cluster::key_slot(key));
    }
}

TEST_CASE("a node that does not own a key's slot answers MOVED to its owner, which the route follows") {
    connections nodes;
    const std::vector<int> ports = cluster_ports();
    const std::string key = fresh_key("moved");
    const std::uint16_t slot = cluster::key_slot(key);
    const node_address owner = *slots_from(nodes, ports[0]).primary(slot);
    int other = 0;
    for (const int port : ports)
        if (node_on(port) != owner) other = port;

    const auto moved = redirect_in(must(nodes.to(node_on(other)), {"SET", key, "v"}));
    CHECK(moved.kind == cluster::redirect_kind::moved);
    CHECK(moved.slot == slot);
    CHECK(moved.node == owner);
    CHECK(must(nodes.to(moved.node), {"SET", key, "v"}).text == "OK");

    cluster::route route(key + ":lease", node_on(other));
    CHECK(must_route(route, nodes, {"GET", key}).text == "v");
    CHECK(route.node() == owner);
    CHECK(must_route(route, nodes, {"DEL", key}).integer == 1);
}

TEST_CASE("a slot migrated mid-run: ASK for the keys moved, the route follows it once, MOVED after") {
    connections nodes;
    const std::vector<int> ports = cluster_ports();
    const std::string key = fresh_key("ask");
    const std::string lease = key + ":lease";
    const std::uint16_t slot = cluster::key_slot(key);
    cluster::route route(key, node_on(ports[0]));
    CHECK(must_route(route, nodes, {"SET", key, "document"}).text == "OK");
    CHECK(must_route(route, nodes, {"SET", lease, "holder"}).text == "OK");

    const migration m = migrate_slot(key, "start");
    CHECK(route.node() == node_on(m.source));
    connection& source = nodes.to(node_on(m.source));
    connection& target = nodes.to(node_on(m.target));
    CHECK(must(source, {"MIGRATE", "127.0.0.1", std::to_string(m.target), "", "0", "5000", "KEYS", key}).text == "OK");

    // The source still serves the key it holds, and sends the moved one to the target.
    CHECK(must(source, {"GET", lease}).text == "holder");
    const auto redirect = redirect_in(must(source, {"GET", key}));
    CHECK(redirect.kind == cluster::redirect_kind::ask);
    CHECK(redirect.slot == slot);
    CHECK(redirect.node == node_on(m.target));
    // The target, which does not own the slot yet, serves it only after ASKING.
    const auto back = redirect_in(must(target, {"GET", key}));
    CHECK(back.kind == cluster::redirect_kind::moved);
    CHECK(back.node == node_on(m.source));
    CHECK(must(target, {"ASKING"}).text == "OK");
    CHECK(must(target, {"GET", key}).text == "document");

    // A command of both keys, now on two nodes, is refused until they are together again.
    const resp::reply split = must(source, {"MGET", key, lease});
    REQUIRE(split.type == resp::reply_type::error);
    CHECK(split.text.rfind("TRYAGAIN", 0) == 0);
    error_info failed;
    route.begin_command();
    CHECK(route.on_reply(split, failed) == cluster::route::verdict::retry_later);
    CHECK(route.next().node == node_on(m.source));

    // The route: one ASK, then back to the source, which is still the owner.
    CHECK(must_route(route, nodes, {"GET", key}).text == "document");
    CHECK(route.node() == node_on(m.source));
    CHECK(must_route(route, nodes, {"GET", lease}).text == "holder");

    CHECK(migrate_slot(key, "finish").target == m.target);
    const auto after = redirect_in(must(source, {"GET", key}));
    CHECK(after.kind == cluster::redirect_kind::moved);
    CHECK(after.node == node_on(m.target));
    CHECK(must_route(route, nodes, {"GET", lease}).text == "holder");
    CHECK(route.node() == node_on(m.target));
    for (const int port : ports) CHECK(*slots_from(nodes, port).primary(slot) == node_on(m.target));
    CHECK(must_route(route, nodes, {"DEL", key, lease}).integer == 2);
}

// ---- redis_storage on the cluster ----

namespace {

using test::set_of;

/// A store on the node at `port`, for the account `key` (the store adds the braces).
tokmgr::redis_storage store_on(int port, const std::string& key, std::chrono::milliseconds command_timeout = 5s) {
    redis_options o;
    o.port = port;
    o.key = key;
    o.lease_ttl = 5s;
    o.command_timeout = command_timeout;
    return tokmgr::redis_storage(o);
}

std::string account(const char* what) { return "tokmgr-cluster-store:" + std::to_string(::getpid()) + ":" + what; }

}  // namespace

TEST_CASE("redis_storage: stores pointed at the three nodes share one token set, the lease, and its channel") {
    const auto ports = cluster_ports();
    const std::string key = account("shared");
    auto a = store_on(ports[0], key), b = store_on(ports[1], key), c = store_on(ports[2], key);
    std::error_code ec;
    auto held = a.lock(1s, ec);
    REQUIRE_MESSAGE(held, a.last_error().message());
    CHECK_FALSE(a.load(ec));
    CHECK(a.store_if(set_of(1), 0, ec));
    // Another node's store waits for that lease, and wakes when it goes.
    std::thread releaser([&] {
        std::this_thread::sleep_for(300ms);
        std::error_code ignored;
        CHECK(a.store_if_and_release(set_of(2), 1, held, ignored));
    });
    auto second = b.lock(5s, ec);
    releaser.join();
    REQUIRE_MESSAGE(second, b.last_error().message());
    auto seen = b.load(ec);
    REQUIRE(seen);
    CHECK(seen->generation == 2);
    CHECK(b.store_if(set_of(3, true), 2, ec));
    CHECK(b.holds(second, ec));
    CHECK(b.store_if_and_release(set_of(4), 3, second, ec));
    auto third = c.load(ec);
    REQUIRE_MESSAGE(third, c.last_error().message());
    CHECK(third->generation == 4);
    CHECK(third->refresh_token.reveal() == "rt-SECRET-4");
    CHECK_FALSE(c.store_if(set_of(5), 3, ec));  // the compare-and-swap holds across nodes
    CHECK_FALSE(ec);
}

TEST_CASE("redis_storage through a migration of its slot: ASK for a moved document, TRYAGAIN while its keys are split, MOVED after") {
    const auto ports = cluster_ports();
    const std::string key = account("migrating");
    const std::string document = "{" + key + "}";
    auto store = store_on(ports[0], key);
    std::error_code ec;
    REQUIRE_MESSAGE(store.store_if(set_of(1), 0, ec), store.last_error().message());

    const migration m = migrate_slot(document, "start");
    connections nodes;
    // The document alone moves to the target: the source answers ASK for it.
    must(nodes.to(node_on(m.source)), {"MIGRATE", "127.0.0.1", std::to_string(m.target), "", "0", "5000", "KEYS", document});
    auto loaded = store.load(ec);
    REQUIRE_MESSAGE(loaded, store.last_error().message());
    CHECK(loaded->generation == 1);

    // Taking the lease touches the document (on the target) and the lease
    // (nowhere yet): TRYAGAIN until the migration ends, which a thread does.
    std::thread finisher([&] {
        std::this_thread::sleep_for(400ms);
        migrate_slot(document, "finish");
    });
    const auto started = std::chrono::steady_clock::now();
    auto held = store.lock(5s, ec);
    const auto waited = std::chrono::steady_clock::now() - started;
    finisher.join();
    REQUIRE_MESSAGE(held, store.last_error().message());
    CHECK(waited >= 300ms);
    auto current = store.load(ec);
    REQUIRE(current);
    CHECK(store.store_if_and_release(set_of(2), current->generation, held, ec));

    // Every node's store reads it from its new owner.
    for (int port : ports) {
        CAPTURE(port);
        auto other = store_on(port, key);
        auto read = other.load(ec);
        REQUIRE_MESSAGE(read, other.last_error().message());
        CHECK(read->generation == 2);
    }
}

TEST_CASE("redis_storage: a migration left half done fails the call after command_timeout, naming it; nothing is written") {
    const auto ports = cluster_ports();
    const std::string key = account("stuck");
    const std::string document = "{" + key + "}";
    auto store = store_on(ports[1], key, 300ms);
    std::error_code ec;
    REQUIRE_MESSAGE(store.store_if(set_of(1), 0, ec), store.last_error().message());
    const migration m = migrate_slot(document, "start");
    connections nodes;
    must(nodes.to(node_on(m.source)), {"MIGRATE", "127.0.0.1", std::to_string(m.target), "", "0", "5000", "KEYS", document});
    const auto started = std::chrono::steady_clock::now();
    auto held = store.lock(0ms, ec);
    const auto took = std::chrono::steady_clock::now() - started;
    CHECK_FALSE(held);
    CHECK(ec == tokmgr::errc::storage_failed);
    CHECK(store.last_error().detail.find("TRYAGAIN") != std::string::npos);
    CHECK(store.last_error().detail.find("rt-SECRET") == std::string::npos);
    CHECK(took < 2s);
    migrate_slot(document, "finish");
    auto after = store.load(ec);
    REQUIRE_MESSAGE(after, store.last_error().message());
    CHECK(after->generation == 1);
}

TEST_CASE("redis_async_storage follows the cluster too: from a node that does not own the slot, and through a migration") {
    const auto ports = cluster_ports();
    const std::string key = account("async");
    const std::string document = "{" + key + "}";
    asio::io_context io;
    tokmgr::redis_async_options o;
    o.port = ports[2];
    o.key = key;
    o.lease_ttl = 5s;
    o.executor = io.get_executor();
    tokmgr::redis_async_storage store(o);
    // Runs `start(handler)` on the io_context until its handler was called.
    const auto await = [&](auto start) {
        bool done = false;
        start([&] { done = true; });
        io.restart();
        while (!done && io.run_one_for(5s)) {
        }
        REQUIRE(done);
    };
    std::error_code ec;
    bool written = false;
    await([&](auto finished) {
        store.async_store_if(set_of(1), 0, [&, finished](std::error_code e, bool w) {
            ec = e;
            written = w;
            finished();
        });
    });
    CHECK_FALSE(ec);
    CHECK(written);

    const migration m = migrate_slot(document, "start");
    connections nodes;
    must(nodes.to(node_on(m.source)), {"MIGRATE", "127.0.0.1", std::to_string(m.target), "", "0", "5000", "KEYS", document});
    std::optional<tokmgr::token_set> loaded;
    await([&](auto finished) {
        store.async_load([&, finished](std::error_code e, std::optional<tokmgr::token_set> s) {
            ec = e;
            loaded = std::move(s);
            finished();
        });
    });
    CHECK_FALSE(ec);
    REQUIRE(loaded);  // ASK followed
    CHECK(loaded->generation == 1);

    std::thread finisher([&] {
        std::this_thread::sleep_for(400ms);
        migrate_slot(document, "finish");
    });
    tokmgr::redis_async_storage::lease held;
    await([&](auto finished) {
        store.async_lock(5s, [&, finished](std::error_code e, tokmgr::redis_async_storage::lease l) {
            ec = e;
            held = std::move(l);
            finished();
        });
    });
    finisher.join();
    CHECK_FALSE(ec);
    REQUIRE(held);  // TRYAGAIN waited out
    await([&](auto finished) {
        store.async_store_if(set_of(2), 1, [&, finished](std::error_code e, bool w) {
            ec = e;
            written = w;
            finished();
        });
    });
    CHECK(written);
    await([&](auto finished) {
        store.async_release(std::move(held), [&, finished](std::error_code e) {
            ec = e;
            finished();
        });
    });
    CHECK_FALSE(ec);
    auto check = store_on(ports[0], key);
    auto read = check.load(ec);
    REQUIRE(read);
    CHECK(read->generation == 2);
}
