// Redis Cluster's sans-I/O pieces (storage/detail/redis_cluster.hpp): hash
// slots, redirections, CLUSTER SLOTS and a store's route. No Redis, no Asio;
// the same against a real cluster: redis_cluster_live_test.cpp.
#include <tokmgr/storage/detail/redis_cluster.hpp>

#include <doctest/doctest.h>

#include <string>
#include <vector>

namespace cluster = tokmgr::detail::redis::cluster;
namespace resp = tokmgr::detail::resp;
using cluster::key_slot;
using cluster::node_address;
using cluster::parse_redirect;
using cluster::redirect_kind;
using resp::reply;
using resp::reply_type;

namespace {

reply bulk(std::string text) { return reply{reply_type::bulk_string, std::move(text), 0, {}}; }
reply integer(std::int64_t n) { return reply{reply_type::integer, {}, n, {}}; }
reply array(std::vector<reply> elements) { return reply{reply_type::array, {}, 0, std::move(elements)}; }
reply error(std::string text) { return reply{reply_type::error, std::move(text), 0, {}}; }

/// A CLUSTER SLOTS entry as Redis 7 sends it: the primary with its id and
/// metadata, then a replica.
reply slots_entry(std::int64_t first, std::int64_t last, reply host, std::int64_t port) {
    return array({integer(first), integer(last),
                  array({std::move(host), integer(port), bulk(std::string(40, 'a')), array({})}),
                  array({bulk("10.0.0.9"), integer(port + 1), bulk(std::string(40, 'b')), array({})})});
}

const node_address asked{"10.0.0.1", 7000};

}  // namespace

TEST_CASE("key_slot: CRC16/XMODEM mod 16384, with the server's hash tag rule") {
    CHECK(cluster::crc16("123456789") == 0x31C3);  // the specification's check value
    CHECK(key_slot("foo") == 12182);
    CHECK(key_slot("") == 0);
    CHECK(key_slot("{user1000}.following") == key_slot("{user1000}.followers"));
    CHECK(key_slot("{user1000}.following") == key_slot("user1000"));
    SUBCASE("an empty tag hashes the whole key") {
        CHECK(key_slot("{}foo") == cluster::crc16("{}foo") % 16384);
        CHECK(key_slot("{}foo") != key_slot("foo"));
    }
    SUBCASE("only the first '{' and the first '}' after it count") {
        CHECK(key_slot("foo{}{bar}") == cluster::crc16("foo{}{bar}") % 16384);
        CHECK(key_slot("foo{{bar}}zap") == key_slot("{bar"));
        CHECK(key_slot("foo{bar}{zap}") == key_slot("bar"));
        CHECK(key_slot("foo{bar") == cluster::crc16("foo{bar") % 16384);
        CHECK(key_slot("foo}bar{") == cluster::crc16("foo}bar{") % 16384);
    }
    SUBCASE("a store's three names share one slot") {
        const std::string key = "{tokmgr:fleet}";
        CHECK(key_slot(key + ":lease") == key_slot(key));
        CHECK(key_slot(key + ":changed") == key_slot(key));
    }
    static_assert(cluster::key_slot("foo") == 12182, "usable at compile time");
}

TEST_CASE("parse_redirect: MOVED and ASK, with IPv4, IPv6, a host name or none") {
    const auto moved = parse_redirect("MOVED 3999 127.0.0.1:6381");
    REQUIRE(moved);
    CHECK(moved->kind == redirect_kind::moved);
    CHECK(moved->slot == 3999);
    CHECK(moved->node == node_address{"127.0.0.1", 6381});

    const auto ask = parse_redirect("ASK 16383 redis-2.example:7001");
    REQUIRE(ask);
    CHECK(ask->kind == redirect_kind::ask);
    CHECK(ask->slot == 16383);
    CHECK(ask->node == node_address{"redis-2.example", 7001});

    // Redis writes an IPv6 address without brackets; the port is after the last ':'.
    const auto v6 = parse_redirect("MOVED 0 ::1:7002");
    REQUIRE(v6);
    CHECK(v6->node == node_address{"::1", 7002});
    const auto v6_long = parse_redirect("ASK 12 fe80::1:2:3:30001");
    REQUIRE(v6_long);
    CHECK(v6_long->node == node_address{"fe80::1:2:3", 30001});
    const auto bracketed = parse_redirect("MOVED 1 [2001:db8::7]:7000");
    REQUIRE(bracketed);
    CHECK(bracketed->node == node_address{"2001:db8::7", 7000});

    // cluster-preferred-endpoint-type unknown-endpoint: the host asked.
    const auto same_host = parse_redirect("MOVED 5 :7003");
    REQUIRE(same_host);
    CHECK(same_host->node.host.empty());
    CHECK(cluster::resolve(same_host->node, asked) == node_address{"10.0.0.1", 7003});
    // hostname preferred, none set: a redirect, to a node no one can reach (route refuses it).
    const auto unknown = parse_redirect("MOVED 5 ?:7003");
    REQUIRE(unknown);
    CHECK(unknown->node.host == cluster::unknown_endpoint);
}

