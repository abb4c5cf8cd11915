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
    fragile_confidence: float = 0.9    # ... beyond this one-sided confidence (paired test)
    distill: float = 0.5               # weight of distillation from the pre-trained model
    temperature: float = 2.0           # of the distillation
    recovery_epochs: int = 60          # final fine-tune at the budget (early stopping)
    recovery_patience: int = 6
    recovery_lr_factor: float = 4.0    # its learning rate / learning_rate (halved on plateaus)
    search_candidates: int = 6         # layers measured when every layer is fragile
    search_levels: int = 4             # densities / widths measured per layer
    search_examples: int = 2000        # validation examples each measurement uses
    fine_tune_epochs: int = 2
    qat_epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 5e-4
    min_density: float = 0.02
    min_channels: int = 2
    factorize: bool = True
    factorize_min_fraction: float = 0.25
    reconstruct: str = "none"          # where a change refits the next layer by least squares:
                                       # "ram" (the RAM phase's narrowing), "all" (also layer
                                       # separation and the sparsity phase's narrowing), "none"
                                       # (default: measured worse at the end, docs/compression.md)
    reconstruct_examples: int = 1000   # training inputs the refit uses
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
        if not 0.0 <= opts.distill <= 1.0:
            raise ValueError(f"distill must be in [0, 1], got {opts.distill}")
        if opts.reconstruct not in ("none", "ram", "all"):
            raise ValueError(f"reconstruct must be 'none', 'ram' or 'all', "
                             f"got {opts.reconstruct!r}")
        if not 0.0 <= opts.fragile_confidence < 1.0:
            raise ValueError(f"fragile_confidence must be in [0, 1), got {opts.fragile_confidence}")
        return opts

    def key(self) -> dict:
        """The options that determine the result (saved with the state, checked on resume)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self._RUNTIME}
