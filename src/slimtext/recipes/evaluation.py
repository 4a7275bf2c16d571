"""Evaluating finished runs: per-source metrics of a union's test split, and a run evaluated on
another dataset (`slimtext evaluate RUN --data NAME|FILE`), its labels mapped onto the run's.

Label mapping, in this order (`map_labels`):
  1. the dataset's label names are (a subset of) the run's: compared by name, in the run's labels;
  2. both sides have the toxic view (`slimtext.data.union.TOXIC_VIEW`), e.g. a davidson run on
     tweeteval-offensive (`offensive` -> `toxic`): the run's probabilities are summed per view
     label and both sides are compared as `not toxic` / `toxic`;
  3. a user file labelled `0`, `1`, ...: the run's label of that index;
  otherwise a one-line error lists both label sets.

Which examples: a named dataset's split (default `test`), split with the run's split seed, so a
run trained on a union or on one of its sources is never tested on an example it trained on; a
user file: all its rows (`--split all` takes every split of a named dataset too).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from slimtext.config import RunConfig
from slimtext.data.registry import DataConfig, Example, TextDataset, load_dataset
from slimtext.data.union import TOXIC_VIEW, view_index
from slimtext.errors import SlimtextError, UnknownNameError
from slimtext.inference.base import decide
from slimtext.inference.calibration import scaled_softmax, scores
from slimtext.inference.predictor import load_predictor
from slimtext.rundir import RunDir
from slimtext.train.loop import logit_metrics
from slimtext.train.metrics import classification_metrics


def _metrics(probs: np.ndarray, labels: np.ndarray, n_labels: int) -> dict:
    """Loss (mean negative log-likelihood) and the classification metrics of probs (N, C)."""
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)  # (N,)
    return {"loss": float(-np.log(p).mean()), **classification_metrics(probs, labels, n_labels)}


def metrics_by_source(examples: list[Example], probs: np.ndarray, n_labels: int) -> dict[str, dict]:
    """{source: {"n", "loss", metrics}} over the examples of each source (probs (N, C) aligned)."""
    rows: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        rows[e.source].append(i)
    labels = np.array([e.label for e in examples])
    return {src: {"n": len(idx), **_metrics(probs[idx], labels[idx], n_labels)} for src, idx in rows.items()}


def test_by_source(data: TextDataset, split: str, probs: np.ndarray) -> dict:
    """`{"test_by_source": ...}` for a union's summary.json, `{}` for a single dataset."""
    if not data.sources:
        return {}
    return {"test_by_source": metrics_by_source(data.splits[split], probs, len(data.labels))}


@dataclass
class LabelMapping:
    labels: list[str]  # the label space the metrics are computed in
    from_run: list[int]  # run label index -> index in `labels`
    from_data: list[int]  # dataset label index -> index in `labels`
    how: str

    def probs(self, run_probs: np.ndarray) -> np.ndarray:
        """Run probabilities (N, C_run) summed into the mapped labels: (N, len(labels))."""
        m = np.zeros((len(self.from_run), len(self.labels)))  # (C_run, C)
        m[np.arange(len(self.from_run)), self.from_run] = 1.0
        return run_probs @ m


def map_labels(run_data: str, run_labels: list[str], data: str, data_labels: list[str]) -> LabelMapping:
    """How a dataset's labels compare with a run's (the rules in the module docstring)."""
    if set(data_labels) <= set(run_labels):
        return LabelMapping(list(run_labels), list(range(len(run_labels))),
                            [run_labels.index(lab) for lab in data_labels], "same label names")
    run_view, data_view = view_index(run_data, run_labels), view_index(data, data_labels)
    if run_view is not None and data_view is not None:
        return LabelMapping(list(TOXIC_VIEW.labels), run_view, data_view, f"{TOXIC_VIEW.name} view")
    is_file = Path(data).suffix.lower() in (".csv", ".tsv", ".jsonl")
    if is_file and all(lab.isdigit() and int(lab) < len(run_labels) for lab in data_labels):
        return LabelMapping(list(run_labels), list(range(len(run_labels))),
                            [int(lab) for lab in data_labels], "label index")
    raise SlimtextError(
        f"cannot compare the labels of {data} {data_labels} with those of the run (trained on {run_data}) "
        f"{run_labels}: use the run's label names, 0..{len(run_labels) - 1} in a file, or a dataset with a "
        f"{TOXIC_VIEW.name} view ({', '.join(TOXIC_VIEW.maps)})")


def split_examples(ds: TextDataset, split: str) -> list[Example]:
    if split == "all":
        return [e for examples in ds.splits.values() for e in examples]
    if split not in ds.splits:
        raise UnknownNameError("split", split, [*ds.splits, "all"])
    return ds.splits[split]


