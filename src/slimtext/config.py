"""The run configuration: one dataclass per concern, each defined beside what it configures,
composed into `RunConfig`. The same field docs feed `--help`, `config.yaml` and checkpoints.

Sources, later ones winning: defaults, `--config FILE.yaml` (nested by section), command-line
options, `--set section.key=value` overrides.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any

import yaml

from slimtext.data.registry import DataConfig
from slimtext.errors import SlimtextError, UnknownNameError
from slimtext.models.lora import LoRAConfig
from slimtext.models.rnn import RNNConfig
from slimtext.train.loop import METRICS, OPTIMIZERS, TrainConfig
from slimtext.train.precision import PRECISIONS

METHODS = ("full", "head", "lora")


class ConfigError(SlimtextError):
    """A setting of the wrong type or out of range (named as section.key)."""


@dataclass
class ModelConfig:
    model: str = field(default="lstm", metadata={"help": "rnn, lstm, gru, a transformer name (see `slimtext models list`), a local HF folder or hf:ORG/NAME"})
    method: str = field(default="full", metadata={"help": "full (all weights train), head (frozen encoder, only the classifier trains) or lora"})
    max_length: int = field(default=128, metadata={"help": "truncate inputs to this many tokens"})
    tokenizer: str = field(default="word", metadata={"help": "for RNNs: word or char vocabulary, built from the train split"})
    min_freq: int = field(default=1, metadata={"help": "RNN vocabulary: keep tokens seen at least this often in train"})
    max_vocab: int = field(default=50_000, metadata={"help": "RNN vocabulary size cap"})
    head_dropout: float = field(default=0.1, metadata={"help": "dropout before a transformer's classifier"})
    pooling: str = field(default="auto", metadata={"help": "transformer pooling: auto (the checkpoint's pooler, else cls), pooler, cls or mean"})


@dataclass
class DistillConfig:
    teacher: str | None = field(default=None, metadata={"help": "run directory of the fine-tuned teacher, or a Hugging Face classifier folder (hf:PATH_OR_NAME)"})
    student_layers: str = field(default="odd", metadata={"help": "teacher layers copied into the student, 1-based: odd, even, first[:K], last[:K] or a list like 1,4,7"})
    student: str = field(default="layers", metadata={"help": "layers (a layer-selected transformer) or an RNN cell (lstm, gru, rnn) for DistilRNN"})
    kd_alpha: float = field(default=0.5, metadata={"help": "weight of the soft-target KL term (1 - alpha on the label CE)"})
    temperature: float = field(default=2.0, metadata={"help": "softmax temperature T of the soft targets"})
    transfer: str = field(default="", metadata={"help": "transfer set the student also learns the teacher's soft labels on: augment:N (N Tang et al. augmentations of each train text), data:NAME (a dataset's train texts, labels unused) or FILE (one text a line); empty: the train split only"})
    transfer_p_mask: float = field(default=0.1, metadata={"help": "augment: probability of masking each word"})
    transfer_p_replace: float = field(default=0.1, metadata={"help": "augment: probability of replacing each word by a close word (nearest teacher embedding)"})
    transfer_p_ngram: float = field(default=0.25, metadata={"help": "augment: probability of keeping only a random n-gram (n in 1..5)"})
    transfer_seed: int = field(default=0, metadata={"help": "augment: seed of the augmentation (the same for every student seed)"})
    hidden_weight: float = field(default=0.0, metadata={"help": "layer students: weight of the hidden-state MSE to the source teacher layers (a learned projection where widths differ)"})
    attention_weight: float = field(default=0.0, metadata={"help": "layer students: weight of the per-head attention-distribution KL to the source teacher layers"})
    relation_weight: float = field(default=0.0, metadata={"help": "layer students: weight of MiniLM's last-layer self-attention relation KL"})


SECTIONS: dict[str, tuple[type, str]] = {  # section -> (dataclass, CLI option prefix)
    "data": (DataConfig, ""),
    "model": (ModelConfig, ""),
    "rnn": (RNNConfig, "rnn_"),
    "lora": (LoRAConfig, "lora_"),
    "train": (TrainConfig, ""),
    "distill": (DistillConfig, ""),
}


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    rnn: RNNConfig = field(default_factory=RNNConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    # (section, key) pairs the user set (command line, --set, --config); None when built in code.
    # Not a field: it is not part of the saved config.
    explicit: typing.ClassVar[frozenset[tuple[str, str]] | None] = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        parts = {}
        for name, (klass, _) in SECTIONS.items():
            given = dict(d.get(name) or {})
            known = {f.name for f in fields(klass)}
            extra = set(given) - known
            if extra:
                raise SlimtextError(f"unknown key(s) {sorted(extra)} in section {name!r}; valid: {sorted(known)}")
            hints = typing.get_type_hints(klass)
            parts[name] = klass(**{k: typed(f"{name}.{k}", v, hints[k]) for k, v in given.items()})
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise SlimtextError(f"unknown config section(s) {sorted(unknown)}; valid: {list(SECTIONS)}")
        return cls(**parts)

    def save(self, path: Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _coerce(value: str, typ: Any, key: str = "value"):
    optional = type(None) in typing.get_args(typ)
    typ = typing.get_args(typ)[0] if optional else typ
    if value.lower() in ("none", "null") and (optional or typ is str):
        return None
    if typ is bool:
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value.lower() in ("true", "1", "yes")
    try:
        return typ(value)
    except ValueError:
        raise ConfigError(f"{key} must be {_TYPE_NAMES.get(typ, typ.__name__)}, got {value!r}") from None


def typed(key: str, value: Any, typ: Any):
    """A value from a YAML file checked against its field's type (a string such as '1e-3', which
    YAML 1.1 leaves unparsed, is converted when it reads as the right type)."""
    optional = type(None) in typing.get_args(typ)
    base = typing.get_args(typ)[0] if optional else typ
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} must be {_TYPE_NAMES.get(base, base)}, got null")
    if isinstance(value, str) and base is not str:
        return _coerce(value, typ, key)
    ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          bool: lambda v: isinstance(v, bool), str: lambda v: isinstance(v, str)}.get(base, lambda v: True)
    if not ok(value):
        raise ConfigError(f"{key} must be {_TYPE_NAMES.get(base, base)}, got {value!r}")
    return float(value) if base is float else value


def _check(ok: bool, key: str, value: Any, want: str) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {want}, got {value!r}")


def _choice(value: str, valid: tuple[str, ...], kind: str) -> None:
    if value not in valid:
        raise UnknownNameError(kind, value, list(valid))


def validate(cfg: RunConfig) -> None:
    """Ranges and names of every setting a run uses, checked before anything is created."""
    t, m, r, lo, d = cfg.train, cfg.model, cfg.rnn, cfg.lora, cfg.distill
    for key, value in (("epochs", t.epochs), ("batch_size", t.batch_size), ("eval_batch_size", t.eval_batch_size)):
        _check(value >= 1, f"train.{key}", value, ">= 1")
    _check(math.isfinite(t.lr) and t.lr > 0, "train.lr", t.lr, "a finite number > 0")
    for key, value in (("threads", t.threads), ("patience", t.patience), ("grad_clip", t.grad_clip),
                       ("weight_decay", t.weight_decay), ("momentum", t.momentum)):
        _check(value >= 0 and math.isfinite(value), f"train.{key}", value, ">= 0")
    _check(0 <= t.warmup_ratio < 1, "train.warmup_ratio", t.warmup_ratio, "in [0, 1)")
    _choice(t.optimizer, OPTIMIZERS, "optimizer")
    _choice(t.schedule, ("linear", "constant"), "schedule")
    _choice(t.early_stop_metric, METRICS, "metric")
    _choice(t.precision, PRECISIONS, "precision")
    if not (t.device in ("auto", "cpu", "mps", "cuda") or t.device.startswith("cuda:") and t.device[5:].isdigit()):
        raise UnknownNameError("device", t.device, ["auto", "cpu", "cuda", "cuda:N", "mps"])
    _choice(m.method, METHODS, "method")
    _choice(m.tokenizer, ("word", "char"), "tokenizer")
    _choice(m.pooling, ("auto", "pooler", "cls", "mean"), "pooling")
    for key, value in (("max_length", m.max_length), ("min_freq", m.min_freq), ("max_vocab", m.max_vocab)):
        _check(value >= 1, f"model.{key}", value, ">= 1")
    for key, value in (("model.head_dropout", m.head_dropout), ("rnn.dropout", r.dropout), ("lora.dropout", lo.dropout)):
        _check(0 <= value < 1, key, value, "in [0, 1)")
    for key, value in (("embed_dim", r.embed_dim), ("hidden_dim", r.hidden_dim), ("num_layers", r.num_layers)):
        _check(value >= 1, f"rnn.{key}", value, ">= 1")
    _choice(r.cell, ("rnn", "lstm", "gru"), "cell")
    _choice(r.pooling, ("last", "mean", "max"), "rnn pooling")
    _check(lo.rank >= 1, "lora.rank", lo.rank, ">= 1")
    _check(math.isfinite(lo.alpha) and lo.alpha > 0, "lora.alpha", lo.alpha, "a finite number > 0")
    _check(0 <= d.kd_alpha <= 1, "distill.kd_alpha", d.kd_alpha, "in [0, 1]")
    _check(math.isfinite(d.temperature) and d.temperature > 0, "distill.temperature", d.temperature, "> 0")
    for key in ("transfer_p_mask", "transfer_p_replace", "transfer_p_ngram"):
        _check(0 <= getattr(d, key) <= 1, f"distill.{key}", getattr(d, key), "in [0, 1]")
    _check(d.transfer_p_mask + d.transfer_p_replace <= 1, "distill.transfer_p_mask + transfer_p_replace",
           d.transfer_p_mask + d.transfer_p_replace, "<= 1")
    for key in ("hidden_weight", "attention_weight", "relation_weight"):
        _check(math.isfinite(getattr(d, key)) and getattr(d, key) >= 0, f"distill.{key}", getattr(d, key), ">= 0")
    n = cfg.data.max_examples
    _check(n is None or n >= 1, "data.max_examples", n, ">= 1 (or unset)")


def split_override(item: str, what: str = "override") -> tuple[str, str]:
    """`key=value` -> (key, value), or a clear error."""
    key, sep, value = item.partition("=")
    if not sep:
        raise SlimtextError(f"{what} {item!r} is not key=value")
    return key, value


def coerce_field(klass: type, name: str, value: str, what: str, key: str | None = None):
    """`value` typed as field `name` of dataclass `klass`; an unknown name lists the valid ones."""
    hints = typing.get_type_hints(klass)
    if name not in hints:
        raise UnknownNameError(what, name, list(hints))
    return _coerce(value, hints[name], key or name)


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """`section.key=value` (or a bare `key=value` when the key is unique across sections)."""
    for item in overrides:
        key, value = split_override(item)
        if "." in key:
            section, name = key.split(".", 1)
        else:
            owners = [s for s, (k, _) in SECTIONS.items() if name_in(k, key)]
            if len(owners) != 1:
                raise SlimtextError(f"override key {key!r} is {'ambiguous' if owners else 'unknown'}; use section.key")
            section, name = owners[0], key
        if section not in SECTIONS:
            raise UnknownNameError("config section", section, list(SECTIONS))
        value = coerce_field(SECTIONS[section][0], name, value, f"{section} key", key=f"--set {section}.{name}")
        d.setdefault(section, {})[name] = value
    return d


def name_in(klass: type, key: str) -> bool:
    return any(f.name == key for f in fields(klass))


def dataclass_params(klass: type, prefix: str = "", panel: str | None = None) -> list[inspect.Parameter]:
    """Typer options for every field of a config dataclass, with help text from field metadata
    (fields marked `metadata={"cli": False}` are set by code, not by the user). A field that is
    itself a config dataclass (a nested config) contributes its own fields' options."""
    import typer  # noqa: PLC0415

    hints = typing.get_type_hints(klass)
    params = []
    for f in fields(klass):
        if f.metadata.get("cli", True) is False:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            params += dataclass_params(hints[f.name], prefix, panel=f.name)
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        opt = typer.Option(help=f.metadata.get("help", ""), rich_help_panel=panel)
        params.append(inspect.Parameter(prefix + f.name, inspect.Parameter.KEYWORD_ONLY,
                                        default=default, annotation=Annotated[hints[f.name], opt]))
    return params


