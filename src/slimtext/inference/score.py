"""Score a file of texts: every input row comes back, in order, with `label`, `probability`,
`needs_review` and `error` added.

Formats: CSV and TSV with a header row (quoted fields may hold newlines; a UTF-8 byte-order mark
is skipped) and JSON Lines (one object per line), chosen by the file extension or `fmt`. Rows
are read, predicted (one `predict_proba` call per chunk of `chunk_rows`) and written chunk by
chunk, so a file of any size streams through bounded memory. A row without usable text (empty,
too long, a wrong number of fields, a line that is not a JSON object) keeps its place and gets an
`error` value instead of a prediction. An input column that already has one of the added names
is kept as `input_<name>`. `label` / `probability` / `needs_review` follow
`slimtext.inference.review` (the run's threshold and a review band around it).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TextIO

from slimtext.errors import DataFormatError, SlimtextError
from slimtext.inference.base import is_blank
from slimtext.inference.review import ReviewPolicy

OUT_COLUMNS = ("label", "probability", "needs_review", "error")
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
DELIMITERS = {"csv": ",", "tsv": "\t"}
csv.field_size_limit(10_000_000)


class ScoreLimitError(SlimtextError):
    """More rows than the configured limit (uploads)."""


@dataclass
class ScoreConfig:
    text_col: str = field(default="text", metadata={"help": "column (CSV/TSV header) or field (JSONL) holding the text"})
    chunk_rows: int = field(default=256, metadata={"help": "rows read, predicted and written per step"})
    max_chars: int | None = field(default=None, metadata={"help": "longer texts get an error value instead of a prediction"})
    max_rows: int | None = field(default=None, metadata={"help": "refuse inputs with more rows (uploads)"})


@dataclass
class Record:
    fields: dict  # the input row, column -> value, in input order
    text: str | None  # None when the row has no usable text
    error: str = ""


@dataclass
class ScoreStats:
    rows: int = 0
    scored: int = 0
    errors: int = 0
    seconds: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def format_of(name: str | Path, fmt: str | None = None) -> str:
    """csv, tsv or jsonl: `fmt` if given, else from the file name's extension."""
    if fmt:
        if fmt not in DELIMITERS and fmt != "jsonl":
            raise SlimtextError(f"unknown format {fmt!r}; use csv, tsv or jsonl")
        return fmt
    suffix = Path(str(name)).suffix.lower()
    if suffix not in FORMATS:
        raise SlimtextError(f"{name}: cannot tell the format from {suffix or 'no extension'!r}; "
                            "use a .csv, .tsv or .jsonl file (or --format)")
    return FORMATS[suffix]


def read_records(src: TextIO, fmt: str, cfg: ScoreConfig, where: str = "input") -> tuple[list[str] | None, Iterator[Record]]:
    """The header (None for JSONL) and a lazy iterator over the rows of `src`."""
    if fmt == "jsonl":
        return None, _jsonl_records(src, cfg, where)
    reader = csv.reader(src, delimiter=DELIMITERS[fmt])
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise DataFormatError(where, reader.line_num, f"malformed {fmt.upper()}: {e}") from None
    if not header:
        raise DataFormatError(where, 1, f"empty file: expected a header row with a {cfg.text_col!r} column")
    header[0] = header[0].removeprefix("\ufeff")
    if cfg.text_col not in header:
        raise DataFormatError(where, 1, f"no column {cfg.text_col!r}; columns are {header}")
    return header, _csv_records(reader, header, cfg, where, fmt)


def _csv_records(reader, header: list[str], cfg: ScoreConfig, where: str, fmt: str) -> Iterator[Record]:
    col = header.index(cfg.text_col)
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataFormatError(where, reader.line_num, f"malformed {fmt.upper()}: {e}") from None
        if not values:  # a blank line between rows is no row at all
            continue
        error = "" if len(values) == len(header) else f"expected {len(header)} fields, got {len(values)}"
        values = (values + [""] * len(header))[: len(header)]
        yield _check(Record(dict(zip(header, values)), values[col], error), cfg)


