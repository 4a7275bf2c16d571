"""The generated discussion of a report: sentences that state only what the numbers support."""

from __future__ import annotations

import math

from slimtext.experiments.report_data import (
    Group,
    Run,
    flatten,
    fmt,
    human_count,
    show_setting,
    swept_keys,
)
from slimtext.experiments.select import select_best
from slimtext.experiments.stats import Verdict, compare

# the pairwise comparisons a study report weighs with confidence intervals: (A, B)
PAIRS = (("odd", "even"), ("distilrnn", "lstm"), ("lora-odd", "odd"))


class Paired:
    """The paired verdicts of one report's groups on test macro-F1 (None where no seed has both
    runs' predictions), each pair compared once: the summary lines and the verdict lines quote
    the same comparison, and B vs A is A vs B turned."""

    def __init__(self) -> None:
        self._done: dict[tuple[str, str], Verdict | None] = {}

    def __call__(self, a: Group, b: Group) -> Verdict | None:
        if (b.name, a.name) in self._done:
            v = self._done[(b.name, a.name)]
            return v.turned() if v else None
        if (a.name, b.name) not in self._done:
            labels = a.runs[0].get("labels") or b.runs[0].get("labels")
            v = compare(a.name, [r.path for r in a.runs], b.name, [r.path for r in b.runs],
                        len(labels) if labels else None)
            self._done[(a.name, b.name)] = v if v.diff is not None else None
        return self._done[(a.name, b.name)]


def _versus(a: Group, b: Group, key: str = "test.macro_f1", paired: Paired | None = None) -> tuple[float, str]:
    """Mean difference a - b (of the means as printed, 3 decimals, so the sentence adds up) and a
    clause weighing it: on test macro-F1 with test predictions on both sides, by the paired
    verdict (`experiments.stats.compare`, as in the verdict lines); otherwise the exact
    |difference| against the seed spread, sqrt(std_a² + std_b²)."""
    sa, sb = a.stat(key), b.stat(key)
    diff = round(round(sa.mean, 3) - round(sb.mean, 3), 3)
    v = (paired or Paired())(a, b) if key == "test.macro_f1" else None
    if v is not None:
        ci = f"95% CI [{v.lo:+.3f}, {v.hi:+.3f}] for {a.name} − {b.name}"
        if v.detected:
            return diff, f"which the paired comparison confirms ({ci})"
        return diff, f"but the paired comparison finds no difference detectable at this size ({ci})"
    if sa.std is None or sb.std is None:
        single = [g.name for g, s in ((a, sa), (b, sb)) if s.std is None]
        return diff, (
            f"with a single run for {' and '.join(single)} the spread across seeds is unknown, "
            "so this difference cannot be weighed against it"
        )
    spread = math.hypot(sa.std, sb.std)
    if abs(sa.mean - sb.mean) > spread:
        return (
            diff,
            f"larger than the seed spread (combined std {spread:.3f}, n = {sa.n} and {sb.n})",
        )
    return diff, (
        f"within the seed spread (combined std {spread:.3f}, n = {sa.n} and {sb.n}), "
        "so these seeds do not separate the two"
    )


def discussion(
    groups: list[Group], sweep_runs: list[Run] | None = None, metric: str = "macro_f1"
) -> list[str]:
    """Sentences that state only what the table supports. A study ranks methods by test
    macro-F1; a sweep ranks configurations by the dev metric (choosing on test would leak it)."""
    by_name = {g.name: g for g in groups}
    if sweep_runs:
        out = _ranking(groups, f"dev.{metric}", f"dev {metric}", lower_is_better=metric == "loss")
        return out + _sweep_sentences(sweep_runs, metric)
    paired = Paired()
    out = _ranking(groups, "test.macro_f1", "test macro-F1", paired=paired)
    if "odd" in by_name and "even" in by_name:
        out.append(
            _pair_sentence(
                by_name["odd"], by_name["even"], "The odd-layer student", "the even-layer student", paired
            )
        )
    if "distilrnn" in by_name and "lstm" in by_name:
        out.append(
            _pair_sentence(
                by_name["distilrnn"],
                by_name["lstm"],
                "DistilRNN (the LSTM distilled from the teacher)",
                "the LSTM trained on labels alone",
                paired,
            )
        )
    if "teacher" in by_name:
        out += _versus_teacher(by_name["teacher"], [g for g in groups if g.name != "teacher"])
    return out + verdicts(groups, paired)


