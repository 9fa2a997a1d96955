// tokmgr/storage/postgres.hpp — a coordinating Storage policy on PostgreSQL
// (libpq), so that every process on every host that shares a Textual
// account makes one refresh per expiry between them, through the database a
// service already runs (docs/fleet.md has the contract, the guarantees and
// the failure modes; redis.hpp is the same store on Redis).
//
// - One table (postgres_options::table), one row per account key: the
//   token-set document (storage/document.hpp) as text, its generation, and
//   the lease — the holder's 128-bit random token and `lease_until` by the
//   server's clock. postgres_options::create_table_statement() is the SQL.
// - The lease is one conditional statement, `INSERT … ON CONFLICT (key) DO
//   UPDATE SET holder = $token, lease_until = now() + ttl WHERE holder IS
//   NULL OR lease_until < now()`: no transaction, row lock or advisory lock
//   is held across the HTTP request, so a pooled or killed connection cannot
//   pin the lease; a holder that dies frees it when lease_until passes.
//   Release is a compare-and-clear of the holder (a lapsed lease taken by
//   another is left to it); `holds` is one SELECT.
// - Every write is one statement fenced by the generation stored in its own
//   column (and by the holder, while this store holds a lease): a holder
//   paused past its lease cannot overwrite a newer set. The statement writes
//   only over a row whose document is empty or a tokmgr document of version
//   1; anything else is reported (errc::storage_failed, what the row holds
//   and what to do) and left as it is, as redis_storage does. `load` also
//   refuses a row whose generation column disagrees with its document.
// - Each write and each release NOTIFYs a channel named after the table and
//   key; a waiting lock() LISTENs there for that wait only, and polls with
//   growing sleeps (1 ms doubling to 50 ms) because notifications are lost
//   while a connection is down.
// - Every command is sent with libpq's non-blocking API and waited for with
//   poll() until statement_timeout plus a margin: the server enforces
//   statement_timeout (set on each connection), the client deadline covers a
//   server that does not answer at all (stopped, or a network that drops
//   packets). Connecting is bounded by connect_timeout.
// - The password comes from postgres_options::password (the CLI reads
//   TOKMGR_POSTGRES_PASSWORD) or libpq's own PGPASSFILE, never from a URL.
//   No message ever carries it.
//
// One object serves one thread at a time (the manager serialises its storage
// calls) over its own connection, opened on first use and reopened after a
// failure. Any number of objects may share one key, in one process or many.
#pragma once

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "../detail/percent.hpp"
#include "../errc.hpp"
#include "../error.hpp"
#include "../secret.hpp"
#include "../token_set.hpp"
#include "detail/shared_store.hpp"
#include "detail/storage_errors.hpp"
#include "document.hpp"

namespace tokmgr {

/// Where the PostgreSQL store is and how it is used.
struct postgres_options {
    /// A libpq connection string ("host=db.internal dbname=app user=svc
    /// sslmode=verify-full sslrootcert=/etc/ssl/db-ca.pem") or URL
    /// ("postgresql://svc@db.internal:5432/app?sslmode=verify-full"), without
    /// the password. Empty: libpq's defaults and PG* environment variables.
    std::string connection;
    /// The password; empty: libpq looks in PGPASSFILE (~/.pgpass) or PGPASSWORD.
    secret password;
    /// The table, "name" or "schema.name" (plain identifiers).
    std::string table = "tokmgr_token_sets";
    /// The row of this account. One key per account.
    std::string key = "textual";
    /// Run create_table_statement() when the table is missing. Off: the
    /// table must exist (created by an administrator), and a missing one is
    /// an error that quotes the statement.
    bool create_table = true;

    /// libpq's connect_timeout (whole seconds, at least 2: libpq's minimum).
    std::chrono::milliseconds connect_timeout = std::chrono::seconds(5);
    /// The server's statement_timeout on every command; the client waits this
    /// plus `answer_margin` for an answer before it drops the connection.
    std::chrono::milliseconds statement_timeout = std::chrono::seconds(2);
    std::chrono::milliseconds answer_margin = std::chrono::seconds(1);

    /// How long a lease lives unless released; it must cover a login or
    /// refresh (see redis_options::lease_ttl, the same trade-off).
    std::chrono::milliseconds lease_ttl = std::chrono::seconds(60);

    static std::chrono::milliseconds lease_ttl_for(std::chrono::milliseconds request_time,
                                                   std::chrono::milliseconds margin = std::chrono::seconds(10)) {
        return request_time + margin;
    }

    /// Reads `postgresql://[user@]host[:port]/db?key=K[&table=T][&create_table=0][&<libpq parameters>]`
    /// (or postgres://). key and table are tokmgr's; every other parameter
    /// (sslmode, sslrootcert, target_session_attrs, …) goes to libpq. A URL
    /// with a password is refused (errc::invalid_configuration, the URL not
    /// repeated): `ps` would show it; set `password` from the environment.
    static postgres_options from_url(std::string_view url, error_info& failed);
    static postgres_options from_url(std::string_view url, std::error_code& ec) {
        return detail::code_only(ec, [&](error_info& failed) { return from_url(url, failed); });
    }
    static postgres_options from_url(std::string_view url) {
        return detail::throw_on_failure([&](error_info& failed) { return from_url(url, failed); });
    }

