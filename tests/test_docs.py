"""The shell blocks the README and docs/ mark runnable run, in order, in a fresh folder, and succeed: the guide
cannot drift from the code. A block is marked by an HTML comment line ``<!-- runnable -->`` right above its fence."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MARK = re.compile(r"^<!-- runnable -->\n```(?:bash|sh)\n(.*?)^```", re.MULTILINE | re.DOTALL)
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def runnable_blocks(page: Path) -> list[str]:
    return MARK.findall(page.read_text(encoding="utf-8"))


def test_the_readme_marks_its_first_search_runnable():
    blocks = runnable_blocks(REPO / "README.md")
    assert blocks and any("braid collection create" in block for block in blocks)


@pytest.mark.parametrize("page", [p for p in PAGES if runnable_blocks(p)], ids=lambda p: p.name)
def test_runnable_blocks_succeed(page, tmp_path):
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # `braid` is the venv's
        "BRAID_COLLECTIONS_DIR": str(tmp_path / "collections"),
    }
    for number, block in enumerate(runnable_blocks(page), 1):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"{page.name} block {number} failed:\n{block}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr
