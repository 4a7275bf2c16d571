"""`report.html`: one self-contained file rendered from `templates/report.html.j2` (Jinja2,
autoescaped), its CSS inline and its plots embedded as base64 PNG. This module only turns a
`Report` into the template's plain values."""

from __future__ import annotations

import base64
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from slimtext.experiments.cross import NOTE as CROSS_NOTE
from slimtext.experiments.cross import cross_cell, cross_matrix
from slimtext.experiments.report_data import COLUMNS, fmt, show_value
from slimtext.experiments.report_figures import summed_confusion
from slimtext.experiments.report_md import (
    CALIBRATION_COLUMNS,
    CALIBRATION_NOTE,
    TABLE_NOTE,
    Report,
    best_per_column,
    calibration_rows,
    sweep_rows,
)

TEMPLATES = Path(__file__).with_name("templates")
_ENV = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]),
                   trim_blocks=False, keep_trailing_newline=True)


def _png(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def context(rep: Report) -> dict:
    """The template's values: strings and numbers only, every table cell formatted here."""
    best = best_per_column(rep.groups)
    groups = [{"name": g.name, "models": g.models, "n": len(g.runs),
               "cells": [{"text": fmt(g.stat(c.key), c), "best": best.get(c.key) == g.name} for c in COLUMNS]}
              for g in rep.groups]
    cross = None
    table = cross_matrix(rep.runs)
    if table is not None:
        cross = {"note": CROSS_NOTE.replace("`", ""), "columns": table.columns,
                 "rows": [{"data": data, "group": group,
                           "cells": [{"text": cross_cell(c), "n": c[2]} for c in row]}
                          for (data, group), row in zip(table.rows, table.cells)]}
    sweep = None
    if rep.sweep:
        keys, top, rows = sweep_rows(rep.runs, rep.metric)
        sweep = {"metric": rep.metric, "settings": keys,
                 "rows": [{"best": top is not None and r is top, "name": r.name, "dev": dev, "test": test,
                           "settings": [{"text": v, "numeric": _numeric(v)} for v in values]}
                          for r, values, dev, test in rows]}
    confusions = []
    for g in rep.groups:
        cm = summed_confusion(g)
        if cm is None:
            continue
        labels, m, split, used = cm
        rows = []
        for i, row in enumerate(m):
            total = max(1, int(row.sum()))
            rows.append({"label": labels[i], "cells": [
                {"count": int(v), "share": v / total, "ink": "#fff" if v / total > 0.55 else "var(--ink)"}
                for v in row]})
        confusions.append({"name": g.name, "split": split, "used": used, "labels": labels, "rows": rows})
    calibration = None
    cal_rows = calibration_rows(rep)
    if cal_rows:
        calibration = {"note": CALIBRATION_NOTE, "headers": [h for h, _, _ in CALIBRATION_COLUMNS],
                       "rows": cal_rows, "png": _png(rep.reliability) if rep.reliability else None}
    return {
        "title": rep.title, "meta": rep.meta, "discussion": rep.discussion, "notes": rep.notes,
        "table_note": TABLE_NOTE.replace("**", ""), "headers": [c.header for c in COLUMNS],
        "groups": groups, "cross": cross, "sweep": sweep,
        "figures": [{"title": title, "png": _png(png)} for _, title, png in rep.figures],
        "confusions": confusions, "calibration": calibration,
        "runs": [{"name": r.name, "group": r.group, "seed": show_value(r.get("seed"), 0),
                  "best_epoch": show_value(r.get("best_epoch"), 0), "dev": show_value(r.get("dev.macro_f1")),
                  "test": show_value(r.get("test.macro_f1")), "train_s": show_value(r.get("train_seconds"), 1)}
                 for r in rep.runs],
        "commands": [(r.name, r.command) for r in rep.runs if r.command],
    }


def render_html(rep: Report) -> str:
    return _ENV.get_template("report.html.j2").render(context(rep))
