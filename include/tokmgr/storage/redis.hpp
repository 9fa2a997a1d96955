// tokmgr/storage/redis.hpp — a coordinating Storage policy on Redis, so that every process on every host that shares a Textual account
// makes one refresh per expiry between them (docs/fleet.md has the whole
// contract, the guarantees and the failure modes).
//
// - The names, for redis_options::key K: the document "{K}", the lease
//   "{K}:lease", the channel "{K}:changed". Each begins with the hash tag
//   {K}, so the three share one Redis Cluster hash slot whatever K holds
//   (Redis hashes a name's text between its first '{' and the first '}'
//   after it); a K that begins with '}' would give an empty tag and is
//   refused. Every script declares in KEYS each key it touches. Names before
//   issue 21 were "K" and "K:lease": they are never read, so an upgraded
//   store starts empty (a login, never the old refresh token; docs/fleet.md,
//   "Upgrading").
// - The document key holds exactly one token-set document
//   (storage/document.hpp), as a Redis string. Nothing else is stored there.
// - Three round trips per refresh, one script each:
//   1. lock(): `SET {K}:lease <128-bit random token> NX PX <lease_ttl>` and,
//      when taken, the document's TYPE and text. A load() right after it
//      answers from that read; any other load() sends GET.
//   2. store_if() of a spent mark while this object holds a lease: the
//      compare-and-swap below, fenced by the lease too (written only while
//      the lease holds this holder's token; false and no error otherwise),
//      answering the lease's PTTL. A holds() right after it answers true
//      from that write while the TTL, counted from before the script was
//      sent, has not run out; any other holds() sends GET and compares the
//      token: a holder paused past the TTL learns it lost the lease and
//      sends nothing.
//   3. store_if_and_release(): the compare-and-swap and, only when it wrote,
//      the lease's compare-and-delete, in one script (the manager's last
//      write of a flight, conjunct 12 of concepts.hpp). A write that is
//      refused or fails releases nothing; the lease guard's release (a Lua
//      compare-and-delete: only the holder's token is deleted) then does.
//   Anything else in between makes the next load() or holds() read Redis.
// - Every write is a Lua compare-and-swap on the generation *inside the
//   stored document*: the script decodes the document with cjson and writes
//   only when its "generation" equals the expected one. Why not a companion
//   field or hash: one value is the single source of truth, so the key holds
//   exactly the document any other reader (a file dump, redis-cli GET)
//   understands, and there is no second key that a partial edit, an
//   expiry or a `RENAME` could leave disagreeing with the document. The
//   parse costs microseconds on a document of about 1 KiB. A write repeated
//   after a lost answer finds its own document and counts as written.
// - The same script refuses to touch a value tokmgr did not write: another
//   type at the key, a string that is not a tokmgr document, a document of a
//   later version. Those are reported as errc::storage_foreign (a later
//   version: storage_failed), with what the key holds and what to do, and
//   left as they are. Not storage_corrupt:
//   that code tells the manager the bad data was moved aside and the store
//   reads as empty (file_storage), which is not so here; a store that is
//   unusable until an operator acts is a failed store, and the manager
//   treats it like one that cannot be reached (it never sends a shared
//   refresh token it cannot mark spent, and falls back to a private session).
// - After each write and each release the scripts PUBLISH on "{K}:changed";
//   a waiting lock() subscribes there, for that wait only, to retry at
//   once, and polls with growing sleeps (1 ms doubling to 50 ms)
//   because pub/sub loses messages while a connection is down.
// - Optionally `WAIT <replicas> <timeout>` after the spent mark: the refresh
//   is sent only once that many replicas hold the mark.
// - The connection is Asio's (detail/redis_connection.hpp): TCP, a Unix
//   socket, or TLS that verifies the server's certificate and host name
//   (rediss://, redis_options::tls*), never a plaintext fallback; deadlines
//   on connecting, the handshake and every command (connect_timeout,
//   command_timeout). Replies are read by the sans-I/O RESP reader
//   (detail/resp.hpp), fuzzed in the tree; hiredis is not used (why:
//   docs/fleet.md, "The connection").
//
// One object serves one thread at a time (the manager serialises its storage
// calls) over its own connection, opened on first use and reopened after a
// failure. Any number of objects may share one key, in one process or many.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "../errc.hpp"
#include "../error.hpp"
#include "../secret.hpp"
#include "../token_set.hpp"
#include "detail/redis_auth.hpp"
#include "detail/redis_cluster.hpp"
#include "detail/redis_connection.hpp"
#include "detail/resp.hpp"
#include "detail/shared_store.hpp"
#include "detail/storage_errors.hpp"
#include "document.hpp"
#include "redis_options.hpp"

