"""Find a dataset file: `--data-dir` / `$SLIMTEXT_DATA`, then the user cache, then an installed
package, then a download from the upstream URL (sha256-checked, written atomically into the cache).

Also the one switch for the Hugging Face Hub (`hf:` models and datasets): `download_allowed()`,
set by `--allow-download` (`allow_downloads()`) or `SLIMTEXT_ALLOW_DOWNLOAD=1`. Without it the
Hub is never contacted: `hf:` names come from the local cache or fail, naming the flag.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from slimtext.errors import OfflineError, SlimtextError

ALLOW_DOWNLOAD_ENV = "SLIMTEXT_ALLOW_DOWNLOAD"


def cache_dir() -> Path:
    return Path(os.environ.get("SLIMTEXT_CACHE") or Path.home() / ".cache" / "slimtext").expanduser()


def download_allowed() -> bool:
    """May `hf:` models and datasets be fetched from the Hub? Only with SLIMTEXT_ALLOW_DOWNLOAD=1."""
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes")


def allow_downloads() -> None:
    """What `--allow-download` does: set the switch for this process and the ones it starts
    (uvicorn workers, torchrun ranks, study jobs)."""
    os.environ[ALLOW_DOWNLOAD_ENV] = "1"


@dataclass(frozen=True)
class FileSource:
    """One upstream file: its path under the data folder, where else it may live, its checksum."""

    relpath: str  # e.g. "davidson/labeled_data.csv"
    sha256: str
    url: str | None = None
    package: str | None = None  # importable package that ships the file ...
    package_path: str | None = None  # ... at this path inside it


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: str | None, timeout: float = 60.0) -> Path:
    """Download `url` to `dest` atomically; verify sha256 before the file appears."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    for chunk in iter(lambda: resp.read(1 << 20), b""):
                        h.update(chunk)
                        out.write(chunk)
            except (urllib.error.URLError, OSError) as e:
                raise OfflineError(
                    f"could not download {url} ({e}). Put the file at {dest} or point "
                    f"SLIMTEXT_DATA / --data-dir at a folder holding it."
                ) from None
        if sha256 and h.hexdigest() != sha256:
            raise SlimtextError(f"checksum mismatch for {url}: expected {sha256}, got {h.hexdigest()}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def resolve(src: FileSource, data_dir: str | Path | None = None) -> Path:
    """Return a local path for `src`, downloading it into the cache as a last resort."""
    roots = [data_dir, os.environ.get("SLIMTEXT_DATA")]
    for root in [Path(r) for r in roots if r]:
        if (root / src.relpath).is_file():
            return root / src.relpath
    cached = cache_dir() / "data" / src.relpath
    if cached.is_file():
        return cached
    if src.package:
        spec = importlib.util.find_spec(src.package)
        if spec and spec.submodule_search_locations:
            p = Path(next(iter(spec.submodule_search_locations))) / (src.package_path or "")
            if p.is_file():
                return p
    if src.url:
        return download(src.url, cached, src.sha256)
    where = ", ".join(str(r) for r in roots if r) or "(SLIMTEXT_DATA unset)"
    raise SlimtextError(f"cannot find {src.relpath}: looked in {where} and {cached}")
