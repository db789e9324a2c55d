"""Document updates that span several indexes (a sharded index's shards) become visible all together or not at all.

Two-phase commit (Gray, "Notes on Data Base Operating Systems", 1978), with the index folders as participants and
one decision file as the commit point:

1. *Prepare*: every index involved is locked (in path order, so two updates cannot deadlock), any earlier
   interrupted update in it is settled, and the change is staged beside its live state
   (:class:`~braid.indexer.index_kind.Updates`). A refusal (an unknown id, an id already indexed) or a failure
   discards everything staged: nothing changed.
2. Each index gets a marker (``UPDATE-PENDING.json``) naming its staged state and the decision file.
3. *Commit point*: the decision file is written with one atomic rename. From here the update has happened.
4. *Publish*: each index makes its staged state live and drops its marker; then the decision file goes.

A crash before step 3 leaves markers whose decision file does not exist: the staged states are discarded. A crash
after it leaves markers whose decision file exists: they are published. Either happens in :func:`settle`, which
every reader of an updatable index calls before it opens the live state (it waits on the lock while an update is
in flight), so no reader sees one shard updated and another not.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from braid.common.atomic_file import atomic_write_text
from braid.common.errors import BraidError
from braid.indexer.index_kind import Staged, Updates
from braid.indexer.manifest import PENDING_NAME

DECISION_PREFIX = ".braid-update-"


@dataclass(frozen=True)
class Change:
    """One index's part of an update: documents to add, or ids to delete."""

    index_dir: Path
    updates: Updates
    add: Sequence[tuple[str, str]] = ()
    delete: Sequence[str] = ()

    def stage(self) -> Staged:
        if self.add and self.delete:
            raise BraidError("a change either adds documents or deletes them, not both")
        if self.delete:
            return self.updates.stage_delete(self.index_dir, self.delete)
        return self.updates.stage_add(self.index_dir, self.add)


def commit_changes(changes: Sequence[Change]) -> dict[Path, int]:
    """Apply every change, all or none; returns each changed index's new document count."""
    dirs = [Path(change.index_dir) for change in changes]
    if len(set(dirs)) != len(dirs):
        raise BraidError("an update names one index twice; merge its changes into one")
    if not changes:
        return {}
    with ExitStack() as locks:
        for change in sorted(changes, key=lambda change: str(Path(change.index_dir).resolve())):
            locks.enter_context(change.updates.lock(change.index_dir))
        for change in changes:
            _settle_locked(Path(change.index_dir), change.updates)
        staged: list[tuple[Change, Staged]] = []
        try:
            for change in changes:
                staged.append((change, change.stage()))
        except BaseException:
            for change, state in staged:
                change.updates.discard(state)
            raise
        if len(staged) == 1:
            # One index needs no decision file: its publish is one atomic switch.
            change, state = staged[0]
            return {Path(change.index_dir): change.updates.publish(state)}
        decision = _decision_path(dirs)
        try:
            for change, state in staged:
                marker = {"generation": state.generation, "decision": str(decision.resolve())}
                atomic_write_text(Path(change.index_dir) / PENDING_NAME, json.dumps(marker) + "\n")
        except BaseException:
            for change, state in staged:
                (Path(change.index_dir) / PENDING_NAME).unlink(missing_ok=True)
                change.updates.discard(state)
            raise
        record = {"indexes": [[str(Path(change.index_dir).resolve()), state.generation] for change, state in staged]}
        try:
            atomic_write_text(decision, json.dumps(record) + "\n")  # the commit point
        except Exception:
            # The decision file is written by one rename: when writing it fails (a full disk), it does not exist
            # and the update is undone now. (A process that dies here leaves that to settle.)
            for change, _ in staged:
                _settle_locked(Path(change.index_dir), change.updates)
            raise
        counts = {}
        for change, state in staged:
            counts[Path(change.index_dir)] = change.updates.publish(state)
            (Path(change.index_dir) / PENDING_NAME).unlink()
        decision.unlink()
        return counts


def _decision_path(dirs: Sequence[Path]) -> Path:
    # Beside the indexes, under the folder they share (a sharded build's output root), on the same file system.
    common = Path(os.path.commonpath([str(path.resolve()) for path in dirs]))
    return common / f"{DECISION_PREFIX}{uuid.uuid4().hex}.json"


def settle(index_dir: Path, updates: Updates) -> None:
    """Finish or undo an interrupted update of ``index_dir`` before it is read (nothing to do, the usual case, costs
    one stat)."""
    if not (Path(index_dir) / PENDING_NAME).exists():
        return
    with updates.lock(index_dir):
        _settle_locked(Path(index_dir), updates)


def _settle_locked(index_dir: Path, updates: Updates) -> None:
    marker = index_dir / PENDING_NAME
    if not marker.exists():
        return
    pending = json.loads(marker.read_text(encoding="utf-8"))
    state = Staged(index_dir, pending["generation"])
    decision = Path(pending["decision"])
    if decision.exists():
        updates.publish(state)  # committed before the interruption: roll forward
    else:
        updates.discard(state)  # never committed: roll back
    marker.unlink()
    if decision.exists() and not _waiting_on(decision):
        decision.unlink(missing_ok=True)  # the last index of the update to settle removes the decision


def _waiting_on(decision: Path) -> bool:
    """Whether any index the decision names still has its marker (each settles on its own, on first read)."""
    try:
        record = json.loads(decision.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    for index_dir, _ in record["indexes"]:
        marker = Path(index_dir) / PENDING_NAME
        try:
            if json.loads(marker.read_text(encoding="utf-8"))["decision"] == str(decision):
                return True
        except FileNotFoundError:
            continue
    return False
