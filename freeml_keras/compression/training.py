"""Training inside SparseComp: fine-tuning a copy of a model with the hard threshold at the run's
densities (the best epoch by validation loss is kept), and evaluation."""

from __future__ import annotations

import contextlib
from freeml_keras.compression import factorize, pruning
from freeml_keras.compression.job import Job, Split
from freeml_keras.compression.state import JobState
from freeml_keras.keras import keras

__all__ = ["clone", "loss_for", "evaluate", "scope", "fine_tune"]


def clone(model: "keras.Model") -> "keras.Model":
    """A functional copy of ``model`` with the same weights."""
    m = factorize.functional(model)
    new = keras.models.clone_model(m)
    new.set_weights(m.get_weights())
    return new


def loss_for(model: "keras.Model") -> "keras.losses.Loss":
    """Sparse categorical cross-entropy, on logits unless the model ends with a softmax."""
    last = model.layers[-1]
    probs = type(last).__name__ == "Softmax" or last.get_config().get("activation") == "softmax"
    return keras.losses.SparseCategoricalCrossentropy(from_logits=not probs)


def evaluate(model: "keras.Model", val: Split) -> tuple[float, float]:
    """Validation loss and accuracy (compiles ``model``)."""
    model.compile(loss=loss_for(model), metrics=["accuracy"])
    loss, acc = model.evaluate(val[0], val[1], batch_size=512, verbose=0)
    return float(loss), float(acc)


def scope(strategy):
    """The distribution strategy's scope, or no scope without one."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def fine_tune(job: Job, state: JobState, model: "keras.Model") -> tuple["keras.Model", float, float]:
    """Fine-tunes a copy of ``model`` for ``fine_tune_epochs``, seeded with the step's seed, with
    the hard threshold at the state's densities (of the layers ``model`` has); returns the plain
    model (best epoch by validation loss, each kernel at exactly its density), val loss and
    accuracy."""
    o = job.options
    densities = {k: v for k, v in state.densities.items()
                 if v < 1.0 and k in {l.name for l in model.layers}}
    epochs = o.fine_tune_epochs
    keras.utils.set_random_seed(state.step_seed(o.seed))
    with scope(o.strategy):
        work = pruning.prune_layers(model, densities) if densities else clone(model)
        work.compile(optimizer=keras.optimizers.Adam(o.learning_rate),
                     loss=loss_for(model), metrics=["accuracy"])
    if epochs > 0:
        best = pruning.BestWeights("val_loss")
        work.fit(job.train[0], job.train[1], validation_data=job.val, epochs=epochs,
                 batch_size=o.batch_size, shuffle=True, verbose=0,
                 callbacks=pruning.pruning_callbacks() + [best])
    plain = pruning.transfer_weights(work, keras.models.clone_model(model))
    for name, d in densities.items():
        layer = plain.get_layer(name)
        w = layer.get_weights()
        w[0] = pruning.hard_threshold(w[0], d)
        layer.set_weights(w)
    loss, acc = evaluate(plain, job.val)
    return plain, loss, acc
