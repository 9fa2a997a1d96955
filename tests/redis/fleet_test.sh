#!/usr/bin/env bash
# A fleet of processes sharing one Redis key (`--store redis://...`), judged
# by the reference server's statistics:
#   fleet_test.sh TOKMGR FIXTURE [tls-]group|kill|sigstop|redis-down|cluster
# the scenarios of tests/fleet/fleet_scenarios.sh (redis-down is its `down`:
# redis-server stopped for 10 s mid-run, restarted empty since persistence is
# off). Each section runs its own redis-server (FIXTURE is redis_fixture.sh)
# and reference server on 127.0.0.1, and stops them on exit. A tls- section
# runs the same on a Redis that listens on TLS only, as the ACL user of
# docs/fleet.md limited to the fleet's names, through
# `--store rediss://fleet@localhost:PORT/tokmgr:fleet --store-ca-file CA`.
# cluster is `group` on a Redis Cluster of three masters, the processes
# pointed at different nodes, the key's slot migrated to another node 10 s
# and 20 s into the run.
set -u
TOKMGR=$1
FIXTURE=$2
SECTION=$3
work=$(mktemp -d)
pids=()
failures=0
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
    bash "$FIXTURE" stop "$work/redis" >/dev/null 2>&1
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
unset TONIC_TEXTUAL_BASE_URL TONIC_TEXTUAL_USERNAME SOLAR_JWT_EXPIRATION_IN_MINUTES \
      SOLAR_REFRESH_TOKEN_EXPIRATION_IN_MINUTES SOLAR_AUTH_RPM_LIMIT TOKMGR_REDIS_PASSWORD
export TONIC_TEXTUAL_PASSWORD=fleet-password
here=$(dirname "$0")
source "$here/../fleet/fleet_lib.sh"
source "$here/../fleet/fleet_scenarios.sh"

if [[ $SECTION == cluster ]]; then
    bash "$FIXTURE" start-cluster "$work/redis" >/dev/null || { echo "FAIL: the Redis Cluster did not start"; exit 1; }
    mapfile -t nodes <"$work/redis/ports"
    stores=()
    for port in "${nodes[@]}"; do stores+=("redis://127.0.0.1:$port/tokmgr:fleet"); done
    store=${stores[0]}
    (
        for at in 10 20; do
            sleep 10
            moved=$(bash "$FIXTURE" migrate-slot "$work/redis" '{tokmgr:fleet}') \
                && echo "ok:   the slot moved at $at s (source and target: $moved)" \
                || echo "FAIL: the slot did not move at $at s"
            date +%s%N >"$work/migrated.$at"
        done
    ) >"$work/migrations.out" 2>&1 &
    migrations=$!
    pids+=("$migrations")
    run_fleet_scenario group
    loads_ended=$(date +%s%N)
    wait "$migrations"
    cat "$work/migrations.out"
    grep -q FAIL "$work/migrations.out" && failures=$((failures + 1))
    grep -c '^ok:' "$work/migrations.out" | grep -qx 2 || fail "fewer than two migrations ran"
    # Both within the run (its loads last 30 s), or they proved nothing.
    [[ -f $work/migrated.20 && $(cat "$work/migrated.20") -lt $loads_ended ]] \
        && pass "both migrations ended while the fleet ran" || fail "the second migration ended after the run"
    echo "cluster: $failures failed"
    [[ $failures -eq 0 ]]
    exit
fi

tls=
[[ $SECTION == tls-* ]] && tls=yes && SECTION=${SECTION#tls-}
start_redis() {
    if [[ -n $tls ]]; then bash "$FIXTURE" start-tls "$work/redis" optional "$@"
    else bash "$FIXTURE" start "$work/redis" "$@"; fi
}
if [[ -n $tls ]]; then
    # The user docs/fleet.md lists, in the ACL file the server reads at each start.
    mkdir -p "$work/redis"
    echo 'user fleet on >fleet-redis-password resetkeys ~{tokmgr:fleet}* resetchannels &{tokmgr:fleet}:changed -@all +get +set +eval +subscribe +auth +select +type +del +publish +pttl +wait +asking +cluster|nodes' \
        >"$work/redis/users.acl"
    echo 'user default on nopass ~* &* +@all' >>"$work/redis/users.acl"
fi
start_redis >/dev/null || { echo "FAIL: redis-server did not start"; exit 1; }
redis_port=$(cat "$work/redis/port")
store_options=()
if [[ -n $tls ]]; then
    store="rediss://fleet@localhost:$redis_port/tokmgr:fleet"
    store_options=(--store-ca-file "$work/redis/pki/ca.pem")
    export TOKMGR_REDIS_PASSWORD=fleet-redis-password
    rcli_args=(--tls --cacert "$work/redis/pki/ca.pem" -h localhost -p "$redis_port")
else
    store="redis://127.0.0.1:$redis_port/tokmgr:fleet"
    rcli_args=(-p "$redis_port")
fi
rcli() { redis-cli "${rcli_args[@]}" "$@"; }

# The store's hooks for fleet_scenarios.sh.
lease_held() { [[ $(rcli EXISTS '{tokmgr:fleet}:lease') == 1 ]] && echo yes || echo no; }
stored_document() { rcli GET '{tokmgr:fleet}'; }
generation() { rcli GET '{tokmgr:fleet}' | sed -n 's/.*"generation":\([0-9]*\).*/\1/p'; }
stop_store() { bash "$FIXTURE" stop "$work/redis" >/dev/null; }
restart_store() { start_redis "$redis_port" >/dev/null; }
# Every write PUBLISHes on the channel: count the messages.
count_writes() {
    timeout "$1" redis-cli "${rcli_args[@]}" SUBSCRIBE '{tokmgr:fleet}:changed' >"$work/changes.out" 2>/dev/null
    # The subscribe reply itself is "subscribe", channel, 1: drop that 1.
    echo $(( $(grep -c '^[0-9][0-9]*$' "$work/changes.out") - 1 ))
}

case "$SECTION" in
redis-down) run_fleet_scenario down ;;
*) run_fleet_scenario "$SECTION" || exit 2 ;;
esac
echo "$SECTION: $failures failed"
[[ $failures -eq 0 ]]
