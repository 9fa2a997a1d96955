#!/usr/bin/env bash
# The tokmgr program as scripts use it: each subcommand and each exit status.
#   cli_test.sh TOKMGR MISBEHAVING_SERVER [OPENSSL] [SECTION]
# SECTION "incomplete-answer" runs only the truncated-answer case (its own
# ctest, so a disagreement about it stays visible on its own); otherwise
# everything else runs. Everything runs on 127.0.0.1; every server started
# here is stopped on exit.
set -u
TOKMGR=$1
MISBEHAVING=$2
OPENSSL=${3:-}
SECTION=${4:-all}
work=$(mktemp -d)
pids=()
failures=0

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# Nothing from the caller's environment may steer these runs.
unset TONIC_TEXTUAL_BASE_URL TONIC_TEXTUAL_USERNAME TONIC_TEXTUAL_PASSWORD \
      SOLAR_JWT_EXPIRATION_IN_MINUTES SOLAR_REFRESH_TOKEN_EXPIRATION_IN_MINUTES TOKMGR_SERVER_SECRET \
      http_proxy https_proxy HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
pass() { echo "ok:   $*"; }

# run NAME EXPECTED_STATUS COMMAND... — runs with stdin from $work/stdin
# (empty unless a test writes it), keeps stdout/stderr in $work/out, $work/err.
run() {
    local name=$1 expected=$2
    shift 2
    timeout 60 "$@" <"$work/stdin" >"$work/out" 2>"$work/err"
    local status=$?
    if [[ $status -eq $expected ]]; then pass "$name (exit $status)"
    else fail "$name: exit $status, expected $expected; stderr: $(head -c 300 "$work/err")"; fi
}
: >"$work/stdin"

# An error is one line on stderr and holds no secret.
stderr_is_one_line_without() {
    local name=$1 secret=$2
    local lines
    lines=$(wc -l <"$work/err")
    [[ $lines -eq 1 ]] || fail "$name: stderr has $lines lines, expected 1: $(cat "$work/err")"
    if [[ -n $secret ]] && grep -qF -- "$secret" "$work/err" "$work/out"; then fail "$name: output repeats the secret"; fi
}

# start_server NAME ARGS... — starts `tokmgr serve ARGS`, waits for its
# listening line, sets $url and $server_pid.
start_server() {
    local name=$1
    shift
    "$TOKMGR" serve "$@" >"$work/$name.out" 2>"$work/$name.err" &
    server_pid=$!
    pids+=("$server_pid")
    for _ in $(seq 100); do
        url=$(sed -n 's/^listening on //p' "$work/$name.out")
        [[ -n $url ]] && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    fail "$name: no listening line; stderr: $(cat "$work/$name.err")"
    url=http://127.0.0.1:1
    return 1
}

# misbehave MODE — starts the misbehaving server, sets $bad_url.
misbehave() {
    : >"$work/bad.port"
    "$MISBEHAVING" "$1" >"$work/bad.port" &
    pids+=($!)
    for _ in $(seq 50); do [[ -s $work/bad.port ]] && break; sleep 0.1; done
    bad_url="http://127.0.0.1:$(cat "$work/bad.port")"
}

if [[ $SECTION == incomplete-answer ]]; then
    # The spec's exit statuses: "5 protocol error (an answer that is
    # malformed, incomplete or too large)". Here the server announces 100
    # bytes of body, sends 7 and closes.
    misbehave truncated
    run "token: an incomplete answer" 5 env TONIC_TEXTUAL_PASSWORD=pw "$TOKMGR" token --url "$bad_url" --user alice
    stderr_is_one_line_without "incomplete answer" ""
    echo "$failures failure(s)"
    [[ $failures -eq 0 ]]
    exit
fi

