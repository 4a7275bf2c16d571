"""`slimtext lm ...`: character language model and character-task commands.

    python -m slimtext.cli_lm train --data tinyshakespeare --out runs/charlm-shakespeare
    python -m slimtext.cli_lm sample runs/charlm-shakespeare --prompt "ROMEO:" --n 300
    python -m slimtext.cli_lm score runs/charlm-shakespeare some.txt
    python -m slimtext.cli_lm chartask --task next-is-vowel --window 20 --data tinyshakespeare

Every option of `train` is a field of `LMTrainConfig`; `chartask` takes the RNN and training
options of `slimtext train`
(the field help is the option help). The commands parse, call one function, and print.
"""

from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from typing import Annotated

import torch
import typer

from slimtext.config import RunConfig, dataclass_command, with_config_options
from slimtext.errors import SlimtextError
from slimtext.recipes.lm import LMTrainConfig, load_charlm, train_lm

app = typer.Typer(
    help="Character-level language models (LSTM, TBPTT) and character tasks.", no_args_is_help=True
)


@contextlib.contextmanager
def user_errors():
    """Print a SlimtextError's message without a traceback and exit with code 2."""
    try:
        yield
    except SlimtextError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


@app.command()
@dataclass_command(LMTrainConfig)
def train(cfg: LMTrainConfig):
    """Train a character LSTM language model with truncated BPTT."""
    with user_errors():
        s = train_lm(cfg)
    typer.echo(
        f"{cfg.out}: best val {s['best_val_loss']:.4f} nats/char ({s['best_val_bpc']:.4f} "
        f"bits/char, ppl {s['best_val_ppl']:.2f}) after {s['steps']} steps, "
        f"{s['train_seconds']:.0f} s ({s['stopped']})"
    )


@app.command()
def sample(
    run: Path = typer.Argument(..., help="run directory of `lm train`"),
    prompt: str = typer.Option(
        "\n", help="text to continue (characters must be in the vocabulary)"
    ),
    n: int = typer.Option(500, help="characters to generate"),
    temperature: float = typer.Option(1.0, help="softmax temperature (0 = greedy)"),
    seed: int = typer.Option(0, help="sampling seed"),
):
    """Print the prompt followed by `n` sampled characters."""
    with user_errors():
        model = load_charlm(run)
        text = model.sample(prompt, n, temperature, torch.Generator().manual_seed(seed))
    typer.echo(prompt + text)


@app.command()
def score(
    run: Path = typer.Argument(..., help="run directory of `lm train`"),
    file: Path = typer.Argument(..., help="UTF-8 text file to score", exists=True, dir_okay=False),
):
    """Print bits per character and perplexity of a text file (its first character is context)."""
    with user_errors():
        model = load_charlm(run)
        text = file.read_text(encoding="utf-8")
        total = model.sequence_log_prob(text)
        n = len(text) - 1
        if n < 1:
            raise SlimtextError(f"{file} needs at least two characters to score")
    nll = -total / n
    typer.echo(f"characters scored: {n}")
    typer.echo(f"nats per character: {nll:.4f}")
    typer.echo(f"bits per character: {nll / math.log(2):.4f}")
    typer.echo(f"perplexity: {math.exp(nll):.4f}")


@app.command()
@with_config_options("rnn", "train")
def chartask(
    cfg: RunConfig,
    task: Annotated[str, typer.Option(help="character task: next-is-vowel")] = "next-is-vowel",
    window: Annotated[int, typer.Option(help="characters of context per example")] = 20,
    data: Annotated[str, typer.Option(help="text corpus: tinyshakespeare or a .txt file")] = "tinyshakespeare",
    out: Annotated[Path | None, typer.Option(help="run directory")] = None,
    max_examples: Annotated[int | None, typer.Option(help="cap each split at this many windows")] = None,
):
    """Train a character-level RNN classifier on a task built from a corpus (held-out text for
    dev and test), through the same loop as `slimtext train`; print its test accuracy."""
    from slimtext.inference.predictor import load_predictor  # noqa: PLC0415
    from slimtext.recipes.finetune import train  # noqa: PLC0415

    cfg.data.data, cfg.data.max_examples = f"chartask:{task}:{window}:{data}", max_examples
    cfg.model.model, cfg.model.tokenizer = cfg.rnn.cell, "char"
    out = out or Path("runs") / f"chartask-{task}-w{window}"
    with user_errors():
        s = train(cfg, out=out)
        p = load_predictor(out)
    t = s["test"]
    majority = max(map(sum, s["confusion"]["test"])) / sum(map(sum, s["confusion"]["test"]))  # rows: true labels
    typer.echo(f"{out}: {task} (window {window}) test accuracy {t['accuracy']:.4f} "
               f"(majority baseline {majority:.4f}); macro-F1 {t['macro_f1']:.4f}")
    sample = "To be, or not to be, th"[-window:]
    typer.echo(f"predict({sample!r}) -> {p.predict(sample)}")


def main():
    app(args=sys.argv[1:], prog_name="slimtext lm")


if __name__ == "__main__":
    main()
