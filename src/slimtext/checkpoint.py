"""Save a model into a run directory and rebuild it from one: the one place that knows how a
finished run becomes an `nn.Module` again.

    save_weights(model, method)   what a run stores: every tensor (full), or only the trainable
                                  ones (head-only and LoRA: the frozen base comes from elsewhere)
    load_weights(model, sd, method)
    build_model(cfg, labels, tok) the architecture a run config describes (a layer-selected
                                  student cut from its base checkpoint, its frozen teacher layers
                                  from the run's own frozen.safetensors)
    load_model(run)               (model, tokenizer, config, labels) of a finished run, eval mode
    load_teacher(run)             the same, for a finished teacher run (a clear error otherwise)
    save_base(folder, cfg)        at training time, what the run keeps of its base checkpoint

A run that holds every tensor (method full; a head/LoRA layer student with its FROZEN copy) keeps
its base checkpoint's config.json (BASE_CONFIG) and is rebuilt from it alone: no base weights are
read, and `model:` in config.yaml is not followed, so a moved or downloaded run, or one whose base
folder is gone or was replaced, loads the same model. A head/LoRA run needs its frozen base from
elsewhere: it records the sha256 of the base weights (BASE_RECORD) and refuses other weights.
Runs written before these files load as they always did.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from torch import nn

from slimtext.config import RunConfig
from slimtext.errors import SlimtextError
from slimtext.models import hub, load_trainable_state_dict, trainable_state_dict
from slimtext.models.encoder import Encoder
from slimtext.models.factory import apply_method, build_classifier, build_tokenizer, is_rnn
from slimtext.models.students import layer_student, parse_student_layers
from slimtext.rundir import RunDir, atomic_copy, atomic_write_json, load_safetensors


def save_weights(model: nn.Module, method: str) -> dict:
    return model.state_dict() if method == "full" else trainable_state_dict(model)


def load_weights(model: nn.Module, sd: dict, method: str) -> None:
    """Put saved weights back; shapes must match and every key must be known (named if not)."""
    if method != "full":
        load_trainable_state_dict(model, sd)
        return
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    wrong = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
             if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise SlimtextError(f"weights do not fit the model: missing {missing[:10]}, "
                            f"unexpected {unexpected[:10]}, wrong shapes {wrong[:10]}")
    model.load_state_dict(sd)


FROZEN = "frozen.safetensors"  # a head/LoRA student's frozen teacher layers, kept in its own run


def needs_frozen_copy(cfg: RunConfig) -> bool:
    """A head/LoRA layer student: its frozen weights are its teacher's layers, not a named checkpoint."""
    return bool(cfg.distill.teacher) and cfg.distill.student == "layers" and cfg.model.method != "full"


def build_student(cfg: RunConfig, num_labels: int, frozen: Path | None = None) -> nn.Module:
    """Rebuild a layer-selected student from its run config.

    method full: the base checkpoint `cfg.model.model` cut to `cfg.distill.student_layers`; the
    run's weights then overwrite every tensor, so the teacher run is not needed. head / lora: the
    frozen weights are the teacher's own layers: the run's own copy `frozen` (FROZEN) when it has
    one, so the run stands alone; runs from before that copy take them from the teacher run again
    (`cfg.distill.teacher`), which must then still exist.
    """
    m = cfg.model
    if m.method != "full" and not (frozen and frozen.exists()):
        teacher = load_teacher(Path(cfg.distill.teacher))[0]
        layers = parse_student_layers(cfg.distill.student_layers, len(teacher.encoder.layers))
        return layer_student(teacher, layers, num_labels, m.head_dropout)
    model, _ = hub.load_classifier(m.model, num_labels, dropout=m.head_dropout, pooling=m.pooling)
    layers = parse_student_layers(cfg.distill.student_layers, len(model.encoder.layers))
    model.encoder = Encoder.from_layers(model.encoder, [i - 1 for i in layers])  # 1-based -> 0-based
    return model


BASE_CONFIG = "base/config.json"  # a run holding every tensor: its base checkpoint's config.json
BASE_RECORD = "base.json"  # a head/LoRA run: {"model", "folder", "sha256"} of the base weights it needs


def is_layer_student(cfg: RunConfig) -> bool:
    return bool(cfg.distill.teacher) and cfg.distill.student == "layers"


def holds_every_tensor(cfg: RunConfig) -> bool:
    """Method full, or a head/LoRA layer student (whose FROZEN copy holds what does not train)."""
    return cfg.model.method == "full" or needs_frozen_copy(cfg)


