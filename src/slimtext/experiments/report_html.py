"""`report.html`: one self-contained file, its CSS inline and its plots embedded as base64 PNG."""

from __future__ import annotations

import base64
import html

from slimtext.experiments.cross import cross_html
from slimtext.experiments.report_data import COLUMNS, _v, fmt
from slimtext.experiments.report_figures import summed_confusion
from slimtext.experiments.report_md import (
    CALIBRATION_COLUMNS,
    CALIBRATION_NOTE,
    TABLE_NOTE,
    Report,
    _best_per_column,
    _sweep_rows,
    calibration_rows,
)

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

    h += cross_html(rep.runs)
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

    h += calibration_html(rep)
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


def calibration_html(rep: Report) -> list[str]:
    """The Calibration section (nothing when no run was calibrated)."""
    rows = calibration_rows(rep)
    if not rows:
        return []
    h = ["<h2>Calibration</h2>", f'<p class="note">{_e(CALIBRATION_NOTE)}</p>',
         '<div class="scroll"><table><thead><tr><th>Method</th><th>n</th>']
    h += [f"<th>{_e(header)}</th>" for header, _, _ in CALIBRATION_COLUMNS]
    h.append("</tr></thead><tbody>")
    h += ["<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows]
    h.append("</tbody></table></div>")
    if rep.reliability:
        data = base64.b64encode(rep.reliability).decode("ascii")
        h.append('<figure><img alt="Reliability diagrams (test): before and after temperature '
                 f'scaling" src="data:image/png;base64,{data}"></figure>')
    return h


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
