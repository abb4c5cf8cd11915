"""SparseComp's layer separation phase: factorize each Dense/Conv2D holding at least
``factorize_min_fraction`` of the stored bytes (truncated SVD / Tucker-2, ranks by EVBMF, see
:mod:`~freeml_keras.compression.factorize`; the last factor refitted by least squares to the
layer's outputs on training inputs), one layer per step; keep it if the stored size
drops, RAM still fits, and validation accuracy stays within ``fragile_drop`` of the reference
after a short fine-tune."""

from __future__ import annotations

import time

from freeml_keras.compression import factorize
from freeml_keras.compression.job import Job, Step, sizes, weighted_rows
from freeml_keras.compression.state import JobState
from freeml_keras.compression.training import fine_tune, is_fragile
from freeml_keras.keras import keras

__all__ = ["factorize_step"]

# Suffixes of the layers a factorization creates: they are not factorized again.
_FACTOR_SUFFIXES = ("_svd1", "_svd2", "_tk_in", "_tk_core", "_tk_out")


def _candidate(job: Job, model: "keras.Model", state: JobState, wb: int):
    """The largest layer not yet tried that is worth factorizing, or None."""
    for r in sorted(weighted_rows(model), key=lambda r: -r.stored_bytes):
        if r.type not in ("Dense", "Conv2D") or r.name in state.tried_factorize:
            continue
        if r.name.endswith(_FACTOR_SUFFIXES):
            continue
        if r.stored_bytes < job.options.factorize_min_fraction * wb:
            continue
        if r.type == "Conv2D" and model.get_layer(r.name).kernel_size == (1, 1):
            continue
        return r
    return None


def factorize_step(job: Job, model: "keras.Model", state: JobState) -> Step:
    """Factorizes the next candidate layer, or (none left) moves to sparsity."""
    o = job.options
    wb, _ = sizes(model)
    cand = _candidate(job, model, state, wb)
    if cand is None:
        state.phase = "sparsify"
        return Step()
    t0 = time.time()
    state.tried_factorize.append(cand.name)
    fn = factorize.factorize_dense if cand.type == "Dense" else factorize.factorize_conv2d
    try:
        new = fn(model, cand.name)
    except ValueError as e:
        state.notes.append(f"factorize {cand.name}: {e}")
        return Step()
    parts = [l for l in new.layers if l.name.startswith(cand.name + "_")]
    data = job.reconstruction_inputs("factorize")
    if data is not None:
        # the last factor refitted to the layer's outputs (the factors are the kernel's best
        # low-rank approximation, not the outputs')
        factorize.reconstruct_consumer(model, new, parts[-1].name, data, target=cand.name)
    ranks = [int(l.get_weights()[0].shape[-1]) for l in parts[:-1]]
    new_wb, new_ram = sizes(new)
    rec = {"phase": "factorize", "kind": f"factorize_{cand.type.lower()}", "layer": cand.name,
           "change": f"ranks {ranks}", "ranks": ranks, "bytes_before": wb,
           "bytes_factorized": new_wb}
    ref = state.reference_accuracy
    kept = None
    if new_wb >= wb:
        rec.update(accepted=False, reason="no size gain", val_accuracy=state.last_accuracy())
    elif job.budget.ram_bytes is not None and new_ram > job.budget.ram_bytes:
        rec.update(accepted=False, reason=f"peak RAM {new_ram:,} B over budget",
                   val_accuracy=ref)
    else:
        tuned, ev = fine_tune(job, state, new)
        ok = not is_fragile(job, state, ev)
        rec.update(val_accuracy=ev.accuracy, val_loss=ev.loss, accepted=ok,
                   reason="" if ok else f"accuracy {ev.accuracy:.4f} below {ref:.4f} - "
                                        f"{o.fragile_drop} (confidence {o.fragile_confidence})")
        if ok:
            kept = tuned
    return Step(record=rec, model=kept, started=t0)
