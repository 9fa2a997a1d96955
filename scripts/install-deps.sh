#!/usr/bin/env bash
# Installs the Debian packages tokmgr's build, tests, demo and benchmarks use.
# Idempotent: does nothing when they are all present. Needs root (or sudo).
set -euo pipefail

packages=(
  cmake g++ ninja-build pkg-config        # toolchain
  libasio-dev libsimdjson-dev libssl-dev   # the default policies
  doctest-dev nlohmann-json3-dev           # tests (nlohmann: the second JSON policy)
  libbenchmark-dev libcurl4-openssl-dev    # benchmarks and the libcurl transport example
  valgrind python3                         # benchmarks: instruction counts, the ratio summary
  nginx openssl                            # TLS tests against a real server, test certificates
  redis-server redis-tools                 # the Redis store's and the fleet tests' own Redis; redis-cli makes the test cluster
  libpq-dev postgresql-15                  # tokmgr::postgres_storage and its tests' own PostgreSQL (initdb)
  tinyproxy                                # proxy tests: a real HTTP proxy with CONNECT and Basic auth
  clang libclang-rt-14-dev                 # the fuzz targets (libFuzzer), scripts/fuzz.sh
  curl                                     # the OAuth 2.0 server's check (tests/oauth)
)
# Node.js and npm run the OAuth 2.0 tests' server (oidc-provider, installed by
# its fixture with npm ci; it needs Node.js >= 18). Debian 12's nodejs is 18;
# a newer Node.js already on the machine (with its own npm) is kept, so these
# are asked for only when the commands are missing.
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
echo "installing: ${missing[*]}"
# Tests start their own nginx, redis-server and postgres on free loopback
# ports; keep the packages from starting system-wide ones (nginx on port 80,
# Redis on 6379, PostgreSQL on 5432) during installation.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee "$policy" >/dev/null
  "${sudo_cmd[@]}" chmod +x "$policy"
  created_policy=1
fi
cleanup() { [ "$created_policy" -eq 1 ] && "${sudo_cmd[@]}" rm -f "$policy"; return 0; }
trap cleanup EXIT
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