TEST_CASE("parse_redirect: anything else is not a redirect") {
    for (const char* text :
         {"", "MOVED", "MOVED ", "MOVED 3999", "MOVED 3999 ", "MOVED 3999 127.0.0.1", "MOVED 3999 127.0.0.1:",
          "MOVED 3999 127.0.0.1:0", "MOVED 3999 127.0.0.1:65536", "MOVED 3999 127.0.0.1:99999999",
          "MOVED 16384 127.0.0.1:7000", "MOVED -1 127.0.0.1:7000", "MOVED +1 127.0.0.1:7000",
          "MOVED x 127.0.0.1:7000", "MOVED 1  127.0.0.1:7000", "MOVED 1 127.0.0.1:70a0", "MOVED 1 a b:7000",
          "moved 1 127.0.0.1:7000", "ASK", "ASK 1", "ASKING 1 h:1", "MOVEDX 1 h:1", "ERR unknown command",
          "WRONGTYPE Operation against a key holding the wrong kind of value", "TRYAGAIN Multiple keys request",
          "CLUSTERDOWN The cluster is down", "CROSSSLOT Keys in request don't hash to the same slot",
          "MOVED 1 [::1:7000", "MOVED 1 h:7000\r\n"}) {
        CAPTURE(std::string(text));
        CHECK_FALSE(parse_redirect(text));
    }
}

TEST_CASE("slot_map: CLUSTER SLOTS of a three-master cluster") {
    const reply three = array({slots_entry(5461, 10922, bulk("10.0.0.2"), 7001),
                               slots_entry(0, 5460, bulk("10.0.0.1"), 7000),
                               slots_entry(10923, 16383, bulk("10.0.0.3"), 7002)});
    cluster::slot_map map;
    tokmgr::error_info failed;
    REQUIRE(map.parse(three, asked, failed));
    CHECK_FALSE(failed);
    CHECK(map.covers_all());
    REQUIRE(map.ranges().size() == 3);
    CHECK(map.ranges()[0].first == 0);  // sorted
    CHECK(*map.primary(0) == node_address{"10.0.0.1", 7000});
    CHECK(*map.primary(5460) == node_address{"10.0.0.1", 7000});
    CHECK(*map.primary(5461) == node_address{"10.0.0.2", 7001});
    CHECK(*map.primary(12182) == node_address{"10.0.0.3", 7002});
    CHECK(*map.primary(16383) == node_address{"10.0.0.3", 7002});

    SUBCASE("a primary sent with a null or empty host is the node asked") {
        const reply anonymous = array({slots_entry(0, 16383, reply{}, 7005)});
        REQUIRE(map.parse(anonymous, asked, failed));
        CHECK(*map.primary(77) == node_address{"10.0.0.1", 7005});
        REQUIRE(map.parse(array({slots_entry(0, 16383, bulk(""), 7006)}), asked, failed));
        CHECK(*map.primary(77) == node_address{"10.0.0.1", 7006});
    }
    SUBCASE("Redis 3's two-field nodes, and a range of one slot") {
        const reply old = array({array({integer(0), integer(0), array({bulk("h"), integer(1)})}),
                                 array({integer(1), integer(16383), array({bulk("g"), integer(2)})})});
        REQUIRE(map.parse(old, asked, failed));
        CHECK(map.covers_all());
        CHECK(*map.primary(0) == node_address{"h", 1});
        CHECK(*map.primary(1) == node_address{"g", 2});
    }
    SUBCASE("slots no range covers have no primary") {
        REQUIRE(map.parse(array({slots_entry(100, 200, bulk("h"), 1)}), asked, failed));
        CHECK_FALSE(map.covers_all());
        CHECK(map.primary(99) == nullptr);
        CHECK(map.primary(201) == nullptr);
        CHECK(map.primary(150) != nullptr);
    }
    SUBCASE("an empty reply: a cluster with no slot assigned") {
        REQUIRE(map.parse(array({}), asked, failed));
        CHECK(map.empty());
        CHECK_FALSE(map.covers_all());
        CHECK(map.primary(0) == nullptr);
        cluster::route r("{k}", asked);
        CHECK_FALSE(r.learn(map));
        CHECK(r.node() == asked);
    }
}