# ---- usage errors: exit 2 ---------------------------------------------------
run "no command" 2 "$TOKMGR"
stderr_is_one_line_without "no command" ""
run "--help" 0 "$TOKMGR" --help
grep -q "tokmgr serve" "$work/out" || fail "--help does not show the usage"
source_dir=$(cd "$(dirname "$0")/../.." && pwd)
# docs/cli.md quotes the synopsis `tokmgr --help` begins with (up to its first blank line).
documented=$(awk '/`tokmgr --help` begins with/ { seen = 1 } seen && /^```$/ { if (inside) exit; inside = 1; next }
                  inside { print }' "$source_dir/docs/cli.md")
actual=$(sed '/^$/,$d' "$work/out")
[[ -n $documented && $documented == "$actual" ]] && pass "docs/cli.md quotes tokmgr --help as it is" \
    || fail "docs/cli.md's synopsis differs from tokmgr --help: $(diff <(echo "$documented") <(echo "$actual"))"
for command in serve token load; do
    run "$command --help" 0 "$TOKMGR" "$command" --help
    grep -q "^  tokmgr $command " "$work/out" || fail "$command --help does not show its usage: $(head -3 "$work/out")"
    grep -q "tokmgr serve\|tokmgr token\|tokmgr load" <(grep -v "tokmgr $command " "$work/out") \
        && fail "$command --help shows other commands' usage"
    [[ -s $work/err ]] && fail "$command --help wrote to stderr: $(cat "$work/err")"
done
run "-h after other options" 0 "$TOKMGR" load --threads 2 -h
version=$(sed -n 's/^#define TOKMGR_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)$/\2/p' \
          "$source_dir/include/tokmgr/version.hpp" | paste -sd.)
run "--version" 0 "$TOKMGR" --version
[[ $(cat "$work/out") == "tokmgr $version" ]] && pass "--version prints tokmgr $version" \
    || fail "--version printed '$(cat "$work/out")', expected 'tokmgr $version'"
run "unknown command" 2 "$TOKMGR" frobnicate
run "unknown option" 2 "$TOKMGR" serve --colour blue
run "a password given as an option is refused and not repeated" 2 "$TOKMGR" token --user a --password=hunter2
stderr_is_one_line_without "--password=" hunter2
run "positional argument" 2 "$TOKMGR" token hunter2
stderr_is_one_line_without "positional" hunter2
run "serve: bad port" 2 "$TOKMGR" serve --port 70000
run "serve: bad --jwt-ttl" 2 "$TOKMGR" serve --jwt-ttl 0
run "serve: --user without a colon" 2 "$TOKMGR" serve --user alice
run "serve: --tls-cert without --tls-key" 2 "$TOKMGR" serve --tls-cert x.pem
run "token: no user name" 2 "$TOKMGR" token --url http://127.0.0.1:1
run "token: no password (empty stdin)" 2 "$TOKMGR" token --url http://127.0.0.1:1 --user alice
run "token: invalid URL" 2 env TONIC_TEXTUAL_PASSWORD=pw "$TOKMGR" token --url ftp://127.0.0.1/ --user alice
run "load: missing --threads" 2 "$TOKMGR" load --duration 1 --path /api/x
run "load: bad --duration" 2 "$TOKMGR" load --threads 2 --duration soon --path /api/x
run "load: --path not absolute" 2 "$TOKMGR" load --threads 2 --duration 1 --path api/x

# ---- serve ----------------------------------------------------------------
start_server plain --user alice:wonderland --user bob:builder --api-key key-1 --jwt-ttl 2 --refresh-ttl 60
[[ $(cat "$work/plain.out") =~ ^listening\ on\ http://127\.0\.0\.1:[0-9]+$ ]] \
    && pass "serve prints exactly one listening line" || fail "serve's first output: $(cat "$work/plain.out")"
plain_url=$url
plain_pid=$server_pid

# ---- token ----------------------------------------------------------------
run "token: password from the environment" 0 env TONIC_TEXTUAL_PASSWORD=wonderland "$TOKMGR" token --url "$plain_url" --user alice
[[ $(wc -l <"$work/out") -eq 1 && $(cat "$work/out") =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$ ]] \
    && pass "token prints one JWT and a newline" || fail "token's output is not one JWT line"
[[ -s $work/err ]] && fail "token wrote to stderr on success: $(cat "$work/err")"
echo wonderland >"$work/stdin"
run "token: password from stdin, URL and user from the environment" 0 \
    env TONIC_TEXTUAL_BASE_URL="$plain_url" TONIC_TEXTUAL_USERNAME=alice "$TOKMGR" token
: >"$work/stdin"
run "token: wrong password" 3 env TONIC_TEXTUAL_PASSWORD=not-the-password "$TOKMGR" token --url "$plain_url" --user alice
stderr_is_one_line_without "wrong password" not-the-password
run "token: unknown user" 3 env TONIC_TEXTUAL_PASSWORD=wonderland "$TOKMGR" token --url "$plain_url" --user carol
run "token: invalid SOLAR_JWT_EXPIRATION_IN_MINUTES" 1 \
    env TONIC_TEXTUAL_PASSWORD=wonderland SOLAR_JWT_EXPIRATION_IN_MINUTES=soon "$TOKMGR" token --url "$plain_url" --user alice
stderr_is_one_line_without "invalid SOLAR variable" wonderland

# A store the user named but that cannot keep the set must fail the command:
# a JWT printed from a private session leaves nothing for the next run, which
# then has no password and fails where nobody watches.
mkdir -m 0777 "$work/open-dir" && chmod 0777 "$work/open-dir"
run "token: --store in a directory writable by others" 1 env TONIC_TEXTUAL_PASSWORD=wonderland \
    "$TOKMGR" token --url "$plain_url" --user alice --store "$work/open-dir/t.json"
stderr_is_one_line_without "--store refused" wonderland
[[ -s $work/out ]] && fail "token printed a JWT although the store refused it"
grep -q "open-dir" "$work/err" || fail "the refused store's error does not name it: $(cat "$work/err")"
run "token: --store in a directory that cannot be created" 1 env TONIC_TEXTUAL_PASSWORD=wonderland \
    "$TOKMGR" token --url "$plain_url" --user alice --store /proc/nonexistent/t.json
stderr_is_one_line_without "--store not creatable" wonderland
[[ -s $work/out ]] && fail "token printed a JWT although the store could not be created"
grep -q "/proc/nonexistent" "$work/err" || fail "the unusable store's error does not name it: $(cat "$work/err")"
run "token: --store that works" 0 env TONIC_TEXTUAL_PASSWORD=wonderland \
    "$TOKMGR" token --url "$plain_url" --user alice --store "$work/state/t.json"
[[ -s $work/state/t.json ]] && pass "--store wrote the token file" || fail "--store wrote no token file"
run "token: --store again, no password: the stored JWT" 0 \
    "$TOKMGR" token --url "$plain_url" --user alice --store "$work/state/t.json"
# rediss:// is a Redis store, not a file path: one that cannot be reached
# fails the command (nothing listens on port 1), saying so without the password.
run "token: --store rediss:// unreachable" 1 env TONIC_TEXTUAL_PASSWORD=wonderland \
    "$TOKMGR" token --url "$plain_url" --user alice --store "rediss://user:hunter22@127.0.0.1:1/k"
stderr_is_one_line_without "--store rediss://" hunter22
grep -qE "rediss://([^ ]*@)?127.0.0.1:1/" "$work/err" || fail "the unreachable rediss:// store is not named: $(cat "$work/err")"
[[ -s $work/out ]] && fail "token printed a JWT although the TLS store could not be reached"
[[ -e rediss: ]] && fail "--store rediss:// was taken for a file path"
# The certificate options belong to a TLS store, and the client's go in pairs.
run "token: --store-ca-file with redis://" 2 "$TOKMGR" token --url "$plain_url" --user alice \
    --store redis://127.0.0.1:1/k --store-ca-file /etc/ssl/certs/ca-certificates.crt
run "token: --store-ca-file with a file store" 2 "$TOKMGR" token --url "$plain_url" --user alice \
    --store "$work/state/t.json" --store-ca-file /etc/ssl/certs/ca-certificates.crt
run "token: --store-cert-file without its key" 2 "$TOKMGR" token --url "$plain_url" --user alice \
    --store rediss://127.0.0.1:1/k --store-cert-file "$work/none.pem"
grep -q "go together" "$work/err" || fail "the lone --store-cert-file is not explained: $(cat "$work/err")"

# A port nobody listens on: take one from a server that then stops.
start_server gone --user x:y
gone_url=$url
kill -TERM "$server_pid"
wait "$server_pid" 2>/dev/null
run "token: connection refused" 4 env TONIC_TEXTUAL_PASSWORD=pw "$TOKMGR" token --url "$gone_url" --user alice
stderr_is_one_line_without "connection refused" ""

for mode in not-json huge; do
    misbehave "$mode"
    run "token: answer $mode" 5 env TONIC_TEXTUAL_PASSWORD=pw "$TOKMGR" token --url "$bad_url" --user alice
    stderr_is_one_line_without "answer $mode" ""
done
misbehave server-error
run "token: a 500 is 'anything else'" 1 env TONIC_TEXTUAL_PASSWORD=pw "$TOKMGR" token --url "$bad_url" --user alice

# ---- load -----------------------------------------------------------------
run "load: 8 threads over two 2-second lifetimes" 0 env TONIC_TEXTUAL_PASSWORD=wonderland \
    "$TOKMGR" load --url "$plain_url" --user alice --threads 8 --duration 4 --path /api/datasets
summary=$(cat "$work/out")
if [[ $summary =~ ^\{\"requests\":\ ([0-9]+),\ \"ok\":\ ([0-9]+),\ \"unauthorized\":\ 0,\ \"errors\":\ 0,\ \"logins\":\ 1,\ \"refreshes\":\ ([0-9]+)\}$ ]] \
   && [[ ${BASH_REMATCH[1]} -eq ${BASH_REMATCH[2]} && ${BASH_REMATCH[1]} -gt 0 && ${BASH_REMATCH[3]} -ge 1 ]]; then
    pass "load's summary line: $summary"
else
    fail "load's summary line: $summary"
fi
# A JWT the server stops accepting (it restarts with another signing key):
# each thread's 401 retires that JWT in the manager (invalidate with the
# whole Authorization value the manager gave), and the one retry carries a
# new JWT from a new login, so no request ends unauthorized.
TOKMGR_SERVER_SECRET=first-signing-key-for-the-restart-case start_server restart_a --user alice:wonderland
restart_port=${url##*:}
env TONIC_TEXTUAL_PASSWORD=wonderland "$TOKMGR" load --url "$url" --user alice --threads 4 --duration 6 \
    --path /api/datasets >"$work/restart.out" 2>"$work/restart.err" &
restart_load=$!
sleep 1.5
kill "$server_pid"
wait "$server_pid" 2>/dev/null
TOKMGR_SERVER_SECRET=second-signing-key-for-the-restart-case start_server restart_b --port "$restart_port" \
    --user alice:wonderland
wait "$restart_load"
kill "$server_pid"
wait "$server_pid" 2>/dev/null
if grep -q '"unauthorized": 0,.*"logins": 2,' "$work/restart.out" \
   && grep -q '"invalid_jwts_presented": [1-9]' "$work/restart_b.out"; then
    pass "load: a refused JWT is invalidated and the retry carries a new one"
else
    fail "load after a key change: $(cat "$work/restart.out"); server: $(tail -1 "$work/restart_b.out")"
fi
run "load: wrong password stops early" 3 env TONIC_TEXTUAL_PASSWORD=nope \
    "$TOKMGR" load --url "$plain_url" --user alice --threads 4 --duration 30 --path /api/datasets
grep -q '"errors": [1-9]' "$work/out" || fail "load with a wrong password reports no errors: $(cat "$work/out")"
run "load: connection refused" 4 env TONIC_TEXTUAL_PASSWORD=pw \
    "$TOKMGR" load --url "$gone_url" --user alice --threads 2 --duration 1 --path /api/datasets

# ---- serve: errors, statistics on shutdown ----------------------------------
port=${plain_url##*:}
run "serve: port in use" 4 "$TOKMGR" serve --port "$port"
stderr_is_one_line_without "port in use" ""
run "serve: invalid SOLAR_REFRESH_TOKEN_EXPIRATION_IN_MINUTES" 1 env SOLAR_REFRESH_TOKEN_EXPIRATION_IN_MINUTES=x "$TOKMGR" serve
grep -q "e.g. 10000" "$work/err" || fail "the refresh lifetime's error suggests another default: $(cat "$work/err")"
run "serve: unreadable TLS files" 1 "$TOKMGR" serve --tls-cert "$work/none.pem" --tls-key "$work/none.key"

kill -TERM "$plain_pid"
wait "$plain_pid"
status=$?
[[ $status -eq 0 ]] && pass "serve stops on SIGTERM with exit 0" || fail "serve exit status on SIGTERM: $status"
stats=$(sed -n 2p "$work/plain.out")
[[ $stats =~ \"refresh_tokens_reused\":\ 0 && $stats =~ \"expired_jwts_presented\":\ 0 && $stats =~ \"logins\":\ [1-9] ]] \
    && pass "serve prints its statistics when it stops" || fail "serve's statistics line: $stats"
grep -qE 'wonderland|builder|key-1' "$work/plain.out" "$work/plain.err" && fail "serve printed a secret"

start_server interrupted --user a:b
kill -INT "$server_pid"
wait "$server_pid"
status=$?
[[ $status -eq 0 ]] && pass "serve stops on SIGINT with exit 0" || fail "serve exit status on SIGINT: $status"

# ---- TLS ------------------------------------------------------------------
if [[ -n $OPENSSL ]]; then
    "$OPENSSL" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=127.0.0.1 \
        -addext subjectAltName=IP:127.0.0.1,DNS:localhost -addext basicConstraints=critical,CA:TRUE \
        -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null || fail "openssl could not make a test certificate"
    start_server tls --user alice:wonderland --tls-cert "$work/cert.pem" --tls-key "$work/key.pem"
    [[ $url == https://127.0.0.1:* ]] && pass "serve with TLS listens on https" || fail "TLS listening URL: $url"
    run "token over TLS with --ca-file" 0 env TONIC_TEXTUAL_PASSWORD=wonderland "$TOKMGR" token --url "$url" --user alice --ca-file "$work/cert.pem"
    run "token over TLS, certificate not trusted" 4 env TONIC_TEXTUAL_PASSWORD=wonderland "$TOKMGR" token --url "$url" --user alice
    stderr_is_one_line_without "untrusted certificate" wonderland
    run "token over TLS with --insecure" 0 env TONIC_TEXTUAL_PASSWORD=wonderland "$TOKMGR" token --url "$url" --user alice --insecure
    [[ -s $work/err ]] && pass "--insecure warns on stderr" || fail "--insecure is silent"
    run "load over TLS with --ca-file" 0 env TONIC_TEXTUAL_PASSWORD=wonderland \
        "$TOKMGR" load --url "$url" --user alice --threads 4 --duration 1 --path /api/x --ca-file "$work/cert.pem"
    localhost_url=${url/127.0.0.1/localhost}
    run "token over TLS by host name" 0 env TONIC_TEXTUAL_PASSWORD=wonderland "$TOKMGR" token --url "$localhost_url" --user alice --ca-file "$work/cert.pem"
    tls_url=$url
else
    echo "skip: no openssl command, TLS cases not run"
fi

# ---- HTTP proxies -------------------------------------------------------------
# Real proxies (tinyproxy, as the transport tests start them): open, with
# Basic authentication, and one that refuses CONNECT.
proxy_fixture=$(dirname "$0")/../transport/proxy_fixture.sh
if [[ -n ${tls_url:-} ]]; then
    if bash "$proxy_fixture" start "$work" >/dev/null; then
        open_proxy=http://127.0.0.1:$(sed -n 's/^open=//p' "$work/proxy/ports")
        auth_proxy_port=$(sed -n 's/^auth=//p' "$work/proxy/ports")
        refusing_proxy=http://127.0.0.1:$(sed -n 's/^refusing=//p' "$work/proxy/ports")
        proxy_password=$(cat "$work/proxy/password")
        tls=(--url "$tls_url" --user alice --ca-file "$work/cert.pem")

        run "token through the proxy in https_proxy" 0 \
            env https_proxy="$open_proxy" TONIC_TEXTUAL_PASSWORD=wonderland "$TOKMGR" token "${tls[@]}"
        grep -q "CONNECT 127.0.0.1:${tls_url##*:}" "$work/proxy/open.log" \
            && pass "the token request went through the proxy" || fail "the proxy saw no CONNECT"
        run "token through --proxy with a user name and password" 0 env TONIC_TEXTUAL_PASSWORD=wonderland \
            "$TOKMGR" token "${tls[@]}" --proxy "http://tokmgr:$proxy_password@127.0.0.1:$auth_proxy_port"
        run "token: HTTPS_PROXY with a wrong proxy password" 4 \
            env HTTPS_PROXY="http://tokmgr:wrong-$proxy_password@127.0.0.1:$auth_proxy_port" \
            TONIC_TEXTUAL_PASSWORD=wonderland "$TOKMGR" token "${tls[@]}"
        stderr_is_one_line_without "wrong proxy password" "$proxy_password"
        grep -q "the proxy http://127.0.0.1:$auth_proxy_port answered" "$work/err" \
            || fail "the wrong-password error does not name the proxy: $(cat "$work/err")"
        run "token: a proxy that refuses CONNECT" 4 env TONIC_TEXTUAL_PASSWORD=wonderland \
            "$TOKMGR" token "${tls[@]}" --proxy "$refusing_proxy"
        grep -q "the proxy $refusing_proxy answered 403" "$work/err" \
            || fail "the refused-CONNECT error does not name the proxy and status: $(cat "$work/err")"
        run "token: a proxy that is not running" 4 env https_proxy="http://u:hunter2@${gone_url#http://}" \
            TONIC_TEXTUAL_PASSWORD=wonderland "$TOKMGR" token "${tls[@]}"
        stderr_is_one_line_without "proxy not running" hunter2
        grep -q "could not connect to the proxy $gone_url" "$work/err" \
            || fail "the refused-proxy error does not name the proxy: $(cat "$work/err")"
        run "token: NO_PROXY sends the request directly" 0 env https_proxy="$gone_url" NO_PROXY=localhost,127.0.0.1 \
            TONIC_TEXTUAL_PASSWORD=wonderland "$TOKMGR" token "${tls[@]}"
        run "token: an https:// proxy URL is refused without repeating it" 1 env TONIC_TEXTUAL_PASSWORD=wonderland \
            "$TOKMGR" token "${tls[@]}" --proxy "https://u:hunter2@127.0.0.1:1"
        stderr_is_one_line_without "https proxy URL" hunter2
        start_server proxied --user alice:wonderland
        run "token: http_proxy for an http:// URL" 0 env http_proxy="$open_proxy" TONIC_TEXTUAL_PASSWORD=wonderland \
            "$TOKMGR" token --url "$url" --user alice
        grep -q "POST $url/api/auth/login" "$work/proxy/open.log" \
            && pass "the http:// request went through the proxy" || fail "the proxy saw no POST $url/api/auth/login"
        run "load through --proxy" 0 env TONIC_TEXTUAL_PASSWORD=wonderland \
            "$TOKMGR" load "${tls[@]}" --proxy "$open_proxy" --threads 2 --duration 1 --path /api/x
        bash "$proxy_fixture" stop "$work"

        # A proxy that accepts the connection and never answers: the
        # connect timeout (10 s in the program) ends it.
        python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True)
c = s.accept(); time.sleep(60)' >"$work/stall.port" &
        pids+=($!)
        for _ in $(seq 50); do [[ -s $work/stall.port ]] && break; sleep 0.1; done
        stalling_proxy=http://127.0.0.1:$(cat "$work/stall.port")
        run "token: a proxy that stalls" 4 env https_proxy="$stalling_proxy" TONIC_TEXTUAL_PASSWORD=wonderland \
            "$TOKMGR" token "${tls[@]}"
        grep -q "the proxy $stalling_proxy did not answer CONNECT within 10 s" "$work/err" \
            || fail "the stall error does not name the proxy: $(cat "$work/err")"
    else
        fail "tinyproxy did not start (scripts/install-deps.sh installs it)"
    fi
else
    echo "skip: no TLS server, proxy cases not run"
fi

echo "$failures failure(s)"
[[ $failures -eq 0 ]]
