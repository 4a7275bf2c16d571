"""Tokenizers with one interface: `encode(texts) -> list[list[int]]`, `pad_id`, `vocab_size`,
`save(dir)`, and `load_tokenizer(dir)` to get any of them back from a run directory.

- `WordPiece`: a checkpoint's own `tokenizer.json` (or `vocab.txt`), via the `tokenizers` library.
- `WordVocab`: lower-cased words and punctuation, built from the train split only (RNNs).
- `CharVocab`: characters, built from the train split only.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

from slimtext.errors import SlimtextError
from slimtext.rundir import atomic_write_json

PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class WordPiece:
    kind = "wordpiece"

    def __init__(self, folder: str | Path, max_length: int = 128):
        from tokenizers import Tokenizer  # noqa: PLC0415

        folder = Path(folder)
        self.folder, self.max_length = folder, max_length
        if (folder / "tokenizer.json").exists():
            self.tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        elif (folder / "vocab.txt").exists():
            from tokenizers.implementations import BertWordPieceTokenizer  # noqa: PLC0415

            lower = json.loads((folder / "tokenizer_config.json").read_text()).get("do_lower_case", True) \
                if (folder / "tokenizer_config.json").exists() else True
            self.tok = BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=lower)._tokenizer
        else:
            raise SlimtextError(f"{folder}: no tokenizer.json or vocab.txt")
        self.tok.no_padding()
        self.tok.enable_truncation(max_length)
        pad = self.tok.token_to_id("[PAD]")
        self.pad_id = pad if pad is not None else (self.tok.token_to_id("<pad>") or 0)
        self.vocab_size = self.tok.get_vocab_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(list(texts))]

    def save(self, d: str | Path) -> None:
        d = Path(d)
        d.mkdir(parents=True, exist_ok=True)
        self.tok.save(str(d / "tokenizer.json"))
        for name in ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            if (self.folder / name).exists() and self.folder != d:
                shutil.copy(self.folder / name, d / name)
        atomic_write_json(d / "tokenizer_meta.json", {"kind": self.kind, "max_length": self.max_length})


class _Vocab:
    kind = ""

    def __init__(self, itos: list[str], max_length: int = 256, lowercase: bool = True):
        if itos[:2] != [PAD, UNK]:
            raise ValueError("vocabulary must start with <pad>, <unk>")
        self.itos, self.max_length, self.lowercase = itos, max_length, lowercase
        self.stoi = {s: i for i, s in enumerate(itos)}
        self.pad_id, self.unk_id, self.vocab_size = 0, 1, len(itos)

    def split(self, text: str) -> list[str]:
        raise NotImplementedError  # each vocabulary defines its unit (word, char)

    def encode(self, texts: list[str]) -> list[list[int]]:
        get, unk = self.stoi.get, self.unk_id
        return [[get(t, unk) for t in self.split(x)[: self.max_length]] or [unk] for x in texts]

    @classmethod
    def build(cls, texts: list[str], min_freq: int = 1, max_size: int = 50_000, max_length: int = 256, lowercase: bool = True):
        probe = cls([PAD, UNK], max_length, lowercase)
        counts = Counter(t for x in texts for t in probe.split(x))
        kept = [t for t, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_freq]
        return cls([PAD, UNK] + kept[: max_size - 2], max_length, lowercase)

    def save(self, d: str | Path) -> None:
        atomic_write_json(Path(d) / "tokenizer_meta.json", {"kind": self.kind, "max_length": self.max_length,
                                                            "lowercase": self.lowercase, "itos": self.itos})


class WordVocab(_Vocab):
    kind = "word"

    def split(self, text: str) -> list[str]:
        return _WORD.findall(text.lower() if self.lowercase else text)


class CharVocab(_Vocab):
    kind = "char"

    def split(self, text: str) -> list[str]:
        return list(text.lower() if self.lowercase else text)


def load_tokenizer(d: str | Path):
    meta = json.loads((Path(d) / "tokenizer_meta.json").read_text())
    if meta["kind"] == "wordpiece":
        return WordPiece(d, meta["max_length"])
    cls = {"word": WordVocab, "char": CharVocab}[meta["kind"]]
    return cls(meta["itos"], meta["max_length"], meta["lowercase"])
