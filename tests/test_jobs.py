"""`slimtext study --jobs N` / `sweep --jobs N`: independent runs at once, a teacher before its
students, the teacher-logit cache computed once under a lock, and a killed study that resumes.
Runs are faked (tests/test_study.py's FakeRunner), slowed a little so that they overlap."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from slimtext.data.registry import Example
from slimtext.errors import SlimtextError
from slimtext.experiments import study
from slimtext.experiments.study import default_jobs, run_study
from slimtext.recipes import teacher_cache
from test_study import FakeRunner


class CountingTeacher(torch.nn.Module):
    """A stand-in teacher whose forward passes are counted (slow enough to overlap)."""

    def __init__(self, counts: dict, name: str):
        super().__init__()
        self.counts, self.name = counts, name
        self.linear = torch.nn.Linear(1, 2)

    def forward(self, input_ids, attention_mask):
        self.counts[self.name] = self.counts.get(self.name, 0) + 1
        time.sleep(0.05)
        return self.linear(input_ids[:, :1].float())  # (B, 2)


class Tok:
    pad_id = 0

    def encode(self, texts):
        return [[1, 2] for _ in texts]


EXAMPLES = [Example(id=str(i), text=f"text {i}", label="a") for i in range(5)]


class ConcurrentRunner(FakeRunner):
    """FakeRunner that takes a little time, records when each run starts and ends and how many run
    at once, and has every distill run fetch its teacher's logits through the real cache."""

    def __init__(self, fail=None):
        super().__init__(fail)
        self.lock = threading.Lock()
        self.live, self.most = 0, 0
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.forwards: dict[str, int] = {}

    def __call__(self, argv, log):
        out = Path(argv[argv.index("--resume" if "--resume" in argv else "--out") + 1])
        with self.lock:
            self.live += 1
            self.most = max(self.most, self.live)
            self.started[out.name] = time.monotonic()
        try:
            if "--teacher" in argv:
                teacher = Path(argv[argv.index("--teacher") + 1])
                assert (teacher / "summary.json").exists(), f"{out.name} started before its teacher finished"
                model = CountingTeacher(self.forwards, teacher.name)
                teacher_cache.teacher_logits(teacher, EXAMPLES, teacher=(model, Tok()))
            time.sleep(0.05)
            return super().__call__(argv, log)
        finally:
            with self.lock:
                self.live -= 1
                self.ended[out.name] = time.monotonic()


@pytest.fixture
def fake_cache_key(monkeypatch):
    """Fake teacher runs have no weights to hash: key the cache by the teacher folder's name."""
    monkeypatch.setattr(teacher_cache, "cache_key", lambda teacher_dir, ids: Path(teacher_dir).name)


def test_default_jobs_is_cores_over_threads(monkeypatch):
    monkeypatch.setattr(study.os, "cpu_count", lambda: 8)
    assert default_jobs(1) == 8 and default_jobs(2) == 4 and default_jobs(3) == 2
    assert default_jobs(0) == 1  # torch's default already uses every core
    assert default_jobs(16) == 1


def test_two_jobs_teacher_first_and_the_cache_once(tmp_path, fake_cache_key):
    runner = ConcurrentRunner()
    run_study(seeds=(0, 1), out=tmp_path / "s", runner=runner, quiet=True, threads=1, jobs=2)
    assert len(runner.calls) == 14 and len(list((tmp_path / "s").glob("*-s?/summary.json"))) == 14
    assert runner.most == 2  # two at once, never more
    for name, t in runner.started.items():
        if name.split("-s")[0] in ("odd", "even", "lora-odd", "distilrnn"):
            assert t >= runner.ended[f"teacher-s{name[-1]}"], name
    # four students per teacher, logits computed once per teacher (one batch of 5 examples)
    assert runner.forwards == {"teacher-s0": 1, "teacher-s1": 1}


