"""`report.md`: the `Report` both renderers take, the table pieces they share, and the Markdown
renderer."""

from __future__ import annotations

from dataclasses import dataclass

from slimtext.experiments.cross import cross_md
from slimtext.experiments.report_data import (
    COLUMNS,
    Group,
    Run,
    flatten,
    fmt,
    show_setting,
    show_value,
    swept_keys,
)
from slimtext.experiments.report_figures import pooled_reliability, summed_confusion
from slimtext.experiments.select import select_best

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
    reliability: bytes | None = None  # the reliability diagrams' PNG (report_figures)


def best_per_column(groups: list[Group]) -> dict[str, str]:
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


def sweep_rows(runs: list[Run], metric: str):
    keys = swept_keys(runs)
    top = select_best(runs, metric)
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
                [show_setting(flat.get(k)) for k in keys],
                show_value(r.get(f"dev.{metric}")),
                show_value(r.get(f"test.{metric}")),
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
    best = best_per_column(rep.groups)
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
    md += cross_md(rep.runs)
    if rep.sweep:
        keys, top, srows = sweep_rows(rep.runs, rep.metric)
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
    md += calibration_md(rep)
    md += ["## Runs", ""]
    md += [
        _md_table(
            ["Run", "Method", "Seed", "Best epoch", "Dev macro-F1", "Test macro-F1", "Train s"],
            [
                [
                    r.name,
                    r.group,
                    show_value(r.get("seed"), 0),
                    show_value(r.get("best_epoch"), 0),
                    show_value(r.get("dev.macro_f1")),
                    show_value(r.get("test.macro_f1")),
                    show_value(r.get("train_seconds"), 1),
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


RELIABILITY_PNG = "figures/reliability.png"  # where write_report saves Report.reliability
CALIBRATION_NOTE = (
    "Test split; mean over each method's runs. The temperature T and (binary tasks) the decision "
    "threshold are fitted on dev after training; ECE (15 equal-width bins, top label), Brier "
    "(summed over classes) and NLL before → after dividing the logits by T. Macro-F1 / MCC at "
    "threshold: the test metrics when the positive label is predicted at calibrated probability "
    ">= threshold (the other tables use argmax)."
)
CALIBRATION_COLUMNS = [  # (header, dotted summary key, digits)
    ("T", "calibration.temperature", 2),
    ("Threshold", "calibration.threshold", 3),
    ("ECE before", "calibration.test_before.ece", 3),
    ("ECE after", "calibration.test_after.ece", 3),
    ("Brier before", "calibration.test_before.brier", 3),
    ("Brier after", "calibration.test_after.brier", 3),
    ("NLL before", "calibration.test_before.nll", 3),
    ("NLL after", "calibration.test_after.nll", 3),
    ("Macro-F1 at threshold", "test_at_threshold.macro_f1", 3),
    ("MCC at threshold", "test_at_threshold.mcc", 3),
]


def calibration_rows(rep: Report) -> list[list[str]]:
    """[method, n, cell per CALIBRATION_COLUMNS] for each group with calibrated runs."""
    rows = []
    for g in rep.groups:
        if pooled_reliability(g, "before") is None and g.stat("calibration.temperature").mean is None:
            continue
        n = g.stat("calibration.temperature").n
        rows.append([g.name, str(n)] + [fmt(g.stat(k), digits=d) for _, k, d in CALIBRATION_COLUMNS])
    return rows


def calibration_md(rep: Report) -> list[str]:
    """The `## Calibration` section (nothing when no run was calibrated)."""
    rows = calibration_rows(rep)
    if not rows:
        return []
    md = ["## Calibration", "", CALIBRATION_NOTE, ""]
    md += [_md_table(["Method", "n"] + [h for h, _, _ in CALIBRATION_COLUMNS], rows), ""]
    if rep.reliability:
        md += [f"![Reliability diagrams (test): before and after temperature scaling]({RELIABILITY_PNG})", ""]
    return md
