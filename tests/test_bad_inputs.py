"""Bad input fails early and plainly: every malformed file, flag or setting below makes
`slimtext train` exit with code 2 and one `error: ...` line (no traceback), and leaves no run
directory behind. Plus `--resume` with changed settings, `--resume` of a finished run, label
normalisation, duplicates and `--dedupe`."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import write_tiny_bert, write_tiny_csv
from fault_hooks import cut_run
from slimtext.cli import main
from slimtext.config import RunConfig
from slimtext.data.registry import DataConfig, load_dataset
from slimtext.recipes.finetune import train

TINY = ["--rnn-embed-dim", "8", "--rnn-hidden-dim", "8", "--threads", "1", "--quiet"]


def _csv(rows: list[str]) -> bytes:
    return ("text,label\n" + "".join(r + "\n" for r in rows)).encode()


def _labelled(n: int, labels=("neg", "pos")) -> list[str]:
    return [f"review number {i},{labels[i % len(labels)]}" for i in range(n)]


# name -> (files to write: {name: bytes}, extra CLI args; {tmp} is the test folder, message fragment)
CASES = {
    "epochs 0": ({}, ["--epochs", "0"], "train.epochs must be >= 1, got 0"),
    "batch size 0": ({}, ["--batch-size", "0"], "train.batch_size must be >= 1"),
    "lr nan": ({}, ["--lr", "nan"], "train.lr must be a finite number > 0, got nan"),
    "lr negative": ({}, ["--lr", "-0.1"], "train.lr must be a finite number > 0"),
    "threads -1": ({}, ["--threads", "-1"], "train.threads must be >= 0"),
    "dropout 1": ({}, ["--rnn-dropout", "1.0"], "rnn.dropout must be in [0, 1), got 1.0"),
    "hidden dim 0": ({}, ["--rnn-hidden-dim", "0"], "rnn.hidden_dim must be >= 1"),
    "max length 0": ({}, ["--max-length", "0"], "model.max_length must be >= 1"),
    "max length over positions": ({}, ["--model", "{tmp}/bert", "--max-length", "100"],
                                  "model.max_length 100 exceeds the 64 positions"),
    "unknown optimizer": ({}, ["--optimizer", "adamx"], "unknown optimizer 'adamx'; valid optimizers: adam, adamw, rmsprop, sgd"),
    "unknown device": ({}, ["--device", "gpu"], "unknown device 'gpu'; valid devices: auto, cpu, cuda, cuda:N, mps"),
    "--set epochs=abc": ({}, ["--set", "train.epochs=abc"], "--set train.epochs must be an integer, got 'abc'"),
    "yaml epochs abc": ({"c.yaml": b'train:\n  epochs: "abc"\n'}, ["--config", "{tmp}/c.yaml"],
                        "train.epochs must be an integer, got 'abc'"),
    "yaml not a mapping": ({"c.yaml": b"- 1\n- 2\n"}, ["--config", "{tmp}/c.yaml"], "expected sections"),
    "missing --config": ({}, ["--config", "{tmp}/nope.yaml"], "--config {tmp}/nope.yaml: no such file"),
    "--resume missing": ({}, ["--resume", "{tmp}/nope"], "--resume {tmp}/nope: no such run directory"),
    "--resume a file": ({"f.txt": b"x"}, ["--resume", "{tmp}/f.txt"], "--resume {tmp}/f.txt is a file"),
    "--resume not a run": ({"d/x.txt": b"x"}, ["--resume", "{tmp}/d"], "is not a run directory"),
    "--out a file": ({"f.txt": b"x"}, ["--out", "{tmp}/f.txt"], "--out {tmp}/f.txt is a file"),
    "--out non-empty folder": ({"d/x.txt": b"x"}, ["--out", "{tmp}/d"], "not empty and holds no run"),
    "missing data file": ({}, ["--data", "{tmp}/nope.csv"], "no such data file"),
    "not UTF-8": ({"data.csv": _csv(_labelled(20)) + b"caf\xe9 good,pos\n"}, [],
                  "data.csv:22: not UTF-8: byte 0xe9 at offset"),
    "header only": ({"data.csv": b"text,label\n"}, [], "no data rows"),
    "empty file": ({"data.csv": b""}, [], "empty file"),
    "too few rows": ({"data.csv": _csv(_labelled(4))}, [], "only 4 labelled rows"),
    "one class": ({"data.csv": _csv(_labelled(30, labels=("pos",)))}, [], "holds 1 class(es) ['pos']"),
    "empty label": ({"data.csv": _csv(_labelled(20) + ["no label here,"])}, [], "data.csv:22:2: empty label"),
    "no label column": ({"data.csv": b"text,y\nfine,1\n"}, [], "no column 'label'"),
    "ragged row": ({"data.csv": _csv(_labelled(20) + ["a,b,c"])}, [], "data.csv:22: expected 2 fields, got 3"),
    "JSONL null label": ({"data.jsonl": b'{"text": "fine", "label": 1}\n{"text": "bad", "label": null}\n'},
                         ["--data", "{tmp}/data.jsonl"], "data.jsonl:2: field 'label' must be a label, got null"),
    "JSONL bad JSON": ({"data.jsonl": b'{"text": "fine", "label": 1}\n{"text": \n'}, ["--data", "{tmp}/data.jsonl"],
                       "data.jsonl:2:10: invalid JSON"),
    "unknown dataset": ({}, ["--data", "davidsn"], "unknown dataset 'davidsn'"),
}


def _main(monkeypatch, capsys, args: list[str]) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["slimtext", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line_and_no_run_dir(case, tmp_path, monkeypatch, capsys):
    files, args, message = CASES[case]
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    if "data.csv" not in files:
        (tmp_path / "data.csv").write_bytes(_csv(_labelled(40)))
    if "{tmp}/bert" in args:
        write_tiny_bert(tmp_path / "bert")
        capsys.readouterr()  # transformers' progress output
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    argv = ["train", "--data", f"{tmp_path}/data.csv", "--out", f"{tmp_path}/run", *TINY]
    code, err = _main(monkeypatch, capsys, argv + [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing created


def test_resume_refuses_changed_settings_and_names_them(tiny_csv, tmp_path, monkeypatch, capsys):
    run = cut_run(tiny_csv, tmp_path / "run")
    code, err = _main(monkeypatch, capsys, ["train", "--resume", str(run.path), "--epochs", "5", "--lr", "0.5"])
    assert code == 2 and err.count("\n") == 1
    assert "train.epochs (run: 2, given: 5)" in err and "train.lr (run: 0.001, given: 0.5)" in err
    code, err = _main(monkeypatch, capsys, ["train", "--resume", str(run.path), "--rnn-hidden-dim", "128",
                                            "--set", "train.seed=3"])  # 128 is the default: still given
    assert code == 2 and "rnn.hidden_dim (run: 8, given: 128)" in err and "train.seed (run: 0, given: 3)" in err
    assert len(run.read_metrics()) == 1 and not run.is_finished()
    code, _ = _main(monkeypatch, capsys, ["train", "--resume", str(run.path), "--threads", "1", "--quiet"])
    assert code == 0  # threads do not change the result: allowed
    assert run.is_finished() and len(run.read_metrics()) == 2


def test_resume_of_a_finished_run_does_nothing_and_says_so(tiny_csv, tmp_path, monkeypatch, capsys):
    run = cut_run(tiny_csv, tmp_path / "run")
    train(RunConfig(), run.path, resume=True, quiet=True)
    stamp = run.summary_path.stat().st_mtime_ns
    monkeypatch.setattr(sys, "argv", ["slimtext", "train", "--resume", str(run.path)])
    with pytest.raises(SystemExit) as exit_:
        main()
    out, err = capsys.readouterr()
    assert exit_.value.code == 0
    assert "is already finished; nothing to do" in err and "accuracy" in out
    assert run.summary_path.stat().st_mtime_ns == stamp


def test_labels_are_normalised_and_the_mapping_is_saved(tmp_path):
    rows = [f"good film {i},{lab}" for i, lab in enumerate(["1", "1.0", " 1", "True"] * 5)]
    rows += [f"bad film {i},{lab}" for i, lab in enumerate(["0", "0.0", "False"] * 5)]
    (tmp_path / "d.csv").write_bytes(b"\xef\xbb\xbf" + _csv(rows))  # with a BOM before the header
    ds = load_dataset(DataConfig(data=str(tmp_path / "d.csv")))
    assert ds.labels == ["0", "1"]
    assert ds.label_mapping == {" 1": "1", "0.0": "0", "1.0": "1", "False": "0", "True": "1"}
    assert any("labels normalised" in n for n in ds.notes)
    cfg = RunConfig()
    cfg.data.data, cfg.rnn.embed_dim, cfg.rnn.hidden_dim, cfg.train.epochs = str(tmp_path / "d.csv"), 8, 8, 1
    train(cfg, tmp_path / "run", quiet=True)
    assert json.loads((tmp_path / "run" / "label_mapping.json").read_text()) == ds.label_mapping


def test_duplicates_and_train_test_overlap_warn_and_dedupe_drops_them(tmp_path):
    path = write_tiny_csv(tmp_path / "d.csv", n=60)
    text = path.read_text()
    path.write_text(text + "".join(text.splitlines(keepends=True)[1:11]))  # 10 rows again
    ds = load_dataset(DataConfig(data=str(path)))
    assert any("repeated rows (first at line" in w and "--dedupe" in w for w in ds.warnings), ds.warnings
    total = sum(len(v) for v in ds.splits.values())
    clean = load_dataset(DataConfig(data=str(path), dedupe=True))
    texts = [e.text for v in clean.splits.values() for e in v]
    assert len(texts) == len(set(texts)) < total
    assert not [w for w in clean.warnings if "also appear in train" in w]


def test_a_small_or_single_class_file_loads_for_evaluation_but_does_not_train(tmp_path):
    from slimtext.data.registry import check_trainable
    from slimtext.errors import SlimtextError

    (tmp_path / "d.csv").write_bytes(_csv(_labelled(20, labels=("pos",))))
    ds = load_dataset(DataConfig(data=str(tmp_path / "d.csv")))  # e.g. `slimtext.evaluate(run, data=...)`
    assert ds.labels == ["pos"] and sum(len(v) for v in ds.splits.values()) == 20
    with pytest.raises(SlimtextError, match="holds 1 class"):
        check_trainable(ds)
