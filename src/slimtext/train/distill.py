"""`slimtext distill`: train a small student on a fine-tuned teacher's soft targets.

Students:
- `layers`: a layer-selected transformer (DistilBERT-style). Embeddings, MPNet's relative position
  bias and the listed teacher layers are copied, in order; the teacher's pooler and classifier head
  are copied too, as the initialisation (all of it then trains, or LoRA adapts it with
  `--method lora`). Layer numbers are **1-based**, as papers count them: for a 12-layer teacher
  `odd` is 1,3,...,11 and `even` is 2,4,...,12; they become 0-based only at `Encoder.from_layers`.
- `lstm` / `gru` / `rnn`: DistilRNN, a recurrent classifier trained from scratch with its own
  vocabulary (built from the same train split), on the same example ids as the teacher.

The teacher runs once, over the train split, before training: its logits are cached in
`$SLIMTEXT_CACHE/teacher_logits/<key>.safetensors` together with the example ids, and reused by
every later student of the same teacher and split. `KDLoss` picks each batch's rows by example
position, so a distillation epoch costs what a plain fine-tuning epoch of the student costs.

References:
- Hinton, Vinyals & Dean 2015, Distilling the Knowledge in a Neural Network, arXiv:1503.02531
- Sanh et al. 2019, DistilBERT (a student initialised from every other teacher layer),
  arXiv:1910.01108
- Sajjad et al. 2023, On the Effect of Dropping Layers of Pre-trained Transformer Models
  (odd / even / top / bottom layer dropping), arXiv:2004.03844
- Tang et al. 2019, Distilling Task-Specific Knowledge from BERT into Simple Neural Networks
  (BiLSTM students), arXiv:1903.12136
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from slimtext.config import RunConfig
from slimtext.data.batches import EncodedSplit
from slimtext.data.registry import DataConfig, Example, load_dataset
from slimtext.data.sources import cache_dir, sha256_file
from slimtext.data.tokenize import load_tokenizer
from slimtext.errors import SlimtextError, UnknownNameError
from slimtext.models.encoder import Encoder, EncoderClassifier
from slimtext.models.registry import RNN_MODELS, apply_method
from slimtext.runs.rundir import RunDir, atomic_save_safetensors
from slimtext.train import finetune
from slimtext.train.loop import predict_logits, resolve_device, seed_everything
from slimtext.train.losses import KDLoss, check_kd

STUDENTS = ("layers", *RNN_MODELS)
NAMED_SELECTIONS = ("odd", "even", "first", "last")
# Data fields that decide which examples land in which split: a student must share the teacher's.
SPLIT_FIELDS = ("data", "split_seed", "text_col", "label_col", "labels")


# --- which layers ---------------------------------------------------------------------------------


def parse_student_layers(
    spec: str, teacher_layers: int, student_layers: int | None = None
) -> list[int]:
    """The teacher layers a student keeps, as sorted **1-based** layer numbers (1 = lowest layer).

    `odd` = 1,3,5,... and `even` = 2,4,6,... (12 layers: 1..11 / 2..12; 6 layers: 1,3,5 / 2,4,6);
    `first` = 1..k and `last` = the top k layers, where k is `student_layers`, or the `:K` suffix
    (`first:4`), or teacher_layers // 2; or an explicit increasing list like `1,4,7`.
    """
    n = teacher_layers
    name, _, suffix = spec.strip().lower().partition(":")
    if suffix:
        if not suffix.isdigit():
            raise SlimtextError(
                f"student layers {spec!r}: write {name}:K with K a number of layers"
            )
        if student_layers is not None and student_layers != int(suffix):
            raise SlimtextError(
                f"student layers {spec!r} disagrees with student_layers={student_layers}"
            )
        student_layers = int(suffix)
    if name in ("odd", "even"):
        ids = list(range(1 if name == "odd" else 2, n + 1, 2))
        if student_layers is not None and student_layers != len(ids):
            raise SlimtextError(
                f"{name} picks {len(ids)} of the teacher's {n} layers, not {student_layers}; "
                "for another count use first:K, last:K or an explicit list like 1,4,7"
            )
    elif name in ("first", "last"):
        k = n // 2 if student_layers is None else student_layers
        if not 1 <= k <= n:
            raise SlimtextError(
                f"a {name} student needs 1..{n} layers (the teacher has {n}); got {k}"
            )
        ids = list(range(1, k + 1)) if name == "first" else list(range(n - k + 1, n + 1))
    else:
        if suffix:
            raise UnknownNameError("layer selection", name, list(NAMED_SELECTIONS))
        ids = _explicit_layers(spec, n)
    if not ids:
        raise SlimtextError(f"{spec!r} selects no layer of a {n}-layer teacher")
    return ids


def _explicit_layers(spec: str, n: int) -> list[int]:
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise SlimtextError(
            f"student layers {spec!r}: use odd, even, first[:K], last[:K] or a comma list of "
            f"1-based layer numbers like 1,4 (the teacher has layers 1..{n})"
        )
    ids = [int(p) for p in parts]
    if 0 in ids:
        raise SlimtextError(
            f"student layers {spec!r}: layers are numbered from 1 (1..{n}), not from 0"
        )
    out = [i for i in ids if i > n]
    if out:
        raise SlimtextError(
            f"student layers {spec!r}: {out} out of range; the teacher has layers 1..{n}"
        )
    if len(set(ids)) != len(ids):
        raise SlimtextError(f"student layers {spec!r}: a layer is listed twice")
    if ids != sorted(ids):
        raise SlimtextError(f"student layers {spec!r}: list the layers in increasing order")
    return ids


# --- building the student -------------------------------------------------------------------------


def layer_student(
    teacher: nn.Module, layers: list[int], num_labels: int, dropout: float = 0.1
) -> EncoderClassifier:
    """A shallower `EncoderClassifier` initialised from `teacher`: embeddings, MPNet relative bias
    and the teacher layers numbered `layers` (**1-based**) in order, plus copies of the teacher's
    pooler and classifier head. Everything is a copy; a LoRA teacher is merged first."""
    from slimtext.models.lora import LoRALinear, merged_copy  # noqa: PLC0415

    if any(isinstance(m, LoRALinear) for m in teacher.modules()):
        teacher = merged_copy(teacher)
    require_encoder(teacher)
    if teacher.classifier.out_features != num_labels:
        raise SlimtextError(
            f"the teacher has {teacher.classifier.out_features} labels, the data {num_labels}"
        )
    encoder = Encoder.from_layers(teacher.encoder, [i - 1 for i in layers])  # 1-based -> 0-based
    encoder.requires_grad_(True)  # a head/LoRA teacher's frozen flags do not carry over
    student = EncoderClassifier(encoder, num_labels, dropout=dropout, pooling=teacher.pooling)
    student.classifier.load_state_dict(teacher.classifier.state_dict())
    return student.train()


def require_encoder(teacher: nn.Module) -> None:
    if not isinstance(teacher, EncoderClassifier):
        raise SlimtextError(
            "a layer-selected student needs a BERT/MPNet encoder teacher, not "
            f"{type(teacher).__name__}; distill this teacher into an RNN instead "
            "(--student lstm, gru or rnn)"
        )


def build_student(cfg: RunConfig, num_labels: int) -> EncoderClassifier:
    """Rebuild a layer student from its run config (`models.registry.build_classifier` calls this).

    method full: the base checkpoint `cfg.model.model` cut to `cfg.distill.student_layers`; the
    run's weights then overwrite every tensor, so the teacher run is not needed. head / lora: the
    frozen weights are the teacher's own layers, so they are taken from the teacher run again
    (`cfg.distill.teacher`, an absolute path), which must still exist.
    """
    m = cfg.model
    if m.method != "full":
        teacher = load_teacher(Path(cfg.distill.teacher))[0]
        layers = parse_student_layers(cfg.distill.student_layers, len(teacher.encoder.layers))
        return layer_student(teacher, layers, num_labels, m.head_dropout)
    from slimtext.models import hub  # noqa: PLC0415

    model, _ = hub.load_classifier(m.model, num_labels, dropout=m.head_dropout, pooling=m.pooling)
    layers = parse_student_layers(cfg.distill.student_layers, len(model.encoder.layers))
    ids0 = [i - 1 for i in layers]  # 1-based -> 0-based
    model.encoder = Encoder.from_layers(model.encoder, ids0)
    return model


def load_teacher(teacher_dir: Path) -> tuple[nn.Module, object, RunConfig, list[str]]:
    from slimtext.predict import load_model  # noqa: PLC0415  (predict imports this package)

    teacher_config(teacher_dir)
    return load_model(teacher_dir)


def teacher_config(teacher_dir: Path) -> RunConfig:
    """The teacher run's config; the run must be finished."""
    run = RunDir(teacher_dir)
    if not run.exists():
        raise SlimtextError(
            f"teacher {teacher_dir} is not a run directory (no config.yaml); "
            "train a teacher first with `slimtext train`"
        )
    if not run.is_finished():
        raise SlimtextError(
            f"teacher run {teacher_dir} is not finished; finish it with "
            f"`slimtext train --resume {teacher_dir}`"
        )
    return RunConfig.from_dict(run.read_config())


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


