#!/usr/bin/env bash
# Runs an example against `tokmgr serve` with 3-second JWTs and checks the
# server's statistics: one login, at least two refreshes, no refresh token
# reused, no expired JWT presented, never two refreshes in flight.
#   run_against_server.sh TOKMGR EXAMPLE ARGS...
# In ARGS, {url} stands for the server's base URL and {dir} for a scratch
# directory; the password is in TONIC_TEXTUAL_PASSWORD.
set -u
TOKMGR=$1
shift
work=$(mktemp -d)
server_pid=
cleanup() {
    [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
unset SOLAR_JWT_EXPIRATION_IN_MINUTES SOLAR_REFRESH_TOKEN_EXPIRATION_IN_MINUTES SOLAR_AUTH_RPM_LIMIT

"$TOKMGR" serve --port 0 --user svc:example-password --jwt-ttl 3 --refresh-ttl 600 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
url=
for _ in $(seq 100); do
    url=$(sed -n 's/^listening on //p' "$work/server.out")
    [[ -n $url ]] && break
    sleep 0.1
done
[[ -n $url ]] || { echo "FAIL: the reference server did not start: $(cat "$work/server.err")"; exit 1; }

args=()
for arg in "$@"; do
    arg=${arg//\{url\}/$url}
    args+=("${arg//\{dir\}/$work}")
done
TONIC_TEXTUAL_PASSWORD=example-password timeout 60 "${args[@]}"
status=$?
kill -TERM "$server_pid"
wait "$server_pid"
server_pid=
stats=$(sed -n 2p "$work/server.out")
echo "server: $stats"
[[ $status -eq 0 ]] || { echo "FAIL: $(basename "$1") exited $status"; exit 1; }
field() { sed -n "s/.*\"$1\": *\([0-9]*\).*/\1/p" <<<"$stats"; }
failed=0
check() { if [ "$(field "$1")" $2 ]; then echo "ok:   $1 $2"; else echo "FAIL: $1 is $(field "$1"), expected $2"; failed=1; fi; }
check logins "-eq 1"
check refreshes "-ge 2"
check refresh_tokens_reused "-eq 0"
check families_revoked "-eq 0"
check expired_jwts_presented "-eq 0"
check max_refreshes_in_flight "-eq 1"
exit $failed
