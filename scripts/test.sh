#!/usr/bin/env bash
# Install everything, then run the whole test suite (unit, property, real-process, netns, kernel tier).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=${PYTHON:-python3}
exec "$PY" -m pytest -q -p no:cacheprovider "$@"
