#!/usr/bin/env bash
# Regenerate the checked-in Python stubs of proto/braid/v1/braid.proto (the only way they are made; a test
# fails when they are stale). OUT=DIR writes them under DIR instead, for that comparison.
#
# protoc names imports after the .proto file's path, and the stubs install as braid.proto.braid.v1: so the file
# is compiled as braid/proto/braid/v1/braid.proto from a scratch include root whose braid/proto is this folder.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-$root}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/include/braid" "$scratch/out" "$out/proto/braid/v1"
ln -s "$root/proto" "$scratch/include/braid/proto"
"${BRAID_VENV:-$root/.venv}/bin/python" -m grpc_tools.protoc -I "$scratch/include" --python_out="$scratch/out" \
    --pyi_out="$scratch/out" --grpc_python_out="$scratch/out" braid/proto/braid/v1/braid.proto
cp "$scratch/out/braid/proto/braid/v1/"braid_pb2*.py* "$out/proto/braid/v1/"
