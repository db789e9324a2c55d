#!/usr/bin/env bash
# braid's main job on the embedded default: build the BM25, MiniLM and SPLADE-tiny indexes for scifact (about 2
# minutes of encoding on the 2-core machine), evaluate the default hybrid pipeline against each retriever it fuses and
# against naive RRF (significance, per-stage latency, plot), print the table, and answer one query with
# explanations; then the same query through BM25 + the embedded SmolLM2 in-context reranker (FIRST scoring); then
# serve both pipelines over gRPC and HTTP on loopback, answer the query through each protocol, and stop the server
# with SIGTERM (it drains and exits 0).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
if [[ -z "${BRAID_DATA_DIR:-}" && -d "$root/../shared/data" ]]; then
    export BRAID_DATA_DIR="$root/../shared/data"
fi
braid="$root/.venv/bin/braid"
dataset="${BRAID_DEMO_DATASET:-scifact}"

# Your own documents first: a collection from the notes that ship with braid, searched, written, searched again.
"$braid" collection create notes --sample --field year:integer --pipeline hybrid --force
"$braid" search --collection notes --pipeline hybrid --explain -k 3 "how do engines make new documents searchable quickly"
"$braid" search --collection notes --pipeline hybrid -k 3 --filter '{"field": "year", "gte": 2020}' "fast vector search"
update="$(mktemp --suffix=.jsonl)"
echo '{"id": "segments", "title": "Segment merges", "text": "New documents land in small segments searched at once; merges fold them together."}' > "$update"
"$braid" collection upsert notes --from "$update"
rm -f "$update"
"$braid" search --collection notes --pipeline hybrid -k 3 "how do engines make new documents searchable quickly"
"$braid" index build --dataset "$dataset" --kind bm25
"$braid" eval --dataset "$dataset" --pipeline hybrid --pipeline bm25 --pipeline dense --pipeline splade \
    --pipeline hybrid-rrf --output results
"$braid" search --dataset "$dataset" --pipeline hybrid --explain -k 5 \
    "Vitamin D deficiency is associated with higher risk of infection"
"$braid" search --dataset "$dataset" --pipeline bm25-first --explain -k 5 \
    "Vitamin D deficiency is associated with higher risk of infection"

# Serve: free loopback ports, written to a ready file once both front ends listen.
ready_dir="$(mktemp -d)"
ready="$ready_dir/ready.json"
"$braid" serve --dataset "$dataset" --pipelines hybrid bm25-first --grpc-port 0 --http-port 0 --ready-file "$ready" &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -rf "$ready_dir"' EXIT
for _ in $(seq 600); do
    [[ -f "$ready" ]] && break
    kill -0 "$server" 2>/dev/null || { echo "braid serve exited early" >&2; exit 1; }
    sleep 0.5
done
[[ -f "$ready" ]] || { echo "braid serve did not start" >&2; exit 1; }
address() { "$root/.venv/bin/python" -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$ready" "$1"; }
"$braid" query --server "$(address grpc)" --pipeline hybrid --explain -k 5 \
    "Vitamin D deficiency is associated with higher risk of infection"
"$root/.venv/bin/python" - "$(address http)" <<'PY'
import json, sys, httpx
body = {"query": "Vitamin D deficiency is associated with higher risk of infection", "k": 3, "pipeline": "bm25-first"}
print(json.dumps(httpx.post(f"{sys.argv[1]}/v1/search", json=body, timeout=120).json(), indent=1))
PY
kill -TERM "$server"
wait "$server"
# The server has exited: the trap no longer kills anything (its pid may be reused), it only removes the ready dir.
trap 'rm -rf "$ready_dir"' EXIT
echo "server stopped cleanly"