namespace tokmgr {

namespace detail::redis {

/// Server text made safe for a message (storage/detail/shared_store.hpp).
inline std::string safe_text(std::string_view text, std::string_view password) {
    return safe_server_text(text, password);
}

/// KEYS[1] the document, KEYS[2] the lease; ARGV[1] the holder's token,
/// ARGV[2] the lease's TTL in ms. Takes the lease and reads the document in
/// one step, so that the load which follows needs no round trip of its own.
/// Returns {0} when another holder has the lease; else {1, type} (the
/// document's TYPE: 'none' when nothing is stored), with the text as third
/// element when it is a string. A lease that already holds this token is
/// ours: a second sending whose first went through, its answer lost.
inline constexpr const char* lease_script = R"lua(
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if redis.pcall('GET', KEYS[2]) ~= ARGV[1] then return {0} end
end
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'string' then return {1, kind, redis.call('GET', KEYS[1])} end
return {1, kind}
)lua";

/// Every write: a compare-and-swap on the generation inside the stored
/// document. KEYS[1] the document, KEYS[2] the lease; ARGV[1] the expected
/// generation, ARGV[2] the new document, ARGV[3] the new generation, ARGV[4]
/// the channel, ARGV[5] what the write does with the lease, whose holder's
/// token is ARGV[6]: '' nothing; 'fence' write only while ARGV[6] holds it
/// (the spent mark); 'release' delete it after the write, in the same step,
/// when ARGV[6] holds it (the new pair that ends a flight); nothing is
/// released when nothing was written.
/// Returns {1, pttl} written (pttl: for 'fence', the lease's remaining ms;
/// else -1), {0, stored generation} another generation is stored, {-1, type}
/// not a string, {-2} not a tokmgr document, {-3, version} a later version,
/// {-4} 'fence' and the lease is not ARGV[6]'s. The document written is the
/// one already there when it is equal (a retried call after a lost answer):
/// that counts as written.
inline constexpr const char* write_script = R"lua(
local function ours() return redis.pcall('GET', KEYS[2]) == ARGV[6] end
local kind = redis.call('TYPE', KEYS[1]).ok
local stored = 0
local same = false
if kind == 'string' then
  local text = redis.call('GET', KEYS[1])
  if text == ARGV[2] then
    same = true
  else
    local ok, doc = pcall(cjson.decode, text)
    if not ok or type(doc) ~= 'table' or doc.format ~= 'tokmgr-token-set' then return {-2} end
    if doc.version ~= 1 then return {-3, tostring(doc.version)} end
    if type(doc.generation) ~= 'number' then return {-2} end
    stored = doc.generation
  end
elseif kind ~= 'none' then
  return {-1, kind}
end
if ARGV[5] == 'fence' and not ours() then return {-4} end
if not same then
  if stored ~= tonumber(ARGV[1]) then return {0, string.format('%.0f', stored)} end
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('PUBLISH', ARGV[4], ARGV[3])
end
if ARGV[5] == 'fence' then return {1, redis.call('PTTL', KEYS[2])} end
if ARGV[5] == 'release' and ours() then
  redis.call('DEL', KEYS[2])
  redis.call('PUBLISH', ARGV[4], 'released')
end
return {1, -1}
)lua";

/// KEYS[1] the lease; ARGV[1] the holder's token, ARGV[2] the channel.
inline constexpr const char* release_script = R"lua(
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], 'released')
  return 1
end
return 0
)lua";

/// A reply that may hold the tokens, wiped when it goes.
struct wiped_reply {
    resp::reply reply;
    wiped_reply() = default;
    wiped_reply(const wiped_reply&) = delete;
    wiped_reply& operator=(const wiped_reply&) = delete;
    ~wiped_reply() { resp::secure_clear(reply); }
};

/// A command's arguments, owned (a queued asynchronous command outlives its
/// caller's strings) and wiped when they go: a write's carry the tokens.
struct command_args {
    std::vector<std::string> items;
    command_args() = default;
    command_args(std::initializer_list<std::string_view> args) {
        items.reserve(args.size());
        for (std::string_view a : args) items.emplace_back(a);
    }
    command_args(command_args&&) noexcept = default;
    command_args& operator=(command_args&&) = delete;
    command_args(const command_args&) = delete;
    command_args& operator=(const command_args&) = delete;
    ~command_args() {
        for (std::string& a : items) secure_clear(a);
    }
    std::vector<std::string_view> views() const { return {items.begin(), items.end()}; }
};

/// What the lease script read, kept for the load that comes next.
struct prefetched {
    std::string type;  ///< the document's TYPE: "none", "string", another
    secret text;       ///< a string's text
};

/// What a fenced spent mark proved: `token` held the lease until `until`.
struct fence {
    std::string token;
    std::chrono::steady_clock::time_point until;
};

// ---- Redis Cluster: what both links (this one, redis_async.hpp's) do ----

/// The route of a store's commands: from the node given.
inline cluster::route route_from(const redis_options& given) {
    return cluster::route(given.document_name(), {given.host, given.port});
}

/// The options for a node of the cluster: the given ones for the node given
/// (its Unix socket, if any), its host and port for another. Over TLS
/// another node's certificate is checked for the name the cluster announces
/// (or tls_server_name, when set: one certificate for all).
inline redis_options options_for(const redis_options& given, const cluster::node_address& node) {
    if (node == cluster::node_address{given.host, given.port}) return given;
    redis_options o = given;
    o.unix_socket.clear();
    o.host = node.host;
    o.port = node.port;
    return o;
}

/// TRYAGAIN (a script whose keys a migration has split) is sent again after
/// a pause of 1 ms doubling to 50 ms, for at most command_timeout.
inline constexpr std::chrono::milliseconds first_retry_pause{1}, longest_retry_pause{50};

