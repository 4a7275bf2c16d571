"""The README.md model card of a Hugging Face export (`slimtext export RUN --hf DIR`).

Everything in it is read from the run directory: config.yaml, command.txt, summary.json (every
metric of every evaluated split, with the split it was measured on), splits.json, calibration.json.
Sections follow the Hugging Face model card guide (Mitchell et al. 2019, Model Cards for Model
Reporting, arXiv:1810.03993): model, data, training, evaluation, calibration, intended use, limits.
"""

from __future__ import annotations

import json
from pathlib import Path

from slimtext.config import RunConfig
from slimtext.rundir import RunDir

# Known biases of the named datasets a card must state (a user file gets the generic warning).
DATA_LIMITS = {
    "davidson": (
        "Dialect bias: Davidson et al. (2017) labels over-flag tweets written in African-American "
        "English as offensive or hateful, and classifiers trained on them inherit it (Sap et al. "
        "2019, The Risk of Racial Bias in Hate Speech Detection, ACL; Davidson et al. 2019, Racial "
        "Bias in Hate Speech and Abusive Language Detection Datasets). Expect more false 'toxic' "
        "predictions on AAE text; do not use this model to moderate or rank people's speech "
        "without a human in the loop and a per-dialect error audit."
    ),
    "tweeteval-offensive": (
        "Dialect and identity-term bias: offensive-language tweet corpora such as OLID over-flag "
        "African-American English and tweets that mention identity terms (Sap et al. 2019, ACL); "
        "audit errors per group before any use on people's speech."
    ),
}
DATA_LIMITS["davidson-3class"] = DATA_LIMITS["davidson"]


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def metrics_table(summary: dict) -> list[str]:
    """One row per evaluated split, one column per metric slimtext recorded for it."""
    splits = summary.get("splits") or {k: summary[k] for k in ("dev", "test") if summary.get(k)}
    names = list(dict.fromkeys(k for m in splits.values() for k, v in m.items()
                               if v is None or isinstance(v, (int, float))))
    if not splits:
        return ["(summary.json holds no evaluation)"]
    rows = ["| split | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for split, m in splits.items():
        mark = " (test set)" if split == summary.get("test_split") else ""
        rows.append(f"| {split}{mark} | " + " | ".join(_fmt(m.get(n)) for n in names) + " |")
    return rows


def _data_section(cfg: RunConfig, summary: dict, run: RunDir) -> list[str]:
    from slimtext.data.registry import DATASETS  # noqa: PLC0415

    name = cfg.data.data
    spec = DATASETS.get(name)
    lines = [f"- dataset: `{name}`" + (f": {spec.description}" if spec else " (a user file)")]
    if (run.path / "splits.json").is_file():
        sizes = {k: len(v) for k, v in run.read_json("splits.json").items()}
        lines.append("- examples per split: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    lines.append(f"- split seed {cfg.data.split_seed}; test split: `{summary.get('test_split', '?')}` "
                 f"({summary.get('test_source', 'official')})")
    if cfg.data.max_examples:
        lines.append(f"- capped at {cfg.data.max_examples} examples per split (a quick experiment)")
    return lines


def _method_section(cfg: RunConfig, summary: dict, config: dict) -> list[str]:
    sl = config["slimtext"]
    layers = config.get("num_hidden_layers", config.get("n_layer"))
    lines = [f"- base model: `{cfg.model.model}`, exported as `{config['architectures'][0]}` "
             f"({layers} layers, pooling `{sl['pooling']}`)",
             f"- method: `{cfg.model.method}`" + (" (LoRA adapters merged into the weights)"
                                                 if cfg.model.method == "lora" else "")]
    if config["model_type"] == "gpt2":
        lines.append("- GPT2ForSequenceClassification's `score` layer has no bias: the classifier's bias b "
                     "is folded into the final LayerNorm's bias as pinv(W) b (exact: W pinv(W) b = b); "
                     "each text is read at its last token that is not the pad token "
                     f"(id {config['pad_token_id']}), so a text should not contain that token itself")
    if summary.get("teacher"):
        lines.append(f"- distilled from the teacher run `{summary['teacher']}` "
                     f"({summary.get('teacher_model')}); student layers {summary.get('student_layers')} "
                     f"(1-based teacher layers), KD alpha {summary.get('kd_alpha')}, "
                     f"T {summary.get('temperature')}")
    t = cfg.train
    lines.append(f"- {t.epochs} epochs, lr {t.lr}, batch {t.batch_size}, seed {t.seed}; best epoch "
                 f"{summary.get('best_epoch')} chosen on dev; max length {cfg.model.max_length} tokens")
    if summary.get("total_params"):
        lines.append(f"- parameters: {summary['total_params']:,} (trained {summary['trainable_params']:,})")
    return lines


def _calibration_section(cal: dict, labels: list[str]) -> list[str]:
    T = cal["temperature"]
    lines = [f"- temperature T = {T:.4f}" + (" folded into the classifier (weights and bias / T): the "
                                             "pipeline's softmax gives the calibrated probabilities"
                                             if T != 1.0 else " (no calibration.json: raw softmax)")]
    for when in ("test_before", "test_after"):
        if cal.get(when):
            lines.append(f"- {when.replace('_', ' ')} calibration: "
                         + ", ".join(f"{k} {_fmt(v)}" for k, v in cal[when].items()))
    if cal["threshold"] is not None:
        lines.append(f"- decision threshold: predict `{cal['positive_label']}` when its probability "
                     f">= {cal['threshold']:.4f} ({cal.get('threshold_rule', 'chosen on dev')}); the "
                     "pipeline reports probabilities, apply the threshold yourself")
    elif len(labels) == 2:
        lines.append("- decision threshold: none recorded (argmax, i.e. 0.5)")
    return lines


def model_card(run: RunDir, cfg: RunConfig, labels: list[str], config: dict, cal: dict) -> str:
    summary = run.read_summary() if run.is_finished() else {}
    command = (run.path / "command.txt").read_text().strip() if (run.path / "command.txt").is_file() else "?"
    family = config["model_type"]
    data = Path(cfg.data.data).name if Path(cfg.data.data).suffix else cfg.data.data
    limits = DATA_LIMITS.get(cfg.data.data, "The training data's own biases (who wrote it, who "
                             "labelled it, which dialects it covers) carry into the predictions; "
                             "audit errors per group before relying on it.")
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-classification",
        f"tags: [slimtext, text-classification, {family}]", "---", "",
        f"# {data}: {Path(cfg.model.model).name} ({cfg.model.method}), exported from slimtext", "",
        f"A `{config['architectures'][0]}` classifying text as one of "
        + ", ".join(f"`{lab}`" for lab in labels)
        + ". Trained with slimtext and exported with `slimtext export RUN --hf DIR`.",
        "", "## How to use", "", "```python", "from transformers import pipeline", "",
        'clf = pipeline("text-classification", model="PATH_OR_REPO", top_k=None, truncation=True)',
        'clf("your text here")  # [{"label": ..., "score": ...}, ...] for every label', "```", "",
        f"`truncation=True` cuts inputs at {config['slimtext']['max_length']} tokens as slimtext did "
        "in training and evaluation.", "",
        "## Model", "", *_method_section(cfg, summary, config), "",
        "## Data", "", *_data_section(cfg, summary, run), "",
        "## Training command", "", "```", command, "```", "",
        "## Evaluation", "",
        f"Measured by slimtext on the run's own splits; the test set is `{summary.get('test_split', '?')}` "
        f"({summary.get('test_source', 'official')}).", "", *metrics_table(summary), "",
        "## Calibration and threshold", "", *_calibration_section(cal, labels), "",
        "## Intended use", "",
        f"Research and prototyping of {data} text classification, and as a compact "
        "baseline to compare against. Not for automated decisions about people.", "",
        "## Known limits", "", f"- {limits}",
        "- In-domain only: scores were measured on held-out examples of the same source; other "
        "platforms, periods or languages will do worse.",
        "- Probabilities are calibrated only when the calibration section gives a temperature.", "",
        "## slimtext metadata", "", "```json", json.dumps(config["slimtext"], indent=2), "```", "",
    ]
    return "\n".join(lines)