    /// "postgresql://user@host:port/db table T key K", never a password: for messages.
    std::string where() const;

    /// The statement that creates the table, for an administrator to run when
    /// create_table is off (grant the service SELECT, INSERT, UPDATE on it).
    std::string create_table_statement() const;

    /// The NOTIFY channel of this table and key: a hash, so any key fits
    /// PostgreSQL's 63-byte identifiers.
    std::string channel() const {
        std::uint64_t h = 14695981039346656037ULL;  // FNV-1a
        for (char c : table + '\0' + key) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
        static const char hex[] = "0123456789abcdef";
        std::string out = "tokmgr_";
        for (int i = 0; i < 16; ++i, h >>= 4) out += hex[h & 15];
        return out;
    }
};

namespace detail::postgres {

struct result_deleter {
    void operator()(PGresult* r) const noexcept {
        if (r) PQclear(r);
    }
};
using result_ptr = std::unique_ptr<PGresult, result_deleter>;

struct connection_deleter {
    void operator()(PGconn* c) const noexcept {
        if (c) PQfinish(c);
    }
};
using connection_ptr = std::unique_ptr<PGconn, connection_deleter>;


inline bool is_identifier(std::string_view part) {
    if (part.empty() || part.size() > 63) return false;
    if (!(std::isalpha(static_cast<unsigned char>(part[0])) || part[0] == '_')) return false;
    for (char c : part)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
    return true;
}

/// `table` quoted for SQL ("schema"."name"), or empty when it is not one or
/// two plain identifiers. Plain identifiers only, so no quoting rule can be
/// got wrong and the name reads the same in every message.
inline std::string quoted_table(std::string_view table) {
    const std::size_t dot = table.find('.');
    const std::string_view first = table.substr(0, dot);
    if (!is_identifier(first)) return {};
    if (dot == std::string_view::npos) return "\"" + std::string(first) + "\"";
    const std::string_view second = table.substr(dot + 1);
    if (!is_identifier(second)) return {};
    return "\"" + std::string(first) + "\".\"" + std::string(second) + "\"";
}

inline std::string sqlstate(const PGresult* r) {
    const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    return state ? state : "";
}

/// The value of libpq's parsed connection option `keyword`, or empty.
inline std::string conninfo_value(PQconninfoOption* options, std::string_view keyword) {
    for (auto* o = options; o && o->keyword; ++o)
        if (keyword == o->keyword && o->val) return o->val;
    return {};
}

/// The statements, for one table. Parameters are text; every statement is
/// its own implicit transaction, so nothing stays locked between calls.
struct statements {
    explicit statements(const std::string& t)
        : load("select document, generation::text from " + t + " where key = $1"),
          // $1 key, $2 token, $3 ttl in ms. `or t.holder = $2`: a lease
          // taken by a first sending whose answer was lost is ours.
          lock("insert into " + t + " as t (key, generation, holder, lease_until) "
               "values ($1, 0, $2, now() + $3::bigint * interval '1 millisecond') "
               "on conflict (key) do update set holder = excluded.holder, lease_until = excluded.lease_until "
               "where t.holder is null or t.lease_until < now() or t.holder = excluded.holder returning 1"),
          holds("select holder = $2 and lease_until >= now() from " + t + " where key = $1"),
          release("update " + t + " set holder = null, lease_until = null where key = $1 and holder = $2 "
                  "returning pg_notify($3::text, 'released')"),
          store_first(store_if_statement(t, true)),
          store_next(store_if_statement(t, false)) {}

