#!/bin/bash
# Real HTTP proxies (tinyproxy) on free loopback ports for the transport and
# CLI tests; run by ctest fixtures.
#
#   proxy_fixture.sh start DIR   start three tinyproxy instances; write DIR/proxy/ports:
#                                  open=PORT      any CONNECT, no authentication
#                                  auth=PORT      Basic authentication (user tokmgr, password in DIR/proxy/password)
#                                  refusing=PORT  CONNECT allowed to port 1 only, so it refuses the tests' CONNECTs
#   proxy_fixture.sh stop DIR    stop them
#
# Each instance runs from DIR/proxy only (config, pid file, log), needs no
# root and touches nothing outside the build tree. A watchdog stops it when
# the ctest that started it exits, or after 15 minutes.
set -eu

cmd=${1:?usage: proxy_fixture.sh start|stop DIR}
dir=${2:?usage: proxy_fixture.sh start|stop DIR}
run=$dir/proxy
names="open auth refusing"

. "$(dirname "${BASH_SOURCE[0]}")/loopback_ports.sh"

stop_proxies() {
    # All at once, then wait: each takes a moment to bring its threads down.
    pids=
    for name in $names; do
        pidfile=$run/$name.pid
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile" 2>/dev/null || true)
        if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then pids="$pids $pid"; fi
        rm -f "$pidfile"
    done
    for pid in $pids; do
        i=0
        while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do
            sleep 0.1
            i=$((i + 1))
        done
    done
}

# launch_proxy NAME PORT: writes NAME's configuration for PORT and starts it.
launch_proxy() {
    local name=$1 port=$2
    {
        echo "Port $port"
        echo "Listen 127.0.0.1"
        echo "Timeout 30"
        echo "MaxClients 20"
        echo "LogLevel Info"
        echo "LogFile \"$run/$name.log\""
        # Its own pid file, apart from ours: it refuses to start when the file exists.
        echo "PidFile \"$run/$name.tinyproxy.pid\""
        echo "Allow 127.0.0.1"
        echo "DisableViaHeader Yes"
        case $name in
        auth) echo "BasicAuth tokmgr $password" ;;
        refusing) echo "ConnectPort 1" ;;
        esac
    } > "$run/$name.conf"
    # A fresh log every run: the tests read it to see what went through.
    rm -f "$run/$name.log" "$run/$name.tinyproxy.pid"
    "${TOKMGR_TINYPROXY:-tinyproxy}" -d -c "$run/$name.conf" </dev/null >"$run/$name.out" 2>&1 &
    echo $! > "$run/$name.pid"
}

start_proxies() {
    stop_proxies
    mkdir -p "$run"
    : > "$run/ports"
    # A password made fresh each run, so that a test that finds it in an
    # error text or log has found a real leak, not a constant.
    password="pw-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
    printf '%s\n' "$password" > "$run/password"
    # Below the kernel's ephemeral range (32768 and up by default): a port
    # there can be the local end of some outgoing connection, which a
    # connect probe sees as free and tinyproxy then cannot bind ("Could not
    # create listening sockets"). Spread by process id so parallel build
    # trees rarely collide; a port taken anyway is replaced below.
    port=$((10000 + ($$ % 1000) * 10))
    for name in $names; do
        port=$(free_port "$port")
        echo "$name=$port" >> "$run/ports"
        launch_proxy "$name" "$port"
        port=$((port + 1))
    done
    for name in $names; do
        port=$(sed -n "s/^$name=//p" "$run/ports")
        i=0
        attempts=1
        while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
            i=$((i + 1))
            if ! kill -0 "$(cat "$run/$name.pid")" 2>/dev/null && [ "$attempts" -lt 5 ]; then
                # It exited: the port was taken after all. The next free one.
                echo "tinyproxy ($name) could not listen on port $port; trying another" >&2
                new_port=$(free_port $((port + 1)))
                sed -i "s/^$name=$port\$/$name=$new_port/" "$run/ports"
                port=$new_port
                launch_proxy "$name" "$port"
                attempts=$((attempts + 1))
                i=0
            elif [ "$i" -gt 50 ]; then
                echo "tinyproxy ($name) does not answer on port $port; its output:" >&2
                cat "$run/$name.out" "$run/$name.log" >&2 2>/dev/null || true
                stop_proxies
                exit 1
            fi
            sleep 0.1
        done
    done

    # The watchdog: detached from ctest's pipes so ctest does not wait for it.
    owner=$PPID
    ours() { for name in $names; do echo "$run/$name.pid"; done; }
    started=$(cat $(ours) | tr '\n' ' ')
    (
        deadline=900
        while [ "$deadline" -gt 0 ] && kill -0 "$owner" 2>/dev/null; do
            sleep 2
            deadline=$((deadline - 2))
        done
        # Only the instances this run started: a later run may have its own.
        for pid in $started; do
            grep -qx "$pid" $(ours) 2>/dev/null && kill "$pid" 2>/dev/null
        done
        true
    ) </dev/null >/dev/null 2>&1 &
    echo "tinyproxy on loopback: $(tr '\n' ' ' < "$run/ports")"
}

case $cmd in
start) start_proxies ;;
stop) stop_proxies ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
