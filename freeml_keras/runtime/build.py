"""The C runtime's sources, shipped inside the package, and its host builds.

The sources (``freeml_keras/tflm_port``: runtime, host tools, target start-up code) are package
data, so an installed package builds what it needs on first use: with ``make`` into
``<cache_dir>/build/<name>-<key>``, where the key hashes every source file, the make target
and the compiler flags. A changed source or flag builds into a new directory; an unchanged one
is reused by every process (a file lock makes parallel test workers build once). Nothing is
written inside the package, which may be read-only once installed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Mapping

from freeml_keras.cache import cache_dir

__all__ = ["SOURCE_DIR", "TARGETS_DIR", "source_key", "build_dir", "make_host", "library_path",
           "build_library"]

SOURCE_DIR = Path(__file__).resolve().parents[1] / "tflm_port"
TARGETS_DIR = SOURCE_DIR / "targets"
_SKIP = {"build", "__pycache__"}


def _source_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not _SKIP.intersection(p.relative_to(root).parts))


def source_key(root: Path = SOURCE_DIR, extra: str = "") -> str:
    """A short hash of every file under ``root`` (names and contents) and ``extra``."""
    h = hashlib.sha256(extra.encode())
    for p in _source_files(root):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def build_dir(name: str, key: str) -> Path:
    """The cache directory of one build."""
    return cache_dir() / "build" / f"{name}-{key}"


def make_host(goal: str, artifact: str, variables: Mapping[str, str] | None = None) -> Path:
    """Run ``make goal`` of the host Makefile with ``BUILD`` in the cache and return
    ``BUILD/artifact``, building only when that file is missing (the directory is keyed by the
    sources, the goal, the variables and ``$CC``)."""
    variables = dict(variables or {})
    key = source_key(extra=repr((goal, sorted(variables.items()), os.environ.get("CC", ""))))
    out = build_dir(f"host-{goal}", key)
    path = out / artifact
    if path.exists():
        return path
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            args = ["make", "-s", "-C", str(SOURCE_DIR), f"BUILD={out}", goal] + \
                [f"{k}={v}" for k, v in variables.items()]
            r = subprocess.run(args, capture_output=True, text=True)
            if r.returncode != 0:
                raise OSError(f"building {path} failed ({' '.join(args)}):\n{r.stdout}{r.stderr}")
    return path


def library_path() -> Path:
    """The host shared library of the runtime, built on first use."""
    return make_host("lib", "libfreeml.so")


def build_library(force: bool = False) -> Path:
    """Build (when missing) and return ``libfreeml.so``; ``force`` rebuilds it."""
    if force:
        p = library_path()
        p.unlink(missing_ok=True)
    return library_path()