    std::string load, lock, holds, release, store_first, store_next;

private:
    /// $1 key, $2 expected generation, $3 document, $4 new generation, $5 the
    /// lease holder's token (null: no lease held), $6 the channel. Writes
    /// when the stored generation is the expected one and the row holds a
    /// tokmgr document (or none), or when it already holds exactly this
    /// document (a repeated sending whose first answer was lost). Answers
    /// whether it wrote, and the row as it was, for the caller to say why not.
    /// `first`: expected generation 0, the row may not exist yet.
    static std::string store_if_statement(const std::string& t, bool first) {
        const std::string fence =
            "((t.generation = $2::bigint and ((t.document is null and t.generation = 0) or "
            "t.document like '{\"format\":\"tokmgr-token-set\",\"version\":1,\"generation\":' || $2::bigint || ',%')) "
            "or (t.generation = $4::bigint and t.document = $3)) and ($5::text is null or t.holder = $5::text)";
        const std::string write =
            first ? "insert into " + t + " as t (key, document, generation) values ($1, $3, $4::bigint) "
                                         "on conflict (key) do update set document = excluded.document, "
                                         "generation = excluded.generation where " + fence + " returning 1"
                  : "update " + t + " as t set document = $3, generation = $4::bigint where t.key = $1 and " + fence +
                        " returning 1";
        return "with before as (select generation, document, holder from " + t + " where key = $1), written as (" +
               write +
               ") select (select count(*) from written)::int, b.generation::text, b.document, "
               "coalesce(b.holder = $5::text, false), "
               "case when (select count(*) from written) > 0 then pg_notify($6::text, $4::text) end "
               "from (select 1) one left join before b on true";
    }
};

/// libpq's connect_timeout: whole seconds, at least 2 (libpq's minimum).
inline int connect_seconds(const postgres_options& options) {
    return static_cast<int>(std::max<std::int64_t>((options.connect_timeout.count() + 999) / 1000, 2));
}

/// Why a connection failed, as a sentence naming the database and what to do.
inline std::string connection_failure_text(const postgres_options& options, std::string_view said_raw) {
    const std::string said = safe_server_text(said_raw, options.password.reveal());
    const std::string where = options.where();
    auto has = [&](std::string_view text) { return said.find(text) != std::string::npos; };
    if (has("password authentication failed"))
        return "PostgreSQL at " + where +
               " refused the password; check TOKMGR_POSTGRES_PASSWORD (postgres_options::password) or the "
               "PGPASSFILE entry, and the user name (PostgreSQL said: " + said + ")";
    if (has("no password supplied") || has("no password was provided"))
        return "PostgreSQL at " + where +
               " asks for a password and none was given; set TOKMGR_POSTGRES_PASSWORD "
               "(postgres_options::password) or add a PGPASSFILE entry";
    if (has("certificate verify failed") || has("does not match host name") || has("root certificate file"))
        return "the TLS certificate of PostgreSQL at " + where +
               " did not verify; check that sslrootcert names the CA that signed it and that the host name "
               "in the connection string is one the certificate names (PostgreSQL/libpq said: " + said + ")";
    if (has("timeout expired"))
        return "PostgreSQL at " + where + " did not accept the connection within " +
               std::to_string(connect_seconds(options)) +
               " s (connect_timeout); check that the server runs and the network reaches it";
    if (has("Connection refused") || has("No such file or directory"))
        return "cannot connect to PostgreSQL at " + where +
               ": nothing listens there; check that the server runs and the address is right (libpq said: " +
               said + ")";
    if (has("starting up") || has("shutting down") || has("recovery mode"))
        return "PostgreSQL at " + where + " is starting up, shutting down or recovering; the next call retries (" +
               said + ")";
    return "cannot use PostgreSQL at " + where + ": " + said;
}

/// What the server refused, by SQLSTATE, with what to do.
inline std::string refusal_text(const postgres_options& options, const std::string& state,
                                std::string_view said_raw) {
    const std::string said = safe_server_text(said_raw, options.password.reveal());
    const std::string where = options.where();
    if (state == "25006")
        return "PostgreSQL at " + where +
               " is read-only (a standby, or a primary being failed over); point the connection at the primary "
               "(target_session_attrs=read-write picks it among several hosts) (" + said + ")";
    if (state == "57014")
        return "PostgreSQL at " + where + " cancelled the statement after statement_timeout (" +
               std::to_string(options.statement_timeout.count()) +
               " ms); another session may hold a lock on the table, or the server is overloaded (" + said + ")";
    if (state == "42P01")
        return "the table " + options.table + " does not exist at " + where +
               "; create it with: " + options.create_table_statement() +
               " (or allow tokmgr to: postgres_options::create_table)";
    if (state == "42703" || state == "42804" || state == "42883" || state == "22P02")
        return "the table " + options.table + " at " + where +
               " is not a tokmgr table (" + said +
               "); tokmgr never alters or overwrites what it did not make: choose another table (?table=), or "
               "drop this one if no other program uses it";
    if (state == "42501")
        return "PostgreSQL at " + where + " refused access to " + options.table +
               "; grant the user SELECT, INSERT, UPDATE on it (" + said + ")";
    if (state.rfind("57P", 0) == 0 || state.rfind("08", 0) == 0)
        return "PostgreSQL at " + where + " is shutting down or restarting; the next call retries (" + said + ")";
    return "PostgreSQL at " + where + " refused a statement: " + said;
}

/// One connection, what it failed with, and the lease this store holds.
/// Shared by the store and its leases (a lease is released over it), hence
/// the mutex.
class link {
public:
    explicit link(postgres_options options)
        : options_(std::move(options)), table_(quoted_table(options_.table)), sql_(table_) {}

    const postgres_options& options() const noexcept { return options_; }
    const statements& sql() const noexcept { return sql_; }
    std::mutex& mutex() noexcept { return mutex_; }
    /// The token of the lease this store holds now (empty: none): store_if
    /// is fenced by it.
    std::string& held_token() noexcept { return held_token_; }

    /// Runs one statement with text parameters (null pointers are SQL
    /// nulls). A result that is not an error, or null with `failed` set:
    /// storage_failed and a sentence naming the database, what failed and
    /// what to do. A statement on a kept connection that fails on I/O is sent
    /// once more on a new one (the server may have restarted since); every
    /// statement here may be repeated safely. A missing table is created
    /// when the options allow it, and the statement run again.
    result_ptr query(const std::string& sql, const std::vector<const char*>& params, error_info& failed) {
        if (table_.empty()) {
            failed = storage_failure("the table name '" + safe_server_text(options_.table, {}) +
                                     "' is not a plain identifier or schema.identifier (letters, digits, '_'); "
                                     "choose another (postgres_options::table, ?table=)");
            return nullptr;
        }
        bool created = false;
        bool sent = false;  // a statement went out: a failure from here on may have written
        for (int attempt = 0; attempt < 3; ++attempt) {
            const bool fresh = !connection_;
            if (fresh && !connect(failed)) {
                if (sent) failed.code = make_error_code(errc::storage_failed);
                return nullptr;
            }
            sent = true;
            bool io_failed = false;
            result_ptr r = run(sql, params, failed, io_failed);
            if (io_failed) {
                connection_.reset();  // its state is unknown: the next call starts afresh
                if (fresh) return nullptr;
                continue;
            }
            if (r) {
                failed = {};
                return r;
            }
            if (failed_state_ == "42P01" && !created) {  // undefined_table
                if (!create_table(failed)) return nullptr;
                created = true;
                continue;
            }
            return nullptr;
        }
        return nullptr;
    }

