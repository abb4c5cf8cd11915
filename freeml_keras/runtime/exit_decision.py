"""The C runtime's exit decision, predicted in Python: the stop rule of
:mod:`freeml_keras.exits.stop_rule` with the inputs the runtime gives it.

``exit_decision`` (``tflm_port/src/checkpoint.c``) decides at each exit point e, in order: stop
at an exit asked for explicitly (``fm_intermittent.stop_at_exit``); the confidence rule with
the metadata's thresholds (``use_thresholds``; the confidence is the largest softmax probability
of exit e's int8 logits in the runtime's fixed point, ``fm_exit_confident``:
:func:`~freeml_keras.exits.stop_rule.runtime_confidence`); the energy rule with the platform's
energy reading and the work of the main operators from exit e to the next exit point (to the
model's output from the last), as ``fm_exit_init`` sums it from the metadata's operator
records: their costs x the price per cycle when the table is complete (version 2, every
operator that runs has a nonzero cost) and a price per cycle is given, else their (dense) MACs x
the price per MAC. The runtime has no floating point: the reading and the prices are integers of
the harness's energy unit
(:data:`~freeml_keras.runtime.intermittent.ENERGY_UNIT_J`, 1 pJ;
:func:`~freeml_keras.runtime.intermittent.energy_units` converts joules as ``exit_options``
does), and so are the energies of :func:`energy_to_next_exit`.

The keyword arguments are those of :func:`freeml_keras.runtime.intermittent.exit_options`, so
the same settings drive the host harness and the prediction.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from freeml_keras.exits.stop_rule import StopRule, runtime_confidence
from freeml_keras.format.metadata import FreemlMetadata
from freeml_keras.format.model import ModelLike, as_model
from freeml_keras.runtime.intermittent import ENERGY_UNIT_J, energy_units, plan

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
                        units: Sequence[int] | None = None) -> list[int]:
    """Energy (integer energy units, ``ENERGY_UNIT_J``; the prices are converted with
    ``energy_units`` first) of the main operators from each exit point to the next, the
    last to the model's output, as the runtime prices it (module docstring). ``units``: the
    runtime's units per operator (:func:`freeml_keras.runtime.intermittent.plan`), which say
    which operators run (aliases have none) for the completeness of the cost table; needed
    only when ``energy_per_cycle_j`` is given.

    Example::

        from freeml_keras.format.metadata import ExitRecord, FreemlMetadata, OpCost
        md = FreemlMetadata(3, 1, [ExitRecord(1, 0, 0)],
                            [OpCost(100, 100, 0, 0, 7), OpCost(50, 50, 0, 0, 9)])
        print(energy_to_next_exit(md, energy_per_mac_j=1e-9))             # [50000]
        print(energy_to_next_exit(md, energy_per_mac_j=1e-9, energy_per_cycle_j=5e-10,
                                  units=[4, 4]))                          # [4500]
    """
    ends = [e.after_op for e in md.exits]
    per_cycle = energy_units(energy_per_cycle_j)
    by_cost = md.version >= 2 and per_cycle > 0
    if by_cost:
        if units is None:
            raise ValueError("pricing by the cost table needs the runtime's units per operator "
                             "(freeml_keras.runtime.intermittent.plan(model)['ops'])")
        by_cost = all(o.cost != 0 for o, u in zip(md.ops, units) if u > 0)
    values, price = (([o.cost for o in md.ops], per_cycle) if by_cost else
                     ([o.macs for o in md.ops], energy_units(energy_per_mac_j)))
    to, total = _cumulative(values, ends)
    nxt = to[1:] + [total]
    return [((b - a) & _U32) * price for a, b in zip(to, nxt)]


def exit_confidences(model: ModelLike, exit_logits: np.ndarray) -> np.ndarray:
    """Largest softmax probability of each exit's int8 logits (exits, classes) with the scale
    of the exit head's output, in the runtime's fixed point (``fm_exit_exp_sum``; within about
    1e-6 of the float value): compared with the metadata's float32 thresholds it decides as
    the runtime does."""
    from freeml_keras.runtime.reference import io_quantization
    model = as_model(model)
    (scale, _), = io_quantization(model, model.metadata.head_subgraph)[1]
    return runtime_confidence(np.asarray(exit_logits), scale)


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
        if units is None and energy_units(energy_per_cycle_j) > 0 and md.version >= 2:
            units = [o["units"] for o in plan(bytes(model))["ops"]]
        need = energy_to_next_exit(md, energy_per_mac_j=energy_per_mac_j,
                                   energy_per_cycle_j=energy_per_cycle_j, units=units)
    reading = None if energy_j is None else energy_units(energy_j)
    exit_index = int(rule.first_exit(conf, reading, need, num_exits=k)[0])
    if stop_at_exit is not None and 0 <= stop_at_exit < exit_index:
        exit_index = stop_at_exit
    return exit_index
