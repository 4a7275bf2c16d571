"""Errors a user can cause. The CLI prints their message (no traceback) and exits with code 2."""

from __future__ import annotations

import difflib


class SlimtextError(Exception):
    """Base class: the message alone must tell the user what went wrong and what to do."""


class UnknownNameError(SlimtextError, KeyError):
    def __init__(self, kind: str, name: str, valid: list[str]):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        close = difflib.get_close_matches(name, self.valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(self.valid)}.{hint}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class DataFormatError(SlimtextError):
    """A malformed row: names the file, the line (1-based) and, when known, the column."""

    def __init__(self, path, line: int, problem: str, column: int | str | None = None):
        where = f"{path}:{line}" + (f":{column}" if column is not None else "")
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.column, self.problem = path, line, column, problem


class OfflineError(SlimtextError):
    """A download was needed but the network is not reachable."""