/// Why a redirection was not followed (the links' member checks).
inline error_info redirect_refused(const redis_options& given, const cluster::node_address& node, bool unix_socket) {
    const std::string to = node.host + ":" + std::to_string(node.port);
    if (unix_socket)
        return storage_failure("Redis at " + given.where() + " (a Unix socket) redirected the store to " + to +
                               "; a Unix socket reaches one server, not a cluster: point the store at a cluster "
                               "node's host and port");
    return storage_failure("Redis at " + given.where() + " redirected the store to " + to +
                           ", which its cluster does not list as a node (CLUSTER NODES); not followed, so that "
                           "address receives neither the password nor the token set");
}

inline error_info migration_stalled(const redis_options& given, std::uint16_t slot) {
    return storage_failure("Redis Cluster at " + given.where() + " answered TRYAGAIN for " +
                           std::to_string(given.command_timeout.count()) + " ms: the migration of slot " +
                           std::to_string(slot) + " has left the store's keys on two nodes; the next call tries again");
}

/// One connection and what it failed with. Shared by the store and its
/// leases (a lease is released over it), hence the mutex.
class link {
public:
    explicit link(redis_options options) : options_(std::move(options)), route_(route_from(options_)) {}

    const redis_options& options() const noexcept { return options_; }
    std::mutex& mutex() noexcept { return mutex_; }

    /// Runs one command; true with its reply in `out` (an error reply is a
    /// reply), or false with `failed` set (a sentence naming the server and
    /// what to do). On Redis Cluster it follows the slot: MOVED sends this
    /// and later commands to the owner it names, ASK this one to the
    /// migration's target, TRYAGAIN (a script whose keys a migration has
    /// split) is sent again after a pause, within command_timeout.
    bool command(const std::vector<std::string_view>& args, resp::reply& out, error_info& failed) {
        forget();  // what an earlier command left is for the call right after it only
        route_.begin_command();
        auto pause = first_retry_pause;
        const auto give_up = std::chrono::steady_clock::now() + options_.command_timeout;
        // Once one sending may have been carried out (its answer lost), no
        // later failure of the same command may say that nothing went out:
        // the manager would take a write that landed for one that did not.
        bool may_have_run = false;
        const auto fail = [&] {
            if (may_have_run && failed.code == errc::storage_unreachable)
                failed.code = make_error_code(errc::storage_failed);
            return false;
        };
        for (;;) {
            // Copied: the route's answer to on_reply() changes what its
            // attempt refers to.
            const cluster::node_address asked = route_.next().node;
            const bool asking = route_.next().asking;
            const bool sent = asking ? send_asking(asked, args, out, failed, may_have_run)
                                     : send(node_connection(asked), args, out, failed, may_have_run);
            if (!sent) {
                // The owner learned from a MOVED may be gone (a failover):
                // the next command starts again from the node given, which
                // redirects it to whoever owns the slot then.
                if (!asking) reset_route();
                return fail();
            }
            switch (route_.on_reply(out, failed)) {
            case cluster::route::verdict::done: return true;
            case cluster::route::verdict::retry:
                if (!member(route_.next().node, asked, asking, failed)) {
                    reset_route();  // the route already points there: the next command starts from the node given
                    return fail();
                }
                continue;
            case cluster::route::verdict::failed: return fail();
            case cluster::route::verdict::retry_later:
                if (std::chrono::steady_clock::now() + pause > give_up) {
                    failed = migration_stalled(options_, route_.slot());
                    return fail();
                }
                std::this_thread::sleep_for(pause);
                pause = std::min(pause * 2, longest_retry_pause);
                continue;
            }
        }
    }

    /// The lease's release, under the mutex: the compare-and-delete script.
    void release_lease(const std::string& token) {
        forget_lease(token);
        const std::string lease_name = options_.lease_name(), channel = options_.channel_name();
        error_info ignored;
        resp::reply answer;
        command({"EVAL", release_script, "1", lease_name, token, channel}, answer, ignored);
    }

    // ---- what one call leaves for the next, under the mutex ---------------
    // Kept for the very next call on this connection only: any command sent
    // (command() above) or any other call of the store forgets them.

    /// The lease this connection's store took last and has not released: the
    /// spent mark is fenced by it.
    const std::string& held_token() const noexcept { return held_token_; }
    void hold(std::string token) { held_token_ = std::move(token); }
    void forget_lease(const std::string& token) noexcept {
        if (token == held_token_) held_token_.clear();
    }

    void keep(prefetched document) { prefetched_ = std::move(document); }
    void keep(fence proof) { fence_ = std::move(proof); }
    std::optional<prefetched> take_prefetched() noexcept {
        std::optional<prefetched> out = std::move(prefetched_);
        prefetched_.reset();
        return out;
    }
    std::optional<fence> take_fence() noexcept {
        std::optional<fence> out = std::move(fence_);
        fence_.reset();
        return out;
    }
    void forget() noexcept {
        prefetched_.reset();
        fence_.reset();
    }

    // ---- the subscriber connection, for a waiting lock() ------------------

