#!/usr/bin/env bash
# braid's main job on the embedded default: build the BM25, MiniLM and SPLADE-tiny indexes for scifact (about 10
# minutes of encoding on 2 cores), evaluate the default hybrid pipeline against each retriever it fuses and
# against naive RRF (significance, per-stage latency, plot), print the table, and answer one query with
# explanations; then the same query through BM25 + the embedded SmolLM2 in-context reranker (FIRST scoring).
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
"$braid" eval --dataset "$dataset" --pipeline hybrid --pipeline bm25 --pipeline dense --pipeline splade \
    --pipeline hybrid-rrf --output results
"$braid" search --dataset "$dataset" --pipeline hybrid --explain -k 5 \
    "Vitamin D deficiency is associated with higher risk of infection"
"$braid" search --dataset "$dataset" --pipeline bm25-first --explain -k 5 \
    "Vitamin D deficiency is associated with higher risk of infection"
