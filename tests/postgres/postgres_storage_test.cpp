// postgres_storage against a real PostgreSQL 15 (started by the ctest
// fixture, its port in TOKMGR_TEST_POSTGRES_DIR/port, with TLS and the roles
// postgres_fixture.sh lists): what is stored, the lease between objects and
// threads, its expiry, the fenced writes, and the failures — rows and tables
// tokmgr did not write, a wrong password, a missing table without the right
// to create it, a read-only server, a statement timeout, a certificate that
// does not verify, a server that is down or silent — and the coordinating-
// store scenarios of the core suite with postgres_storage.
#include <doctest/doctest.h>

#include <tokmgr/concepts.hpp>
#include <tokmgr/storage/postgres.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "postgres_test_support.hpp"

using namespace std::chrono_literals;
using tokmgr::errc;
using tokmgr::postgres_options;
using tokmgr::postgres_storage;
using postgres_test::connection_for;
using postgres_test::fixture_file;
using postgres_test::postgres_port;
using postgres_test::set_of;
using postgres_test::silent_server;

static_assert(tokmgr::is_coordinating_storage_v<postgres_storage>);

namespace {

constexpr const char* superuser_password = "fixture-password";

/// A key of its own for each test, so tests never see each other's rows.
std::string fresh_key() {
    static std::atomic<int> n{0};
    return "test:" + std::to_string(::getpid()) + ":" + std::to_string(++n);
}
std::string fresh_table() {
    static std::atomic<int> n{0};
    return "tokmgr_test_" + std::to_string(::getpid()) + "_" + std::to_string(++n);
}

postgres_options options_for(const std::string& key) {
    postgres_options o;
    o.connection = connection_for("postgres");
    o.password = tokmgr::secret(superuser_password);
    o.key = key;
    o.lease_ttl = 5s;
    return o;
}

/// A plain libpq connection, as the superuser, for arranging and inspecting.
class raw_postgres {
public:
    raw_postgres() {
        const std::string conninfo = connection_for("postgres", std::string("password=") + superuser_password);
        c_.reset(PQconnectdb(conninfo.c_str()));
        REQUIRE(PQstatus(c_.get()) == CONNECTION_OK);
    }
    /// The first column of the first row ("(null)", "(none)" without a
    /// row), or "ERROR <sqlstate>".
    std::string run(const std::string& sql) {
        tokmgr::detail::postgres::result_ptr r(PQexec(c_.get(), sql.c_str()));
        const auto status = PQresultStatus(r.get());
        if (status == PGRES_COMMAND_OK) return "OK";
        if (status != PGRES_TUPLES_OK) return "ERROR " + tokmgr::detail::postgres::sqlstate(r.get());
        if (PQntuples(r.get()) == 0) return "(none)";
        if (PQgetisnull(r.get(), 0, 0)) return "(null)";
        return PQgetvalue(r.get(), 0, 0);
    }
    PGconn* get() const { return c_.get(); }

private:
    tokmgr::detail::postgres::connection_ptr c_;
};

std::string row_of(const std::string& key, const std::string& column,
                   const std::string& table = "tokmgr_token_sets") {
    return raw_postgres().run("select " + column + " from " + table + " where key = '" + key + "'");
}

template <class F>
std::chrono::milliseconds timed(F&& f) {
    const auto start = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
}

}  // namespace

TEST_CASE("round trip: the row holds the token-set document and its generation; no row loads as nothing") {
    const auto key = fresh_key();
    postgres_storage store(options_for(key));
    std::error_code ec;
    CHECK_FALSE(store.load(ec));
    CHECK_FALSE(ec);
    store.store(set_of(3), ec);
    REQUIRE_FALSE(ec);
    const auto loaded = store.load(ec);
    REQUIRE(loaded);
    CHECK(loaded->jwt == set_of(3).jwt);
    CHECK(loaded->refresh_token == set_of(3).refresh_token);
    CHECK(loaded->generation == 3);
    CHECK(row_of(key, "generation") == "3");
    CHECK(row_of(key, "document") + "" == std::string(tokmgr::encode_token_set(set_of(3)).reveal()));
    // Another object (its own connection) reads the same row.
    CHECK(postgres_storage(options_for(key)).load()->generation == 3);
}

