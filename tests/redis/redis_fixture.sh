#!/bin/bash
# A private redis-server for the tests, on a free loopback port and a Unix
# socket; run by ctest fixtures, and by the fleet tests for their own copy.
#
#   redis_fixture.sh start DIR [PORT]  start it (persistence off); write DIR/port
#   redis_fixture.sh stop  DIR         stop it (SHUTDOWN NOSAVE, then the pid)
#
# It never uses a system Redis service: its own process, --daemonize no,
# config on the command line, files only in DIR (pid, log, socket). PORT
# restarts it on the port it had. A watchdog stops it when the process that
# started it (ctest, or the test script) exits, or after 15 minutes, so it
# never outlives the run even if the cleanup fixture does not get to run.
set -eu

cmd=${1:?usage: redis_fixture.sh start|stop DIR [PORT]}
dir=${2:?usage: redis_fixture.sh start|stop DIR [PORT]}
server=${TOKMGR_REDIS_SERVER:-redis-server}

free_port() {
    local port=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
    echo "$port"
}

start_redis() {
    stop_redis
    mkdir -p "$dir"
    chmod 700 "$dir"
    # Spread the starting point by process id so parallel runs rarely collide;
    # redis-server then refuses a taken port and we try the next.
    local port=${1:-}
    local tries=0
    while :; do
        [ -n "$port" ] || port=$(free_port $((30000 + ($$ % 3000) * 7)))
        "$server" --port "$port" --bind 127.0.0.1 --unixsocket "$dir/redis.sock" --unixsocketperm 700 \
            --save '' --appendonly no --daemonize no --dir "$dir" --logfile "$dir/redis.log" \
            </dev/null >/dev/null 2>&1 &
        local pid=$!
        echo "$pid" > "$dir/redis.pid"
        local i=0
        while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
            i=$((i + 1))
            if ! kill -0 "$pid" 2>/dev/null || [ "$i" -gt 100 ]; then break; fi
            sleep 0.05
        done
        if kill -0 "$pid" 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
        kill "$pid" 2>/dev/null || true
        tries=$((tries + 1))
        if [ "$tries" -gt 5 ] || [ -n "${1:-}" ]; then
            echo "redis-server did not start on port $port; its log:" >&2
            cat "$dir/redis.log" >&2 || true
            exit 1
        fi
        port=$((port + 1))
    done
    echo "$port" > "$dir/port"
    # The watchdog: detached from the caller's pipes so it does not wait for it.
    local owner=$PPID
    (
        deadline=900
        while [ "$deadline" -gt 0 ] && kill -0 "$owner" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do
            sleep 1
            deadline=$((deadline - 1))
        done
        if [ "$(cat "$dir/redis.pid" 2>/dev/null)" = "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    ) </dev/null >/dev/null 2>&1 &
    echo "redis-server $pid on 127.0.0.1:$port and $dir/redis.sock"
}

stop_redis() {
    local pidfile=$dir/redis.pid
    [ -f "$pidfile" ] || return 0
    local pid
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        local i=0
        while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do
            sleep 0.05
            i=$((i + 1))
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

case $cmd in
start) start_redis "${3:-}" ;;
stop) stop_redis ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
