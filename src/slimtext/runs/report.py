"""Reports: compare finished run directories in `report.md` and a self-contained `report.html`.

A report reads only run directories (summary.json, metrics.jsonl, config.yaml, command.txt), so
it can be rebuilt at any time with `slimtext report RUN_DIR...`. Runs are grouped by method: the
`group` key of the summary or config when present, else the run name without its seed suffix
(`odd-s2` -> `odd`; `davidson-lstm-full-s0-20250101-120000` -> `davidson-lstm-full`). Each group
shows mean ± sample standard deviation (n - 1) over its runs.

Contents: a generated discussion (only claims the numbers support), the comparison table, for
sweeps the hyper-parameter table with the best run marked, per-epoch curves (mean over seeds,
± one std shaded), confusion matrices summed over seeds, and every run with its command.
The HTML embeds its plots as base64 PNG and its CSS inline: it opens offline, as one file.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from slimtext.errors import SlimtextError
from slimtext.runs.rundir import atomic_write_text

SEED_SUFFIX = re.compile(r"^(?P<group>.+?)-s\d+(?:-\d{8}-\d{6})?$")
# config keys that never count as swept hyper-parameters (paths, hardware, bookkeeping)
NOT_SWEPT = {
    "data.data_dir",
    "train.threads",
    "train.device",
    "train.eval_batch_size",
    "distill.teacher",
    "rnn.vocab_size",
    "rnn.num_labels",
    "rnn.pad_id",
}
CURVES = [
    ("train_loss", "Training loss"),
    ("dev_loss", "Validation loss"),
    ("dev_macro_f1", "Validation macro-F1"),
    ("dev_accuracy", "Validation accuracy"),
]


# --- reading run directories ---------------------------------------------------------------------


@dataclass
class Run:
    name: str
    path: Path
    group: str
    summary: dict | None
    metrics: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    command: str | None = None

    def get(self, key: str):
        """A dotted summary value (`test.macro_f1`), or None when any part is missing."""
        value = self.summary
        for part in key.split("."):
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value if not isinstance(value, float) or math.isfinite(value) else None


def group_of(name: str, summary: dict | None, config: dict | None) -> str:
    for source in (summary or {}, config or {}):
        if isinstance(source.get("group"), str):
            return source["group"]
    m = SEED_SUFFIX.match(name)
    return m.group("group") if m else name


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_run(path: Path) -> Run:
    path = Path(path)
    summary = _read_json(path / "summary.json")
    metrics = []
    if (path / "metrics.jsonl").exists():
        for line in (path / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            try:
                metrics.append(json.loads(line))
            except ValueError:  # a torn line cannot happen with atomic writes; skip it anyway
                continue
    config = {}
    if (path / "config.yaml").exists():
        config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
    command = None
    if (path / "command.txt").exists():
        command = (path / "command.txt").read_text(encoding="utf-8").strip()
    return Run(
        path.name, path, group_of(path.name, summary, config), summary, metrics, config, command
    )


# --- numbers ------------------------------------------------------------------------------------


@dataclass
class Stat:
    mean: float | None
    std: float | None  # None with fewer than two values: the spread is unknown
    n: int


def stat(values) -> Stat:
    vals = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not vals:
        return Stat(None, None, 0)
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return Stat(float(np.mean(vals)), std, len(vals))


@dataclass
class Column:
    header: str
    key: str  # dotted summary key
    kind: str  # "metric" (higher is better), "cost" (lower is better), "count", "loss"
    digits: int = 3


COLUMNS = [
    Column("Accuracy", "test.accuracy", "metric"),
    Column("Macro-F1", "test.macro_f1", "metric"),
    Column("MCC", "test.mcc", "metric"),
    Column("ROC-AUC", "test.roc_auc", "metric"),
    Column("Final train loss", "final_train_loss", "loss"),
    Column("Params", "total_params", "count"),
    Column("Trainable", "trainable_params", "count"),
    Column("Train s", "train_seconds", "cost", 1),
    Column("ms / example", "inference_ms_per_example", "cost", 3),
    Column("Peak MiB", "peak_memory_mb", "cost", 0),
]


@dataclass
class Group:
    name: str
    runs: list[Run]

    def stat(self, key: str) -> Stat:
        return stat(r.get(key) for r in self.runs)

    @property
    def models(self) -> str:
        seen = dict.fromkeys(
            f"{r.get('model') or '?'} ({r.get('method') or '?'})" for r in self.runs
        )
        return ", ".join(seen)


def human_count(x: float) -> str:
    for div, unit, digits in ((1e9, "G", 2), (1e6, "M", 2), (1e3, "k", 1)):
        if abs(x) >= div:
            return f"{x / div:.{digits}f}{unit}"
    return f"{x:.0f}"


def fmt(s: Stat, col: Column | None = None, digits: int = 3) -> str:
    if s.mean is None:
        return "–"
    if col is not None and col.kind == "count":
        text = human_count(s.mean)
        return text if not s.std else f"{text} ± {human_count(s.std)}"
    d = col.digits if col is not None else digits
    if s.std is None:
        return f"{s.mean:.{d}f}"
    return f"{s.mean:.{d}f} ± {s.std:.{d}f}"


def group_runs(runs: list[Run]) -> list[Group]:
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.group, []).append(r)
    return [Group(k, v) for k, v in groups.items()]


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def swept_keys(runs: list[Run]) -> list[str]:
    """Config keys whose value differs between runs (in config order)."""
    flat = [flatten(r.config) for r in runs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    return [
        k
        for k in keys
        if k not in NOT_SWEPT and len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1
    ]


def best_run(runs: list[Run], metric: str) -> Run | None:
    scored = [r for r in runs if r.get(f"dev.{metric}") is not None]
    if not scored:
        return None
    sign = -1 if metric == "loss" else 1
    return max(scored, key=lambda r: sign * r.get(f"dev.{metric}"))


# --- discussion -----------------------------------------------------------------------------------


def _versus(a: Group, b: Group, key: str = "test.macro_f1") -> tuple[float, str]:
    """Mean difference a - b (of the means as printed, 3 decimals, so the sentence adds up) and a
    clause weighing the exact |difference| against the seed spread, sqrt(std_a² + std_b²)."""
    sa, sb = a.stat(key), b.stat(key)
    diff = round(round(sa.mean, 3) - round(sb.mean, 3), 3)
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
    out = _ranking(groups, "test.macro_f1", "test macro-F1")
    if "odd" in by_name and "even" in by_name:
        out.append(
            _pair_sentence(
                by_name["odd"], by_name["even"], "The odd-layer student", "the even-layer student"
            )
        )
    if "distilrnn" in by_name and "lstm" in by_name:
        out.append(
            _pair_sentence(
                by_name["distilrnn"],
                by_name["lstm"],
                "DistilRNN (the LSTM distilled from the teacher)",
                "the LSTM trained on labels alone",
            )
        )
    if "teacher" in by_name:
        out += _versus_teacher(by_name["teacher"], [g for g in groups if g.name != "teacher"])
    return out


def _ranking(groups: list[Group], key: str, label: str, lower_is_better: bool = False) -> list[str]:
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
    diff, clause = _versus(best, nxt, key)
    if diff == 0:
        return [f"{best.name} and {nxt.name} tie on mean {label} ({fmt(best.stat(key))})."]
    return [
        f"{best.name} has the best mean {label} ({fmt(best.stat(key))}); its margin over the "
        f"runner-up {nxt.name} ({fmt(nxt.stat(key))}) is {abs(diff):.3f}, {clause}."
    ]


def _pair_sentence(a: Group, b: Group, a_text: str, b_text: str) -> str:
    sa, sb = a.stat("test.macro_f1"), b.stat("test.macro_f1")
    if sa.mean is None or sb.mean is None:
        return f"{a_text} and {b_text} cannot be compared: one of them has no test macro-F1."
    diff, clause = _versus(a, b)
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
            pct = f"{abs(change):.1f}" if abs(change) > 99 else f"{abs(change):.0f}"
            size = f"{pct}% {'fewer' if change >= 0 else 'more'} parameters than the teacher"
            parts.append(f"{size} ({human_count(params)} vs {human_count(t_params)})")
        if trainable and params and trainable < params:
            parts.append(f"trains {100 * trainable / params:.2g}% of them")
        if t_ms and ms:
            ratio = t_ms / ms
            speed = f"{ratio:.1f}× faster" if ratio >= 1 else f"{1 / ratio:.1f}× slower"
            parts.append(f"{speed} per example ({ms:.3f} vs {t_ms:.3f} ms)")
        if t_f1 and f1 is not None:
            parts.append(f"reaches {100 * f1 / t_f1:.0f}% of the teacher's mean test macro-F1")
        if parts:
            out.append(f"{g.name}: " + ", ".join(parts) + ".")
    return out


def _sweep_sentences(runs: list[Run], metric: str) -> list[str]:
    best = best_run(runs, metric)
    if best is None:
        return []
    keys = [k for k in swept_keys(runs) if k != "train.seed"]
    flat = flatten(best.config)
    setting = ", ".join(f"{k}={_setting(flat.get(k))}" for k in keys) or "the only setting"
    test = best.get(f"test.{metric}")
    return [
        f"Best single run by dev {metric}: {best.name} ({setting}), "
        f"dev {best.get(f'dev.{metric}'):.3f}"
        + (f", test {test:.3f} (test was not used to choose)." if test is not None else ".")
    ]


# --- figures -------------------------------------------------------------------------------------


def curve_figures(groups: list[Group]) -> list[tuple[str, str, bytes]]:
    """(key, title, PNG bytes) per metric with any per-epoch values; a line per group (mean over
    its runs at each epoch, ± one std shaded where two or more runs reached that epoch)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    colors = plt.get_cmap("tab10").colors
    out = []
    for key, title in CURVES:
        fig, ax = plt.subplots(figsize=(7.2, 3.6), dpi=100)
        drawn = False
        for i, g in enumerate(groups):
            by_epoch: dict[int, list[float]] = {}
            for r in g.runs:
                for row in r.metrics:
                    v = row.get(key)
                    if (
                        isinstance(row.get("epoch"), int)
                        and isinstance(v, int | float)
                        and math.isfinite(v)
                    ):
                        by_epoch.setdefault(row["epoch"], []).append(float(v))
            if not by_epoch:
                continue
            epochs = sorted(by_epoch)
            mean = np.array([np.mean(by_epoch[e]) for e in epochs])
            std = np.array(
                [np.std(by_epoch[e], ddof=1) if len(by_epoch[e]) > 1 else 0.0 for e in epochs]
            )
            color = colors[i % len(colors)]
            ax.plot(epochs, mean, marker="o", color=color, label=f"{g.name} (n={len(g.runs)})")
            if std.any():
                ax.fill_between(
                    epochs, mean - std, mean + std, color=color, alpha=0.15, linewidth=0
                )
            drawn = True
        if drawn:
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            out.append((key, title, buf.getvalue()))
        plt.close(fig)
    return out


