// tokmgr/storage/postgres_async.hpp — postgres_storage with the asynchronous
// form of the Storage concept (members 6–11 of concepts.hpp), so that an
// asynchronous manager never blocks its executor on the database.
//
// A second connection of its own is driven with libpq's non-blocking API
// (PQconnectStartParams/PQconnectPoll, PQsendQueryParams, PQflush,
// PQconsumeInput, PQisBusy) on Asio: its socket is waited on with an
// `asio::posix::stream_descriptor` and every wait has a deadline timer
// (connect_timeout to connect, statement_timeout + answer_margin for an
// answer), on a strand of the executor given in the options. One statement
// is in flight at a time; the others queue. Handlers are called exactly once,
// on that strand.
//
// A separate header so that postgres.hpp (the blocking store) stays free of
// Asio. The blocking members (1–5) stay usable and have their own connection.
// An asynchronous wait for a lease polls (1 ms doubling to 50 ms) rather than
// LISTENing: a NOTIFY would need the connection idle, and it is the one the
// other operations queue on.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/bind_executor.hpp>
#include <asio/post.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "postgres.hpp"

namespace tokmgr {

/// postgres_options and the executor the asynchronous members run on.
struct postgres_async_options : postgres_options {
    asio::any_io_executor executor;
};

namespace detail::postgres {

/// The asynchronous connection: a queue of statements, run one at a time.
class async_link : public std::enable_shared_from_this<async_link> {
public:
    /// Called once with the statement's result, or null and what failed.
    using completion = std::function<void(result_ptr, error_info)>;

    async_link(postgres_options options, const asio::any_io_executor& executor)
        : options_(std::move(options)), table_(quoted_table(options_.table)),
          strand_(asio::make_strand(executor)), timer_(strand_) {}

    ~async_link() { close(); }

    const postgres_options& options() const noexcept { return options_; }

    /// Queues `sql` with text parameters (nullopt: SQL null).
    void query(std::string sql, std::vector<std::optional<std::string>> params, completion done) {
        asio::post(strand_, [self = shared_from_this(), op = operation{std::move(sql), std::move(params),
                                                                       std::move(done)}]() mutable {
            self->queue_.push_back(std::move(op));
            if (!self->busy_) self->start_next();
        });
    }

    /// Calls `f` on the strand after `delay`.
    void after(std::chrono::milliseconds delay, std::function<void()> f) {
        auto timer = std::make_shared<asio::steady_timer>(strand_, delay);
        timer->async_wait([timer, f = std::move(f)](const std::error_code&) { f(); });
    }

private:
    struct operation {
        std::string sql;
        std::vector<std::optional<std::string>> params;
        completion done;
        bool retried = false;   // sent once more on a new connection after an I/O failure
        bool creating = false;  // the table's creation runs first
        bool created = false;
    };

    void start_next() {
        if (queue_.empty()) {
            busy_ = false;
            return;
        }
        busy_ = true;
        if (table_.empty())
            return finish(nullptr, storage_failure("the table name '" + safe_server_text(options_.table, {}) +
                                                   "' is not a plain identifier or schema.identifier; choose another"));
        if (!connection_) return connect();
        send();
    }

    // ---- connecting ----------------------------------------------------

    void connect() {
        close();
        const std::string timeout = std::to_string(connect_seconds(options_));
        // The server's statement_timeout for every statement of this
        // connection, set at start-up (no round trip of its own), after any
        // `options` the connection string already carries.
        std::string startup;
        if (PQconninfoOption* parsed = PQconninfoParse(options_.connection.c_str(), nullptr)) {
            startup = conninfo_value(parsed, "options");
            PQconninfoFree(parsed);
        }
        startup += (startup.empty() ? "" : " ") + std::string("-c statement_timeout=") +
                   std::to_string(std::max<std::int64_t>(options_.statement_timeout.count(), 1));
        std::vector<const char*> keys{"dbname", "connect_timeout", "fallback_application_name", "options"};
        std::vector<const char*> values{options_.connection.c_str(), timeout.c_str(), "tokmgr", startup.c_str()};
        if (!options_.password.empty()) {
            keys.push_back("password");
            values.push_back(options_.password.reveal().data());  // the secret's own '\0'-terminated string
        }
        keys.push_back(nullptr);
        values.push_back(nullptr);
        connection_.reset(PQconnectStartParams(keys.data(), values.data(), 1));
        if (!connection_ || PQstatus(connection_.get()) == CONNECTION_BAD)
            return lost(connection_failure_text(options_, connection_ ? PQerrorMessage(connection_.get()) : ""));
        PQsetnonblocking(connection_.get(), 1);
        arm_deadline(std::chrono::seconds(connect_seconds(options_)),
                     "PostgreSQL at " + options_.where() + " did not accept the connection within " +
                         std::to_string(connect_seconds(options_)) + " s (connect_timeout)");
        poll_connect(PGRES_POLLING_WRITING);
    }