TEST_CASE("store_if is a compare-and-swap on the stored generation, and a repeated write counts as written") {
    const auto key = fresh_key();
    postgres_storage store(options_for(key));
    CHECK(store.store_if(set_of(1), 0));
    CHECK_FALSE(store.store_if(set_of(2, false, "other"), 0));  // generation 1 is stored
    CHECK(store.store_if(set_of(2), 1));
    CHECK(store.store_if(set_of(2), 1));  // the same write again (a lost answer): written
    CHECK_FALSE(store.store_if(set_of(2, false, "other"), 1));
    CHECK_FALSE(store.store_if(set_of(9), 5));
    CHECK(store.load()->jwt == set_of(2).jwt);
    std::error_code ec;
    CHECK_FALSE(store.store_if(set_of(2), 2, ec));
    CHECK(ec == errc::storage_failed);  // the generation must increase
}

TEST_CASE("the lease excludes other objects, times out with lease_timeout, and its release wakes a waiter at once") {
    const auto key = fresh_key();
    postgres_storage a(options_for(key)), b(options_for(key));
    auto held = a.lock(0ms);
    REQUIRE(held);
    CHECK(a.holds(held));
    std::error_code ec;
    const auto waited = timed([&] { CHECK_FALSE(b.lock(100ms, ec)); });
    CHECK(ec == errc::lease_timeout);
    CHECK(waited >= 100ms);
    CHECK(waited < 1s);
    CHECK(b.last_error().detail.find("lease_ttl") != std::string::npos);
    CHECK(row_of(key, "holder") != "(null)");

    std::thread releaser([&] {
        std::this_thread::sleep_for(300ms);
        held.release();
    });
    std::chrono::milliseconds took{};
    postgres_storage::lease second;
    took = timed([&] { second = b.lock(5s); });
    releaser.join();
    CHECK(second);
    CHECK(took < 400ms);  // woken by the NOTIFY, not a long poll
    CHECK(b.holds(second));
    second.release();
    CHECK(row_of(key, "holder") == "(null)");
    // The waiter's LISTEN ended with its wait.
    CHECK(raw_postgres().run("select count(*) from pg_stat_activity where query like 'listen%' and state = 'active'") ==
          "0");
}

TEST_CASE("the lease between threads: never two holders at once") {
    const auto key = fresh_key();
    std::atomic<int> inside{0}, overlaps{0}, taken{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            postgres_storage store(options_for(key));
            for (int i = 0; i < 10; ++i) {
                auto held = store.lock(10s);
                if (!held) continue;
                ++taken;
                if (++inside > 1) ++overlaps;
                std::this_thread::sleep_for(2ms);
                --inside;
            }
        });
    }
    for (auto& t : threads) t.join();
    CHECK(taken == 40);
    CHECK(overlaps == 0);
}

TEST_CASE("a lease that lapsed: holds() is false, its release spares the next holder, and it cannot overwrite") {
    const auto key = fresh_key();
    auto short_lease = options_for(key);
    short_lease.lease_ttl = 200ms;
    postgres_storage slow(short_lease), other(options_for(key));
    REQUIRE(slow.store_if(set_of(1), 0));
    auto stale = slow.lock(0ms);
    REQUIRE(stale);
    std::this_thread::sleep_for(300ms);
    CHECK_FALSE(slow.holds(stale));
    auto fresh = other.lock(0ms);
    REQUIRE(fresh);
    // The paused holder writes with the generation it knew: fenced by the
    // holder, even though the generation still matches.
    CHECK_FALSE(slow.store_if(set_of(2, true, "slow"), 1));
    CHECK(row_of(key, "generation") == "1");
    stale.release();
    CHECK(other.holds(fresh));
    CHECK(other.store_if(set_of(2), 1));
}

