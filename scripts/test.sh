#!/usr/bin/env bash
# Run braid's test suite in the project virtual environment (created on first use).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
if [[ -z "${BRAID_DATA_DIR:-}" && -d "$root/../shared/data" ]]; then
    export BRAID_DATA_DIR="$root/../shared/data"
fi
"$root/.venv/bin/ruff" check .
# The installed package: one top-level name (braid) and the import-linter layer contracts of pyproject.toml.
bash "$root/scripts/check_package.sh"
exec "$root/.venv/bin/python" -m pytest "$@"
