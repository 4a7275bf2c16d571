"""The Python API: `import slimtext` stays cheap, every docstring example of slimtext.api and
slimtext.datasets runs, docs/api.md runs as a doctest, options are checked, SLIMTEXT_QUIET works."""

from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

import pytest

import slimtext
from slimtext.errors import SlimtextError, UnknownNameError

REPO = Path(__file__).resolve().parents[1]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def write_toy_csv(path: Path) -> Path:
    """The 160-row CSV docs/api.md writes: '<good|great|bad|awful> <noun>', pos for good/great."""
    rows = [f"{w} {n},{'pos' if w in ('good', 'great') else 'neg'}"
            for n in ("movie", "film", "plot", "scene", "story") * 8
            for w in ("good", "great", "bad", "awful")]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A toy CSV and a finished 8-epoch LSTM run on it (the docstrings' `csv` and `run`)."""
    tmp = tmp_path_factory.mktemp("api")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLIMTEXT_CACHE", str(tmp / "cache"))
        csv = write_toy_csv(tmp / "toy.csv")
        run = slimtext.train(data=str(csv), model="lstm", epochs=8, lr=1e-2, threads=1,
                             out=tmp / "run", quiet=True)
    return {"csv": csv, "run": run}


def test_import_slimtext_does_not_import_torch():
    code = "import sys, slimtext; print('torch' in sys.modules, slimtext.__version__, sorted(slimtext.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO / "src")}).stdout.split(maxsplit=2)
    assert out[0] == "False" and out[1] == slimtext.__version__
    assert "'load'" in out[2] and "'datasets'" in out[2]


def test_lazy_attributes_are_the_api():
    from slimtext import api, datasets
    from slimtext.train.loop import fit

    assert (slimtext.load, slimtext.Run, slimtext.datasets) == (api.load, api.Run, datasets)
    assert slimtext.train.loop.fit is fit  # slimtext.train is the package (slimtext/train/) ...
    assert callable(slimtext.train)  # ... and, called, the API's train (used by the doctests)
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        slimtext.trian  # noqa: B018


@pytest.mark.parametrize("module", ["slimtext.api", "slimtext.datasets"])
def test_docstring_examples_run(toy, tmp_path, module):
    mod = sys.modules.get(module) or __import__(module, fromlist=["_"])
    result = doctest.testmod(mod, optionflags=FLAGS, extraglobs={
        "tmp": tmp_path, "csv": toy["csv"], "run": toy["run"], "slimtext": slimtext})
    assert result.attempted >= 3 and result.failed == 0


def test_docs_api_md_runs_as_a_doctest(tmp_path):
    result = doctest.testfile(str(REPO / "docs" / "api.md"), module_relative=False,
                              globs={"tmp": tmp_path}, optionflags=FLAGS)
    assert result.attempted >= 15 and result.failed == 0


def test_run_config_takes_cli_names_and_sections():
    from slimtext.api import run_config

    cfg = run_config(data="cola", rnn_hidden_dim=16, lora_alpha=4.0, distill={"kd_alpha": 0.3})
    assert (cfg.data.data, cfg.rnn.hidden_dim, cfg.lora.alpha, cfg.distill.kd_alpha) == ("cola", 16, 4.0, 0.3)
    with pytest.raises(UnknownNameError, match="Did you mean 'lora_rank'"):
        run_config(lora_rnak=4)


def test_evaluate_checks_labels_and_splits(toy, tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("text,label\n" + "".join(f"good {i},meh\n" for i in range(20)))
    with pytest.raises(SlimtextError, match=r"labels \['meh'\]"):
        slimtext.evaluate(toy["run"], data=str(other), split="all")
    with pytest.raises(UnknownNameError, match="valid splits"):
        slimtext.evaluate(toy["run"], split="tset")
    with pytest.raises(SlimtextError, match="not a run directory"):
        slimtext.load(tmp_path)


def test_slimtext_quiet_silences_training(toy, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("SLIMTEXT_QUIET", "1")
    slimtext.train(data=str(toy["csv"]), model="lstm", epochs=1, out=tmp_path / "q")
    assert capfd.readouterr().err == ""
    monkeypatch.setenv("SLIMTEXT_QUIET", "0")
    slimtext.train(data=str(toy["csv"]), model="lstm", epochs=1, out=tmp_path / "loud")
    assert "lstm [full]" in capfd.readouterr().err  # the same run logs when not quiet


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    from slimtext import cli

    monkeypatch.setattr(sys, "argv", ["slimtext", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_data_show_a_user_file_with_its_columns(tmp_path, monkeypatch, capsys):
    f = tmp_path / "reviews.csv"
    f.write_text("id,review,stars\n" + "".join(f"{i},great film {i},{'pos' if i % 3 else 'neg'}\n" for i in range(30)))
    code, out, _ = run_cli(monkeypatch, capsys, "data", "show", str(f), "--text-col", "review",
                           "--label-col", "stars", "--examples", "2")
    assert code == 0
    assert "30 rows (text column 'review', label column 'stars')" in out
    assert "labels: neg: 10, pos: 20" in out and "line 2 [neg] 'great film 0'" in out
    assert [line.split()[0] for line in out.splitlines()[-3:]] == ["train", "dev", "test"]


def test_data_show_points_at_the_first_bad_row(tmp_path, monkeypatch, capsys):
    f = tmp_path / "bad.csv"
    f.write_text("text,label\ngood movie,pos\nbad film,neg\nok,pos,extra\nfine,pos\nx,y,z\n")
    code, out, err = run_cli(monkeypatch, capsys, "data", "show", str(f))
    assert code == 2
    assert "2 rows before the first bad row" in out and "labels: neg: 1, pos: 1" in out
    assert f"first bad row: {f}:4: expected 2 fields, got 3" in out and "'ok,pos,extra'" in out
    assert err.strip() == f"error: {f}:4: expected 2 fields, got 3"
    code, _, err = run_cli(monkeypatch, capsys, "data", "show", str(f), "--text-col", "body")
    assert code == 2 and "no column 'body'; columns are ['text', 'label']" in err