    /// Waits up to `timeout` for a message on the channel; true when one
    /// came. Without a usable subscription (it could not be made, or broke)
    /// it sleeps instead, and the caller's polling carries on.
    bool wait_for_change(std::chrono::milliseconds timeout, const std::string& channel) {
        if (!subscriber_) {
            // A subscription that cannot be made (an ACL without SUBSCRIBE,
            // a server going down) is tried again only after a pause, not at
            // every poll step.
            const auto now = std::chrono::steady_clock::now();
            if (now < no_subscription_until_ || !subscribe(channel)) {
                if (now >= no_subscription_until_) no_subscription_until_ = now + std::chrono::seconds(5);
                std::this_thread::sleep_for(timeout);
                return false;
            }
        }
        resp::reply message;
        error_info failed;
        if (!subscriber_->next_message(timeout, message, failed)) {
            if (failed) subscriber_.reset();
            return false;
        }
        // Messages already here say the same: one retry answers them all.
        while (subscriber_->next_message(std::chrono::milliseconds(0), message, failed)) {
        }
        if (failed) subscriber_.reset();
        return true;
    }

    /// Ends a wait: closes the subscriber connection rather than keeping it
    /// subscribed for the object's lifetime, where every object that ever
    /// waited would hold a connection and a subscription on the server
    /// (one per manager of a fleet). Waits are rare (a contended refresh),
    /// so the next one paying for a new connection costs little.
    void stop_waiting() noexcept { subscriber_.reset(); }

private:
    /// Sends one command on `c`. A command on a kept connection that fails
    /// on I/O is sent once more on a new one: the server may have restarted
    /// since the connection was last used. Every command tokmgr sends may be
    /// repeated safely (the scripts recognise their own write).
    /// `may_have_run` is set when a sending failed after its bytes may have
    /// gone out.
    static bool send(connection& c, const std::vector<std::string_view>& args, resp::reply& out, error_info& failed,
                     bool& may_have_run) {
        for (int attempt = 0; attempt < 2; ++attempt) {
            const bool fresh = !c.is_open();
            if (fresh && !c.connect(failed)) return false;
            if (c.command(args, out, failed)) return true;  // it clears a first attempt's failure
            if (failed.code != errc::storage_unreachable) may_have_run = true;
            if (fresh) return false;  // a new connection that failed: asking again would fail alike
        }
        return false;
    }

    /// ASKING, then the command, on a connection to the migration's target
    /// (kept for the next ASK: a migration sends several).
    bool send_asking(const cluster::node_address& node, const std::vector<std::string_view>& args,
                     resp::reply& out, error_info& failed, bool& may_have_run) {
        if (!asking_ || asking_node_ != node) {
            asking_ = std::make_unique<connection>(options_for(options_, node));
            asking_node_ = node;
        }
        bool asking_ran = false;  // ASKING alone changes nothing
        if (!send(*asking_, {"ASKING"}, out, failed, asking_ran)) return false;
        if (out.type == resp::reply_type::error) return true;  // the target's refusal is the command's answer
        if (asking_->command(args, out, failed)) return true;  // not sent again: ASKING holds for one command
        if (failed.code != errc::storage_unreachable) may_have_run = true;
        return false;
    }

    /// Whether `node`, where a redirection points, is a node of the cluster
    /// as the node that redirected there lists it (CLUSTER NODES). A store
    /// sends its password and the token set to the nodes it follows, so it
    /// follows no redirection from a server that is not a cluster node, none
    /// to a node its cluster does not list, and none from a Unix socket
    /// (one server, whose traffic never leaves the host).
    bool member(const cluster::node_address& node, const cluster::node_address& asked_node, bool asked_target,
                error_info& failed) {
        if (members_.count(node)) return true;
        if (!options_.unix_socket.empty()) return failed = redirect_refused(options_, node, true), false;
        connection& asked = asked_target ? *asking_ : *connection_;
        resp::reply listed;
        error_info ignored;
        bool ignored_run = false;
        if (send(asked, {"CLUSTER", "NODES"}, listed, ignored, ignored_run) &&
            listed.type != resp::reply_type::error) {
            for (cluster::node_address& known : cluster::nodes_listed(listed.text, asked_node)) members_.insert(known);
        }
        if (members_.count(node)) return true;
        return failed = redirect_refused(options_, node, false), false;
    }

    /// The connection to `node`, opened anew when the route moved.
    connection& node_connection(const cluster::node_address& node) {
        if (!connection_ || connected_node_ != node) {
            connection_ = std::make_unique<connection>(options_for(options_, node));
            connected_node_ = node;
            asking_.reset();  // a MOVED ended the migration the target was asked for
        }
        return *connection_;
    }

    void reset_route() { route_ = route_from(options_); }

    bool subscribe(const std::string& channel) {
        auto subscriber = std::make_unique<connection>(options_);
        error_info ignored;
        resp::reply answer;
        if (!subscriber->command({"SUBSCRIBE", channel}, answer, ignored)) return false;
        if (answer.type != resp::reply_type::array && answer.type != resp::reply_type::push) return false;
        subscriber_ = std::move(subscriber);
        return true;
    }

