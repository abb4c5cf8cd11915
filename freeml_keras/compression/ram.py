"""SparseComp's first phase: fit the RAM budget. While peak activation memory + checkpoint state
exceeds it, narrow the layer whose narrowing lowers the peak most (its lowest-L1 output
channels and the matching inputs of its consumer go, the consumer refitted by least squares on
training inputs), to the widest width that fits, and fine-tune. Once RAM fits, the reference accuracy is fixed."""

from __future__ import annotations

import time

from freeml_keras import memory
from freeml_keras.compression import factorize
from freeml_keras.compression.job import Job, Step, Unreachable, channels, sizes
from freeml_keras.compression.sparsify import check_floor
from freeml_keras.compression.state import JobState
from freeml_keras.compression.training import evaluate, fine_tune
from freeml_keras.keras import keras

__all__ = ["ram_step"]


def ram_step(job: Job, model: "keras.Model", state: JobState) -> Step:
    """One narrowing step, or (RAM fits) the move to layer separation or sparsity."""
    o = job.options
    limit = job.budget.ram_bytes
    _, peak = sizes(model)
    if limit is None or peak <= limit:
        state.set_reference(evaluate(model, job.val).correct)
        check_floor(job, model, state)
        state.phase = "factorize" if o.factorize else "sparsify"
        return Step()
    t0 = time.time()
    best = None
    for name in factorize.narrowable_layers(model):
        c = channels(model.get_layer(name))
        if c <= o.min_channels:
            continue
        low = sizes(factorize.narrow(model, name, o.min_channels))[1]
        if low < peak and (best is None or low < best[1]):
            best = (name, low, c)
    if best is None:
        fp = memory.keras_footprint(model)
        raise Unreachable("ram", f"peak RAM {peak:,} B (activations {fp.arena_bytes:,} B + "
                                 f"checkpoint {fp.checkpoint_bytes:,} B) exceeds the RAM budget "
                                 f"{limit:,} B by {peak - limit:,} B and no layer can be "
                                 f"narrowed further (min_channels={o.min_channels})")
    name, low, c = best
    target = max(limit, low)
    lo, hi = o.min_channels, c - 1          # largest width whose peak <= target
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sizes(factorize.narrow(model, name, mid))[1] <= target:
            lo = mid
        else:
            hi = mid - 1
    narrowed = factorize.narrow(model, name, lo, data=job.reconstruction_inputs("ram"))
    tuned, ev = fine_tune(job, state, narrowed)
    return Step(record={"phase": "ram", "kind": "narrow", "layer": name, "change": f"{c} -> {lo} ch",
                        "channels_before": c, "channels_after": lo, "peak_before": peak,
                        "val_accuracy": ev.accuracy, "val_loss": ev.loss, "accepted": True},
                model=tuned, started=t0)
