#!/usr/bin/env bash
# Starts a throwaway Redis for the tests, when the machine's does not answer on 127.0.0.1:6379:
# redis-server on a free loopback port, nothing saved to disk.
#   scripts/throwaway-redis.sh start   prints `URL FOLDER` (redis://127.0.0.1:PORT/0)
#   scripts/throwaway-redis.sh stop FOLDER
# Needs redis-server (Debian: redis-server).
set -euo pipefail

case "${1:-}" in
start)
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "Redis does not answer on 127.0.0.1:6379 and redis-server is not installed:" \
            "install redis-server, or set TEST_REDIS_URL" >&2
        exit 1
    fi
    folder="$(mktemp -d -t mistral-serve-redis-XXXXXX)"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --daemonize yes \
        --dir "$folder" --pidfile "$folder/redis.pid" --logfile "$folder/log" >/dev/null
    for _ in $(seq 50); do  # up within a second or two
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null \
            && break
        sleep 0.1
    done
    echo "redis://127.0.0.1:$port/0 $folder"
    ;;
stop)
    folder="$2"
    if [ -f "$folder/redis.pid" ]; then kill "$(cat "$folder/redis.pid")" 2>/dev/null || true; fi
    rm -rf "$folder"
    ;;
*)
    echo "usage: $0 start | stop FOLDER" >&2
    exit 2
    ;;
esac
