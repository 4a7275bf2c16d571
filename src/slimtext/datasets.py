"""`slimtext.datasets`: the named datasets and user files, from Python.

>>> import slimtext
>>> "davidson" in slimtext.datasets.names()
True
>>> ds = slimtext.datasets.load(str(csv))  # a labelled CSV: seeded stratified 80/10/10
>>> ds.labels, {k: len(v) for k, v in ds.splits.items()}
(['neg', 'pos'], {'train': 128, 'dev': 16, 'test': 16})
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from slimtext.data import formats
from slimtext.data.registry import DATASETS, DataConfig, TextDataset, load_dataset
from slimtext.errors import DataFormatError, SlimtextError


def names() -> list[str]:
    """The named datasets (`slimtext data list`)."""
    return list(DATASETS)


def load(name: str, **options) -> TextDataset:
    """A dataset by name, a CSV/TSV/JSONL file, or hf:NAME; `options` are data settings
    (`text_col`, `label_col`, `labels`, `split_seed`, `max_examples`, `data_dir`). The result has
    `.labels` and `.splits` ({'train', 'dev', 'test'[, 'test_ood']} -> examples with id, text, label)."""
    return load_dataset(DataConfig(data=name, **options))


def _raw_line(path: Path, line: int) -> str:
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for i, text in enumerate(f, start=1):
            if i == line:
                return text.rstrip("\r\n")
    return ""


def _file_lines(path: Path, text_col: str, label_col: str, examples: int) -> tuple[list[str], DataFormatError | None]:
    """Rows of a user file up to its first malformed row: counts per label, a few examples."""
    rows, error = [], None
    try:
        for row in formats.read_table(path, text_col, label_col):
            rows.append(row)
    except DataFormatError as e:
        error = e
    counts = Counter(r.label for r in rows)
    empty = sum(1 for r in rows if not r.text.strip())
    lines = [f"{path}: {len(rows)} rows" + (" before the first bad row" if error else "")
             + f" (text column {text_col!r}, label column {label_col!r})",
             "  labels: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: str(kv[0])))]
    if empty:
        lines.append(f"  {empty} rows with empty text (dropped when training)")
    lines += [f"  line {r.line} [{r.label}] {r.text[:100]!r}" for r in rows[:examples]]
    if error is not None:
        lines.append(f"  first bad row: {error}")
        lines.append(f"    {_raw_line(path, error.line)[:200]!r}")
    return lines, error


def describe(name: str, examples: int = 3, **options) -> tuple[list[str], SlimtextError | None]:
    """What `slimtext data show` prints: a dataset's labels, split sizes with counts per label and
    a few examples; for a user CSV/TSV/JSONL file also its raw label counts and its first bad row.
    Returns (lines, error): `error` is the first malformed row or label problem, None if none.

    >>> lines, error = describe(str(csv), examples=1)
    >>> error is None, lines[1]
    (True, '  labels: neg: 80, pos: 80')
    >>> [line.split()[0] for line in lines[-3:]]
    ['train', 'dev', 'test']
    """
    lines: list[str] = []
    cfg = DataConfig(data=name, **options)
    path = Path(name)
    user_file = path.suffix.lower() in (".csv", ".tsv", ".jsonl") and path.is_file()
    if user_file:
        lines, error = _file_lines(path, cfg.text_col, cfg.label_col, examples)
        if error is not None:
            return lines, error
    try:
        ds = load_dataset(cfg)
    except SlimtextError as e:  # e.g. a label outside --labels: show what was read, then the error
        if not lines:
            raise
        return lines, e
    lines.append(f"{ds.name}: labels {ds.labels}")
    for split, ex in ds.splits.items():
        counts = Counter(ds.labels[e.label] for e in ex)
        lines.append(f"  {split:9s} {len(ex):6d}  " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
        for source in ds.sources:  # a union: the same counts per source
            counts = Counter(ds.labels[e.label] for e in ex if e.source == source)
            lines.append(f"    {source:20s} {sum(counts.values()):6d}  "
                         + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    if not user_file:  # a user file's examples are listed above, with their line numbers
        lines += [f"  [{ds.labels[e.label]}] {e.text[:100]!r}" for e in ds.splits["train"][:examples]]
    lines += [f"  note: {note}" for note in ds.notes]
    return lines, None
