"""What every SparseComp phase step works with and hands back: the job (budget, options, data),
the step's outcome, the signal that the budget cannot be met, and the sizes steps compare."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from freeml_keras import memory
from freeml_keras.compression import pruning
from freeml_keras.compression.budget import Budget
from freeml_keras.compression.options import Options
from freeml_keras.keras import keras

__all__ = ["Split", "Job", "Step", "Unreachable", "sizes", "weighted_rows", "channels"]

Split = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Job:
    """What a run works toward and with: the budget, the options, the training and validation
    data, and the pre-trained model's probabilities on the training data (distillation
    targets; None without distillation)."""
    budget: Budget
    options: Options
    train: Split
    val: Split
    teacher: np.ndarray | None = None

    def reconstruction_inputs(self, phase: str) -> np.ndarray | None:
        """The training inputs a change in ``phase`` ("ram", "factorize", "sparsify") refits
        the next layer on by least squares (``reconstruct_examples`` of them, a fixed random
        subset), or None when the ``reconstruct`` option leaves that phase out."""
        o = self.options
        if o.reconstruct_examples <= 0 or o.reconstruct == "none" or \
                (o.reconstruct == "ram" and phase != "ram"):
            return None
        x = self.train[0]
        if o.reconstruct_examples >= len(x):
            return x
        return x[np.sort(np.random.default_rng(0).permutation(len(x))[:o.reconstruct_examples])]

    def log(self, line: str) -> None:
        """A line of progress on stdout (with ``verbose``)."""
        if self.options.verbose:
            print(line, file=sys.stdout, flush=True)


class Unreachable(Exception):
    """Raised by a step that finds the ``kind`` ("flash" or "ram") budget unreachable, and why;
    the loop turns it into :class:`~freeml_keras.compression.budget.BudgetUnreachable`."""

    def __init__(self, kind: str, why: str):
        super().__init__(why)
        self.kind = kind
        self.why = why


@dataclass
class Step:
    """What one phase step did: the record for the report (None when it only moved to another
    phase or left a note), the model it leaves (None: the current one stays), when it started,
    and the budget failure to raise once the record is saved."""
    record: dict | None = None
    model: "keras.Model | None" = None
    started: float = field(default_factory=time.time)
    unreachable: Unreachable | None = None


def sizes(model: "keras.Model") -> tuple[int, int]:
    """Stored bytes and peak RAM bytes (arena + checkpoint state) of ``model``."""
    fp = memory.keras_footprint(model)
    return fp.weight_bytes, fp.arena_bytes + fp.checkpoint_bytes


def weighted_rows(model: "keras.Model") -> list[memory.LayerFootprint]:
    """The footprint rows of the layers a step may change (prunable, with parameters)."""
    fp = memory.keras_footprint(model)
    return [r for r in fp.layers if r.type in pruning.PRUNABLE_TYPES and r.params]


def channels(layer) -> int:
    """Output channels of a Dense or convolution layer."""
    return int(layer.units if type(layer).__name__ == "Dense" else layer.filters)