def cache_path(key: str) -> Path:
    return cache_dir() / "teacher_logits" / f"{key}.safetensors"


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


def teacher_logits(
    teacher_dir: Path, train: list[Example], batch_size: int = 128, device="cpu", teacher=None
) -> dict:
    """The teacher's logits (N, C) for the `train` examples, from the cache or by running the
    teacher once (`teacher` = (model, tokenizer) when already loaded). Returns {'logits', 'seconds',
    'cache_hit', 'path'}; `seconds` is 0.0 on a cache hit."""
    ids = [e.id for e in train]
    path = cache_path(cache_key(teacher_dir, ids))
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            logits, cached_ids = f.get_tensor("logits"), json.loads(f.metadata()["example_ids"])
        return {
            "logits": align_logits(cached_ids, logits, ids),
            "seconds": 0.0,
            "cache_hit": True,
            "path": path,
        }
    model, tokenizer = teacher or load_teacher(teacher_dir)[:2]
    t0 = time.perf_counter()
    split = EncodedSplit(
        tokenizer.encode([e.text for e in train]),
        torch.zeros(len(train), dtype=torch.long),
        tokenizer.pad_id,
    )
    logits = predict_logits(model.to(device), split, batch_size, device)  # (N, C), split order
    seconds = time.perf_counter() - t0
    atomic_save_safetensors(
        path,
        {"logits": logits},
        metadata={"example_ids": json.dumps(ids), "teacher": str(teacher_dir)},
    )
    return {"logits": logits, "seconds": seconds, "cache_hit": False, "path": path}