    redis_options options_;
    std::mutex mutex_;
    cluster::route route_;  // on a single server, always the node given
    std::set<cluster::node_address> members_;  // the cluster's nodes, as a node listed them
    std::unique_ptr<connection> connection_;
    cluster::node_address connected_node_;
    std::unique_ptr<connection> asking_;  // to a migration's target
    cluster::node_address asking_node_;
    std::unique_ptr<connection> subscriber_;
    std::chrono::steady_clock::time_point no_subscription_until_{};
    std::string held_token_;
    std::optional<prefetched> prefetched_;
    std::optional<fence> fence_;
};

}  // namespace detail::redis


class redis_storage : public detail::storage_errors<redis_storage> {
public:
    /// The lease: while an object lives (and is not moved from), this holder
    /// owns "{<key>}:lease" — until it is released or its TTL runs out,
    /// whichever comes first; `holds` tells which. Its release is a Lua
    /// compare-and-delete (a lease that lapsed and went to another holder is
    /// left to it).
    using lease = detail::shared_lease<detail::redis::link>;

    /// Connects on first use, not here.
    explicit redis_storage(redis_options options = {})
        : link_(std::make_shared<detail::redis::link>(std::move(options))) {}

    /// A copy has the same options and a connection of its own.
    redis_storage(const redis_storage& other) : link_(std::make_shared<detail::redis::link>(other.options())) {}
    redis_storage& operator=(const redis_storage& other) {
        if (this != &other) link_ = std::make_shared<detail::redis::link>(other.options());
        return *this;
    }
    redis_storage(redis_storage&&) noexcept = default;
    redis_storage& operator=(redis_storage&&) noexcept = default;

    const redis_options& options() const noexcept { return link_->options(); }
    std::string document_key() const { return options().document_name(); }
    std::string lease_key() const { return options().lease_name(); }
    std::string channel() const { return options().channel_name(); }

    /// The stored set; nullopt with no error when the key does not exist.
    /// Right after a lock() that took the lease, the document that lock()
    /// read with it, without a round trip; otherwise read from Redis.
    /// errc::storage_unreachable: no connection could be made;
    /// errc::storage_failed: the server failed or refused us, or the key is
    /// refused (redis_options::document_name); errc::storage_foreign: the key
    /// holds something tokmgr did not write (another type, a string that is
    /// not a document this build reads: left as it is; the detail says what
    /// it is and what to do).
    std::optional<token_set> load(std::error_code& ec) {
        clear_error(ec);
        std::lock_guard<std::mutex> lock(link_->mutex());
        if (auto read = link_->take_prefetched()) return interpret(*read, ec);
        link_->forget();
        if (refused_key(ec)) return std::nullopt;
        return read_current(ec);
    }

    /// Unconditional write (the Storage policy's `store`); refuses, as
    /// store_if does, to replace a value tokmgr did not write.
    void store(const token_set& set, std::error_code& ec) {
        clear_error(ec);
        std::lock_guard<std::mutex> lock(link_->mutex());
        link_->forget();
        if (refused_key(ec)) return;
        for (int attempt = 0; attempt < 8; ++attempt) {
            const auto current = read_current(ec);
            if (ec) return;
            if (write(set, current ? current->generation : 0, lease_use::none, {}, ec).written || ec) return;
        }
        fail(ec, errc::storage_failed,
             "store to " + options().where() + ": the key kept changing under this write; retry");
    }

    /// Takes the lease, waiting at most `max_wait` (plus one poll step of at
    /// most 50 ms), and reads the document in the same script, for the load()
    /// that follows. errc::lease_timeout when another holder kept it longer;
    /// errc::storage_failed when Redis cannot be reached (at once: a store
    /// that cannot be reached gives no lease to wait for).
    lease lock(std::chrono::milliseconds max_wait, std::error_code& ec) {
        clear_error(ec);
        const auto deadline = std::chrono::steady_clock::now() + max_wait;
        std::lock_guard<std::mutex> lock(link_->mutex());
        link_->forget();
        if (refused_key(ec)) return {};
        const std::string token = random_token();
        const std::string key = lease_key(), document = document_key(),
                          ttl = std::to_string(std::max<std::int64_t>(options().lease_ttl.count(), 1));
        struct wait_end {
            detail::redis::link& link;
            ~wait_end() { link.stop_waiting(); }
        } end_of_wait{*link_};
        using detail::lease_attempt;
        std::optional<detail::redis::prefetched> read;
        const lease_attempt got = detail::take_lease_until(
            deadline,
            [&] {
                error_info failed;
                detail::redis::wiped_reply r;
                if (!link_->command({"EVAL", detail::redis::lease_script, "2", document, key, token, ttl}, r.reply,
                                    failed)) {
                    io_failed(ec, failed, "taking the lease " + key);
                    return lease_attempt::failed;
                }
                return lease_answered(r.reply, read, ec);
            },
            [&](std::chrono::milliseconds step) { link_->wait_for_change(step, channel()); });
        if (got == lease_attempt::taken) {
            link_->hold(token);
            link_->keep(std::move(*read));
            return lease(link_, token);
        }
        if (got == lease_attempt::held_elsewhere) lease_timed_out(max_wait, ec);
        return {};
    }