def eval_data_config(run_cfg: RunConfig, data: DataConfig | None, data_dir: str | None = None) -> DataConfig:
    """The run's own data config, or `data` with the run's split seed (and no `max_examples`)."""
    if data is None:
        return dataclasses.replace(run_cfg.data, data_dir=data_dir or run_cfg.data.data_dir)
    return dataclasses.replace(data, split_seed=run_cfg.data.split_seed, data_dir=data.data_dir or data_dir)


def evaluate_run(run: str | Path, data: DataConfig | None = None, split: str | None = None,
                 backend: str = "torch", data_dir: str | None = None, dataset: TextDataset | None = None,
                 predictor=None, threshold: float | None = None) -> dict:
    """Metrics of a finished run or of an export folder (any backend, TF-IDF included) on a split of its own dataset
    (`data` None: the run's split ids) or of another one (labels mapped, see above).

    split: default `test`, `all` for a user file. data_dir: where the data files are. threshold:
    overrides the run's decision threshold (calibration.json). `dataset` / `predictor`: already
    loaded ones (the cross-dataset matrix loads each once). Returns {"run", "dataset", "split",
    "n", "labels", "label_mapping", "backend", "loss", "accuracy", "macro_f1", "mcc", "roc_auc"}
    (argmax on the raw logits: on its own split, the numbers training reported), "temperature" and
    "calibrated" (ECE, Brier, NLL after it), for binary tasks "threshold", "positive_label" and
    "at_threshold", and "by_source" when the dataset is a union."""
    rd = RunDir(run)
    if not rd.is_finished() and not (rd.path / "export.json").is_file():
        raise SlimtextError(f"{rd.path} is neither a finished run (no summary.json) nor a folder "
                            "`slimtext export --out` wrote (no export.json)")
    saved = rd.read_config()
    saved.pop("tfidf", None)  # the TF-IDF baseline's own settings (recipes/baseline.py)
    run_cfg = RunConfig.from_dict(saved)
    run_labels = rd.read_json("labels.json")
    cfg = eval_data_config(run_cfg, data, data_dir)
    ds = dataset or load_dataset(cfg)
    is_file = Path(cfg.data).suffix.lower() in (".csv", ".tsv", ".jsonl")
    split = split or ("all" if is_file and data is not None else "test")
    examples = split_examples(ds, split)
    if not examples:
        raise SlimtextError(f"{ds.name} [{split}] holds no examples")
    mapping = map_labels(run_cfg.data.data, run_labels, ds.name, ds.labels)
    # the run's evaluation batch size: the same batches, hence the same numbers, as training's
    predictor = predictor or load_predictor(run, backend=backend, batch_size=run_cfg.train.eval_batch_size)
    logits = np.asarray(predictor.predict_logits([e.text for e in examples]), dtype=np.float32)  # (N, C)
    raw, calibrated = mapping.probs(scaled_softmax(logits)), mapping.probs(scaled_softmax(logits, predictor.temperature))
    mapped = [dataclasses.replace(e, label=mapping.from_data[e.label]) for e in examples]
    labels = np.array([e.label for e in mapped])
    if mapping.from_run == list(range(len(run_labels))) and len(mapping.labels) == len(run_labels):
        metrics, _ = logit_metrics(torch.from_numpy(logits), torch.from_numpy(labels), len(run_labels))
    else:
        metrics = _metrics(raw, labels, len(mapping.labels))
    out = {"run": str(run), "dataset": ds.name, "split": split, "n": len(examples), "labels": mapping.labels,
           "label_mapping": mapping.how, "backend": predictor.backend, **metrics,
           "temperature": predictor.temperature, "calibrated": scores(calibrated, labels)}
    if len(run_labels) == 2 and len(mapping.labels) == 2:
        t = predictor.threshold if threshold is None else threshold
        out |= {"threshold": t, "positive_label": predictor.positive_label}
        if t is not None:
            out["at_threshold"] = at_threshold(calibrated, labels, mapping.from_run[1], t)
    if ds.sources:
        out["by_source"] = metrics_by_source(mapped, calibrated, len(mapping.labels))
    return out


def at_threshold(probs: np.ndarray, labels: np.ndarray, positive: int, threshold: float) -> dict:
    """Binary metrics when the positive class is predicted at P(positive) >= threshold, probs (N, 2)
    (ROC-AUC does not depend on a threshold: see the argmax metrics)."""
    m = classification_metrics(probs, labels, 2, pred=decide(probs, threshold, positive))
    return {"threshold": float(threshold), **{k: v for k, v in m.items() if k != "roc_auc"}}
