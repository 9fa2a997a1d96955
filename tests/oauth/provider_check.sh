#!/bin/bash
# Proves the judge judges: with curl against the fixture's oidc-provider
# (oauth_fixture.sh start DIR), the behaviours the OAuth 2.0 tests rely on.
#
#   provider_check.sh DIR
#
#  1. client_credentials (client_secret_basic and client_secret_post) gives
#     an access token with expires_in;
#  2. the fixture's first refresh token (DIR/refresh_token) is active, by
#     introspection, which does not use it up; a refresh token minted the
#     same way refreshes and returns a NEW refresh token, and the new one
#     refreshes again (rotation at every refresh);
#  3. presenting a rotated (consumed) refresh token answers invalid_grant,
#     and then the newest refresh token is dead as well: the whole grant was
#     revoked; /test/stats counts exactly one reuse and one revoked grant;
#  4. a wrong client secret answers invalid_client (401);
#  5. a public client (no secret) refreshes with rotation.
# Prints no token or secret; failures say which step and what came back,
# with tokens in the answer masked.
set -eu

dir=${1:?usage: provider_check.sh DIR}
# shellcheck source=/dev/null
. "$dir/env"
node=${TOKMGR_NODE:-node}
curl=${TOKMGR_CURL:-curl}
command -v "$curl" >/dev/null 2>&1 || { echo "provider_check.sh: curl is not installed (Debian: curl)" >&2; exit 1; }

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAILED: $*" >&2; }

# The answer's field, or nothing.
field() { printf '%s' "$1" | "$node" -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{const v=JSON.parse(s)[process.argv[1]];if(v!==undefined)process.stdout.write(typeof v==="string"?v:JSON.stringify(v))}catch{}})' "$2"; }
masked() { printf '%s' "$1" | sed -E 's/"(access_token|refresh_token|id_token)":"[^"]*"/"\1":"***"/g'; }