def build_nested(klass: type, options: dict):
    """`klass` from flat options, nested config dataclasses rebuilt from their own fields."""
    hints = typing.get_type_hints(klass)
    kwargs = {}
    for f in fields(klass):
        if dataclasses.is_dataclass(hints[f.name]) and f.metadata.get("cli", True) is not False:
            kwargs[f.name] = build_nested(hints[f.name], options)
        elif f.name in options:
            kwargs[f.name] = options[f.name]
    return klass(**kwargs)


def cli_params(sections: list[str]) -> list[inspect.Parameter]:
    """Typer options for every field of the given RunConfig sections, grouped by section."""
    return [p for s in sections for p in dataclass_params(SECTIONS[s][0], SECTIONS[s][1], panel=s)]


def dataclass_command(klass: type):
    """Decorator: a Typer command with one option per field of `klass`, called with `klass(**options)`."""

    def deco(fn):
        def command(**kwargs):
            return fn(build_nested(klass, kwargs))

        command.__name__, command.__doc__ = fn.__name__, fn.__doc__
        command.__signature__ = inspect.Signature(dataclass_params(klass))
        return command

    return deco


def from_cli(kwargs: dict, sections: list[str], config_file: Path | None = None,
             overrides: list[str] | None = None, given: set[str] | None = None) -> RunConfig:
    """Build a RunConfig from Typer kwargs. `given` names the options set on the command line
    (None: those that differ from their default); the others do not override the file."""
    d = read_config_file(config_file) if config_file else {}
    explicit = {(section, key) for section, values in d.items() for key in (values or {})}
    for section in sections:
        klass, prefix = SECTIONS[section]
        for f in fields(klass):
            key = prefix + f.name
            if key in kwargs:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                set_here = key in given if given is not None else kwargs[key] != default
                if set_here or f.name not in (d.get(section) or {}):
                    d.setdefault(section, {})[f.name] = kwargs[key]
                if set_here:
                    explicit.add((section, f.name))
    explicit |= {(s, k) for s, values in apply_overrides({}, overrides or []).items() for k in values}
    cfg = RunConfig.from_dict(apply_overrides(d, overrides or []))
    cfg.explicit = frozenset(explicit)
    return cfg


