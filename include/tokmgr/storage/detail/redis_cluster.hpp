// tokmgr/storage/detail/redis_cluster.hpp — what a Redis store needs to run
// on Redis Cluster, without I/O: the hash slot of a key, the MOVED and ASK
// redirections read from an error reply, the slot map read from CLUSTER
// SLOTS, and the route of one store's commands through them.
//
// Sans-I/O for the same reasons as resp.hpp: one logic for the blocking and
// the asynchronous store, unit-tested without a server
// (tests/redis/redis_cluster_test.cpp), and against a real three-master
// cluster in tests/redis/redis_cluster_live_test.cpp.
//
// A store touches one slot only: its document, lease and channel names share
// a hash tag (redis_options.hpp), which is what lets its scripts run on a
// cluster at all (a script's keys must share a slot, or the cluster answers
// CROSSSLOT). So a store does not need a client for the whole cluster: it
// needs the node that owns its slot now, and to follow the cluster when the
// slot moves. That is `route`: any node given is a way in; a MOVED names the
// new owner for good; an ASK names, for one command, the node the slot is
// being migrated to.
//
// Nothing here quotes what the server sent beyond a host and a port: an
// error reply's text is the server's, and redirect parsing only reads the
// three fields it knows.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../../errc.hpp"
#include "../../error.hpp"
#include "resp.hpp"

