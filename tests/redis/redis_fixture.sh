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
#   redis_fixture.sh start-cluster DIR  three masters of one Redis Cluster (DIR/node1..3,
#                                      each with its port file; DIR/ports lists all
#                                      three), every slot assigned and cluster_state:ok
#   redis_fixture.sh migrate-slot DIR KEY [start|finish]
#                                      moves the slot of KEY from its owner to another
#                                      node: start (IMPORTING/MIGRATING on both sides),
#                                      finish (MIGRATE what is left, then the slot's new
#                                      owner told to every node), or both; prints the
#                                      source's and the target's ports
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
redis_cli=${TOKMGR_REDIS_CLI:-redis-cli}
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
    local port=${1:-} after=${2:-}
    local tries=0
    while :; do
        [ -n "$port" ] || port=$(free_port $((${after:-$((30000 + ($$ % 3000) * 7 - 1))} + 1)))
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

cli() {
    local port=$1
    shift
    "$redis_cli" -h 127.0.0.1 -p "$port" "$@"
}

start_cluster() {
    local base=$dir i port last= ports=()
    stop_cluster
    mkdir -p "$base"
    chmod 700 "$base"
    listen_args=(--cluster-enabled yes --cluster-node-timeout 5000)
    for i in 1 2 3; do
        dir=$base/node$i
        rm -f "$dir/nodes.conf"  # a node that remembers an earlier cluster would not join a new one
        # After the previous node's port, so that the three never race for one.
        start_redis "" "$last"
        last=$(cat "$dir/port")
        ports+=("$last")
    done
    dir=$base
    printf '%s\n' "${ports[@]}" > "$base/ports"
    local nodes=()
    for port in "${ports[@]}"; do nodes+=("127.0.0.1:$port"); done
    if ! "$redis_cli" --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes > "$base/create.log" 2>&1; then
        echo "redis-cli --cluster create failed; its output:" >&2
        cat "$base/create.log" >&2
        exit 1
    fi
    # create returns once the nodes agree on the configuration; a node
    # serves only once it has seen every slot covered (cluster_state:ok).
    for port in "${ports[@]}"; do
        i=0
        until cli "$port" CLUSTER INFO | grep -q '^cluster_state:ok'; do
            i=$((i + 1))
            if [ "$i" -gt 200 ]; then
                echo "the cluster node on port $port is not cluster_state:ok after 10 s" >&2
                exit 1
            fi
            sleep 0.05
        done
    done
    echo "Redis Cluster of three masters on 127.0.0.1 ports ${ports[*]}"
}

stop_cluster() {
    local base=$dir node
    # A cluster node takes some 2 s to exit: all three at once.
    for node in "$base"/node*; do
        [ -f "$node/redis.pid" ] && kill "$(cat "$node/redis.pid")" 2>/dev/null || true
    done
    for node in "$base"/node*; do
        [ -d "$node" ] || continue
        dir=$node
        stop_redis
    done
    dir=$base
}

# Whether the node on port $1 serves slot $2 (its own line of CLUSTER NODES:
# ranges "a-b" and single slots; "[slot->-id]" marks a migration, skipped).
owns_slot() {
    cli "$1" CLUSTER NODES | awk -v slot="$2" '
        $3 ~ /myself/ { for (i = 9; i <= NF; i++) { if ($i ~ /^\[/) continue
            n = split($i, r, "-"); if (slot + 0 >= r[1] + 0 && slot + 0 <= r[n] + 0) found = 1 } }
        END { exit !found }'
}

migrate_slot() {
    local key=${1:?migrate-slot needs a key} phase=${2:-all}
    local ports port source= target= slot state=$dir/migration
    mapfile -t ports < "$dir/ports"
    slot=$(cli "${ports[0]}" CLUSTER KEYSLOT "$key")
    if [ "$phase" = finish ]; then
        read -r slot source target < "$state"
    else
        for port in "${ports[@]}"; do
            if owns_slot "$port" "$slot"; then source=$port; elif [ -z "$target" ]; then target=$port; fi
        done
        if [ -z "$source" ] || [ -z "$target" ]; then
            echo "no node of the cluster owns slot $slot, or no other node to move it to" >&2
            exit 1
        fi
        local source_id target_id
        source_id=$(cli "$source" CLUSTER MYID)
        target_id=$(cli "$target" CLUSTER MYID)
        # The target first: once the source is MIGRATING it sends ASK there.
        cli "$target" CLUSTER SETSLOT "$slot" IMPORTING "$source_id" > /dev/null
        cli "$source" CLUSTER SETSLOT "$slot" MIGRATING "$target_id" > /dev/null
        echo "$slot $source $target" > "$state"
    fi
    if [ "$phase" != start ]; then
        local keys answer rounds=0
        # redis-cli prints an empty list as an empty line. A MIGRATE that
        # fails (its error is printed, with exit status 0) would leave the
        # keys where they are: said, and bounded, never looped on.
        while mapfile -t keys < <(cli "$source" CLUSTER GETKEYSINSLOT "$slot" 100 | sed '/^$/d') && [ "${#keys[@]}" -gt 0 ]; do
            answer=$(cli "$source" MIGRATE 127.0.0.1 "$target" "" 0 5000 KEYS "${keys[@]}")
            rounds=$((rounds + 1))
            if [ "$answer" != OK ] && [ "$answer" != NOKEY ]; then
                echo "MIGRATE of slot $slot from $source to $target answered: $answer" >&2
                exit 1
            fi
            if [ "$rounds" -gt 100 ]; then
                echo "slot $slot still holds keys after 100 MIGRATEs" >&2
                exit 1
            fi
        done
        local target_id
        target_id=$(cli "$target" CLUSTER MYID)
        # The target, then the source, then the others, as the cluster
        # specification orders it: the source must not be the last to know.
        for port in "$target" "$source" "${ports[@]}"; do
            cli "$port" CLUSTER SETSLOT "$slot" NODE "$target_id" > /dev/null
        done
        rm -f "$state"
    fi
    echo "$source $target"
}

case $cmd in
start) start_redis "${3:-}" ;;
start-cluster) start_cluster ;;
migrate-slot) migrate_slot "${3:-}" "${4:-}" ;;
start-tls)
    mkdir -p "$dir"
    # A restart keeps the CA its clients already trust.
    [ -n "${4:-}" ] && [ -f "$dir/pki/ca.pem" ] || make_pki
    port_flag=--tls-port
    listen_args=(--port 0 --tls-cert-file "$dir/pki/server.pem" --tls-key-file "$dir/pki/server.key"
        --tls-ca-cert-file "$dir/pki/ca.pem" --tls-auth-clients "${3:?start-tls needs optional or yes}")
    start_redis "${4:-}" ;;
stop)
    stop_redis
    stop_cluster ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
