"""report.html in a real browser: headless Debian Chromium screenshots a report built from fake
runs, offline. Skipped when chromium is missing, unless CI is set (then it fails)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fake_runs import write_study
from slimtext.experiments.report import write_report

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"


def _need_chromium():
    if not Path(CHROMIUM).exists():
        reason = f"browser test needs {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(reason + "; CI is set, so this is an error")
        pytest.skip(reason)


def test_report_renders_in_headless_chromium(tmp_path):
    _need_chromium()
    from PIL import Image

    _, html = write_report(write_study(tmp_path / "study"), tmp_path / "study", title="Quick study")
    shot = tmp_path / "report.png"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        html.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    if artifacts := os.environ.get("SLIMTEXT_ARTIFACTS"):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "report.png")
    assert shot.stat().st_size > 50_000  # text, tables and four plots; a blank page is a few KB
    img = np.asarray(Image.open(shot).convert("RGB"))  # (H, W, 3)
    assert img.shape == (2000, 1200, 3)
    colours = np.unique(img.reshape(-1, 3), axis=0)
    assert len(colours) > 200  # not a single colour: text, shaded cells, anti-aliased plot lines
    ink = (img.min(axis=2) < 200).mean()  # share of clearly non-white pixels
    assert 0.02 < ink < 0.9
