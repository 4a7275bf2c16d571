"""Report figures: per-epoch curves (matplotlib, PNG bytes), confusion matrices summed over
seeds, and reliability diagrams (before / after temperature scaling) per method."""

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


def pooled_reliability(g: Group, which: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(mean confidence, accuracy, count) per bin over the group's runs, pooled by count, from
    summary `calibration.reliability.<which>` (before / after); None when no run has it."""
    conf_sum = acc_sum = counts = None
    for r in g.runs:
        rel = r.get(f"calibration.reliability.{which}")
        if not isinstance(rel, dict):
            continue
        n = np.asarray(rel["count"], dtype=np.float64)  # (bins,)
        c = np.array([x or 0.0 for x in rel["confidence"]]) * n
        a = np.array([x or 0.0 for x in rel["accuracy"]]) * n
        if counts is None:
            conf_sum, acc_sum, counts = c, a, n
        elif n.shape == counts.shape:
            conf_sum, acc_sum, counts = conf_sum + c, acc_sum + a, counts + n
    if counts is None:
        return None
    seen = counts > 0
    return conf_sum[seen] / counts[seen], acc_sum[seen] / counts[seen], counts[seen]


def reliability_figure(groups: list[Group]) -> bytes | None:
    """One reliability diagram per group with calibration data (test split, pooled over its
    runs): accuracy against confidence per bin before and after temperature scaling, the
    diagonal being perfect calibration. PNG bytes, or None when no run has calibration."""
    shown = [g for g in groups if pooled_reliability(g, "before") is not None]
    if not shown:
        return None
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.0 * rows), dpi=100, squeeze=False)
    for ax in axes.flat[len(shown):]:
        ax.axis("off")
    for ax, g in zip(axes.flat, shown):
        ax.plot([0, 1], [0, 1], color="0.7", linewidth=1)
        for which, color in (("before", "tab:gray"), ("after", "tab:blue")):
            pooled = pooled_reliability(g, which)
            if pooled is None:
                continue
            conf, acc, _ = pooled
            ece = g.stat(f"calibration.test_{which}.ece").mean
            label = f"{which}" + (f" (ECE {ece:.3f})" if ece is not None else "")
            ax.plot(conf, acc, marker="o", markersize=3, color=color, label=label)
        ax.set_title(g.name, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, frameon=False, loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
