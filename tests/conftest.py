"""Shared fixtures: the real datasets beside the checkout, an isolated cache, the write-point
hook of fault_hooks.py, tiny CSV data and a tiny BERT."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SLIMTEXT_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the real datasets at {SHARED_DATA}")
        pytest.skip(f"real datasets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own cache, so saved splits or logits never leak between tests; the
    extracted mpnet checkpoint is shared through SLIMTEXT_MODEL_CACHE when set."""
    monkeypatch.setenv("SLIMTEXT_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("SLIMTEXT_DATA", str(SHARED_DATA))
    # training processes started by a test can be killed at a named write point (fault_hooks.py)
    monkeypatch.setenv("SLIMTEXT_TEST_HOOK", f"{Path(__file__).parent / 'fault_hooks.py'}:kill")


def write_tiny_csv(path: Path, n: int = 300, seed: int = 0) -> Path:
    """A separable two-class toy corpus: 'good ...' vs 'bad ...' sentences with noise words."""
    rng = random.Random(seed)
    noise = "the a movie film plot actor scene really quite very".split()
    lines = ["text,label"]
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        cue = rng.choice(["good", "great", "fine"] if label == "pos" else ["bad", "awful", "poor"])
        words = [rng.choice(noise) for _ in range(rng.randint(3, 8))]
        words.insert(rng.randint(0, len(words)), cue)
        lines.append(f"{' '.join(words)},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def tiny_csv(tmp_path) -> Path:
    return write_tiny_csv(tmp_path / "tiny.csv")


TINY_WORDS = "the a movie film plot actor scene really quite very good great fine bad awful poor".split()


def write_tiny_bert(folder: Path, layers: int = 2, hidden: int = 32, seed: int = 0,
                    distinct: bool = False) -> Path:
    """The tests' one tiny checkpoint: a random BERT in Hugging Face format (4 heads, positions
    64) with a word-level vocab.txt covering the tiny CSV. `distinct` jitters every tensor (HF
    initialises LayerNorms to 1/0 and biases to 0), so that its layers can be told apart."""
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + TINY_WORDS
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=2 * hidden, max_position_embeddings=64)
    model = BertModel(cfg)
    if distinct:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
    model.save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return folder


@pytest.fixture
def tiny_bert(tmp_path) -> Path:
    return write_tiny_bert(tmp_path / "tiny-bert")


@pytest.fixture
def one_thread():
    """One torch thread for the test (timings and kernels as on a busy machine), then restored."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

