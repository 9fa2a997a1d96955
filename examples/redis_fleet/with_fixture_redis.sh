#!/usr/bin/env bash
# with_fixture_redis.sh REDIS-DIR EXAMPLE URL USER WORKERS SECONDS
# Runs the example on a fresh key of the test fixture's Redis (its port is in
# REDIS-DIR/port, written when ctest set the fixture up).
set -eu
dir=$1
shift
port=$(cat "$dir/port")
exec "$1" "$2" "$3" "redis://127.0.0.1:$port/tokmgr-example:$$" "$4" "$5"
