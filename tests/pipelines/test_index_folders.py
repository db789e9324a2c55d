"""`braid index build` and every built-in pipeline name the same index folder for every index kind.

The folder's digest covers the kind's build parameters with their defaults filled in: if the parameters a pipeline
asks for and the defaults a build fills in ever disagreed, a pipeline would silently not find (or rebuild) the
index a user built. Both sides read the one :class:`~braid.indexer.index_kind.IndexKind`; this checks it end to end,
through the command line and real builds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from braid.common.dataset_resolver import open_dataset_dir
from braid.indexer.index_store import find_index
from braid.indexer.kinds import INDEX_KINDS
from braid.indexer.manifest import Manifest
from braid.pipelines.spec import builtin_pipelines, load_pipeline
from braid.service.cli.main import main


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, dict[str, Path]]:
    """Every index kind built by the command line with its defaults: (dataset folder, index root, kind -> folder)."""
    from tests.conftest import write_beir

    root = tmp_path_factory.mktemp("folders")
    data = write_beir(root / "tiny")
    index_root = root / "indexes"
    folders = {}
    for kind in INDEX_KINDS:
        folders[kind] = _build(data, index_root, kind)
    return data, index_root, folders


#: Built-in pipelines over indexes other than their kinds' defaults: per index kind, the build options the README
#: gives for it (a kind built from another, as multivector from tokens, lists that one's options too).
LONG = ["--param", "doc_max_length=512"]
BUILD_OPTIONS = {
    "multivector-pool2": {"multivector": ["--pool-factor", "2"]},
    "hybrid-max": {
        "embeddings": ["--param", "max_length=512"],
        "splade": LONG,
        "multivector": [*LONG, "--pool-factor", "2", "--param", "centroids=64", "--param", "precision=int8"],
        "tokens": LONG,
    },
}
#: Retrievers that read their kinds' default indexes in a pipeline listed above (hybrid-max holds the hybrid's own).
DEFAULT_INDEXES = {"hybrid-max": {"dense", "splade"}}


def _build(data: Path, index_root: Path, kind: str, options: tuple[str, ...] = ()) -> Path:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            ["index", "build", "--dataset", str(data), "--kind", kind, "--index-dir", str(index_root), *options]
        )
    assert code == 0, out.getvalue()
    match = re.search(rf"^{kind} index (?:built|up to date): (\S+) \(", out.getvalue(), re.M)
    assert match, out.getvalue()
    return Path(match.group(1))


def test_every_builtin_pipeline_finds_the_folder_index_build_made(built):
    data, index_root, folders = built
    dataset = open_dataset_dir(data)
    covered = set()
    for name in sorted(builtin_pipelines()):
        spec = load_pipeline(name)
        options = BUILD_OPTIONS.get(name, {})

        def made(kind: str, options: dict[str, list[str]] = options) -> Path:
            return _build(data, index_root, kind, tuple(options[kind])) if kind in options else folders[kind]

        for stage in [*spec.retrievers, *spec.cascade]:
            kind = stage.kind_info.index.name
            expected = folders[kind] if stage.name in DEFAULT_INDEXES.get(name, ()) else made(kind)
            found = find_index(dataset, kind, stage.index_params(), index_root)
            assert found == expected, f"pipeline {name!r} ({stage.name}) looks for {kind} elsewhere"
            covered.add(kind)
            manifest = Manifest.read(found)
            for role, relative in manifest.depends_on.items():  # indexes it was built from: tokens, embeddings
                dependency = (found / relative).resolve()
                assert dependency == made(Manifest.read(dependency).kind).resolve(), (name, role)
                covered.add(Manifest.read(dependency).kind)
    assert covered == set(INDEX_KINDS)


def test_a_second_build_of_each_kind_reuses_its_folder(built):
    data, index_root, folders = built
    for kind, folder in folders.items():
        assert _build(data, index_root, kind) == folder
