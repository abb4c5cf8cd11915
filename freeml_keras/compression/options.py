"""SparseComp's options: the keyword arguments ``compress`` accepts, checked, and the part of
them that decides the result (saved with the state, compared on resume)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

__all__ = ["Options"]


@dataclass
class Options:
    """What ``compress`` accepts as keyword options (see :mod:`freeml_keras.compression.sparsecomp`)."""
    density_step: float = 0.7          # multiplicative: new density = density * step
    fragile_drop: float = 0.01         # validation accuracy (fraction) a step may lose
    fine_tune_epochs: int = 2
    qat_epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 5e-4
    min_density: float = 0.02
    min_channels: int = 2
    factorize: bool = True
    factorize_min_fraction: float = 0.25
    narrow_gain_ratio: float = 2.0     # narrow when it saves this many times what sparsity saves
    max_density_jumps: int = 3         # density steps tried at once for a step that saves bytes
    max_steps: int = 400
    max_qat_rounds: int = 3
    seed: int = 0
    # Not part of the saved state (they do not change the result):
    stop_after: int | None = None      # stop this call after that many steps (state is saved)
    verbose: bool = True
    strategy: Any = None               # tf.distribute strategy for fine-tuning
    progress: Callable[[dict], None] | None = None

    _RUNTIME = ("stop_after", "verbose", "strategy", "progress")

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> "Options":
        """Options from ``compress``'s keyword arguments; unknown names and a ``density_step``
        outside (0, 1) raise ``ValueError``."""
        known = [f for f in cls.__dataclass_fields__ if not f.startswith("_")]
        unknown = set(options) - set(known)
        if unknown:
            raise ValueError(f"unknown compress option(s): {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(known)}")
        opts = cls(**options)
        if not 0.0 < opts.density_step < 1.0:
            raise ValueError(f"density_step must be in (0, 1), got {opts.density_step}")
        return opts

    def key(self) -> dict:
        """The options that determine the result (saved with the state, checked on resume)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self._RUNTIME}
