"""SparseComp's recovery phase: once the stored size fits, one longer fine-tune at the final
densities and widths (distilled from the pre-trained model, up to ``recovery_epochs`` with early
stopping after ``recovery_patience`` epochs without a lower validation loss, the best epoch
kept; the learning rate starts at ``recovery_lr_factor`` times the steps' and halves after two
epochs without progress). The steps before it fine-tune only a few epochs each; this one gives back what they
left. Its model is kept when its validation loss or accuracy is better than before; then the
phase moves to int8 QAT."""

from __future__ import annotations

import time

from freeml_keras.compression.job import Job, Step, sizes
from freeml_keras.compression.state import JobState
from freeml_keras.compression.training import evaluate, fine_tune
from freeml_keras.keras import keras

__all__ = ["recover_step"]


def recover_step(job: Job, model: "keras.Model", state: JobState) -> Step:
    """The recovery fine-tune (a recorded step), then the move to int8 QAT."""
    o = job.options
    state.phase = "qat"
    if o.recovery_epochs <= 0:
        return Step()
    t0 = time.time()
    wb, _ = sizes(model)
    before = evaluate(model, job.val)
    tuned, ev = fine_tune(job, state, model, epochs=o.recovery_epochs,
                          patience=o.recovery_patience,
                          learning_rate=o.learning_rate * o.recovery_lr_factor, plateau=True)
    accepted = ev.loss < before.loss or ev.accuracy > before.accuracy
    rec = {"phase": "recover", "kind": "recovery_fine_tune", "layer": "",
           "change": f"up to {o.recovery_epochs} epochs", "bytes_before": wb,
           "val_accuracy_before": before.accuracy, "accepted": bool(accepted)}
    if accepted:
        rec.update(val_accuracy=ev.accuracy, val_loss=ev.loss)
    else:
        rec.update(val_accuracy=before.accuracy, val_loss=before.loss,
                   reason=f"no better than before (val loss {ev.loss:.4f} >= {before.loss:.4f})")
    return Step(record=rec, model=tuned if accepted else None, started=t0)
