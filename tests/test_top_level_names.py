"""No folder of the checkout stands in for a third-party package of the same name (braid/__init__.py says how).

A third-party package is faked under each layer's name (``kernels`` excepted where Hugging Face's real one is
installed: transformers imports it, so a fake would break transformers rather than test braid). A process started
in an empty folder says where each name imports from; every process braid starts from the checkout's root, where the
root is on ``sys.path``, must import the same ones: this pytest process, ``python -m braid``, a subprocess, and a
Ray worker.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The folders that install as braid's layers, as pyproject.toml maps them (braid/ itself left out).
LAYERS = tuple(
    folder
    for folder in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    if folder != "braid"
)

# Where each top-level name imports from, after transformers (which imports Hugging Face's kernels) and braid's own
# layers (which must still import as braid.*) have been imported.
WHERE = """
import importlib, json, sys
from transformers import PreTrainedModel
import braid.eval.runner, braid.kernels.triton_backend, braid.service.cli.main

def where(names):
    return {name: importlib.import_module(name).__file__ for name in names}
"""
PROBE = WHERE + "print(json.dumps(where(sys.argv[1:])))\n"
RAY_PROBE = (
    WHERE
    + """
from braid.common.ray_cluster import connect_ray
ray = connect_ray("local", cpus=1)
print(json.dumps(ray.get(ray.remote(where).remote(sys.argv[1:]))))
ray.shutdown()
"""
)


def _hf_kernels_installed() -> bool:
    try:
        importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def third_party(tmp_path_factory) -> Path:
    """A folder of fake third-party packages named after braid's layers, for PYTHONPATH."""
    site = tmp_path_factory.mktemp("third-party")
    for name in LAYERS:
        if name == "kernels" and _hf_kernels_installed():
            continue
        (site / name).mkdir()
        (site / name / "__init__.py").write_text("THIRD_PARTY = True\n")
    return site


@pytest.fixture(scope="module")
def expected(third_party, tmp_path_factory) -> dict[str, str]:
    """Where each name imports from in a process that has no checkout on its path."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    found = _run([sys.executable, "-c", PROBE, *LAYERS], elsewhere, third_party)
    for name, origin in found.items():
        assert not any(Path(origin).resolve().is_relative_to(REPO / folder) for folder in LAYERS), (name, origin)
    return found


def _run(command: list[str], cwd: Path, third_party: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(third_party)}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_this_process_imports_third_party_packages(third_party, expected, monkeypatch):
    # pytest put the root on sys.path (rootdir insertion, python -m pytest): the case this guards.
    roots = [i for i, entry in enumerate(sys.path) if Path(entry or ".").resolve() == REPO]
    assert roots
    # The fakes go behind the root and before site-packages, where PYTHONPATH puts them in the subprocesses
    # (monkeypatch restores sys.path afterwards).
    behind = roots[0] + 1
    monkeypatch.setattr(sys, "path", [*sys.path[:behind], str(third_party), *sys.path[behind:]])
    importlib.invalidate_caches()
    for name in LAYERS:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin == expected[name], (name, spec)


def test_subprocess_from_the_root_imports_third_party_packages(third_party, expected):
    assert _run([sys.executable, "-c", PROBE, *LAYERS], REPO, third_party) == expected


def test_python_m_braid_from_the_root_works_beside_them(third_party, tiny_beir, tmp_path):
    # A command that imports transformers (the SPLADE head's config) and every layer of the CLI; offline, an unknown
    # hub name is braid's clear error: anything shadowed would fail earlier, with a traceback.
    env = {**os.environ, "PYTHONPATH": str(third_party), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "braid", "index", "build", "--dataset", str(tiny_beir), "--kind", "splade"),
            *("--param", "model=braid-test/no-such-model", "--output", str(tmp_path / "out")),
        ],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "model 'braid-test/no-such-model' is neither embedded" in done.stderr


def test_ray_worker_started_from_the_root_imports_third_party_packages(third_party, expected):
    assert _run([sys.executable, "-c", RAY_PROBE, *LAYERS], REPO, third_party) == expected
