# tests/fleet/fleet_scenarios.sh — the fleet scenarios every shared store
# passes (tests/redis/fleet_test.sh, tests/postgres/fleet_test.sh), written
# once: `run_fleet_scenario SECTION`, SECTION one of
#   group    4 processes x 4 threads, 5-second JWTs, 30 s: one login, about one refresh per
#            JWT lifetime for the fleet, no reuse, never two refreshes in flight
#   kill     the lease holder killed -9 mid-refresh (the server holds its answers): another
#            process takes over after the lease TTL, no reuse, no caller error
#   sigstop  the holder stopped past its lease, then continued: the others take over, no
#            reuse, the newer set is not overwritten by the holder's late answer
#   down     the store stopped for 10 s mid-run, then restarted: no caller error, no reuse,
#            the fleet shares one set again
# The sourcing script sources fleet_lib.sh, starts the store, sets $store
# (the --store argument; an array store_options, if set, follows it) and
# defines the store's hooks:
#   lease_held       prints yes when somebody holds the lease now
#   stored_document  prints the stored token-set document
#   generation       prints the stored generation
#   stop_store / restart_store   the outage of `down`
#   count_writes SECONDS         prints how many writes the fleet made in SECONDS

run_fleet_scenario() {
    case "$1" in
group)
    start_server --jwt-ttl 5 --refresh-ttl 600
    start_loads 4 30
    wait_loads
    stop_server
    check logins "-eq 1"
    # 5-second JWTs: never served past 90% of what is left of them on arrival
    # (4.5 s at most), refreshed from about 3 s on:
    # 30 s is 8 to 11 lifetimes for the fleet; 4 processes refreshing on
    # their own would make about 4 times as many.
    check refreshes "-ge 7"
    check refreshes "-le 14"
    check refresh_tokens_reused "-eq 0"
    check families_revoked "-eq 0"
    check expired_jwts_presented "-eq 0"
    check max_refreshes_in_flight "-eq 1"
    ;;
kill)
    # 4-second JWTs, adopted from the store as 3 s (whole seconds, the part of
    # iat's second gone taken off): soft from about 2 s, never served past 2.7 s. The
    # server holds each answer 2 s, so the holder (sending within a few
    # hundred ms of its start) is killed mid-refresh; its lease lives 2 s.
    start_server --jwt-ttl 4 --refresh-ttl 600 --auth-delay-ms 2000
    "$TOKMGR" token --url "$url" --user svc --store "$store" ${store_options[@]+"${store_options[@]}"} >/dev/null || fail "the first login failed"
    sleep 2.2
    "$TOKMGR" token --url "$url" --user svc --store "$store" ${store_options[@]+"${store_options[@]}"} --lease-ttl 2 >/dev/null 2>&1 &
    holder=$!
    pids+=("$holder")
    sleep 0.8
    held=$(lease_held)
    kill -9 "$holder"
    wait "$holder" 2>/dev/null
    [[ $held == yes ]] && pass "the holder held the lease when it was killed" || fail "nobody held the lease at the kill"
    stored_document | grep -q '"refresh_token_spent":true' && pass "the store holds the holder's spent mark" \
        || fail "the store does not hold a spent mark"
    started=$(date +%s%N)
    # The survivors' own leases outlive their login (2 s of server delay):
    # a lease shorter than the request it covers lets a second survivor in,
    # which costs a second login (never a reuse).
    start_loads 3 6 --lease-ttl 4
    wait_loads
    took=$(( ($(date +%s%N) - started) / 1000000 ))
    stored_document | grep -q '"refresh_token_spent":false' && pass "a survivor stored a new set (run took ${took} ms)" \
        || fail "no survivor stored a new set"
    stop_server
    check logins "-eq 2"  # the takeover logs in: the killed holder's token is spent
    check refresh_tokens_reused "-eq 0"
    check families_revoked "-eq 0"
    check expired_jwts_presented "-eq 0"
    ;;
