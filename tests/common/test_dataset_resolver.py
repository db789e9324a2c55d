from __future__ import annotations

import functools
import hashlib
import http.server
import io
import threading
import zipfile

import pytest

from braid.common import beir_download
from braid.common.dataset_resolver import resolve_dataset
from braid.common.errors import BraidError
from tests.conftest import write_beir


def test_path_and_name_under_data_dir(tmp_path, monkeypatch):
    write_beir(tmp_path / "data" / "tiny")
    monkeypatch.delenv("BRAID_DATA_DIR", raising=False)
    assert resolve_dataset(str(tmp_path / "data" / "tiny")).name == "tiny"
    assert resolve_dataset("tiny", tmp_path / "data").root == tmp_path / "data" / "tiny"
    monkeypatch.setenv("BRAID_DATA_DIR", str(tmp_path / "data"))
    assert resolve_dataset("tiny").layout == "beir"


def test_unknown_name_lists_available(tmp_path):
    write_beir(tmp_path / "data" / "tiny")
    with pytest.raises(BraidError, match=r"unknown dataset 'nope' \(datasets in .*: tiny"):
        resolve_dataset("nope", tmp_path / "data")


def test_missing_path_and_non_dataset_folder(tmp_path):
    with pytest.raises(BraidError, match="does not exist"):
        resolve_dataset(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BraidError, match="is not a dataset"):
        resolve_dataset(str(tmp_path / "empty"))


@pytest.fixture
def zip_server(tmp_path):
    """Serve a BEIR-style zip over HTTP on loopback, as the BEIR mirror would."""
    buffer = io.BytesIO()
    source = write_beir(tmp_path / "src" / "scifact")
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path in source.rglob("*"):
            if path.is_file():
                bundle.write(path, f"scifact/{path.relative_to(source)}")
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "scifact.zip").write_bytes(buffer.getvalue())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/{{name}}.zip", hashlib.md5(buffer.getvalue()).hexdigest()
    server.shutdown()


def test_download_verifies_checksum_and_unpacks(tmp_path, monkeypatch, zip_server):
    url, md5 = zip_server
    monkeypatch.setenv("BRAID_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(beir_download, "BEIR_URL", url)
    monkeypatch.setitem(beir_download.BEIR_MD5, "scifact", "0" * 32)
    with pytest.raises(BraidError, match="corrupt"):
        resolve_dataset("scifact", tmp_path / "nodata")
    assert not (tmp_path / "cache" / "datasets" / "scifact").exists()
    monkeypatch.setitem(beir_download.BEIR_MD5, "scifact", md5)
    dataset = resolve_dataset("scifact", tmp_path / "nodata")
    assert dataset.root == tmp_path / "cache" / "datasets" / "scifact"
    assert len(dataset.corpus()) == 4


def test_offline_download_refuses_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAID_CACHE_DIR", str(tmp_path / "cache"))
    # Port 9 (discard) on loopback is closed here: the connection is refused at once, as offline.
    monkeypatch.setattr(beir_download, "BEIR_URL", "http://127.0.0.1:9/{name}.zip")
    with pytest.raises(BraidError, match=r"could not be downloaded .* may be offline"):
        resolve_dataset("fiqa", tmp_path / "nodata")
    assert list((tmp_path / "cache" / "datasets").iterdir()) == []