    void poll_connect(PostgresPollingStatusType status) {
        switch (status) {
        case PGRES_POLLING_OK:
            end_deadline();
            return send();
        case PGRES_POLLING_FAILED:
            return lost(connection_failure_text(options_, PQerrorMessage(connection_.get())));
        default:
            wait(status == PGRES_POLLING_READING ? asio::posix::stream_descriptor::wait_read
                                                 : asio::posix::stream_descriptor::wait_write,
                 [this] { poll_connect(PQconnectPoll(connection_.get())); });
        }
    }

    // ---- one statement -------------------------------------------------

    void send() {
        operation& op = queue_.front();
        const std::string& sql = op.creating ? create_statement_ : op.sql;
        std::vector<const char*> values;
        if (!op.creating)
            for (const auto& p : op.params) values.push_back(p ? p->c_str() : nullptr);
        if (!PQsendQueryParams(connection_.get(), sql.c_str(), static_cast<int>(values.size()), nullptr,
                               values.data(), nullptr, nullptr, 0))
            return lost(connection_failure_text(options_, PQerrorMessage(connection_.get())));
        arm_deadline(options_.statement_timeout + options_.answer_margin,
                     "PostgreSQL at " + options_.where() + " did not answer within " +
                         std::to_string((options_.statement_timeout + options_.answer_margin).count()) +
                         " ms; check that the server runs and is not overloaded, and the network");
        flush();
    }

    void flush() {
        const int flushed = PQflush(connection_.get());
        if (flushed < 0) return lost(connection_failure_text(options_, PQerrorMessage(connection_.get())));
        if (flushed > 0) return wait(asio::posix::stream_descriptor::wait_write, [this] { flush(); });
        read();
    }

    void read() {
        PGconn* c = connection_.get();
        if (!PQconsumeInput(c)) return lost(connection_failure_text(options_, PQerrorMessage(c)));
        while (!PQisBusy(c)) {
            result_ptr r(PQgetResult(c));
            if (!r) return answered();
            if (!answer_ || PQresultStatus(r.get()) == PGRES_FATAL_ERROR) answer_ = std::move(r);
        }
        wait(asio::posix::stream_descriptor::wait_read, [this] { read(); });
    }

    void answered() {
        end_deadline();
        result_ptr answer = std::move(answer_);
        if (!answer || PQstatus(connection_.get()) == CONNECTION_BAD)
            return lost(connection_failure_text(options_, PQerrorMessage(connection_.get())));
        operation& op = queue_.front();
        const auto status = PQresultStatus(answer.get());
        const bool ok = status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
        const std::string state = ok ? std::string() : sqlstate(answer.get());
        if (op.creating) {
            op.creating = false;
            // Two processes creating the table at once: the loser is told it exists.
            if (ok || state == "23505" || state == "42P07") return send();
            if (state == "42501")
                return finish(nullptr, storage_failure("the table " + options_.table + " does not exist at " +
                                                       options_.where() +
                                                       " and this user may not create it; ask an administrator to "
                                                       "run: " + options_.create_table_statement()));
            return finish(nullptr, storage_failure(refusal_text(options_, state, PQresultErrorMessage(answer.get()))));
        }
        if (ok) return finish(std::move(answer), {});
        if (state == "42P01" && options_.create_table && !op.created) {
            op.created = op.creating = true;
            create_statement_ = options_.create_table_statement();
            return send();
        }
        // A server that turned read-only or is shutting down: the next
        // connection may reach the new primary.
        if (state == "25006" || state.rfind("57P", 0) == 0) close();
        finish(nullptr, storage_failure(refusal_text(options_, state, PQresultErrorMessage(answer.get()))));
    }

    // ---- waiting, failing, finishing -----------------------------------

    /// Waits for the socket (re-made when libpq's socket changed, as it may
    /// while connecting), then calls `next` on the strand.
    template <class Next>
    void wait(asio::posix::stream_descriptor::wait_type type, Next next) {
        const int fd = PQsocket(connection_.get());
        if (fd < 0) return lost(connection_failure_text(options_, PQerrorMessage(connection_.get())));
        if (!socket_ || socket_fd_ != fd) {
            release_socket();
            socket_.emplace(strand_, fd);
            socket_fd_ = fd;
        }
        socket_->async_wait(type, asio::bind_executor(strand_, [self = shared_from_this(), next,
                                                                 generation = generation_](const std::error_code& ec) {
            if (generation != self->generation_) return;  // the deadline ended this attempt
            if (ec) return self->lost("the wait on the PostgreSQL connection to " + self->options_.where() +
                                      " failed: " + ec.message());
            next();
        }));
    }

