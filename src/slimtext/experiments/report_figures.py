"""Report figures: per-epoch curves (matplotlib, PNG bytes) and confusion matrices summed over
seeds."""

from __future__ import annotations

import io
import math

import numpy as np

from slimtext.experiments.report_data import Group

CURVES = [
    ("train_loss", "Training loss"),
    ("dev_loss", "Validation loss"),
    ("dev_macro_f1", "Validation macro-F1"),
    ("dev_accuracy", "Validation accuracy"),
]


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