    /// Waits up to `timeout` for a notification on the channel; true when
    /// one came. Without a LISTEN in place (it could not be made, or the
    /// connection was reopened) it sleeps instead, and the caller's polling
    /// carries on.
    bool wait_for_change(std::chrono::milliseconds timeout) {
        if (!listening_ && connection_) {
            error_info ignored;
            bool io_failed = false;
            listening_ = static_cast<bool>(run("listen \"" + options_.channel() + "\"", {}, ignored, io_failed));
            if (io_failed) connection_.reset();
        }
        if (!listening_ || !connection_) {
            std::this_thread::sleep_for(timeout);
            return false;
        }
        if (drain_notifications()) return true;
        pollfd p{PQsocket(connection_.get()), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(timeout.count(), 0))) <= 0) return false;
        if (!PQconsumeInput(connection_.get())) {
            connection_.reset();
            return false;
        }
        return drain_notifications();
    }

    /// Ends a wait: UNLISTEN, so a connection does not keep collecting
    /// notifications nobody reads.
    void stop_waiting() noexcept {
        if (!listening_ || !connection_) return;
        listening_ = false;
        try {
            error_info ignored;
            bool io_failed = false;
            run("unlisten *", {}, ignored, io_failed);
            if (io_failed) connection_.reset();
        } catch (...) {
        }
    }

    /// The lease's release, under the mutex: compare-and-clear of the holder.
    void release_lease(const std::string& token) {
        if (held_token_ == token) held_token_.clear();
        const std::string channel = options_.channel();
        error_info ignored;
        query(sql_.release, {options_.key.c_str(), token.c_str(), channel.c_str()}, ignored);
    }

    std::string describe_connection_failure(std::string_view said) const {
        return connection_failure_text(options_, said);
    }

private:
    int connect_seconds() const { return postgres::connect_seconds(options_); }

    bool connect(error_info& failed) {
        listening_ = false;
        const std::string timeout = std::to_string(connect_seconds());
        std::vector<const char*> keys{"dbname", "connect_timeout", "fallback_application_name"};
        std::vector<const char*> values{options_.connection.c_str(), timeout.c_str(), "tokmgr"};
        // reveal() views the secret's own std::string, which ends in '\0'.
        if (!options_.password.empty()) {
            keys.push_back("password");
            values.push_back(options_.password.reveal().data());
        }
        keys.push_back(nullptr);
        values.push_back(nullptr);
        connection_ptr c(PQconnectdbParams(keys.data(), values.data(), /*expand_dbname=*/1));
        if (!c) {
            failed = unreachable("cannot allocate a PostgreSQL connection to " + options_.where());
            return false;
        }
        if (PQstatus(c.get()) != CONNECTION_OK) {
            failed = unreachable(describe_connection_failure(PQerrorMessage(c.get())));
            return false;
        }
        if (PQsetnonblocking(c.get(), 1) != 0) {
            failed = unreachable("cannot make the PostgreSQL connection to " + options_.where() + " non-blocking");
            return false;
        }
        connection_ = std::move(c);
        // The server's own limit on every statement of this connection.
        const std::string ms = std::to_string(std::max<std::int64_t>(options_.statement_timeout.count(), 1));
        bool io_failed = false;
        if (!run("select set_config('statement_timeout', $1, false)", {ms.c_str()}, failed, io_failed)) {
            connection_.reset();
            failed.code = make_error_code(errc::storage_unreachable);
            return false;
        }
        return true;
    }

