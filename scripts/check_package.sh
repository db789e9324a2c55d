#!/usr/bin/env bash
# Check the package as users get it: `pip install .` (into a scratch folder) must put exactly one top-level
# package, braid, into site-packages, and the installed braid must keep the import-linter layer contracts of
# pyproject.toml (checked there because only the installed package holds every layer under braid/).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$root/.venv/bin/python"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# Built from the tracked files (a copy, so no build/ folder is left in the checkout): an untracked module would fail.
mkdir "$scratch/src"
git -C "$root" ls-files -z --cached --others --exclude-standard | (cd "$root" && xargs -0 cp --parents -t "$scratch/src")
"$python" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation --target "$scratch/site" \
    "$scratch/src" 2>&1 | grep -v "^WARNING: Location" || true
top_level="$(cd "$scratch/site" && ls -d -- */ | sed 's:/$::' | grep -v -e '\.dist-info$' -e '^bin$' | tr '\n' ' ')"
if [[ "$top_level" != "braid " ]]; then
    echo "check_package: pip install . put these top-level packages into site-packages: $top_level(want: braid)" >&2
    exit 1
fi
# From an empty folder, so that the repository's own folders cannot stand in for the installed ones.
cd "$scratch"
PYTHONPATH="$scratch/site" "$root/.venv/bin/lint-imports" --no-cache "$root/pyproject.toml"
