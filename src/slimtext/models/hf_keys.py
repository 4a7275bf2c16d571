"""Hugging Face checkpoint -> slimtext parameter names, as explicit per-family key maps.

Each map is `HF name -> our name`; `{i}` stands for the layer index. A tuple value splits a fused
tensor along the output dimension (GPT-2's `c_attn` -> query, key, value). Names in a family's
`CONV1D` set are GPT-2 `Conv1D` weights stored as (in, out) and are transposed to `nn.Linear`'s
(out, in). `convert_state` applies a map, asserts every shape and names missing or unexpected keys.

References: torchtune `models/convert_weights.py`; nanoGPT `GPT.from_pretrained`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from slimtext.errors import SlimtextError

Target = str | tuple[str, ...]

_BERT_LAYER = {
    "encoder.layer.{i}.attention.self.query.{p}": "layers.{i}.attention.query.{p}",
    "encoder.layer.{i}.attention.self.key.{p}": "layers.{i}.attention.key.{p}",
    "encoder.layer.{i}.attention.self.value.{p}": "layers.{i}.attention.value.{p}",
    "encoder.layer.{i}.attention.output.dense.{p}": "layers.{i}.attention.output.{p}",
    "encoder.layer.{i}.attention.output.LayerNorm.{p}": "layers.{i}.attention_norm.{p}",
    "encoder.layer.{i}.intermediate.dense.{p}": "layers.{i}.ffn.intermediate.{p}",
    "encoder.layer.{i}.output.dense.{p}": "layers.{i}.ffn.output.{p}",
    "encoder.layer.{i}.output.LayerNorm.{p}": "layers.{i}.ffn_norm.{p}",
}
_MPNET_LAYER = {
    "encoder.layer.{i}.attention.attn.q.{p}": "layers.{i}.attention.query.{p}",
    "encoder.layer.{i}.attention.attn.k.{p}": "layers.{i}.attention.key.{p}",
    "encoder.layer.{i}.attention.attn.v.{p}": "layers.{i}.attention.value.{p}",
    "encoder.layer.{i}.attention.attn.o.{p}": "layers.{i}.attention.output.{p}",
    "encoder.layer.{i}.attention.LayerNorm.{p}": "layers.{i}.attention_norm.{p}",
    "encoder.layer.{i}.intermediate.dense.{p}": "layers.{i}.ffn.intermediate.{p}",
    "encoder.layer.{i}.output.dense.{p}": "layers.{i}.ffn.output.{p}",
    "encoder.layer.{i}.output.LayerNorm.{p}": "layers.{i}.ffn_norm.{p}",
}
_GPT2_LAYER: dict[str, Target] = {
    "h.{i}.ln_1.{p}": "layers.{i}.attention_norm.{p}",
    "h.{i}.attn.c_attn.{p}": tuple(f"layers.{{i}}.attention.{n}.{{p}}" for n in ("query", "key", "value")),
    "h.{i}.attn.c_proj.{p}": "layers.{i}.attention.output.{p}",
    "h.{i}.ln_2.{p}": "layers.{i}.ffn_norm.{p}",
    "h.{i}.mlp.c_fc.{p}": "layers.{i}.ffn.intermediate.{p}",
    "h.{i}.mlp.c_proj.{p}": "layers.{i}.ffn.output.{p}",
}
_EMBEDDINGS = {
    "embeddings.word_embeddings.weight": "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight": "embeddings.position_embeddings.weight",
    "embeddings.LayerNorm.weight": "embeddings.norm.weight",
    "embeddings.LayerNorm.bias": "embeddings.norm.bias",
}
POOLER = {"pooler.dense.weight": "pooler.dense.weight", "pooler.dense.bias": "pooler.dense.bias"}

TOP_LEVEL: dict[str, dict[str, Target]] = {
    "bert": {
        **_EMBEDDINGS,
        "embeddings.token_type_embeddings.weight": "embeddings.token_type_embeddings.weight",
    },
    "mpnet": {
        **_EMBEDDINGS,
        "encoder.relative_attention_bias.weight": "relative_attention_bias.weight",
    },
    "gpt2": {
        "wte.weight": "word_embeddings.weight",
        "wpe.weight": "position_embeddings.weight",
        "ln_f.weight": "final_norm.weight",
        "ln_f.bias": "final_norm.bias",
    },
}
PER_LAYER: dict[str, dict[str, Target]] = {"bert": _BERT_LAYER, "mpnet": _MPNET_LAYER, "gpt2": _GPT2_LAYER}
CONV1D = {"gpt2": {"attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"}}
PREFIXES = {"bert": "bert.", "mpnet": "mpnet.", "gpt2": "transformer."}
# The task head of `*ForSequenceClassification` (HF name -> ours). MPNet's head is dense + tanh on
# <s>, then out_proj: the dense layer is our pooler. GPT-2's `score` has no bias.
SEQUENCE_HEADS: dict[str, dict[str, str]] = {
    "bert": {"classifier.weight": "classifier.weight", "classifier.bias": "classifier.bias"},
    "mpnet": {"classifier.dense.weight": "pooler.dense.weight", "classifier.dense.bias": "pooler.dense.bias",
              "classifier.out_proj.weight": "classifier.weight", "classifier.out_proj.bias": "classifier.bias"},
    "gpt2": {"score.weight": "classifier.weight"},
}

# Buffers and task heads that HF checkpoints carry and a backbone does not need.
_IGNORED_SUFFIXES = ("position_ids", "token_type_ids", ".attn.bias", ".attn.masked_bias")
_IGNORED_HEADS = ("cls.", "lm_head.", "classifier.", "score.", "qa_outputs.")


def key_map(family: str, num_layers: int, pooler: bool = False) -> dict[str, Target]:
    """The full explicit map for a checkpoint with `num_layers` layers."""
    mapping = dict(TOP_LEVEL[family])
    for i in range(num_layers):
        for p in ("weight", "bias"):
            for hf, ours in PER_LAYER[family].items():
                key = hf.format(i=i, p=p)
                if isinstance(ours, tuple):
                    mapping[key] = tuple(o.format(i=i, p=p) for o in ours)
                else:
                    mapping[key] = ours.format(i=i, p=p)
    if pooler:
        mapping.update(POOLER)
    return mapping


def read_checkpoint(folder: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of `model.safetensors`, else `pytorch_model.bin` (read with weights_only=True)."""
    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(folder / "model.safetensors")
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise SlimtextError(
        f"{folder} holds no model.safetensors or pytorch_model.bin; "
        "point at a Hugging Face model folder (config.json plus weights)"
    )