    /// Waits for the socket until `deadline`; false when it passed.
    bool wait_socket(short events, std::chrono::steady_clock::time_point deadline) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return false;
        pollfd p{PQsocket(connection_.get()), events, 0};
        return ::poll(&p, 1, static_cast<int>(left.count())) > 0;
    }

    /// Sends one statement and waits for all of its results, at most
    /// statement_timeout + answer_margin. `io_failed` when the connection
    /// cannot be trusted any more (then `failed` says why).
    result_ptr run(const std::string& sql, const std::vector<const char*>& params, error_info& failed, bool& io_failed) {
        failed_state_.clear();
        PGconn* c = connection_.get();
        auto lost = [&](std::string why) {
            io_failed = true;
            failed = storage_failure(std::move(why));
            return nullptr;
        };
        const auto deadline =
            std::chrono::steady_clock::now() + options_.statement_timeout + options_.answer_margin;
        if (!PQsendQueryParams(c, sql.c_str(), static_cast<int>(params.size()), nullptr, params.data(), nullptr,
                               nullptr, 0))
            return lost(describe_connection_failure(PQerrorMessage(c)));
        for (int flushed; (flushed = PQflush(c)) != 0;) {
            if (flushed < 0 || !wait_socket(POLLOUT | POLLIN, deadline) || !PQconsumeInput(c))
                return lost("the connection to PostgreSQL at " + options_.where() + " failed while sending; " +
                            describe_connection_failure(PQerrorMessage(c)));
        }
        result_ptr answer;
        for (;;) {
            while (PQisBusy(c)) {
                if (!wait_socket(POLLIN, deadline))
                    return lost("PostgreSQL at " + options_.where() + " did not answer within " +
                                std::to_string((options_.statement_timeout + options_.answer_margin).count()) +
                                " ms; check that the server runs and is not overloaded, and the network");
                if (!PQconsumeInput(c)) return lost(describe_connection_failure(PQerrorMessage(c)));
            }
            result_ptr r(PQgetResult(c));
            if (!r) break;
            if (!answer || PQresultStatus(r.get()) == PGRES_FATAL_ERROR) answer = std::move(r);
        }
        // A broken connection ends the query with an error result too.
        if (!answer || PQstatus(c) == CONNECTION_BAD) return lost(describe_connection_failure(PQerrorMessage(c)));
        const auto status = PQresultStatus(answer.get());
        if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return answer;
        failed_state_ = sqlstate(answer.get());
        failed = storage_failure(describe_refusal(failed_state_, PQresultErrorMessage(answer.get())));
        // A server that turned read-only or is shutting down: the next
        // connection may reach the new primary.
        if (failed_state_ == "25006" || failed_state_.rfind("57P", 0) == 0) connection_.reset();
        return nullptr;
    }

    std::string describe_refusal(const std::string& state, std::string_view said) const {
        return refusal_text(options_, state, said);
    }

    bool create_table(error_info& failed) {
        if (!options_.create_table) {
            failed = storage_failure(describe_refusal("42P01", ""));
            return false;
        }
        bool io_failed = false;
        if (run(options_.create_table_statement(), {}, failed, io_failed)) return true;
        // Two processes creating the table at once: the loser is told the
        // type or table exists, and the table is there all the same.
        if (failed_state_ == "23505" || failed_state_ == "42P07") return true;
        if (failed_state_ == "42501")
            failed = storage_failure("the table " + options_.table + " does not exist at " + options_.where() +
                                     " and this user may not create it; ask an administrator to run: " +
                                     options_.create_table_statement() +
                                     " and to grant the user SELECT, INSERT, UPDATE on it");
        return false;
    }

    bool drain_notifications() {
        bool any = false;
        while (PGnotify* n = PQnotifies(connection_.get())) {
            PQfreemem(n);
            any = true;
        }
        return any;
    }

    postgres_options options_;
    std::string table_;
    statements sql_;
    std::mutex mutex_;
    connection_ptr connection_;
    std::string failed_state_;
    std::string held_token_;
    bool listening_ = false;
};

}  // namespace detail::postgres

inline std::string postgres_options::create_table_statement() const {
    const std::string t = detail::postgres::quoted_table(table);
    return "create table if not exists " + (t.empty() ? table : t) +
           " (key text primary key, document text, generation bigint not null default 0, holder text, "
           "lease_until timestamptz)";
}

inline std::string postgres_options::where() const {
    std::string out = "postgresql://";
    char* error = nullptr;
    PQconninfoOption* parsed = PQconninfoParse(connection.c_str(), &error);
    if (error) PQfreemem(error);
    if (parsed) {
        const std::string user = detail::postgres::conninfo_value(parsed, "user");
        const std::string host = detail::postgres::conninfo_value(parsed, "host");
        const std::string hostaddr = detail::postgres::conninfo_value(parsed, "hostaddr");
        const std::string port = detail::postgres::conninfo_value(parsed, "port");
        const std::string db = detail::postgres::conninfo_value(parsed, "dbname");
        PQconninfoFree(parsed);
        if (!user.empty()) out += user + "@";
        out += !host.empty() ? host : !hostaddr.empty() ? hostaddr : "(default host)";
        if (!port.empty()) out += ":" + port;
        if (!db.empty()) out += "/" + db;
    } else {
        out += "(an unreadable connection string)";
    }
    return detail::safe_server_text(out, password.reveal()) + " table " + table + " key " + key;
}

