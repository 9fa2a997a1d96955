// tokmgr/storage/redis_async.hpp — redis_storage with the asynchronous form
// of the Storage concept (members 6–11 of concepts.hpp), so that an
// asynchronous manager never blocks its executor on Redis: without it, the
// manager runs the blocking store on a storage thread of its own, and a
// stalled server holds that thread for a command_timeout per command.
//
// - A second connection of its own (detail/redis_connection.hpp, on the
//   executor given in the options, in a strand) runs one command at a time;
//   the others queue, because a RESP connection answers in order and the
//   Asio connection runs one exchange at a time. The blocking members (1–5,
//   12) stay usable and keep their own connection. On Redis Cluster it
//   follows MOVED, ASK and TRYAGAIN as the blocking store does.
// - The same scripts and the same reading of their answers as the blocking
//   store (redis_storage's protected members), so both say the same thing
//   about the same reply, and the same retry rule as its link: a command on
//   a kept connection that fails on I/O is sent once more on a new one.
// - The lease and its read in one script, and a spent mark fenced by the
//   lease (async_holds answers from it without a round trip), as in the
//   blocking store. The concept has no asynchronous store_if_and_release, so
//   the manager's last write and the release are two commands here.
// - A lease wait polls (1 ms doubling to 50 ms, on a timer) rather than
//   SUBSCRIBE: a subscribed connection can send nothing else, and this one
//   is the one the other operations queue on.
// - The connection is owned by a shared object that every pending operation
//   holds, so the store may be destroyed with operations pending: each
//   handler is still called once (errc::shut_down when the store has gone).
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>

#include "redis.hpp"

namespace tokmgr {

/// redis_options and the executor the asynchronous members run on.
struct redis_async_options : redis_options {
    asio::any_io_executor executor;
};

namespace detail::redis {

/// The asynchronous connection: a queue of commands, run one at a time on
/// the link's strand (every connection it opens runs there too). Each
/// completion is called once, on that strand. On Redis Cluster it follows
/// the slot as the blocking link does (route_from, options_for): MOVED for
/// this and later commands, ASK with ASKING for this one, TRYAGAIN again on
/// a timer within command_timeout.
class async_link : public std::enable_shared_from_this<async_link> {
public:
    /// Called with the reply (an error reply is a reply), or what failed.
    using completion = std::function<void(error_info, resp::reply)>;

    async_link(redis_options options, const asio::any_io_executor& executor)
        : options_(std::move(options)), strand_(asio::make_strand(executor)), route_(route_from(options_)) {}

    void command(command_args args, completion done) {
        auto op = std::make_shared<operation>(operation{std::move(args), std::move(done)});
        asio::post(strand_, [self = shared_from_this(), op] {
            self->queue_.push_back(op);
            if (!self->busy_) self->start_next();
        });
    }

    /// Calls `f` on the strand after `delay`.
    void after(std::chrono::milliseconds delay, std::function<void()> f) {
        auto timer = std::make_shared<asio::steady_timer>(strand_, delay);
        timer->async_wait([self = shared_from_this(), timer, f = std::move(f)](const std::error_code&) { f(); });
    }

private:
    struct operation {
        command_args args;
        completion done;
        bool retried = false;       // sent once more on a new connection after an I/O failure
        bool may_have_run = false;  // a sending failed after its bytes may have gone out
        bool begun = false;
        std::chrono::milliseconds pause = first_retry_pause;
        std::chrono::steady_clock::time_point give_up{};
    };

    void start_next() {
        busy_ = !queue_.empty();
        if (busy_) send();
    }

    void send() {
        operation& op = *queue_.front();
        if (!op.begun) {
            op.begun = true;
            route_.begin_command();
            op.give_up = std::chrono::steady_clock::now() + options_.command_timeout;
        }
        const cluster::route::attempt attempt = route_.next();
        connection& c = attempt.asking ? to_target(attempt.node) : to_node(attempt.node);
        const bool fresh = !c.is_open(), asking = attempt.asking;
        auto then = [self = shared_from_this(), fresh, asking](error_info failed, resp::reply out) {
            self->answered(fresh, asking, std::move(failed), std::move(out));
        };
        if (!asking) return c.async_command(op.args.views(), std::move(then));
        // ASKING holds for the one command after it, on that connection.
        c.async_command({"ASKING"}, [self = shared_from_this(), &c, then](error_info failed, resp::reply out) mutable {
            if (failed || out.type == resp::reply_type::error) return then(std::move(failed), std::move(out));
            c.async_command(self->queue_.front()->args.views(), std::move(then));
        });
    }