TEST_CASE("a row tokmgr did not write: storage_foreign saying what to do, and never overwritten") {
    raw_postgres raw;
    postgres_storage(options_for(fresh_key())).load();  // the table exists
    struct foreign_row {
        std::string document, generation, said;
    };
    for (const foreign_row& row : {foreign_row{"'somebody else''s value'", "0", "delete from"},
                                   foreign_row{"'{\"format\":\"tokmgr-token-set\",\"version\":7,\"x\":1}'", "0", "upgrade"},
                                   foreign_row{"'" + std::string(tokmgr::encode_token_set(set_of(4)).reveal()) + "'",
                                               "5", "not the row's generation 5"},
                                   foreign_row{"null", "3", "no document"}}) {
        CAPTURE(row.document);
        const auto key = fresh_key();
        REQUIRE(raw.run("insert into tokmgr_token_sets (key, document, generation) values ('" + key + "', " +
                        row.document + ", " + row.generation + ")") == "OK");
        const std::string before = row_of(key, "document");
        postgres_storage store(options_for(key));
        std::error_code ec;
        CHECK_FALSE(store.load(ec));
        CHECK(ec == errc::storage_foreign);
        CHECK(store.last_error().detail.find(row.said) != std::string::npos);
        CHECK(store.last_error().detail.find("rt-SECRET") == std::string::npos);
        store.store(set_of(9), ec);
        CHECK(ec == errc::storage_foreign);
        const std::uint64_t generation = std::stoull(row.generation);
        CHECK_FALSE(store.store_if(set_of(generation + 1), generation, ec));
        CHECK(row_of(key, "document") == before);
        CHECK(row_of(key, "generation") == row.generation);
    }
}

TEST_CASE("a table that is not tokmgr's: storage_failed, what to do, and the table untouched") {
    const auto table = fresh_table();
    raw_postgres raw;
    REQUIRE(raw.run("create table " + table + " (key text primary key, payload text)") == "OK");
    REQUIRE(raw.run("insert into " + table + " values ('textual', 'theirs')") == "OK");
    auto options = options_for("textual");
    options.table = table;
    postgres_storage store(options);
    std::error_code ec;
    CHECK_FALSE(store.load(ec));
    CHECK(ec == errc::storage_failed);
    CHECK(store.last_error().detail.find("is not a tokmgr table") != std::string::npos);
    CHECK_FALSE(store.lock(0ms, ec));
    CHECK(ec == errc::storage_failed);
    CHECK_FALSE(store.store_if(set_of(1), 0, ec));
    CHECK(ec == errc::storage_failed);
    CHECK(raw.run("select payload from " + table) == "theirs");
    CHECK(raw.run("select count(*) from " + table) == "1");
    raw.run("drop table " + table);
}

TEST_CASE("the table: created on first use when allowed; otherwise an error quoting the statement") {
    raw_postgres raw;
    SUBCASE("created") {
        auto options = options_for(fresh_key());
        options.table = fresh_table();
        postgres_storage store(options);
        CHECK(store.store_if(set_of(1), 0));
        CHECK(raw.run("select generation from " + options.table) == "1");
        raw.run("drop table " + options.table);
    }
    SUBCASE("creation not allowed") {
        auto options = options_for(fresh_key());
        options.table = fresh_table();
        options.create_table = false;
        postgres_storage store(options);
        std::error_code ec;
        CHECK_FALSE(store.load(ec));
        CHECK(ec == errc::storage_failed);
        CHECK(store.last_error().detail.find("create table if not exists \"" + options.table + "\"") !=
              std::string::npos);
        CHECK(raw.run("select to_regclass('" + options.table + "') is null") == "t");
    }
    SUBCASE("a user without the right to create it") {
        auto options = options_for(fresh_key());
        options.table = fresh_table();
        options.connection = connection_for("tokmgr_limited");
        options.password = tokmgr::secret("limited-password");
        postgres_storage store(options);
        std::error_code ec;
        CHECK_FALSE(store.load(ec));
        CHECK(ec == errc::storage_failed);
        CHECK(store.last_error().detail.find("may not create it; ask an administrator to run: create table") !=
              std::string::npos);
        CHECK(raw.run("select to_regclass('" + options.table + "') is null") == "t");
    }
    SUBCASE("a schema-qualified name, and one that is not an identifier") {
        auto options = options_for(fresh_key());
        options.table = "public." + fresh_table();
        CHECK(postgres_storage(options).store_if(set_of(1), 0));
        raw.run("drop table " + options.table);
        options.table = "x; drop table y";
        postgres_storage bad(options);
        std::error_code ec;
        bad.load(ec);
        CHECK(ec == errc::storage_failed);
        CHECK(bad.last_error().detail.find("not a plain identifier") != std::string::npos);
    }
}