# token ARGS...: POST to the token endpoint; sets body and status.
token() {
    local out
    out=$("$curl" -sS --noproxy '*' --max-time 10 -w '\n%{http_code}' "$@" "$OAUTH_TOKEN_URL") || { body=''; status=000; return 0; }
    body=${out%$'\n'*}
    status=${out##*$'\n'}
}
basic=(-u "$OAUTH_BASIC_CLIENT_ID:$OAUTH_BASIC_CLIENT_SECRET")
refresh() { token "${basic[@]}" -d grant_type=refresh_token --data-urlencode "refresh_token=$1"; }
stats() { "$curl" -sS --noproxy '*' --max-time 10 "$OAUTH_STATS_URL"; }

"$curl" -sS --noproxy '*' --max-time 10 -X POST "$OAUTH_RESET_URL" >/dev/null

# 1. client_credentials
token "${basic[@]}" -d grant_type=client_credentials -d scope=api
if [ "$status" = 200 ] && [ -n "$(field "$body" access_token)" ] && [[ $(field "$body" expires_in) =~ ^[1-9][0-9]*$ ]]; then
    ok "client_credentials (client_secret_basic): an access token, expires_in $(field "$body" expires_in)"
else
    fail "client_credentials (client_secret_basic): HTTP $status $(masked "$body")"
fi
token -d grant_type=client_credentials -d "client_id=$OAUTH_POST_CLIENT_ID" -d "client_secret=$OAUTH_POST_CLIENT_SECRET"
if [ "$status" = 200 ] && [ -n "$(field "$body" access_token)" ] && [ -n "$(field "$body" expires_in)" ]; then
    ok "client_credentials (client_secret_post): an access token"
else
    fail "client_credentials (client_secret_post): HTTP $status $(masked "$body")"
fi

# 2. rotation
intro=$("$curl" -sS --noproxy '*' --max-time 10 "${basic[@]}" --data-urlencode "token=$(cat "$dir/refresh_token")" \
    -d token_type_hint=refresh_token "$OAUTH_ISSUER/token/introspection")
if [ "$(field "$intro" active)" = true ] && [ "$(field "$intro" client_id)" = "$OAUTH_BASIC_CLIENT_ID" ] &&
    [ "$(field "$intro" scope)" = offline_access ]; then
    ok "the fixture's first refresh token is active (offline_access, the Basic client)"
else
    fail "introspection of the fixture's refresh token: $(masked "$intro")"
fi
rt0=$(field "$("$curl" -sS --noproxy '*' --max-time 10 -X POST "$OAUTH_MINT_URL")" refresh_token)
refresh "$rt0"
rt1=$(field "$body" refresh_token)
if [ "$status" = 200 ] && [ -n "$(field "$body" access_token)" ] && [ -n "$(field "$body" expires_in)" ] &&
    [ -n "$rt1" ] && [ "$rt1" != "$rt0" ]; then
    ok "a minted refresh token refreshes and is replaced by a new one"
else
    fail "first refresh: HTTP $status $(masked "$body")"
fi
refresh "$rt1"
rt2=$(field "$body" refresh_token)
if [ "$status" = 200 ] && [ -n "$rt2" ] && [ "$rt2" != "$rt1" ] && [ "$rt2" != "$rt0" ]; then
    ok "the new refresh token refreshes again, and is replaced too"
else
    fail "second refresh: HTTP $status $(masked "$body")"
fi

# 3. reuse detection revokes the grant
refresh "$rt1"
if [ "$status" = 400 ] && [ "$(field "$body" error)" = invalid_grant ]; then
    ok "a consumed refresh token presented again: invalid_grant"
else
    fail "reuse of a consumed refresh token: HTTP $status $(masked "$body")"
fi
refresh "$rt2"
if [ "$status" = 400 ] && [ "$(field "$body" error)" = invalid_grant ]; then
    ok "after the reuse, the newest refresh token is dead too (grant revoked)"
else
    fail "the newest refresh token after a reuse: HTTP $status $(masked "$body")"
fi
s=$(stats)
if [ "$(field "$s" refresh_reuse_detected)" = 1 ] && [ "$(field "$s" grants_revoked)" = 1 ] &&
    [ "$(field "$s" refresh_success)" = 2 ]; then
    ok "/test/stats: 2 refreshes, 1 reuse detected, 1 grant revoked"
else
    fail "/test/stats after the reuse: $s"
fi

# 4. a wrong secret
token -u "$OAUTH_BASIC_CLIENT_ID:not-the-secret" -d grant_type=client_credentials
if [ "$status" = 401 ] && [ "$(field "$body" error)" = invalid_client ]; then
    ok "a wrong client secret: invalid_client (401)"
else
    fail "a wrong client secret: HTTP $status $(masked "$body")"
fi

# 5. a public client
prt0=$(field "$("$curl" -sS --noproxy '*' --max-time 10 -X POST -d "client_id=$OAUTH_PUBLIC_CLIENT_ID" "$OAUTH_MINT_URL")" refresh_token)
token -d grant_type=refresh_token -d "client_id=$OAUTH_PUBLIC_CLIENT_ID" --data-urlencode "refresh_token=$prt0"
prt1=$(field "$body" refresh_token)
if [ -n "$prt0" ] && [ "$status" = 200 ] && [ -n "$prt1" ] && [ "$prt1" != "$prt0" ]; then
    ok "a public client (no secret) refreshes with rotation"
else
    fail "public client refresh: HTTP $status $(masked "$body")"
fi

s=$(stats)
errors=$(field "$s" token_errors)
if [ "$errors" = '{"invalid_grant":2,"invalid_client":1}' ] && [ "$(field "$s" client_credentials_success)" = 2 ] &&
    [ "$(field "$s" refresh_success)" = 3 ] && [ "$(field "$s" server_errors)" = 0 ]; then
    ok "/test/stats: 2 client_credentials, 3 refreshes, errors by code $errors"
else
    fail "/test/stats at the end: $s"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
