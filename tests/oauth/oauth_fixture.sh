#!/bin/bash
# A private OAuth 2.0 server for the tests: oidc-provider (pinned in
# package-lock.json beside this script) on a free loopback port; run by
# ctest fixtures, and by scenario scripts for their own copy.
#
#   oauth_fixture.sh start DIR [PORT]  install (npm ci, cached), start, mint a
#                                      first refresh token
#   oauth_fixture.sh stop  DIR         stop it (TERM, then KILL), wait
#
# Files in DIR after start (all of them test values, mode 600 where secret):
#   port            the port on 127.0.0.1; the issuer is http://127.0.0.1:PORT
#   pid             the node process
#   provider.log    its output (never tokens or secrets)
#   env             sourceable: OAUTH_ISSUER, OAUTH_TOKEN_URL, OAUTH_STATS_URL,
#                   OAUTH_MINT_URL, OAUTH_RESET_URL, the clients' ids and secrets
#   refresh_token   a first refresh token for the client_secret_basic client
#   npm.log         the last npm ci's output
#
# The package is installed by `npm ci` from the lockfile into DIR (package.json,
# package-lock.json and provider.mjs are copied there), so the source tree
# never gets a node_modules; when DIR/node_modules already matches the
# lockfile, npm is not run again. Without PORT, the kernel picks a free port
# (the server binds port 0 and reports it once it listens: no window in which
# another process could take a port probed free); PORT restarts it on the
# port it had. A watchdog stops the server when the process that started it
# (ctest, or the test script) exits, or after TOKMGR_OAUTH_FIXTURE_LIFETIME
# seconds (default 1800), so it never outlives the run even if the cleanup
# fixture does not get to run.
#
# The environment variables of provider.mjs (OAUTH_ACCESS_TOKEN_TTL, ...)
# pass through to the server.
set -eu

cmd=${1:?usage: oauth_fixture.sh start|stop DIR [PORT]}
dir=${2:?usage: oauth_fixture.sh start|stop DIR [PORT]}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
node=${TOKMGR_NODE:-node}
npm=${TOKMGR_NPM:-npm}
min_node_major=18 # oidc-provider 8 and its dependencies need Node.js 18

die() { echo "oauth_fixture.sh: $*" >&2; exit 1; }

check_tools() {
    command -v "$node" >/dev/null 2>&1 ||
        die "Node.js ('$node') is not installed; the OAuth 2.0 tests need Node.js >= $min_node_major and npm (scripts/install-deps.sh installs them)"
    command -v "$npm" >/dev/null 2>&1 ||
        die "npm ('$npm') is not installed; the OAuth 2.0 tests need it to install oidc-provider (scripts/install-deps.sh installs it)"
    local version major
    version=$("$node" --version 2>/dev/null) || die "'$node --version' failed"
    major=${version#v}
    major=${major%%.*}
    if ! [[ $major =~ ^[0-9]+$ ]] || [ "$major" -lt "$min_node_major" ]; then
        die "Node.js $version is too old: oidc-provider needs Node.js >= $min_node_major"
    fi
}

# Node's http client, so the fixture needs no curl (and, unlike fetch, takes
# any port): http METHOD URL prints the body, fails (with the status on
# stderr) on an error status.
http() {
    # shellcheck disable=SC2016  # JavaScript, not shell
    "$node" -e '
const [method, url] = process.argv.slice(1);
const fail = (why) => { console.error(`${method} ${url}: ${why}`); process.exit(1); };
const req = require("node:http").request(url, { method, timeout: 5000 }, (res) => {
  const chunks = [];
  res.on("data", (c) => chunks.push(c));
  res.on("end", () => {
    if (res.statusCode >= 400) fail(`HTTP ${res.statusCode}`);
    process.stdout.write(Buffer.concat(chunks));
  });
});
req.on("timeout", () => req.destroy(new Error("timed out")));
req.on("error", (e) => fail(e.message));
req.end();
' "$1" "$2"
}

json_field() { "$node" -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const v=JSON.parse(s)[process.argv[1]];if(typeof v!=="string")process.exit(1);process.stdout.write(v)})' "$1"; }

