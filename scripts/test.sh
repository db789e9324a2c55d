#!/usr/bin/env bash
# Run braid's test suite in the project virtual environment (created from the lock on first use, brought up to date
# when the lock changes). BRAID_VENV=DIR runs it in another environment as it is (scripts/test_latest.sh does).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${BRAID_VENV:-}" ]]; then
    venv="$BRAID_VENV"
else
    venv="$root/.venv"
    bash "$root/scripts/setup_env.sh"
fi
export BRAID_VENV="$venv"
cd "$root"
if [[ -z "${BRAID_DATA_DIR:-}" && -d "$root/../shared/data" ]]; then
    export BRAID_DATA_DIR="$root/../shared/data"
fi
# A real browser for the console tests (tests/service/test_console.py).
bash "$root/scripts/browser_env.sh"
"$venv/bin/ruff" check .
# The installed package: one top-level name (braid), no name that resolves into braid's files, and the
# import-linter layer contracts of pyproject.toml.
bash "$root/scripts/check_package.sh"
exec "$venv/bin/python" -m pytest "$@"
