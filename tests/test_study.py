"""`slimtext study`: the plan (names, identical data options, students after their teacher), and
resumability with an injected command runner that writes fake run directories instead of
training: a second call skips finished runs, resumes a killed one from its checkpoint and
restarts one that died before its first checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fake_runs import write_run
from slimtext.errors import SlimtextError
from slimtext.experiments.study import (
    METHODS,
    PRESETS,
    StudyPreset,
    plan_study,
    run_study,
    subprocess_runner,
)
from slimtext.rundir import RunDir


class FakeRunner:
    """Records every command; writes a finished fake run unless told to fail a run.
    fail: name -> 'killed' (checkpoint written, exit -9) or 'crashed' (config only, exit 1)."""

    def __init__(self, fail: dict[str, str] | None = None):
        self.calls: list[list[str]] = []
        self.fail = dict(fail or {})

    def __call__(self, argv: list[str], log: Path) -> int:
        self.calls.append(argv)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(" ".join(argv))
        out = Path(argv[argv.index("--resume" if "--resume" in argv else "--out") + 1])
        name = out.name
        if (how := self.fail.pop(name, None)) is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.yaml").write_text("train: {}\n")
            if how == "killed":
                (out / "checkpoint").mkdir()
                (out / "checkpoint" / "state.pt").write_bytes(b"state")
                return -9
            return 1
        if "--resume" not in argv:
            assert not out.exists(), f"{out} should have been removed or never existed"
        write_run(out, f1=0.8, seed=int(name.rsplit("-s", 1)[1]))
        return 0

    def names(self) -> list[str]:
        return [
            Path(a[a.index("--resume" if "--resume" in a else "--out") + 1]).name
            for a in self.calls
        ]


def test_plan_names_order_and_identical_data_options(tmp_path):
    runs = plan_study(PRESETS["quick"], "davidson", (0, 1), tmp_path)
    assert [r.name for r in runs[:7]] == [f"{m}-s0" for m in METHODS]
    assert len(runs) == 14 and len({r.name for r in runs}) == 14
    for r in runs:
        argv = r.argv
        assert argv[argv.index("--data") + 1] == "davidson"
        assert argv[argv.index("--split-seed") + 1] == "0"
        assert argv[argv.index("--max-examples") + 1] == str(PRESETS["quick"].max_examples)
        assert argv[argv.index("--out") + 1] == str(tmp_path / r.name)
        assert argv[argv.index("--seed") + 1] == str(r.seed)
        if "distill" in argv:
            assert r.needs == [f"teacher-s{r.seed}"]
            assert argv[argv.index("--teacher") + 1] == str(tmp_path / f"teacher-s{r.seed}")
    by = {r.name: r.argv for r in runs}
    assert by["odd-s0"][by["odd-s0"].index("--student-layers") + 1] == "1,3,5"
    assert by["even-s1"][by["even-s1"].index("--student-layers") + 1] == "2,4,6"
    lora = by["lora-odd-s0"]
    assert (
        lora[lora.index("--method") + 1] == "lora"
        and lora[lora.index("--student-layers") + 1] == "1,3,5"
    )
    assert by["distilrnn-s0"][by["distilrnn-s0"].index("--student") + 1] == "lstm"
    assert by["teacher-s0"][:2] == ["slimtext", "train"] and "minilm-l6" in by["teacher-s0"]
    assert by["tfidf-s0"][0] == "slimtext.recipes.baseline"
    full = plan_study(PRESETS["full"], "davidson", (0,), tmp_path)
    odd = next(r.argv for r in full if r.name == "odd-s0")
    assert odd[odd.index("--student-layers") + 1] == "1,3,5,7,9,11"
    assert "mpnet-base" in full[0].argv and "--max-examples" not in full[0].argv


def test_second_call_skips_finished_runs(tmp_path):
    runner = FakeRunner()
    md = run_study(seeds=(0, 1), out=tmp_path / "study", runner=runner, quiet=True)
    assert len(runner.calls) == 14
    assert md == tmp_path / "study" / "report.md" and (tmp_path / "study" / "report.html").exists()
    plan = json.loads((tmp_path / "study" / "study.json").read_text())
    assert plan["preset"] == "quick" and [r["name"] for r in plan["runs"]][:2] == [
        "teacher-s0",
        "odd-s0",
    ]
    assert plan["runs"][1]["command"].startswith("python -m slimtext distill ")
    again = FakeRunner()
    run_study(seeds=(0, 1), out=tmp_path / "study", runner=again, quiet=True)
    assert again.calls == []
    assert "teacher" in md.read_text() and "| distilrnn |" in md.read_text()


def test_interrupted_study_resumes_and_restarts_what_it_must(tmp_path):
    out = tmp_path / "study"
    first = FakeRunner(fail={"odd-s0": "killed", "teacher-s1": "crashed"})
    with pytest.raises(SlimtextError, match=r"6 of 14 runs did not finish"):
        run_study(seeds=(0, 1), out=out, runner=first, quiet=True)
    # odd-s0 failed; teacher-s1 failed, so the four students of seed 1 were never started
    assert "odd-s1" not in first.names() and "lstm-s1" in first.names()
    assert len(first.calls) == 14 - 4
    report = (out / "report.md").read_text()  # covers the finished runs, names the others
    assert (
        "| teacher-s0 |" in report
        and "no summary.json" in report
        and "odd-s0, teacher-s1" in report
    )
    second = FakeRunner()
    md = run_study(seeds=(0, 1), out=out, runner=second, quiet=True)
    assert second.names() == [  # the teacher first: four runs wait for it
        "teacher-s1",
        "odd-s0",
        "odd-s1",
        "even-s1",
        "lora-odd-s1",
        "distilrnn-s1",
    ]
    resumed = second.calls[1]
    assert resumed[-4:] == ["distill", "--resume", str(out / "odd-s0"), "--quiet"]
    assert "--resume" not in second.calls[0]  # no checkpoint: deleted and started from scratch
    assert len(list(out.glob("*-s?/summary.json"))) == 14
    assert md.exists()


def test_a_different_plan_in_the_same_folder_is_refused(tmp_path):
    run_study(seeds=(0,), out=tmp_path / "s", runner=FakeRunner(), quiet=True)
    with pytest.raises(SlimtextError, match="another plan"):
        run_study(preset="full", seeds=(0,), out=tmp_path / "s", runner=FakeRunner(), quiet=True)
    with pytest.raises(SlimtextError, match="unknown study preset 'quik'"):
        run_study(preset="quik", out=tmp_path / "t", runner=FakeRunner())


def test_preset_overrides_reach_every_run_and_the_plan(tmp_path):
    out = tmp_path / "s"
    runner = FakeRunner()
    run_study(seeds=(0,), out=out, runner=runner, quiet=True, overrides=["epochs=1", "max_examples=50"])
    teacher, lstm = runner.calls[0], runner.calls[4]
    assert teacher[teacher.index("--epochs") + 1] == "1"
    assert lstm[lstm.index("--epochs") + 1] == str(PRESETS["quick"].rnn_epochs)  # not overridden
    assert all(c[c.index("--max-examples") + 1] == "50" for c in runner.calls)
    settings = json.loads((out / "study.json").read_text())["settings"]
    assert settings["epochs"] == 1 and settings["max_examples"] == 50
    assert "preset quick, epochs=1, max_examples=50" in (out / "report.md").read_text()
    with pytest.raises(SlimtextError, match="another plan"):  # other overrides, same folder
        run_study(seeds=(0,), out=out, runner=FakeRunner(), quiet=True, overrides=["epochs=2"])
    with pytest.raises(SlimtextError, match="Did you mean 'epochs'"):
        run_study(out=tmp_path / "t", runner=FakeRunner(), overrides=["epoch=1"])
    with pytest.raises(SlimtextError, match="not key=value"):
        run_study(out=tmp_path / "t", runner=FakeRunner(), overrides=["epochs"])


def test_progress_lines(tmp_path, capsys):
    with pytest.raises(SlimtextError):
        run_study(seeds=(0,), out=tmp_path / "s", runner=FakeRunner(fail={"lstm-s0": "crashed"}))
    err = capsys.readouterr().err
    assert "[1/7] teacher-s0: starting (elapsed 0m00s)" in err
    assert "[5/7] lstm-s0: FAILED (exit 1), see logs/lstm-s0.log" in err
    assert "[7/7] tfidf-s0: done in" in err


# --- a real study on tiny models (subprocesses), killed and completed ---------------------------


@pytest.mark.slow
def test_real_tiny_study_killed_then_completed(tiny_csv, tmp_path, monkeypatch):
    """Every method on a tiny CSV with a random 4-layer BERT teacher: a real SIGKILL after epoch 1
    of every run, then the same call finishes the study (resuming, not restarting)."""
    from conftest import write_tiny_bert

    teacher = write_tiny_bert(tmp_path / "tiny-bert", layers=4)
    tiny = StudyPreset(teacher=str(teacher), odd="1,3", even="2,4", max_examples=None,
                       max_length=32, batch_size=16, epochs=2, rnn_epochs=2, seeds=(0,),
                       teacher_lr=1e-3, student_lr=1e-3, lora_lr=1e-2, rnn_lr=1e-2)  # fmt: skip
    monkeypatch.setitem(PRESETS, "tiny", tiny)
    out = tmp_path / "study"
    monkeypatch.setenv("SLIMTEXT_KILL_AFTER_EPOCH", "1")
    with pytest.raises(SlimtextError, match="6 of 7 runs did not finish"):
        run_study("tiny", data=str(tiny_csv), out=out, threads=1, quiet=True)
    assert (out / "teacher-s0" / "checkpoint" / "state.pt").exists()  # killed, resumable
    assert (out / "tfidf-s0" / "summary.json").exists()  # no epochs: finished
    assert not (out / "odd-s0").exists()  # blocked: its teacher did not finish
    monkeypatch.delenv("SLIMTEXT_KILL_AFTER_EPOCH")
    calls = []

    def counting(argv, log):
        calls.append(argv)
        return subprocess_runner(argv, log)

    md = run_study("tiny", data=str(tiny_csv), out=out, threads=1, quiet=True, runner=counting)
    names = [Path(a[a.index("--resume") + 1] if "--resume" in a else a[a.index("--out") + 1]).name
             for a in calls]  # fmt: skip
    # threads=1 on 2 cores: two runs at once (--jobs default), so the order of starts may vary
    assert sorted(names) == sorted(["teacher-s0", "odd-s0", "even-s0", "lora-odd-s0", "lstm-s0", "distilrnn-s0"])
    assert names.index("teacher-s0") < min(names.index(n) for n in ("odd-s0", "even-s0", "lora-odd-s0"))
    assert {n for n, a in zip(names, calls) if "--resume" in a} == {"teacher-s0", "lstm-s0"}
    for name in names:
        assert [r["epoch"] for r in RunDir(out / name).read_metrics()] == [1, 2], name
    text = md.read_text()
    for group in METHODS:
        assert f"| {group} |" in text