TEST_CASE("a wrong password or none: a clear error that never shows the password") {
    auto options = options_for(fresh_key());
    options.password = tokmgr::secret("wrong-hunter22");
    postgres_storage store(options);
    std::error_code ec;
    CHECK_FALSE(store.load(ec));
    CHECK(ec == errc::storage_unreachable);
    CHECK(store.last_error().detail.find("refused the password") != std::string::npos);
    CHECK(store.last_error().detail.find("TOKMGR_POSTGRES_PASSWORD") != std::string::npos);
    CHECK(store.last_error().detail.find("hunter22") == std::string::npos);

    options.password = tokmgr::secret();
    ::setenv("PGPASSFILE", "/nonexistent/pgpass", 1);
    postgres_storage without(options);
    CHECK_FALSE(without.load(ec));
    CHECK(ec == errc::storage_unreachable);
    CHECK(without.last_error().detail.find("asks for a password") != std::string::npos);
    ::unsetenv("PGPASSFILE");
}

TEST_CASE("the password from libpq's PGPASSFILE") {
    const std::string path = fixture_file("pgpass-test");
    {
        std::ofstream out(path);
        out << "127.0.0.1:" << postgres_port() << ":postgres:postgres:" << superuser_password << "\n";
    }
    ::chmod(path.c_str(), 0600);
    ::setenv("PGPASSFILE", path.c_str(), 1);
    auto options = options_for(fresh_key());
    options.password = tokmgr::secret();
    std::error_code ec;
    postgres_storage(options).load(ec);
    CHECK_FALSE(ec);
    ::unsetenv("PGPASSFILE");
}

TEST_CASE("TLS: verify-full with the fixture's CA works; a certificate another CA signed is refused, clearly") {
    auto options = options_for(fresh_key());
    options.connection = "host=localhost port=" + std::to_string(postgres_port()) +
                         " dbname=postgres user=postgres sslmode=verify-full sslrootcert=" + fixture_file("ca.crt");
    postgres_storage verified(options);
    CHECK(verified.store_if(set_of(1), 0));
    CHECK(raw_postgres().run("select count(*) > 0 from pg_stat_ssl where ssl") == "t");

    options.connection = "host=localhost port=" + std::to_string(postgres_port()) +
                         " dbname=postgres user=postgres sslmode=verify-full sslrootcert=" + fixture_file("other-ca.crt");
    postgres_storage refused(options);
    std::error_code ec;
    CHECK_FALSE(refused.load(ec));
    CHECK(ec == errc::storage_unreachable);
    CHECK(refused.last_error().detail.find("certificate") != std::string::npos);
    CHECK(refused.last_error().detail.find("did not verify") != std::string::npos);
}

TEST_CASE("a read-only server (a standby, a failover in progress): writes fail clearly, reads work") {
    const auto key = fresh_key();
    postgres_storage(options_for(key)).store_if(set_of(1), 0);
    auto options = options_for(key);
    options.connection = connection_for("tokmgr_readonly");
    options.password = tokmgr::secret("readonly-password");
    postgres_storage store(options);
    CHECK(store.load()->generation == 1);
    std::error_code ec;
    CHECK_FALSE(store.store_if(set_of(2), 1, ec));
    CHECK(ec == errc::storage_failed);
    CHECK(store.last_error().detail.find("read-only") != std::string::npos);
    CHECK(store.last_error().detail.find("target_session_attrs=read-write") != std::string::npos);
    CHECK_FALSE(store.lock(0ms, ec));
    CHECK(ec == errc::storage_failed);
    CHECK(row_of(key, "generation") == "1");
}

