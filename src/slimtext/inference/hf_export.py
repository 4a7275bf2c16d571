"""Export a finished run as a Hugging Face `transformers` folder, and upload it to the Hub.

    export_hf(run, out)          out/: config.json, model.safetensors (HF key names), tokenizer.json
                                 + tokenizer_config.json + special_tokens_map.json, README.md (card)
    push_to_hub(out, repo_id)    upload that folder with huggingface_hub

`AutoModelForSequenceClassification.from_pretrained(out)` and
`pipeline("text-classification", model=out, top_k=None)` load it as it is. How each slimtext
classifier maps onto a `transformers` class (modeling_bert.py / modeling_mpnet.py /
modeling_gpt2.py), exactly, or not at all:

| slimtext                        | transformers                    | mapping                                  |
|---------------------------------|---------------------------------|------------------------------------------|
| BERT, pooling `pooler`          | BertForSequenceClassification   | pooler dense+tanh on [CLS] -> classifier |
| MPNet, pooling `pooler`         | MPNetForSequenceClassification  | our pooler -> classifier.dense (tanh on  |
|                                 |                                 | <s>), our classifier -> classifier.out_proj |
| GPT-2, last real token          | GPT2ForSequenceClassification   | `score` has no bias: ours is folded into |
|                                 |                                 | the final LayerNorm's bias (below)       |
| BERT / MPNet, pooling cls, mean | none                            | refused: every HF head puts dense+tanh   |
|                                 |                                 | on the first token; no class averages    |

The GPT-2 bias fold: logits = W h + b with h = ln_f(x). With delta = pinv(W) b, W delta = b exactly
whenever W (C x H, C <= H) has full row rank, so ln_f's bias + delta gives W (h + delta) = W h + b for
every token. The residual is checked; a rank-deficient head is refused.

LoRA runs are merged first; a layer-selected student is written as the smaller model it is (its
num_hidden_layers); a `calibration.json` temperature T is folded into the classifier (weight and
bias divided by T), so the pipeline's softmax gives slimtext's calibrated probabilities.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from slimtext.checkpoint import load_model
from slimtext.errors import OfflineError, SlimtextError
from slimtext.inference.base import read_calibration
from slimtext.inference.export import inference_copy
from slimtext.inference.hf_card import model_card
from slimtext.models import hf_keys
from slimtext.models.decoder import DecoderClassifier
from slimtext.models.encoder import EncoderClassifier
from slimtext.rundir import RunDir, atomic_save_safetensors, atomic_write_json, atomic_write_text

ARCHITECTURES = {"bert": "BertForSequenceClassification", "mpnet": "MPNetForSequenceClassification",
                 "gpt2": "GPT2ForSequenceClassification"}
SPECIAL = {  # tokenizer_config.json key -> token strings BERT / MPNet / GPT-2 vocabularies use
    "unk_token": ("[UNK]", "<unk>"), "cls_token": ("[CLS]", "<s>"), "sep_token": ("[SEP]", "</s>"),
    "pad_token": ("[PAD]", "<pad>"), "mask_token": ("[MASK]", "<mask>"),
    "bos_token": ("<s>", "<|endoftext|>"), "eos_token": ("</s>", "<|endoftext|>"),
}


def calibration(run: RunDir) -> dict:
    """The run's calibration.json (temperature, threshold, ...) or the neutral defaults."""
    cal = read_calibration(run.path) or {}
    return {"temperature": 1.0, "threshold": None, "positive_label": None, **cal}