# --- the recipe -----------------------------------------------------------------------------------


def student_data(asked: DataConfig, teacher: DataConfig) -> DataConfig:
    """The teacher's data config (same dataset, same split seed). `max_examples` and `data_dir` may
    differ; asking for another dataset or split is an error (the student must not train on the
    teacher's dev/test examples, and the cached logits are joined by example id)."""
    default = DataConfig()
    for name in SPLIT_FIELDS:
        want, have = getattr(asked, name), getattr(teacher, name)
        if want != have and want != getattr(default, name):
            raise SlimtextError(
                f"the teacher was trained with data.{name}={have!r} but the student asks for "
                f"{want!r}; a student uses its teacher's dataset and split: leave that option out, "
                f"or distill a teacher trained on {want!r}"
            )
    out = replace(teacher)
    if asked.max_examples is not None:
        out.max_examples = asked.max_examples
    if asked.data_dir:
        out.data_dir = asked.data_dir
    return out


def student_config(cfg: RunConfig, teacher_cfg: RunConfig, teacher: nn.Module | None) -> RunConfig:
    """The student's resolved run config: teacher data, teacher run as an absolute path, the student
    model name, and (layers) the explicit 1-based layer list, so reloading is deterministic."""
    cfg = copy.deepcopy(cfg)
    cfg.data = student_data(cfg.data, teacher_cfg.data)
    cfg.distill.teacher = str(Path(cfg.distill.teacher).resolve())
    student = cfg.distill.student
    if student == "layers":
        require_encoder(teacher)
        layers = parse_student_layers(cfg.distill.student_layers, len(teacher.encoder.layers))
        cfg.distill.student_layers = ",".join(map(str, layers))
        cfg.model.model = teacher_cfg.model.model
        cfg.model.max_length = teacher_cfg.model.max_length  # the teacher's tokenizer
        cfg.model.pooling = teacher.pooling  # resolved ('auto' -> what the teacher used)
    elif student in RNN_MODELS:
        cfg.model.model = student
    else:
        raise UnknownNameError("student", student, list(STUDENTS))
    return cfg


