"""SparseComp's sparsity phase: the per-layer step search and fragility.

Each step takes the largest non-fragile weighted layer by stored bytes and lowers its density by
``density_step`` (or, when removing channels saves more than ``narrow_gain_ratio`` times as many
bytes, because per-channel quantization parameters and bias dominate the layer, narrows it by
that factor); fine-tunes with tfmot's hard threshold at every step (distilled from the
pre-trained model), keeping the best weights by validation loss; if validation accuracy fell
more than ``fragile_drop`` below the reference with ``fragile_confidence`` (a paired test on the
validation examples, :func:`~freeml_keras.compression.training.significant_drop`), undoes the
step and marks the layer fragile (a failed narrowing only stops further narrowing of that
layer). When every layer is fragile, the remaining bytes go by measured accuracy per byte: the
lower densities and widths of the ``search_candidates`` largest layers are each measured alone
(validation accuracy and loss right after the cut) and :func:`allocate` picks a change per
layer that saves the bytes still over the budget (at most ``1 - density_step`` of the present
bytes per step, so that each allocation is measured on the fine-tuned result of the last) at
the least accuracy lost per byte; the changes are applied together, fine-tuned, and kept
whatever the accuracy. Once the stored size fits, the phase moves to the
recovery fine-tune.
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
from freeml_keras.compression.callback import DensityPlan, density_plan
from freeml_keras.compression.training import clone, evaluate, fine_tune, is_fragile, sparsity_step
from freeml_keras.keras import keras

__all__ = ["sparsify_step", "check_floor", "floor_bytes", "steppable", "allocate"]


class _Plan(NamedTuple):
    kind: str                           # "sparsify" or "narrow"
    row: memory.LayerFootprint
    change: str                         # for the report, e.g. "density 0.700 -> 0.490"
    model: "keras.Model"                # the model to fine-tune
    density: float | None               # the layer's new density (sparsify)
    gain: int                           # stored bytes saved before fine-tuning
    step: DensityPlan | None = None     # the density step (sparsify)
    width: int | None = None            # the layer's new width (narrow)


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


def _plans(job: Job, model: "keras.Model", row: memory.LayerFootprint, can_sparsify: bool,
           can_narrow: bool, wb: int) -> tuple[_Plan | None, _Plan | None]:
    """The sparsity step and the narrowing step for one layer, each None when it does not
    lower the stored size (the density is lowered by up to ``max_density_jumps`` steps: CSR
    indices make a layer larger until enough weights are zero)."""
    o = job.options
    layer = model.get_layer(row.name)
    # bytes still over the budget: a step saving more than that is made milder (the last step
    # leaves as few of the budget's bytes unused as it can)
    over = None if job.budget.flash_bytes is None else wb - job.budget.flash_bytes
    sparse = None
    if can_sparsify:
        dp = density_plan(model, row.name, wb, o.density_step, o.min_density, o.max_density_jumps)
        if dp is not None and over is not None and dp.gain > over:
            dp = _just_enough_density(model, dp, wb, over)
        if dp is not None:
            sparse = _Plan("sparsify", row, dp.change, model, dp.density, dp.gain, dp)
    narrow = None
    if can_narrow:
        ch = channels(layer)
        new_ch = max(o.min_channels, min(ch - 1, math.floor(ch * o.density_step)))
        narrowed = factorize.narrow(model, row.name, new_ch)
        gain = wb - sizes(narrowed)[0]
        if gain > 0 and over is not None and gain > over:
            new_ch, narrowed, gain = _just_enough_width(model, row.name, ch, new_ch, narrowed,
                                                        gain, wb, over)
        if gain > 0:
            narrow = _Plan("narrow", row, f"{ch} -> {new_ch} ch", narrowed, None, gain,
                           width=new_ch)
    return sparse, narrow


def _just_enough_width(model: "keras.Model", name: str, ch: int, new_ch: int,
                       narrowed: "keras.Model", gain: int, wb: int, over: int):
    """The widest width between ``new_ch`` and ``ch`` whose narrowing still saves ``over``
    bytes: (width, narrowed model, gain)."""
    lo, hi = new_ch, ch - 1
    best = (new_ch, narrowed, gain)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        trial = factorize.narrow(model, name, mid)
        g = wb - sizes(trial)[0]
        if g >= over:
            lo, best = mid, (mid, trial, g)
        else:
            hi = mid - 1
    return best


def _just_enough_density(model: "keras.Model", dp: DensityPlan, wb: int, over: int,
                         iterations: int = 8) -> DensityPlan:
    """The highest density between ``dp.density`` and ``dp.before`` whose stored size still
    saves ``over`` bytes (bisection)."""
    trial = clone(model)
    layer = trial.get_layer(dp.layer)
    w = layer.get_weights()
    lo, hi, best = dp.density, dp.before, dp
    for _ in range(iterations):
        mid = (lo + hi) / 2
        layer.set_weights([pruning.hard_threshold(w[0], mid)] + w[1:])
        g = wb - sizes(trial)[0]
        if g >= over:
            lo, best = mid, DensityPlan(dp.layer, dp.before, mid, int(g))
        else:
            hi = mid
    return best


def _plan(job: Job, model: "keras.Model", row: memory.LayerFootprint, can_sparsify: bool,
          can_narrow: bool, wb: int) -> _Plan | None:
    """The step for one layer (None when no step lowers its stored size): narrowing when it
    saves more than ``narrow_gain_ratio`` times what the sparsity step saves."""
    o = job.options
    sparse, narrow = _plans(job, model, row, can_sparsify, can_narrow, wb)
    if narrow is not None and (sparse is None or narrow.gain > o.narrow_gain_ratio * sparse.gain):
        return narrow
    return sparse


class _Option(NamedTuple):
    """One measured change of one layer (for the allocation when every layer is fragile)."""
    layer: str
    kind: str                           # "sparsify" or "narrow"
    value: float                        # the new density, or the new width
    change: str
    gain: int                           # stored bytes saved (alone)
    drop: float                         # validation accuracy lost (alone, before fine-tuning)
    loss: float                         # validation loss increase (alone, before fine-tuning)


def _measure(job: Job, model: "keras.Model", val, acc0: float, loss0: float,
             layer: str, kind: str, value: float, change: str, wb: int) -> _Option | None:
    if kind == "narrow":
        trial = factorize.narrow(model, layer, int(value),
                                 data=job.reconstruction_inputs("sparsify"))
    else:
        trial = clone(model)
        w = trial.get_layer(layer).get_weights()
        w[0] = pruning.hard_threshold(w[0], value)
        trial.get_layer(layer).set_weights(w)
    gain = wb - sizes(trial)[0]
    if gain <= 0:
        return None
    ev = evaluate(trial, val)
    return _Option(layer, kind, float(value), change, int(gain), acc0 - ev.accuracy, ev.loss - loss0)


def _levels(job: Job, model: "keras.Model", cands) -> list[tuple[str, str, float, str]]:
    """Per candidate layer, up to ``search_levels`` densities and widths below the current ones
    (each ``density_step`` times the previous)."""
    o = job.options
    out = []
    for row, can_sparsify, can_narrow in cands[:max(1, o.search_candidates)]:
        layer = model.get_layer(row.name)
        if can_sparsify:
            k = layer.get_weights()[0]
            density = np.count_nonzero(k) / k.size
            d = density
            for _ in range(o.search_levels):
                d *= o.density_step
                if d < o.min_density:
                    break
                out.append((row.name, "sparsify", d, f"density {density:.3f} -> {d:.3f}"))
        if can_narrow:
            ch = channels(layer)
            w = ch
            for _ in range(o.search_levels):
                new = max(o.min_channels, min(w - 1, math.floor(w * o.density_step)))
                if new >= w or new < o.min_channels:
                    break
                w = new
                out.append((row.name, "narrow", w, f"{ch} -> {w} ch"))
    return out


def allocate(options: list[_Option], need: int) -> list[_Option]:
    """At most one option per layer, saving at least ``need`` bytes (if the options can) at the
    least measured accuracy lost per byte: greedily, the upgrade (a layer's option replaced by
    one saving more) with the smallest extra accuracy lost per extra byte saved (then extra
    validation loss per byte), until enough is saved. Gains and losses are taken as additive.
    Then the overshoot is trimmed: while a chosen change can be replaced by a milder option of
    its layer (or left out) with ``need`` still saved, the replacement saving the fewest bytes
    more than ``need`` is taken (among equal ones the one lowering the measured loss most): the
    greedy order can leave a large cut that the later choices made unnecessary.

    >>> o = lambda layer, gain, drop: _Option(layer, "narrow", 0, "", gain, drop, 0.0)
    >>> opts = [o("c", 50, 0.0), o("a", 400, 0.0004), o("a", 380, 0.0005)]
    >>> sorted((c.layer, c.gain) for c in allocate(opts, 420))   # greedy: a 400 + c 50
    [('a', 380), ('c', 50)]
    >>> sorted((c.layer, c.gain) for c in allocate(opts, 400))   # c 50 not needed
    [('a', 400)]
    """
    chosen: dict[str, _Option] = {}
    saved = 0
    while saved < need:
        best, best_key = None, None
        for opt in options:
            cur = chosen.get(opt.layer)
            g0, d0, l0 = (cur.gain, max(cur.drop, 0.0), max(cur.loss, 0.0)) if cur else (0, 0.0, 0.0)
            extra = opt.gain - g0
            if extra <= 0:
                continue
            key = ((max(opt.drop, 0.0) - d0) / extra, (max(opt.loss, 0.0) - l0) / extra)
            if best_key is None or key < best_key:
                best, best_key = opt, key
        if best is None:
            break
        cur = chosen.get(best.layer)
        saved += best.gain - (cur.gain if cur else 0)
        chosen[best.layer] = best
    while saved > need:
        trim = None
        for layer, cur in chosen.items():
            for alt in [None] + [opt for opt in options if opt.layer == layer and opt.gain < cur.gain]:
                after = saved - cur.gain + (alt.gain if alt else 0)
                key = (after, (alt.drop if alt else 0.0) - cur.drop)
                if after >= need and (trim is None or key < trim[0]):
                    trim = (key, layer, alt)
        if trim is None:
            break
        (saved, _), layer, alt = trim
        if alt is None:
            del chosen[layer]
        else:
            chosen[layer] = alt
    return list(chosen.values())


def _search(job: Job, model: "keras.Model", state: JobState, cands, wb: int):
    """Every layer is fragile: the remaining bytes are allocated by measured accuracy per byte.
    Each of ``search_levels`` lower densities and widths of the ``search_candidates`` largest
    layers is measured alone (validation accuracy and loss right after the cut, on at most
    ``search_examples`` validation examples); :func:`allocate` picks a change per layer that
    saves the bytes still over the budget, at most ``1 - density_step`` of the present bytes
    (the next allocation is measured on this one's fine-tuned model). Returns the model with the changes, the densities to
    set, the record's change text and the measurements."""
    o = job.options
    val = job.val
    if o.search_examples and len(val[0]) > o.search_examples:
        pick = np.sort(np.random.default_rng(0).permutation(len(val[0]))[:o.search_examples])
        val = (val[0][pick], val[1][pick])
    base = evaluate(clone(model), val)
    options = []
    for layer, kind, value, change in _levels(job, model, cands):
        opt = _measure(job, model, val, base.accuracy, base.loss, layer, kind, value, change, wb)
        if opt is not None:
            options.append(opt)
    # at most 1 - density_step of the present bytes per allocation: the next one is measured
    # on the fine-tuned model (one large cut at once loses far more than the measurements say)
    need = min(wb - job.budget.flash_bytes, math.ceil(wb * (1.0 - o.density_step)))
    chosen = allocate(options, need)
    if not chosen:
        return None
    new = model
    densities = {}
    for opt in sorted(chosen, key=lambda c: c.kind != "narrow"):
        if opt.kind == "narrow":
            new = factorize.narrow(new, opt.layer, int(opt.value),
                                   data=job.reconstruction_inputs("sparsify"))
        else:
            densities[opt.layer] = opt.value
    measured = [{"layer": c.layer, "kind": c.kind, "change": c.change, "gain": c.gain,
                 "accuracy_drop": round(c.drop, 4), "loss_increase": round(c.loss, 4),
                 "chosen": c in chosen} for c in options]
    return new, densities, "; ".join(f"{c.layer} {c.change}" for c in chosen), measured


def sparsify_step(job: Job, model: "keras.Model", state: JobState) -> Step:
    """One sparsity (or narrowing) step, or (the stored size fits) the move to the recovery
    fine-tune."""
    wb, _ = sizes(model)
    limit = job.budget.flash_bytes
    if limit is None or wb <= limit:
        state.phase = "recover"
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
                           "no step on a non-fragile layer lowers the size): the remaining "
                           "bytes go by measured accuracy per byte (steps kept whatever the "
                           "accuracy)")
        job.log("every layer is fragile: choosing steps by measured accuracy per byte")
    probes: list[dict] = []
    if plan is None:
        found = _search(job, model, state, cands, wb)
        if found is None:
            raise Unreachable("flash", "no step on any layer lowers the stored size further")
        new, densities, change, probes = found
        state.densities.update(densities)
        tuned, ev = fine_tune(job, state, new)
        rec = {"phase": "sparsify", "kind": "allocate", "layer": ",".join(
                   sorted({p["layer"] for p in probes if p["chosen"]})),
               "change": change, "val_accuracy": ev.accuracy, "val_loss": ev.loss,
               "bytes_before": wb, "fragile": False, "by_size_alone": True, "accepted": True,
               "search": probes}
        return Step(record=rec, model=tuned, started=t0)
    previous = dict(state.densities)
    if plan.kind == "sparsify":
        # the step is the SparseComp callback's, in a fit of fine_tune_epochs
        tuned, ev, is_frag = sparsity_step(job, state, plan.model, plan.step)
        state.densities[plan.row.name] = float(plan.density)
    else:
        # the plan's model (for its size) has the inputs dropped; the step's refits the consumer
        narrowed = factorize.narrow(model, plan.row.name, plan.width,
                                    data=job.reconstruction_inputs("sparsify"))
        tuned, ev = fine_tune(job, state, narrowed)
        is_frag = is_fragile(job, state, ev)
    rec = {"phase": "sparsify", "kind": plan.kind, "layer": plan.row.name, "change": plan.change,
           "val_accuracy": ev.accuracy, "val_loss": ev.loss, "bytes_before": wb,
           "fragile": bool(is_frag), "by_size_alone": False}
    kept = None
    if is_frag:
        (state.narrow_fragile if plan.kind == "narrow" else state.fragile).append(plan.row.name)
        state.densities = previous
        rec["accepted"] = False
    else:
        rec["accepted"] = True
        kept = tuned
    return Step(record=rec, model=kept, started=t0)
