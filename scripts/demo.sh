#!/usr/bin/env bash
# The end-to-end demo, on this machine, with no setup:
#   1. installs what a fresh Debian machine lacks (scripts/install-deps.sh),
#   2. builds the `tokmgr` program (Release),
#   3. starts the reference server on loopback with 4-second JWTs,
#   4. runs `tokmgr load` with 64 threads sharing one token manager for 20 s
#      (about ten JWT lifetimes, so the manager refreshes many times),
#   5. prints what happened and checks it: every request answered, one login,
#      refreshes as the lifetimes demand, and by the server's own count no
#      refresh token presented twice and no expired JWT presented.
# Exits non-zero if any of that is not so.
#
# Tunable: DEMO_THREADS (64), DEMO_SECONDS (20), DEMO_JWT_TTL (4), BUILD_DIR (build-demo).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
threads=${DEMO_THREADS:-64}
seconds=${DEMO_SECONDS:-20}
jwt_ttl=${DEMO_JWT_TTL:-4}
build=${BUILD_DIR:-build-demo}

step() { printf '\n== %s\n' "$*"; }

step "dependencies"
scripts/install-deps.sh

step "build (Release, the tokmgr program only)"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DTOKMGR_BUILD_TESTS=OFF -DTOKMGR_BUILD_EXAMPLES=OFF -DTOKMGR_BUILD_BENCHMARKS=OFF -DTOKMGR_BUILD_TOOLS=ON >/dev/null
cmake --build "$build" --target tokmgr -j "$(nproc)"
tokmgr="$build/tools/tokmgr"

# The client and the server get their lifetimes from the command line and the
# tokens' claims only; a stray variable from the caller's shell must not count.
unset SOLAR_JWT_EXPIRATION_IN_MINUTES SOLAR_REFRESH_TOKEN_EXPIRATION_IN_MINUTES TONIC_TEXTUAL_BASE_URL TOKMGR_SERVER_SECRET

work=$(mktemp -d)
server_pid=
cleanup() {
    [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# A fresh password per run, never on a command line a client reads: the
# server gets it in --user (it is a throwaway demo account), the load
# generator in TONIC_TEXTUAL_PASSWORD.
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')

step "reference server: JWTs live ${jwt_ttl} s, refresh tokens 120 s"
"$tokmgr" serve --user "demo:$password" --jwt-ttl "$jwt_ttl" --refresh-ttl 120 >"$work/serve.out" 2>"$work/serve.err" &
server_pid=$!
url=
for _ in $(seq 100); do
    url=$(sed -n 's/^listening on //p' "$work/serve.out")
    [[ -n $url ]] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if [[ -z $url ]]; then
    echo "demo: the server did not start: $(cat "$work/serve.err")" >&2
    exit 1
fi
echo "listening on $url"

step "load: ${threads} threads share one token_manager<> for ${seconds} s, GET /api/datasets"
load_status=0
TONIC_TEXTUAL_PASSWORD=$password "$tokmgr" load --url "$url" --user demo \
    --threads "$threads" --duration "$seconds" --path /api/datasets >"$work/load.out" || load_status=$?
load_json=$(cat "$work/load.out")
echo "$load_json"

kill -TERM "$server_pid"
wait "$server_pid" || { echo "demo: the server did not stop cleanly" >&2; exit 1; }
server_pid=
server_json=$(sed -n 2p "$work/serve.out")

# field JSON NAME — the number after "NAME": in a flat JSON line.
field() { sed -n "s/.*\"$2\": \([0-9]*\).*/\1/p" <<<"$1"; }

requests=$(field "$load_json" requests)
ok=$(field "$load_json" ok)
logins=$(field "$load_json" logins)
refreshes=$(field "$load_json" refreshes)
served=$(field "$server_json" resources_served)
server_logins=$(field "$server_json" logins)
server_refreshes=$(field "$server_json" refreshes)
reused=$(field "$server_json" refresh_tokens_reused)
expired=$(field "$server_json" expired_jwts_presented)
in_flight=$(field "$server_json" max_refreshes_in_flight)
rejected=$(field "$server_json" refreshes_rejected)

step "what happened"
printf '  %-46s %s\n' \
    "requests made by the load threads" "$requests" \
    "  answered 200" "$ok" \
    "protected requests served (server)" "$served" \
    "logins (manager / server)" "$logins / $server_logins" \
    "refreshes (manager / server)" "$refreshes / $server_refreshes" \
    "refresh tokens presented twice (server)" "$reused" \
    "expired JWTs presented (server)" "$expired" \
    "refreshes rejected (server)" "$rejected" \
    "most refreshes in flight at once (server)" "$in_flight"
echo "  server statistics: $server_json"

problems=()
[[ $load_status -eq 0 ]] || problems+=("tokmgr load exited $load_status")
[[ -n $requests && $requests -gt 0 && $ok -eq $requests ]] || problems+=("not every request was answered 200")
[[ $served -eq $ok ]] || problems+=("the server served $served, the client counted $ok")
[[ $logins -eq 1 && $server_logins -eq 1 ]] || problems+=("expected exactly one login")
min_refreshes=$(( seconds / jwt_ttl - 1 ))
[[ $refreshes -ge $min_refreshes && $refreshes -eq $server_refreshes ]] ||
    problems+=("expected at least $min_refreshes refreshes, seen by both sides alike")
[[ $reused -eq 0 ]] || problems+=("a refresh token was presented twice")
[[ $expired -eq 0 ]] || problems+=("an expired JWT was presented")
[[ $rejected -eq 0 ]] || problems+=("a refresh was rejected")
[[ $in_flight -le 1 ]] || problems+=("$in_flight refreshes were in flight at once")

if [[ ${#problems[@]} -gt 0 ]]; then
    printf '\nDEMO FAILED:\n'
    printf '  - %s\n' "${problems[@]}"
    exit 1
fi
printf '\nDEMO PASSED: %s requests from %s threads over %s s with one login and %s refreshes;\n' \
    "$requests" "$threads" "$seconds" "$refreshes"
printf 'no refresh token reused, no expired JWT presented, never two refreshes at once.\n'
