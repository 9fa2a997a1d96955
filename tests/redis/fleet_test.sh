#!/usr/bin/env bash
# A fleet of processes sharing one Redis key (`--store redis://...`), judged
# by the reference server's statistics:
#   fleet_test.sh TOKMGR FIXTURE group|kill|sigstop|redis-down
# the scenarios of tests/fleet/fleet_scenarios.sh (redis-down is its `down`:
# redis-server stopped for 10 s mid-run, restarted empty since persistence is
# off). Each section runs its own redis-server (FIXTURE is redis_fixture.sh)
# and reference server on 127.0.0.1, and stops them on exit.
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

bash "$FIXTURE" start "$work/redis" >/dev/null || { echo "FAIL: redis-server did not start"; exit 1; }
redis_port=$(cat "$work/redis/port")
store="redis://127.0.0.1:$redis_port/tokmgr:fleet"
rcli() { redis-cli -p "$redis_port" "$@"; }

# The store's hooks for fleet_scenarios.sh.
lease_held() { [[ $(rcli EXISTS '{tokmgr:fleet}:lease') == 1 ]] && echo yes || echo no; }
stored_document() { rcli GET '{tokmgr:fleet}'; }
generation() { rcli GET '{tokmgr:fleet}' | sed -n 's/.*"generation":\([0-9]*\).*/\1/p'; }
stop_store() { bash "$FIXTURE" stop "$work/redis" >/dev/null; }
restart_store() { bash "$FIXTURE" start "$work/redis" "$redis_port" >/dev/null; }
# Every write PUBLISHes on the channel: count the messages.
count_writes() {
    timeout "$1" redis-cli -p "$redis_port" SUBSCRIBE '{tokmgr:fleet}:changed' >"$work/changes.out" 2>/dev/null
    # The subscribe reply itself is "subscribe", channel, 1: drop that 1.
    echo $(( $(grep -c '^[0-9][0-9]*$' "$work/changes.out") - 1 ))
}

case "$SECTION" in
redis-down) run_fleet_scenario down ;;
*) run_fleet_scenario "$SECTION" || exit 2 ;;
esac
echo "$SECTION: $failures failed"
[[ $failures -eq 0 ]]