def _jsonl_records(src: TextIO, cfg: ScoreConfig, where: str) -> Iterator[Record]:
    for line_no, line in enumerate(src, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield Record({"line": line_no}, None, f"line {line_no}: invalid JSON: {e.msg}")
            continue
        if not isinstance(obj, dict):
            yield Record({"line": line_no}, None, f"line {line_no}: expected a JSON object")
            continue
        text = obj.get(cfg.text_col)
        if not isinstance(text, str):
            missing = "no field" if text is None else "not a string in field"
            yield Record(obj, None, f"{missing} {cfg.text_col!r}")
            continue
        yield _check(Record(obj, text), cfg)


def _check(r: Record, cfg: ScoreConfig) -> Record:
    if r.error:
        r.text = None
    elif is_blank(r.text):
        r.text, r.error = None, "empty text"
    elif cfg.max_chars is not None and len(r.text) > cfg.max_chars:
        r.error = f"text has {len(r.text)} characters; the limit is {cfg.max_chars}"
        r.text = None
    return r


def score_stream(predictor, src: TextIO, dst: TextIO, fmt: str, policy: ReviewPolicy,
                 cfg: ScoreConfig | None = None, out_fmt: str | None = None, progress=None,
                 where: str = "input") -> ScoreStats:
    """Read rows from `src`, write them with the added columns to `dst`. `progress`: a tqdm-like
    object updated with the rows of each chunk."""
    cfg = cfg or ScoreConfig()
    out_fmt = out_fmt or fmt
    if fmt == "jsonl" and out_fmt != "jsonl":
        raise SlimtextError("a JSON Lines input can only be written as JSON Lines (its rows may differ in fields)")
    header, records = read_records(src, fmt, cfg, where)
    return score_records(predictor, header, records, dst, out_fmt, policy, cfg, progress)


def score_records(predictor, header: list[str] | None, records: Iterator[Record], dst: TextIO, out_fmt: str,
                  policy: ReviewPolicy, cfg: ScoreConfig, progress=None) -> ScoreStats:
    """The rows of `read_records`, predicted chunk by chunk and written to `dst` in `out_fmt`."""
    rename = {c: f"input_{c}" if c in OUT_COLUMNS else c for c in header or []}
    writer = None
    if out_fmt != "jsonl":
        writer = csv.writer(dst, delimiter=DELIMITERS[out_fmt], lineterminator="\n")
        writer.writerow([rename[c] for c in header] + list(OUT_COLUMNS))
    stats, start = ScoreStats(), time.perf_counter()
    while chunk := list(islice(records, cfg.chunk_rows)):
        if cfg.max_rows is not None and stats.rows + len(chunk) > cfg.max_rows:
            raise ScoreLimitError(f"the file has more than {cfg.max_rows} rows; split it or use `slimtext score`")
        for r, out in zip(chunk, _predict(predictor, chunk, policy)):
            row = {(f"input_{k}" if k in OUT_COLUMNS else k): v for k, v in r.fields.items()} | out
            if writer is None:
                dst.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                writer.writerow([_cell(v) for v in row.values()])
        stats.rows += len(chunk)
        stats.errors += sum(1 for r in chunk if r.error)
        if progress is not None:
            progress.update(len(chunk))
    stats.scored, stats.seconds = stats.rows - stats.errors, time.perf_counter() - start
    return stats


def _predict(predictor, chunk: list[Record], policy: ReviewPolicy) -> list[dict]:
    ok = [r for r in chunk if r.text is not None]
    verdicts = policy.decide(predictor.predict_proba([r.text for r in ok])) if ok else None
    rows, i = [], 0
    for r in chunk:
        if r.text is None:
            rows.append({"label": None, "probability": None, "needs_review": None, "error": r.error or "no text"})
            continue
        rows.append({"label": verdicts.labels[i], "probability": round(float(verdicts.probability[i]), 6),
                     "needs_review": bool(verdicts.needs_review[i]), "error": None})
        i += 1
    return rows


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def score_file(predictor, src: str | Path, out: str | Path, policy: ReviewPolicy,
               cfg: ScoreConfig | None = None, fmt: str | None = None, quiet: bool = False) -> ScoreStats:
    """`score_stream` from file `src` to file `out` (written to a temp name, renamed when done),
    with a tqdm progress bar in rows/s unless `quiet`."""
    from tqdm.auto import tqdm  # noqa: PLC0415

    src, out = Path(src), Path(out)
    in_fmt = format_of(src, fmt)
    out_fmt = format_of(out) if Path(out).suffix.lower() in FORMATS else in_fmt
    if not src.is_file():
        raise SlimtextError(f"{src} does not exist")
    if src.resolve() == out.resolve():
        raise SlimtextError(f"--out {out} is the input file; choose another name")
    if in_fmt == "jsonl" and out_fmt != "jsonl":
        raise SlimtextError("a JSON Lines input can only be written as JSON Lines (its rows may differ in fields)")
    cfg = cfg or ScoreConfig()
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with open(src, newline="", encoding="utf-8-sig") as f:
            header, records = read_records(f, in_fmt, cfg, where=str(src))  # a bad header fails here
            with open(tmp, "w", newline="", encoding="utf-8") as g, \
                    tqdm(unit="row", desc=src.name, disable=quiet, dynamic_ncols=True) as bar:
                stats = score_records(predictor, header, records, g, out_fmt, policy, cfg, bar)
        tmp.replace(out)
    except UnicodeDecodeError as e:
        raise SlimtextError(f"{src} is not UTF-8 text (byte {e.start} of a chunk): save it as UTF-8") from None
    finally:
        tmp.unlink(missing_ok=True)
    return stats
