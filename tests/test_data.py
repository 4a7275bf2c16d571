"""Parsers on the real upstream files, split determinism, bad-input errors, the download path."""

from __future__ import annotations

import functools
import hashlib
import http.server
import sys
import threading

import pytest

from slimtext.data import formats
from slimtext.data.registry import DataConfig, load_dataset, text_corpus
from slimtext.data.sources import FileSource, download, resolve
from slimtext.data.splits import stratified_split
from slimtext.errors import DataFormatError, OfflineError, SlimtextError, UnknownNameError

# --- parsers on the real files: counts from ../shared/data/README.md


def test_davidson_counts(shared_data):
    rows = list(formats.read_davidson(shared_data / "davidson/labeled_data.csv"))
    assert len(rows) == 24_783
    three = list(formats.read_davidson(shared_data / "davidson/labeled_data.csv", three_class=True))
    counts = {lab: sum(r.label == lab for r in three) for lab in ("hate speech", "offensive language", "neither")}
    assert counts == {"hate speech": 1430, "offensive language": 19190, "neither": 4163}
    assert sum(r.label == "toxic" for r in rows) == 1430 + 19190


def test_cola_counts(shared_data):
    z = shared_data / "cola/cola_public_1.1.zip"
    assert [len(list(formats.read_cola(z, m))) for m in ("in_domain_train", "in_domain_dev", "out_of_domain_dev")] \
        == [8551, 527, 516]


def test_sst_and_cfimdb_counts(shared_data):
    assert [len(list(formats.read_pipe_labelled(shared_data / f"sst/sst-{s}.txt"))) for s in ("train", "dev", "test")] \
        == [8544, 1101, 2210]
    assert [len(list(formats.read_pipe_labelled(shared_data / f"cfimdb/cfimdb-{s}.txt")))
            for s in ("train", "dev", "test")] == [1707, 245, 488]


def test_tinyshakespeare_and_rotten_tomatoes(shared_data):
    assert len(text_corpus("tinyshakespeare")) == 1_115_394
    rt = load_dataset(DataConfig(data="rotten_tomatoes"))
    assert sum(len(v) for v in rt.splits.values()) == 7403 + 5405  # plot summaries dropped
    assert rt.labels == ["rotten", "fresh"]


def test_named_dataset_splits(shared_data):
    d = load_dataset(DataConfig(data="davidson"))
    assert {k: len(v) for k, v in d.splits.items()} == {"train": 19826, "dev": 2478, "test": 2479}
    c = load_dataset(DataConfig(data="cola"))
    assert {k: len(v) for k, v in c.splits.items()} == {"train": 8551, "dev": 527, "test_ood": 516}
    s = load_dataset(DataConfig(data="sst5"))
    assert [len(s.splits[k]) for k in ("train", "dev", "test")] == [8544, 1101, 2210]
    f = load_dataset(DataConfig(data="cfimdb"))  # distributed test has no labels: 10% of train held out
    assert len(f.splits["train"]) + len(f.splits["test"]) == 1707 and len(f.splits["dev"]) == 245
    assert not set(e.id for e in f.splits["train"]) & set(e.id for e in f.splits["test"])


# --- splits


def test_split_is_deterministic_and_stratified(shared_data):
    a = load_dataset(DataConfig(data="davidson")).split_ids()
    b = load_dataset(DataConfig(data="davidson")).split_ids()
    assert a == b
    c = load_dataset(DataConfig(data="davidson", split_seed=1)).split_ids()
    assert a["test"] != c["test"]
    d = load_dataset(DataConfig(data="davidson"))
    frac = [sum(e.label for e in d.splits[k]) / len(d.splits[k]) for k in ("train", "dev", "test")]
    assert max(frac) - min(frac) < 0.005  # stratified: same toxic share in every split


def test_stratified_split_ignores_input_order():
    ids = [f"x{i}" for i in range(100)]
    labels = [i % 3 for i in range(100)]
    fr = {"train": 0.8, "dev": 0.1, "test": 0.1}
    one = stratified_split(ids, labels, 7, fr)
    two = stratified_split(ids[::-1], labels[::-1], 7, fr)
    assert one == two
    assert sorted(sum(one.values(), [])) == sorted(ids)


def test_saved_split_file_is_reused(tmp_path, monkeypatch):
    from slimtext.data import splits

    monkeypatch.setenv("SLIMTEXT_CACHE", str(tmp_path))
    ids, labels = [f"i{k}" for k in range(50)], [k % 2 for k in range(50)]
    fr = {"train": 0.8, "dev": 0.1, "test": 0.1}
    first = splits.saved_split("toy", ids, labels, 0, fr)
    files = list((tmp_path / "splits").glob("toy-*-seed0.json"))
    assert len(files) == 1
    monkeypatch.setattr(splits, "stratified_split", lambda *a: pytest.fail("should read the saved split"))
    assert splits.saved_split("toy", ids, labels, 0, fr) == first


