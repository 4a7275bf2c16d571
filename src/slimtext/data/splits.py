"""Splits: official ones where a dataset has them, otherwise a seeded stratified split whose
example ids are saved (cache and run directory), so every model of a study sees the same examples."""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict

from slimtext.data.sources import cache_dir
from slimtext.errors import SlimtextError
from slimtext.rundir import atomic_write_json


def stratified_split(
    ids: list[str], labels: list[int], seed: int, fractions: dict[str, float]
) -> dict[str, list[str]]:
    """Split ids per class with a seeded shuffle; each class keeps the same proportions.
    Deterministic: depends only on (ids, labels, seed, fractions), not on input order."""
    if abs(sum(fractions.values()) - 1.0) > 1e-9:
        raise ValueError(f"fractions must sum to 1, got {fractions}")
    by_class: dict[int, list[str]] = defaultdict(list)
    for i, y in zip(ids, labels):
        by_class[y].append(i)
    out: dict[str, list[str]] = {name: [] for name in fractions}
    for y in sorted(by_class):
        members = sorted(by_class[y])
        random.Random(f"{seed}-{y}").shuffle(members)
        start = 0
        names = list(fractions)
        for k, name in enumerate(names):
            end = len(members) if k == len(names) - 1 else start + round(fractions[name] * len(members))
            out[name].extend(members[start:end])
            start = end
    return {name: sorted(v) for name, v in out.items()}


def fingerprint(ids: list[str], labels: list[int]) -> str:
    h = hashlib.sha256()
    for i, y in sorted(zip(ids, labels)):
        h.update(f"{i}\t{y}\n".encode())
    return h.hexdigest()[:16]


def saved_split(
    name: str, ids: list[str], labels: list[int], seed: int, fractions: dict[str, float]
) -> dict[str, list[str]]:
    """`stratified_split`, saved once under the cache and reused from there afterwards."""
    path = cache_dir() / "splits" / f"{name.replace('/', '_')}-{fingerprint(ids, labels)}-seed{seed}.json"
    if path.exists():
        saved = json.loads(path.read_text())
        known = set(ids)
        if saved.get("fractions") == fractions and all(i in known for v in saved["splits"].values() for i in v):
            return saved["splits"]
        raise SlimtextError(f"saved split {path} does not match the data; delete it to re-split")
    splits = stratified_split(ids, labels, seed, fractions)
    atomic_write_json(path, {"dataset": name, "seed": seed, "fractions": fractions, "splits": splits})
    return splits
