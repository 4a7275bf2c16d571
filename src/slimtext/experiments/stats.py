"""Verdicts with confidence: is run group A better than group B, and by how much?

Two complementary views of the same comparison, both paired:
- **Paired bootstrap over test examples, pooled across seeds** (Koehn 2004; Dror et al. 2018).
  Runs of A and B are paired by seed; every run wrote `test_predictions.json` (example ids, gold
  labels, argmax predictions; `recipes.finetune.write_predictions`). One bootstrap draw resamples
  the shared test examples with replacement (the same draw for every seed, so the pairing holds)
  and computes the mean over seeds of macro-F1(A_s) - macro-F1(B_s). The 2.5 and 97.5
  percentiles of 2,000 draws are the 95 % interval. It captures test-set sampling noise.
- **A paired t-test across seeds** on the per-seed macro-F1 differences: it captures training
  noise (initialisation, data order), which the bootstrap does not.

A difference is "detected" when the bootstrap interval excludes 0 and, with two or more seeds,
the seed test gives p < 0.05. `needed` says how many seeds (from the spread of the per-seed
differences) or test examples (from the bootstrap standard error, which shrinks as 1/sqrt(N))
would detect a given difference (0.5 points) at 5 % significance and 80 % power.
Runs without `test_predictions.json` (runs from before it was written) are skipped.

References:
- Koehn 2004, Statistical Significance Tests for Machine Translation Evaluation, EMNLP
- Dror, Baumer, Shlomov & Reichart 2018, The Hitchhiker's Guide to Testing Statistical
  Significance in Natural Language Processing, ACL
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

PREDICTIONS = "test_predictions.json"  # written by recipes.finetune.write_predictions
Z_95, Z_POWER_80 = 1.959964, 0.841621


def read_predictions(run_dir: Path) -> dict | None:
    """{'ids', 'gold', 'pred'} of a run's test split, or None when the run has no such file."""
    try:
        d = json.loads((Path(run_dir) / PREDICTIONS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not all(isinstance(d.get(k), list) for k in ("ids", "gold", "pred")):
        return None
    return d


def macro_f1_weighted(gold: np.ndarray, pred: np.ndarray, weights: np.ndarray, n_labels: int) -> np.ndarray:
    """Macro-F1 for every row of `weights` (B, N), example i counted weights[b, i] times:
    the mean over all n_labels classes of 2tp / (2tp + fp + fn), 0 where that is 0/0 (scikit-learn's
    `f1_score(average="macro", labels=range(C), zero_division=0)`). Returns (B,)."""
    f1 = np.zeros(weights.shape[0])
    for c in range(n_labels):
        g, p = gold == c, pred == c
        tp = weights @ (g & p)  # (B,)
        wrong = weights @ (g ^ p)  # fp + fn, (B,)
        denom = 2 * tp + wrong
        f1 += np.divide(2 * tp, denom, out=np.zeros_like(f1), where=denom > 0)
    return f1 / n_labels


@dataclass
class Verdict:
    a: str
    b: str
    diff: float | None  # mean over seeds of macro-F1(A) - macro-F1(B), on the shared test examples
    lo: float | None  # 95 % bootstrap interval of diff
    hi: float | None
    seeds: int  # seeds with both runs' predictions
    examples: int  # shared test examples
    p_seeds: float | None  # paired t-test across seeds (None with fewer than 2 seeds)
    seeds_needed: int | None  # to detect `target` with the per-seed spread seen here
    examples_needed: int | None  # to detect `target` with the bootstrap error seen here
    target: float = 0.005

    def turned(self) -> Verdict:
        """B vs A: what `compare` gives with the sides swapped (the same bootstrap draws, negated)."""
        return replace(self, a=self.b, b=self.a, diff=-self.diff if self.diff is not None else None,
                       lo=-self.hi if self.hi is not None else None, hi=-self.lo if self.lo is not None else None)

    @property
    def detected(self) -> bool:
        if self.lo is None or self.hi is None or (self.lo <= 0 <= self.hi):
            return False
        return self.p_seeds is None or self.p_seeds < 0.05

    def sentence(self) -> str:
        """'A beats B by x (95 % CI [lo, hi]) ...' or 'no difference detectable at this size'."""
        if self.diff is None:
            why = ("no test example in common" if self.seeds else "no seed has test predictions from both")
            return f"{self.a} vs {self.b}: no paired comparison ({why})."
        size = f"{self.seeds} seed{'s' if self.seeds != 1 else ''} × {self.examples:,} test examples"
        p = (f", paired t-test across seeds p = {self.p_seeds:.3f}" if self.p_seeds is not None
             else ", one seed: the training noise is not measured")
        ci = f"95% CI [{self.lo:+.3f}, {self.hi:+.3f}]"
        if self.detected:  # stated as the winner's margin, its interval turned the same way
            win, lose, lo, hi = ((self.a, self.b, self.lo, self.hi) if self.diff > 0
                                 else (self.b, self.a, -self.hi, -self.lo))
            head = (f"{win} beats {lose} by {abs(self.diff):.3f} macro-F1 "
                    f"(95% CI [{lo:+.3f}, {hi:+.3f}]{p}; {size})")
        else:
            head = (f"{self.a} vs {self.b}: no difference detectable at this size "
                    f"(difference {self.diff:+.3f}, {ci}{p}; {size})")
        need = []
        if self.seeds_needed is not None:
            need.append(f"{self.seeds_needed} seeds")
        if self.examples_needed is not None:
            need.append(f"{self.examples_needed:,} test examples with {self.seeds} seed{'s' if self.seeds != 1 else ''}")
        tail = (f"; detecting a {100 * self.target:.1f}-point difference would take about "
                f"{' or '.join(need)}" if need else "")
        return head + tail + "."


def paired_bootstrap(gold: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_labels: int,
                     n_boot: int = 2000, seed: int = 0) -> dict:
    """`gold` (N,), `pred_a` / `pred_b` (S, N): S seeds' predictions on the same N examples.
    Returns {'diff', 'lo', 'hi', 'se'}: the mean over seeds of the macro-F1 difference, its 95 %
    percentile interval and the bootstrap standard error (resampling examples, seeds kept)."""
    gold = np.asarray(gold)
    pred_a, pred_b = np.atleast_2d(pred_a), np.atleast_2d(pred_b)  # (S, N)
    rng = np.random.default_rng(seed)
    n = len(gold)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)  # (n_boot, N)
    ones = np.ones((1, n))
    diffs, point = np.zeros(n_boot), 0.0
    for a, b in zip(pred_a, pred_b, strict=True):
        diffs += macro_f1_weighted(gold, a, weights, n_labels) - macro_f1_weighted(gold, b, weights, n_labels)
        point += float(macro_f1_weighted(gold, a, ones, n_labels)[0] - macro_f1_weighted(gold, b, ones, n_labels)[0])
    diffs /= len(pred_a)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"diff": point / len(pred_a), "lo": float(lo), "hi": float(hi), "se": float(diffs.std(ddof=1))}


