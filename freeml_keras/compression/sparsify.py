"""SparseComp's sparsity phase: the per-layer step search and fragility.

Each step takes the largest non-fragile weighted layer by stored bytes and lowers its density by
``density_step`` (or, when removing channels saves more than ``narrow_gain_ratio`` times as many
bytes, because per-channel quantization parameters and bias dominate the layer, narrows it by
that factor); fine-tunes with tfmot's hard threshold at every step, keeping the best weights by
validation loss; if validation accuracy fell more than ``fragile_drop`` below the reference,
undoes the step and marks the layer fragile (a failed narrowing only stops further narrowing of
that layer). When every layer is fragile, steps continue by size alone (kept whatever the
accuracy). Once the stored size fits, the phase moves to int8 QAT.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import numpy as np

from freeml_keras import memory
from freeml_keras.compression import factorize, pruning
from freeml_keras.compression.job import Job, Step, Unreachable, channels, sizes, weighted_rows
from freeml_keras.compression.state import JobState
from freeml_keras.compression.training import clone, fine_tune
from freeml_keras.keras import keras

__all__ = ["sparsify_step", "check_floor", "floor_bytes", "steppable"]


class _Plan(NamedTuple):
    kind: str                           # "sparsify" or "narrow"
    row: memory.LayerFootprint
    change: str                         # for the report, e.g. "density 0.700 -> 0.490"
    model: "keras.Model"                # the model to fine-tune
    density: float | None               # the layer's new density (sparsify)
    gain: int                           # stored bytes saved before fine-tuning


def steppable(job: Job, model: "keras.Model") -> list[tuple[memory.LayerFootprint, bool, bool]]:
    """Weighted layers that can still be sparsified or narrowed (row, can sparsify, can
    narrow), largest first."""
    o = job.options
    narrowable = set(factorize.narrowable_layers(model))
    out = []
    for r in sorted(weighted_rows(model), key=lambda r: -r.stored_bytes):
        layer = model.get_layer(r.name)
        k = layer.get_weights()[0]
        can_sparsify = (np.count_nonzero(k) / k.size) * o.density_step >= o.min_density \
            and pruning.kept_count(k.size, np.count_nonzero(k) / k.size * o.density_step) < np.count_nonzero(k)
        can_narrow = r.name in narrowable and \
            math.floor(channels(layer) * o.density_step) >= o.min_channels
        if can_sparsify or can_narrow:
            out.append((r, can_sparsify, can_narrow))
    return out


def floor_bytes(job: Job, model: "keras.Model") -> int:
    """Stored bytes with every narrowable layer at min_channels and every kernel at
    min_density (no training): no sequence of steps goes below it."""
    o = job.options
    m = model
    for name in factorize.narrowable_layers(m):
        if channels(m.get_layer(name)) > o.min_channels:
            m = factorize.narrow(m, name, o.min_channels)
    if m is model:
        m = clone(m)
    for r in weighted_rows(m):
        layer = m.get_layer(r.name)
        w = layer.get_weights()
        w[0] = pruning.hard_threshold(w[0], o.min_density)
        layer.set_weights(w)
    return sizes(m)[0]


def check_floor(job: Job, model: "keras.Model", state: JobState) -> None:
    """Fails early (once per run) when even the floor (see :func:`floor_bytes`) is over the
    stored-size budget."""
    limit = job.budget.flash_bytes
    if limit is None or state.floor_checked or sizes(model)[0] <= limit:
        return
    floor = floor_bytes(job, model)
    state.floor_bytes = floor
    state.floor_checked = True
    if floor > limit:
        raise Unreachable("flash", f"the budget of {limit:,} B is below the smallest size "
                                   f"this model can reach ({floor:,} B with every layer at "
                                   f"{job.options.min_channels} channels and density "
                                   f"{job.options.min_density})")


def _plan(job: Job, model: "keras.Model", row: memory.LayerFootprint, can_sparsify: bool,
          can_narrow: bool, wb: int) -> _Plan | None:
    """The step for one layer, or None when neither lowering its density (by up to
    ``max_density_jumps`` steps: CSR indices make a layer larger until enough weights are zero)
    nor narrowing it by ``density_step`` lowers the stored size. Narrowing is chosen when it
    saves more than ``narrow_gain_ratio`` times what the sparsity step saves."""
    o = job.options
    layer = model.get_layer(row.name)
    sparse = None
    if can_sparsify:
        k = layer.get_weights()[0]
        density = np.count_nonzero(k) / k.size
        trial = clone(model)
        w = trial.get_layer(row.name).get_weights()
        d = density
        for _ in range(o.max_density_jumps):
            d *= o.density_step
            if d < o.min_density:
                break
            w2 = list(w)
            w2[0] = pruning.hard_threshold(w[0], d)
            trial.get_layer(row.name).set_weights(w2)
            gain = wb - sizes(trial)[0]
            if gain > 0:
                sparse = _Plan("sparsify", row, f"density {density:.3f} -> {d:.3f}", model, d, gain)
                break
    narrow = None
    if can_narrow:
        ch = channels(layer)
        new_ch = max(o.min_channels, min(ch - 1, math.floor(ch * o.density_step)))
        narrowed = factorize.narrow(model, row.name, new_ch)
        gain = wb - sizes(narrowed)[0]
        if gain > 0:
            narrow = _Plan("narrow", row, f"{ch} -> {new_ch} ch", narrowed, None, gain)
    if narrow is not None and (sparse is None or narrow.gain > o.narrow_gain_ratio * sparse.gain):
        return narrow
    return sparse


def sparsify_step(job: Job, model: "keras.Model", state: JobState) -> Step:
    """One sparsity (or narrowing) step, or (the stored size fits) the move to int8 QAT."""
    o = job.options
    wb, _ = sizes(model)
    limit = job.budget.flash_bytes
    if limit is None or wb <= limit:
        state.phase = "qat"
        return Step()
    check_floor(job, model, state)
    t0 = time.time()
    cands = steppable(job, model)
    if not cands:
        raise Unreachable("flash", "every layer is at min_density/min_channels")
    # A failed sparsity step makes a layer fragile; a failed narrowing only stops further
    # narrowing of it (removing channels is the harsher change).
    fragile = set(state.fragile)
    no_narrow = set(state.narrow_fragile)
    free = [(r, sp, na and r.name not in no_narrow) for r, sp, na in cands
            if r.name not in fragile and (sp or (na and r.name not in no_narrow))]
    by_size = not free
    plan = None
    for row, can_sparsify, can_narrow in free:
        plan = _plan(job, model, row, can_sparsify, can_narrow, wb)
        if plan is not None:
            break
    if plan is None and not by_size:
        by_size = True  # the layers still open cannot lower the size: all are as if fragile
    if by_size and state.all_fragile_from_step is None:
        state.all_fragile_from_step = state.step
        state.notes.append(f"from step {state.step} every layer is fragile (or "
                           "no step on a non-fragile layer lowers the size): continuing "
                           "by size alone (steps kept whatever the accuracy)")
        job.log("every layer is fragile: continuing by size alone")
    if plan is None:
        for row, can_sparsify, can_narrow in cands:
            plan = _plan(job, model, row, can_sparsify, can_narrow, wb)
            if plan is not None:
                break
    if plan is None:
        raise Unreachable("flash", "no step on any layer lowers the stored size further")
    previous = dict(state.densities)
    if plan.kind == "sparsify":
        state.densities[plan.row.name] = float(plan.density)
    tuned, loss, acc = fine_tune(job, state, plan.model)
    is_fragile = acc < state.reference_accuracy - o.fragile_drop
    rec = {"phase": "sparsify", "kind": plan.kind, "layer": plan.row.name, "change": plan.change,
           "val_accuracy": acc, "val_loss": loss, "bytes_before": wb,
           "fragile": bool(is_fragile and not by_size), "by_size_alone": by_size}
    kept = None
    if is_fragile and not by_size:
        (state.narrow_fragile if plan.kind == "narrow" else state.fragile).append(plan.row.name)
        state.densities = previous
        rec["accepted"] = False
    else:
        rec["accepted"] = True
        kept = tuned
    return Step(record=rec, model=kept, started=t0)
