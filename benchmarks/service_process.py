"""Start ``braid serve`` as a separate process for the service benchmarks, and stop it with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def start_server(args: list[str], api_key: str, log: Path, timeout: float = 600) -> tuple[subprocess.Popen, dict]:
    """Run ``braid serve ARGS`` on free loopback ports; returns the process and its ready record."""
    # The server writes the ready file once and never again, so its folder goes as soon as the record is read.
    with tempfile.TemporaryDirectory(prefix="braid-ready-") as folder:
        ready = Path(folder) / "ready.json"
        command = [sys.executable, "-m", "braid", "serve", "--grpc-port", "0", "--http-port", "0",
                   "--ready-file", str(ready), *args]  # fmt: skip
        handle = log.open("w")
        process = subprocess.Popen(
            command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, "BRAID_API_KEY": api_key}
        )
        until = time.monotonic() + timeout
        while not ready.exists():
            if process.poll() is not None:
                raise SystemExit(f"braid serve exited with {process.returncode}; see {log}")
            if time.monotonic() > until:
                process.kill()
                raise SystemExit(f"braid serve did not start in {timeout} s; see {log}")
            time.sleep(0.2)
        return process, json.loads(ready.read_text())


def stop_server(process: subprocess.Popen, timeout: float = 120) -> int:
    """SIGTERM, then the exit code (the server drains in-flight requests first)."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return -9