def test_the_cache_lock_makes_concurrent_students_compute_once(tmp_path, fake_cache_key):
    forwards: dict[str, int] = {}
    results = []

    def student():
        model = CountingTeacher(forwards, "t")
        results.append(teacher_cache.teacher_logits(tmp_path / "t", EXAMPLES, teacher=(model, Tok())))

    threads = [threading.Thread(target=student) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert forwards == {"t": 1}
    assert sorted(r["cache_hit"] for r in results) == [False, True, True, True]
    assert all(torch.equal(r["logits"], results[0]["logits"]) for r in results)


def test_a_killed_jobs_study_resumes(tmp_path, fake_cache_key):
    out = tmp_path / "study"
    first = ConcurrentRunner(fail={"odd-s0": "killed", "teacher-s1": "crashed", "lstm-s0": "killed"})
    with pytest.raises(SlimtextError, match=r"7 of 14 runs did not finish"):
        run_study(seeds=(0, 1), out=out, runner=first, quiet=True, threads=1, jobs=2)
    assert "odd-s1" not in first.names() and "lstm-s1" in first.names()  # blocked, not started
    second = ConcurrentRunner()
    run_study(seeds=(0, 1), out=out, runner=second, quiet=True, threads=1, jobs=2)
    assert sorted(second.names()) == sorted(["odd-s0", "lstm-s0", "teacher-s1", "odd-s1", "even-s1",
                                             "lora-odd-s1", "distilrnn-s1"])
    resumed = {Path(a[a.index("--resume") + 1]).name for a in second.calls if "--resume" in a}
    assert resumed == {"odd-s0", "lstm-s0"}  # from their checkpoints; teacher-s1 from scratch
    assert len(list(out.glob("*-s?/summary.json"))) == 14
    assert second.ended["teacher-s1"] <= min(second.started[f"{m}-s1"] for m in ("odd", "even", "lora-odd", "distilrnn"))


def test_jobs_without_threads_share_the_cores(tmp_path, monkeypatch):
    monkeypatch.setattr(study.os, "cpu_count", lambda: 4)
    runner = FakeRunner()
    run_study(seeds=(0,), out=tmp_path / "s", runner=runner, quiet=True, jobs=2)
    trains = [a for a in runner.calls if "--threads" in a]
    assert trains and all(a[a.index("--threads") + 1] == "2" for a in trains)
    with pytest.raises(SlimtextError, match="--jobs must be at least 1"):
        run_study(seeds=(0,), out=tmp_path / "t", runner=FakeRunner(), quiet=True, jobs=0)


def test_progress_lines_stay_one_start_and_one_end_per_run(tmp_path, capsys, fake_cache_key):
    run_study(seeds=(0,), out=tmp_path / "s", runner=ConcurrentRunner(), threads=1, jobs=2)
    err = capsys.readouterr().err.splitlines()
    for name in ("teacher-s0", "odd-s0", "tfidf-s0"):
        mine = [line for line in err if f"] {name}:" in line]
        assert len(mine) == 2 and "starting" in mine[0] and "done in" in mine[1], mine


def test_sweep_jobs_run_points_at_once(tmp_path, monkeypatch):
    from slimtext.experiments.sweep import run_sweep
    from test_sweep import FakeTrain, _sweep_file

    class Slow(FakeTrain):
        def __init__(self):
            super().__init__()
            self.lock, self.live, self.most = threading.Lock(), 0, 0

        def __call__(self, argv, log):
            with self.lock:
                self.live += 1
                self.most = max(self.most, self.live)
            time.sleep(0.1)
            try:
                return super().__call__(argv, log)
            finally:
                with self.lock:
                    self.live -= 1

    runner = Slow()
    run_sweep(_sweep_file(tmp_path), out=tmp_path / "a", runner=runner, quiet=True, jobs=2)
    assert len(runner.calls) == 4 and runner.most == 2
    monkeypatch.setattr(study.os, "cpu_count", lambda: 1)  # base threads 1 on one core: one at a time
    runner = Slow()
    run_sweep(_sweep_file(tmp_path), out=tmp_path / "b", runner=runner, quiet=True)
    assert len(runner.calls) == 4 and runner.most == 1


# --- a study with runs in several threads: a dying study still takes every child along -----------

_PARENT = """
import sys
from pathlib import Path
from slimtext.experiments.study import PlannedRun, execute, subprocess_runner
out, child = Path(sys.argv[1]), sys.argv[2]
runs = [PlannedRun(f"r{i}-s0", "r", 0, ["x", "--out", str(out / f"r{i}-s0")]) for i in range(2)]
def runner(argv, log):
    return subprocess_runner([sys.executable, "-c", child, str(out / (log.stem + ".pids"))], log)
execute(runs, out, runner=runner, quiet=True, jobs=2)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["TERM", "KILL"])
def test_a_dying_jobs_study_takes_every_child_along(tmp_path, sig):
    from test_faults import _CHILD, _gone, _wait

    files = [tmp_path / f"r{i}-s0.pids" for i in range(2)]
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(tmp_path), _CHILD])
    pids: list[int] = []
    try:
        assert _wait(lambda: all(f.exists() and " " in f.read_text() for f in files), 60), "not both started"
        pids = [int(p) for f in files for p in f.read_text().split()]  # child, grandchild, child, grandchild
        parent.send_signal(sig)
        parent.wait(30)
        assert _wait(lambda: _gone(pids[0]) and _gone(pids[2]), 15), "a run outlived the study"
        if sig != signal.SIGKILL:
            assert _wait(lambda: _gone(pids[1]) and _gone(pids[3]), 15), "a run's own child outlived it"
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        parent.kill()


def test_a_student_does_not_take_a_slot_to_wait_on_its_siblings_teacher_logits():
    # teacher-s0 and teacher-s1 have ended; odd-s0 runs and may be computing teacher-s0's logits
    runs = study.plan_study(study.PRESETS["quick"], "davidson", (0, 1), Path("/s"))
    names = {r.name for r in runs}
    status = {n: "ran" for n in ("teacher-s0", "lstm-s0", "tfidf-s0", "teacher-s1")}
    running = {"odd-s0": None}
    pending = [(i, r) for i, r in enumerate(runs, 1) if r.name not in status and r.name not in running]
    first = study._next_ready(pending, status, names, running, runs)
    assert first[1].name == "odd-s1"  # not even-s0, which would sit on teacher-s0's cache lock
    # with nothing else left to do, the sibling starts anyway (it waits, but no slot stays idle)
    only = [(i, r) for i, r in pending if r.name == "even-s0"]
    assert study._next_ready(only, status, names, running, runs)[1].name == "even-s0"
    # once a sibling has ended, the cache is written: plan order again
    status["odd-s0"] = "ran"
    assert study._next_ready(pending, status, names, {}, runs)[1].name == "even-s0"


def test_a_teacher_starts_before_ready_baselines_and_students():
    # resuming a study where seeds 0 and 1 ended but the LoRA students: teacher-s2 is on the
    # longest chain (odd, even, LoRA and DistilRNN wait for it), so it goes first
    runs = study.plan_study(study.PRESETS["quick"], "davidson", (0, 1, 2), Path("/s"))
    names = {r.name for r in runs}
    status = {r.name: "finished" for r in runs if r.seed in (0, 1) and r.group != "lora-odd"}
    pending = [(i, r) for i, r in enumerate(runs, 1) if r.name not in status]
    assert pending[0][1].name == "lora-odd-s0"  # plan order alone would start it first
    assert study._next_ready(pending, status, names, {}, runs)[1].name == "teacher-s2"
    assert study._downstream(runs[0], runs) == 4 and study._downstream(runs[-1], runs) == 0


def test_teacher_logits_in_the_teachers_own_precision_cached_apart(tmp_path, fake_cache_key):
    import json

    teacher = tmp_path / "t"
    teacher.mkdir()
    (teacher / "summary.json").write_text(json.dumps({"precision": "bf16"}))
    forwards: dict[str, int] = {}
    model = CountingTeacher(forwards, "t")
    exact = teacher_cache.teacher_logits(teacher, EXAMPLES, teacher=(model, Tok()), precision="fp32")
    auto = teacher_cache.teacher_logits(teacher, EXAMPLES, teacher=(model, Tok()), precision="auto")
    assert (exact["precision"], auto["precision"]) == ("fp32", "bf16")  # auto: what the teacher ran in
    assert exact["path"] != auto["path"] and forwards == {"t": 2}  # two entries, never mixed
    torch.testing.assert_close(auto["logits"], exact["logits"], atol=2e-2, rtol=2e-2)
    again = teacher_cache.teacher_logits(teacher, EXAMPLES, teacher=(model, Tok()), precision="auto")
    assert again["cache_hit"] and again["precision"] == "bf16" and torch.equal(again["logits"], auto["logits"])
    (teacher / "summary.json").write_text(json.dumps({}))  # a teacher that does not say: fp32
    assert teacher_cache.logits_precision(teacher, "auto") == "fp32"
    with pytest.raises(SlimtextError, match="fp16"):
        teacher_cache.logits_precision(teacher, "fp16")


# --- the heartbeat: where each quiet run's training is ---------------------------------------------

def test_describe_progress_reads_what_fit_notes(tmp_path):
    from slimtext.rundir import RunDir

    run = RunDir(tmp_path / "r")
    assert run.describe_progress() == "not training yet"
    run.write_progress(1, 2, 25, 100, 50.0)  # 2 s a step, 75 + 100 steps left
    assert run.describe_progress() == "epoch 1/2, step 25/100 (25 %), ~6m of training left"
    run.write_progress(1, 1, 10, 620, 3600.0)
    assert run.describe_progress() == "epoch 1/1, step 10/620 (1 %), ~61h00m of training left"
    run.write_progress(1, 2, 100, 100, 200.0)
    assert run.describe_progress() == "evaluating epoch 1/2"
    run.write_progress(2, 2, 100, 100, 200.0)
    assert run.describe_progress() == "training done, evaluating"
    run.progress_path.write_text("{torn")
    assert run.describe_progress() == "not training yet"


def test_heartbeat_says_where_each_running_run_is(tmp_path, capsys):
    from fake_runs import write_run
    from slimtext.rundir import RunDir

    def runner(argv, log):
        out = Path(argv[argv.index("--out") + 1])
        RunDir(out).write_progress(1, 2, 5, 10, 20.0)
        time.sleep(0.6)
        write_run(out, f1=0.8, seed=0)
        return 0

    def plan(folder):
        return [study.PlannedRun(f"r{i}-s0", "r", 0, ["x", "--out", str(folder / f"r{i}-s0")]) for i in range(2)]

    status = study.execute(plan(tmp_path / "a"), tmp_path / "a", runner=runner, jobs=2, heartbeat=0.1)
    assert status == {"r0-s0": "ran", "r1-s0": "ran"}
    beats = [line for line in capsys.readouterr().err.splitlines() if "running for" in line]
    for name in ("r0-s0", "r1-s0"):
        assert any(f"{name}: running for 0m00s, epoch 1/2, step 5/10 (50 %), ~1m of training left" in line
                   for line in beats), beats
    study.execute(plan(tmp_path / "b"), tmp_path / "b", runner=runner, jobs=1, heartbeat=0.1)  # one job: too
    assert "r0-s0: running for" in capsys.readouterr().err
    study.execute(plan(tmp_path / "c"), tmp_path / "c", runner=runner, quiet=True, heartbeat=0.1)
    assert capsys.readouterr().err == ""