def _classifier(model: nn.Module, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's weight (C, H) and bias (C,), divided by the calibration temperature."""
    if temperature <= 0:
        raise SlimtextError(f"calibration.json: temperature must be > 0, got {temperature}")
    head = model.classifier
    return head.weight.detach() / temperature, head.bias.detach() / temperature


def _label_fields(labels: list[str]) -> dict:
    return {"id2label": dict(enumerate(labels)), "label2id": {lab: i for i, lab in enumerate(labels)},
            "problem_type": "single_label_classification"}


def _encoder(model: EncoderClassifier, temperature: float, source: str) -> tuple[dict, dict]:
    """config.json fields and HF tensors of a BERT / MPNet classifier (pooling `pooler` only)."""
    c = model.encoder.config
    if model.pooling != "pooler":
        raise SlimtextError(
            f"{source}: pooling {model.pooling!r} has no Hugging Face class: "
            f"{ARCHITECTURES[c.family]} puts a dense+tanh layer on the first token and no class "
            "averages tokens; only runs trained with pooling 'pooler' (the default 'auto' on a "
            "checkpoint with a pooler) export to transformers. Retrain with --pooling pooler, or "
            "use `slimtext export --onnx` / `--merged`."
        )
    backbone = {k.removeprefix("encoder."): v for k, v in model.state_dict().items()
                if k.startswith("encoder.")}
    pooler = {k: backbone.pop(k) for k in list(backbone) if k.startswith("pooler.")}
    mapping = hf_keys.key_map(c.family, c.num_layers)
    prefix = hf_keys.PREFIXES[c.family]
    state = {prefix + k: v for k, v in hf_keys.to_hf_state(backbone, c.family, mapping, source).items()}
    weight, bias = _classifier(model, temperature)
    if c.family == "bert":
        state.update({"bert.pooler.dense.weight": pooler["pooler.dense.weight"],
                      "bert.pooler.dense.bias": pooler["pooler.dense.bias"],
                      "classifier.weight": weight, "classifier.bias": bias})
    else:  # MPNetClassificationHead: out_proj(tanh(dense(hidden[:, 0])))
        state.update({"classifier.dense.weight": pooler["pooler.dense.weight"],
                      "classifier.dense.bias": pooler["pooler.dense.bias"],
                      "classifier.out_proj.weight": weight, "classifier.out_proj.bias": bias})
    config = {
        "model_type": c.family, "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
        "intermediate_size": c.intermediate_size, "hidden_act": c.hidden_act,
        "hidden_dropout_prob": c.hidden_dropout, "attention_probs_dropout_prob": c.attention_dropout,
        "max_position_embeddings": c.max_position_embeddings, "layer_norm_eps": c.layer_norm_eps,
        "pad_token_id": c.pad_token_id, "classifier_dropout": model.dropout.p,
    }
    if c.family == "bert":
        config.update(type_vocab_size=c.type_vocab_size, position_embedding_type="absolute")
    else:
        config.update(relative_attention_num_buckets=c.relative_attention_num_buckets)
    return config, state


def fold_bias(weight: torch.Tensor, bias: torch.Tensor, source: str) -> torch.Tensor:
    """delta (H,) with weight @ delta == bias (see the module docstring), in float64."""
    w, b = weight.double(), bias.double()
    delta = torch.linalg.pinv(w) @ b  # (H,)
    residual = float((w @ delta - b).abs().max())
    if residual > 1e-6 * (1.0 + float(b.abs().max())):
        raise SlimtextError(
            f"{source}: GPT2ForSequenceClassification's score layer has no bias and this head's "
            f"bias cannot be folded into the final LayerNorm (residual {residual:.2e}: the "
            "classifier's rows are linearly dependent)"
        )
    return delta.to(weight.dtype)


def _decoder(model: DecoderClassifier, temperature: float, pad_id: int, source: str) -> tuple[dict, dict]:
    """config.json fields and HF tensors of a GPT-2 classifier (bias folded into ln_f)."""
    c = model.decoder.config
    backbone = {k.removeprefix("decoder."): v.clone() for k, v in model.state_dict().items()
                if k.startswith("decoder.")}
    weight, bias = _classifier(model, temperature)
    backbone["final_norm.bias"] = backbone["final_norm.bias"] + fold_bias(weight, bias, source)
    mapping = hf_keys.key_map("gpt2", c.num_layers)
    state = {"transformer." + k: v for k, v in hf_keys.to_hf_state(backbone, "gpt2", mapping, source).items()}
    state["score.weight"] = weight
    config = {
        "model_type": "gpt2", "vocab_size": c.vocab_size, "n_embd": c.hidden_size,
        "n_layer": c.num_layers, "n_head": c.num_heads, "n_inner": c.intermediate_size,
        "n_positions": c.max_position_embeddings, "layer_norm_epsilon": c.layer_norm_eps,
        "activation_function": c.hidden_act, "resid_pdrop": c.hidden_dropout,
        "embd_pdrop": c.embedding_dropout, "attn_pdrop": c.attention_dropout,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "pad_token_id": pad_id, "bos_token_id": pad_id,
        "eos_token_id": pad_id,
    }
    return config, state


def _special_tokens(tok) -> dict[str, str]:
    """tokenizer_config.json special tokens: those of SPECIAL present in the vocabulary."""
    vocab = tok.get_vocab()
    return {key: next(t for t in names if t in vocab) for key, names in SPECIAL.items()
            if any(t in vocab for t in names)}


def _decoder_pad(tok, source: str) -> tuple[str, int]:
    """GPT2ForSequenceClassification finds each text's last token as the last id that is not
    `pad_token_id`, so the pad must be a special token no ordinary text encodes to."""
    added = {t.content: i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    for name in ("<|endoftext|>", "<pad>", *sorted(added)):
        if name in added:
            return name, added[name]
    raise SlimtextError(
        f"{source}: the tokenizer has no special token to pad with; GPT2ForSequenceClassification "
        "finds each text's last token by its pad id (add <|endoftext|> to tokenizer.json)"
    )


def _tokenizer_files(run: RunDir, tokenizer, folder: Path, pad: str | None) -> None:
    """tokenizer.json exactly as slimtext uses it, and the config that loads it as a fast tokenizer
    (inputs: ids and mask only; MPNet's forward takes no token_type_ids)."""
    for name in ("tokenizer.json", "vocab.txt"):
        if (run.path / "tokenizer" / name).is_file():
            atomic_write_text(folder / name, (run.path / "tokenizer" / name).read_text(encoding="utf-8"))
    special = _special_tokens(tokenizer.tok)
    if pad is not None:
        special["pad_token"] = pad
    atomic_write_json(folder / "special_tokens_map.json", special)
    atomic_write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": tokenizer.max_length,
        "padding_side": "right", "truncation_side": "right",
        "model_input_names": ["input_ids", "attention_mask"], **special,
    })


