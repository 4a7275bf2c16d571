"""Scoring files: every row back in order (empty ones with an error), CSV/TSV/JSONL, quoted
newlines, chunked model calls, limits, the review policy, and the `score` / `predict -` CLI."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from slimtext.errors import DataFormatError, SlimtextError
from slimtext.inference.review import ReviewConfig, ReviewPolicy
from slimtext.inference.score import ScoreConfig, ScoreLimitError, score_file, score_stream


class Keyword:
    """p(toxic) = 0.9 with 'hate', 0.55 with 'meh', else 0.2; records each call's batch size."""

    labels = ["not toxic", "toxic"]

    def __init__(self, threshold=None):
        self.threshold, self.batches = threshold, []

    def predict_proba(self, texts):
        self.batches.append(len(texts))
        p = [0.9 if "hate" in t else 0.55 if "meh" in t else 0.2 for t in texts]
        return np.array([[1 - q, q] for q in p])  # (N, 2)


def run_csv(text: str, fmt="csv", cfg=None, predictor=None, policy=None, out_fmt=None):
    predictor = predictor or Keyword()
    policy = policy or ReviewPolicy.for_predictor(predictor)
    dst = io.StringIO()
    stats = score_stream(predictor, io.StringIO(text), dst, fmt, policy, cfg, out_fmt)
    return stats, dst.getvalue()


def test_every_row_comes_back_in_order_with_errors_for_empty_texts():
    src = 'id,text,label\n1,I hate you,x\n2,"",y\n3,"two\nlines, quoted",z\n4,   ,w\n5,meh ok,v\n'
    stats, out = run_csv(src)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["id"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert list(rows[0]) == ["id", "text", "input_label", "label", "probability", "needs_review", "error"]
    assert [r["input_label"] for r in rows] == ["x", "y", "z", "w", "v"]  # the input's own column survives
    assert rows[2]["text"] == "two\nlines, quoted"
    assert [r["label"] for r in rows] == ["toxic", "", "not toxic", "", "toxic"]
    assert [r["error"] for r in rows] == ["", "empty text", "", "empty text", ""]
    assert [r["needs_review"] for r in rows] == ["false", "", "false", "", "true"]  # 0.55 is within 0.1 of 0.5
    assert float(rows[0]["probability"]) == pytest.approx(0.9)
    assert float(rows[2]["probability"]) == pytest.approx(0.8)  # of the chosen label
    assert (stats.rows, stats.scored, stats.errors) == (5, 3, 2)


def test_model_is_called_once_per_chunk_with_only_the_valid_texts():
    texts = [f"text {i}" if i % 10 else "" for i in range(1, 1001)]
    src = "text\n" + "".join(f'"{t}"\n' for t in texts)
    p = Keyword()
    stats, out = run_csv(src, cfg=ScoreConfig(chunk_rows=64), predictor=p)
    assert len(p.batches) == -(-1000 // 64)
    assert max(p.batches) <= 64 and sum(p.batches) == 900
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["text"] for r in rows] == texts
    assert stats.rows == 1000 and stats.errors == 100


def test_tsv_and_jsonl_round_trip():
    _, out = run_csv("text\tn\nI hate it\t1\nfine\t2\n", fmt="tsv")
    rows = list(csv.DictReader(io.StringIO(out), delimiter="\t"))
    assert [(r["n"], r["label"]) for r in rows] == [("1", "toxic"), ("2", "not toxic")]

    src = '{"text": "I hate it", "id": 7}\n\n{"text": ""}\nnot json\n{"body": "x"}\n[1]\n{"text": "ok"}\n'
    stats, out = run_csv(src, fmt="jsonl")
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 6 and stats.rows == 6  # the blank line is not a row
    assert rows[0] == {"text": "I hate it", "id": 7, "label": "toxic", "probability": 0.9,
                       "needs_review": False, "error": None}
    assert rows[1]["error"] == "empty text"
    assert rows[2]["error"].startswith("line 4: invalid JSON")
    assert rows[3]["error"] == "no field 'text'" and rows[3]["body"] == "x"
    assert rows[4]["error"] == "line 6: expected a JSON object"
    assert rows[5]["label"] == "not toxic"


def test_csv_to_jsonl_and_bad_rows():
    _, out = run_csv("text,n\nhate,1\nshort\nx,2,3\n", out_fmt="jsonl")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["error"] for r in rows] == [None, "expected 2 fields, got 1", "expected 2 fields, got 3"]
    assert rows[1]["text"] == "short" and rows[1]["label"] is None
    with pytest.raises(SlimtextError, match="JSON Lines"):
        run_csv('{"text": "a"}\n', fmt="jsonl", out_fmt="csv")


def test_missing_text_column_and_empty_file_are_clear_errors():
    with pytest.raises(DataFormatError, match=r"no column 'text'; columns are \['body'\]"):
        run_csv("body\nhello\n")
    with pytest.raises(DataFormatError, match="empty file"):
        run_csv("")
    _, out = run_csv("\ufefftext\nhate\n")  # Excel's byte-order mark
    assert next(csv.DictReader(io.StringIO(out)))["label"] == "toxic"


