"""``braid index verify``: re-check an index against its manifest and say what is wrong.

Checked: every file the manifest lists is present with its recorded size and sha256, no file is present that it
does not list, every list of document ids the index carries has ``doc_count`` entries, and the indexes it was built
from (``depends_on``) exist. A folder of indexes (a build job's output, an ``--index-dir``) verifies each index in it.
"""

from __future__ import annotations

from pathlib import Path

from braid.common.errors import BraidError
from braid.indexer.manifest import MANIFEST_NAME, Manifest, file_checksums

DOC_ID_FILES = ("doc_ids.txt", "docids.txt")


def _doc_id_files(root: Path, manifest: Manifest) -> list[Path]:
    found = [path for path in root.rglob("*") if path.name in DOC_ID_FILES and path.is_file()]
    pointer = root / "CURRENT"
    if manifest.kind == "multivector" and pointer.is_file():  # only the live generation counts
        live = root / pointer.read_text(encoding="utf-8").strip()
        found = [path for path in found if live in path.parents or path.parent == root]
    return found


def verify_index(root: Path) -> list[str]:
    """Problems found in one index folder; empty when it verifies."""
    root = Path(root)
    manifest = Manifest.read(root)
    problems: list[str] = []
    recorded, actual = manifest.files, file_checksums(root)
    if not recorded:
        problems.append("the manifest lists no files")
    problems += [f"missing file {name}" for name in sorted(set(recorded) - set(actual))]
    problems += [f"file {name} is not in the manifest" for name in sorted(set(actual) - set(recorded))]
    for name in sorted(set(recorded) & set(actual)):
        want, have = recorded[name], actual[name]
        if want["bytes"] != have["bytes"]:
            problems.append(f"{name}: {have['bytes']} bytes, the manifest says {want['bytes']}")
        elif want["sha256"] != have["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest (the file was modified or corrupted)")
    for path in _doc_id_files(root, manifest):
        count = sum(1 for line in path.read_text(encoding="utf-8").split("\n") if line)
        if count != manifest.doc_count:
            problems.append(f"{path.relative_to(root)}: {count} document ids, the manifest says {manifest.doc_count}")
    for role in manifest.depends_on:
        dependency = manifest.dependency(root, role)
        if not (dependency / MANIFEST_NAME).is_file():
            problems.append(f"the {role} index it was built from is missing: {dependency}")
    return problems


def indexes_under(folder: Path) -> list[Path]:
    """The index folders to verify for ``folder``: itself, or the indexes of an index root (two levels down)."""
    folder = Path(folder)
    if (folder / MANIFEST_NAME).is_file():
        return [folder]
    if not folder.is_dir():
        raise BraidError(f"{folder} does not exist")
    found = sorted(
        {path.parent for path in folder.glob(f"*/{MANIFEST_NAME}")}
        | {path.parent for path in folder.glob(f"*/*/{MANIFEST_NAME}")}
    )
    if not found:
        raise BraidError(f"{folder} is neither an index (no {MANIFEST_NAME}) nor a folder of indexes")
    return found
