#!/bin/bash
# Test PKI and loopback nginx for the transport tests; run by ctest fixtures.
#
#   tls_fixture.sh pki   DIR   make a test CA, a second ("unknown") CA and certificates in DIR/pki
#   tls_fixture.sh start DIR   start nginx on free loopback ports; write DIR/nginx/ports
#                              (verified, untrusted, other_host, tls11, plain, sni)
#   tls_fixture.sh stop  DIR   stop that nginx
#
# nginx runs from DIR/nginx only (config, pid, logs, temp files), so it needs
# no root and touches nothing outside the build tree. A watchdog stops it when
# the ctest that started it exits, or after 15 minutes, so it never outlives
# the run even if the cleanup fixture does not get to run.
set -eu

cmd=${1:?usage: tls_fixture.sh pki|start|stop DIR}
dir=${2:?usage: tls_fixture.sh pki|start|stop DIR}
pki=$dir/pki
run=$dir/nginx

make_pki() {
    rm -rf "$pki"
    mkdir -p "$pki"
    cd "$pki"
    # Two CAs: the one the tests trust, and one nobody trusts.
    for ca in ca unknown-ca; do
        "${TOKMGR_OPENSSL:-openssl}" req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -keyout "$ca.key" -out "$ca.pem" \
            -subj "/CN=tokmgr test $ca" -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    done
    # name issuer subject-alt-names
    issue() {
        "${TOKMGR_OPENSSL:-openssl}" req -newkey rsa:2048 -nodes -sha256 -keyout "$1.key" -out "$1.csr" -subj "/CN=$3" 2>/dev/null
        printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$4" > "$1.ext"
        "${TOKMGR_OPENSSL:-openssl}" x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days 2 -sha256 \
            -extfile "$1.ext" -out "$1.pem" 2>/dev/null
        rm -f "$1.csr" "$1.ext"
    }
    issue localhost ca localhost "DNS:localhost,IP:127.0.0.1,IP:::1"
    issue other-host ca other.example "DNS:other.example"
    issue untrusted unknown-ca localhost "DNS:localhost,IP:127.0.0.1,IP:::1"
}

. "$(dirname "${BASH_SOURCE[0]}")/loopback_ports.sh"

start_nginx() {
    # Fresh certificates every run: they are valid for two days only.
    (make_pki)
    stop_nginx
    mkdir -p "$run/tmp"
    : > "$run/ports"
    # Spread the starting point by process id so parallel build trees rarely
    # collide, and stay below the kernel's ephemeral range (32768 and up by
    # default), where a port can be an outgoing connection's local end that
    # a connect probe takes for free (proxy_fixture.sh says more).
    base=$((20000 + ($$ % 1000) * 10))
    verified=$(free_port "$base")
    echo "verified=$verified" >> "$run/ports"
    untrusted=$(free_port $((verified + 1)))
    echo "untrusted=$untrusted" >> "$run/ports"
    other_host=$(free_port $((untrusted + 1)))
    echo "other_host=$other_host" >> "$run/ports"
    tls11=$(free_port $((other_host + 1)))
    echo "tls11=$tls11" >> "$run/ports"
    plain=$(free_port $((tls11 + 1)))
    echo "plain=$plain" >> "$run/ports"
    sni=$(free_port $((plain + 1)))
    echo "sni=$sni" >> "$run/ports"

    server() {  # port certificate-name protocols ciphers [server-name [listen-flags]]
        cat <<EOF
    server {
        listen 127.0.0.1:$1 ssl ${6:-};
        listen [::1]:$1 ssl ${6:-};
        server_name ${5:-localhost};
        ssl_certificate $pki/$2.pem;
        ssl_certificate_key $pki/$2.key;
        ssl_protocols $3;
        ssl_ciphers $4;
        location /textual/api/ {
            default_type application/json;
            return 200 '{"server":"nginx","path":"\$uri"}';
        }
    }
EOF
    }
    {
        cat <<EOF
worker_processes 1;
pid $run/nginx.pid;
error_log $run/error.log info;
events { worker_connections 64; }
http {
    access_log $run/access.log;
    client_body_temp_path $run/tmp/body;
    proxy_temp_path $run/tmp/proxy;
    fastcgi_temp_path $run/tmp/fastcgi;
    uwsgi_temp_path $run/tmp/uwsgi;
    scgi_temp_path $run/tmp/scgi;
    keepalive_timeout 30s;
EOF
        server "$verified" localhost "TLSv1.2 TLSv1.3" "HIGH:!aNULL"
        server "$untrusted" untrusted "TLSv1.2 TLSv1.3" "HIGH:!aNULL"
        server "$other_host" other-host "TLSv1.2 TLSv1.3" "HIGH:!aNULL"
        # Two certificates on one port: only a client that sends SNI for
        # "localhost" gets the right one; without SNI it gets other.example's.
        server "$sni" other-host "TLSv1.2 TLSv1.3" "HIGH:!aNULL" other.example default_server
        server "$sni" localhost "TLSv1.2 TLSv1.3" "HIGH:!aNULL" localhost
        # OpenSSL 3 still speaks TLS 1.1, but only at security level 0.
        server "$tls11" localhost "TLSv1 TLSv1.1" "DEFAULT:@SECLEVEL=0"
        cat <<EOF
    server {
        listen 127.0.0.1:$plain;
        location /textual/api/ {
            default_type application/json;
            return 200 '{"server":"nginx","path":"\$uri"}';
        }
    }
}
EOF
    } > "$run/nginx.conf"

    "${TOKMGR_NGINX:-nginx}" -p "$run" -c "$run/nginx.conf" -e "$run/error.log" </dev/null >"$run/stdout.log" 2>&1 || {
        echo "nginx did not start; its log:" >&2
        cat "$run/error.log" "$run/stdout.log" >&2 || true
        exit 1
    }
    # Wait until it answers.
    i=0
    while ! (exec 3<>"/dev/tcp/127.0.0.1/$verified") 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -gt 50 ]; then
            echo "nginx started but does not answer on port $verified" >&2
            cat "$run/error.log" >&2 || true
            exit 1
        fi
        sleep 0.1
    done

    # The watchdog: detached from ctest's pipes so ctest does not wait for it.
    owner=$PPID
    pidfile=$run/nginx.pid
    master=$(cat "$pidfile")
    (
        deadline=900
        while [ "$deadline" -gt 0 ] && kill -0 "$owner" 2>/dev/null && kill -0 "$master" 2>/dev/null; do
            sleep 2
            deadline=$((deadline - 2))
        done
        if [ -f "$pidfile" ] && [ "$(cat "$pidfile" 2>/dev/null)" = "$master" ]; then
            kill "$master" 2>/dev/null || true
        fi
    ) </dev/null >/dev/null 2>&1 &
    echo "nginx $master on loopback: $(tr '\n' ' ' < "$run/ports")"
}

stop_nginx() {
    pidfile=$run/nginx.pid
    [ -f "$pidfile" ] || return 0
    master=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$master" ] && kill -0 "$master" 2>/dev/null; then
        kill "$master" 2>/dev/null || true
        i=0
        while kill -0 "$master" 2>/dev/null && [ "$i" -lt 50 ]; do
            sleep 0.1
            i=$((i + 1))
        done
    fi
    rm -f "$pidfile"
}

case $cmd in
pki) (make_pki) ;;
start) start_nginx ;;
stop) stop_nginx ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
