"""Inference speed: slimtext's predictors vs `transformers` on the same weights, on the CPU.

Contenders (all start from the same fine-tuned weights; LoRA is merged):
  slimtext torch        `load_predictor(run)`: our encoder, eager fp32
  slimtext torch-int8   linear layers dynamically quantized (torch.ao; head and ffn.output stay fp32)
  slimtext onnx         ONNX Runtime on `export(run, onnx=True)`
  slimtext onnx-int8    ONNX Runtime on the dynamically quantized graph (int8 weights)
  hf pipeline           transformers.pipeline("text-classification") on an HF folder holding
                        our weights (BertForSequenceClassification, attn_implementation="sdpa")
  hf eager              the same HF model and tokenizer called directly (padding=True), fp32

Single-sentence latency: one text per call (tokenization included), p50 and p99 over
`--single` calls per round. Batch throughput: `--batches` calls of 64 texts each (the same
texts for everyone), examples/s. Rounds interleave the contenders (A, B, C, ..., A, B, C, ...).
With `--run`, every slimtext path is also evaluated on the run's test split (macro-F1 and
accuracy, and the change against eager fp32). Without `--run` the model is `minilm-l6` with a
random head (a development stand-in: speed only).

    python bench/infer_speed.py --threads 1 --single 50 --batches 3 --rounds 1   # smoke run
    python bench/infer_speed.py --run runs/davidson-minilm --json infer.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import machine, print_table, set_threads, write_json  # noqa: E402

from slimtext.config import RunConfig  # noqa: E402
from slimtext.data.registry import load_dataset  # noqa: E402
from slimtext.inference.export import export, inference_copy  # noqa: E402
from slimtext.inference.predictor import load_model, load_predictor  # noqa: E402
from slimtext.models import hf_keys, hub  # noqa: E402
from slimtext.rundir import RunDir, atomic_save_safetensors  # noqa: E402
from slimtext.train.metrics import classification_metrics  # noqa: E402


def dev_run(folder: Path) -> Path:
    """A stand-in run: minilm-l6 with a seeded random head (method head, weights = the head)."""
    from slimtext.models.factory import build_classifier, build_tokenizer

    cfg = RunConfig.from_dict({"model": {"model": "minilm-l6", "method": "head"}})
    labels = ["not toxic", "toxic"]
    tokenizer = build_tokenizer(cfg)
    torch.manual_seed(0)
    model = build_classifier(cfg, len(labels), tokenizer)
    run = RunDir(folder)
    run.create(cfg.to_dict(), argv=["bench/infer_speed.py"])
    tokenizer.save(folder / "tokenizer")
    run.write_json("labels.json", labels)
    atomic_save_safetensors(run.weights_path, {k: v for k, v in model.state_dict().items()
                                               if k.startswith("classifier.")})
    return folder


def hf_folder(run: Path, out: Path) -> Path:
    """Our fine-tuned weights as a Hugging Face BertForSequenceClassification folder."""
    import shutil

    model, _, cfg, labels = load_model(run)
    model = inference_copy(model)
    enc = model.encoder.config
    if enc.family != "bert" or model.pooling != "pooler":
        raise SystemExit("the HF comparison needs a BERT checkpoint with pooling 'pooler' "
                         f"(got {enc.family}, {model.pooling})")
    base = hub.resolve(cfg.model.model)
    ours = model.state_dict()
    state = {k: ours[k] for k in ("classifier.weight", "classifier.bias")}
    for hf, name in hf_keys.key_map("bert", enc.num_layers, pooler=True).items():
        state["bert." + hf] = ours["encoder." + name]
    out.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(out / "model.safetensors", state)
    config = json.loads((base / "config.json").read_text())
    config.update(architectures=["BertForSequenceClassification"],
                  id2label=dict(enumerate(labels)), label2id={k: i for i, k in enumerate(labels)})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (base / f).exists():
            shutil.copy(base / f, out / f)
    return out


class HFEager:
    """The HF model and tokenizer called directly: tokenizer(padding=True) -> model -> softmax."""

    def __init__(self, folder: Path, max_length: int):
        import transformers

        self.tok = transformers.AutoTokenizer.from_pretrained(folder)
        self.model = transformers.AutoModelForSequenceClassification.from_pretrained(
            folder, attn_implementation="sdpa").eval()
        self.max_length = max_length

    @torch.inference_mode()
    def predict_proba(self, texts: list[str]) -> np.ndarray:
        enc = self.tok(texts, padding=True, truncation=True, max_length=self.max_length,
                       return_tensors="pt")
        return self.model(**enc).logits.softmax(-1).numpy()


class HFPipeline:
    def __init__(self, folder: Path, max_length: int):
        import transformers

        self.pipe = transformers.pipeline("text-classification", model=str(folder), device=-1,
                                          model_kwargs={"attn_implementation": "sdpa"},
                                          truncation=True, max_length=max_length)

    def predict_proba(self, texts: list[str]) -> list:
        return self.pipe(texts if len(texts) > 1 else texts[0], batch_size=len(texts), top_k=None)


def time_single(p, texts: list[str]) -> list[float]:
    out = []
    for t in texts:
        t0 = time.perf_counter()
        p.predict_proba([t])
        out.append((time.perf_counter() - t0) * 1000)
    return out


def time_batches(p, batches: list[list[str]]) -> tuple[int, float]:
    t0 = time.perf_counter()
    for b in batches:
        p.predict_proba(b)
    return sum(len(b) for b in batches), time.perf_counter() - t0


def test_split(run: Path) -> tuple[list[str], np.ndarray]:
    r = RunDir(run)
    cfg = RunConfig.from_dict(r.read_config())
    data = load_dataset(cfg.data)
    name = "test" if "test" in data.splits else "dev"
    examples = data.splits[name]
    saved = r.read_json("splits.json").get(name) if (run / "splits.json").exists() else None
    if saved is not None and saved != [e.id for e in examples]:
        print(f"warning: the {name} split differs from the run's splits.json", file=sys.stderr)
    return [e.text for e in examples], np.array([e.label for e in examples])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a finished run directory (default: minilm-l6, random head)")
    ap.add_argument("--single", type=int, default=200, help="single-text calls per round")
    ap.add_argument("--batches", type=int, default=10, help="batch calls per round")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch and ONNX Runtime threads (0: physical cores)")
    ap.add_argument("--no-hf", action="store_true", help="slimtext contenders only")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = Path(args.run) if args.run else dev_run(tmp / "run")
        print("exporting ONNX ...", file=sys.stderr)
        exported = export(run, onnx=True, int8=True, out=tmp / "exported")
        from slimtext.inference.onnx import OnnxPredictor

        contenders = {
            "slimtext torch": load_predictor(run),
            "slimtext torch-int8": load_predictor(run, backend="torch-int8"),
            "slimtext onnx": OnnxPredictor(exported, threads=threads),
            "slimtext onnx-int8": OnnxPredictor(exported, int8=True, threads=threads),
        }
        if not args.no_hf:
            folder = hf_folder(run, tmp / "hf")
            contenders["hf pipeline"] = HFPipeline(folder, args.max_length)
            contenders["hf eager"] = HFEager(folder, args.max_length)
        if "hf eager" in contenders:  # the same model on both sides
            probe = ["you are an idiot", "have a lovely day", "what a game last night"]
            diff = np.abs(contenders["hf eager"].predict_proba(probe)
                          - contenders["slimtext torch"].predict_proba(probe)).max()
            print(f"max |p_hf - p_slimtext| on 3 probes: {diff:.2e}", file=sys.stderr)
        labelled = test_split(run) if args.run else None
        pool = labelled[0] if labelled else load_dataset(
            RunConfig.from_dict({}).data).texts("test")
        rng = random.Random(0)
        singles = rng.sample(pool, min(args.single, len(pool)))
        batches = [rng.sample(pool, args.batch_size) for _ in range(args.batches)]
        lat = {n: [] for n in contenders}
        thr = {n: [0, 0.0] for n in contenders}
        for p in contenders.values():  # warm-up (allocations, ORT arenas, lazy init)
            p.predict_proba(singles[:5])
            p.predict_proba(batches[0])
        for r in range(args.rounds):
            for n, p in contenders.items():
                lat[n] += time_single(p, singles)
                k, s = time_batches(p, batches)
                thr[n][0] += k
                thr[n][1] += s
            print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr)
        rows = []
        for n in contenders:
            rows.append({"contender": n, "p50_ms": float(np.percentile(lat[n], 50)),
                         "p99_ms": float(np.percentile(lat[n], 99)),
                         "batch_examples_per_s": thr[n][0] / thr[n][1]})
        ref = {r["contender"]: r for r in rows}
        for r in rows:
            if "hf pipeline" in ref:
                r["p50_vs_pipeline"] = r["p50_ms"] / ref["hf pipeline"]["p50_ms"]
            if "hf eager" in ref:
                r["throughput_vs_hf_eager"] = (r["batch_examples_per_s"]
                                               / ref["hf eager"]["batch_examples_per_s"])
        if labelled:
            texts, y = labelled
            fp32 = None
            for r in rows:
                if not r["contender"].startswith("slimtext"):
                    continue
                m = classification_metrics(contenders[r["contender"]].predict_proba(texts), y,
                                           len(contenders[r["contender"]].labels))
                r["test_macro_f1"], r["test_accuracy"] = 100 * m["macro_f1"], 100 * m["accuracy"]
                fp32 = fp32 if fp32 is not None else r["test_macro_f1"]
                r["macro_f1_change"] = r["test_macro_f1"] - fp32
    print(f"\n{'run ' + str(args.run) if args.run else 'minilm-l6 + random head (no --run)'}, "
          f"threads {threads}; single: p50/p99 of one-text calls; "
          f"batch: {args.batch_size} texts/call")
    print_table(rows, [("contender", "contender", ""), ("p50_ms", "p50 ms", ".2f"),
                       ("p99_ms", "p99 ms", ".2f"), ("p50_vs_pipeline", "p50/pipeline", ".2f"),
                       ("batch_examples_per_s", "batch ex/s", ".1f"),
                       ("throughput_vs_hf_eager", "vs HF eager", ".2f"),
                       ("test_macro_f1", "test F1", ".2f"), ("macro_f1_change", "dF1", "+.2f")])
    result = {"run": args.run, "args": vars(args), "machine": machine(), "rows": rows}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
