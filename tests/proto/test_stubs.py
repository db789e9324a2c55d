"""The checked-in Python stubs are exactly what scripts/gen_proto.sh generates from braid.proto."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STUBS = ("braid_pb2.py", "braid_pb2.pyi", "braid_pb2_grpc.py")


def test_checked_in_stubs_are_fresh(tmp_path):
    subprocess.run(
        ["bash", str(REPO / "scripts" / "gen_proto.sh")], env={**os.environ, "OUT": str(tmp_path)}, check=True
    )
    for name in STUBS:
        fresh = (tmp_path / "proto" / "braid" / "v1" / name).read_text()
        assert (REPO / "proto" / "braid" / "v1" / name).read_text() == fresh, (
            f"{name} is stale: run scripts/gen_proto.sh"
        )


def test_api_is_package_braid_v1():
    from braid.proto.braid.v1 import braid_pb2

    service = braid_pb2.DESCRIPTOR.services_by_name["Braid"]
    assert service.full_name == "braid.v1.Braid"
    assert {m.name for m in service.methods} == {
        "Search", "BatchSearch", "Rerank", "ListPipelines", "GetDocuments", "AddDocuments", "UpsertDocuments",
        "DeleteDocuments", "Reload",
    }  # fmt: skip
