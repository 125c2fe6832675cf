#!/usr/bin/env bash
# Install everything, lint and type-check, then run the whole test suite (unit, property,
# real-process, netns, kernel tier).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=${PYTHON:-python3}
# the linter and the type checker first (a few seconds): pyproject.toml says what each covers
echo "lint: ruff check"
"$PY" -m ruff check --no-cache .
echo "types: mypy (the cores, the wire, the event spine, the config readers, status)"
"$PY" -m mypy --no-incremental
# --durations: the slowest tests are named in every run (the suite must stay under 20 min on 2 cores)
exec "$PY" -m pytest -q -p no:cacheprovider --durations=30 "$@"
