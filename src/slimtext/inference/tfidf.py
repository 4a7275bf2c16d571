"""A TF-IDF baseline run as a predictor, rebuilt from its saved arrays (no pickle).

`slimtext.recipes.baseline` saves `tfidf.safetensors` (coef (C' or 1, V), intercept, idf (V,),
classes, and the analyzer settings as metadata) and `tfidf_vocab.json` ({n-gram: column}). Here
the same features are computed again: counts of the vocabulary's word n-grams (scikit-learn's
`CountVectorizer` with that fixed vocabulary: the same tokenizer and lowercasing as training),
sublinear tf (1 + log count), times idf, rows L2-normalised; then the linear scores.

Logits: for a binary model scikit-learn's one score z belongs to `classes[1]`, and its
probability is sigmoid(z) = softmax([0, z]), so the logits are [0, z]; a multinomial model's
scores are its logits. A label the train split never held gets ABSENT (probability 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors import safe_open
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.preprocessing import normalize

from slimtext.errors import SlimtextError
from slimtext.inference.base import TFIDF_FILE, LabelPredictor
from slimtext.rundir import RunDir

VOCAB_FILE = "tfidf_vocab.json"
ABSENT = -1e4  # the logit of a label the classifier never saw in training


def tfidf_logits(scores: np.ndarray, classes: np.ndarray, num_labels: int) -> np.ndarray:
    """Logits (N, num_labels) from scikit-learn decision scores ((N,) binary or (N, C'))."""
    scores = np.asarray(scores, dtype=np.float64)
    out = np.full((scores.shape[0], num_labels), ABSENT)
    if len(classes) == 2:
        out[:, classes[0]] = 0.0
        out[:, classes[1]] = scores.reshape(-1)  # (N,)
    else:
        out[:, classes] = scores
    return out


class TfidfPredictor(LabelPredictor):
    """TF-IDF + logistic regression on numpy/scipy; safe to call from several threads."""

    backend = "tfidf"
    thread_safe = True

    def __init__(self, run_dir: str | Path):
        run = RunDir(run_dir)
        path = run.path / TFIDF_FILE
        if not path.exists():
            raise SlimtextError(f"{run.path}: no {TFIDF_FILE} (is it a TF-IDF baseline run?)")
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        self.coef, self.intercept = t["coef"].astype(np.float64), t["intercept"].astype(np.float64)
        self.idf, self.classes = t["idf"].astype(np.float64), t["classes"].astype(np.int64)
        self.labels: list[str] = run.read_json("labels.json")
        ngram_max = int(meta.get("ngram_max") or (run.read_config().get("tfidf") or {}).get("ngram_max", 1))
        self.counter = CountVectorizer(ngram_range=(1, ngram_max), lowercase=True,
                                       vocabulary=run.read_json(VOCAB_FILE), dtype=np.float64)
        if len(self.counter.vocabulary) != len(self.idf):
            raise SlimtextError(f"{run.path}: {VOCAB_FILE} and {TFIDF_FILE} disagree on the vocabulary size")
        self.name = f"tfidf/logreg ({run.path.name})"
        self.use_calibration(run.path)

    def features(self, texts: list[str]):
        """TF-IDF rows (N, V), sparse, L2-normalised (as `TfidfVectorizer(sublinear_tf=True)`)."""
        x = self.counter.transform(list(texts)).tocsr()  # (N, V) counts
        x.data = 1.0 + np.log(x.data)
        x.data *= self.idf[x.indices]
        return normalize(x)

    def predict_logits(self, texts: list[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, len(self.labels)))
        scores = self.features(texts) @ self.coef.T + self.intercept  # (N, C' or 1)
        return tfidf_logits(scores, self.classes, len(self.labels))