def paired_seed_test(scores_a: list[float], scores_b: list[float]) -> float | None:
    """Two-sided paired t-test p-value on per-seed scores (None with fewer than 2 pairs; 1.0 when
    every difference is the same value 0, 0.0 when it is the same non-zero value)."""
    d = np.asarray(scores_a, float) - np.asarray(scores_b, float)
    if len(d) < 2:
        return None
    sd = d.std(ddof=1)
    if sd == 0:
        return 1.0 if d.mean() == 0 else 0.0
    from scipy import stats  # noqa: PLC0415  (scipy comes with scikit-learn)

    return float(2 * stats.t.sf(abs(d.mean()) / (sd / math.sqrt(len(d))), df=len(d) - 1))


def needed(target: float, seed_sd: float | None, se: float | None, n_examples: int) -> tuple[int | None, int | None]:
    """(seeds, test examples) to detect a difference of `target` at 5 % (two-sided), 80 % power:
    seeds = the least n >= 2 with target / (sd_d / sqrt(n)) >= t_.975(n-1) + t_.8(n-1), sd_d the
    per-seed differences' std (the paired t-test's own distribution: with a few seeds its tails
    are far wider than the normal's); examples = N * ((z_.975 + z_.8) * se / target)^2 from the
    bootstrap standard error on N examples."""
    seeds = None
    if seed_sd:
        from scipy import stats  # noqa: PLC0415  (scipy comes with scikit-learn)

        seeds = 2
        while target / (seed_sd / math.sqrt(seeds)) < stats.t.ppf(0.975, seeds - 1) + stats.t.ppf(0.8, seeds - 1):
            seeds += 1
    z = Z_95 + Z_POWER_80
    examples = math.ceil(n_examples * (z * se / target) ** 2) if se else None
    return seeds, examples


def compare(name_a: str, runs_a: list[Path], name_b: str, runs_b: list[Path], n_labels: int | None = None,
            target: float = 0.005, n_boot: int = 2000) -> Verdict:
    """Pair the runs of A and B by seed (`summary.json` seed; the run order when a seed is missing),
    keep seeds where both have test predictions, and compare them on their shared test examples
    (none shared, as for runs tested on different datasets: no comparison, `diff` None)."""
    pa, pb = _by_seed(runs_a), _by_seed(runs_b)
    seeds = [s for s in pa if s in pb]
    shared = set.intersection(*(set(pa[s]["ids"]) & set(pb[s]["ids"]) for s in seeds)) if seeds else set()
    ids = [i for i in pa[seeds[0]]["ids"] if i in shared] if seeds else []
    if not ids:  # no seed with both, or tested on different datasets (Davidson against OLID)
        return Verdict(name_a, name_b, None, None, None, len(seeds), 0, None, None, None, target)
    gold = np.asarray(_column(pa[seeds[0]], "gold", ids))
    a = np.stack([_column(pa[s], "pred", ids) for s in seeds])  # (S, N)
    b = np.stack([_column(pb[s], "pred", ids) for s in seeds])  # (S, N)
    n_labels = n_labels or int(max(gold.max(initial=0), a.max(initial=0), b.max(initial=0))) + 1
    boot = paired_bootstrap(gold, a, b, n_labels, n_boot)
    ones = np.ones((1, len(ids)))
    per_seed = [float(macro_f1_weighted(gold, x, ones, n_labels)[0] - macro_f1_weighted(gold, y, ones, n_labels)[0])
                for x, y in zip(a, b, strict=True)]
    sd = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None
    seeds_needed, examples_needed = needed(target, sd, boot["se"], len(ids))
    return Verdict(name_a, name_b, boot["diff"], boot["lo"], boot["hi"], len(seeds), len(ids),
                   paired_seed_test(per_seed, [0.0] * len(per_seed)), seeds_needed, examples_needed, target)


def _by_seed(runs: list[Path]) -> dict:
    out = {}
    for k, run in enumerate(runs):
        pred = read_predictions(run)
        if pred is None:
            continue
        try:
            seed = json.loads((Path(run) / "summary.json").read_text(encoding="utf-8")).get("seed", f"#{k}")
        except (OSError, ValueError):
            seed = f"#{k}"
        out.setdefault(seed, pred)
    return out


def _column(pred: dict, key: str, ids: list[str]) -> np.ndarray:
    row = {i: r for r, i in enumerate(pred["ids"])}
    values = pred[key]
    return np.asarray([values[row[i]] for i in ids])
