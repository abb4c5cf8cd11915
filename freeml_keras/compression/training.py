"""Training inside SparseComp: fine-tuning a copy of a model with the hard threshold at the run's
densities (the best epoch by validation loss is kept), distillation from the pre-trained model,
evaluation, and the fragile test.

Every fit here is a ``fit`` of a :func:`~freeml_keras.compression.callback.prepare`-d copy with
the :class:`~freeml_keras.compression.callback.SparseComp` callback (:func:`fine_tune` holds
the densities, :func:`sparsity_step` lets the callback take one density step and judge it). The
other pieces work on a plain ``model.fit`` (a loss, a pure test on predictions):

- :func:`distillation_loss` / :func:`pack_targets`: the targets carry the label, a flag and the
  pre-trained model's probabilities; flagged rows (training) get ``(1 - a) CE + a T^2 KL``,
  unflagged rows (validation) plain cross-entropy, so the validation loss early stopping watches
  is the task's loss.
- :func:`evaluate`: validation loss, accuracy and which examples are right (from
  :mod:`~freeml_keras.compression.evaluation`, with the fragile test, re-exported here).
- :func:`significant_drop`: a drop of validation accuracy against the reference model counts
  only when it exceeds the allowed drop with the given confidence (paired on the same examples).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np

from freeml_keras.compression.evaluation import (Evaluation, _log_probs, clone, evaluate,
                                                 evaluate_outputs, fragile_against, loss_for,
                                                 outputs_probs, significant_drop)
from freeml_keras.compression.job import Job
from freeml_keras.compression.state import JobState
from freeml_keras.keras import keras, tf

if TYPE_CHECKING:
    from freeml_keras.compression.callback import DensityPlan

__all__ = ["clone", "loss_for", "evaluate", "evaluate_outputs", "scope", "fine_tune",
           "sparsity_step", "Evaluation", "outputs_probs", "pack_targets", "distillation_loss",
           "significant_drop", "fragile_against", "teacher_probs", "is_fragile"]


def teacher_probs(model: "keras.Model", x: np.ndarray) -> np.ndarray:
    """The pre-trained model's class probabilities on ``x`` (softmax of its logits if it has
    no softmax)."""
    out = np.asarray(model.predict(x, batch_size=512, verbose=0), np.float64)
    if not outputs_probs(model):
        out = np.exp(_log_probs(out, False))
    return out.astype(np.float32)


def pack_targets(y: np.ndarray, teacher: np.ndarray | None, num_classes: int) -> np.ndarray:
    """(n, 2 + classes): the label, a flag (1: distil toward ``teacher``), the teacher's
    probabilities (zeros and flag 0 without a teacher)."""
    n = len(y)
    flag = np.ones((n, 1), np.float32) if teacher is not None else np.zeros((n, 1), np.float32)
    t = teacher if teacher is not None else np.zeros((n, num_classes), np.float32)
    return np.concatenate([np.asarray(y, np.float32).reshape(n, 1), flag, t.astype(np.float32)], 1)


def distillation_loss(from_logits: bool, alpha: float, temperature: float):
    """Loss on targets from :func:`pack_targets`: ``(1 - alpha) * CE(label) + alpha * T^2 *
    KL(teacher_T || student_T)`` on flagged rows, ``CE(label)`` on the others."""
    if not 0.0 <= alpha <= 1.0 or temperature <= 0:
        raise ValueError(f"distillation weight must be in [0, 1] and temperature > 0, got "
                         f"{alpha}, {temperature}")
    t = float(temperature)

    def loss(packed, out):
        y = tf.cast(packed[:, 0], tf.int32)
        flag = packed[:, 1]
        logp = tf.nn.log_softmax(out) if from_logits else tf.math.log(tf.clip_by_value(out, 1e-7, 1.0))
        ce = -tf.reduce_sum(tf.one_hot(y, tf.shape(out)[-1]) * logp, axis=-1)
        if alpha == 0.0:
            return ce
        teacher = tf.nn.softmax(tf.math.log(packed[:, 2:] + 1e-7) / t)
        kl = tf.reduce_sum(teacher * (tf.math.log(teacher + 1e-7) - tf.nn.log_softmax(logp / t)), -1)
        a = alpha * flag
        return (1.0 - a) * ce + a * t * t * kl
    return loss


def is_fragile(job: Job, state: JobState, ev: Evaluation) -> bool:
    """Whether a step whose model scored ``ev`` lost too much against the run's reference
    (:func:`fragile_against` with ``fragile_drop`` and ``fragile_confidence``)."""
    o = job.options
    return fragile_against(state.reference_results(), state.reference_accuracy, ev,
                           o.fragile_drop, o.fragile_confidence)


def scope(strategy):
    """The distribution strategy's scope, or no scope without one."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def fine_tune(job: Job, state: JobState, model: "keras.Model", *, epochs: int | None = None,
              patience: int | None = None, examples: int | None = None,
              seed_offset: int = 0, learning_rate: float | None = None,
              plateau: bool = False) -> tuple["keras.Model", Evaluation]:
    """Fine-tunes a copy of ``model`` (``fine_tune_epochs`` unless ``epochs`` is given; early
    stopping after ``patience`` epochs without a lower validation loss; on ``examples`` of a
    fixed random subset of the training data if given), seeded with the step's seed, with the
    hard threshold at the state's densities (of the layers ``model`` has) and distillation from
    the pre-trained model (``distill``), at ``learning_rate`` (the option's unless given; with
    ``plateau`` halved after two epochs without a lower validation loss); returns the plain
    model (best epoch by validation loss, each kernel at exactly its density) and its
    evaluation.

    The training is the callback path's: the copy is
    :func:`~freeml_keras.compression.callback.prepare`-d at the state's densities and fitted
    with the :class:`~freeml_keras.compression.callback.SparseComp` callback holding them."""
    plain, _ = _fit(job, state, model, epochs=epochs, patience=patience, examples=examples,
                    seed_offset=seed_offset, learning_rate=learning_rate, plateau=plateau)
    return plain, evaluate(plain, job.val)


