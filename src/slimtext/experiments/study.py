"""`slimtext study`: the whole comparison on one dataset, over several seeds, then a report.

Methods (run names `<method>-s<seed>`, one run directory each under the study folder):

    teacher     the teacher transformer, fully fine-tuned
    odd, even   layer-selected students (teacher layers 1,3,5,... / 2,4,6,...), distilled
    lora-odd    the odd-layer student adapted with LoRA instead of full fine-tuning, distilled
    lstm        a BiLSTM trained on the labels alone
    distilrnn   the same BiLSTM distilled from the teacher (DistilRNN)
    tfidf       TF-IDF + logistic regression (`slimtext.recipes.baseline`)

Every run gets the same data config (dataset, split seed, `max_examples`), so all of them see
the same example ids; seeds change initialisation, dropout and batch order only.

Each run is a subprocess (`python -m slimtext train|distill ... --out <study>/<name>`): its peak
memory is its own, and a crash ends that run, not the study. The plan goes to `study.json` first.
Rerunning the same command skips finished runs (summary.json present), resumes interrupted ones
(`--resume` when a checkpoint exists) and restarts the rest from scratch, so an interrupted study
completes instead of starting over. Students wait for the teacher of their seed. `--jobs N`
(default: cores // threads per run) runs up to N independent runs at once, in plan order as
slots free up; the students of one teacher then share its logit cache, computed once under a
file lock (`slimtext.recipes.teacher_cache`).

References: Hinton et al. 2015 (KD), Sanh et al. 2019 (DistilBERT), Sajjad et al. 2023 (layer
dropping), Tang et al. 2019 (DistilRNN / BiLSTM students), Hu et al. 2021 (LoRA).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from slimtext.config import coerce_field, split_override
from slimtext.errors import SlimtextError, UnknownNameError
from slimtext.experiments.cross import check_cross, cross_evaluate
from slimtext.experiments.report import write_report
from slimtext.rundir import RunDir, RunLock, RunLockedError, atomic_write_json

# (argv of the whole command line, log file) -> exit status
Runner = Callable[[list[str], Path], int]


@dataclass(frozen=True)
class StudyPreset:
    teacher: str = field(metadata={"help": "teacher checkpoint name"})
    odd: str = field(metadata={"help": "1-based teacher layers of the odd student"})
    even: str = field(metadata={"help": "1-based teacher layers of the even student"})
    max_examples: int | None = field(
        metadata={"help": "cap each split (train/dev/test) at this many"}
    )
    max_length: int = field(metadata={"help": "tokens per example"})
    batch_size: int = field(metadata={"help": "examples per step, every method"})
    epochs: int = field(metadata={"help": "epochs of the transformer runs"})
    rnn_epochs: int = field(metadata={"help": "epochs of the LSTM and DistilRNN runs"})
    seeds: tuple[int, ...] = field(metadata={"help": "default seeds"})
    teacher_lr: float = 1e-4
    student_lr: float = 1e-4
    lora_lr: float = 1e-3
    rnn_lr: float = 2e-3
    lora_rank: int = 8
    warmup_ratio: float = 0.1
    kd_alpha: float = 0.5
    temperature: float = 2.0
    transfer: str = field(default="", metadata={"help": "DistilRNN's transfer set (distill --transfer): empty (off, both presets' default) or e.g. augment:20 (Tang et al.'s n_iter; for the full preset: --set transfer=augment:20)"})


PRESETS = {
    # 800 examples per split, 2 epochs (RNNs 6), 3 seeds: 21 runs. Measured on the 2-core dev
    # machine at --threads 1 while it was shared: 522 CPU-seconds in all (~8.7 min, about what
    # one quiet core needs; 13 min wall under load). Both quiet cores (torch's default threads)
    # should take roughly 6-7 min (extrapolated). Teacher macro-F1 ~0.92 on davidson.
    "quick": StudyPreset(
        teacher="minilm-l6",
        odd="1,3,5",
        even="2,4,6",
        max_examples=800,
        max_length=64,
        batch_size=16,
        epochs=2,
        rnn_epochs=6,
        seeds=(0, 1, 2),
        teacher_lr=1e-4,
        student_lr=2e-4,
        lora_lr=2e-3,
        rnn_lr=5e-3,
    ),
    # Hours on 2 CPU cores; minutes on a GPU.
    "full": StudyPreset(
        teacher="mpnet-base",
        odd="1,3,5,7,9,11",
        even="2,4,6,8,10,12",
        max_examples=None,
        max_length=128,
        batch_size=32,
        epochs=3,
        rnn_epochs=10,
        seeds=(0, 1, 2),
        teacher_lr=2e-5,
        student_lr=5e-5,
        lora_lr=5e-4,
        rnn_lr=1e-3,
    ),
}


def preset_with(name: str, overrides: list[str] | None = None) -> StudyPreset:
    """A preset with `key=value` overrides of its fields (e.g. `epochs=1`, `max_examples=4000`)."""
    if name not in PRESETS:
        raise UnknownNameError("study preset", name, list(PRESETS))
    changes = {}
    for item in overrides or []:
        key, value = split_override(item, "preset override")
        if key == "seeds":
            raise SlimtextError("set the seeds with --seeds, not --set")
        try:
            changes[key] = coerce_field(StudyPreset, key, value, "study preset key")
        except ValueError as e:
            raise SlimtextError(f"preset override {item!r}: {e}") from None
    return replace(PRESETS[name], **changes)


METHODS = ("teacher", "odd", "even", "lora-odd", "lstm", "distilrnn", "tfidf")


@dataclass
class PlannedRun:
    name: str
    group: str
    seed: int | None
    argv: list[str]  # after `python -m`
    resume_argv: list[str] | None = None  # after `python -m`; None: restart from scratch
    needs: list[str] = field(default_factory=list)  # runs that must have finished first


def _opt(**kw) -> list[str]:
    out = []
    for k, v in kw.items():
        if v is not None:
            out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def plan_study(
    p: StudyPreset, data: str, seeds, out: Path, data_dir: str | None = None, threads: int = 0
) -> list[PlannedRun]:
    """The runs of a study, in order (per seed: teacher first, then the runs that need it)."""
    data_opts = _opt(data=data, data_dir=data_dir, split_seed=0, max_examples=p.max_examples)
    runs = []
    for s in seeds:
        common = (
            data_opts + _opt(seed=s, batch_size=p.batch_size, threads=threads or None) + ["--quiet"]
        )
        tf = common + _opt(max_length=p.max_length, epochs=p.epochs, warmup_ratio=p.warmup_ratio)
        rnn = common + _opt(max_length=p.max_length, epochs=p.rnn_epochs, lr=p.rnn_lr)
        teacher = out / f"teacher-s{s}"
        kd = _opt(teacher=teacher, kd_alpha=p.kd_alpha, temperature=p.temperature)
        specs = {
            "teacher": ("train", tf + _opt(model=p.teacher, method="full", lr=p.teacher_lr)),
            "odd": (
                "distill",
                tf
                + kd
                + _opt(student="layers", student_layers=p.odd, method="full", lr=p.student_lr),
            ),
            "even": (
                "distill",
                tf
                + kd
                + _opt(student="layers", student_layers=p.even, method="full", lr=p.student_lr),
            ),
            "lora-odd": (
                "distill",
                tf
                + kd
                + _opt(
                    student="layers",
                    student_layers=p.odd,
                    method="lora",
                    lora_rank=p.lora_rank,
                    lr=p.lora_lr,
                ),
            ),
            "lstm": ("train", rnn + _opt(model="lstm", method="full")),
            "distilrnn": ("distill", rnn + kd + _opt(student="lstm", method="full", transfer=p.transfer or None)),
        }
        for group, (command, opts) in specs.items():
            name = f"{group}-s{s}"
            runs.append(
                PlannedRun(
                    name,
                    group,
                    s,
                    ["slimtext", command, *opts, "--out", str(out / name)],
                    ["slimtext", command, "--resume", str(out / name), "--quiet"],
                    [teacher.name] if command == "distill" else [],
                )
            )
        runs.append(
            PlannedRun(
                f"tfidf-s{s}",
                "tfidf",
                s,
                [
                    "slimtext.recipes.baseline",
                    *data_opts,
                    *_opt(seed=s),
                    "--quiet",
                    "--out",
                    str(out / f"tfidf-s{s}"),
                ],
            )
        )
    return runs


_LIVE: set[subprocess.Popen] = set()  # children of subprocess_runner still running (any thread)
_LIVE_LOCK = threading.Lock()


def _kill_live() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        _kill_group(proc)


def subprocess_runner(argv: list[str], log: Path) -> int:
    """Run one command with its output appended to `log`; returns the exit status. The command gets
    its own process group, killed whole if this process leaves early (an exception, Ctrl-C, or
    SIGTERM/SIGHUP under `execute`, in whichever thread the command was started); on Linux it
    also gets SIGTERM if the thread that started it dies outright."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"\n$ {shlex.join(argv)}\n")
        f.flush()
        proc = None
        try:  # from the moment the child exists: a signal between Popen and wait still kills it
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True,
                                    preexec_fn=_die_with(os.getpid()) if sys.platform == "linux" else None)
            with _LIVE_LOCK:
                _LIVE.add(proc)
            return proc.wait()
        except BaseException:
            if proc is not None:
                _kill_group(proc)
            raise
        finally:
            if proc is not None:
                with _LIVE_LOCK:
                    _LIVE.discard(proc)


