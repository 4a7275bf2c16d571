"""The Python API: what the `slimtext` command line does, as functions (docs/api.md).

    slimtext.train(**config) -> Run          fine-tune one classifier, write a run directory
    slimtext.distill(teacher, **config) -> Run
    slimtext.load(run) -> Predictor          predict / predict_proba (/ explain where the backend has it)
    slimtext.evaluate(run, data=None) -> dict
    slimtext.datasets.load(name) -> TextDataset

`config` takes the command line's option names as keywords (`data="davidson"`, `model="minilm-l6"`,
`method="lora"`, `epochs=1`, `lora_rank=4`, `rnn_hidden_dim=64`, ...) or whole sections as dicts
(`train={"epochs": 1}`); unknown names are an error that lists the valid ones.

`SLIMTEXT_QUIET=1` silences progress bars and log lines, as `quiet=True` does.

Example (`csv` is a tiny labelled CSV, 160 rows 'good movie,pos' / 'awful film,neg' as written
in docs/api.md; `tmp` a fresh folder):

>>> import slimtext
>>> run = slimtext.train(data=str(csv), model="lstm", epochs=8, lr=1e-2, out=tmp / "run", quiet=True)
>>> run.summary["model"], run.summary["test_split"], "macro_f1" in run.summary["test"]
('lstm', 'test', True)
>>> clf = run.predictor()
>>> clf.labels
['neg', 'pos']
>>> clf.predict(["great movie", "awful film"])
['pos', 'neg']
>>> clf.predict_proba(["great movie"]).shape
(1, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from slimtext.config import SECTIONS, RunConfig
from slimtext.errors import SlimtextError, UnknownNameError
from slimtext.rundir import RunDir
from slimtext.train.progress import is_quiet


@dataclass
class Run:
    """A finished run directory: `path`, its `summary` (summary.json) and `predictor()`."""

    path: Path

    @property
    def summary(self) -> dict:
        run = RunDir(self.path)
        if not run.is_finished():
            raise SlimtextError(f"{self.path} is not a finished run (no summary.json)")
        return run.read_summary()

    def predictor(self, backend: str = "torch"):
        """`slimtext.load(self.path, backend)`."""
        return load(self.path, backend)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


def run_config(**config) -> RunConfig:
    """A RunConfig from CLI-style keywords (`epochs=1`, `lora_rank=4`) or section dicts.

    >>> cfg = run_config(model="minilm-l6", method="lora", lora_rank=4, train={"epochs": 1})
    >>> cfg.model.model, cfg.lora.rank, cfg.train.epochs
    ('minilm-l6', 4, 1)
    >>> run_config(epoch=1)
    Traceback (most recent call last):
    ...
    slimtext.errors.UnknownNameError: unknown option 'epoch'; valid options: ... Did you mean 'epochs'?
    """
    options = {prefix + f.name: (section, f.name)
               for section, (klass, prefix) in SECTIONS.items() for f in fields(klass)}
    d: dict = {}
    for key, value in config.items():
        if key in SECTIONS and isinstance(value, dict):
            d.setdefault(key, {}).update(value)
        elif key in options:
            section, name = options[key]
            d.setdefault(section, {})[name] = str(value) if isinstance(value, Path) else value
        else:
            raise UnknownNameError("option", key, [*SECTIONS, *options])
    return RunConfig.from_dict(d)


def train(out: str | Path | None = None, quiet: bool = False, **config) -> Run:
    """Fine-tune one classifier (as `slimtext train`) and return its finished `Run`."""
    from slimtext.recipes.finetune import default_out  # noqa: PLC0415
    from slimtext.recipes.finetune import train as finetune  # noqa: PLC0415

    cfg = run_config(**config)
    out = Path(out) if out is not None else default_out(cfg)
    finetune(cfg, out, quiet=is_quiet(quiet))
    return Run(out)


def distill(teacher: str | Path, out: str | Path | None = None, quiet: bool = False, **config) -> Run:
    """Distil the finished run (or HF classifier folder) `teacher` into a student (as
    `slimtext distill`): `student_layers="odd"` for a layer-selected transformer, or
    `student="lstm"` for DistilRNN; returns the student's `Run`.

    >>> student = distill(run.path, student="gru", epochs=2, out=tmp / "student", quiet=True)
    >>> student.summary["student"], student.summary["teacher_model"]
    ('gru', 'lstm')
    """
    import datetime as dt  # noqa: PLC0415

    from slimtext.recipes.distill import distill as run_distill  # noqa: PLC0415

    cfg = run_config(**config)
    cfg.distill.teacher = str(teacher)
    if out is None:  # runs/distill-<teacher>-<student>-s<seed>-<time>, like the CLI's default
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        d = cfg.distill
        kind = d.student if d.student != "layers" else "L" + d.student_layers.replace(",", ".")
        out = Path("runs") / f"distill-{Path(str(teacher)).name}-{kind}-s{cfg.train.seed}-{stamp}"
    run_distill(cfg, Path(out), quiet=is_quiet(quiet))
    return Run(Path(out))


def load(run: str | Path | Run, backend: str = "torch"):
    """A predictor for a finished run: `.labels`, `.predict(text or texts)`,
    `.predict_proba(texts) -> (N, C)`, and `.explain(...)` where the backend provides it.
    `backend`: torch, torch-int8, onnx, onnx-int8 or auto (see `slimtext predict --help`).

    >>> slimtext.load(run).predict("good story")
    'pos'
    """
    from slimtext.inference.predictor import load_predictor  # noqa: PLC0415

    path = run.path if isinstance(run, Run) else Path(run)
    if not RunDir(path).exists():
        raise SlimtextError(f"{path} is not a run directory (no config.yaml)")
    return load_predictor(path, backend=backend)


def evaluate(run: str | Path | Run, data: str | None = None, split: str = "test", **data_options) -> dict:
    """Metrics of a finished run on `split` of its own dataset, or of `data` (a dataset name or a
    labelled CSV/TSV/JSONL file whose labels are among the run's; `split="all"` uses every row).
    `data_options` are data settings such as `text_col="review"`.

    >>> m = evaluate(run)
    >>> m["split"], m["n"] == len(slimtext.datasets.load(str(csv)).splits["test"])
    ('test', True)
    >>> evaluate(run, data=str(csv), split="all")["n"]
    160
    """
    import numpy as np  # noqa: PLC0415

    from slimtext.data.registry import DataConfig, load_dataset  # noqa: PLC0415
    from slimtext.train.metrics import classification_metrics  # noqa: PLC0415

    path = run.path if isinstance(run, Run) else Path(run)
    predictor = load(path)
    if data is None:
        dcfg = RunConfig.from_dict(RunDir(path).read_config()).data
        for key, value in data_options.items():
            setattr(dcfg, key, value)
    else:
        dcfg = DataConfig(data=data, **data_options)
    ds = load_dataset(dcfg)
    if split == "all":
        examples = [e for part in ds.splits.values() for e in part]
    elif split in ds.splits:
        examples = ds.splits[split]
    else:
        raise UnknownNameError("split", split, [*ds.splits, "all"])
    unknown = sorted(set(ds.labels) - set(predictor.labels))
    if unknown:
        raise SlimtextError(f"labels {unknown} of {dcfg.data} are not the run's {predictor.labels}")
    gold = np.array([predictor.labels.index(ds.labels[e.label]) for e in examples])
    probs = predictor.predict_proba([e.text for e in examples])
    return {"split": split, "n": len(examples),
            **classification_metrics(probs, gold, len(predictor.labels))}
