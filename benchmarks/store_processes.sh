#!/usr/bin/env bash
# store_processes.sh — refresh requests per JWT expiry when 1, 4 and 16
# processes share one token file (`tokmgr load --store`), one Redis key
# (`--store redis://...`, a redis-server of its own started here), or one
# PostgreSQL row (`--store postgresql://...`, a server of its own), against
# `tokmgr serve` with 4-second JWTs. Prints, per group size: the server's
# logins and refreshes over the run, and refreshes relative to the
# one-process run (1.0 means one refresh per expiry for the whole group; N
# processes each refreshing on their own would show about N).
#   benchmarks/store_processes.sh TOKMGR [SECONDS] [file|redis|postgres]
set -u
TOKMGR=$1
SECONDS_PER_RUN=${2:-20}
MODE=${3:-file}
work=$(mktemp -d)
fixture=$(dirname "$0")/../tests/$MODE/${MODE}_fixture.sh
trap 'kill $(jobs -p) 2>/dev/null; [[ $MODE != file ]] && bash "$fixture" stop "$work/$MODE"; wait 2>/dev/null; rm -rf "$work"' EXIT
case $MODE in
file) store_for() { echo "$work/store-$1.json"; } ;;
redis)
    bash "$fixture" start "$work/redis" >/dev/null || { echo "redis-server did not start" >&2; exit 1; }
    store_for() { echo "redis://127.0.0.1:$(cat "$work/redis/port")/tokmgr-bench:$1"; }
    ;;
postgres)
    bash "$fixture" start "$work/postgres" >/dev/null || { echo "postgres did not start" >&2; exit 1; }
    export TOKMGR_POSTGRES_PASSWORD=fixture-password  # the fixture's superuser
    store_for() { echo "postgresql://postgres@127.0.0.1:$(cat "$work/postgres/port")/postgres?key=bench-$1"; }
    ;;
*) echo "unknown mode '$MODE': file, redis or postgres" >&2; exit 2 ;;
esac
echo "store: $MODE"

unset SOLAR_JWT_EXPIRATION_IN_MINUTES SOLAR_REFRESH_TOKEN_EXPIRATION_IN_MINUTES SOLAR_AUTH_RPM_LIMIT
export TONIC_TEXTUAL_PASSWORD=bench-password

field() { sed -n "s/.*\"$1\": *\([0-9]*\).*/\1/p" <<<"$2"; }
baseline=
printf '%-10s %8s %10s %8s %18s\n' processes logins refreshes reused "refreshes vs 1"
for n in 1 4 16; do
    "$TOKMGR" serve --port 0 --user svc:bench-password --jwt-ttl 4 --refresh-ttl 600 >"$work/server.out" 2>&1 &
    server=$!
    url=
    for _ in $(seq 100); do url=$(sed -n 's/^listening on //p' "$work/server.out"); [[ -n $url ]] && break; sleep 0.1; done
    pids=()
    for i in $(seq "$n"); do
        "$TOKMGR" load --url "$url" --user svc --store "$(store_for "$n")" --threads 1 \
            --duration "$SECONDS_PER_RUN" --path /api/items >"$work/load-$n-$i.out" 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}"
    grep -h "tokmgr load" "$work"/load-"$n"-*.out | sort | uniq -c | head -3 >&2
    kill -TERM "$server"
    wait "$server"
    stats=$(sed -n 2p "$work/server.out")
    refreshes=$(field refreshes "$stats")
    [[ -z $baseline ]] && baseline=$refreshes
    printf '%-10s %8s %10s %8s %18s\n' "$n" "$(field logins "$stats")" "$refreshes" \
        "$(field refresh_tokens_reused "$stats")" "$(awk -v r="$refreshes" -v b="$baseline" 'BEGIN { printf "%.2f", r / b }')"
done
