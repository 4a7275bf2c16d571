"""`--precision auto`: bf16 autocast only where this machine runs the model's matmuls faster in it.

A short probe times the model's linear layers (every distinct `nn.Linear` shape, at a batch of
`rows` token rows) once in fp32 and once in bf16, best of a few repeats each; `auto` picks bf16
only when fp32 takes at least `MIN_SPEEDUP` (1.2) times as long. On a CPU with native bf16
(AVX-512 BF16, AMX) that is ~1.5x; on one without, bf16 is emulated and slower, and `auto`
stays fp32 (unchanged from the fp32 path).

The result is cached in `$SLIMTEXT_CACHE/precision/<key>.json`, the key being the device (CPU
model or GPU name), the torch version, the thread count and the shapes, so the probe runs once
per machine and model family. Training records `precision` (the one used) and
`precision_probe` (these numbers) in summary.json.

Mixed precision here is autocast only: parameters, gradients and optimizer state stay fp32 (the
"master weights"), and only the forward's matmuls run in bf16.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from slimtext.data.sources import cache_dir
from slimtext.errors import UnknownNameError
from slimtext.rundir import atomic_write_json

PRECISIONS = ("auto", "fp32", "bf16")
MIN_SPEEDUP = 1.2  # bf16 must be at least this much faster than fp32 to be chosen
# below this many weights in the largest linear layer (256 x 256), a step is overhead, not
# matmuls: fp32 without a probe (and tiny test models stay deterministic whatever the load)
MIN_PROBE_WEIGHTS = 256 * 256

# shapes -> (fp32 seconds, bf16 seconds): the timing function (tests pass a fake)
Timer = Callable[[list[tuple[int, int]], int, torch.device], tuple[float, float]]


def check(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UnknownNameError("precision", precision, list(PRECISIONS))


def decide(fp32_seconds: float, bf16_seconds: float, min_speedup: float = MIN_SPEEDUP) -> str:
    """bf16 when fp32 takes at least `min_speedup` times as long, else fp32."""
    return "bf16" if bf16_seconds > 0 and fp32_seconds / bf16_seconds >= min_speedup else "fp32"


def linear_shapes(model: nn.Module) -> list[tuple[int, int]]:
    """Distinct (in_features, out_features) of the model's linear layers, trainable or not (at
    most 8, the largest first); a model without any gets one 16x16 stand-in."""
    shapes = {(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)}
    return sorted(shapes, key=lambda s: -s[0] * s[1])[:8] or [(16, 16)]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_key(device: torch.device, shapes: list[tuple[int, int]], rows: int) -> str:
    """The device's model name, torch version, threads, shapes and rows, hashed."""
    parts = [device_name(device), torch.__version__, str(torch.get_num_threads()), json.dumps(shapes), str(rows)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def time_matmuls(shapes: list[tuple[int, int]], rows: int, device: torch.device,
                 repeats: int = 3) -> tuple[float, float]:
    """Seconds for one forward pass over every shape, fp32 then bf16 (best of `repeats`). Its own
    random generator: the global RNG (dropout, batch order) is left as it was."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    out = []
    for dtype in (torch.float32, torch.bfloat16):
        pairs = [(torch.randn(rows, i, generator=g).to(device, dtype), torch.randn(o, i, generator=g).to(device, dtype))
                 for i, o in shapes]
        best = float("inf")
        for r in range(repeats + 1):
            sync()
            t0 = time.perf_counter()
            for x, w in pairs:
                torch.nn.functional.linear(x, w)
            sync()
            if r:  # the first pass warms up (allocations, kernel selection)
                best = min(best, time.perf_counter() - t0)
        out.append(best)
    return out[0], out[1]


def probe(model: nn.Module, device: torch.device, rows: int = 1024, timer: Timer | None = None,
          refresh: bool = False) -> dict:
    """The probe's record for this machine and model: {'device', 'torch', 'threads', 'shapes',
    'rows', 'fp32_s', 'bf16_s', 'speedup', 'choice', 'cached'}; from the cache when present."""
    shapes = linear_shapes(model)
    path = cache_dir() / "precision" / f"{cache_key(device, shapes, rows)}.json"
    if path.is_file() and not refresh:
        try:
            return {**json.loads(path.read_text(encoding="utf-8")), "cached": True}
        except ValueError:
            pass  # a damaged file: probe again
    fp32_s, bf16_s = (timer or time_matmuls)(shapes, rows, device)
    flops = sum(2 * rows * i * o for i, o in shapes)
    record = {"device": device_name(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "shapes": [list(s) for s in shapes], "rows": rows,
              "fp32_s": round(fp32_s, 6), "bf16_s": round(bf16_s, 6),
              "fp32_gflops": round(flops / fp32_s / 1e9, 1) if fp32_s > 0 else None,
              "bf16_gflops": round(flops / bf16_s / 1e9, 1) if bf16_s > 0 else None,
              "speedup": round(fp32_s / bf16_s, 3) if bf16_s > 0 else None,
              "min_speedup": MIN_SPEEDUP, "choice": decide(fp32_s, bf16_s)}
    atomic_write_json(path, record)
    return {**record, "cached": False}


def resolve(precision: str, model: nn.Module, device: torch.device,
            timer: Timer | None = None) -> tuple[str, dict | None]:
    """The precision to use and the probe's record (None unless `precision` is auto). bf16 on a
    device without bf16 support at all (e.g. an old GPU), or for a model whose matmuls are too
    small to matter (`MIN_PROBE_WEIGHTS`), is never chosen."""
    check(precision)
    if precision != "auto":
        return precision, None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp32", {"device": device_name(device), "choice": "fp32", "reason": "no bf16 support"}
    largest = max(i * o for i, o in linear_shapes(model))
    if largest < MIN_PROBE_WEIGHTS:
        return "fp32", {"device": device_name(device), "choice": "fp32",
                        "reason": f"largest linear layer has {largest} weights (< {MIN_PROBE_WEIGHTS}): too small to gain"}
    record = probe(model, device, timer=timer)
    return record["choice"], record
