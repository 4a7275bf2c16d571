"""Load test for the slimtext server: POST /api/classify at several concurrency levels.

Each level runs for --seconds or --max-requests, whichever comes first; every client thread
keeps one keep-alive connection and sends the next request as soon as the last one answered
(closed loop). Prints requests/s, p50/p99 latency and failed requests per level, and writes
JSON with --json. Only ever targets 127.0.0.1.

    python bench/load.py --fake --seconds 3                  # smoke run, keyword predictor
    python bench/load.py --run runs/davidson/best --json load.json
    python bench/load.py --run RUN --workers 2               # uvicorn --workers 2
    python bench/load.py --url http://127.0.0.1:8000         # a server you started
    python bench/load.py --run RUN --batching off,on --rounds 3   # with and without batching

`--batching off,on` starts one server per mode (SLIMTEXT_BATCHING) and, `--rounds` times, runs
every level against each in turn (interleaved, so a busy machine's noise hits both alike); per
mode and level it reports the median over rounds of requests/s, p50 and p99, and the ratios
on/off. `--baseline-url` adds a server you started (an older version, say) to the same rounds
and reports on/baseline and off/baseline too.

The client runs in this Python process (httpx, one thread per client): at high request rates
it competes with the server for the CPU, so read the numbers of a fast model as a lower bound
(see docs/web.md). `--client wrk` drives each level with `wrk` instead (a C load generator,
`apt install wrk`; the same closed loop: one keep-alive connection per client, the same texts in
turn), which leaves the server most of the machine; the server's own latency_ms is then not read.

    python bench/load.py --run RUN --batching off,on --rounds 3 --client wrk
    python bench/load.py --run RUN --batching off,on --baseline-url http://127.0.0.1:8801 --client wrk
"""

import argparse
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import httpx

TEXTS = [
    "I hate you",
    "Thanks so much for helping me move last weekend!",
    "You are an idiot and everyone knows it.",
    "The weather is lovely today, let's go for a walk.",
    "honestly this is the worst service I have ever used, never again",
    "Congratulations on the new job, you earned it after all that hard work.",
    "shut up nobody asked you",
    "Can anyone recommend a good book about the history of mathematics? I liked "
    "'Journey through Genius' and want something similar, ideally with proofs.",
]


# ---- the server under test ------------------------------------------------------------------


def serve_fake(port: int, model_ms: float) -> None:
    """Run the app around a keyword predictor (optionally sleeping model_ms per call)."""
    import numpy as np
    import uvicorn

    from slimtext.serve.app import create_app

    class KeywordPredictor:
        labels = ["not toxic", "toxic"]
        thread_safe = True

        def predict_proba(self, texts):
            if model_ms:
                time.sleep(model_ms / 1000)
            rude = [any(w in t.lower() for w in ("hate", "idiot", "shut up")) for t in texts]
            return np.array([[0.1, 0.9] if r else [0.8, 0.2] for r in rude])  # (N, 2)

    from slimtext.serve.app import batching_from_env

    app = create_app(KeywordPredictor(), model_name="fake-keywords", batching=batching_from_env())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, batching: str = "") -> tuple[subprocess.Popen, str, Path]:
    port = args.port or free_port()
    log = Path(tempfile.mkstemp(prefix="slimtext-load-", suffix=".log")[1])
    env = dict(os.environ)
    if batching:
        env["SLIMTEXT_BATCHING"] = batching
    if args.fake:
        cmd = [sys.executable, __file__, "--serve-fake", "--port", str(port)]
        cmd += ["--fake-ms", str(args.fake_ms)]
    else:
        env["SLIMTEXT_RUN_DIR"] = str(Path(args.run).resolve())
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "slimtext.serve.app:app_from_env"]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers)]
        cmd += ["--http", "slimtext.serve.app:NoDelayHTTPProtocol", "--log-level", "warning"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    return proc, f"http://127.0.0.1:{port}", log


def wait_healthy(url: str, proc: subprocess.Popen | None, timeout: float, log: Path | None) -> dict:
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=5) as client:
        while True:
            if proc is not None and proc.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:] if log else ""
                sys.exit(f"server exited with code {proc.returncode} before answering:\n{tail}")
            try:
                r = client.get(url + "/healthz")
                if r.status_code == 200:
                    return r.json()
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"no answer from {url}/healthz within {timeout:.0f} s")
            time.sleep(0.2)


