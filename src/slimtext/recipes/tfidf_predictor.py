"""A finished TF-IDF baseline run (`slimtext.recipes.baseline`) loaded for prediction, so
cross-dataset evaluation treats it like any other run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slimtext.rundir import RunDir, load_safetensors


class TfidfPredictor:
    """A finished baseline run rebuilt from `tfidf.safetensors` and `tfidf_vocab.json`, with the
    predictor interface (`labels`, `predict_proba(texts) -> (N, C)`) cross-dataset evaluation uses."""

    backend = "tfidf"

    def __init__(self, run_dir: Path):
        from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: PLC0415

        run = RunDir(run_dir)
        tensors = load_safetensors(run.path / "tfidf.safetensors")
        settings = run.read_config().get("tfidf", {})
        self.labels = run.read_json("labels.json")
        self.vec = TfidfVectorizer(vocabulary=run.read_json("tfidf_vocab.json"), sublinear_tf=True, lowercase=True,
                                   ngram_range=(1, settings.get("ngram_max", 1)))
        self.vec.idf_ = tensors["idf"].double().numpy()
        self.coef = tensors["coef"].double().numpy()  # (C or 1, V)
        self.intercept = tensors["intercept"].double().numpy()  # (C or 1,)
        self.classes = tensors["classes"].numpy()

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        scores = self.vec.transform(texts) @ self.coef.T + self.intercept  # (N, C or 1)
        if scores.shape[1] == 1:  # binary logistic regression: one score for the second class
            scores = np.concatenate([np.zeros_like(scores), scores], axis=1)  # (N, 2)
        z = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs = np.zeros((len(texts), len(self.labels)))
        probs[:, self.classes] = z / z.sum(axis=1, keepdims=True)
        return probs
