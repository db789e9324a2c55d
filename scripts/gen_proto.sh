#!/usr/bin/env bash
# Regenerate the checked-in Python stubs of proto/braid/v1/braid.proto (the only way they are made; a test
# fails when they are stale). OUT=DIR writes them under DIR instead, for that comparison.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:-$root}"
mkdir -p "$out/proto/braid/v1"
"$root/.venv/bin/python" -m grpc_tools.protoc -I . --python_out="$out" --pyi_out="$out" \
    --grpc_python_out="$out" proto/braid/v1/braid.proto