    /// Whether `held` is still this holder's lease: false when it was
    /// released or its TTL ran out (another holder may have it now). Right
    /// after a spent mark that store_if wrote fenced by this lease, answered
    /// from that write (the lease was this holder's then, with a TTL not yet
    /// run out), without a round trip; otherwise read from Redis.
    /// errc::storage_failed (and false) when Redis cannot be asked.
    bool holds(const lease& held, std::error_code& ec) {
        clear_error(ec);
        if (!held) return false;
        std::lock_guard<std::mutex> lock(link_->mutex());
        const auto proof = link_->take_fence();
        link_->forget();
        if (proof && proof->token == held.token() && std::chrono::steady_clock::now() < proof->until) return true;
        error_info failed;
        detail::resp::reply r;
        if (!link_->command({"GET", lease_key()}, r, failed)) {
            io_failed(ec, failed, "checking the lease " + lease_key());
            return false;
        }
        return holder_answered(r, held.token());
    }

    /// Compare-and-swap on the generation, atomic in Redis (one script):
    /// writes `set` only when the stored document's generation equals
    /// `expected_generation` (0: the key does not exist). False and no error
    /// when it differs. A spent mark written while this object holds a lease
    /// is fenced by it too: false and no error when the lease is no longer
    /// this holder's (nothing is written then). A value tokmgr did not write
    /// is never replaced: false with storage_foreign (another type, not a
    /// tokmgr document) or storage_failed (a document of a later version).
    /// For a spent mark
    /// with wait_replicas set, false with storage_failed when too few
    /// replicas acknowledged it in time.
    bool store_if(const token_set& set, std::uint64_t expected_generation, std::error_code& ec) {
        clear_error(ec);
        if (!generation_increases(set, expected_generation, ec)) return false;
        std::lock_guard<std::mutex> lock(link_->mutex());
        link_->forget();
        if (refused_key(ec)) return false;
        const std::string token = set.refresh_token_spent ? link_->held_token() : std::string();
        const auto sent = std::chrono::steady_clock::now();
        const write_result written =
            write(set, expected_generation, token.empty() ? lease_use::none : lease_use::fence, token, ec);
        if (!written.written) return false;
        if (set.refresh_token_spent && !acknowledged_by_replicas(ec)) return false;
        // The lease was ours when the script ran, and no earlier than `sent`
        // had this long left: holds() may answer from that until then.
        if (!token.empty() && written.lease_left > 0)
            link_->keep(detail::redis::fence{token, sent + std::chrono::milliseconds(written.lease_left)});
        return true;
    }

    /// store_if, and the lease released in the same script when the set was
    /// written: the write is in Redis before, or with, the lease's end, never
    /// after it. `held` is empty afterwards when it was released; when
    /// nothing was written (false, with or without an error) it is still
    /// held, and its owner releases it as usual. A spent mark with
    /// wait_replicas set is written by store_if and not released here (the
    /// WAIT comes first). The manager calls this for the last write of a
    /// flight: three round trips per refresh (lease with the read, fenced
    /// mark, new pair with the release).
    bool store_if_and_release(const token_set& set, std::uint64_t expected_generation, lease& held,
                              std::error_code& ec) {
        if (!held || (set.refresh_token_spent && options().wait_replicas > 0))
            return store_if(set, expected_generation, ec);
        clear_error(ec);
        if (!generation_increases(set, expected_generation, ec)) return false;
        std::lock_guard<std::mutex> lock(link_->mutex());
        link_->forget();
        if (refused_key(ec)) return false;
        if (!write(set, expected_generation, lease_use::release, held.token(), ec).written) return false;
        link_->forget_lease(held.token());
        held.abandon();  // released by the script (or no longer ours): nothing left to release
        return true;
    }

    // The throwing overloads and last_error() come from detail::storage_errors.
    using detail::storage_errors<redis_storage>::load;
    using detail::storage_errors<redis_storage>::store;
    using detail::storage_errors<redis_storage>::lock;
    using detail::storage_errors<redis_storage>::holds;
    using detail::storage_errors<redis_storage>::store_if;

protected:
    // What follows reads replies without doing I/O, so that the blocking
    // members above and the asynchronous ones (redis_async.hpp) say the same
    // thing about the same answer.
    enum class lease_use { none, fence, release };
    struct write_result {
        bool written = false;
        long long lease_left = -1;  ///< fence: the lease's remaining ms
    };

    std::string server_text(const detail::resp::reply& r) const {
        using detail::resp::reply_type;
        if (r.type != reply_type::error && r.type != reply_type::simple_string && r.type != reply_type::bulk_string)
            return "an unexpected answer";
        return detail::redis::safe_text(r.text, options().password.reveal());
    }

