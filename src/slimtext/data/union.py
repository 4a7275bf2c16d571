"""Label views and unions of datasets.

A *view* says what a dataset's labels mean for one shared question. The `toxic` view is binary,
labels `["not toxic", "toxic"]`; each named dataset that can answer it declares, label by label,
how (`TOXIC_VIEW.maps`): davidson's `toxic` (hate speech or offensive language) is toxic,
tweeteval-offensive's `offensive` is toxic, and so on. A user file answers it when every one of
its label names appears in one of those declarations (or already is a view label).

A *union*, `--data davidson+tweeteval-offensive` (any `+`-joined list of named datasets or user
files), is built from its sources, each loaded and split on its own (its official or saved seeded
splits, `max_examples` per source), so every source's test split is exactly its standalone test
split and no example moves between train and test:

- example ids get the source as a prefix (`davidson/123`) and `Example.source` names it;
- labels stay as they are when every source has the same label list, otherwise every source is
  mapped through the toxic view (a clear error names the sources without one);
- splits are concatenated in source order; then train and dev drop any example whose text (up to
  surrounding whitespace) is also in the union's test split, so no text is both trained on and
  tested on, across sources too (a note counts them).

`load_union(cfg, load_one)` takes the single-dataset loader as an argument, so this module does
not import the registry (which calls it for names holding a `+`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from slimtext.errors import SlimtextError


@dataclass(frozen=True)
class View:
    name: str
    labels: list[str]
    maps: dict[str, dict[str, str]]  # named dataset -> {its label name: view label name}


TOXIC_VIEW = View("toxic", ["not toxic", "toxic"], {
    "davidson": {"not toxic": "not toxic", "toxic": "toxic"},
    "davidson-3class": {"hate speech": "toxic", "offensive language": "toxic", "neither": "not toxic"},
    "tweeteval-offensive": {"not offensive": "not toxic", "offensive": "toxic"},
})


def _is_file(name: str) -> bool:
    return Path(name).suffix.lower() in (".csv", ".tsv", ".jsonl")


def view_index(dataset: str, labels: list[str], view: View = TOXIC_VIEW) -> list[int] | None:
    """For each label index of `dataset`, the index of its view label; None when the dataset has
    no such view. Named datasets use their declaration; a union (or any dataset) whose labels are
    view labels maps by name; a user file maps when all its label names are declared somewhere."""
    if dataset in view.maps and set(labels) == set(view.maps[dataset]):
        by_name = view.maps[dataset]
    elif set(labels) <= set(view.labels):
        by_name = {lab: lab for lab in labels}
    elif _is_file(dataset):
        known = {k: v for m in view.maps.values() for k, v in m.items()}
        if not set(labels) <= set(known):
            return None
        by_name = known
    else:
        return None
    return [view.labels.index(by_name[lab]) for lab in labels]


def union_parts(name: str) -> list[str] | None:
    """The dataset names of a union `A+B+...`, or None when `name` is one dataset (a file whose
    name holds '+' included)."""
    if "+" not in name or Path(name).is_file():
        return None
    return [n.strip() for n in name.split("+")]


def union_id(source: str, example_id: str) -> str:
    """An example's id in a union: its source's name, '/', its own id."""
    return f"{source}/{example_id}"


def load_union(cfg, load_one):
    """The union `cfg.data` = `A+B+...` of datasets loaded by `load_one(DataConfig)` (see above)."""
    names = union_parts(cfg.data)
    if len(names) < 2 or not all(names):
        raise SlimtextError(f"{cfg.data!r}: a union is two or more datasets joined by '+', e.g. davidson+tweeteval-offensive")
    if len(set(names)) != len(names):
        raise SlimtextError(f"{cfg.data!r} names a dataset twice")
    return combine("+".join(names), [load_one(dataclasses.replace(cfg, data=n)) for n in names])


def combine(name: str, parts: list):
    """One dataset from several loaded ones (`TextDataset`s), as described in the module docstring."""
    first = parts[0]
    if all(p.labels == first.labels for p in parts):
        labels, maps = list(first.labels), [list(range(len(first.labels)))] * len(parts)
    else:
        maps = [view_index(p.name, p.labels) for p in parts]
        missing = [p.name for p, m in zip(parts, maps) if m is None]
        if missing:
            described = "; ".join(f"{p.name}: {p.labels}" for p in parts)
            raise SlimtextError(
                f"{name}: the sources' labels differ ({described}) and {', '.join(missing)} "
                f"{'has' if len(missing) == 1 else 'have'} no '{TOXIC_VIEW.name}' view to map them into "
                f"(datasets with one: {', '.join(TOXIC_VIEW.maps)})")
        labels = list(TOXIC_VIEW.labels)
    splits: dict[str, list] = {}
    for p, m in zip(parts, maps):
        for split, examples in p.splits.items():
            splits.setdefault(split, []).extend(
                dataclasses.replace(e, id=union_id(p.name, e.id), label=m[e.label], source=p.name) for e in examples)
    notes = [f"{p.name}: {n}" for p in parts for n in p.notes]
    tested = {e.text.strip() for e in splits.get("test", [])}
    for split in ("train", "dev"):
        dropped = Counter(e.source for e in splits.get(split, []) if e.text.strip() in tested)
        if dropped:
            splits[split] = [e for e in splits[split] if e.text.strip() not in tested]
            notes.append(f"{split}: dropped {sum(dropped.values())} examples whose text is in the test split "
                         f"({', '.join(f'{k} {v}' for k, v in dropped.items())})")
    order = ["train", "dev", "test", "test_ood"]
    return dataclasses.replace(
        first, name=name, labels=labels, splits={k: splits[k] for k in order if k in splits}, notes=notes,
        test_source="; ".join(f"{p.name}: {p.test_source}" for p in parts), sources=[p.name for p in parts])