def sparsity_step(job: Job, state: JobState, model: "keras.Model",
                  plan: "DensityPlan") -> tuple["keras.Model | None", Evaluation, bool]:
    """One SparseComp density step (``plan``, chosen by the sparsity phase) on a copy of
    ``model``, taken by the :class:`~freeml_keras.compression.callback.SparseComp` callback in
    a ``fit`` of ``fine_tune_epochs`` epochs: trained under the hard threshold, best epoch by
    validation loss, judged with the paired fragile test. Returns the stepped plain model (None
    when the step was fragile and undone), the stepped model's evaluation, and whether it was
    fragile."""
    epochs = job.options.fine_tune_epochs
    if epochs <= 0:
        trial = _fit(job, state, model, epochs=0, extra={plan.layer: plan.density})[0]
        ev = evaluate(trial, job.val)
        frag = is_fragile(job, state, ev)
        return (None if frag else trial), ev, frag
    plain, cb = _fit(job, state, model, step=plan)
    rec = cb.steps[-1]
    if rec["fragile"]:
        return None, Evaluation(rec["val_loss"], rec["val_accuracy"], cb.step_correct), True
    return plain, evaluate(plain, job.val), False


def _fit(job: Job, state: JobState, model: "keras.Model", *, epochs: int | None = None,
         patience: int | None = None, examples: int | None = None, seed_offset: int = 0,
         learning_rate: float | None = None, plateau: bool = False,
         step: "DensityPlan | None" = None, extra: dict | None = None):
    """The fit behind :func:`fine_tune` and :func:`sparsity_step`: the plain model and the
    callback."""
    from freeml_keras.compression.callback import SparseComp, prepare, strip_plain
    o = job.options
    names = {l.name for l in model.layers}
    densities = {k: v for k, v in {**state.densities, **(extra or {})}.items()
                 if v < 1.0 and k in names}
    if step is not None:
        densities.pop(step.layer, None)
    epochs = o.fine_tune_epochs if epochs is None else epochs
    keras.utils.set_random_seed(state.step_seed(o.seed) + seed_offset)
    with scope(o.strategy):
        # only the layers at a density < 1 and the step's are wrapped
        work = prepare(model, densities=densities,
                       layers=sorted(set(densities) | ({step.layer} if step else set())))
        loss = distillation_loss(not outputs_probs(model), o.distill if job.teacher is not None
                                 else 0.0, o.temperature)
        lr = o.learning_rate if learning_rate is None else learning_rate
        work.compile(optimizer=keras.optimizers.Adam(lr), loss=loss)
    cb = SparseComp(job.budget, job.val, epochs_per_step=max(1, epochs),
                    fragile_drop=o.fragile_drop, fragile_confidence=o.fragile_confidence,
                    reference=state.reference_results(),
                    reference_accuracy=state.reference_accuracy,
                    max_steps=0 if step is None else 1,
                    choose=None if step is None else (lambda plain, _cb: step), verbose=0)
    if epochs > 0:
        x, y = job.train
        teacher = job.teacher
        if examples is not None and examples < len(x):
            pick = np.sort(np.random.default_rng(0).permutation(len(x))[:examples])
            x, y = x[pick], y[pick]
            teacher = None if teacher is None else teacher[pick]
        classes = int(model.outputs[0].shape[-1])
        cbs = [cb]
        if patience is not None:
            cbs.append(keras.callbacks.EarlyStopping("val_loss", patience=patience))
        if plateau:
            cbs.append(keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=2,
                                                         min_lr=lr / 32))
        work.fit(x, pack_targets(y, teacher, classes),
                 validation_data=(job.val[0], pack_targets(job.val[1], None, classes)),
                 epochs=epochs, batch_size=o.batch_size, shuffle=True, verbose=0, callbacks=cbs)
    return strip_plain(work), cb