def export_hf(run_dir: str | Path, out: str | Path) -> Path:
    """Write `out/` for transformers from a finished run (see the module docstring); returns out."""
    run, folder = RunDir(run_dir), Path(out)
    if RunDir(folder).exists():  # config.yaml: a run directory, whose weights would be replaced
        raise SlimtextError(f"--hf {folder} is a slimtext run directory; choose a new folder for the export")
    model, tokenizer, cfg, labels = load_model(run.path)
    source = str(run.path)
    if getattr(tokenizer, "kind", "") != "wordpiece" or not isinstance(model, (EncoderClassifier, DecoderClassifier)):
        raise SlimtextError(
            f"{source}: a {cfg.model.model} run has no transformers class; --hf exports BERT, "
            "MPNet and GPT-2 runs (use --onnx for the others)"
        )
    plain = inference_copy(model).float().cpu()  # LoRA adapters folded into plain linears
    cal = calibration(run)
    pad = None
    if isinstance(plain, EncoderClassifier):
        config, state = _encoder(plain, cal["temperature"], source)
        family = plain.encoder.config.family
        if family == "mpnet":  # MPNetConfig's bos/eos: the <s> and </s> of this vocabulary
            ids = {k: tokenizer.tok.token_to_id(t) for k, t in (("bos_token_id", "<s>"), ("eos_token_id", "</s>"))}
            config.update({k: v for k, v in ids.items() if v is not None})
    else:
        pad, pad_id = _decoder_pad(tokenizer.tok, source)
        config, state = _decoder(plain, cal["temperature"], pad_id, source)
        family = "gpt2"
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": [ARCHITECTURES[family]], **config, **_label_fields(labels),
              "torch_dtype": "float32",
              "slimtext": {"source_run": str(run.path.resolve()), "model": cfg.model.model,
                           "method": cfg.model.method, "pooling": getattr(plain, "pooling", "last"),
                           "temperature_folded": cal["temperature"], "threshold": cal["threshold"],
                           "positive_label": cal["positive_label"], "max_length": tokenizer.max_length}}
    atomic_write_json(folder / "config.json", config)
    atomic_save_safetensors(folder / "model.safetensors", state, metadata={"format": "pt"})
    _tokenizer_files(run, tokenizer, folder, pad)
    atomic_write_text(folder / "README.md", model_card(run, cfg, labels, config, cal))
    return folder


def _unreachable(e: Exception) -> bool:
    """Offline mode, or a network failure of huggingface_hub's HTTP client (httpx or httpx2:
    matched by class name, so either version's `TransportError` counts)."""
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & {"OfflineModeIsEnabled", "TransportError", "ConnectionError", "TimeoutError"})


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload an exported folder to `repo_id` (created if needed); returns the repository URL.
    Offline (HF_HUB_OFFLINE or no network) is a one-line `OfflineError`."""
    try:
        from huggingface_hub import HfApi  # noqa: PLC0415
        from huggingface_hub.errors import HfHubHTTPError  # noqa: PLC0415
    except ImportError:
        raise SlimtextError("--push-to-hub needs huggingface_hub: pip install 'slimtext[hub]'") from None
    api = HfApi()
    try:
        url = api.create_repo(repo_id, exist_ok=True, private=private)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="slimtext export --hf")
    except HfHubHTTPError as e:
        raise SlimtextError(f"the Hub refused {repo_id}: {str(e).splitlines()[0]} "
                            "(log in with `hf auth login` or set HF_TOKEN)") from None
    except Exception as e:
        if not _unreachable(e):
            raise
        raise OfflineError(
            f"cannot reach the Hugging Face Hub to push {repo_id} ({type(e).__name__}); the export "
            f"is in {folder}: connect (unset HF_HUB_OFFLINE) and retry with --push-to-hub"
        ) from None
    return str(url)
