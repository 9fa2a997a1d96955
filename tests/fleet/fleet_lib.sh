# tests/fleet/fleet_lib.sh — sourced by the scripts that run fleets of
# `tokmgr` processes against the reference server (tests/tools/store_test.sh,
# tests/redis/fleet_test.sh, tests/postgres/fleet_test.sh): verdicts, the
# server, its statistics, and the load processes. The sourcing script sets
# TOKMGR, $work (a scratch directory), the pids array, failures=0, and
# exports TONIC_TEXTUAL_PASSWORD (the server's user svc has that password).

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
pass() { echo "ok:   $*"; }

# start_server ARGS... — sets $url and $server_pid.
start_server() {
    "$TOKMGR" serve --port 0 --user "svc:$TONIC_TEXTUAL_PASSWORD" "$@" >"$work/server.out" 2>"$work/server.err" &
    server_pid=$!
    pids+=("$server_pid")
    for _ in $(seq 100); do
        url=$(sed -n 's/^listening on //p' "$work/server.out")
        [[ -n $url ]] && return 0
        sleep 0.1
    done
    echo "FAIL: the reference server did not start: $(cat "$work/server.err")"
    exit 1
}

# stop_server — stops it and sets $stats to its statistics line.
stop_server() {
    kill -TERM "$server_pid"
    wait "$server_pid" 2>/dev/null
    stats=$(sed -n 2p "$work/server.out")
    echo "server: $stats"
}
field() { sed -n "s/.*\"$1\": *\([0-9]*\).*/\1/p" <<<"$stats"; }
check() { if [ "$(field "$1")" $2 ]; then pass "$1 = $(field "$1") ($2)"; else fail "$1 is $(field "$1"), expected $2"; fi; }

# start_loads N DURATION [ARGS...] — N load processes on $store (with the
# options in the store_options array, if the sourcing script sets one; the
# i-th process on the i-th of the stores array instead, if it sets that, in
# turn); pids in $loads.
start_loads() {
    local n=$1 duration=$2 this_store
    shift 2
    loads=()
    for i in $(seq "$n"); do
        this_store=$store
        [[ -n ${stores[*]+set} ]] && this_store=${stores[$(((i - 1) % ${#stores[@]}))]}
        "$TOKMGR" load --url "$url" --user svc --store "$this_store" ${store_options[@]+"${store_options[@]}"} \
            --threads 4 --duration "$duration" --path /api/items "$@" >"$work/load$i.out" 2>"$work/load$i.err" &
        loads+=($!)
        pids+=($!)
    done
}
# wait_loads — each must exit 0 with no error: no caller ever went without a JWT.
wait_loads() {
    for i in $(seq ${#loads[@]}); do
        if wait "${loads[$((i - 1))]}"; then pass "process $i: $(cat "$work/load$i.out")"
        else fail "process $i exited $?: $(cat "$work/load$i.out") $(cat "$work/load$i.err")"; fi
    done
}