def test_limits():
    with pytest.raises(ScoreLimitError, match="more than 3 rows"):
        run_csv("text\na\nb\nc\nd\n", cfg=ScoreConfig(max_rows=3, chunk_rows=2))
    _, out = run_csv("text\nhate\n" + "x" * 50 + "\n", cfg=ScoreConfig(max_chars=10))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[1]["error"] == "text has 50 characters; the limit is 10" and rows[1]["label"] == ""


def test_review_policy_threshold_band_and_multiclass():
    p = Keyword(threshold=0.6)
    policy = ReviewPolicy.for_predictor(p)
    v = policy.decide([[0.45, 0.55], [0.35, 0.65], [0.1, 0.9]])
    assert v.labels == ["not toxic", "toxic", "toxic"]  # 0.55 < 0.6 now
    assert v.probability == pytest.approx([0.45, 0.65, 0.9])
    assert v.needs_review.tolist() == [True, True, False]
    assert ReviewPolicy.for_predictor(p, ReviewConfig(threshold=0.5)).decide([[0.45, 0.55]]).labels == ["toxic"]
    assert ReviewPolicy.for_predictor(Keyword()).threshold == 0.5  # no calibration: 0.5
    three = ReviewPolicy(["a", "b", "c"], band=0.1)
    v = three.decide([[0.5, 0.4, 0.1], [0.7, 0.2, 0.1]])
    assert v.labels == ["a", "a"] and v.needs_review.tolist() == [True, False]
    with pytest.raises(SlimtextError, match="band"):
        ReviewPolicy(["a", "b"], band=0.7)


def test_score_file_writes_atomically_and_refuses_its_input(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("text\nhate\n")
    stats = score_file(Keyword(), src, tmp_path / "out.csv", ReviewPolicy(Keyword.labels), quiet=True)
    assert stats.rows == 1 and (tmp_path / "out.csv").read_text().startswith("text,label,")
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(SlimtextError, match="is the input"):
        score_file(Keyword(), src, src, ReviewPolicy(Keyword.labels), quiet=True)
    with pytest.raises(SlimtextError, match="cannot tell the format"):
        score_file(Keyword(), tmp_path / "in.txt", tmp_path / "o.csv", ReviewPolicy(Keyword.labels), quiet=True)


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory):
    from conftest import write_tiny_csv
    from slimtext.config import RunConfig
    from slimtext.recipes.finetune import train

    folder = tmp_path_factory.mktemp("lstm")
    cfg = RunConfig()
    cfg.data.data = str(write_tiny_csv(folder / "tiny.csv"))
    cfg.rnn.embed_dim, cfg.rnn.hidden_dim = 16, 16
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.threads = 3, 16, 0.02, 1
    train(cfg, out=folder / "run", quiet=True)
    return folder / "run"


def _cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "slimtext", *args], input=stdin, capture_output=True,
                          text=True, timeout=120)


def test_cli_score_and_predict_from_stdin(lstm_run, tmp_path):
    src = tmp_path / "comments.csv"
    src.write_text('id,body\n1,a really good film\n2,""\n3,"an awful\nplot"\n')
    r = _cli("score", str(lstm_run), str(src), "--text-col", "body", "--out", str(tmp_path / "scored.csv"))
    assert r.returncode == 0, r.stderr
    assert "3 rows (1 without a prediction)" in r.stderr and "rows/s" in r.stderr
    rows = list(csv.DictReader(open(tmp_path / "scored.csv", newline="")))
    assert [(r["id"], r["label"], r["error"]) for r in rows] == [("1", "pos", ""), ("2", "", "empty text"),
                                                                 ("3", "neg", "")]
    r = _cli("predict", str(lstm_run), "-", stdin="a really good movie\n\nan awful plot\n")
    assert r.returncode == 0, r.stderr
    assert [line.split("\t")[0] for line in r.stdout.splitlines()] == ["pos", "neg"]
    r = _cli("score", str(lstm_run), str(src), "--text-col", "nope")
    assert r.returncode == 2 and r.stderr.startswith("error:") and "no column 'nope'" in r.stderr


def test_blank_means_white_space_and_zero_width_characters_in_any_order():
    """One rule (`inference.base.is_blank`) for the API, file scoring and explanations."""
    from slimtext.inference.base import is_blank

    for text in ("", "   ", "\u200b", "\u00a0\u200b ", "\ufeff\n\u2060\t", None):
        assert is_blank(text), repr(text)
    for text in ("a", "\u200bhi", " . "):
        assert not is_blank(text), repr(text)
    stats, out = run_csv('id,text\n1,"\u00a0\u200b"\n2,I hate you\n')
    assert [r["error"] for r in csv.DictReader(io.StringIO(out))] == ["empty text", ""]


def test_the_schema_pattern_refuses_exactly_what_is_blank():
    """The API schema's text pattern (an ECMA-262 regex) must refuse every character the server
    calls blank: a fuzzer sent "\\u001d" (white space to Python, not to ECMA's \\s) and got a 400."""
    import re
    import sys

    from slimtext.inference.base import is_blank
    from slimtext.serve.schemas import VISIBLE_TEXT

    ecma_space = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
    visible = re.compile(VISIBLE_TEXT["pattern"].replace("\\s", ecma_space))
    chars = (chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    assert [hex(ord(c)) for c in chars if bool(visible.search(c)) == is_blank(c)] == []