def default_out(cfg: RunConfig) -> Path:
    named = copy.deepcopy(cfg)
    if cfg.distill.student == "layers":
        named.model.model += "-L" + cfg.distill.student_layers.replace(",", ".")
    base = finetune.default_out(named)
    return base.with_name(f"distill-{base.name}")


def distill(
    cfg: RunConfig, out: Path | None = None, resume: bool = False, quiet: bool = False
) -> dict:
    """Distil the teacher run `cfg.distill.teacher` into a student; writes a run directory and
    returns its summary (the fine-tuning summary plus teacher, student_layers, kd_alpha,
    temperature, teacher_logits_seconds and cache_hit). With `resume`, `out` is the interrupted
    run and its own config.yaml decides everything."""
    if resume:
        if out is None or not RunDir(out).exists():
            raise SlimtextError(f"nothing to resume at {out}: give an interrupted distill run")
        cfg = RunConfig.from_dict(RunDir(out).read_config())
    elif not cfg.distill.teacher:
        raise SlimtextError(
            "distill needs a teacher: --teacher RUN_DIR (a finished `slimtext train` run)"
        )
    check_kd(cfg.distill.kd_alpha, cfg.distill.temperature)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))
    teacher_dir = Path(cfg.distill.teacher)
    layered = cfg.distill.student == "layers"
    teacher_cfg = teacher_config(teacher_dir)
    # load before seeding: building a model draws random numbers
    teacher = load_teacher(teacher_dir) if layered else None
    if not resume:
        cfg = student_config(cfg, teacher_cfg, teacher[0] if teacher else None)
        out = Path(out) if out else default_out(cfg)
        if RunDir(out).exists():  # fail before the teacher pass, not after
            raise SlimtextError(
                f"{out} already holds a run; choose another --out or --resume {out}"
            )
    saved_tokenizer = Path(out) / "tokenizer" if resume else None

    data = load_dataset(cfg.data)
    teacher_labels = RunDir(teacher_dir).read_json("labels.json")
    if data.labels != teacher_labels:
        raise SlimtextError(f"labels {data.labels} differ from the teacher's {teacher_labels}")
    device = resolve_device(cfg.train.device)
    t = teacher_logits(
        teacher_dir,
        data.splits["train"],
        cfg.train.eval_batch_size,
        device,
        teacher[:2] if teacher else None,
    )
    how = "read from cache" if t["cache_hit"] else f"computed in {t['seconds']:.1f}s"
    log(f"teacher logits {how}: {t['path']}")

    if layered:
        layers = parse_student_layers(cfg.distill.student_layers, len(teacher[0].encoder.layers))
        # the teacher's tokenizer: the student shares its embeddings
        tokenizer = load_tokenizer(saved_tokenizer or teacher_dir / "tokenizer")
        seed_everything(cfg.train.seed)
        model = layer_student(teacher[0], layers, len(data.labels), cfg.model.head_dropout)
        del teacher
        prepared = finetune.Prepared(
            data,
            tokenizer,
            finetune.encode_splits(data, tokenizer),
            model,
            apply_method(model, cfg),
        )
    else:
        layers = None
        # the standard RNN build (its own vocabulary); it loads the same split again
        prepared = finetune.prepare(cfg, saved_tokenizer=saved_tokenizer)
        if prepared.data.split_ids()["train"] != [e.id for e in data.splits["train"]]:
            raise SlimtextError("the train split changed between two loads of the dataset")
    loss = KDLoss(t["logits"], cfg.distill.kd_alpha, cfg.distill.temperature)
    extra = {
        "teacher": cfg.distill.teacher,
        "teacher_model": teacher_cfg.model.model,
        "student": cfg.distill.student,
        "student_layers": layers,
        "kd_alpha": cfg.distill.kd_alpha,
        "temperature": cfg.distill.temperature,
        "teacher_logits_seconds": round(t["seconds"], 3),
        "cache_hit": t["cache_hit"],
        "teacher_logits_cache": str(t["path"]),
        "teacher_summary": _teacher_summary(teacher_dir),
    }
    return finetune.train(
        cfg, out, resume, quiet, loss_fn=loss, prepared=prepared, extra_summary=extra
    )


def _teacher_summary(teacher_dir: Path) -> dict:
    s = RunDir(teacher_dir).read_summary()
    keys = (
        "model",
        "method",
        "total_params",
        "trainable_params",
        "test",
        "inference_ms_per_example",
    )
    return {k: s[k] for k in keys if k in s}