install() {
    mkdir -p "$dir"
    chmod 700 "$dir"
    cp "$src/package.json" "$src/package-lock.json" "$src/provider.mjs" "$dir/"
    local stamp=$dir/node_modules/.tokmgr-lock-sha256 want
    want=$(sha256sum "$src/package-lock.json" | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$dir/node_modules/oidc-provider/package.json" ]; then
        return 0
    fi
    echo "installing oidc-provider with npm ci into $dir (log: $dir/npm.log)"
    if ! (cd "$dir" && NPM_CONFIG_UPDATE_NOTIFIER=false "$npm" ci --no-audit --no-fund --loglevel=warn) >"$dir/npm.log" 2>&1; then
        echo "oauth_fixture.sh: npm ci failed; its log:" >&2
        cat "$dir/npm.log" >&2 || true
        exit 1
    fi
    echo "$want" > "$stamp"
}

# start_failed PID WHAT: stop what was started, show its log, fail.
start_failed() {
    kill "$1" 2>/dev/null || true
    rm -f "$dir/pid"
    echo "oauth_fixture.sh: oidc-provider $2; its log:" >&2
    cat "$dir/provider.log" >&2 || true
    exit 1
}

start_provider() {
    stop_provider
    check_tools
    install
    local port=${1:-0}
    rm -f "$dir/port" "$dir/port.new" "$dir/refresh_token" "$dir/env"
    (cd "$dir" && exec "$node" provider.mjs "$port" "$dir/port.new") </dev/null >"$dir/provider.log" 2>&1 &
    local pid=$!
    echo "$pid" > "$dir/pid"
    # Up to 30 s for the port (the first start after an install loads more
    # from disk), then for discovery to answer.
    local i=0
    while [ ! -s "$dir/port.new" ]; do
        i=$((i + 1))
        if ! kill -0 "$pid" 2>/dev/null || [ "$i" -gt 300 ]; then
            start_failed "$pid" "did not start (port $port)"
        fi
        sleep 0.1
    done
    port=$(cat "$dir/port.new")
    local base=http://127.0.0.1:$port discovery
    i=0
    until discovery=$(http GET "$base/.well-known/openid-configuration" 2>/dev/null); do
        i=$((i + 1))
        if ! kill -0 "$pid" 2>/dev/null || [ "$i" -gt 100 ]; then
            start_failed "$pid" "on $base does not answer discovery"
        fi
        sleep 0.1
    done
    local token_url
    token_url=$(printf '%s' "$discovery" | json_field token_endpoint) || die "discovery has no token_endpoint"
    mv "$dir/port.new" "$dir/port"

    # The watchdog: detached from the caller's pipes so it does not wait for it.
    local owner=$PPID lifetime=${TOKMGR_OAUTH_FIXTURE_LIFETIME:-1800}
    (
        while [ "$lifetime" -gt 0 ] && kill -0 "$owner" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do
            sleep 1
            lifetime=$((lifetime - 1))
        done
        if [ "$(cat "$dir/pid" 2>/dev/null)" = "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    ) </dev/null >/dev/null 2>&1 &

    (
        umask 077
        cat > "$dir/env" <<EOF
OAUTH_ISSUER=$base
OAUTH_TOKEN_URL=$token_url
OAUTH_STATS_URL=$base/test/stats
OAUTH_MINT_URL=$base/test/mint
OAUTH_RESET_URL=$base/test/reset
OAUTH_BASIC_CLIENT_ID=${OAUTH_BASIC_CLIENT_ID:-tokmgr-basic}
OAUTH_BASIC_CLIENT_SECRET=${OAUTH_BASIC_CLIENT_SECRET:-tokmgr-basic-test-secret}
OAUTH_POST_CLIENT_ID=${OAUTH_POST_CLIENT_ID:-tokmgr-post}
OAUTH_POST_CLIENT_SECRET=${OAUTH_POST_CLIENT_SECRET:-tokmgr-post-test-secret}
OAUTH_PUBLIC_CLIENT_ID=${OAUTH_PUBLIC_CLIENT_ID:-tokmgr-public}
EOF
        http POST "$base/test/mint" | json_field refresh_token > "$dir/refresh_token"
    ) || die "could not mint the first refresh token on $base"
    echo "oidc-provider $pid on $base (token endpoint $token_url)"
}

# Alive and not a zombie: once the server exits it may wait a while for
# whoever adopted it to reap it, and then is stopped all the same.
running() {
    kill -0 "$1" 2>/dev/null || return 1
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

stop_provider() {
    local pidfile=$dir/pid
    [ -f "$pidfile" ] || return 0
    local pid
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$pid" ] && running "$pid"; then
        kill "$pid" 2>/dev/null || true
        local i=0
        while running "$pid" && [ "$i" -lt 100 ]; do
            sleep 0.05
            i=$((i + 1))
        done
        if running "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
        while running "$pid" && [ "$i" -lt 200 ]; do
            sleep 0.05
            i=$((i + 1))
        done
    fi
    rm -f "$pidfile"
}

case $cmd in
start) start_provider "${3:-}" ;;
stop) stop_provider ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