    /// A deadline for the current phase (connecting, or one statement); a
    /// new phase or an answer ends it, even when its expiry is already queued.
    void arm_deadline(std::chrono::milliseconds after, std::string why) {
        const std::uint64_t id = ++deadline_id_;
        timer_.expires_after(after);
        timer_.async_wait(asio::bind_executor(
            strand_, [self = shared_from_this(), why = std::move(why), id](const std::error_code& ec) {
                if (ec || id != self->deadline_id_) return;
                self->lost(why);
            }));
    }

    void end_deadline() {
        ++deadline_id_;
        timer_.cancel();
    }

    /// The connection cannot be trusted any more: close it; send the
    /// statement once more on a new one if it had been kept from before,
    /// else fail it.
    void lost(std::string why) {
        const bool was_kept = kept_;
        close();
        operation& op = queue_.front();
        if (was_kept && !op.retried) {
            op.retried = true;
            return connect();
        }
        finish(nullptr, storage_failure(std::move(why)));
    }

    void finish(result_ptr r, error_info failed) {
        operation op = std::move(queue_.front());
        queue_.pop_front();
        for (auto& p : op.params)  // a written document's copy holds the tokens
            if (p) secure_clear(*p);
        if (connection_) kept_ = true;  // the next statement runs on a connection that served one
        op.done(std::move(r), std::move(failed));
        start_next();
    }

    void release_socket() {
        // libpq owns the descriptor: the Asio object must not close it.
        if (socket_) {
            socket_->cancel();
            socket_->release();
            socket_.reset();
        }
        socket_fd_ = -1;
    }

    void close() {
        ++generation_;  // stale waits see it and do nothing
        end_deadline();
        release_socket();
        answer_.reset();
        connection_.reset();
        kept_ = false;
    }

    postgres_options options_;
    std::string table_;
    std::string create_statement_;
    asio::strand<asio::any_io_executor> strand_;
    asio::steady_timer timer_;
    std::optional<asio::posix::stream_descriptor> socket_;
    int socket_fd_ = -1;
    connection_ptr connection_;
    result_ptr answer_;
    std::deque<operation> queue_;
    std::uint64_t generation_ = 0;
    std::uint64_t deadline_id_ = 0;
    bool busy_ = false;
    bool kept_ = false;
};

}  // namespace detail::postgres

/// postgres_storage plus members 6–11 of the Storage concept. The lease type
/// is postgres_storage::lease: a lease from async_lock may be released by
/// async_release (without blocking) or, like any lease, by its destructor.
/// The object must outlive its operations (the manager that owns it does).
class postgres_async_storage : public postgres_storage {
public:
    explicit postgres_async_storage(postgres_async_options options)
        : postgres_storage(options),
          async_(std::make_shared<detail::postgres::async_link>(options, options.executor)),
          executor_(options.executor) {}

    /// A copy has the same options and connections of its own.
    postgres_async_storage(const postgres_async_storage& other)
        : postgres_storage(other),
          async_(std::make_shared<detail::postgres::async_link>(other.options(), other.executor_)),
          executor_(other.executor_) {}
    postgres_async_storage(postgres_async_storage&&) noexcept = default;

    template <class Handler>
    void async_load(Handler handler) {
        async_->query(shared_link()->sql().load, {options().key},
                      [this, handler](detail::postgres::result_ptr r, error_info failed) mutable {
                          std::error_code ec;
                          clear_error(ec);
                          std::optional<token_set> set;
                          std::uint64_t generation = 0;
                          if (!r) fail(ec, errc::storage_failed, "reading the token set: " + failed.detail);
                          else set = loaded_set(r.get(), generation, ec);
                          handler(ec, std::move(set));
                      });
    }

    /// Unconditional write: reads the stored generation, then writes fenced
    /// by it (once more if another writer came between).
    template <class Handler>
    void async_store(const token_set& set, Handler handler) {
        store_attempt(std::make_shared<token_set>(set), 8, std::move(handler));
    }

    template <class Handler>
    void async_lock(std::chrono::milliseconds max_wait, Handler handler) {
        const auto deadline = std::chrono::steady_clock::now() + max_wait;
        lock_attempt(detail::random_lease_token(), deadline, max_wait, std::chrono::milliseconds(1),
                     std::move(handler));
    }

    template <class Handler>
    void async_holds(const lease& held, Handler handler) {
        if (!held) return handler(std::error_code(), false);
        async_->query(shared_link()->sql().holds, {options().key, held.token()},
                      [this, handler](detail::postgres::result_ptr r, error_info failed) mutable {
                          std::error_code ec;
                          clear_error(ec);
                          if (!r) {
                              fail(ec, errc::storage_failed,
                                   "checking the lease on " + options().where() + ": " + failed.detail);
                              return handler(ec, false);
                          }
                          handler(ec, holds_answer(r.get()));
                      });
    }