inline postgres_options postgres_options::from_url(std::string_view url, error_info& failed) {
    failed = {};
    postgres_options out;
    auto bad = [&](std::string text) {
        failed = {make_error_code(errc::invalid_configuration), "the PostgreSQL URL " + std::move(text)};
        return postgres_options{};
    };
    std::string_view scheme;
    for (std::string_view s : {"postgresql://", "postgres://"})
        if (url.rfind(s, 0) == 0) scheme = s;
    if (scheme.empty())
        return bad("must start with postgresql:// (e.g. postgresql://svc@db.internal:5432/app?key=textual)");
    const std::string_view rest = url.substr(scheme.size());
    const std::size_t query = rest.find('?');
    const std::string_view base = rest.substr(0, query);
    const std::string_view authority = base.substr(0, base.find('/'));
    const std::size_t at = authority.rfind('@');
    if (at != std::string_view::npos && authority.substr(0, at).find(':') != std::string_view::npos)
        return bad("carries a password, which `ps` and logs would show; remove it and set TOKMGR_POSTGRES_PASSWORD "
                   "(postgres_options::password) or a PGPASSFILE entry (the URL is not repeated here)");
    // libpq reads a port that is not a number only when it connects: say so here.
    const std::string_view hostport = authority.substr(at == std::string_view::npos ? 0 : at + 1);
    if (!hostport.empty() && hostport.front() != '[' && hostport.find(':') != std::string_view::npos) {
        const std::string_view port = hostport.substr(hostport.rfind(':') + 1);
        if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string_view::npos ||
            std::stoul(std::string(port)) == 0 || std::stoul(std::string(port)) > 65535)
            return bad("has a port that is not a number from 1 to 65535");
    }
    std::string passed_on(url.substr(0, scheme.size() + base.size()));
    std::string key;
    bool has_key = false;
    std::string_view params = query == std::string_view::npos ? std::string_view() : rest.substr(query + 1);
    char separator = '?';
    while (!params.empty()) {
        const std::size_t amp = params.find('&');
        const std::string_view param = params.substr(0, amp);
        params = amp == std::string_view::npos ? std::string_view() : params.substr(amp + 1);
        if (param.rfind("key=", 0) == 0) {
            if (!detail::percent_decode(param.substr(4), key)) return bad("has a bad %-escape in its key");
            has_key = true;
        } else if (param.rfind("table=", 0) == 0) {
            if (!detail::percent_decode(param.substr(6), out.table)) return bad("has a bad %-escape in its table");
            if (detail::postgres::quoted_table(out.table).empty())
                return bad("has a table that is not a plain identifier or schema.identifier (letters, digits, '_')");
        } else if (param == "create_table=0" || param == "create_table=false") {
            out.create_table = false;
        } else if (param == "create_table=1" || param == "create_table=true") {
            out.create_table = true;
        } else if (param.rfind("password=", 0) == 0) {
            return bad("carries a password, which `ps` and logs would show; remove it and set "
                       "TOKMGR_POSTGRES_PASSWORD or a PGPASSFILE entry (the URL is not repeated here)");
        } else if (!param.empty()) {
            passed_on += separator;
            passed_on += param;
            separator = '&';
        }
    }
    if (!has_key || key.empty()) return bad("needs ?key=K naming the account's row (one key per account)");
    out.key = std::move(key);
    char* error = nullptr;
    PQconninfoOption* parsed = PQconninfoParse(passed_on.c_str(), &error);
    if (!parsed) {
        std::string why = error ? detail::safe_server_text(error, {}) : std::string("not a connection URL");
        if (error) PQfreemem(error);
        return bad("is not one libpq reads: " + why);
    }
    PQconninfoFree(parsed);
    out.connection = std::move(passed_on);
    return out;
}

class postgres_storage : public detail::storage_errors<postgres_storage> {
public:
    /// The lease: while an object lives (and is not moved from), this holder
    /// owns the key's row lease — until it is released or lease_until
    /// passes, whichever comes first; `holds` tells which. Its release is a
    /// compare-and-clear of the holder (a lease that lapsed and went to
    /// another holder is left to it).
    using lease = detail::shared_lease<detail::postgres::link>;

    /// Connects on first use, not here.
    explicit postgres_storage(postgres_options options = {})
        : link_(std::make_shared<detail::postgres::link>(std::move(options))) {}

    /// A copy has the same options and a connection of its own.
    postgres_storage(const postgres_storage& other)
        : link_(std::make_shared<detail::postgres::link>(other.options())) {}
    postgres_storage& operator=(const postgres_storage& other) {
        if (this != &other) link_ = std::make_shared<detail::postgres::link>(other.options());
        return *this;
    }
    postgres_storage(postgres_storage&&) noexcept = default;
    postgres_storage& operator=(postgres_storage&&) noexcept = default;

    const postgres_options& options() const noexcept { return link_->options(); }

    /// The stored set; nullopt with no error when the row does not exist or
    /// holds no document yet. errc::storage_failed: the database cannot be
    /// reached or refused us, or the row holds something tokmgr did not
    /// write (left as it is; the detail says what to do).
    std::optional<token_set> load(std::error_code& ec) {
        clear_error(ec);
        std::lock_guard<std::mutex> lock(link_->mutex());
        std::uint64_t generation = 0;
        return read_current(generation, ec);
    }

    /// Unconditional write (the Storage policy's `store`); refuses, as
    /// store_if does, to replace a row tokmgr did not write.
    void store(const token_set& set, std::error_code& ec) {
        clear_error(ec);
        std::lock_guard<std::mutex> lock(link_->mutex());
        for (int attempt = 0; attempt < 8; ++attempt) {
            std::uint64_t current = 0;
            read_current(current, ec);
            if (ec) return;
            if (write(set, current, /*fenced_by_lease=*/false, ec) || ec) return;
        }
        fail(ec, errc::storage_failed,
             "store to " + options().where() + ": the row kept changing under this write; retry");
    }

