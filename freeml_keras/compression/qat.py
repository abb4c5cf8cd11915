"""SparseComp's last phase: int8 quantization-aware fine-tuning that keeps the zeros. If it
lowers validation accuracy by more than ``fragile_drop``, the float weights are kept (the
converter's post-training quantization is then what the device runs); with ``qat_epochs`` 0
the phase is skipped and that is always so. If the stored size is
then over the budget (int8 rounding moves a few weights), the run goes back to sparsity (and
recovery), at most ``max_qat_rounds`` times."""

from __future__ import annotations

import time

from freeml_keras.compression import pruning
from freeml_keras.compression.job import Job, Step, Unreachable, sizes
from freeml_keras.compression.state import JobState
from freeml_keras.compression.training import (clone, distillation_loss, evaluate, outputs_probs,
                                               pack_targets, scope)
from freeml_keras.keras import keras

__all__ = ["quantize_aware_fine_tune", "qat_step"]


def quantize_aware_fine_tune(job: Job, model: "keras.Model",
                             seed: int) -> tuple["keras.Model", float, float, int]:
    """int8 QAT of a copy of ``model`` for ``qat_epochs`` (best epoch by validation loss,
    distilled from the pre-trained model like every fine-tune); returns the plain model with
    ``model``'s zeros restored, val loss and accuracy, and how many zeros QAT had moved."""
    o = job.options
    masks = pruning.zero_masks(model)
    keras.utils.set_random_seed(seed)
    with scope(o.strategy):
        q = pruning.quantize_aware(clone(model))
        q.compile(optimizer=keras.optimizers.Adam(o.learning_rate / 2),
                  loss=distillation_loss(not outputs_probs(model), o.distill if job.teacher
                                         is not None else 0.0, o.temperature))
    classes = int(model.outputs[0].shape[-1])
    best = pruning.BestWeights("val_loss")
    q.fit(job.train[0], pack_targets(job.train[1], job.teacher, classes),
          validation_data=(job.val[0], pack_targets(job.val[1], None, classes)),
          epochs=o.qat_epochs, batch_size=o.batch_size, shuffle=True, verbose=0, callbacks=[best])
    plain = pruning.strip_quantization(q, model)
    moved = pruning.apply_zero_masks(plain, masks)
    ev = evaluate(plain, job.val)
    return plain, ev.loss, ev.accuracy, moved


def qat_step(job: Job, model: "keras.Model", state: JobState) -> Step:
    """One QAT round; the phase becomes "done", or "sparsify" when the size is over budget."""
    o = job.options
    if o.qat_epochs <= 0:
        state.phase = "done"
        state.notes.append("qat_epochs=0: no int8 QAT (post-training int8 quantization at "
                           "conversion)")
        return Step()
    t0 = time.time()
    before_wb, _ = sizes(model)
    before_loss, before_acc, _ = evaluate(model, job.val)
    tuned, loss, acc, moved = quantize_aware_fine_tune(job, model, state.step_seed(o.seed))
    state.qat_rounds += 1
    accepted = acc >= before_acc - o.fragile_drop
    if accepted:
        model = tuned
    else:
        # QAT on little data can wreck accuracy; the float weights (same zeros) are then kept
        # and the converter's post-training int8 quantization is what the device runs.
        state.notes.append(
            f"int8 QAT lowered validation accuracy from {before_acc:.4f} to {acc:.4f}; kept the "
            "weights before QAT (post-training int8 quantization at conversion)")
        loss, acc = before_loss, before_acc
    wb, _ = sizes(model)
    limit = job.budget.flash_bytes
    fits = limit is None or wb <= limit
    state.phase = "done" if fits else "sparsify"
    if not fits and state.qat_rounds >= o.max_qat_rounds:
        state.phase = "done"
        state.notes.append(f"after {state.qat_rounds} QAT rounds the stored "
                           f"size {wb:,} B is still over the budget")
    rec = {"phase": "qat", "kind": "int8_qat", "layer": "", "change": f"{o.qat_epochs} epochs",
           "val_accuracy": acc, "val_loss": loss, "bytes_before": before_wb,
           "zeros_restored": moved, "accepted": accepted}
    failed = None
    if state.phase == "done" and not fits:
        failed = Unreachable("flash", f"int8 QAT leaves the model at {wb:,} B")
    return Step(record=rec, model=model if accepted else None, started=t0,
                unreachable=failed)