def verdicts(groups: list[Group], paired: Paired | None = None) -> list[str]:
    """Paired verdicts with 95 % intervals (`experiments.stats.compare`) for odd vs even, DistilRNN
    vs LSTM, LoRA vs full (lora-odd vs odd) and every student vs the teacher; pairs where no seed has
    test predictions from both sides (older runs, TF-IDF) are left out."""
    by_name = {g.name: g for g in groups}
    pairs = [p for p in PAIRS if p[0] in by_name and p[1] in by_name]
    # DistilRNN variants (e.g. distilrnn-aug5: with a transfer set) against the LSTM and plain DistilRNN
    for g in groups:
        if g.name.startswith("distilrnn-"):
            pairs += [(g.name, b) for b in ("lstm", "distilrnn") if b in by_name]
    if "teacher" in by_name:
        pairs += [(g.name, "teacher") for g in groups if g.name not in ("teacher", "tfidf")]
    paired = paired or Paired()
    return [v.sentence() for a, b in pairs if (v := paired(by_name[a], by_name[b])) is not None]


def _ranking(groups: list[Group], key: str, label: str, lower_is_better: bool = False,
             paired: Paired | None = None) -> list[str]:
    """The best group by mean `key`, and its margin over the runner-up against the seed spread."""
    sign = 1 if lower_is_better else -1
    ranked = sorted(
        (g for g in groups if g.stat(key).mean is not None), key=lambda g: sign * g.stat(key).mean
    )
    if not ranked:
        return [f"No finished run has a {label}, so there is nothing to compare yet."]
    best = ranked[0]
    if len(ranked) == 1:
        return [f"Only one method is present: {best.name}, {label} {fmt(best.stat(key))}."]
    nxt = ranked[1]
    diff, clause = _versus(best, nxt, key, paired)
    if diff == 0:
        return [f"{best.name} and {nxt.name} tie on mean {label} ({fmt(best.stat(key))})."]
    return [
        f"{best.name} has the best mean {label} ({fmt(best.stat(key))}); its margin over the "
        f"runner-up {nxt.name} ({fmt(nxt.stat(key))}) is {abs(diff):.3f}, {clause}."
    ]


def _pair_sentence(a: Group, b: Group, a_text: str, b_text: str, paired: Paired) -> str:
    sa, sb = a.stat("test.macro_f1"), b.stat("test.macro_f1")
    if sa.mean is None or sb.mean is None:
        return f"{a_text} and {b_text} cannot be compared: one of them has no test macro-F1."
    diff, clause = _versus(a, b, paired=paired)
    if diff == 0:
        return f"{a_text} and {b_text} have the same mean test macro-F1 ({fmt(sa)})."
    word = "higher" if diff > 0 else "lower"
    return (
        f"{a_text} scores {abs(diff):.3f} {word} in mean test macro-F1 than {b_text} "
        f"({fmt(sa)} vs {fmt(sb)}), {clause}."
    )


def _versus_teacher(teacher: Group, others: list[Group]) -> list[str]:
    t_params = teacher.stat("total_params").mean
    t_ms = teacher.stat("inference_ms_per_example").mean
    t_f1 = teacher.stat("test.macro_f1").mean
    out = []
    for g in others:
        parts = []
        params, ms = g.stat("total_params").mean, g.stat("inference_ms_per_example").mean
        trainable, f1 = g.stat("trainable_params").mean, g.stat("test.macro_f1").mean
        if t_params and params:
            change = 100 * (1 - params / t_params)
            if params < t_params / 20:  # "100.0% fewer" would hide a 3,500x difference
                size = f"{t_params / params:,.0f}× fewer parameters than the teacher"
            else:
                size = f"{abs(change):.0f}% {'fewer' if change >= 0 else 'more'} parameters than the teacher"
            parts.append(f"{size} ({human_count(params)} vs {human_count(t_params)})")
        if trainable and params and trainable < params:
            parts.append(f"trains {100 * trainable / params:.2g}% of them")
        if t_ms and ms:
            ratio = t_ms / ms
            times = ratio if ratio >= 1 else 1 / ratio
            times = f"{times:,.0f}" if times >= 100 else f"{times:.1f}"
            speed = f"{times}× {'faster' if ratio >= 1 else 'slower'}"
            parts.append(f"{speed} per example ({ms:.3f} vs {t_ms:.3f} ms)")
        if t_f1 and f1 is not None:
            parts.append(f"reaches {100 * f1 / t_f1:.0f}% of the teacher's mean test macro-F1")
        if parts:
            out.append(f"{g.name}: " + ", ".join(parts) + ".")
    return out


def _sweep_sentences(runs: list[Run], metric: str) -> list[str]:
    best = select_best(runs, metric)
    if best is None:
        return []
    keys = [k for k in swept_keys(runs) if k != "train.seed"]
    flat = flatten(best.config)
    setting = ", ".join(f"{k}={show_setting(flat.get(k))}" for k in keys) or "the only setting"
    test = best.get(f"test.{metric}")
    return [
        f"Best single run by dev {metric}: {best.name} ({setting}), "
        f"dev {best.get(f'dev.{metric}'):.3f}"
        + (f", test {test:.3f} (test was not used to choose)." if test is not None else ".")
    ]