namespace tokmgr::detail::redis::cluster {

/// Redis Cluster's fixed number of hash slots.
inline constexpr std::uint16_t slot_count = 16384;

/// CRC16-CCITT as the cluster specification names it (the XMODEM variant:
/// polynomial 0x1021, initial value 0, no reflection). Bitwise rather than
/// with a table: a store hashes one key, once.
constexpr std::uint16_t crc16(std::string_view bytes) noexcept {
    std::uint16_t crc = 0;
    for (const char c : bytes) {
        crc = static_cast<std::uint16_t>(crc ^ (static_cast<std::uint16_t>(static_cast<unsigned char>(c)) << 8));
        for (int bit = 0; bit < 8; ++bit)
            crc = static_cast<std::uint16_t>((crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

/// The slot a key lives in. The hash tag rule is the server's, byte for
/// byte: only the text between the first '{' and the first '}' after it is
/// hashed, and only when it is not empty (so "{}x" and "x{}{y}" hash whole).
constexpr std::uint16_t key_slot(std::string_view key) noexcept {
    const auto open = key.find('{');
    if (open != std::string_view::npos) {
        const auto close = key.find('}', open + 1);
        if (close != std::string_view::npos && close > open + 1) key = key.substr(open + 1, close - open - 1);
    }
    return static_cast<std::uint16_t>(crc16(key) % slot_count);
}

/// A node as the cluster names it. An empty host is "the host of the node
/// that answered": Redis 7 sends it with `cluster-preferred-endpoint-type
/// unknown-endpoint`, meaning the client must reuse the address it already
/// used (behind a load balancer or NAT the node cannot know it). "?" is a
/// node with no endpoint of the preferred type (`hostname` with none set):
/// no client can reach it, so `route` refuses to follow it.
struct node_address {
    std::string host;
    int port = 0;

    friend bool operator==(const node_address& a, const node_address& b) {
        return a.host == b.host && a.port == b.port;
    }
    friend bool operator!=(const node_address& a, const node_address& b) { return !(a == b); }
    friend bool operator<(const node_address& a, const node_address& b) {
        return a.host < b.host || (a.host == b.host && a.port < b.port);
    }
};

inline constexpr std::string_view unknown_endpoint = "?";

/// The empty host replaced by the one that was asked.
inline node_address resolve(node_address node, const node_address& asked) {
    if (node.host.empty()) node.host = asked.host;
    return node;
}

enum class redirect_kind {
    moved,  ///< the slot belongs to another node now: send everything there
    ask,    ///< the slot is being migrated: this key may be on the target; ask it once
};

struct redirect {
    redirect_kind kind = redirect_kind::moved;
    std::uint16_t slot = 0;
    node_address node;
};

namespace parse_detail {

/// A decimal number of at most `max`, nothing else (no sign, no spaces).
constexpr std::optional<std::uint32_t> small_number(std::string_view text, std::uint32_t max) noexcept {
    if (text.empty() || text.size() > 5) return std::nullopt;
    std::uint32_t value = 0;
    for (const char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        value = value * 10 + static_cast<std::uint32_t>(c - '0');
    }
    if (value > max) return std::nullopt;
    return value;
}

}  // namespace parse_detail

/// Reads `MOVED <slot> <host>:<port>` or `ASK <slot> <host>:<port>`, the
/// text of an error reply (without RESP's '-'). The port follows the last
/// ':', since Redis writes an IPv6 address without brackets ("::1:7000");
/// bracketed "[::1]:7000" is read too. Anything else, a slot past 16383 or a
/// port outside 1..65535 included, is not a redirect.
inline std::optional<redirect> parse_redirect(std::string_view text) {
    redirect out;
    if (text.substr(0, 6) == "MOVED ") {
        out.kind = redirect_kind::moved;
        text.remove_prefix(6);
    } else if (text.substr(0, 4) == "ASK ") {
        out.kind = redirect_kind::ask;
        text.remove_prefix(4);
    } else {
        return std::nullopt;
    }
    const auto space = text.find(' ');
    if (space == std::string_view::npos) return std::nullopt;
    const auto slot = parse_detail::small_number(text.substr(0, space), slot_count - 1);
    const std::string_view endpoint = text.substr(space + 1);
    const auto colon = endpoint.rfind(':');
    if (!slot || colon == std::string_view::npos) return std::nullopt;
    const auto port = parse_detail::small_number(endpoint.substr(colon + 1), 65535);
    std::string_view host = endpoint.substr(0, colon);
    if (!port || *port == 0) return std::nullopt;
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    if (host.find_first_of(" []\r\n") != std::string_view::npos) return std::nullopt;
    out.slot = static_cast<std::uint16_t>(*slot);
    out.node = node_address{std::string(host), static_cast<int>(*port)};
    return out;
}

/// The nodes CLUSTER NODES lists (its text, one node a line: id, then
/// `ip:port@cport[,hostname]`, ...), each by its address and, when it has
/// one, its host name; a node without an address yet (`:port`) is at the
/// host that was asked. Lines that do not read are skipped.
inline std::vector<node_address> nodes_listed(std::string_view text, const node_address& asked) {
    std::vector<node_address> out;
    while (!text.empty()) {
        const auto end = text.find('\n');
        std::string_view line = text.substr(0, end);
        text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
        const auto first = line.find(' ');
        if (first == std::string_view::npos) continue;
        std::string_view field = line.substr(first + 1);
        field = field.substr(0, field.find(' '));
        const auto comma = field.find(',');
        const std::string_view hostname = comma == std::string_view::npos ? std::string_view() : field.substr(comma + 1);
        const std::string_view endpoint = field.substr(0, std::min(field.find('@'), comma));
        const auto colon = endpoint.rfind(':');
        if (colon == std::string_view::npos) continue;
        const auto port = parse_detail::small_number(endpoint.substr(colon + 1), 65535);
        if (!port || *port == 0) continue;
        const std::string_view host = endpoint.substr(0, colon);
        out.push_back({host.empty() ? asked.host : std::string(host), static_cast<int>(*port)});
        if (!hostname.empty() && hostname != "?") out.push_back({std::string(hostname), static_cast<int>(*port)});
    }
    return out;
}

/// Which primary serves which slots, as CLUSTER SLOTS told it. Ranges are
/// sorted and disjoint; slots no range covers have no owner (a cluster
/// being set up, or one that lost a primary and is not `cluster_state:ok`).
class slot_map {
public:
    struct range {
        std::uint16_t first = 0;
        std::uint16_t last = 0;  ///< included, as CLUSTER SLOTS sends it
        node_address primary;
    };

    const std::vector<range>& ranges() const noexcept { return ranges_; }
    bool empty() const noexcept { return ranges_.empty(); }

    /// The primary of `slot`, if a range covers it.
    const node_address* primary(std::uint16_t slot) const noexcept {
        const auto after = std::upper_bound(ranges_.begin(), ranges_.end(), slot,
                                            [](std::uint16_t s, const range& r) { return s < r.first; });
        if (after == ranges_.begin()) return nullptr;
        const range& candidate = *(after - 1);
        return slot <= candidate.last ? &candidate.primary : nullptr;
    }

    /// Every slot has a primary: what a working cluster shows.
    bool covers_all() const noexcept {
        std::uint32_t next = 0;
        for (const range& r : ranges_) {
            if (r.first != next) return false;
            next = r.last + 1u;
        }
        return next == slot_count;
    }

    /// Reads a CLUSTER SLOTS reply: an array of [first, last, primary,
    /// replicas...], each node [host, port, id?, metadata?] (Redis 3 sent
    /// two fields, 4 to 6 three, 7 four: only the first two are read). A
    /// null or empty host is the node that answered (`asked`). Replicas are
    /// ignored: a store reads and writes on the primary only, since its
    /// lease must see its own writes. A reply of any other shape, a slot out
    /// of range or ranges that overlap are refused (protocol_error) and
    /// leave `*this` as it was.
    bool parse(const resp::reply& reply, const node_address& asked, error_info& failed) {
        using resp::reply_type;
        const auto refuse = [&failed](std::string what) {
            failed = {make_error_code(errc::protocol_error), "CLUSTER SLOTS answered " + std::move(what)};
            return false;
        };
        if (reply.type != reply_type::array) return refuse("something other than an array");
        std::vector<range> parsed;
        parsed.reserve(reply.elements.size());
        for (const resp::reply& entry : reply.elements) {
            const std::string where = "a range (entry " + std::to_string(parsed.size()) + ")";
            if (entry.type != reply_type::array || entry.elements.size() < 3)
                return refuse(where + " that is not an array of first, last and primary");
            const resp::reply& first = entry.elements[0];
            const resp::reply& last = entry.elements[1];
            if (first.type != reply_type::integer || last.type != reply_type::integer || first.integer < 0 ||
                last.integer < first.integer || last.integer >= slot_count)
                return refuse(where + " whose slots are not 0 <= first <= last <= 16383");
            const resp::reply& node = entry.elements[2];
            if (node.type != reply_type::array || node.elements.size() < 2)
                return refuse(where + " whose primary is not an array of host and port");
            const resp::reply& host = node.elements[0];
            const resp::reply& port = node.elements[1];
            const bool host_ok = host.type == reply_type::null || host.type == reply_type::bulk_string ||
                                 host.type == reply_type::simple_string;
            if (!host_ok || port.type != reply_type::integer || port.integer <= 0 || port.integer > 65535)
                return refuse(where + " whose primary's host or port is malformed");
            parsed.push_back({static_cast<std::uint16_t>(first.integer), static_cast<std::uint16_t>(last.integer),
                              resolve(node_address{host.text, static_cast<int>(port.integer)}, asked)});
        }
        std::sort(parsed.begin(), parsed.end(), [](const range& a, const range& b) { return a.first < b.first; });
        for (std::size_t i = 1; i < parsed.size(); ++i)
            if (parsed[i].first <= parsed[i - 1].last) return refuse("ranges that overlap");
        ranges_ = std::move(parsed);
        failed = {};
        return true;
    }

private:
    std::vector<range> ranges_;
};

/// Where one store's next command goes, and how a reply changes that. The
/// command loop of a store is:
///
///     route.begin_command();
///     for (;;) {
///         const route::attempt to = route.next();   // node, and whether to send ASKING first
///         ... send ASKING (if to.asking) and the command to to.node ...
///         if (I/O failed) ...                        // the store's own reconnect or learn()
///         switch (route.on_reply(reply, failed)) {
///         case route::verdict::done: return true;    // the reply is the command's
///         case route::verdict::retry: continue;      // redirected: send again
///         case route::verdict::retry_later: wait briefly, continue;
///         case route::verdict::failed: return false; // `failed` says why
///         }
///     }
///
/// A MOVED changes the node for good: the slot of a store is one, so the
/// node a MOVED names for it is all the slot map a store needs. An ASK
/// changes it for the next attempt only, preceded by ASKING (without it the
/// target, which does not own the slot yet, would answer MOVED back to the
/// source). TRYAGAIN (a script whose keys are split between source and
/// target mid-migration) is retried later on the same node, for as long as
/// the caller allows (its command timeout). Redirections of one command are
/// bounded: nodes that disagree about an owner (a failover half seen, a
/// migration set up on one side only) would otherwise send it back and
/// forth forever.
class route {
public:
    enum class verdict { done, retry, retry_later, failed };

    struct attempt {
        const node_address& node;
        bool asking;
    };

    static constexpr int default_max_redirects = 5;

    /// `key` is any of the store's names (they share a slot); `node`, the
    /// node the store was given (any node of the cluster will do).
    route(std::string_view key, node_address node, int max_redirects = default_max_redirects)
        : slot_(key_slot(key)), node_(std::move(node)), max_redirects_(max_redirects) {}

    std::uint16_t slot() const noexcept { return slot_; }
    /// Where the store's commands go when nothing is being migrated.
    const node_address& node() const noexcept { return node_; }

    /// Starts a command: its redirections are counted from zero.
    void begin_command() noexcept {
        redirects_ = 0;
        ask_.reset();
    }

    attempt next() const noexcept { return ask_ ? attempt{*ask_, true} : attempt{node_, false}; }

    /// Adopts the owner a slot map names for the slot (after the store read
    /// CLUSTER SLOTS from some node, say when its node stopped answering).
    /// False when the map has no owner for it (the cluster is not serving
    /// it) or names one with no address ('?'): the node is kept.
    bool learn(const slot_map& map) {
        const node_address* owner = map.primary(slot_);
        if (!owner || owner->host == unknown_endpoint) return false;
        node_ = *owner;
        return true;
    }

    /// Reads the reply of an attempt. Any reply other than a redirection or
    /// TRYAGAIN, error replies included, is the command's (done).
    verdict on_reply(const resp::reply& reply, error_info& failed) {
        failed = {};
        // One-shot: whatever the target answered, the next attempt starts
        // from node_, but for TRYAGAIN below.
        std::optional<node_address> asked_target = std::exchange(ask_, std::nullopt);
        const node_address asked = asked_target ? *asked_target : node_;
        if (reply.type != resp::reply_type::error) return verdict::done;
        const bool try_again = reply.text.compare(0, 9, "TRYAGAIN ") == 0 || reply.text == "TRYAGAIN";
        const std::optional<redirect> moved = parse_redirect(reply.text);
        if (!try_again && !moved) return verdict::done;
        if (try_again) {
            // Not counted: a split migration ends when the keys move, which
            // takes time rather than hops, so the caller bounds it by its
            // clock. The same node again, the target after ASKING included
            // (the source would only send the command there again).
            ask_ = std::move(asked_target);
            return verdict::retry_later;
        }
        if (++redirects_ > max_redirects_) {
            failed = {make_error_code(errc::storage_failed),
                      "Redis Cluster redirected one command more than " + std::to_string(max_redirects_) +
                          " times (slot " + std::to_string(slot_) +
                          "): its nodes disagree about the slot's owner, as in a failover or migration under way; "
                          "the next command tries again"};
            return verdict::failed;
        }
        if (moved->slot != slot_) {
            failed = {make_error_code(errc::protocol_error),
                      "Redis Cluster redirected a command for slot " + std::to_string(moved->slot) +
                          " where the store's names are in slot " + std::to_string(slot_) +
                          ": a command named a key without the store's hash tag"};
            return verdict::failed;
        }
        if (moved->node.host == unknown_endpoint) {
            failed = {make_error_code(errc::storage_failed),
                      "Redis Cluster redirected slot " + std::to_string(slot_) +
                          " to a node with no address of the preferred type ('?'): set "
                          "cluster-announce-hostname on every node, or cluster-preferred-endpoint-type to ip"};
            return verdict::failed;
        }
        node_address target = resolve(moved->node, asked);
        if (moved->kind == redirect_kind::moved)
            node_ = std::move(target);
        else
            ask_ = std::move(target);
        return verdict::retry;
    }

private:
    std::uint16_t slot_;
    node_address node_;
    std::optional<node_address> ask_;
    int max_redirects_;
    int redirects_ = 0;
};

}  // namespace tokmgr::detail::redis::cluster
