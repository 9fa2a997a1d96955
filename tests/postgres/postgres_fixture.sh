#!/bin/bash
# A private PostgreSQL 15 for the tests, on a free loopback port with TLS;
# run by ctest fixtures, and by the fleet tests for their own copy.
#
#   postgres_fixture.sh start DIR [PORT]  initdb (once) and start it; write DIR/port, DIR/ca.crt
#   postgres_fixture.sh stop  DIR [keep]  stop it (fast shutdown, then the pid); remove its
#                                         data unless `keep` (a restart follows)
#
# The server refuses to run as root, so under root its files live in a
# directory of their own under /tmp owned by the `postgres` system user
# (DIR/pgdir names it) and it runs as that user; under another user, as that
# user. It never touches a system PostgreSQL. The
# fixture makes a CA and a server certificate for localhost and 127.0.0.1
# (DIR/ca.crt), and a second CA that did not sign it (DIR/other-ca.crt).
# Roles (passwords over TCP, scram-sha-256):
#   postgres         / fixture-password   superuser
#   tokmgr_limited   / limited-password   may not create tables (PostgreSQL 15's public schema)
#   tokmgr_readonly  / readonly-password  every transaction read-only, as on a standby
# A watchdog stops the server when the process that started it exits, or
# after 15 minutes, so it never outlives the run.
set -eu

cmd=${1:?usage: postgres_fixture.sh start|stop DIR [PORT|keep]}
dir=${2:?usage: postgres_fixture.sh start|stop DIR [PORT|keep]}
bin=${TOKMGR_POSTGRES_BIN:-/usr/lib/postgresql/15/bin}
if [ "$(id -u)" -eq 0 ]; then
    run_as=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    owner=postgres
else
    run_as=()
    owner=$(id -un)
fi
as_postgres() { "${run_as[@]}" "$@"; }

free_port() {
    local port=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
    echo "$port"
}

make_data() {
    local pg=$1
    (
        cd "$pg"
        local curve=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
        openssl req -x509 "${curve[@]}" -keyout ca.key -out ca.crt -days 2 -subj /CN=tokmgr-test-ca 2>/dev/null
        openssl req -x509 "${curve[@]}" -keyout other-ca.key -out other-ca.crt -days 2 -subj /CN=tokmgr-other-ca 2>/dev/null
        openssl req "${curve[@]}" -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > san.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 \
            -extfile san.ext 2>/dev/null
        printf 'fixture-password\n' > pwfile
        chown "$owner": ca.crt other-ca.crt server.key server.crt pwfile
        chmod 600 server.key
    )
    as_postgres "$bin/initdb" -D "$pg/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        --pwfile="$pg/pwfile" -N -E UTF8 --locale=C >"$pg/initdb.log" 2>&1 || { cat "$pg/initdb.log" >&2; exit 1; }
}

start_postgres() {
    mkdir -p "$dir"
    chmod 700 "$dir"
    local pg
    pg=$(cat "$dir/pgdir" 2>/dev/null || true)
    local fresh=0
    if [ -z "$pg" ] || [ ! -d "$pg/data" ]; then
        pg=$(mktemp -d /tmp/tokmgr-postgres.XXXXXX)
        chown "$owner": "$pg"
        echo "$pg" > "$dir/pgdir"
        make_data "$pg"
        fresh=1
    fi
    cp "$pg/ca.crt" "$pg/other-ca.crt" "$dir/"
    local port=${1:-}
    local tries=0
    while :; do
        [ -n "$port" ] || port=$(free_port $((40000 + ($$ % 3000) * 7)))
        # setpriv (or the server) itself in the background, not the function:
        # $! is then the server's own pid, which the stop and the watchdog signal.
        "${run_as[@]}" "$bin/postgres" -D "$pg/data" -p "$port" -k "$pg" -c listen_addresses=127.0.0.1 \
            -c fsync=off -c full_page_writes=off -c ssl=on -c ssl_cert_file="$pg/server.crt" \
            -c ssl_key_file="$pg/server.key" -c max_connections=200 -c log_min_messages=warning \
            </dev/null >"$pg/postgres.log" 2>&1 &
        local pid=$!
        echo "$pid" > "$dir/postgres.pid"
        local i=0
        while ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" 2>/dev/null; do
            i=$((i + 1))
            if ! kill -0 "$pid" 2>/dev/null || [ "$i" -gt 200 ]; then break; fi
            sleep 0.05
        done
        if kill -0 "$pid" 2>/dev/null && "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then break; fi
        kill "$pid" 2>/dev/null || true
        tries=$((tries + 1))
        if [ "$tries" -gt 5 ] || [ -n "${1:-}" ]; then
            echo "postgres did not start on port $port; its log:" >&2
            cat "$pg/postgres.log" >&2 || true
            exit 1
        fi
        port=$((port + 1))
    done
    echo "$port" > "$dir/port"
    if [ "$fresh" -eq 1 ]; then
        as_postgres "$bin/psql" -q -h "$pg" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
create role tokmgr_limited login password 'limited-password';
create role tokmgr_readonly login superuser password 'readonly-password';
alter role tokmgr_readonly set default_transaction_read_only = on;
SQL
    fi
    local caller=$PPID
    (
        deadline=900
        while [ "$deadline" -gt 0 ] && kill -0 "$caller" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do
            sleep 1
            deadline=$((deadline - 1))
        done
        if [ "$(cat "$dir/postgres.pid" 2>/dev/null)" = "$pid" ]; then kill -INT "$pid" 2>/dev/null || true; fi
    ) </dev/null >/dev/null 2>&1 &
    echo "postgres $pid on 127.0.0.1:$port, data in $pg"
}

stop_postgres() {
    local pidfile=$dir/postgres.pid
    if [ -f "$pidfile" ]; then
        local pid
        pid=$(cat "$pidfile" 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -INT "$pid" 2>/dev/null || true  # fast shutdown: ends the sessions at once
            local i=0
            while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 200 ]; do
                sleep 0.05
                i=$((i + 1))
            done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    fi
    if [ "${1:-}" != keep ]; then
        local pg
        pg=$(cat "$dir/pgdir" 2>/dev/null || true)
        case $pg in /tmp/tokmgr-postgres.*) rm -rf "$pg" ;; esac
        rm -f "$dir/pgdir"
    fi
}

case $cmd in
start) start_postgres "${3:-}" ;;
stop) stop_postgres "${3:-}" ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
