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

`--transfer` adds a transfer set (`recipes/transfer.py`: Tang et al.'s augmentation, a dataset's
texts or a file): unlabelled texts appended to the student's train split, labelled by the
teacher's cached logits only. `--hidden-weight`, `--attention-weight` and `--relation-weight` add
intermediate-layer terms for layer students (`train.losses.LayerKD`; the teacher then runs on
every batch).

Layer specs and students live in `models/students.py`, the teacher's logit cache in
`recipes/teacher_cache.py`; this module is the recipe (`distill`).

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
import sys
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from slimtext.checkpoint import load_teacher, teacher_config
from slimtext.config import RunConfig
from slimtext.data.batches import EncodedSplit
from slimtext.data.registry import DataConfig, load_dataset
from slimtext.data.tokenize import load_tokenizer
from slimtext.data.union import union_id, union_parts
from slimtext.errors import SlimtextError, UnknownNameError
from slimtext.models.factory import RNN_MODELS, apply_method
from slimtext.models.students import layer_student, parse_student_layers, require_encoder
from slimtext.recipes import finetune
from slimtext.recipes.finetune import check_training_options
from slimtext.recipes.teacher_cache import hf_teacher_run, is_hf_teacher, teacher_logits
from slimtext.recipes.transfer import (
    needs_teacher_model,
    parse_transfer,
    transfer_examples,
    transfer_texts,
)
from slimtext.rundir import RunDir
from slimtext.train.loop import resolve_device, seed_everything
from slimtext.train.losses import UNLABELLED, KDLoss, LayerKD, check_kd, class_weights

STUDENTS = ("layers", *RNN_MODELS)
# Data fields that decide which examples land in which split: a student must share the teacher's.
SPLIT_FIELDS = ("data", "split_seed", "text_col", "label_col", "labels")


# --- the recipe -----------------------------------------------------------------------------------


def student_data(asked: DataConfig, teacher: DataConfig) -> DataConfig:
    """The teacher's data config (same dataset, same split seed). `max_examples` and `data_dir` may
    differ; asking for another dataset or split is an error (the student must not train on the
    teacher's dev/test examples, and the cached logits are joined by example id). One exception:
    a teacher trained on a union `A+B` may teach a student on one of its sources `A`, whose splits
    the union built the same way (`check_union_source` verifies that against the teacher's
    splits.json)."""
    default = DataConfig()
    source = asked.data in (union_parts(teacher.data) or [])
    for name in SPLIT_FIELDS:
        want, have = getattr(asked, name), getattr(teacher, name)
        if name == "data" and source:
            continue
        if want != have and want != getattr(default, name):
            raise SlimtextError(
                f"the teacher was trained with data.{name}={have!r} but the student asks for "
                f"{want!r}; a student uses its teacher's dataset and split (or one source of a "
                f"teacher's union): leave that option out, or distill a teacher trained on {want!r}"
            )
    out = replace(teacher, data=asked.data) if source else replace(teacher)
    if asked.max_examples is not None:
        out.max_examples = asked.max_examples
    if asked.data_dir:
        out.data_dir = asked.data_dir
    return out