TEST_CASE("slot_map: a malformed CLUSTER SLOTS is refused, the map kept, the reply not quoted") {
    const reply good = array({slots_entry(0, 16383, bulk("10.0.0.1"), 7000)});
    const std::string secretish = "s3cr3t-looking-text";
    const std::vector<reply> malformed = {
        error("ERR This instance has cluster support disabled"),
        bulk(secretish),
        reply{},
        array({bulk(secretish)}),
        array({array({integer(0), integer(16383)})}),                                         // no primary
        array({array({bulk("0"), integer(16383), array({bulk("h"), integer(1)})})}),          // first as a string
        array({array({integer(-1), integer(16383), array({bulk("h"), integer(1)})})}),
        array({array({integer(10), integer(9), array({bulk("h"), integer(1)})})}),            // last < first
        array({array({integer(0), integer(16384), array({bulk("h"), integer(1)})})}),
        array({array({integer(0), integer(16383), bulk(secretish)})}),                        // primary not an array
        array({array({integer(0), integer(16383), array({bulk("h")})})}),                     // no port
        array({array({integer(0), integer(16383), array({integer(1), integer(1)})})}),        // host an integer
        array({array({integer(0), integer(16383), array({bulk("h"), integer(0)})})}),
        array({array({integer(0), integer(16383), array({bulk("h"), integer(65536)})})}),
        array({array({integer(0), integer(16383), array({bulk("h"), bulk("7000")})})}),
        array({slots_entry(0, 100, bulk("h"), 1), slots_entry(100, 200, bulk("g"), 2)}),    // overlap
    };
    for (std::size_t i = 0; i < malformed.size(); ++i) {
        CAPTURE(i);
        cluster::slot_map map;
        tokmgr::error_info failed;
        REQUIRE(map.parse(good, asked, failed));
        CHECK_FALSE(map.parse(malformed[i], asked, failed));
        CHECK(failed.code == tokmgr::errc::protocol_error);
        CHECK(failed.detail.find("CLUSTER SLOTS") != std::string::npos);
        CHECK(failed.detail.find(secretish) == std::string::npos);
        CHECK(failed.detail.find("cluster support") == std::string::npos);
        CHECK(map.covers_all());  // unchanged
    }
}

TEST_CASE("route: MOVED for good, ASK once with ASKING, TRYAGAIN later") {
    const std::string key = "{tokmgr:fleet}";
    const std::string slot = std::to_string(key_slot(key));
    cluster::route r(key + ":lease", asked);
    CHECK(r.slot() == key_slot(key));
    tokmgr::error_info failed;

    r.begin_command();
    CHECK(r.next().node == asked);
    CHECK_FALSE(r.next().asking);
    CHECK(r.on_reply(error("MOVED " + slot + " 10.0.0.2:7001"), failed) == cluster::route::verdict::retry);
    CHECK(r.node() == node_address{"10.0.0.2", 7001});
    CHECK(r.next().node == node_address{"10.0.0.2", 7001});
    CHECK(r.on_reply(bulk("value"), failed) == cluster::route::verdict::done);
    CHECK_FALSE(failed);

    r.begin_command();
    CHECK(r.on_reply(error("ASK " + slot + " :7002"), failed) == cluster::route::verdict::retry);
    CHECK(r.next().node == node_address{"10.0.0.2", 7002});  // the host asked
    CHECK(r.next().asking);
    CHECK(r.node() == node_address{"10.0.0.2", 7001});  // not for good
    CHECK(r.on_reply(reply{}, failed) == cluster::route::verdict::done);
    CHECK(r.next().node == node_address{"10.0.0.2", 7001});
    CHECK_FALSE(r.next().asking);

    SUBCASE("an ASK target that answers MOVED (the migration ended meanwhile)") {
        r.begin_command();
        CHECK(r.on_reply(error("ASK " + slot + " 10.0.0.3:7002"), failed) == cluster::route::verdict::retry);
        CHECK(r.on_reply(error("MOVED " + slot + " 10.0.0.3:7002"), failed) == cluster::route::verdict::retry);
        CHECK(r.next().node == node_address{"10.0.0.3", 7002});
        CHECK_FALSE(r.next().asking);
    }
    SUBCASE("TRYAGAIN: the same node, later") {
        r.begin_command();
        CHECK(r.on_reply(error("TRYAGAIN Multiple keys request during rehashing of slot"), failed) ==
              cluster::route::verdict::retry_later);
        CHECK(r.next().node == node_address{"10.0.0.2", 7001});
    }
    SUBCASE("other error replies are the command's") {
        r.begin_command();
        CHECK(r.on_reply(error("NOSCRIPT No matching script"), failed) == cluster::route::verdict::done);
        CHECK(r.on_reply(error("CLUSTERDOWN The cluster is down"), failed) == cluster::route::verdict::done);
        CHECK_FALSE(failed);
    }
    SUBCASE("a redirect for another slot is refused, the node kept") {
        r.begin_command();
        const std::string other = std::to_string((key_slot(key) + 1) % 16384);
        CHECK(r.on_reply(error("MOVED " + other + " 10.0.0.9:1"), failed) == cluster::route::verdict::failed);
        CHECK(failed.code == tokmgr::errc::protocol_error);
        CHECK(r.node() == node_address{"10.0.0.2", 7001});
    }
    SUBCASE("a node with no address ('?') is not followed") {
        r.begin_command();
        CHECK(r.on_reply(error("MOVED " + slot + " ?:7000"), failed) == cluster::route::verdict::failed);
        CHECK(failed.code == tokmgr::errc::storage_failed);
        CHECK(failed.detail.find("cluster-preferred-endpoint-type") != std::string::npos);
        CHECK(r.node() == node_address{"10.0.0.2", 7001});
    }
    SUBCASE("learn: the owner a slot map names") {
        cluster::slot_map map;
        REQUIRE(map.parse(array({slots_entry(0, 16383, bulk("10.0.0.4"), 7004)}), asked, failed));
        CHECK(r.learn(map));
        CHECK(r.node() == node_address{"10.0.0.4", 7004});
        REQUIRE(map.parse(array({slots_entry(0, 16383, bulk("?"), 7005)}), asked, failed));
        CHECK_FALSE(r.learn(map));
        CHECK(r.node() == node_address{"10.0.0.4", 7004});
    }
}