    template <class Handler>
    void async_store_if(const token_set& set, std::uint64_t expected_generation, Handler handler) {
        std::error_code ec;
        clear_error(ec);
        if (!generation_increases(set, expected_generation, ec)) return handler(ec, false);
        write_async(set, expected_generation, held_token(), std::move(handler));
    }

    /// Releases without blocking: compare-and-clear of the holder; a release
    /// that cannot reach the database is not an error (lease_until ends it).
    template <class Handler>
    void async_release(lease held, Handler handler) {
        if (!held) return handler(std::error_code());
        const std::string token = held.abandon();
        {
            std::lock_guard<std::mutex> lock(shared_link()->mutex());
            if (shared_link()->held_token() == token) shared_link()->held_token().clear();
        }
        async_->query(shared_link()->sql().release, {options().key, token, options().channel()},
                      [handler](detail::postgres::result_ptr, error_info) mutable { handler(std::error_code()); });
    }

private:
    std::string held_token() {
        std::lock_guard<std::mutex> lock(shared_link()->mutex());
        return shared_link()->held_token();
    }

    template <class Handler>
    void write_async(const token_set& set, std::uint64_t expected, std::string holder, Handler handler) {
        std::error_code ec;
        fenced_write w;
        if (!prepare_write(set, expected, std::move(holder), w, ec)) return handler(ec, false);
        std::vector<std::optional<std::string>> params;
        for (const char* p : w.params()) params.push_back(p ? std::optional<std::string>(p) : std::nullopt);
        async_->query(*w.sql, std::move(params),
                      [this, handler](detail::postgres::result_ptr r, error_info failed) mutable {
                          std::error_code ec;
                          if (!r) {
                              fail(ec, errc::storage_failed, "storing the token set: " + failed.detail);
                              return handler(ec, false);
                          }
                          const bool wrote = written(r.get(), ec);
                          handler(ec, wrote);
                      });
    }

    template <class Handler>
    void store_attempt(std::shared_ptr<token_set> set, int attempts_left, Handler handler) {
        async_->query(shared_link()->sql().load, {options().key},
                      [this, set, attempts_left, handler](detail::postgres::result_ptr r, error_info failed) mutable {
                          std::error_code ec;
                          clear_error(ec);
                          if (!r) {
                              fail(ec, errc::storage_failed, "reading the token set: " + failed.detail);
                              return handler(ec);
                          }
                          std::uint64_t current = 0;
                          loaded_set(r.get(), current, ec);
                          if (ec) return handler(ec);
                          write_async(*set, current, std::string(),
                                      [this, set, attempts_left, handler](std::error_code ec, bool wrote) mutable {
                                          if (wrote || ec) return handler(ec);
                                          if (attempts_left <= 1) {
                                              fail(ec, errc::storage_failed,
                                                   "store to " + options().where() +
                                                       ": the row kept changing under this write; retry");
                                              return handler(ec);
                                          }
                                          store_attempt(set, attempts_left - 1, std::move(handler));
                                      });
                      });
    }

    template <class Handler>
    void lock_attempt(std::string token, std::chrono::steady_clock::time_point deadline,
                      std::chrono::milliseconds max_wait, std::chrono::milliseconds step, Handler handler) {
        const std::string ttl = std::to_string(std::max<std::int64_t>(options().lease_ttl.count(), 1));
        async_->query(
            shared_link()->sql().lock, {options().key, token, ttl},
            [this, token, deadline, max_wait, step, handler](detail::postgres::result_ptr r,
                                                              error_info failed) mutable {
                std::error_code ec;
                clear_error(ec);
                if (!r) {
                    fail(ec, errc::storage_failed, "taking the lease on " + options().where() + ": " + failed.detail);
                    return handler(ec, lease());
                }
                if (PQntuples(r.get()) == 1) {
                    {
                        std::lock_guard<std::mutex> lock(shared_link()->mutex());
                        shared_link()->held_token() = token;
                    }
                    return handler(ec, lease(shared_link(), token));
                }
                const auto now = std::chrono::steady_clock::now();
                if (now >= deadline) {
                    fail(ec, errc::lease_timeout, lease_timeout_text(max_wait));
                    return handler(ec, lease());
                }
                const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) +
                                  std::chrono::milliseconds(1);
                const auto next_step = std::min(step * 2, std::chrono::milliseconds(50));
                async_->after(std::min(step, left), [this, token, deadline, max_wait, next_step, handler]() mutable {
                    lock_attempt(token, deadline, max_wait, next_step, std::move(handler));
                });
            });
    }

    std::shared_ptr<detail::postgres::async_link> async_;
    asio::any_io_executor executor_;
};

}  // namespace tokmgr