def save_base(folder: Path, cfg: RunConfig) -> None:
    """At training time (RNNs: nothing). A run holding every tensor keeps its base checkpoint's
    config.json (a layer student: its teacher run's copy when it has one); a head/LoRA run records
    the name, folder and sha256 of the base weights it will need again."""
    if is_rnn(cfg.model.model):
        return
    if holds_every_tensor(cfg):
        saved = Path(cfg.distill.teacher) / BASE_CONFIG if is_layer_student(cfg) else None
        source = saved if saved and saved.is_file() else hub.resolve(cfg.model.model) / "config.json"
        atomic_copy(source, Path(folder) / BASE_CONFIG)
        return
    base = hub.resolve(cfg.model.model)
    atomic_write_json(Path(folder) / BASE_RECORD, {"model": cfg.model.model, "folder": str(base),
                                                   "sha256": hub.weights_sha256(base)})


def check_base_weights(run: Path, cfg: RunConfig) -> None:
    """A head/LoRA run's base (`model:` in its config.yaml) must hold the weights it was trained on."""
    if not (run / BASE_RECORD).is_file():  # a run from before BASE_RECORD
        return
    record = json.loads((run / BASE_RECORD).read_text(encoding="utf-8"))
    folder = hub.resolve(cfg.model.model)
    digest = hub.weights_sha256(folder)
    if digest != record["sha256"]:
        raise SlimtextError(
            f"run {run} was trained on base weights sha256 {record['sha256'][:16]}… ({record['model']}), "
            f"but {folder} holds {digest[:16]}…; its adapters and head fit only those weights: point "
            f"model.model in {run / 'config.yaml'} at that checkpoint (or put it back), or train again"
        )


def _tensor_names(path: Path) -> set[str]:
    with safe_open(str(path), framework="pt") as f:
        return set(f.keys())


def build_from_base_config(cfg: RunConfig, num_labels: int, run: Path, weights: Path) -> nn.Module:
    """The run's architecture from its BASE_CONFIG: no base weights read, tensors left uninitialised
    for `weights` (the run's own, covering every tensor) to overwrite. The encoder keeps a pooler
    when the weights have one; a layer student is cut to its `student_layers`."""
    m = cfg.model
    config = json.loads((run / BASE_CONFIG).read_text(encoding="utf-8"))
    pooler = any(name.startswith("encoder.pooler.") for name in _tensor_names(weights))
    model = hub.classifier_skeleton(config, num_labels, has_pooler=pooler, dropout=m.head_dropout, pooling=m.pooling)
    if is_layer_student(cfg):
        layers = parse_student_layers(cfg.distill.student_layers, len(model.encoder.layers))
        model.encoder = Encoder.from_layers(model.encoder, [i - 1 for i in layers])  # 1-based -> 0-based
    return model.to_empty(device="cpu")


def build_model(cfg: RunConfig, num_labels: int, tokenizer, run_dir: Path | None = None) -> nn.Module:
    """The architecture of a run, method applied, weights not yet loaded (except a head/LoRA
    student's frozen layers, read from the run's FROZEN copy when it has one)."""
    run = Path(run_dir) if run_dir else None
    frozen = run / FROZEN if run else None
    own = frozen if needs_frozen_copy(cfg) else (run / "model.safetensors" if run else None)
    if run and (run / BASE_CONFIG).is_file() and holds_every_tensor(cfg) and own.is_file():
        model = build_from_base_config(cfg, num_labels, run, own)
    elif is_layer_student(cfg):
        model = build_student(cfg, num_labels, frozen)
    else:
        if run and not is_rnn(cfg.model.model):
            check_base_weights(run, cfg)
        model = build_classifier(cfg, num_labels, tokenizer)
    apply_method(model, cfg)
    if needs_frozen_copy(cfg) and frozen is not None and frozen.exists():
        load_weights(model, load_safetensors(frozen), "full")
    return model


def load_model(run_dir: str | Path) -> tuple[nn.Module, object, RunConfig, list[str]]:
    """A finished run's model (eval mode), tokenizer, config and label names."""
    run = RunDir(run_dir)
    if not run.weights_path.exists():
        raise SlimtextError(f"{run.path}: no model.safetensors (is it a finished slimtext run?)")
    cfg = RunConfig.from_dict(run.read_config())
    labels = run.read_json("labels.json")
    tokenizer = build_tokenizer(cfg, saved=run.path / "tokenizer")
    model = build_model(cfg, len(labels), tokenizer, run.path)
    load_weights(model, load_safetensors(run.weights_path), cfg.model.method)
    return model.eval(), tokenizer, cfg, labels


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


def load_teacher(teacher_dir: Path) -> tuple[nn.Module, object, RunConfig, list[str]]:
    teacher_config(teacher_dir)
    return load_model(teacher_dir)
