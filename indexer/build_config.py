"""``build.toml``: what an index build job builds, from which collection, in shards of what size.

```toml
output = "builds"                  # an index root: indexes land in OUTPUT/<dataset>/<kind>-<digest>
[collection]
dataset = "scifact"                # a folder, a name under --data-dir / $BRAID_DATA_DIR, or a BEIR name
shard_size = 1000                  # documents per shard: the unit of encoding, checkpointing and Ray tasks
shards = 1                         # serving shards (document partitions), each a full index root of its own:
                                   # OUTPUT/shard-<i>-of-<N>; encoded shard j goes to serving shard j mod N
[[index]]
kind = "bm25"
[[index]]
kind = "multivector"               # every other key is a build parameter of that kind
pool_factor = 2
```
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from braid.common.errors import BraidError
from braid.indexer.kinds import INDEX_KINDS

TOP_KEYS = {"output", "collection", "index"}
MAX_SERVING_SHARDS = 256
COLLECTION_KEYS = {"dataset", "data_dir", "shard_size", "shards"}


@dataclass(frozen=True)
class IndexRequest:
    kind: str
    params: dict[str, Any]


@dataclass(frozen=True)
class BuildConfig:
    dataset: str
    indexes: tuple[IndexRequest, ...]
    output: Path = Path("indexes")
    shard_size: int = 1000
    data_dir: str | None = None
    source: str = "<config>"
    shards: int = 1

    def digest(self) -> str:
        raw = {"indexes": [(r.kind, r.params) for r in self.indexes], "shard_size": self.shard_size}
        return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12]


def _table(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise BraidError(f"{where} must be a table")
    return value


def parse_build_config(raw: dict, source: str) -> BuildConfig:
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise BraidError(f"{source}: unknown key(s) {unknown} (allowed: {sorted(TOP_KEYS)})")
    collection = _table(raw.get("collection"), f"{source}: [collection]")
    unknown = sorted(set(collection) - COLLECTION_KEYS)
    if unknown:
        raise BraidError(f"{source}: unknown [collection] key(s) {unknown} (allowed: {sorted(COLLECTION_KEYS)})")
    dataset = collection.get("dataset")
    if not isinstance(dataset, str) or not dataset.strip():
        raise BraidError(f"{source}: [collection] needs dataset = a folder or dataset name")
    shard_size = collection.get("shard_size", 1000)
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise BraidError(f"{source}: shard_size must be an integer >= 1, got {shard_size!r}")
    shards = collection.get("shards", 1)
    if not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards <= MAX_SERVING_SHARDS:
        raise BraidError(f"{source}: shards must be an integer from 1 to {MAX_SERVING_SHARDS}, got {shards!r}")
    tables = raw.get("index")
    if not isinstance(tables, list) or not tables:
        raise BraidError(f"{source}: give at least one [[index]] table with a kind")
    requests = []
    for number, table in enumerate(tables, 1):
        table = dict(_table(table, f"{source}: [[index]] #{number}"))
        kind = table.pop("kind", None)
        if kind not in INDEX_KINDS:
            raise BraidError(
                f"{source}: [[index]] #{number}: unknown kind {kind!r} (allowed: {', '.join(sorted(INDEX_KINDS))})"
            )
        try:
            params = INDEX_KINDS[kind].validate(table)
        except BraidError as error:
            raise BraidError(f"{source}: [[index]] #{number}: {error}") from None
        request = IndexRequest(kind, params)
        if request in requests:
            raise BraidError(f"{source}: [[index]] #{number} repeats an earlier {kind} index with the same parameters")
        requests.append(request)
    output = raw.get("output", "indexes")
    if not isinstance(output, str) or not output.strip():
        raise BraidError(f"{source}: output must be a folder path")
    data_dir = collection.get("data_dir")
    return BuildConfig(dataset.strip(), tuple(requests), Path(output), shard_size, data_dir, source, shards)


def load_build_config(path: Path) -> BuildConfig:
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BraidError(f"build config {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BraidError(f"cannot read build config {path}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise BraidError(f"{path}: invalid TOML: {error}") from None
    return parse_build_config(raw, str(path))