def _die_with(parent: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM when `parent` dies (prctl PR_SET_PDEATHSIG). libc is
    looked up here, in the parent: between fork and exec in a process with other threads (`--jobs`)
    the child must not take locks such as dlopen's."""
    import ctypes  # noqa: PLC0415

    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _kill_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)  # the group still exists: its leader is not yet reaped
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


HEARTBEAT_S = 600.0  # while runs train quietly, a line per running run this often


def execute(
    runs: list[PlannedRun], out: Path, runner: Runner | None = None, quiet: bool = False, jobs: int = 1,
    heartbeat: float = HEARTBEAT_S,
) -> dict[str, str]:
    """Run the plan, resumably, up to `jobs` runs at once (each after the runs it needs). Returns
    name -> 'finished' (already), 'ran', 'failed' or 'blocked' (a run it needs did not finish).
    Output of each run goes to `out/logs/<name>.log`; every `heartbeat` seconds (0: never) a line
    per running run says where its training is (`RunDir.describe_progress`)."""
    if jobs < 1:
        raise SlimtextError(f"--jobs must be at least 1, got {jobs}")
    with _sigterm_as_exit():  # `kill STUDY_PID` also ends the runs in progress and their children
        return _execute(runs, out, runner or subprocess_runner, quiet, jobs, heartbeat)