    /// What the lease script answered: taken (the document it read kept in
    /// `read`), held elsewhere, or a failure set in `ec`.
    detail::lease_attempt lease_answered(const detail::resp::reply& r, std::optional<detail::redis::prefetched>& read,
                                         std::error_code& ec) {
        using detail::lease_attempt;
        using detail::resp::reply_type;
        const std::string key = lease_key();
        if (r.type == reply_type::error) {
            fail(ec, errc::storage_failed, "taking the lease " + key + " on " + options().where() + ": " +
                                               server_text(r) + "; check the server's configuration");
            return lease_attempt::failed;
        }
        const auto& e = r.elements;
        if (r.type != reply_type::array || e.empty() || e[0].type != reply_type::integer ||
            (e[0].integer == 1 && (e.size() < 2 || e[1].type != reply_type::bulk_string))) {
            fail(ec, errc::storage_failed, "taking the lease " + key + " on " + options().where() + ": an unexpected answer");
            return lease_attempt::failed;
        }
        if (e[0].integer == 0) return lease_attempt::held_elsewhere;
        detail::redis::prefetched doc;
        doc.type = e[1].text;
        if (e.size() > 2 && e[2].type == reply_type::bulk_string) doc.text = secret(e[2].text);
        read = std::move(doc);
        return lease_attempt::taken;
    }

    std::string not_ours(std::string_view what) const {
        return "the key " + document_key() + " on " + options().where() + " holds " + std::string(what) +
               "; tokmgr never overwrites or deletes what it did not write: if no other program uses this key, "
               "delete it (redis-cli DEL " + document_key() + ") and the next login writes a new one, or choose "
               "another key";
    }

    /// A key whose names could not share a Cluster slot (redis_options::
    /// document_name) is refused before anything is sent.
    bool refused_key(std::error_code& ec) {
        if (!options().key.empty() && options().key.front() != '}') return false;
        fail(ec, errc::storage_failed,
             "the Redis key \"" + options().key + "\" on " + options().where() +
                 " is empty or begins with '}', so its names cannot share one Redis Cluster hash slot; choose "
                 "another key");
        return true;
    }

    /// A command that got no answer: what it was doing, and why.
    void io_failed(std::error_code& ec, const error_info& failed, const std::string& doing) {
        fail(ec, detail::code_of(failed), doing + ": " + failed.detail);
    }

    void lease_timed_out(std::chrono::milliseconds max_wait, std::error_code& ec) {
        fail(ec, errc::lease_timeout,
             "the lease " + lease_key() + " on " + options().where() + " was held by another process for longer than " +
                 std::to_string(max_wait.count()) +
                 " ms; retry later, or wait longer (lease_wait); a holder that died frees it after " +
                 std::to_string(options().lease_ttl.count()) + " ms (lease_ttl)");
    }

    /// What GET of the lease answered: whether `token` holds it.
    static bool holder_answered(const detail::resp::reply& r, const std::string& token) {
        return r.type == detail::resp::reply_type::bulk_string && r.text == token;
    }

    /// The WAIT command after a spent mark (empty when none is asked for).
    detail::redis::command_args wait_command() const {
        if (options().wait_replicas <= 0) return {};
        return {"WAIT", std::to_string(options().wait_replicas), std::to_string(options().wait_timeout.count())};
    }

    /// WAIT for wait_replicas after a spent mark; under the link's mutex.
    bool acknowledged_by_replicas(std::error_code& ec) {
        const detail::redis::command_args wait = wait_command();
        if (wait.items.empty()) return true;
        error_info failed;
        detail::resp::reply r;
        const bool answered = link_->command(wait.views(), r, failed);
        return replicas_answered(answered, r, failed, ec);
    }

    /// What WAIT answered (`answered` false: nothing, for `failed`).
    bool replicas_answered(bool answered, const detail::resp::reply& r, const error_info& failed, std::error_code& ec) {
        const int replicas = options().wait_replicas;
        const std::string n = std::to_string(replicas), ms = std::to_string(options().wait_timeout.count());
        if (!answered || r.type != detail::resp::reply_type::integer) {
            fail(ec, errc::storage_failed,
                 "waiting for replicas to acknowledge the spent mark on " + options().where() + ": " +
                     (answered ? server_text(r) : failed.detail) + "; nothing was sent");
            return false;
        }
        if (r.integer < replicas) {
            fail(ec, errc::storage_failed,
                 "the spent mark on " + options().where() + " reached " + std::to_string(r.integer) + " of " + n +
                     " replicas within " + ms +
                     " ms, so a failover could lose it; nothing was sent (check the replicas, or lower "
                     "wait_replicas)");
            return false;
        }
        return true;
    }

    /// GET and decode; under the link's mutex.
    std::optional<token_set> read_current(std::error_code& ec) {
        error_info failed;
        detail::redis::wiped_reply answer;  // it holds the tokens
        if (!link_->command({"GET", document_key()}, answer.reply, failed)) {
            io_failed(ec, failed, "reading the token set");
            return std::nullopt;
        }
        bool ask_type = false;
        auto set = current_answered(answer.reply, ask_type, ec);
        if (ask_type) {
            detail::resp::reply t;
            foreign_type(link_->command({"TYPE", document_key()}, t, failed) ? &t : nullptr, ec);
        }
        return set;
    }

    /// What TYPE answered (null: nothing) about a key that holds another type.
    void foreign_type(const detail::resp::reply* t, std::error_code& ec) {
        std::string kind = "a value of another type";
        if (t && t->type == detail::resp::reply_type::simple_string)
            kind = "a " + detail::redis::safe_text(t->text, {}) + ", not a tokmgr token-set document";
        fail(ec, errc::storage_foreign, not_ours(kind));
    }