    void answered(bool fresh, bool asking, error_info failed, resp::reply out) {
        operation& op = *queue_.front();
        if (failed) {
            if (failed.code != errc::storage_unreachable) op.may_have_run = true;
            (asking ? asking_ : connection_)->close();  // the next command connects again
            // The server may have restarted since the connection was last
            // used; every command tokmgr sends may be repeated safely.
            if (!fresh && !asking && !op.retried) {
                op.retried = true;
                return send();
            }
            // Unreachable only if nothing went out: an earlier sending may
            // have been carried out.
            if ((op.retried || op.may_have_run) && failed.code == errc::storage_unreachable)
                failed.code = make_error_code(errc::storage_failed);
            // An owner learned from a MOVED may be gone (a failover): the
            // next command starts again from the node given.
            if (!asking) route_ = route_from(options_);
            return complete(std::move(failed), std::move(out));
        }
        switch (route_.on_reply(out, failed)) {
        case cluster::route::verdict::done: return complete({}, std::move(out));
        case cluster::route::verdict::retry: return follow(asking);
        case cluster::route::verdict::failed: return complete(std::move(failed), {});
        case cluster::route::verdict::retry_later:
            if (std::chrono::steady_clock::now() + op.pause > op.give_up)
                return complete(migration_stalled(options_, route_.slot()), {});
            after(op.pause, [self = shared_from_this()] { self->send(); });
            op.pause = std::min(op.pause * 2, longest_retry_pause);
            return;
        }
    }

    /// Sends the command where the route now points once that node is a
    /// member of the cluster, as the node that redirected there lists it
    /// (the blocking link's member(), for the same reason: the password and
    /// the token set go where the store follows).
    void follow(bool asked_target) {
        const cluster::node_address next = route_.next().node;
        if (members_.count(next)) return send();
        if (!options_.unix_socket.empty()) return complete(not_followed(next, true), {});
        connection& asked = asked_target ? *asking_ : *connection_;
        const cluster::node_address asked_node = asked_target ? asking_node_ : connected_node_;
        asked.async_command({"CLUSTER", "NODES"}, [self = shared_from_this(), next, asked_node](error_info failed,
                                                                                              resp::reply listed) {
            if (!failed && listed.type != resp::reply_type::error)
                for (cluster::node_address& known : cluster::nodes_listed(listed.text, asked_node))
                    self->members_.insert(known);
            if (self->members_.count(next)) return self->send();
            self->complete(self->not_followed(next, false), {});
        });
    }

    /// Why the route's redirection is refused; the route, which already
    /// points there, starts again from the node given.
    error_info not_followed(const cluster::node_address& node, bool unix_socket) {
        route_ = route_from(options_);
        return redirect_refused(options_, node, unix_socket);
    }

    void complete(error_info failed, resp::reply out) {
        operation& op = *queue_.front();
        if (failed && op.may_have_run && failed.code == errc::storage_unreachable)
            failed.code = make_error_code(errc::storage_failed);
        const std::shared_ptr<operation> done = std::move(queue_.front());
        queue_.pop_front();
        done->done(std::move(failed), std::move(out));
        start_next();
    }

    /// The connection to `node`, opened anew when the route moved. One that
    /// is replaced goes at the strand's next turn, after the handler that
    /// replaced it has returned into its code.
    connection& to_node(const cluster::node_address& node) {
        if (!connection_ || connected_node_ != node) {
            retire(std::move(connection_));
            retire(std::move(asking_));  // a MOVED ended the migration the target was asked for
            connection_ = std::make_unique<connection>(strand_, options_for(options_, node));
            connected_node_ = node;
        }
        return *connection_;
    }

    /// The connection to a migration's target, kept for the next ASK.
    connection& to_target(const cluster::node_address& node) {
        if (!asking_ || asking_node_ != node) {
            retire(std::move(asking_));
            asking_ = std::make_unique<connection>(strand_, options_for(options_, node));
            asking_node_ = node;
        }
        return *asking_;
    }

    void retire(std::unique_ptr<connection> old) {
        if (old) asio::post(strand_, [old = std::shared_ptr<connection>(std::move(old))] {});
    }

