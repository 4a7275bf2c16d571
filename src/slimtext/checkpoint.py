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
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from slimtext.config import RunConfig
from slimtext.errors import SlimtextError
from slimtext.models import hub, load_trainable_state_dict, trainable_state_dict
from slimtext.models.encoder import Encoder
from slimtext.models.factory import apply_method, build_classifier, build_tokenizer
from slimtext.models.students import layer_student, parse_student_layers
from slimtext.rundir import RunDir, load_safetensors


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


def build_model(cfg: RunConfig, num_labels: int, tokenizer, run_dir: Path | None = None) -> nn.Module:
    """The architecture of a run, method applied, weights not yet loaded (except a head/LoRA
    student's frozen layers, read from the run's FROZEN copy when it has one)."""
    frozen = Path(run_dir) / FROZEN if run_dir else None
    if cfg.distill.teacher and cfg.distill.student == "layers":
        model = build_student(cfg, num_labels, frozen)
    else:
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
