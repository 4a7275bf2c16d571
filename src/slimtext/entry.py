"""The `slimtext` executable's first step. `slimtext`, `slimtext --help` and `slimtext --version`
are answered from the table below without importing torch (under a second, where the full
Typer app takes 3-5 s to import); every other command line goes to `slimtext.cli`.

`tests/test_cli_entry.py` checks that COMMANDS names exactly the commands `slimtext.cli`
registers, with the first line of each command's help, so this table cannot drift.
"""

from __future__ import annotations

import sys

from slimtext import __version__

SUMMARY = "Train, shrink and compare compact text classifiers, and serve the result."
COMMANDS = {  # name -> first line of its help, in the order `slimtext.cli` registers them
    "train": "Train one classifier and print its test metrics.",
    "distill": "Distil a fine-tuned teacher run into a smaller student.",
    "evaluate": "Evaluate a finished run (or a folder `export --out` wrote) on its own test split or on another dataset.",
    "calibrate": "Fit a finished run's temperature and decision threshold on its dev split.",
    "predict": "Classify texts with a finished run.",
    "score": "Score every row of a file: label, probability, needs_review and error columns.",
    "explain": "Score each word of a text: how much it pushed towards each label (docs/web.md).",
    "export": "Export a run for serving: merged LoRA weights, ONNX, int8 ONNX, a Hugging Face folder.",
    "study": "Run the whole comparison of teacher, students and baselines, then write a report.",
    "sweep": "Sweep hyper-parameters: a resumable grid or an Optuna search.",
    "report": "Write report.md and a self-contained report.html from run directories only.",
    "serve": "Serve a model: the moderator's page and a JSON API (docs/web.md).",
    "data": "Datasets: list them, show one.",
    "models": "Models: list them, fetch one into the cache.",
    "lm": "Character-level language models and char classifiers.",
}


def help_text() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items())
    return (f"Usage: slimtext [OPTIONS] COMMAND [ARGS]...\n\n  {SUMMARY}\n\n"
            f"Options:\n  --version  Show the version and exit.\n  --help     Show this message and exit.\n\n"
            f"Commands:\n{rows}\n\n`slimtext COMMAND --help` explains a command's options.\n")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args in ([], ["--help"], ["-h"]):
        sys.stdout.write(help_text())
        return
    if args == ["--version"]:
        sys.stdout.write(f"slimtext {__version__}\n")
        return
    from slimtext.cli import main as cli_main  # noqa: PLC0415  (imports torch: seconds)

    cli_main()
