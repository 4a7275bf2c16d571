"""Progress bars: `tqdm.auto` (a widget in notebooks, text in a terminal), silenced by `quiet`
or by the environment variable SLIMTEXT_QUIET=1 (any value but '' and '0')."""

from __future__ import annotations

import os

from tqdm.auto import tqdm


def is_quiet(quiet: bool = False) -> bool:
    """`quiet`, or SLIMTEXT_QUIET set (to anything but '' or '0')."""
    return quiet or os.environ.get("SLIMTEXT_QUIET", "") not in ("", "0")


def bar(iterable=None, quiet: bool = False, disable: bool = False, **kw) -> tqdm:
    """`tqdm.auto.tqdm(iterable, **kw)`, disabled by `disable` or when `is_quiet(quiet)`."""
    return tqdm(iterable, disable=disable or is_quiet(quiet), **kw)