def strip_prefix(state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """Drop the `bert.`/`mpnet.`/`transformer.` prefix, task heads and known buffers."""
    prefix = PREFIXES[family]
    out = {}
    for name, tensor in state.items():
        name = name.removeprefix(prefix)
        if name.startswith(_IGNORED_HEADS) or name.endswith(_IGNORED_SUFFIXES):
            continue
        out[name] = tensor
    return out


def convert_state(
    hf_state: dict[str, torch.Tensor],
    family: str,
    mapping: dict[str, Target],
    expected: dict[str, torch.Size],
    source: str,
) -> dict[str, torch.Tensor]:
    """Rename `hf_state` (prefix already stripped) to our names; check keys and shapes.

    `expected` is our model's `{name: shape}`; `source` names the checkpoint in error messages.
    """
    unexpected = sorted(set(hf_state) - set(mapping))
    conv = CONV1D.get(family, set())
    ours: dict[str, torch.Tensor] = {}
    for hf_name, target in mapping.items():
        if hf_name not in hf_state:
            continue
        tensor = hf_state[hf_name]
        if any(hf_name.endswith(c) for c in conv):
            tensor = tensor.t()  # Conv1D (in, out) -> Linear (out, in)
        if isinstance(target, tuple):
            for name, part in zip(target, tensor.chunk(len(target), dim=0), strict=True):
                ours[name] = part.clone(memory_format=torch.contiguous_format)  # own storage
        else:
            ours[target] = tensor.contiguous()
    missing = sorted(n for n in expected if n not in ours)
    if missing or unexpected:
        lines = [f"{source}: checkpoint keys do not match a {family} model"]
        if missing:
            names = dict.fromkeys(inverse_name(mapping, n) for n in missing)  # c_attn once
            lines.append("missing: " + ", ".join(names))
        if unexpected:
            lines.append("unexpected: " + ", ".join(unexpected))
        lines.append("is config.json (model_type, num_hidden_layers) the one saved with these weights?")
        raise SlimtextError("\n".join(lines))
    for name, tensor in ours.items():
        if tuple(tensor.shape) != tuple(expected[name]):
            raise SlimtextError(
                f"{source}: {inverse_name(mapping, name)} has shape {tuple(tensor.shape)}, "
                f"the model built from config.json expects {tuple(expected[name])} for {name}; "
                "config.json and the weights disagree"
            )
    return ours


def inverse_name(mapping: dict[str, Target], ours: str) -> str:
    """The HF name that maps to our name `ours` (for error messages)."""
    for hf, target in mapping.items():
        if ours == target or (isinstance(target, tuple) and ours in target):
            return hf
    return ours


# --- the other direction: our names -> Hugging Face names (`slimtext export --hf`) ----------------


def reverse_map(mapping: dict[str, Target]) -> dict[str, str]:
    """`our name -> HF name` for every tensor of `mapping` (each part of a fused HF tensor too)."""
    out = {}
    for hf, target in mapping.items():
        for ours in target if isinstance(target, tuple) else (target,):
            out[ours] = hf
    return out


def to_hf_state(
    ours: dict[str, torch.Tensor], family: str, mapping: dict[str, Target], source: str
) -> dict[str, torch.Tensor]:
    """Our backbone tensors under HF names (prefix not added): the inverse of `convert_state`.

    Fused targets are concatenated along the output dimension (query, key, value -> `c_attn`) and
    `CONV1D` weights transposed back to (in, out). Every tensor of `ours` must be used and every
    HF name produced (both named if not); the result is converted back with `convert_state`, which
    must give the same tensors, so each shape is checked against the model it came from.
    """
    missing = sorted(n for n in reverse_map(mapping) if n not in ours)
    unexpected = sorted(set(ours) - set(reverse_map(mapping)))
    if missing or unexpected:
        lines = [f"{source}: the model's tensors do not match a {family} checkpoint"]
        if missing:
            lines.append("missing: " + ", ".join(missing))
        if unexpected:
            lines.append("unexpected: " + ", ".join(unexpected))
        raise SlimtextError("\n".join(lines))
    conv = CONV1D.get(family, set())
    hf: dict[str, torch.Tensor] = {}
    for hf_name, target in mapping.items():
        if isinstance(target, tuple):
            parts = [ours[n] for n in target]
            if len({tuple(p.shape) for p in parts}) != 1:
                shapes = ", ".join(f"{n} {tuple(p.shape)}" for n, p in zip(target, parts))
                raise SlimtextError(f"{source}: cannot fuse into {hf_name}: shapes differ ({shapes})")
            tensor = torch.cat(parts, dim=0)  # (3 * out, in) for query, key, value
        else:
            tensor = ours[target]
        if any(hf_name.endswith(c) for c in conv):
            tensor = tensor.t()  # Linear (out, in) -> Conv1D (in, out)
        hf[hf_name] = tensor.detach().contiguous()
    back = convert_state(hf, family, mapping, {k: v.shape for k, v in ours.items()}, source)
    for name, tensor in ours.items():
        if not torch.equal(back[name], tensor):
            raise SlimtextError(f"{source}: {name} does not survive the key map both ways")
    return hf