def check_union_source(teacher_dir: Path, data) -> None:
    """A student on source `A` of its teacher's union: none of its dev/test examples may be in the
    teacher's train split (union ids are `A/<id>`), and its train examples must all be there."""
    teacher = RunDir(teacher_dir).read_json("splits.json")
    seen = set(teacher["train"])
    name = data.name
    leaked = [e.id for split in data.splits if split != "train" for e in data.splits[split]
              if union_id(name, e.id) in seen]
    if leaked:
        raise SlimtextError(f"{len(leaked)} of the student's dev/test examples (e.g. {leaked[0]!r}) "
                            f"are in the teacher's train split; its soft labels would leak them")
    unseen = [e.id for e in data.splits["train"] if union_id(name, e.id) not in seen]
    if unseen:
        raise SlimtextError(f"{len(unseen)} of the student's train examples (e.g. {unseen[0]!r}) are "
                            f"not in the teacher's train split; the splits differ from the union's")


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
            "distill needs a teacher: --teacher RUN_DIR (a finished `slimtext train` run) or a "
            "Hugging Face classifier folder (hf:PATH_OR_NAME)"
        )
    check_kd(cfg.distill.kd_alpha, cfg.distill.temperature)
    check_training_options(cfg)
    check_distill_options(cfg)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))
    if not resume and is_hf_teacher(cfg.distill.teacher):  # a transformers classifier folder
        cfg.distill.teacher = str(hf_teacher_run(cfg.distill.teacher, cfg.data, cfg.model.max_length))
    teacher_dir = Path(cfg.distill.teacher)
    layered = cfg.distill.student == "layers"
    teacher_cfg = teacher_config(teacher_dir)
    # load before seeding: building a model draws random numbers
    spec = parse_transfer(cfg.distill.transfer)
    teacher = load_teacher(teacher_dir) if layered or needs_teacher_model(spec) else None
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
    if cfg.data.data != teacher_cfg.data.data:  # a source of the teacher's union
        check_union_source(teacher_dir, data)
    device = resolve_device(cfg.train.device)
    t = teacher_logits(
        teacher_dir,
        data.splits["train"],
        cfg.train.eval_batch_size,
        device,
        teacher[:2] if teacher else None,
        cfg.train.precision,
    )
    how = "read from cache" if t["cache_hit"] else f"computed in {t['seconds']:.1f}s ({t['precision']})"
    log(f"teacher logits {how}: {t['path']}")
    transfer = transfer_examples(transfer_texts(cfg.distill, data.splits["train"], cfg.data.data_dir,
                                                teacher[:2] if teacher else None))
    tt = None
    if transfer:
        tt = teacher_logits(teacher_dir, transfer, cfg.train.eval_batch_size, device,
                            teacher[:2] if teacher else None, cfg.train.precision)
        how = "read from cache" if tt["cache_hit"] else f"computed in {tt['seconds']:.1f}s"
        log(f"transfer set: {len(transfer)} texts ({cfg.distill.transfer}); teacher logits {how}")

    if layered:
        layers = parse_student_layers(cfg.distill.student_layers, len(teacher[0].encoder.layers))
        # the teacher's tokenizer: the student shares its embeddings
        tokenizer = load_tokenizer(saved_tokenizer or teacher_dir / "tokenizer")
        seed_everything(cfg.train.seed)
        model = layer_student(teacher[0], layers, len(data.labels), cfg.model.head_dropout)
        teacher_encoder = teacher[0].encoder
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
    weight = class_weights(prepared.splits["train"].labels, len(data.labels), cfg.train.class_weight)
    logits = t["logits"]
    if transfer:  # appended after the train rows: batch["index"] still joins each row's logits
        logits = torch.cat([logits, tt["logits"]])  # (N + M, C)
        prepared.splits["train"] = with_transfer(prepared.splits["train"], prepared.tokenizer, transfer)
    loss = KDLoss(logits, cfg.distill.kd_alpha, cfg.distill.temperature, weight=weight)
    d = cfg.distill
    if layered and (d.hidden_weight or d.attention_weight or d.relation_weight):
        loss = LayerKD(loss, teacher_encoder, prepared.model.encoder, [i - 1 for i in layers],
                       d.hidden_weight, d.attention_weight, d.relation_weight,
                       relation_heads=teacher_encoder.config.num_heads)
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
        "teacher_logits_precision": t["precision"],
        "teacher_summary": _teacher_summary(teacher_dir),
        "transfer": d.transfer or None,
        "transfer_size": len(transfer),
        "transfer_teacher_seconds": round(tt["seconds"], 3) if tt else 0.0,
        "transfer_cache_hit": tt["cache_hit"] if tt else None,
        "intermediate_weights": {"hidden": d.hidden_weight, "attention": d.attention_weight,
                                 "relation": d.relation_weight},
    }
    return finetune.train(
        cfg, out, resume, quiet, loss_fn=loss, prepared=prepared, extra_summary=extra
    )


def check_distill_options(cfg: RunConfig) -> None:
    """Distillation options that do not fit together, refused before any work."""
    d = cfg.distill
    spec = parse_transfer(d.transfer)
    if spec is not None and cfg.train.class_weight != "none":
        raise SlimtextError("--transfer with --class-weight balanced is not supported: the transfer "
                            "set has no labels to weigh; leave one of them out")
    if d.hidden_weight or d.attention_weight or d.relation_weight:
        if d.student != "layers":
            raise SlimtextError("--hidden-weight / --attention-weight / --relation-weight need a layer "
                                f"student (--student layers), not {d.student!r}")
        if cfg.model.method == "head":
            raise SlimtextError("intermediate-layer losses need a student whose layers train "
                                "(--method full or lora), not --method head")


def with_transfer(train: EncodedSplit, tokenizer, transfer: list) -> EncodedSplit:
    """The train split followed by the transfer texts, labelled UNLABELLED (no hard-label term)."""
    ids = tokenizer.encode([e.text for e in transfer])
    labels = torch.full((len(ids),), UNLABELLED, dtype=torch.long)
    return EncodedSplit(train.input_ids + ids, torch.cat([train.labels, labels]), train.pad_id)


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