def summed_confusion(g: Group) -> tuple[list[str], np.ndarray, str, int] | None:
    """(labels, matrix summed over the group's runs, split, runs used) or None."""
    total, labels, split, used = None, None, None, 0
    for r in g.runs:
        split_r = r.get("test_split") or "test"
        m = (
            (r.get("confusion") or {}).get(split_r)
            if isinstance(r.get("confusion"), dict)
            else None
        )
        if m is None:
            continue
        m = np.asarray(m, dtype=np.int64)
        if total is None:
            total, labels, split = (
                m.copy(),
                r.get("labels") or [str(i) for i in range(len(m))],
                split_r,
            )
        elif m.shape == total.shape:
            total += m
        else:
            continue
        used += 1
    return None if total is None else (list(labels), total, split, used)


# --- rendering -----------------------------------------------------------------------------

CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d1d9e0; --soft:#f6f8fa; --accent:#1f6feb; }
* { box-sizing: border-box; }
body { margin:0; color:var(--ink); background:#fff;
  font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 36px 0 10px; padding-bottom: 4px;
  border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 0 0 6px; }
.meta { color: var(--muted); margin: 0 0 12px; }
ul.discussion { padding-left: 20px; } ul.discussion li { margin: 4px 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); text-align: right;
  white-space: nowrap; }
