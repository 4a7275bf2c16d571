"""`slimtext.datasets`: the named datasets and user files, from Python.

>>> import slimtext
>>> "davidson" in slimtext.datasets.names()
True
>>> ds = slimtext.datasets.load(str(csv))  # a labelled CSV: seeded stratified 80/10/10
>>> ds.labels, {k: len(v) for k, v in ds.splits.items()}
(['neg', 'pos'], {'train': 128, 'dev': 16, 'test': 16})
"""

from __future__ import annotations

from slimtext.data.registry import DATASETS, DataConfig, TextDataset, load_dataset


def names() -> list[str]:
    """The named datasets (`slimtext data list`)."""
    return list(DATASETS)


def load(name: str, **options) -> TextDataset:
    """A dataset by name, a CSV/TSV/JSONL file, or hf:NAME; `options` are data settings
    (`text_col`, `label_col`, `labels`, `split_seed`, `max_examples`, `data_dir`). The result has
    `.labels` and `.splits` ({'train', 'dev', 'test'[, 'test_ood']} -> examples with id, text, label)."""
    return load_dataset(DataConfig(data=name, **options))
