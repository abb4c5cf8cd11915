"""Where the package keeps what it makes: ``$FREEML_CACHE_DIR`` or ``~/.cache/freeml``
(pre-trained models, compressed fixtures, the C runtime built for this machine)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """``$FREEML_CACHE_DIR`` or ``~/.cache/freeml``."""
    return Path(os.environ.get("FREEML_CACHE_DIR", Path.home() / ".cache" / "freeml"))