TEST_CASE("a statement that waits on another session's lock ends at statement_timeout, clearly") {
    const auto key = fresh_key();
    auto options = options_for(key);
    options.statement_timeout = 300ms;
    postgres_storage store(options);
    REQUIRE(store.store_if(set_of(1), 0));
    raw_postgres blocker;
    REQUIRE(blocker.run("begin") == "OK");
    REQUIRE(blocker.run("lock table tokmgr_token_sets in access exclusive mode") == "OK");
    std::error_code ec;
    const auto took = timed([&] { store.load(ec); });
    CHECK(ec == errc::storage_failed);
    CHECK(store.last_error().detail.find("statement_timeout") != std::string::npos);
    CHECK(took >= 300ms);
    CHECK(took < 1500ms);
    blocker.run("rollback");
    CHECK(store.load(ec));
    CHECK_FALSE(ec);
}

TEST_CASE("a database that is down, or a port that never answers: storage_unreachable within the timeouts") {
    SUBCASE("nothing listens") {
        auto options = options_for(fresh_key());
        int port = 0;
        {
            silent_server closed_after;  // a port nothing listens on once it closes
            port = closed_after.port();
        }
        options.connection = "host=127.0.0.1 port=" + std::to_string(port) + " dbname=postgres user=postgres";
        postgres_storage store(options);
        std::error_code ec;
        const auto took = timed([&] { store.lock(5s, ec); });
        CHECK(ec == errc::storage_unreachable);  // at once, not after the lease wait
        CHECK(took < 1s);
        CHECK(store.last_error().detail.find("nothing listens") != std::string::npos);
    }
    SUBCASE("a server that accepts and never answers") {
        silent_server silent;
        auto options = options_for(fresh_key());
        options.connection = "host=127.0.0.1 port=" + std::to_string(silent.port()) + " dbname=postgres user=postgres";
        options.connect_timeout = 2s;
        postgres_storage store(options);
        std::error_code ec;
        const auto took = timed([&] { store.load(ec); });
        CHECK(ec == errc::storage_unreachable);
        CHECK(took < 4s);
        CHECK(store.last_error().detail.find("connect_timeout") != std::string::npos);
    }
}

TEST_CASE("a connection the server ended is reopened on the next call") {
    const auto key = fresh_key();
    postgres_storage store(options_for(key));
    REQUIRE(store.store_if(set_of(1), 0));
    raw_postgres raw;
    CHECK(raw.run("select count(pg_terminate_backend(pid)) > 0 from pg_stat_activity where application_name = "
                  "'tokmgr' and pid <> pg_backend_pid()") == "t");
    std::error_code ec;
    const auto loaded = store.load(ec);
    CHECK_FALSE(ec);
    REQUIRE(loaded);
    CHECK(loaded->generation == 1);
}

