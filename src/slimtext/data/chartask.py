"""Character-classification tasks built from any text (the corpus itself comes from
`slimtext.data.registry.text_corpus`).

`next-is-vowel`: each example is the `window` characters before a position whose character is an
ASCII letter; the label is 1 ("vowel") if that next character is one of a, e, i, o, u (any case),
else 0 ("consonant"). Positions whose next character is not a letter are skipped.

Splits are contiguous and held out: the first 80% of the text gives train examples, the next 10%
dev, the last 10% test; no window crosses a split boundary. Each split is capped by sampling
examples with a fixed seed (kept in text order), so the same config always gives the same data.
Examples are `(text, label)` pairs, ready for any classifier's tokenizer and collate.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from slimtext.errors import SlimtextError, UnknownNameError

VOWELS = frozenset("aeiouAEIOU")
ASCII_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
SPLITS = ("train", "dev", "test")


def next_is_vowel(text: str, window: int) -> list[tuple[str, int]]:
    """All (previous `window` chars, 1 if the next char is a vowel else 0) where the next char
    is an ASCII letter."""
    return [
        (text[i - window : i], int(text[i] in VOWELS))
        for i in range(window, len(text))
        if text[i] in ASCII_LETTERS
    ]


TASKS: dict[str, tuple[list[str], Callable[[str, int], list[tuple[str, int]]]]] = {
    "next-is-vowel": (["consonant", "vowel"], next_is_vowel),
}


@dataclass
class CharTaskConfig:
    task: str = field(default="next-is-vowel", metadata={"help": f"task name: {', '.join(TASKS)}"})
    window: int = field(default=20, metadata={"help": "characters of context per example"})
    max_train: int = field(default=20000, metadata={"help": "cap on train examples (0 = all)"})
    max_eval: int = field(
        default=5000, metadata={"help": "cap on dev and on test examples (0 = all)"}
    )
    seed: int = field(default=0, metadata={"help": "seed for the capped sample"})


def task_labels(task: str) -> list[str]:
    if task not in TASKS:
        raise UnknownNameError("task", task, list(TASKS))
    return list(TASKS[task][0])


def make_char_task(text: str, config: CharTaskConfig) -> dict[str, list[tuple[str, int]]]:
    """{"train", "dev", "test"} -> (text, label) lists from contiguous 80/10/10 parts of `text`."""
    task_labels(config.task)  # validates the name
    if config.window < 1:
        raise SlimtextError(f"window must be >= 1 (got {config.window})")
    build = TASKS[config.task][1]
    n = len(text)
    bounds = {
        "train": (0, int(0.8 * n)),
        "dev": (int(0.8 * n), int(0.9 * n)),
        "test": (int(0.9 * n), n),
    }
    caps = {"train": config.max_train, "dev": config.max_eval, "test": config.max_eval}
    out = {}
    for offset, split in enumerate(SPLITS):
        lo, hi = bounds[split]
        examples = build(text[lo:hi], config.window)
        if caps[split] and len(examples) > caps[split]:
            keep = sorted(
                random.Random(config.seed * 1000 + offset).sample(range(len(examples)), caps[split])
            )
            examples = [examples[i] for i in keep]
        out[split] = examples
    if not out["train"]:
        raise SlimtextError(
            f"the text gives no train examples for {config.task!r} with window {config.window}"
        )
    return out
