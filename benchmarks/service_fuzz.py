"""Fuzz the HTTP API from its own OpenAPI schema with schemathesis: no request may get a 5xx answer.

Starts ``braid serve`` (loopback, an API key so that write endpoints run too), points ``schemathesis run`` at
``/openapi.json`` with the ``not_a_server_error`` check, in both positive and negative generation modes, then
stops the server with SIGTERM and checks that it exits 0. Usage:

    python -m benchmarks.service_fuzz --dataset scifact --pipelines bm25 --max-examples 200
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
from pathlib import Path

from benchmarks.service_process import start_server, stop_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--pipelines", nargs="+", default=["bm25"])
    parser.add_argument("--index-dir", default="indexes")
    parser.add_argument("--data-dir", help="datasets folder (default: $BRAID_DATA_DIR, else ./data)")
    parser.add_argument("--max-examples", type=int, default=200, help="test cases per operation and phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=Path("results/service_fuzz"))
    args = parser.parse_args()
    # One worker: hypothesis 6.170's lambda-source cache is not thread safe ("AST constructor recursion depth
    # mismatch" runtime errors inside schemathesis with --workers 2).

    args.output.mkdir(parents=True, exist_ok=True)
    api_key = secrets.token_hex(16)
    serve = ["--dataset", args.dataset, "--index-dir", args.index_dir, "--pipelines", *args.pipelines,
             *(["--data-dir", args.data_dir] if args.data_dir else [])]  # fmt: skip
    process, addresses = start_server(serve, api_key, args.output / "server.log")
    try:
        fuzz = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")), "run", f"{addresses['http']}/openapi.json",
                "--checks", "not_a_server_error", "--mode", "all", "--max-examples", str(args.max_examples),
                "--seed", str(args.seed), "--header", f"Authorization: Bearer {api_key}", "--workers", "1",
                "--report", "junit", "--report-dir", str(args.output),
            ],
            check=False,
        )  # fmt: skip
    finally:
        exit_code = stop_server(process)
    print(f"schemathesis exit code: {fuzz.returncode}; server exit code after SIGTERM: {exit_code}")
    sys.exit(1 if fuzz.returncode or exit_code else 0)


if __name__ == "__main__":
    main()