    /// Takes the lease, waiting at most `max_wait` (plus one poll step of at
    /// most 50 ms). errc::lease_timeout when another holder kept it longer;
    /// errc::storage_failed when the database cannot be used (at once).
    lease lock(std::chrono::milliseconds max_wait, std::error_code& ec) {
        clear_error(ec);
        const auto deadline = std::chrono::steady_clock::now() + max_wait;
        std::lock_guard<std::mutex> lock(link_->mutex());
        const std::string token = detail::random_lease_token();
        const std::string ttl = std::to_string(std::max<std::int64_t>(options().lease_ttl.count(), 1));
        struct wait_end {
            detail::postgres::link& link;
            ~wait_end() { link.stop_waiting(); }
        } end_of_wait{*link_};
        using detail::lease_attempt;
        const lease_attempt got = detail::take_lease_until(
            deadline,
            [&] {
                error_info failed;
                auto r = link_->query(link_->sql().lock, {options().key.c_str(), token.c_str(), ttl.c_str()}, failed);
                if (!r) {
                    fail(ec, detail::code_of(failed), "taking the lease on " + options().where() + ": " + failed.detail);
                    return lease_attempt::failed;
                }
                return PQntuples(r.get()) == 1 ? lease_attempt::taken : lease_attempt::held_elsewhere;
            },
            [&](std::chrono::milliseconds step) { link_->wait_for_change(step); });
        if (got == lease_attempt::taken) {
            link_->held_token() = token;
            return lease(link_, token);
        }
        if (got == lease_attempt::held_elsewhere) fail(ec, errc::lease_timeout, lease_timeout_text(max_wait));
        return {};
    }

    /// Whether `held` is still this holder's lease: false when it was
    /// released or lease_until passed. errc::storage_failed (and false) when
    /// the database cannot be asked.
    bool holds(const lease& held, std::error_code& ec) {
        clear_error(ec);
        if (!held) return false;
        std::lock_guard<std::mutex> lock(link_->mutex());
        error_info failed;
        auto r = link_->query(link_->sql().holds, {options().key.c_str(), held.token().c_str()}, failed);
        if (!r) {
            fail(ec, detail::code_of(failed), "checking the lease on " + options().where() + ": " + failed.detail);
            return false;
        }
        return holds_answer(r.get());
    }

    /// Compare-and-swap on the generation, one statement: writes `set` only
    /// when the stored generation equals `expected_generation` (0: no row or
    /// no document yet) and, while this store holds a lease, the lease is
    /// still its own. False and no error when either differs. A row tokmgr
    /// did not write is never replaced: false with storage_failed.
    bool store_if(const token_set& set, std::uint64_t expected_generation, std::error_code& ec) {
        clear_error(ec);
        if (!generation_increases(set, expected_generation, ec)) return false;
        std::lock_guard<std::mutex> lock(link_->mutex());
        return write(set, expected_generation, /*fenced_by_lease=*/true, ec);
    }

    using detail::storage_errors<postgres_storage>::load;
    using detail::storage_errors<postgres_storage>::store;
    using detail::storage_errors<postgres_storage>::lock;
    using detail::storage_errors<postgres_storage>::holds;
    using detail::storage_errors<postgres_storage>::store_if;

protected:
    std::string not_ours(std::string_view what) const {
        return "the row " + options().key + " of " + options().table + " at " + options().where() + " holds " +
               std::string(what) +
               "; tokmgr never overwrites what it did not write: if no other program uses this row, delete it "
               "(delete from " + options().table + " where key = '" + options().key +
               "') and the next login writes a new one, or choose another key";
    }

    /// Why tokmgr may not use or write over the row, or empty when it holds
    /// no document at generation 0 or version 1 of a tokmgr document whose
    /// generation is the row's (the condition the store_if statement checks).
    std::string row_refusal(const char* document, std::size_t length, const std::string& generation) const {
        if (!document)
            return generation == "0" ? std::string() : not_ours("generation " + generation + " and no document");
        const std::string_view text(document, length);
        constexpr std::string_view any_version = "{\"format\":\"tokmgr-token-set\",\"version\":";
        const std::string ours = std::string(any_version) + "1,\"generation\":";
        if (text.substr(0, ours.size()) == ours) {
            const std::string_view rest = text.substr(ours.size());
            if (rest.substr(0, generation.size() + 1) == generation + ",") return {};
            return not_ours("a document whose generation is not the row's generation " + generation +
                            " (edited by another program?)");
        }
        if (text.substr(0, any_version.size()) == any_version)
            return "the row " + options().key + " at " + options().where() +
                   " holds a token-set document of another version than this build of tokmgr reads (version " +
                   std::to_string(token_set_version) + "); upgrade tokmgr (it was not overwritten)";
        return not_ours("a value that is not a tokmgr token-set document");
    }

    /// Wipes libpq's copy of a stored document (it holds the tokens) when
    /// the result is done with.
    struct wipe_on_exit {
        char* text;
        std::size_t length;
        ~wipe_on_exit() { detail::secure_wipe(text, length); }
    };

    /// SELECT and decode; under the link's mutex. `generation`: the row's
    /// generation column (0 without a row).
    std::optional<token_set> read_current(std::uint64_t& generation, std::error_code& ec) {
        generation = 0;
        error_info failed;
        auto r = link_->query(link_->sql().load, {options().key.c_str()}, failed);
        if (!r) {
            fail(ec, detail::code_of(failed), "reading the token set: " + failed.detail);
            return std::nullopt;
        }
        return loaded_set(r.get(), generation, ec);
    }