def read_config_file(path: Path) -> dict:
    """A `--config` YAML file: a mapping of sections, or a clear error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if d is not None and not isinstance(d, dict):
        raise ConfigError(f"--config {path}: expected sections (data, model, train, ...), got a {type(d).__name__}")
    for section, values in (d or {}).items():
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"--config {path}: section {section!r} must be a mapping of key: value")
    return d or {}


def _set_by_user(ctx, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


def with_config_options(*sections: str):
    """Decorator: give a Typer command one option per config field of `sections`; the command
    receives them gathered in `cfg: RunConfig` (after `--config` and `--set` are applied), with
    `cfg.explicit` naming what the user set."""
    import typer  # noqa: PLC0415

    def deco(fn):
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)  # resolve string annotations
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in sig.parameters.values() if p.name != "cfg"]
        names = {p.name for p in own}

        def wrapper(**kwargs):
            mine = {k: v for k, v in kwargs.items() if k in names}
            rest = {k: v for k, v in kwargs.items() if k not in names}
            ctx = rest.pop("typer_context", None)
            given = None if ctx is None else {k for k in rest if _set_by_user(ctx, k)}
            cfg = from_cli(rest, list(sections), mine.get("config"), mine.get("set"), given)
            return fn(cfg=cfg, **mine)

        context = inspect.Parameter("typer_context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        wrapper.__signature__ = sig.replace(parameters=own + cli_params(list(sections)) + [context])
        wrapper.__doc__, wrapper.__name__ = fn.__doc__, fn.__name__
        return wrapper

    return deco
