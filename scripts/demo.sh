#!/usr/bin/env bash
# braid's main job on the embedded default: build the BM25, SPLADE and SLIM indexes for scifact (about 12
# minutes of encoding on 2 cores), evaluate them, print the table, and answer one query.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
if [[ -z "${BRAID_DATA_DIR:-}" && -d "$root/../shared/data" ]]; then
    export BRAID_DATA_DIR="$root/../shared/data"
fi
braid="$root/.venv/bin/braid"
dataset="${BRAID_DEMO_DATASET:-scifact}"
"$braid" index build --dataset "$dataset" --kind bm25
"$braid" eval --dataset "$dataset" --pipeline bm25 --pipeline splade --pipeline slim --output results
"$braid" search --dataset "$dataset" --pipeline bm25 -k 5 "Vitamin D deficiency is associated with higher risk of infection"
