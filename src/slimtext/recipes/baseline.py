"""The TF-IDF baseline: word n-gram TF-IDF features and a logistic-regression classifier
(scikit-learn), trained on the same splits as every other run and written as a run directory
with the same summary keys, so reports compare it like any other method.

It has no epochs, hence no metrics.jsonl. Weights (coefficients, intercept, idf; the analyzer
settings as metadata) are saved as `tfidf.safetensors`, the vocabulary as `tfidf_vocab.json`;
there is no `model.safetensors`, so `load_model` never takes it for a neural classifier, and
`load_predictor` rebuilds it as a `slimtext.inference.tfidf.TfidfPredictor` (no pickle). As
after neural training, a temperature and (binary tasks) a decision threshold are fitted on dev
(`calibration.json`, `--threshold-for`).

    python -m slimtext.recipes.baseline --data davidson --seed 0 --out runs/tfidf-s0

References: Salton & Buckley 1988 (term weighting); scikit-learn `TfidfVectorizer`,
`LogisticRegression`.
"""

from __future__ import annotations

import copy
import datetime as dt
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from slimtext.config import RunConfig, with_config_options
from slimtext.data.registry import load_dataset
from slimtext.errors import SlimtextError
from slimtext.inference.base import TFIDF_FILE
from slimtext.inference.calibration import parse_rule
from slimtext.inference.tfidf import VOCAB_FILE, tfidf_logits
from slimtext.recipes.evaluation import test_by_source
from slimtext.recipes.finetune import calibration_summary, write_predictions, write_summary
from slimtext.rundir import RunDir, atomic_save_safetensors
from slimtext.train.metrics import PeakMemory, classification_metrics, confusion


@dataclass
class TfidfConfig:
    max_features: int = field(default=50_000, metadata={"help": "keep the most frequent n-grams"})
    ngram_max: int = field(default=1, metadata={"help": "word n-grams from 1 to this"})
    min_df: int = field(default=1, metadata={"help": "drop n-grams seen in fewer train texts"})
    C: float = field(default=16.0, metadata={"help": "inverse L2 regularisation strength"})
    class_weight: str | None = field(default="balanced", metadata={"help": "None or balanced"})


def _log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)  # (N,)
    return float(-np.log(p).mean())


def _latency_ms(pipe, texts: list[str], n: int = 32) -> dict:
    times = []
    for t in texts[:n]:
        t0 = time.perf_counter()
        pipe.predict_proba([t])
        times.append((time.perf_counter() - t0) * 1000)
    return {
        "single_p50_ms": float(np.percentile(times, 50)),
        "single_p99_ms": float(np.percentile(times, 99)),
    }


