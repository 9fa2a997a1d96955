#!/bin/bash
# A private redis-server for the tests, on a free loopback port and a Unix
# socket; run by ctest fixtures, and by the fleet tests for their own copy.
#
#   redis_fixture.sh start DIR [PORT]  start it (persistence off); write DIR/port
#   redis_fixture.sh stop  DIR         stop it (SHUTDOWN NOSAVE, then the pid)
#   redis_fixture.sh start-tls DIR optional|yes [PORT]
#                                      the same listening on TLS only (DIR/port is
#                                      its tls-port), with a CA, a server
#                                      certificate for localhost and 127.0.0.1 and
#                                      a client certificate it makes in DIR/pki
#                                      (kept when PORT restarts it); the argument
#                                      is tls-auth-clients
# With DIR/users.acl present (ACL file syntax), the server loads its users
# from it, so that they outlive a restart as a managed Redis's do.
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
port_flag=--port
listen_args=()

# A test CA, and the server's and a client's certificates it signs, valid
# two days (made again at each start).
make_pki() {
    local pki=$dir/pki openssl=${TOKMGR_OPENSSL:-openssl}
    rm -rf "$pki"
    mkdir -p "$pki"
    "$openssl" req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -keyout "$pki/ca.key" -out "$pki/ca.pem" \
        -subj "/CN=tokmgr redis test CA" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    local name usage
    for name in server client; do
        usage=serverAuth
        [ "$name" = client ] && usage=clientAuth
        "$openssl" req -newkey rsa:2048 -nodes -sha256 -keyout "$pki/$name.key" -out "$pki/$name.csr" \
            -subj "/CN=localhost" 2>/dev/null
        printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=%s\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' \
            "$usage" > "$pki/$name.ext"
        "$openssl" x509 -req -in "$pki/$name.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial -days 2 \
            -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.pem" 2>/dev/null
        rm -f "$pki/$name.csr" "$pki/$name.ext"
    done
}

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
        local acl_args=()
        [ -f "$dir/users.acl" ] && acl_args=(--aclfile "$dir/users.acl")
        "$server" "${listen_args[@]}" "${acl_args[@]}" "$port_flag" "$port" --bind 127.0.0.1 --unixsocket "$dir/redis.sock" --unixsocketperm 700 \
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
start-tls)
    mkdir -p "$dir"
    # A restart keeps the CA its clients already trust.
    [ -n "${4:-}" ] && [ -f "$dir/pki/ca.pem" ] || make_pki
    port_flag=--tls-port
    listen_args=(--port 0 --tls-cert-file "$dir/pki/server.pem" --tls-key-file "$dir/pki/server.key"
        --tls-ca-cert-file "$dir/pki/ca.pem" --tls-auth-clients "${3:?start-tls needs optional or yes}")
    start_redis "${4:-}" ;;
stop) stop_redis ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
