#!/usr/bin/env bash
# Stop the local broker and redis-server started by up.sh (the broker keeps no data).
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
exec "${ADCAST_BIN:-$here/.venv-infer/bin/adcast}" down "$@"