def train_baseline(
    cfg: RunConfig,
    out: Path,
    tfidf: TfidfConfig | None = None,
    quiet: bool = False,
    argv: list[str] | None = None,
) -> dict:
    """Fit TF-IDF + logistic regression on cfg.data's train split; write a finished run dir."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: PLC0415
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
    from sklearn.pipeline import make_pipeline  # noqa: PLC0415

    tfidf = tfidf or TfidfConfig()
    run = RunDir(out)
    if run.exists():
        raise SlimtextError(f"{run.path} already holds a run; choose another --out (or delete it)")
    parse_rule(cfg.train.threshold_for)
    data = load_dataset(cfg.data)
    n_labels = len(data.labels)
    cfg = copy.deepcopy(cfg)  # the caller's config stays as it was
    cfg.model.model, cfg.model.method = "tfidf", "logreg"
    run.create({**cfg.to_dict(), "tfidf": asdict(tfidf)}, argv)
    run.write_json("labels.json", data.labels)
    run.write_json("splits.json", data.split_ids())

    pipe = make_pipeline(
        TfidfVectorizer(
            ngram_range=(1, tfidf.ngram_max),
            max_features=tfidf.max_features,
            min_df=tfidf.min_df,
            sublinear_tf=True,
            lowercase=True,
        ),
        LogisticRegression(
            C=tfidf.C, max_iter=2000, class_weight=tfidf.class_weight, random_state=cfg.train.seed
        ),
    )
    train_texts = data.texts("train")
    train_labels = np.array([e.label for e in data.splits["train"]])
    if len(set(train_labels.tolist())) < 2:
        raise SlimtextError(f"{data.name}: the train split has a single label; nothing to learn")
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        pipe.fit(train_texts, train_labels)
    train_seconds = time.perf_counter() - t0

    def full_probs(texts: list[str]) -> np.ndarray:  # (N, C) even when train missed a class
        probs = np.zeros((len(texts), n_labels))
        probs[:, pipe.classes_] = pipe.predict_proba(texts)
        return probs

    evals, conf, ms, logits, gold, probs_of = {}, {}, {}, {}, {}, {}
    for name, examples in data.splits.items():
        if name == "train":
            continue
        gold[name] = labels = np.array([e.label for e in examples])
        texts = [e.text for e in examples]
        t0 = time.perf_counter()
        probs = full_probs(texts)
        ms[name] = (time.perf_counter() - t0) * 1000 / max(1, len(examples))
        logits[name] = tfidf_logits(pipe.decision_function(texts), pipe.classes_, n_labels)
        evals[name] = {
            "loss": _log_loss(probs, labels),
            **classification_metrics(probs, labels, n_labels),
        }
        conf[name], probs_of[name] = confusion(probs, labels, n_labels), probs
    test = "test" if "test" in evals else "dev"

    vec, clf = pipe.named_steps["tfidfvectorizer"], pipe.named_steps["logisticregression"]
    params = int(clf.coef_.size + clf.intercept_.size)
    atomic_save_safetensors(  # not model.safetensors: that name means "load_model can rebuild it"
        run.path / TFIDF_FILE,
        {
            "coef": torch.from_numpy(clf.coef_.astype(np.float32)),  # (C or 1, V)
            "intercept": torch.from_numpy(clf.intercept_.astype(np.float32)),
            "idf": torch.from_numpy(vec.idf_.astype(np.float32)),  # (V,)
            "classes": torch.from_numpy(clf.classes_.astype(np.int64)),
        },
        metadata={"ngram_max": str(tfidf.ngram_max), "lowercase": "true", "sublinear_tf": "true",
                  "norm": "l2"},  # what slimtext.inference.tfidf rebuilds
    )
    run.write_json(VOCAB_FILE, {k: int(v) for k, v in vec.vocabulary_.items()})
    summary = {
        "dataset": data.name,
        "model": "tfidf",
        "method": "logreg",
        "labels": data.labels,
        "seed": cfg.train.seed,
        "best_epoch": None,
        "best_dev_macro_f1": (evals.get("dev") or {}).get("macro_f1"),
        "train_seconds": round(train_seconds, 3),
        "peak_memory_mb": mem.peak_mb,
        "epochs_run": None,
        "total_params": params,
        "trainable_params": params,
        "reduction_pct": 0.0,
        "final_train_loss": _log_loss(full_probs(train_texts), train_labels),
        "dev": evals.get("dev"),
        "test": evals.get(test),
        "test_split": test,
        "splits": evals,
        "confusion": conf,
        **calibration_summary(run, logits["dev"], gold["dev"], logits[test], gold[test], data.labels,
                              cfg.train.threshold_for),
        **test_by_source(data, test, probs_of[test]),
        "inference_ms_per_example": round(ms[test], 4),
        **_latency_ms(pipe, [e.text for e in data.splits[test]]),
        "vocabulary_size": len(vec.vocabulary_),
        "lora_layers": [],
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
    }
    write_predictions(run, data.splits[test], torch.from_numpy(probs_of[test]), test)  # argmax = the logits'
    write_summary(run, summary)
    if not quiet:
        t = summary["test"]
        print(
            f"tfidf+logreg on {data.name} ({test}): accuracy {t['accuracy']:.4f}  "
            f"macro-F1 {t['macro_f1']:.4f}  MCC {t['mcc']:.4f}  ({train_seconds:.1f}s, "
            f"{params:,} params)",
            file=sys.stderr,
        )
    return summary


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
@with_config_options("data")
def main(
    cfg: RunConfig,
    out: Annotated[Path, typer.Option(help="run directory to create")],
    seed: Annotated[int, typer.Option(help="random_state of the classifier")] = 0,
    max_features: Annotated[int, typer.Option(help="keep the most frequent n-grams")] = 50_000,
    ngram_max: Annotated[int, typer.Option(help="word n-grams from 1 to this")] = 1,
    c: Annotated[float, typer.Option("--C", help="inverse L2 regularisation")] = 16.0,
    class_weight: Annotated[str, typer.Option(help="none or balanced")] = "balanced",
    threshold_for: Annotated[str, typer.Option(help="binary tasks: the decision threshold chosen on dev, by macro_f1 or precision=P")] = "macro_f1",
    quiet: bool = False,
):
    """Train the TF-IDF + logistic-regression baseline into a run directory."""
    cfg.train.seed, cfg.train.threshold_for = seed, threshold_for
    weight = None if class_weight.lower() == "none" else class_weight
    tfidf = TfidfConfig(max_features=max_features, ngram_max=ngram_max, C=c, class_weight=weight)
    train_baseline(
        cfg,
        out,
        tfidf,
        quiet=quiet,
        argv=[sys.executable, "-m", "slimtext.recipes.baseline", *sys.argv[1:]],
    )


if __name__ == "__main__":
    try:
        app()
    except SlimtextError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