    redis_options options_;
    asio::strand<asio::any_io_executor> strand_;
    cluster::route route_;
    std::set<cluster::node_address> members_;
    std::unique_ptr<connection> connection_;
    cluster::node_address connected_node_;
    std::unique_ptr<connection> asking_;
    cluster::node_address asking_node_;
    std::deque<std::shared_ptr<operation>> queue_;
    bool busy_ = false;
};

}  // namespace detail::redis

/// redis_storage plus members 6–11 of the Storage concept. Each handler is
/// called once, on the executor, never inside the call that started it (an
/// answer known at once is posted), so a caller holding a lock across the
/// call cannot be re-entered. The lease type
/// is redis_storage::lease: a lease from async_lock may be released by
/// async_release (without blocking) or, like any lease, by its destructor
/// (a blocking command on the blocking connection).
class redis_async_storage : public redis_storage {
public:
    /// Connects on first use, not here.
    explicit redis_async_storage(redis_async_options options)
        : redis_storage(options),
          async_(std::make_shared<detail::redis::async_link>(options, options.executor)),
          executor_(options.executor), anchor_(std::make_shared<anchor>(this)) {}

    /// A copy has the same options and connections of its own.
    redis_async_storage(const redis_async_storage& other)
        : redis_storage(other), async_(std::make_shared<detail::redis::async_link>(other.options(), other.executor_)),
          executor_(other.executor_), anchor_(std::make_shared<anchor>(this)) {}
    redis_async_storage(redis_async_storage&& other) noexcept
        : redis_storage(std::move(other)), async_(std::move(other.async_)), executor_(std::move(other.executor_)),
          anchor_(std::move(other.anchor_)) {
        if (anchor_) anchor_->move_to(this);
    }
    redis_async_storage& operator=(const redis_async_storage&) = delete;
    redis_async_storage& operator=(redis_async_storage&&) = delete;
    ~redis_async_storage() {
        if (anchor_) anchor_->move_to(nullptr);
    }

    /// Right after an async_lock that took the lease, the document it read,
    /// without a round trip; otherwise GET.
    template <class Handler>
    void async_load(Handler handler) {
        std::error_code ec;
        clear_error(ec);
        {
            std::lock_guard<std::mutex> lock(link_->mutex());
            if (auto read = link_->take_prefetched()) {
                auto set = interpret(*read, ec);
                return answer(handler, ec, std::move(set));
            }
            link_->forget();
        }
        if (refused_key(ec)) return answer(handler, ec, std::optional<token_set>());
        read_async(std::move(handler));
    }

    /// Unconditional write: reads the stored generation, then writes fenced
    /// by it (once more if another writer came between).
    template <class Handler>
    void async_store(const token_set& set, Handler handler) {
        std::error_code ec;
        clear_error(ec);
        forget();
        if (refused_key(ec)) return answer(handler, ec);
        store_attempt(std::make_shared<token_set>(set), 8, std::move(handler));
    }

    /// Takes the lease, polling at most `max_wait` (plus one step of at most
    /// 50 ms), with the document read in the same script for async_load.
    template <class Handler>
    void async_lock(std::chrono::milliseconds max_wait, Handler handler) {
        std::error_code ec;
        clear_error(ec);
        forget();
        if (refused_key(ec)) return answer(handler, ec, lease());
        lock_attempt(std::make_shared<const std::string>(random_token()),
                     std::chrono::steady_clock::now() + max_wait, max_wait, std::chrono::milliseconds(1),
                     std::move(handler));
    }

    /// Right after a spent mark that async_store_if wrote fenced by this
    /// lease, answered from that write; otherwise GET of the lease.
    template <class Handler>
    void async_holds(const lease& held, Handler handler) {
        std::error_code ec;
        clear_error(ec);
        if (!held) return answer(handler, ec, false);
        {
            std::lock_guard<std::mutex> lock(link_->mutex());
            const auto proof = link_->take_fence();
            link_->forget();
            if (proof && proof->token == held.token() && std::chrono::steady_clock::now() < proof->until)
                return answer(handler, ec, true);
        }
        async_->command({"GET", lease_key()}, [anchor = anchor_, token = held.token(), handler](
                                                  error_info failed, detail::resp::reply r) mutable {
            std::error_code ec;
            bool yes = false;
            if (!anchor->visit([&](redis_async_storage& s) {
                    s.clear_error(ec);
                    if (failed) return s.io_failed(ec, failed, "checking the lease " + s.lease_key());
                    yes = holder_answered(r, token);
                }))
                ec = gone();
            handler(ec, yes);
        });
    }

