"""How long `slimtext --help` takes to answer: the fast entry (a static command table, no torch
import) against the full Typer app it hands other command lines to (what `slimtext --help`
cost before). Interleaved runs, wall time of the whole process, median and max.

    .venv/bin/python bench/cli_startup.py --repeat 10 --json bench/results/cli_startup.json
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table, write_json  # noqa: E402

CASES = {
    "slimtext --help (entry)": [sys.executable, "-m", "slimtext", "--help"],
    "slimtext --version (entry)": [sys.executable, "-m", "slimtext", "--version"],
    "full Typer app --help": [sys.executable, "-c", "from slimtext.cli import main; main()", "--help"],
    "slimtext train --help": [sys.executable, "-m", "slimtext", "train", "--help"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    times: dict[str, list[float]] = {k: [] for k in CASES}
    for _ in range(args.repeat):
        for name, cmd in CASES.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["full Typer app --help"])
    rows = [{"case": k, "median_s": statistics.median(v), "max_s": max(v),
             "vs_full_app": base / statistics.median(v)} for k, v in times.items()]
    print_table(rows, [("case", "command", "s"), ("median_s", "median s", ".3f"),
                       ("max_s", "max s", ".3f"), ("vs_full_app", "x faster than full app", ".1f")])
    write_json(args.json, {"machine": machine(), "repeat": args.repeat, "rows": rows})


if __name__ == "__main__":
    main()
