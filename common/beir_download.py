"""Download a public BEIR dataset zip, verify its published md5, and unpack it atomically."""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from braid.common.errors import BraidError

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"

# md5 of each archive as published in BEIR's README (beir-cellar/beir, "Available Datasets").
BEIR_MD5 = {
    "msmarco": "444067daf65d982533ea17ebd59501e4",
    "trec-covid": "ce62140cb23feb9becf6270d0d1fe6d1",
    "nfcorpus": "a89dba18a62ef92f7d323ec890a0d38d",
    "nq": "d4d3d2e48787a744b6f6e691ff534307",
    "hotpotqa": "f412724f78b0d91183a0e86805e16114",
    "fiqa": "17918ed23cd04fb15047f73e6c3bd9d9",
    "arguana": "8ad3e3c2a5867cdced806d6503f29b99",
    "webis-touche2020": "46f650ba5a527fc69e0a6521c5a23563",
    "cqadupstack": "4e41456d7df8ee7760a7f866133bda78",
    "quora": "18fb154900ba42a600f84b839c173167",
    "dbpedia-entity": "c2a39eb420a3164af735795df012ac2c",
    "scidocs": "38121350fc3a4d2f48850f6aff52e4a9",
    "fever": "5a818580227bfb4b35bb6fa46d9b6c03",
    "climate-fever": "8b66f0a9126c521bae2bde127b4dc99d",
    "scifact": "5f7d1de60b170fc8027bb7898e2efca1",
}


def download_beir(name: str, target_root: Path, timeout_s: float = 30.0) -> Path:
    """Fetch BEIR dataset ``name`` into ``target_root/name`` and return that directory.

    Nothing is left behind on failure: the zip goes to a temporary file, is checked against the published
    md5, unpacked into a temporary folder and only then renamed into place.
    """
    if name not in BEIR_MD5:
        raise BraidError(f"{name!r} is not a BEIR dataset braid can download (known: {', '.join(sorted(BEIR_MD5))})")
    url = BEIR_URL.format(name=name)
    target_root.mkdir(parents=True, exist_ok=True)
    final = target_root / name
    with tempfile.TemporaryDirectory(dir=target_root, prefix=f".{name}.download-") as scratch:
        archive = Path(scratch) / f"{name}.zip"
        digest = hashlib.md5()  # the published checksums are md5; used for integrity, not security
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response, archive.open("wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {name}", file=sys.stderr) as bar:
                    while block := response.read(1 << 20):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise BraidError(
                f"dataset {name!r} is not on disk and could not be downloaded from {url} ({error}); "
                f"this machine may be offline: place the BEIR folder at {final} or pass --data-dir"
            ) from None
        if digest.hexdigest() != BEIR_MD5[name]:
            raise BraidError(f"download of {url} is corrupt: md5 {digest.hexdigest()} != published {BEIR_MD5[name]}")
        unpacked = Path(scratch) / "unpacked"
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.namelist():
                # Refuse members that would escape the folder (absolute paths or '..').
                if member.startswith("/") or ".." in Path(member).parts:
                    raise BraidError(f"refusing unsafe path {member!r} in {url}")
            bundle.extractall(unpacked)
        source = unpacked / name if (unpacked / name).is_dir() else unpacked
        if final.exists():
            shutil.rmtree(final)
        source.rename(final)
    return final