TEST_CASE("route: redirections of one command are bounded, so nodes that disagree cannot loop it") {
    const std::string slot = std::to_string(key_slot("{k}"));
    cluster::route r("{k}", asked, 5);
    tokmgr::error_info failed;
    r.begin_command();
    for (int i = 0; i < 5; ++i) {
        const std::string to = i % 2 ? "10.0.0.1:7000" : "10.0.0.2:7001";
        CHECK(r.on_reply(error((i % 3 ? "MOVED " : "ASK ") + slot + " " + to), failed) ==
              cluster::route::verdict::retry);
    }
    CHECK(r.on_reply(error("MOVED " + slot + " 10.0.0.2:7001"), failed) == cluster::route::verdict::failed);
    CHECK(failed.code == tokmgr::errc::storage_failed);
    CHECK(failed.detail.find("more than 5") != std::string::npos);
    CHECK(failed.detail.find("10.0.0") == std::string::npos);

    // The next command has its own five.
    r.begin_command();
    CHECK(r.on_reply(error("MOVED " + slot + " 10.0.0.2:7001"), failed) == cluster::route::verdict::retry);
    CHECK_FALSE(failed);
}

TEST_CASE("route: TRYAGAIN is not a redirection; the caller bounds it by time") {
    const std::string slot = std::to_string(key_slot("{k}"));
    cluster::route r("{k}", asked, 2);
    tokmgr::error_info failed;
    r.begin_command();
    for (int i = 0; i < 100; ++i)
        REQUIRE(r.on_reply(error("TRYAGAIN Multiple keys request during rehashing of slot"), failed) ==
                cluster::route::verdict::retry_later);
    CHECK(r.on_reply(error("MOVED " + slot + " 10.0.0.2:7001"), failed) == cluster::route::verdict::retry);
    CHECK(r.on_reply(error("TRYAGAIN"), failed) == cluster::route::verdict::retry_later);
    CHECK(r.on_reply(error("ASK " + slot + " 10.0.0.3:7002"), failed) == cluster::route::verdict::retry);
    // The target, asked, has the script's keys split too: asked again, after ASKING, without a hop.
    for (int i = 0; i < 10; ++i) {
        REQUIRE(r.on_reply(error("TRYAGAIN"), failed) == cluster::route::verdict::retry_later);
        CHECK(r.next().node == node_address{"10.0.0.3", 7002});
        CHECK(r.next().asking);
    }
    CHECK(r.on_reply(reply{}, failed) == cluster::route::verdict::done);
    CHECK_FALSE(r.next().asking);
    CHECK(r.on_reply(error("MOVED " + slot + " 10.0.0.2:7001"), failed) == cluster::route::verdict::failed);
}