    /// store_if without blocking: the same compare-and-swap, a spent mark
    /// fenced by the lease this store took, and WAIT after it when
    /// wait_replicas asks for it.
    template <class Handler>
    void async_store_if(const token_set& set, std::uint64_t expected_generation, Handler handler) {
        std::error_code ec;
        clear_error(ec);
        if (!generation_increases(set, expected_generation, ec)) return answer(handler, ec, false);
        std::string token;
        {
            std::lock_guard<std::mutex> lock(link_->mutex());
            link_->forget();
            if (set.refresh_token_spent) token = link_->held_token();
        }
        if (refused_key(ec)) return answer(handler, ec, false);
        detail::redis::command_args args;
        if (!write_command(set, expected_generation, token.empty() ? lease_use::none : lease_use::fence, token, args,
                           ec))
            return answer(handler, ec, false);
        const bool spent = set.refresh_token_spent;
        const auto sent = std::chrono::steady_clock::now();
        write_async(std::move(args), [this_anchor = anchor_, async = async_, spent, token, sent, handler](
                                         std::error_code ec, write_result written) mutable {
            if (ec || !written.written) return handler(ec, false);
            auto fenced = [=](std::error_code ec) mutable {
                // The lease was ours when the script ran, and no earlier than
                // `sent` had this long left: async_holds may answer from that.
                if (!ec && !token.empty() && written.lease_left > 0 &&
                    !this_anchor->visit([&](redis_async_storage& s) {
                        std::lock_guard<std::mutex> lock(s.link_->mutex());
                        s.link_->keep(detail::redis::fence{token, sent + std::chrono::milliseconds(written.lease_left)});
                    }))
                    ec = gone();
                handler(ec, !ec);
            };
            if (!spent) return fenced(ec);
            detail::redis::command_args wait;
            if (!this_anchor->visit([&](redis_async_storage& s) { 
                    auto asked = s.wait_command();
                    wait.items.swap(asked.items);
                }))
                return fenced(gone());
            if (wait.items.empty()) return fenced(ec);
            async->command(std::move(wait), [this_anchor, fenced](error_info failed, detail::resp::reply r) mutable {
                std::error_code ec;
                if (!this_anchor->visit([&](redis_async_storage& s) { s.replicas_answered(!failed, r, failed, ec); }))
                    ec = gone();
                fenced(ec);
            });
        });
    }

    /// Releases without blocking: the compare-and-delete script; a release
    /// that cannot reach Redis is not an error (the lease's TTL ends it).
    template <class Handler>
    void async_release(lease held, Handler handler) {
        if (!held) return answer(handler, std::error_code());
        const std::string token = held.abandon();
        {
            std::lock_guard<std::mutex> lock(link_->mutex());
            link_->forget_lease(token);
        }
        async_->command({"EVAL", detail::redis::release_script, "1", lease_key(), token, channel()},
                        [handler](error_info, detail::resp::reply) mutable { handler(std::error_code()); });
    }

private:
    /// Where pending operations find the store, if it still lives: moved
    /// with it, cleared by its destructor. The mutex keeps a completion from
    /// reading a store being destroyed or moved.
    class anchor {
    public:
        explicit anchor(redis_async_storage* store) noexcept : store_(store) {}
        void move_to(redis_async_storage* store) noexcept {
            std::lock_guard<std::mutex> lock(mutex_);
            store_ = store;
        }
        /// Calls `f(store)` under the mutex; false when the store is gone.
        template <class F>
        bool visit(F&& f) {
            std::lock_guard<std::mutex> lock(mutex_);
            if (!store_) return false;
            f(*store_);
            return true;
        }

    private:
        std::mutex mutex_;
        redis_async_storage* store_;
    };

    static std::error_code gone() { return make_error_code(errc::shut_down); }

    /// An answer known at once, given on the executor all the same, as
    /// every other answer is.
    template <class Handler, class... Results>
    void answer(Handler handler, Results... results) {
        asio::post(executor_, [handler = std::move(handler),
                               results = std::make_tuple(std::move(results)...)]() mutable {
            std::apply(handler, std::move(results));
        });
    }

    void forget() {
        std::lock_guard<std::mutex> lock(link_->mutex());
        link_->forget();
    }

    /// GET of the document; a key of another type is named by TYPE.
    template <class Handler>
    void read_async(Handler handler) {
        async_->command({"GET", document_key()}, [anchor = anchor_, async = async_, handler](
                                                     error_info failed, detail::resp::reply reply) mutable {
            detail::redis::wiped_reply answer;  // it holds the tokens
            answer.reply = std::move(reply);
            std::error_code ec;
            std::optional<token_set> set;
            bool ask_type = false;
            std::string document;
            if (!anchor->visit([&](redis_async_storage& s) {
                    if (failed) return s.io_failed(ec, failed, "reading the token set");
                    set = s.current_answered(answer.reply, ask_type, ec);
                    document = s.document_key();
                }))
                return handler(gone(), std::optional<token_set>());
            if (!ask_type) return handler(ec, std::move(set));
            async->command({"TYPE", document}, [anchor, handler](error_info failed, detail::resp::reply t) mutable {
                std::error_code ec;
                if (!anchor->visit([&](redis_async_storage& s) { s.foreign_type(failed ? nullptr : &t, ec); }))
                    ec = gone();
                handler(ec, std::optional<token_set>());
            });
        });
    }

