"""Training pieces shared by the shared exit head and the per-exit branches: the loss (labels,
optionally distilled from the backbone's own output), the validation callback that scores every
exit, and feature extraction from the frozen backbone.

The backbone is frozen, so its pooled features do not change during training: they are computed
once (inference mode) and the heads are trained on them. This is the same computation as running
the backbone in every step, at a fraction of the cost.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Sequence

import numpy as np

from freeml_keras.keras import keras, tf

__all__ = ["exit_loss", "pack_targets", "ExitValidation", "cross_entropy", "log"]


def log(verbose: int, msg: str) -> None:
    """One progress line on stderr when verbose."""
    if verbose:
        print(msg, file=sys.stderr, flush=True)


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean sparse categorical cross-entropy of logits."""
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return float(-np.mean(logp[np.arange(len(y)), y]))


def pack_targets(y: np.ndarray, teacher: np.ndarray | None, num_classes: int) -> np.ndarray:
    """Labels and the backbone's output probabilities side by side: (n, 1 + classes)."""
    t = teacher if teacher is not None else np.zeros((len(y), num_classes), np.float32)
    return np.concatenate([np.asarray(y, np.float32)[:, None], t.astype(np.float32)], axis=1)


def exit_loss(distill: float = 0.0, temperature: float = 2.0) -> Callable:
    """Loss on logits: (1 - distill) * cross-entropy with the labels
    + distill * T^2 * KL(backbone output at temperature T || exit at temperature T).

    The targets are plain labels (``(n,)`` or ``(n, 1)``, without distillation) or
    :func:`pack_targets` of the labels and the backbone's probabilities. The
    ``model.fit(..., callbacks=[GlobalExitValidation(...)])`` example is
    :func:`freeml_keras.exits.global_exit.training_model`'s.

    >>> from freeml_keras.keras import keras
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> m.compile("adam", loss=exit_loss())
    >>> round(float(exit_loss()(np.array([1.0]), np.array([[0.0, 0.0]], "float32"))[0]), 4)
    0.6931
    """
    if not 0.0 <= distill <= 1.0:
        raise ValueError(f"distill must be in [0, 1], got {distill}")

    def loss(packed, logits):
        packed = tf.convert_to_tensor(packed)
        if packed.shape.rank == 1:
            packed = packed[:, None]
        if packed.shape[-1] == 1:           # plain labels
            if distill:
                raise ValueError("exit_loss(distill > 0) needs pack_targets(labels, backbone "
                                 "probabilities) as the targets, not plain labels")
            return tf.keras.losses.sparse_categorical_crossentropy(
                tf.cast(packed[:, 0], tf.int32), logits, from_logits=True)
        y = tf.cast(packed[:, 0], tf.int32)
        ce = tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        if distill == 0.0:
            return ce
        teacher = packed[:, 1:]
        soft = tf.nn.softmax(tf.math.log(teacher + 1e-7) / temperature)
        kl = tf.reduce_sum(soft * (tf.math.log(soft + 1e-7)
                                   - tf.nn.log_softmax(logits / temperature)), axis=-1)
        return (1.0 - distill) * ce + distill * temperature ** 2 * kl
    return loss


class ExitValidation(keras.callbacks.Callback):
    """After each epoch, scores every exit on the validation data with the current weights and
    logs ``val_exit_loss`` (mean cross-entropy over exits, what early stopping watches) and
    ``val_exit_acc_<k>``. ``exit_logits()`` returns (exits, n, classes) for the validation set."""

    def __init__(self, exit_logits: Callable[[], np.ndarray], y: np.ndarray,
                 weights: Sequence[float] | None = None, verbose: int = 1):
        super().__init__()
        self.exit_logits = exit_logits
        self.y = np.asarray(y).reshape(-1)
        self.weights = weights
        self.verbose = verbose
        self.t0 = time.time()

    def on_train_begin(self, logs=None):
        self.t0 = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        z = self.exit_logits()
        losses = [cross_entropy(zk, self.y) for zk in z]
        accs = [float(np.mean(np.argmax(zk, -1) == self.y)) for zk in z]
        w = np.ones(len(losses)) if self.weights is None else np.asarray(self.weights, float)
        logs["val_exit_loss"] = float(np.dot(w, losses) / w.sum())
        for k, a in enumerate(accs):
            logs[f"val_exit_acc_{k}"] = a
        log(self.verbose, f"  epoch {epoch + 1}: loss {logs.get('loss', float('nan')):.4f} "
                          f"val_exit_loss {logs['val_exit_loss']:.4f} val acc per exit "
                          + " ".join(f"{a:.3f}" for a in accs)
                          + f" ({time.time() - self.t0:.0f} s)")


def fit(model: "keras.Model", x, y, *, epochs: int, batch_size: int, patience: int,
        callbacks: Sequence, monitor: str, validation_data=None) -> dict:
    """Fit quietly (progress comes from the callbacks) with early stopping on ``monitor``,
    restoring the best weights."""
    stop = keras.callbacks.EarlyStopping(monitor=monitor, patience=patience,
                                         restore_best_weights=True)
    hist = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True,
                     validation_data=validation_data, callbacks=[*callbacks, stop])
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}
