"""The teacher side of `slimtext distill`: the finished teacher run, loaded, and its logits cache.

The teacher runs once, over the train split, before training: its logits are cached in
`$SLIMTEXT_CACHE/teacher_logits/<key>.safetensors` together with the example ids, and reused by
every later student of the same teacher and split (the key: `cache_key`); a file lock makes
students running at once compute an entry once. Rows are joined by
example id (`align_logits`), so a cached file serves any student of the same split. The logits
are computed in the student's `--precision`; `auto` (the default) means the precision the teacher
itself trained and was evaluated in, so a teacher that `auto` put in bf16 also answers in bf16,
2-3x faster on a CPU with native bf16. A bf16 entry is a file of its own (`<key>-bf16`).

A `--teacher` that is a Hugging Face classifier folder (`hf:PATH_OR_NAME`, or a folder with
config.json and no config.yaml, e.g. one written by `slimtext export --hf`) is first imported as
a finished full-method run under `$SLIMTEXT_CACHE/hf_teachers/` (`hf_teacher_run`), so the rest
of distillation reads a run directory as always. Its labels are config.json's id2label; they must
equal the dataset's.

Reference: Hinton, Vinyals & Dean 2015, Distilling the Knowledge in a Neural Network,
arXiv:1503.02531
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import time
from pathlib import Path

import torch
from safetensors import safe_open

from slimtext.checkpoint import BASE_CONFIG, load_teacher, save_weights
from slimtext.config import ModelConfig, RunConfig
from slimtext.data.batches import EncodedSplit
from slimtext.data.registry import DataConfig, Example
from slimtext.data.sources import cache_dir, sha256_file
from slimtext.data.tokenize import WordPiece
from slimtext.errors import SlimtextError
from slimtext.models import hub, param_report
from slimtext.rundir import RunDir, atomic_copy, atomic_save_safetensors
from slimtext.train.loop import predict_logits
from slimtext.train.precision import check

# --- the teacher-logit cache ----------------------------------------------------------------------


def cache_key(teacher_dir: Path, example_ids: list[str]) -> str:
    """sha256 over the teacher's weights (file hash), base model, method and max_length, and the
    train split's example ids in order: any change to one of them means other logits."""
    run = RunDir(teacher_dir)
    tcfg = RunConfig.from_dict(run.read_config())
    h = hashlib.sha256()
    for part in (
        sha256_file(run.weights_path),
        tcfg.model.model,
        tcfg.model.method,
        str(tcfg.model.max_length),
        json.dumps(example_ids),
    ):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def cache_path(key: str, precision: str = "fp32") -> Path:
    """The entry of `key` computed in `precision` (fp32 entries keep the plain key's name)."""
    suffix = "" if precision == "fp32" else f"-{precision}"
    return cache_dir() / "teacher_logits" / f"{key}{suffix}.safetensors"


def align_logits(cached_ids: list[str], logits: torch.Tensor, ids: list[str]) -> torch.Tensor:
    """Rows of `logits` (in `cached_ids` order) reordered to `ids`, joined by example id."""
    if cached_ids == ids:
        return logits
    row = {i: r for r, i in enumerate(cached_ids)}
    missing = [i for i in ids if i not in row]
    if missing:
        raise SlimtextError(
            f"cached teacher logits lack {len(missing)} train examples (e.g. id "
            f"{missing[0]!r}); delete the cache file and run again"
        )
    return logits[torch.tensor([row[i] for i in ids])]


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive file lock (`<path>.lock`, fcntl) around computing one cache entry: of several
    processes that need the same entry (the students of one teacher, run at once by
    `slimtext study --jobs`), one computes it and the others wait, then read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_cached(path: Path, ids: list[str]) -> dict:
    with safe_open(str(path), framework="pt") as f:
        logits, cached_ids = f.get_tensor("logits"), json.loads(f.metadata()["example_ids"])
        precision = f.metadata().get("precision", "fp32")
    return {"logits": align_logits(cached_ids, logits, ids), "seconds": 0.0, "cache_hit": True, "path": path,
            "precision": precision}


