#!/usr/bin/env bash
# A fleet of processes sharing one PostgreSQL row (`--store postgresql://...`,
# over TLS with sslmode=verify-full), judged by the reference server's
# statistics:
#   fleet_test.sh TOKMGR FIXTURE group|kill|sigstop|postgres-down
#                                the scenarios of tests/fleet/fleet_scenarios.sh
#                                (postgres-down is its `down`: the server
#                                stopped for 10 s mid-run, then restarted)
#   fleet_test.sh TOKMGR FIXTURE cli
#                                `tokmgr token --store postgresql://...`: the
#                                stored JWT reused across runs; a password in
#                                the URL is a usage error (2) that never shows
#                                it; a database that is down or refuses the
#                                password fails with 1 and no JWT
# Each section runs its own PostgreSQL (FIXTURE is postgres_fixture.sh) and
# reference server on 127.0.0.1, and stops them on exit.
set -u
TOKMGR=$1
FIXTURE=$2
SECTION=$3
work=$(mktemp -d)
pids=()
failures=0
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
    bash "$FIXTURE" stop "$work/postgres" >/dev/null 2>&1
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
unset TONIC_TEXTUAL_BASE_URL TONIC_TEXTUAL_USERNAME SOLAR_JWT_EXPIRATION_IN_MINUTES \
      SOLAR_REFRESH_TOKEN_EXPIRATION_IN_MINUTES SOLAR_AUTH_RPM_LIMIT PGPASSWORD PGPASSFILE
export TONIC_TEXTUAL_PASSWORD=fleet-password
export TOKMGR_POSTGRES_PASSWORD=fixture-password
here=$(dirname "$0")
source "$here/../fleet/fleet_lib.sh"
source "$here/../fleet/fleet_scenarios.sh"

bash "$FIXTURE" start "$work/postgres" >/dev/null || { echo "FAIL: postgres did not start"; exit 1; }
pg_port=$(cat "$work/postgres/port")
store="postgresql://postgres@localhost:$pg_port/postgres?key=fleet&sslmode=verify-full&sslrootcert=$work/postgres/ca.crt"
sql() { PGPASSWORD=fixture-password psql -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -tAqc "$1" 2>/dev/null; }
column() { sql "select $1 from tokmgr_token_sets where key = 'fleet'"; }

# The store's hooks for fleet_scenarios.sh.
lease_held() { [[ $(column "holder is not null and lease_until > now()") == t ]] && echo yes || echo no; }
stored_document() { column document; }
generation() { column generation; }
stop_store() { bash "$FIXTURE" stop "$work/postgres" keep >/dev/null; }
restart_store() { bash "$FIXTURE" start "$work/postgres" "$pg_port" >/dev/null; }
# Each write raises the generation by one.
count_writes() {
    local before
    before=$(generation)
    sleep "$1"
    echo $(( $(generation) - before ))
}

case "$SECTION" in
cli)
    start_server --jwt-ttl 600 --refresh-ttl 6000
    first=$("$TOKMGR" token --url "$url" --user svc --store "$store" 2>"$work/err") \
        && pass "token --store postgresql:// printed a JWT" || fail "token failed: $(cat "$work/err")"
    second=$("$TOKMGR" token --url "$url" --user svc --store "$store" 2>"$work/err")
    [[ -n $first && $first == "$second" ]] && pass "a second run printed the stored JWT" \
        || fail "a second run printed another JWT: $(cat "$work/err")"
    [[ $(column "document like '%\"generation\":1,%'") == t ]] && pass "the row holds the set" \
        || fail "the row does not hold the set"
    "$TOKMGR" token --url "$url" --user svc --store "postgresql://postgres:hunter22@localhost:$pg_port/postgres?key=k" \
        >"$work/out" 2>"$work/err"
    status=$?
    [[ $status -eq 2 ]] && pass "a password in the URL: usage error" || fail "a password in the URL exited $status"
    grep -q hunter22 "$work/err" && fail "the password was shown: $(cat "$work/err")" || pass "the password was not shown"
    "$TOKMGR" token --url "$url" --user svc --store "postgresql://postgres@127.0.0.1:1/postgres?key=fleet" \
        >"$work/out" 2>"$work/err"
    status=$?
    [[ $status -eq 1 && ! -s $work/out ]] && grep -q "nothing listens" "$work/err" \
        && pass "a database that is down: exit 1, no JWT, the reason" \
        || fail "a database that is down: exit $status, out $(cat "$work/out"), err $(cat "$work/err")"
    TOKMGR_POSTGRES_PASSWORD=wrong-hunter22 "$TOKMGR" token --url "$url" --user svc --store "$store" \
        >"$work/out" 2>"$work/err"
    status=$?
    [[ $status -eq 1 && ! -s $work/out ]] && grep -q "refused the password" "$work/err" \
        && ! grep -q hunter22 "$work/err" && pass "a wrong password: exit 1, no JWT, the reason without the password" \
        || fail "a wrong password: exit $status, err $(cat "$work/err")"
    stop_server
    check logins "-eq 1"
    ;;
postgres-down) run_fleet_scenario down ;;
*) run_fleet_scenario "$SECTION" || exit 2 ;;
esac
echo "$SECTION: $failures failed"
[[ $failures -eq 0 ]]