sigstop)
    # The server holds each answer 3 s; the holder's lease lives 1 s, so it
    # is stopped mid-refresh well past its lease.
    start_server --jwt-ttl 4 --refresh-ttl 600 --auth-delay-ms 3000
    "$TOKMGR" token --url "$url" --user svc --store "$store" ${store_options[@]+"${store_options[@]}"} >/dev/null || fail "the first login failed"
    sleep 2.2
    "$TOKMGR" token --url "$url" --user svc --store "$store" ${store_options[@]+"${store_options[@]}"} --lease-ttl 1 >"$work/holder.out" 2>"$work/holder.err" &
    holder=$!
    pids+=("$holder")
    sleep 1  # it has sent its refresh by now; the answer comes 3 s after
    kill -STOP "$holder"
    sleep 1  # past the holder's lease, and past the JWT's hard threshold
    if timeout 20 "$TOKMGR" token --url "$url" --user svc --store "$store" ${store_options[@]+"${store_options[@]}"} --lease-ttl 1 >"$work/other.out" 2>"$work/other.err"
    then pass "another process took over: generation $(generation)"
    else fail "another process failed (exit $?): $(cat "$work/other.err")"; fi
    taken_over=$(generation)
    kill -CONT "$holder"
    if wait "$holder"; then pass "the holder resumed and finished its refresh (kept in its memory)"
    else fail "the holder failed after SIGCONT (exit $?): $(cat "$work/holder.err")"; fi
    [[ $(generation) == "$taken_over" ]] && pass "the holder's late answer did not overwrite generation $taken_over" \
        || fail "the stored generation moved from $taken_over to $(generation) after the holder resumed"
    after=$("$TOKMGR" token --url "$url" --user svc --store "$store" ${store_options[@]+"${store_options[@]}"} 2>&1)
    [[ "$after" == "$(cat "$work/other.out")" ]] && pass "the next process reads the takeover's JWT" \
        || fail "the next process did not get the takeover's JWT"
    [[ "$after" != "$(cat "$work/holder.out")" ]] && pass "the holder's JWT never reached the store" \
        || fail "the holder's set was stored"
    stop_server
    check logins "-eq 2"
    check refresh_tokens_reused "-eq 0"
    check families_revoked "-eq 0"
    ;;
down)
    start_server --jwt-ttl 5 --refresh-ttl 600
    # A lease taken just before the store stops outlives the outage in a
    # store that keeps its data (PostgreSQL; Redis restarts empty): its
    # holder cannot release it while the store is down, so it lapses after
    # lease_ttl, and a lease_ttl above the manager's lease_wait (30 s) makes
    # callers wait past it: an error by design (docs/fleet.md, "The lease
    # TTL"). 5 s outlives a refresh against this local server.
    start_loads 4 30 --lease-ttl 5
    sleep 7
    local at_stop
    at_stop=$(generation)
    stop_store
    pass "the store stopped at 7 s at generation $at_stop"
    sleep 10
    restart_store || fail "the store did not restart"
    pass "the store restarted at 17 s"
    # Once everyone has rejoined, count the fleet's writes for 9 s: two per
    # refresh (spent mark, new pair) for one shared set.
    sleep 4
    local writes
    writes=$(count_writes 9)
    wait_loads
    # 9 s with 5-second JWTs is 2 to 4 refreshes for one shared set (4 to 8
    # writes); four processes on their own sets would write about 4 times
    # as much (or nothing at all, if they never came back to the store).
    [[ $writes -ge 2 && $writes -le 10 ]] && pass "the fleet wrote $writes times in 9 s after rejoining: one shared set" \
        || fail "the fleet wrote $writes times in 9 s after rejoining (one shared set writes 4 to 8)"
    [[ -n $(generation) ]] && pass "the store holds the shared set again: generation $(generation)" \
        || fail "the store holds no token set after the restart"
    stop_server
    check refresh_tokens_reused "-eq 0"
    check families_revoked "-eq 0"
    check expired_jwts_presented "-eq 0"
    # One login, plus at most one private login per process during the outage.
    check logins "-le 5"
    ;;
*) echo "unknown section '$1'"; return 2 ;;
    esac
}