@contextlib.contextmanager
def _sigterm_as_exit():
    """Turn SIGTERM and SIGHUP into SystemExit while runs execute, so the runner kills its child's
    process group on the way out instead of leaving it to write into a run directory the next
    attempt will use."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


def _busy(run_dir: Path) -> bool:
    """Whether a live process holds the run's lock (another study writing the same folder)."""
    if not (run_dir / ".lock").exists():
        return False
    try:
        RunLock(run_dir).acquire().release()
    except RunLockedError:
        return True
    return False


def default_jobs(threads: int) -> int:
    """Runs at once by default: the cores over the threads each run uses (1 when runs use torch's
    default, which is every core)."""
    return max(1, (os.cpu_count() or 1) // threads) if threads else 1


def _distills(run: PlannedRun) -> bool:
    return len(run.argv) > 1 and run.argv[1] == "distill"


def _would_wait(run: PlannedRun, running, status: dict[str, str], runs: list[PlannedRun]) -> bool:
    """A student of a teacher whose other student is running while none has ended: that one may
    be computing the teacher's logits, and the cache's lock would hold this run idle in a slot."""
    if not _distills(run):
        return False
    siblings = [r for r in runs if r is not run and _distills(r) and r.needs == run.needs]
    return any(r.name in running for r in siblings) and not any(r.name in status for r in siblings)


def _downstream(run: PlannedRun, runs: list[PlannedRun]) -> int:
    """How many runs need this one, directly or through others (a teacher: its students)."""
    below, todo = set(), [run.name]
    while todo:
        name = todo.pop()
        for r in runs:
            if name in r.needs and r.name not in below:
                below.add(r.name)
                todo.append(r.name)
    return len(below)


def _next_ready(pending, status, names, running, runs) -> tuple[int, PlannedRun] | None:
    """The next run to start among those whose runs it needs have ended: one that would not wait
    on a teacher-logit cache (`_would_wait`), then the one most runs wait for (a teacher before
    the baselines, so its students can fill the other slots sooner), then plan order; None when
    none is ready."""
    ready = [item for item in pending if not any(n in names and n not in status for n in item[1].needs)]
    return min(ready, key=lambda item: (_would_wait(item[1], running, status, runs), -_downstream(item[1], runs)),
               default=None)


def _heartbeat(running: dict, out: Path, t_start: float, say: Callable, every: float,
               stop: threading.Event) -> None:
    """Every `every` seconds until `stop`: one line per running run, with its training progress."""
    while not stop.wait(every):
        now = time.monotonic()
        for name, (head, t0) in list(running.items()):
            say(f"{head}: running for {_clock(now - t0)}, {RunDir(out / name).describe_progress()} "
                f"(elapsed {_clock(now - t_start)})")


def _execute(runs: list[PlannedRun], out: Path, runner: Runner, quiet: bool, jobs: int = 1,
             heartbeat: float = HEARTBEAT_S) -> dict[str, str]:
    """Start runs as slots free up (at most `jobs` at once), each only after every run it needs
    has ended: teachers first, and a student only after its teacher's logits are cached while
    other work is ready (`_next_ready`); one line when a run starts, one when it ends, and one
    per running run every `heartbeat` seconds (`_heartbeat`)."""
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    status: dict[str, str] = {}
    names = {r.name for r in runs}
    pending = list(enumerate(runs, 1))
    running: dict[str, tuple[str, float]] = {}  # name -> (head, start time)
    ended: queue.Queue[tuple[str, int | BaseException]] = queue.Queue()
    t_start = time.monotonic()

    def run_one(run: PlannedRun, argv: list[str]) -> None:
        try:
            ended.put((run.name, runner([sys.executable, "-m", *argv], out / "logs" / f"{run.name}.log")))
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which re-raises it
            ended.put((run.name, e))

    def start_ready() -> None:
        while len(running) < jobs and (item := _next_ready(pending, status, names, running, runs)):
            i, run = item
            pending.remove(item)
            d = out / run.name
            head = f"[{i}/{len(runs)}] {run.name}"
            if (d / "summary.json").exists():
                status[run.name] = "finished"
                say(f"{head}: already finished, skipped")
                continue
            missing = [n for n in run.needs if not (out / n / "summary.json").exists()]
            if missing:
                status[run.name] = "blocked"
                say(f"{head}: blocked, {', '.join(missing)} did not finish")
                continue
            if _busy(d):
                status[run.name] = "failed"
                say(f"{head}: another process is writing it ({(d / '.lock').read_text().strip()}); skipped")
                continue
            if run.resume_argv and (d / "checkpoint" / "state.pt").exists():
                argv, action = run.resume_argv, "resuming"
            else:
                if d.is_dir():  # started but nothing to resume from: start over
                    shutil.rmtree(d)
                argv, action = run.argv, "starting"
            say(f"{head}: {action} (elapsed {_clock(time.monotonic() - t_start)})")
            running[run.name] = (head, time.monotonic())
            if jobs == 1:  # in this thread: Ctrl-C reaches the runner, which kills its child
                run_one(run, argv)
            else:
                threading.Thread(target=run_one, args=(run, argv), daemon=True).start()

    beat = threading.Event()
    if heartbeat > 0 and not quiet:
        args = (running, out, t_start, say, heartbeat, beat)
        threading.Thread(target=_heartbeat, args=args, daemon=True).start()
    try:
        while pending or running:
            waiting = len(pending)
            start_ready()
            if not running:
                if len(pending) == waiting:  # nothing can start: they wait on each other
                    for _, run in pending:
                        status[run.name] = "blocked"
                    pending.clear()
                continue
            try:
                name, rc = ended.get(timeout=0.2)  # a timeout, so SIGTERM/Ctrl-C get through
            except queue.Empty:
                continue
            if isinstance(rc, BaseException):
                raise rc
            head, t0 = running.pop(name)
            ok = rc == 0 and (out / name / "summary.json").exists()
            status[name] = "ran" if ok else "failed"
            say(
                f"{head}: {'done' if ok else f'FAILED (exit {rc}), see logs/{name}.log'} in "
                f"{_clock(time.monotonic() - t0)} (elapsed {_clock(time.monotonic() - t_start)})"
            )
    except BaseException:
        _kill_live()  # runs in other threads: end their children too
        raise
    finally:
        beat.set()
    return status


def write_plan(path: Path, header: dict, runs: list[PlannedRun], compare: tuple[str, ...]) -> None:
    """Write the plan atomically; refuse when an existing plan differs in any `compare` key."""
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        changed = [k for k in compare if old.get(k) != header.get(k)]
        if changed:
            raise SlimtextError(
                f"{path} holds another plan (different {', '.join(changed)}); "
                "choose another --out or delete that folder"
            )
    plan = {
        **header,
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "python": sys.executable,
        "runs": [
            {
                "name": r.name,
                "group": r.group,
                "seed": r.seed,
                "needs": r.needs,
                "command": shlex.join(["python", "-m", *r.argv]),
                "resume": shlex.join(["python", "-m", *r.resume_argv]) if r.resume_argv else None,
            }
            for r in runs
        ],
    }
    atomic_write_json(path, plan)


def run_study(
    preset: str = "quick",
    data: str = "davidson",
    seeds=None,
    out: Path | None = None,
    data_dir: str | None = None,
    quiet: bool = False,
    threads: int = 0,
    runner: Runner | None = None,
    overrides: list[str] | None = None,
    cross: list[str] | None = None,
    jobs: int | None = None,
    heartbeat: float = HEARTBEAT_S,
) -> Path:
    """Run (or complete) a study and write its report; returns the path of report.md.

    seeds: default the preset's. threads: torch threads per run (0: torch's default).
    runner: how a command runs (tests inject a fake); default a subprocess per run.
    overrides: `key=value` changes to the preset's fields, recorded in study.json.
    cross: datasets to evaluate every finished run on afterwards (test splits; `cross.json` and
    the report's train-on x test-on matrix, see experiments/cross.py); checked before any run.
    jobs: runs at once (default `default_jobs(threads)`: cores // threads); with jobs > 1 and
    threads 0, each run gets cores // jobs threads so the runs share the cores instead of
    oversubscribing them. heartbeat: seconds between progress lines for running runs (0: none)."""
    p = preset_with(preset, overrides)
    jobs = default_jobs(threads) if jobs is None else jobs
    if jobs < 1:
        raise SlimtextError(f"--jobs must be at least 1, got {jobs}")
    if jobs > 1 and not threads:
        threads = max(1, (os.cpu_count() or 1) // jobs)
    seeds = tuple(int(s) for s in (seeds if seeds is not None else p.seeds))
    if not seeds:
        raise SlimtextError("a study needs at least one seed")
    name = Path(data).stem.replace(":", "_").replace("/", "_")
    out = Path(out or Path("runs") / f"study-{name}-{preset}").absolute()
    runs = plan_study(p, data, seeds, out, data_dir, threads)
    header = {
        "kind": "study",
        "preset": preset,
        "data": data,
        "seeds": list(seeds),
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(p).items()},
    }
    if cross:
        check_cross(data, cross, data_dir)
        header["cross"] = list(cross)
    write_plan(out / "study.json", header, runs, ("preset", "data", "settings"))
    status = execute(runs, out, runner, quiet, jobs, heartbeat)
    dirs = [out / r.name for r in runs if (out / r.name).is_dir()]
    if cross:
        cross_evaluate(dirs, list(cross), out, data_dir, quiet=quiet)
    md, html = write_report(
        dirs, out, title=f"slimtext study: {data}, preset {preset}{''.join(f', {o}' for o in overrides or [])}",
        sweep=False,
    )
    if not quiet:
        print(f"report: {md}\n        {html}", file=sys.stderr)
    bad = [n for n, s in status.items() if s in ("failed", "blocked")]
    if bad:
        raise SlimtextError(
            f"{len(bad)} of {len(runs)} runs did not finish ({', '.join(bad)}); their logs are "
            f"in {out / 'logs'}. The report covers the finished runs. Run the same command "
            "again to retry them (finished runs are skipped)."
        )
    return md