# --- bad input


def test_malformed_davidson_row_names_file_line_column(tmp_path, shared_data):
    lines = (shared_data / "davidson/labeled_data.csv").read_text(encoding="utf-8").splitlines()[:6]
    lines[4] = lines[4].replace(",3,0,2,1,1,", ",3,0,2,1,7,")  # class 7 on line 5
    bad = tmp_path / "labeled_data.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"labeled_data\.csv:5:6: class must be 0, 1 or 2"):
        list(formats.read_davidson(bad))


def test_bad_rows_in_user_files(tmp_path):
    j = tmp_path / "d.jsonl"
    j.write_text('{"text": "ok", "label": "a"}\n{"text": "broken", "label": \n')
    with pytest.raises(DataFormatError, match=r"d\.jsonl:2:\d+: invalid JSON"):
        list(formats.read_table(j))
    c = tmp_path / "d.csv"
    c.write_text("text,label\nfine,a\ntoo,many,fields\n")
    with pytest.raises(DataFormatError, match=r"d\.csv:3: expected 2 fields, got 3"):
        list(formats.read_table(c))
    with pytest.raises(DataFormatError, match=r"no column 'txt'; columns are \['text', 'label'\]"):
        list(formats.read_table(c, text_col="txt"))
    p = tmp_path / "x.txt"
    p.write_text("1 ||| fine\nno separator here\n")
    with pytest.raises(DataFormatError, match=r"x\.txt:2: expected 'LABEL \|\|\| TEXT'"):
        list(formats.read_pipe_labelled(p))


def test_empty_texts_and_unknown_labels_are_counted(tmp_path):
    c = tmp_path / "d.csv"
    rows = ["text,label"] + [f"text {i},{'a' if i % 2 else 'b'}" for i in range(40)] + [",a", "  ,b"]
    c.write_text("\n".join(rows) + "\n")
    ds = load_dataset(DataConfig(data=str(c)))
    assert any("dropped 2 rows with empty text" in n for n in ds.notes)
    c.write_text("\n".join(rows + ["x,c", "y,c", "z,d"]) + "\n")
    with pytest.raises(SlimtextError, match=r"3 rows have unknown labels \{'c': 2, 'd': 1\}"):
        load_dataset(DataConfig(data=str(c), labels="a,b"))


def test_unknown_names_list_valid_ones():
    with pytest.raises(UnknownNameError, match=r"unknown dataset 'davidsn'.*davidson.*Did you mean 'davidson'"):
        load_dataset(DataConfig(data="davidsn"))
    from slimtext.config import RunConfig
    from slimtext.models.factory import build_tokenizer

    cfg = RunConfig()
    cfg.model.model = "lstmm"
    with pytest.raises(UnknownNameError, match="unknown model 'lstmm'.*lstm"):
        build_tokenizer(cfg, ["a b"])


# --- sources: the download path, against a local HTTP server


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_download_checks_sha256_and_writes_atomically(http_server, tmp_path, monkeypatch):
    root, url = http_server
    payload = b"1 ||| a fixture line\n0 ||| another\n"
    (root / "fixture.txt").write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    monkeypatch.setenv("SLIMTEXT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SLIMTEXT_DATA")
    src = FileSource("toy/fixture.txt", sha, f"{url}/fixture.txt")
    path = resolve(src)
    assert path == tmp_path / "cache/data/toy/fixture.txt" and path.read_bytes() == payload
    (root / "fixture.txt").write_bytes(b"tampered")
    assert resolve(src) == path  # served from the cache now, no second download
    dest = tmp_path / "other/fixture.txt"
    with pytest.raises(SlimtextError, match="checksum mismatch"):
        download(f"{url}/fixture.txt", dest, sha)
    assert not dest.exists() and not list(dest.parent.glob("*.part"))


def test_download_offline_is_a_clear_error(tmp_path):
    dest = tmp_path / "f.txt"
    with pytest.raises(OfflineError, match="could not download http://127.0.0.1:9/x"):
        download("http://127.0.0.1:9/x", dest, None, timeout=2)
    assert not dest.exists()


def test_hf_datasets_need_permission(monkeypatch):
    monkeypatch.setenv("SLIMTEXT_ALLOW_DOWNLOAD", "0")
    with pytest.raises(SlimtextError, match="--allow-download") as err:
        load_dataset(DataConfig(data="hf:someone/some-data"))
    assert "hf:someone/some-data" in str(err.value) and "SLIMTEXT_ALLOW_DOWNLOAD=1" in str(err.value)
    monkeypatch.setenv("SLIMTEXT_ALLOW_DOWNLOAD", "1")  # allowed: on to `datasets` (made absent here)
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(SlimtextError, match="need the `datasets` package"):
        load_dataset(DataConfig(data="hf:someone/some-data"))