TEST_CASE("postgresql URLs: key, table, libpq parameters passed on; a password is refused and never shown") {
    auto o = postgres_options::from_url("postgresql://svc@db.internal:6432/app?key=acct%3A1&sslmode=verify-full&table=ops.tokens");
    CHECK(o.key == "acct:1");
    CHECK(o.table == "ops.tokens");
    CHECK(o.create_table);
    CHECK(o.connection == "postgresql://svc@db.internal:6432/app?sslmode=verify-full");
    CHECK(o.where() == "postgresql://svc@db.internal:6432/app table ops.tokens key acct:1");
    CHECK_FALSE(postgres_options::from_url("postgres://h/db?key=k&create_table=0").create_table);
    CHECK(postgres_options::from_url("postgres://h/db?key=k").connection == "postgres://h/db");
    for (const char* bad : {"postgresql://svc:hunter22@h/db?key=k", "postgresql://h/db?key=k&password=hunter22",
                            "postgresql://h/db", "postgresql://h/db?key=", "mysql://h/db?key=k",
                            "postgresql://h/db?key=k&table=a;b", "postgresql://h:notaport/db?key=k"}) {
        CAPTURE(bad);
        tokmgr::error_info failed;
        postgres_options::from_url(bad, failed);
        CHECK(failed.code == errc::invalid_configuration);
        CHECK(failed.detail.find("hunter22") == std::string::npos);
        std::error_code ec;
        postgres_options::from_url(bad, ec);
        CHECK(ec == errc::invalid_configuration);
    }
    CHECK_THROWS_AS(postgres_options::from_url("postgresql://h/db"), tokmgr::error);
    CHECK(postgres_options::lease_ttl_for(50s) == 60s);
    // A connection string with a password: where() never shows it.
    postgres_options with_password;
    with_password.connection = "host=h password=hunter22";
    CHECK(with_password.where().find("hunter22") == std::string::npos);
}

// ---- the manager on postgres_storage: the core's coordinating-store scenarios ----

namespace {

using postgres_manager = tokmgr::token_manager<tokmgr::testing::fake_transport, tokmgr::testing::manual_clock,
                                               postgres_storage, tokmgr::simdjson_json>;

std::unique_ptr<postgres_manager> make_manager(test::harness& h, const std::string& key) {
    return std::make_unique<postgres_manager>(h.transport,
                                              tokmgr::credentials{"user@example.com", tokmgr::secret(test::password)},
                                              h.options, h.clock, postgres_storage(options_for(key)));
}

}  // namespace

TEST_CASE("four managers on one PostgreSQL key, called from four threads across ten expiries: one refresh each") {
    const auto key = fresh_key();
    test::harness h(60s);
    std::vector<std::unique_ptr<postgres_manager>> managers;
    for (int i = 0; i < 4; ++i) managers.push_back(make_manager(h, key));
    const int failures = test::call_across_ten_expiries(h, managers, 20);
    const auto stats = h.server.stats();
    CHECK(failures == 0);
    CHECK(stats.refresh_tokens_reused == 0);
    CHECK(stats.refreshes_rejected == 0);
    CHECK(stats.logins == 1);
    CHECK(stats.refreshes == 9);
}

TEST_CASE("garbage in the row: the manager logs in on its own (a private session), serves, and leaves it alone") {
    const auto key = fresh_key();
    postgres_storage(options_for(key)).load();  // the table exists
    raw_postgres raw;
    raw.run("insert into tokmgr_token_sets (key, document) values ('" + key + "', 'somebody else''s value')");
    test::harness h;
    auto manager = make_manager(h, key);
    std::error_code ec;
    CHECK_FALSE(manager->get_token(ec).empty());
    CHECK_FALSE(ec);
    h.clock.advance(29min);
    CHECK_FALSE(manager->get_token(ec).empty());
    CHECK_FALSE(ec);
    CHECK(h.server.stats().logins == 1);
    CHECK(h.server.stats().refresh_tokens_reused == 0);
    CHECK(row_of(key, "document") == "somebody else's value");
    CHECK(manager->last_error().detail.find("delete from") != std::string::npos);
}

TEST_CASE("a lease held elsewhere past lease_wait: the manager keeps serving, then reports lease_timeout") {
    const auto key = fresh_key();
    test::harness h;
    postgres_storage outsider_store(options_for(key));
    test::a_lease_held_elsewhere_past_lease_wait(
        h, [&] { return make_manager(h, key); }, [&] { return outsider_store.lock(0ms); });
}

TEST_CASE("trust rule: a row deleted after another process refreshed costs a login, never the spent token") {
    const auto key = fresh_key();
    test::harness h;
    test::another_process_refreshes_then_the_store_loses_it(
        h, [&] { return make_manager(h, key); },
        [&] { raw_postgres().run("delete from tokmgr_token_sets where key = '" + key + "'"); });
    CHECK(h.server.stats().logins == 2);
}