# ---- the load -------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted list; nan when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def run_level(url: str, concurrency: int, seconds: float, max_requests: int, texts, timeout):
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []  # client-side, ms
    server_ms: list[float] = []  # the latency_ms the server reports
    errors: Counter[str] = Counter()
    deadline = time.perf_counter() + seconds

    def take() -> int | None:
        nonlocal issued
        with lock:
            if issued >= max_requests or time.perf_counter() >= deadline:
                return None
            issued += 1
            return issued

    def worker() -> None:
        mine, mine_server, mine_errors = [], [], Counter()
        with httpx.Client(base_url=url, trust_env=False, timeout=timeout) as client:
            while (n := take()) is not None:
                payload = {"text": texts[n % len(texts)]}
                start = time.perf_counter()
                try:
                    r = client.post("/api/classify", json=payload)
                    elapsed = (time.perf_counter() - start) * 1000
                    if r.status_code == 200:
                        mine.append(elapsed)
                        mine_server.append(r.json()["latency_ms"])
                    else:
                        mine_errors[f"HTTP {r.status_code}"] += 1
                except httpx.HTTPError as e:
                    mine_errors[type(e).__name__] += 1
        with lock:
            latencies.extend(mine)
            server_ms.extend(mine_server)
            errors.update(mine_errors)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    latencies.sort()
    server_ms.sort()
    failed = sum(errors.values())
    return {
        "concurrency": concurrency,
        "requests": len(latencies) + failed,
        "ok": len(latencies),
        "failed": failed,
        "errors": dict(errors),
        "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(percentile(latencies, 50), 2),
        "p90_ms": round(percentile(latencies, 90), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(latencies[-1], 2) if latencies else math.nan,
        "server_p50_ms": round(percentile(server_ms, 50), 3),
    }


WRK_SCRIPT = """
local bodies = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", "/api/classify", {["Content-Type"] = "application/json"}, bodies[(i %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"status\\": %%d, \\"connect\\": %%d, "
    .. "\\"read\\": %%d, \\"write\\": %%d, \\"timeout\\": %%d, \\"p50\\": %%d, \\"p90\\": %%d, \\"p99\\": %%d, \\"max\\": %%d}\\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def wrk_script(texts: list[str], folder: Path) -> Path:
    """A wrk Lua script that POSTs the texts in turn and prints its summary as one JSON line."""
    bodies = ", ".join("[==[" + json.dumps({"text": t}) + "]==]" for t in texts)
    path = folder / "load.lua"
    path.write_text(WRK_SCRIPT % bodies)
    return path


def run_level_wrk(url: str, concurrency: int, seconds: float, script: Path, timeout: float) -> dict:
    """One level driven by wrk: `concurrency` connections on min(concurrency, 2) threads."""
    threads = min(concurrency, 2)
    cmd = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
           f"--timeout={max(1, round(timeout))}s", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next((x for x in out.splitlines() if x.startswith("WRK ")), None)
    if line is None:
        sys.exit(f"wrk printed no summary:\n{out}")
    w = json.loads(line[4:])
    errors = {k: w[k] for k in ("status", "connect", "read", "write", "timeout") if w[k]}
    failed = w["status"] + w["read"] + w["write"] + w["timeout"]  # connect errors send nothing
    elapsed = w["duration_us"] / 1e6
    ok = w["requests"] - w["status"]
    return {
        "concurrency": concurrency, "requests": w["requests"], "ok": ok, "failed": failed,
        "errors": errors, "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(ok / elapsed, 1) if elapsed else 0.0,
        "p50_ms": w["p50"] / 1000, "p90_ms": w["p90"] / 1000, "p99_ms": w["p99"] / 1000,
        "max_ms": w["max"] / 1000, "server_p50_ms": math.nan,
    }


def print_table(levels: list[dict]) -> None:
    cols = [
        ("concurrency", "concurrency", "d"),
        ("requests", "requests", "d"),
        ("failed", "failed", "d"),
        ("req/s", "requests_per_s", ".1f"),
        ("p50 ms", "p50_ms", ".2f"),
        ("p99 ms", "p99_ms", ".2f"),
        ("server p50 ms", "server_p50_ms", ".3f"),
    ]
    print("  ".join(f"{name:>{max(len(name), 8)}}" for name, _, _ in cols))
    for level in levels:
        print("  ".join(f"{level[key]:>{max(len(name), 8)}{fmt}}" for name, key, fmt in cols))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    target = ap.add_mutually_exclusive_group()
    target.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    target.add_argument("--run", help="start `uvicorn` on this run directory")
    target.add_argument("--fake", action="store_true", help="start a keyword-predictor server")
    ap.add_argument("--concurrency", default="1,8,32", help="comma-separated levels (1,8,32)")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each level (10)")
    ap.add_argument("--max-requests", type=int, default=20000, help="cap per level (20000)")
    ap.add_argument("--warmup", type=int, default=20, help="requests before measuring (20)")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, s (30)")
    ap.add_argument("--texts", help="file with one text per line (default: built-in samples)")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn workers with --run (1)")
    ap.add_argument("--port", type=int, default=0, help="port for a started server (free one)")
    ap.add_argument("--startup-timeout", type=float, default=180.0, help="model load wait, s")
    ap.add_argument("--fake-ms", type=float, default=0.0, help="--fake: sleep per model call")
    ap.add_argument("--batching", default="", help="comma-separated SLIMTEXT_BATCHING modes (auto,on,off), one server each (default: the server's own)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds over levels and modes (1)")
    ap.add_argument("--baseline-url", help="a running server (e.g. an older version) loaded in the same "
                    "interleaved rounds as the started ones, reported as mode 'baseline'")
    ap.add_argument("--client", default="python", choices=["python", "wrk"],
                    help="python: httpx threads in this process (default); wrk: the wrk load generator")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.serve_fake:
        serve_fake(args.port, args.fake_ms)
        return 0
    if not (args.url or args.run or args.fake):
        ap.error("give one of --url, --run or --fake")
    for given in (args.url, args.baseline_url):
        if given and urlparse(given).hostname != "127.0.0.1":
            ap.error("--url and --baseline-url must point at 127.0.0.1 (this tool only loads local servers)")
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    texts = TEXTS
    if args.texts:
        texts = [line for line in Path(args.texts).read_text().splitlines() if line.strip()]

    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    modes = [m.strip() for m in (args.batching or "").split(",") if m.strip()] or [""]
    if args.url and modes != [""]:
        ap.error("--batching starts its own servers: use --run or --fake")
    servers: dict[str, tuple] = {}  # mode -> (proc, url, log)
    if args.baseline_url:
        servers["baseline"] = (None, args.baseline_url.rstrip("/"), None)
    health: dict[str, dict] = {}
    rounds: dict[str, list[list[dict]]] = {m: [] for m in [*servers, *modes]}
    try:
        for mode in modes:
            servers[mode] = start_server(args, mode) if not args.url else (None, args.url.rstrip("/"), None)
            if args.port:
                args.port += 1
        for mode, (proc, url, log) in servers.items():
            health[mode] = wait_healthy(url, proc, args.startup_timeout, log)
            print(f"server {url}  model {health[mode].get('model')}  batching "
                  f"{health[mode].get('batching')}  labels {health[mode].get('labels')}")
            run_level(url, 1, 60.0, args.warmup, texts, args.timeout)
        if args.client == "wrk":
            if shutil.which("wrk") is None:
                sys.exit("--client wrk: no wrk on PATH (apt install wrk)")
            script = wrk_script(texts, Path(tempfile.mkdtemp(prefix="slimtext-load-")))

        def level(url: str, c: int) -> dict:
            if args.client == "wrk":
                return run_level_wrk(url, c, args.seconds, script, args.timeout)
            return run_level(url, c, args.seconds, args.max_requests, texts, args.timeout)

        for r in range(args.rounds):
            for c in levels:
                for mode, (_, url, _) in servers.items():
                    rounds[mode].append([level(url, c)])
                    print(f"  round {r + 1} concurrency {c} {mode or 'server default'}: "
                          f"{rounds[mode][-1][0]['requests_per_s']} req/s", file=sys.stderr)
    finally:
        for proc, _, log in servers.values():
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            if log is not None:
                log.unlink(missing_ok=True)

    by_mode = {mode: combine([x[0] for x in runs], levels) for mode, runs in rounds.items()}
    for mode, results in by_mode.items():
        if len(by_mode) > 1:
            print(f"batching {mode}:")
        print_table(results)
    report = {
        "target": "fake" if args.fake else (args.run or args.url),
        "server": health[modes[0]],
        "workers": args.workers if args.run else None,
        "seconds_per_level": args.seconds,
        "max_requests_per_level": args.max_requests,
        "rounds": args.rounds,
        "texts": len(texts),
        "client": args.client,
        "levels": by_mode[modes[0]],
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "started_at": started_at,
    }
    if len(by_mode) > 1:
        report["batching"] = {mode: {"server": health[mode], "levels": by_mode[mode]} for mode in by_mode}
        for a, b in (("on", "off"), ("on", "baseline"), ("off", "baseline")):
            if a in by_mode and b in by_mode:
                report[f"{a}_over_{b}"] = ratios(by_mode[a], by_mode[b])
                print(f"{a} / {b}:", json.dumps(report[f"{a}_over_{b}"]))
    results = [lvl for m in by_mode.values() for lvl in m]
    if args.json:
        for level in results:  # strict JSON has no NaN
            level.update({k: None for k, v in level.items() if isinstance(v, float) and v != v})
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 1 if any(level["failed"] for level in results) else 0


def ratios(mine: list[dict], other: list[dict]) -> list[dict]:
    """Per level: requests/s, p50 and p99 of `mine` over `other`."""
    return [{"concurrency": m["concurrency"], "requests_per_s": _ratio(m["requests_per_s"], o["requests_per_s"]),
             "p50_ms": _ratio(m["p50_ms"], o["p50_ms"]), "p99_ms": _ratio(m["p99_ms"], o["p99_ms"])}
            for m, o in zip(mine, other, strict=True)]


def _ratio(a, b):
    return round(a / b, 3) if a and b and a == a and b == b else None


def combine(runs: list[dict], levels: list[int]) -> list[dict]:
    """One row per level: the median over rounds of every number (requests summed)."""
    out = []
    for c in levels:
        mine = [r for r in runs if r["concurrency"] == c]
        row = {"concurrency": c, "rounds": len(mine)}
        for key in ("requests", "ok", "failed"):
            row[key] = sum(r[key] for r in mine)
        for key in ("requests_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms", "server_p50_ms"):
            values = sorted(r[key] for r in mine if r[key] == r[key])
            row[key] = values[len(values) // 2] if values else math.nan
        row["per_round_requests_per_s"] = [r["requests_per_s"] for r in mine]
        row["errors"] = dict(sum((Counter(r["errors"]) for r in mine), Counter()))
        out.append(row)
    return out


if __name__ == "__main__":
    sys.exit(main())
