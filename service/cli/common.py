"""Arguments and parsing shared by several subcommands."""

from __future__ import annotations

import argparse
import tomllib
from typing import Any

from braid.common.errors import BraidError


def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder holding datasets by name (default: $BRAID_DATA_DIR, else ./data)")
    parser.add_argument("--index-dir", default="indexes", help="where indexes are built and found (default: indexes)")
    parser.add_argument("--threads", type=positive_int, default=None, help="worker threads (default: all cores)")
    parser.add_argument(
        "--memory-budget",
        metavar="SIZE",
        help="refuse an index build whose memory estimate exceeds SIZE, e.g. 3GB (default: $BRAID_MEMORY_BUDGET)",
    )


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """Parse repeated ``--param key=value``; values are TOML scalars (1.2, true, "text"), else strings."""
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise BraidError(f"--param expects key=value, got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        params[key.strip()] = value
    return params


def pair_splits(datasets: list[str], splits: list[str] | None, default: str = "train") -> list[str]:
    """One ``--split`` for every ``--dataset``, or one per dataset (default: ``default`` for all)."""
    chosen = splits or [default]
    if len(chosen) == 1:
        chosen = chosen * len(datasets)
    if len(chosen) != len(datasets):
        raise BraidError(f"give one --split for all datasets or one per --dataset ({len(datasets)})")
    return chosen