def logits_precision(teacher_dir: Path, precision: str) -> str:
    """fp32 or bf16 as asked; `auto` is what the teacher ran in (its summary's `precision`, which
    `auto` chose on the machine that trained it), fp32 for a teacher that does not say."""
    check(precision)
    if precision != "auto":
        return precision
    run = RunDir(teacher_dir)
    ran = run.read_json("summary.json").get("precision") if run.summary_path.is_file() else None
    return ran if ran in ("fp32", "bf16") else "fp32"


def teacher_logits(
    teacher_dir: Path, train: list[Example], batch_size: int = 128, device="cpu", teacher=None,
    precision: str = "fp32",
) -> dict:
    """The teacher's logits (N, C) for the `train` examples, from the cache or by running the
    teacher once (`teacher` = (model, tokenizer) when already loaded), under a file lock so that
    concurrent students compute one entry once; in `precision` (`logits_precision`: auto is the
    teacher's own). Returns {'logits', 'seconds', 'cache_hit', 'path', 'precision'}; `seconds` is
    0.0 on a cache hit."""
    precision = logits_precision(teacher_dir, precision)
    ids = [e.id for e in train]
    path = cache_path(cache_key(teacher_dir, ids), precision)
    if path.is_file():
        return _read_cached(path, ids)
    with _locked(path):
        if path.is_file():  # another process computed it while this one waited
            return _read_cached(path, ids)
        model, tokenizer = teacher or load_teacher(teacher_dir)[:2]
        t0 = time.perf_counter()
        split = EncodedSplit(
            tokenizer.encode([e.text for e in train]),
            torch.zeros(len(train), dtype=torch.long),
            tokenizer.pad_id,
        )
        logits = predict_logits(model.to(device), split, batch_size, device, precision)  # (N, C), split order
        seconds = time.perf_counter() - t0
        atomic_save_safetensors(
            path,
            {"logits": logits},
            metadata={"example_ids": json.dumps(ids), "teacher": str(teacher_dir), "precision": precision},
        )
    return {"logits": logits, "seconds": seconds, "cache_hit": False, "path": path, "precision": precision}


# --- a Hugging Face classifier folder as a teacher ------------------------------------------------


def is_hf_teacher(teacher: str) -> bool:
    """`hf:...`, or a folder with config.json that is not a slimtext run (no config.yaml)."""
    path = Path(teacher).expanduser()
    return teacher.startswith("hf:") or (
        (path / "config.json").is_file() and not (path / "config.yaml").is_file()
    )


def hf_teacher_run(teacher: str, data: DataConfig, max_length: int = 128) -> Path:
    """A finished run directory holding the HF sequence classifier `teacher` (imported once per
    weights file, data config and max_length), for `slimtext distill --teacher`."""
    folder = hub.resolve(teacher)
    config = json.loads((folder / "config.json").read_text())
    id2label = config.get("id2label") or {}
    labels = [id2label[k] for k in sorted(id2label, key=int)]
    head = hub.sequence_head(folder)
    if not labels or "classifier.weight" not in head:
        raise SlimtextError(
            f"teacher {teacher}: not a *ForSequenceClassification folder with id2label; a teacher "
            "must be a fine-tuned classifier (a slimtext run, or `slimtext export --hf` output)"
        )
    weights = folder / ("model.safetensors" if (folder / "model.safetensors").is_file() else "pytorch_model.bin")
    h = hashlib.sha256(f"{sha256_file(weights)}\0{json.dumps(data.__dict__, sort_keys=True)}\0{max_length}".encode())
    run = RunDir(cache_dir() / "hf_teachers" / h.hexdigest()[:16])
    if run.is_finished():
        return run.path
    cfg = RunConfig(data=data, model=ModelConfig(model=str(folder), method="full", max_length=max_length))
    model, _ = hub.load_classifier(str(folder), len(labels), dropout=cfg.model.head_dropout)
    run.create(cfg.to_dict(), argv=["slimtext", "distill", "--teacher", teacher])
    WordPiece(folder, max_length=max_length).save(run.path / "tokenizer")
    atomic_copy(folder / "config.json", run.path / BASE_CONFIG)  # reloads without `folder`
    run.write_json("labels.json", labels)
    atomic_save_safetensors(run.weights_path, save_weights(model, "full"))
    run.write_summary({"model": teacher, "method": "full", "labels": labels,
                       "imported_from": str(folder), **param_report(model)})
    return run.path
