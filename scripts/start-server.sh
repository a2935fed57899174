#!/usr/bin/env bash
# Serves mistral-serve on PORT (default 8000): installs into .venv on first run, then runs
# `mistral-serve up` (engines + gateway). Arguments go to `mistral-serve` instead, e.g.
#   scripts/start-server.sh gateway      # gateway only, over ENGINE_URLS
# Settings: environment variables or .env (see config/sample.env).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
if [ "$#" -eq 0 ]; then set -- up; fi
exec .venv/bin/mistral-serve "$@"
