"""Connecting to Ray keeps the JVM's SIGSEGV handler: HotSpot traps its own implicit null checks with it, and a
process where Ray's crash handler replaced it died (rc 139) in a full test run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from braid.common.ray_cluster import NO_RAY_SIGNAL_HANDLER

# Starts Lucene's JVM, then a local Ray cluster, and names the library that holds SIGSEGV's handler after each.
PROBE = """
import ctypes, json, signal

class Sigaction(ctypes.Structure):
    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16), ("flags", ctypes.c_int),
                ("restorer", ctypes.c_void_p)]

def owner():
    action = Sigaction()
    assert ctypes.CDLL(None).sigaction(signal.SIGSEGV, None, ctypes.byref(action)) == 0
    for line in open("/proc/self/maps"):
        span, *rest = line.split()
        low, high = (int(x, 16) for x in span.split("-"))
        if low <= (action.handler or 0) < high:
            return rest[-1] if len(rest) >= 5 else "?"
    return "?"

from braid.indexer.lucene_jvm import lucene
from braid.common.ray_cluster import connect_ray
lucene()
seen = {"jvm": owner()}
ray = connect_ray("local", cpus=1)
seen["ray"] = owner()
ray.shutdown()
print(json.dumps(seen))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
@pytest.mark.parametrize(("setting", "holder"), [(None, "libjvm.so"), ("0", "_raylet.so")])
def test_ray_leaves_the_jvm_its_sigsegv_handler_unless_asked(tmp_path, setting, holder):
    env = {key: value for key, value in os.environ.items() if key != NO_RAY_SIGNAL_HANDLER}
    if setting is not None:  # an operator who wants Ray's crash reports back
        env[NO_RAY_SIGNAL_HANDLER] = setting
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["jvm"].endswith("libjvm.so")
    assert seen["ray"].endswith(holder), seen