    /// What GET of the document answered. `ask_type` set: the key holds
    /// another type, which TYPE names (then foreign_type sets the error).
    std::optional<token_set> current_answered(const detail::resp::reply& r, bool& ask_type, std::error_code& ec) {
        if (r.type == detail::resp::reply_type::null) return std::nullopt;
        if (r.type == detail::resp::reply_type::error) {
            const std::string said = server_text(r);
            if (said.rfind("WRONGTYPE", 0) == 0) {
                ask_type = true;
            } else if (said.rfind("NOAUTH", 0) == 0) {
                fail(ec, errc::storage_failed,
                     "Redis at " + options().where() +
                         " requires a password; set TOKMGR_REDIS_PASSWORD or redis_options::password");
            } else {
                fail(ec, errc::storage_failed,
                     "reading " + document_key() + " on " + options().where() + ": Redis said: " + said);
            }
            return std::nullopt;
        }
        if (r.type != detail::resp::reply_type::bulk_string) {
            fail(ec, errc::storage_failed,
                 "reading " + document_key() + " on " + options().where() + ": an unexpected answer to GET");
            return std::nullopt;
        }
        return decoded(r.text, ec);
    }

    /// What the lease script read, as read_current would have answered it.
    std::optional<token_set> interpret(const detail::redis::prefetched& read, std::error_code& ec) {
        if (read.type == "none") return std::nullopt;
        if (read.type == "string") return decoded(read.text.reveal(), ec);
        fail(ec, errc::storage_foreign,
             not_ours("a " + detail::redis::safe_text(read.type, {}) + ", not a tokmgr token-set document"));
        return std::nullopt;
    }

    std::optional<token_set> decoded(std::string_view text, std::error_code& ec) {
        error_info unreadable;
        auto set = decode_token_set(text, unreadable);
        if (set) return set;
        fail(ec, errc::storage_foreign, not_ours("a value that is not a readable tokmgr token-set document (" +
                                                 unreadable.detail + ")"));
        return std::nullopt;
    }

    /// The write script; under the link's mutex.
    write_result write(const token_set& set, std::uint64_t expected, lease_use use, std::string_view token,
                       std::error_code& ec) {
        detail::redis::command_args args;
        if (!write_command(set, expected, use, token, args, ec)) return {};
        error_info failed;
        detail::resp::reply r;
        if (!link_->command(args.views(), r, failed)) {
            io_failed(ec, failed, "storing the token set");
            return {};
        }
        return write_answered(r, ec);
    }

    /// The write script's command for `set`; false (with `ec`) when the set
    /// cannot be encoded.
    bool write_command(const token_set& set, std::uint64_t expected, lease_use use, std::string_view token,
                       detail::redis::command_args& out, std::error_code& ec) {
        error_info refused;
        secret text = encode_token_set(set, refused);
        if (refused) {
            fail(ec, errc::storage_failed, "cannot store to " + options().where() + ": " + refused.detail);
            return false;
        }
        const char* mode = use == lease_use::fence ? "fence" : use == lease_use::release ? "release" : "";
        detail::redis::command_args built{"EVAL", detail::redis::write_script, "2", document_key(), lease_key(),
                                          std::to_string(expected), text.reveal(), std::to_string(set.generation),
                                          channel(), mode, token};
        out.items.swap(built.items);  // what `out` held goes with `built`, wiped
        return true;
    }

    /// What the write script answered.
    write_result write_answered(const detail::resp::reply& r, std::error_code& ec) {
        using detail::resp::reply_type;
        if (r.type == reply_type::error) {
            const std::string said = server_text(r);
            fail(ec, errc::storage_failed,
                 "storing the token set on " + options().where() + ": Redis said: " + said +
                     (said.rfind("NOAUTH", 0) == 0 ? "; set TOKMGR_REDIS_PASSWORD" : ""));
            return {};
        }
        const auto& e = r.elements;
        if (r.type != reply_type::array || e.empty() || e[0].type != reply_type::integer) {
            fail(ec, errc::storage_failed, "storing the token set on " + options().where() + ": an unexpected answer");
            return {};
        }
        auto second = [&] {
            return e.size() > 1 && e[1].type == reply_type::bulk_string ? detail::redis::safe_text(e[1].text, {})
                                                                        : std::string("?");
        };
        switch (e[0].integer) {
        case 1: {
            write_result out;
            out.written = true;
            if (e.size() > 1 && e[1].type == reply_type::integer) out.lease_left = e[1].integer;
            return out;
        }
        case 0:
        case -4: return {};  // another generation is stored, or the fencing lease is gone
        case -1: fail(ec, errc::storage_foreign, not_ours("a " + second() + ", not a tokmgr token-set document")); return {};
        case -3:
            fail(ec, errc::storage_failed,
                 "the key " + document_key() + " on " + options().where() + " holds a token-set document of version " +
                     second() + ", newer than this build of tokmgr reads (version " +
                     std::to_string(token_set_version) + "); upgrade tokmgr (it was not overwritten)");
            return {};
        default:
            fail(ec, errc::storage_foreign, not_ours("a value that is not a tokmgr token-set document"));
            return {};
        }
    }

    static std::string random_token() { return detail::random_lease_token(); }

    std::shared_ptr<detail::redis::link> link_;
};

}  // namespace tokmgr
