"""The C runtime's exit decision, predicted in Python: the stop rule of
:mod:`freeml_keras.exits.stop_rule` with the inputs the runtime gives it.

``exit_decision`` (``tflm_port/src/checkpoint.c``) decides at each exit point e, in order: stop
at an exit asked for explicitly (``fm_intermittent.stop_at_exit``); the confidence rule with
the metadata's thresholds (``use_thresholds``; the confidence is the largest softmax probability
of exit e's int8 logits, ``fm_exit_confidence``); the energy rule with the platform's energy
reading and the work of the main operators from exit e to the next exit point (to the model's
output from the last), as ``fm_exit_init`` sums it from the metadata's operator records: their
costs x J per cycle when the table is complete (version 2, every operator that runs has a
nonzero cost) and a price per cycle is given, else their (dense) MACs x J per MAC. The runtime
computes in float32 (the reading, the price, the product): so does :func:`energy_to_next_exit`.

The keyword arguments are those of :func:`freeml_keras.runtime.intermittent.exit_options`, so
the same settings drive the host harness and the prediction.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from freeml_keras.exits.stop_rule import StopRule, confidence
from freeml_keras.format.metadata import FreemlMetadata
from freeml_keras.format.model import ModelLike, as_model

__all__ = ["energy_to_next_exit", "exit_confidences", "predicted_exit"]

_U32 = 0xFFFFFFFF


def _cumulative(values: Sequence[int], ends: Sequence[int]) -> tuple[list[int], int]:
    """Saturating u32 sums of ``values[:end + 1]`` for each end, and of all (fm_exit_init)."""
    to, total = [0] * len(ends), 0
    for k, v in enumerate(values):
        for e, end in enumerate(ends):
            if k <= end:
                to[e] = min(to[e] + v, _U32)
        total = min(total + v, _U32)
    return to, total


def energy_to_next_exit(md: FreemlMetadata, *, energy_per_mac_j: float = 0.0,
                        energy_per_cycle_j: float = 0.0,
                        units: Sequence[int] | None = None) -> list[float]:
    """Energy (J, float32 values) of the main operators from each exit point to the next, the
    last to the model's output, as the runtime prices it (module docstring). ``units``: the
    runtime's units per operator (:func:`freeml_keras.runtime.intermittent.plan`), which say
    which operators run (aliases have none) for the completeness of the cost table; needed
    only when ``energy_per_cycle_j`` is given.

    Example::

        from freeml_keras.format.metadata import ExitRecord, FreemlMetadata, OpCost
        md = FreemlMetadata(3, 1, [ExitRecord(1, 0, 0)],
                            [OpCost(100, 100, 0, 0, 7), OpCost(50, 50, 0, 0, 9)])
        print(energy_to_next_exit(md, energy_per_mac_j=1.0))              # [50.0]
        print(energy_to_next_exit(md, energy_per_mac_j=1.0, energy_per_cycle_j=0.5,
                                  units=[4, 4]))                          # [4.5]
    """
    ends = [e.after_op for e in md.exits]
    per_cycle = np.float32(energy_per_cycle_j)
    by_cost = md.version >= 2 and per_cycle > 0
    if by_cost:
        if units is None:
            raise ValueError("pricing by the cost table needs the runtime's units per operator "
                             "(freeml_keras.runtime.intermittent.plan(model)['ops'])")
        by_cost = all(o.cost != 0 for o, u in zip(md.ops, units) if u > 0)
    values, price = (([o.cost for o in md.ops], per_cycle) if by_cost else
                     ([o.macs for o in md.ops], np.float32(energy_per_mac_j)))
    to, total = _cumulative(values, ends)
    nxt = to[1:] + [total]
    return [float(np.float32((b - a) & _U32) * price) for a, b in zip(to, nxt)]


def exit_confidences(model: ModelLike, exit_logits: np.ndarray) -> np.ndarray:
    """Largest softmax probability of each exit's int8 logits (exits, classes), dequantized
    with the scale of the exit head's output, as ``fm_exit_confidence`` computes it (in float64
    here; the runtime's float32 exp is within 1e-5)."""
    from freeml_keras.runtime.reference import io_quantization
    model = as_model(model)
    (scale, zero), = io_quantization(model, model.metadata.head_subgraph)[1]
    z = (np.asarray(exit_logits, np.float64) - zero) * scale
    return confidence(z, "max_softmax")


def predicted_exit(model: ModelLike, exit_logits: np.ndarray, *, stop_at_exit: int | None = None,
                   thresholds: bool = False, energy_j: float | None = None,
                   energy_per_mac_j: float = 0.0, energy_per_cycle_j: float = 0.0,
                   units: Sequence[int] | None = None) -> int:
    """The exit the runtime answers at (the number of exit points for the model's own output)
    for one input whose int8 logits at each exit point are ``exit_logits`` (exits, classes:
    the runtime's head, or TFLite Micro running the head subgraph), with the settings of
    :func:`~freeml_keras.runtime.intermittent.exit_options` (``energy_j``: the platform's
    constant energy reading). ``units`` as for :func:`energy_to_next_exit` (default: the
    runtime's plan of the model).

    Example (``model``: the bytes of a model converted with an exit model, ``x``: an int8
    input)::

        from freeml_keras.format.metadata import read_metadata
        from freeml_keras.runtime.intermittent import exit_options, run_uninterrupted
        logits = [run_uninterrupted(model, x, options=exit_options(stop_at_exit=e))[0]
                  for e in range(len(read_metadata(model).exits))]
        settings = dict(thresholds=True, energy_j=1e-4, energy_per_mac_j=1e-9)
        assert predicted_exit(model, logits, **settings) == \\
            run_uninterrupted(model, x, options=exit_options(**settings))[1]["exit"]
    """
    model = as_model(model)
    md = model.metadata
    k = len(md.exits)
    rule = StopRule([e.threshold for e in md.exits] if thresholds else None,
                    energy_margin=None if energy_j is None else 1.0)
    conf = exit_confidences(model, exit_logits)[:, None] if thresholds else None
    need = None
    if energy_j is not None:
        if units is None and np.float32(energy_per_cycle_j) > 0 and md.version >= 2:
            from freeml_keras.runtime.intermittent import plan
            units = [o["units"] for o in plan(bytes(model))["ops"]]
        need = energy_to_next_exit(md, energy_per_mac_j=energy_per_mac_j,
                                   energy_per_cycle_j=energy_per_cycle_j, units=units)
    reading = None if energy_j is None else float(np.float32(energy_j))
    exit_index = int(rule.first_exit(conf, reading, need, num_exits=k)[0])
    if stop_at_exit is not None and 0 <= stop_at_exit < exit_index:
        exit_index = stop_at_exit
    return exit_index
