#!/usr/bin/env bash
# Starts a throwaway PostgreSQL for the tests, when the machine's does not answer on
# 127.0.0.1:5432: a new cluster in a temporary folder on a free port, trust auth.
#   scripts/throwaway-postgres.sh start   prints `URL FOLDER` (postgresql://postgres@…/postgres)
#   scripts/throwaway-postgres.sh stop FOLDER
# Needs PostgreSQL's server binaries (Debian: postgresql); as root it runs them as `postgres`.
set -euo pipefail

bin_dir() {
    if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
start)
    bin="$(bin_dir)"
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
        echo "PostgreSQL does not answer on 127.0.0.1:5432 and its server binaries are not" \
            "installed: install postgresql, or set TEST_POSTGRES_URL" >&2
        exit 1
    fi
    folder="$(mktemp -d -t mistral-serve-postgres-XXXXXX)"
    [ "$(id -u)" = 0 ] && chown postgres "$folder"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    as_owner "$bin/initdb" -D "$folder/data" -A trust -U postgres >/dev/null
    as_owner "$bin/pg_ctl" -D "$folder/data" -l "$folder/log" -w \
        -o "-p $port -k $folder -c listen_addresses=127.0.0.1" start >/dev/null
    echo "postgresql://postgres@127.0.0.1:$port/postgres $folder"
    ;;
stop)
    folder="$2"
    as_owner "$(bin_dir)/pg_ctl" -D "$folder/data" -m immediate -w stop >/dev/null || true
    rm -rf "$folder"
    ;;
*)
    echo "usage: $0 start | stop FOLDER" >&2
    exit 2
    ;;
esac