    /// Runs the write script; `handler(ec, write_result)`.
    template <class Handler>
    void write_async(detail::redis::command_args args, Handler handler) {
        async_->command(std::move(args), [anchor = anchor_, handler](error_info failed, detail::resp::reply r) mutable {
            std::error_code ec;
            write_result written;
            if (!anchor->visit([&](redis_async_storage& s) {
                    if (failed) return s.io_failed(ec, failed, "storing the token set");
                    written = s.write_answered(r, ec);
                }))
                ec = gone();
            handler(ec, written);
        });
    }

    template <class Handler>
    void store_attempt(std::shared_ptr<token_set> set, int attempts_left, Handler handler) {
        read_async([anchor = anchor_, set, attempts_left, handler](std::error_code ec,
                                                                   std::optional<token_set> current) mutable {
            if (ec) return handler(ec);
            const auto wrote = [anchor, set, attempts_left, handler](std::error_code ec, write_result written) mutable {
                if (written.written || ec) return handler(ec);
                bool again = false;
                if (!anchor->visit([&](redis_async_storage& s) {
                        again = attempts_left > 1;
                        if (again) s.store_attempt(set, attempts_left - 1, handler);
                        else
                            s.fail(ec, errc::storage_failed,
                                   "store to " + s.options().where() + ": the key kept changing under this write; retry");
                    }))
                    return handler(gone());
                if (!again) handler(ec);
            };
            bool started = false;
            // Started under the anchor's lock: the store cannot go meanwhile.
            if (!anchor->visit([&](redis_async_storage& s) {
                    detail::redis::command_args args;
                    started = s.write_command(*set, current ? current->generation : 0, lease_use::none, {}, args, ec);
                    if (started) s.write_async(std::move(args), wrote);
                }))
                return handler(gone());
            if (!started) handler(ec);
        });
    }

    template <class Handler>
    void lock_attempt(std::shared_ptr<const std::string> token, std::chrono::steady_clock::time_point deadline,
                      std::chrono::milliseconds max_wait, std::chrono::milliseconds step, Handler handler) {
        const std::string ttl = std::to_string(std::max<std::int64_t>(options().lease_ttl.count(), 1));
        async_->command(
            {"EVAL", detail::redis::lease_script, "2", document_key(), lease_key(), *token, ttl},
            [anchor = anchor_, async = async_, token, deadline, max_wait, step, handler](
                error_info failed, detail::resp::reply reply) mutable {
                detail::redis::wiped_reply answer;  // it holds the tokens
                answer.reply = std::move(reply);
                std::error_code ec;
                lease taken;
                bool again = false;
                if (!anchor->visit([&](redis_async_storage& s) {
                        if (failed) return s.io_failed(ec, failed, "taking the lease " + s.lease_key());
                        std::optional<detail::redis::prefetched> read;
                        const auto got = s.lease_answered(answer.reply, read, ec);
                        if (got == detail::lease_attempt::taken) {
                            std::lock_guard<std::mutex> lock(s.link_->mutex());
                            s.link_->hold(*token);
                            s.link_->keep(std::move(*read));
                            taken = lease(s.link_, *token);
                        } else if (got == detail::lease_attempt::held_elsewhere) {
                            if (std::chrono::steady_clock::now() >= deadline) s.lease_timed_out(max_wait, ec);
                            else again = true;
                        }
                    }))
                    return handler(gone(), lease());
                if (!again) return handler(ec, std::move(taken));
                const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                                      deadline - std::chrono::steady_clock::now()) +
                                  std::chrono::milliseconds(1);
                const auto next_step = std::min(step * 2, std::chrono::milliseconds(50));
                async->after(std::min(step, left), [anchor, token, deadline, max_wait, next_step, handler]() mutable {
                    if (!anchor->visit(
                            [&](redis_async_storage& s) { s.lock_attempt(token, deadline, max_wait, next_step, handler); }))
                        handler(gone(), lease());
                });
            });
    }

    std::shared_ptr<detail::redis::async_link> async_;
    asio::any_io_executor executor_;
    std::shared_ptr<anchor> anchor_;
};

}  // namespace tokmgr