th { background: var(--soft); font-weight: 600; }
th:first-child, td:first-child, td.text { text-align: left; }
tbody tr:hover { background: #f0f6ff; }
td.best { font-weight: 700; }
td small { display: block; color: var(--muted); font-size: 12px; }
table.compare { font-size: 14px; }
tr.best td { background: #fff8c5; }
.note { color: var(--muted); font-size: 13px; }
.figs { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 16px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 8px; }
figure img { width: 100%; height: auto; display: block; }
.cms { display: flex; flex-wrap: wrap; gap: 18px; }
.cm { border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
.cm td { text-align: center; min-width: 84px; }
.cm td small { font-size: 11px; color: inherit; opacity: .85; }
code, pre { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; }
details pre { white-space: pre-wrap; word-break: break-all; background: var(--soft); padding: 8px; }
"""


TABLE_NOTE = (
    "Test split; mean ± sample std over the runs of each method (n = runs). **Bold**: best mean "
    "per metric. Final train loss is each run's own objective (cross-entropy; the distillation "
    "mix for distilled students; log-loss for TF-IDF), so it compares runs of one method, not "
    "methods. Times and memory come from the machine that ran each run, which may have been busy."
)


@dataclass
class Report:
    title: str
    meta: list[str]
    discussion: list[str]
    notes: list[str]
    groups: list[Group]
    runs: list[Run]
    sweep: bool
    metric: str
    figures: list[tuple[str, str, bytes]]


def _best_per_column(groups: list[Group]) -> dict[str, str]:
    best = {}
    for col in COLUMNS:
        if col.kind != "metric":
            continue
        scored = [
            (g.stat(col.key).mean, g.name) for g in groups if g.stat(col.key).mean is not None
        ]
        top = max(m for m, _ in scored) if scored else None
        winners = [name for m, name in scored if m == top]
        if len(scored) > 1 and len(winners) == 1:  # no bold on a tie
            best[col.key] = winners[0]
    return best


def _e(x) -> str:
    return html.escape(str(x))


def render_html(rep: Report) -> str:
    h = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(rep.title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{_e(rep.title)}</h1>",
    ]
    h += [f'<p class="meta">{_e(m)}</p>' for m in rep.meta]
    h.append('<h2>Summary</h2><ul class="discussion">')
    h += [f"<li>{_e(s)}</li>" for s in rep.discussion]
    h.append("</ul>")
    h += [f'<p class="note">{_e(n)}</p>' for n in rep.notes]

    h.append("<h2>Comparison</h2>")
    h.append(f'<p class="note">{_e(TABLE_NOTE.replace("**", ""))}</p>')
    best = _best_per_column(rep.groups)
    h.append('<div class="scroll"><table class="compare"><thead><tr><th>Method</th><th>n</th>')
    h += [f"<th>{_e(c.header)}</th>" for c in COLUMNS]
    h.append("</tr></thead><tbody>")
    for g in rep.groups:
        h.append(f"<tr><td>{_e(g.name)}<small>{_e(g.models)}</small></td><td>{len(g.runs)}</td>")
        for c in COLUMNS:
            cls = ' class="best"' if best.get(c.key) == g.name else ""
            h.append(f"<td{cls}>{_e(fmt(g.stat(c.key), c))}</td>")
        h.append("</tr>")
    h.append("</tbody></table></div>")

    if rep.sweep:
        keys, top, rows = _sweep_rows(rep.runs, rep.metric)
        h.append("<h2>Hyper-parameters</h2>")
        h.append(
            f'<p class="note">One row per run, sorted by dev {_e(rep.metric)}; '
            "the highlighted row (★) is the best on dev.</p>"
        )
        h.append('<div class="scroll"><table><thead><tr><th>Run</th>')
        h += [f"<th>{_e(k)}</th>" for k in keys]
        h.append(f"<th>dev {_e(rep.metric)}</th><th>test {_e(rep.metric)}</th></tr></thead><tbody>")
        for r, values, dev, test in rows:
            is_best = top is not None and r is top
            row_cls, star = (' class="best"', "★ ") if is_best else ("", "")
            h.append(f"<tr{row_cls}><td>{star}{_e(r.name)}</td>")
            text_cell = '<td class="text">'
            h += [f"{'<td>' if _numeric(v) else text_cell}{_e(v)}</td>" for v in values]
            h.append(f"<td>{_e(dev)}</td><td>{_e(test)}</td></tr>")
        h.append("</tbody></table></div>")

    h.append("<h2>Training curves</h2>")
    if rep.figures:
        h.append(
            '<p class="note">Mean over each method\'s runs per epoch; the band is ± one std. '
            'Methods without epochs (e.g. TF-IDF) have no curve.</p><div class="figs">'
        )
        for _, title, png in rep.figures:
            data = base64.b64encode(png).decode("ascii")
            h.append(f'<figure><img alt="{_e(title)}" src="data:image/png;base64,{data}"></figure>')
        h.append("</div>")
    else:
        h.append('<p class="note">No run has per-epoch metrics.</p>')

    h.append('<h2>Confusion matrices</h2><div class="cms">')
    for g in rep.groups:
        cm = summed_confusion(g)
        if cm is None:
            continue
        labels, m, split, used = cm
        h.append(
            f'<div class="cm"><h3>{_e(g.name)}</h3><p class="note">{_e(split)} split, summed over '
            f"{used} run{'s' if used != 1 else ''}; rows: true label, columns: predicted</p><table>"
        )
        h.append(
            "<thead><tr><th>true \\ predicted</th>"
            + "".join(f"<th>{_e(x)}</th>" for x in labels)
            + "</tr></thead><tbody>"
        )
        for i, row in enumerate(m):
            total = max(1, int(row.sum()))
            h.append(f"<tr><th>{_e(labels[i])}</th>")
            for v in row:
                share = v / total
                ink = "#fff" if share > 0.55 else "var(--ink)"
                h.append(
                    f'<td style="background: rgba(31,111,235,{share:.2f}); color: {ink}">{int(v)}'
                    f"<small>{100 * share:.1f}%</small></td>"
                )
            h.append("</tr>")
        h.append("</tbody></table></div>")
    h.append("</div>")

    h.append(
        '<h2>Runs</h2><div class="scroll"><table><thead><tr><th>Run</th><th>Method</th>'
        "<th>Seed</th><th>Best epoch</th><th>Dev macro-F1</th><th>Test macro-F1</th>"
        "<th>Train s</th>"
        "</tr></thead><tbody>"
    )
    for r in rep.runs:
        h.append(
            f'<tr><td>{_e(r.name)}</td><td class="text">{_e(r.group)}</td>'
            f"<td>{_e(_v(r.get('seed'), 0))}</td>"
            f"<td>{_e(_v(r.get('best_epoch'), 0))}</td><td>{_e(_v(r.get('dev.macro_f1')))}</td>"
            f"<td>{_e(_v(r.get('test.macro_f1')))}</td>"
            f"<td>{_e(_v(r.get('train_seconds'), 1))}</td></tr>"
        )
    h.append("</tbody></table></div>")
    commands = [r for r in rep.runs if r.command]
    if commands:
        h.append("<details><summary>Commands</summary><pre>")
        h += [_e(f"# {r.name}\n{r.command}\n") for r in commands]
        h.append("</pre></details>")
    h.append("</main></body></html>\n")
    return "\n".join(h)


def _v(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _setting(x) -> str:
    return f"{x:.6g}" if isinstance(x, float) else "–" if x is None else str(x)


def _sweep_rows(runs: list[Run], metric: str):
    keys = swept_keys(runs)
    top = best_run(runs, metric)
    sign = -1 if metric == "loss" else 1
    ordered = sorted(
        runs, key=lambda r: (r.get(f"dev.{metric}") is None, -sign * (r.get(f"dev.{metric}") or 0))
    )
    rows = []
    for r in ordered:
        flat = flatten(r.config)
        rows.append(
            (
                r,
                [_setting(flat.get(k)) for k in keys],
                _v(r.get(f"dev.{metric}")),
                _v(r.get(f"test.{metric}")),
            )
        )
    return keys, top, rows


def _md_table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def render_md(rep: Report, figure_paths: list[tuple[str, str]]) -> str:
    md = [f"# {rep.title}", ""]
    md += [f"_{m}_  " for m in rep.meta] + [""]
    md += ["## Summary", ""] + [f"- {s}" for s in rep.discussion] + [""]
    md += [f"> {n}" for n in rep.notes] + ([""] if rep.notes else [])
    md += [
        "## Comparison",
        "",
        TABLE_NOTE,
        "",
    ]
    best = _best_per_column(rep.groups)
    rows = []
    for g in rep.groups:
        cells = [g.name, g.models, str(len(g.runs))]
        for c in COLUMNS:
            text = fmt(g.stat(c.key), c)
            cells.append(f"**{text}**" if best.get(c.key) == g.name else text)
        rows.append(cells)
    md += [
        _md_table(
            ["Method", "Model (method)", "n"] + [c.header for c in COLUMNS],
            rows,
            ["---", "---", "---:"] + ["---:"] * len(COLUMNS),
        ),
        "",
    ]
    if rep.sweep:
        keys, top, srows = _sweep_rows(rep.runs, rep.metric)
        md += [
            "## Hyper-parameters",
            "",
            f"One row per run, sorted by dev {rep.metric}; ★ marks the best on dev.",
            "",
        ]
        table = []
        for r, values, dev, test in srows:
            star = top is not None and r is top
            table.append([("★ **" + r.name + "**") if star else r.name, *values, dev, test])
        md += [_md_table(["Run", *keys, f"dev {rep.metric}", f"test {rep.metric}"], table), ""]
    md += ["## Training curves", ""]
    if figure_paths:
        md += [f"![{title}]({path})" for title, path in figure_paths] + [""]
    else:
        md += ["No run has per-epoch metrics.", ""]
    md += ["## Confusion matrices", ""]
    for g in rep.groups:
        cm = summed_confusion(g)
        if cm is None:
            continue
        labels, m, split, used = cm
        md += [
            f"**{g.name}** ({split} split, summed over {used} run{'s' if used != 1 else ''}; "
            "rows: true, columns: predicted)",
            "",
        ]
        md += [
            _md_table(
                ["true \\ predicted", *labels],
                [[labels[i], *map(str, row.tolist())] for i, row in enumerate(m)],
            ),
            "",
        ]
    md += ["## Runs", ""]
    md += [
        _md_table(
            ["Run", "Method", "Seed", "Best epoch", "Dev macro-F1", "Test macro-F1", "Train s"],
            [
                [
                    r.name,
                    r.group,
                    _v(r.get("seed"), 0),
                    _v(r.get("best_epoch"), 0),
                    _v(r.get("dev.macro_f1")),
                    _v(r.get("test.macro_f1")),
                    _v(r.get("train_seconds"), 1),
                ]
                for r in rep.runs
            ],
            ["---", "---"] + ["---:"] * 5,
        ),
        "",
    ]
    commands = [r for r in rep.runs if r.command]
    if commands:
        md += ["<details><summary>Commands</summary>", "", "```"]
        md += [f"# {r.name}\n{r.command}" for r in commands]
        md += ["```", "", "</details>", ""]
    return "\n".join(md)


def _meta(runs: list[Run]) -> list[str]:
    datasets = sorted({str(r.get("dataset")) for r in runs if r.get("dataset")})
    splits = sorted({str(r.get("test_split")) for r in runs if r.get("test_split")})
    seeds = sorted({r.get("seed") for r in runs if isinstance(r.get("seed"), int)})
    line = [
        f"dataset: {', '.join(datasets) or 'unknown'}",
        f"test split: {', '.join(splits) or 'unknown'}",
        f"{len(runs)} finished runs",
        f"seeds: {', '.join(map(str, seeds)) or 'unknown'}",
    ]
    machines = {json.dumps(r.get("machine"), sort_keys=True) for r in runs if r.get("machine")}
    out = [" · ".join(line)]
    if len(machines) == 1:
        m = json.loads(next(iter(machines)))
        out.append(
            f"machine: {m.get('platform', '?')}, {m.get('cpus', '?')} CPUs, "
            f"torch {m.get('torch', '?')}, "
            f"threads {m.get('threads', '?')}, CUDA {'yes' if m.get('cuda') else 'no'}"
        )
    elif machines:
        out.append(
            f"runs come from {len(machines)} different machine setups: compare times with care"
        )
    out.append(
        f"generated {dt.datetime.now().isoformat(timespec='seconds')} from run directories only"
    )
    return out


def collect_run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories from command-line paths: a run directory itself, or a folder of them (a
    study or sweep folder; its study.json / sweep.json, when present, gives the order)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "config.yaml").exists() or (p / "summary.json").exists():
            out.append(p)
            continue
        if not p.is_dir():
            raise SlimtextError(f"{p} is neither a run directory nor a folder of run directories")
        found = sorted(
            d for d in p.iterdir() if (d / "config.yaml").exists() or (d / "summary.json").exists()
        )
        order = []
        for plan in ("study.json", "sweep.json"):
            data = _read_json(p / plan)
            if isinstance(data, dict):
                order = [
                    r["name"] for r in data.get("runs", []) if isinstance(r, dict) and "name" in r
                ]
        rank = {name: i for i, name in enumerate(order)}
        found.sort(key=lambda d: (rank.get(d.name, len(rank)), d.name))
        if not found:
            raise SlimtextError(
                f"{p} holds no run directories (folders with config.yaml or summary.json)"
            )
        out += found
    return list(dict.fromkeys(out))


def write_report(
    run_dirs: list[Path],
    out_dir: Path,
    title: str | None = None,
    sweep: bool | None = None,
    metric: str = "macro_f1",
) -> tuple[Path, Path]:
    """Write `out_dir/report.md` (with `figures/*.png`) and a self-contained `out_dir/report.html`.

    sweep: show the hyper-parameter table; None decides from the names (no run carries a seed
    suffix and every run is its own group). metric: the dev/test metric of the sweep table.
    Runs without summary.json (unfinished) are listed in a note and left out."""
    out_dir = Path(out_dir)
    loaded = [load_run(Path(p)) for p in run_dirs]
    runs = [r for r in loaded if r.summary is not None]
    notes = []
    missing = [r.name for r in loaded if r.summary is None]
    if missing:
        notes.append(
            f"{len(missing)} run director{'ies have' if len(missing) > 1 else 'y has'} "
            "no summary.json "
            f"(unfinished or failed) and {'are' if len(missing) > 1 else 'is'} left out: "
            + ", ".join(missing)
        )
    groups = group_runs(runs)
    if sweep is None:
        sweep = (
            len(runs) > 1
            and all(len(g.runs) == 1 for g in groups)
            and not any(SEED_SUFFIX.match(r.name) for r in runs)
        )
    title = title or (
        f"slimtext {'sweep' if sweep else 'report'}: "
        + (", ".join(sorted({str(r.get("dataset")) for r in runs if r.get("dataset")})) or "runs")
    )
    rep = Report(
        title,
        _meta(runs),
        discussion(groups, runs if sweep else None, metric),
        notes,
        groups,
        runs,
        sweep,
        metric,
        curve_figures(groups) if runs else [],
    )
    fig_dir = out_dir / "figures"
    fig_paths = []
    for key, fig_title, png in rep.figures:
        fig_dir.mkdir(parents=True, exist_ok=True)
        (fig_dir / f"{key}.png").write_bytes(png)
        fig_paths.append((fig_title, f"figures/{key}.png"))
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(md_path, render_md(rep, fig_paths))
    atomic_write_text(html_path, render_html(rep))
    return md_path, html_path
