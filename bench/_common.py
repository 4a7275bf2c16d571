"""Shared pieces of the speed benchmarks: threads, machine facts, matmul peaks, tables, JSON.

Every benchmark runs its contenders interleaved (A, B, A, B, ...) in one process, so a noisy
neighbour slows both alike; read the ratios, not the absolute numbers, on a shared machine.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def physical_cores() -> int:
    """Physical cores this process may run on (SMT siblings counted once)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cores = set()
    for cpu in cpus:
        f = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        cores.add(f.read_text().strip() if f.exists() else str(cpu))
    return max(1, len(cores) or (os.cpu_count() or 1))


def set_threads(n: int) -> int:
    """Use n torch threads (0: one per physical core); returns the number set."""
    n = n or physical_cores()
    torch.set_num_threads(n)
    return n


def machine() -> dict:
    """The run summary's machine record, plus what a benchmark reader needs about the CPU."""
    from slimtext.recipes.finetune import machine as run_machine  # noqa: PLC0415
    from slimtext.train.precision import device_name  # noqa: PLC0415

    return {**run_machine(), "processor": device_name(torch.device("cpu")), "physical_cores": physical_cores(),
            "load_average": os.getloadavg()}


def matmul_gflops(dtype: torch.dtype, m: int, k: int, n: int, seconds: float = 0.3) -> float:
    """GFLOP/s of `F.linear` (m, k) x (n, k)^T in `dtype`, best of short timed runs."""
    x, w = torch.randn(m, k).to(dtype), torch.randn(n, k).to(dtype)
    F.linear(x, w)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        F.linear(x, w)
        best = max(best, 2 * m * k * n / (time.perf_counter() - t0) / 1e9)
    return best


def matmul_peaks(hidden: int, tokens: int = 1024) -> dict:
    """Measured fp32 and bf16 linear-layer GFLOP/s at the model's shapes (tokens x H -> 4H and
    back) and at 2048^3; the peak is the best of them."""
    shapes = [(tokens, hidden, 4 * hidden), (tokens, 4 * hidden, hidden), (2048, 2048, 2048)]
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        per = {f"{m}x{k}x{n}": round(matmul_gflops(dtype, m, k, n), 1) for m, k, n in shapes}
        out[name] = {"peak_gflops": max(per.values()), "shapes": per}
    return out


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """columns: (key, header, format spec) triples; missing values print as '-'."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append([("-" if r.get(k) is None else format(r[k], f)) for k, _, f in columns])
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    for j, line in enumerate(cells):
        cols = (c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))
        print("  ".join(cols))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def write_json(path: str | Path | None, obj: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(obj, indent=2, default=str) + "\n")
        print(f"wrote {path}")