    /// The fenced write; under the link's mutex.
    bool write(const token_set& set, std::uint64_t expected, bool fenced_by_lease, std::error_code& ec) {
        fenced_write w;
        if (!prepare_write(set, expected, fenced_by_lease ? link_->held_token() : std::string(), w, ec)) return false;
        error_info failed;
        auto r = link_->query(*w.sql, w.params(), failed);
        if (!r) {
            fail(ec, detail::code_of(failed), "storing the token set: " + failed.detail);
            return false;
        }
        return written(r.get(), ec);
    }

protected:
    // What the blocking members and the asynchronous ones (postgres_async.hpp)
    // share: the statements' parameters and the reading of their answers.

    std::shared_ptr<detail::postgres::link>& shared_link() noexcept { return link_; }

    /// The load statement's answer as a set (nullopt: none, or `ec`).
    std::optional<token_set> loaded_set(PGresult* r, std::uint64_t& generation, std::error_code& ec) {
        generation = 0;
        if (PQntuples(r) == 0) return std::nullopt;
        const std::string generation_text = PQgetisnull(r, 0, 1) ? "" : PQgetvalue(r, 0, 1);
        generation = std::strtoull(generation_text.c_str(), nullptr, 10);
        const bool no_document = PQgetisnull(r, 0, 0);
        char* text = PQgetvalue(r, 0, 0);
        const std::size_t length = static_cast<std::size_t>(PQgetlength(r, 0, 0));
        wipe_on_exit wipe{text, length};
        if (auto refusal = row_refusal(no_document ? nullptr : text, length, generation_text); !refusal.empty()) {
            fail(ec, errc::storage_foreign, std::move(refusal));
            return std::nullopt;
        }
        if (no_document) return std::nullopt;  // a lease taken before the first write
        error_info unreadable;
        auto set = decode_token_set(std::string_view(text, length), unreadable);
        if (!set) {
            fail(ec, errc::storage_foreign,
                 not_ours("a value that is not a readable tokmgr token-set document (" + unreadable.detail + ")"));
            return std::nullopt;
        }
        return set;
    }

    /// The parameters of one fenced write; they own their text.
    struct fenced_write {
        secret document;
        std::string key, expected, generation, holder, channel;
        const std::string* sql = nullptr;
        std::vector<const char*> params() const {
            // reveal() views the secret's own std::string, which ends in '\0'.
            return {key.c_str(), expected.c_str(), document.reveal().data(), generation.c_str(),
                    holder.empty() ? nullptr : holder.c_str(), channel.c_str()};
        }
    };

    /// `holder`: the lease token the write is fenced by (empty: none).
    bool prepare_write(const token_set& set, std::uint64_t expected, std::string holder, fenced_write& out,
                       std::error_code& ec) {
        error_info refused;
        out.document = encode_token_set(set, refused);
        if (refused) {
            fail(ec, detail::code_of(refused), "cannot store to " + options().where() + ": " + refused.detail);
            return false;
        }
        out.key = options().key;
        out.expected = std::to_string(expected);
        out.generation = std::to_string(set.generation);
        out.holder = std::move(holder);
        out.channel = options().channel();
        out.sql = expected == 0 ? &link_->sql().store_first : &link_->sql().store_next;
        return true;
    }

    /// Whether the fenced write's answer says it wrote; `ec` when the row is
    /// one tokmgr must not touch.
    bool written(PGresult* r, std::error_code& ec) {
        if (PQntuples(r) != 1) {
            fail(ec, errc::storage_failed, "storing the token set on " + options().where() + ": an unexpected answer");
            return false;
        }
        if (std::strcmp(PQgetvalue(r, 0, 0), "0") != 0) return true;
        // Not written: say why when it is a row tokmgr must not touch.
        if (!PQgetisnull(r, 0, 1)) {
            const bool no_document = PQgetisnull(r, 0, 2);
            char* before = PQgetvalue(r, 0, 2);
            wipe_on_exit wipe{before, static_cast<std::size_t>(PQgetlength(r, 0, 2))};
            if (auto refusal = row_refusal(no_document ? nullptr : before, wipe.length, PQgetvalue(r, 0, 1));
                !refusal.empty()) {
                fail(ec, errc::storage_foreign, std::move(refusal));
                return false;
            }
        }
        return false;  // another generation is stored, or the lease went to another holder
    }

    static bool holds_answer(PGresult* r) {
        return PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) && PQgetvalue(r, 0, 0)[0] == 't';
    }

    std::string lease_timeout_text(std::chrono::milliseconds max_wait) const {
        return "the lease on " + options().where() + " was held by another process for longer than " +
               std::to_string(max_wait.count()) +
               " ms; retry later, or wait longer (lease_wait); a holder that died frees it after " +
               std::to_string(options().lease_ttl.count()) + " ms (lease_ttl)";
    }

    using detail::storage_errors<postgres_storage>::clear_error;
    using detail::storage_errors<postgres_storage>::fail;

private:
    std::shared_ptr<detail::postgres::link> link_;
};

}  // namespace tokmgr
