"""What SparseComp measures a model with, below the training and the callback: a functional
copy, validation loss / accuracy / per-example correctness, and the paired fragile test (a drop
of validation accuracy counts only when it exceeds the allowed drop with the given confidence,
on the same examples)."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import NamedTuple

import numpy as np

from freeml_keras.compression import factorize
from freeml_keras.keras import keras

__all__ = ["clone", "outputs_probs", "loss_for", "Evaluation", "evaluate_outputs", "evaluate",
           "significant_drop", "fragile_against"]

Split = tuple[np.ndarray, np.ndarray]


def clone(model: "keras.Model") -> "keras.Model":
    """A functional copy of ``model`` with the same weights."""
    m = factorize.functional(model)
    new = keras.models.clone_model(m)
    new.set_weights(m.get_weights())
    return new


def outputs_probs(model: "keras.Model") -> bool:
    """Whether ``model`` ends with a softmax (probabilities) rather than logits."""
    last = model.layers[-1]
    return type(last).__name__ == "Softmax" or last.get_config().get("activation") == "softmax"


def loss_for(model: "keras.Model") -> "keras.losses.Loss":
    """Sparse categorical cross-entropy, on logits unless the model ends with a softmax."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=not outputs_probs(model))


class Evaluation(NamedTuple):
    """Validation loss, accuracy, and per example whether the prediction is right."""
    loss: float
    accuracy: float
    correct: np.ndarray


def _log_probs(out: np.ndarray, probs: bool) -> np.ndarray:
    if probs:
        return np.log(np.clip(out, 1e-7, 1.0))
    z = out - out.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def evaluate_outputs(out: np.ndarray, labels: np.ndarray, probs: bool) -> Evaluation:
    """Cross-entropy, accuracy and per-example correctness of a model's outputs ``out``
    (probabilities when ``probs``, else logits) on ``labels``."""
    out = np.asarray(out, np.float64)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    logp = _log_probs(out, probs)
    correct = np.argmax(out, axis=-1) == y
    return Evaluation(float(-np.mean(logp[np.arange(len(y)), y])), float(np.mean(correct)), correct)


def evaluate(model: "keras.Model", val: Split) -> Evaluation:
    """Validation loss (cross-entropy), accuracy and per-example correctness of ``model``
    (compiles it, for the callers that evaluate it afterwards)."""
    model.compile(loss=loss_for(model), metrics=["accuracy"])
    out = model.predict(val[0], batch_size=512, verbose=0)
    return evaluate_outputs(out, val[1], outputs_probs(model))


def significant_drop(reference: np.ndarray, candidate: np.ndarray, allowed: float,
                     confidence: float) -> bool:
    """Whether the candidate's validation accuracy lies more than ``allowed`` below the
    reference's with one-sided ``confidence``, on the same examples (``reference`` and
    ``candidate``: per example, right or not).

    The paired difference of the two accuracies has standard error
    ``sqrt(b + c - (b - c)^2 / n) / n`` (b: examples only the reference gets right, c: only the
    candidate); the drop counts when ``drop - z * se > allowed``. ``confidence <= 0.5`` is the
    plain comparison ``drop > allowed``."""
    ref = np.asarray(reference, bool)
    cand = np.asarray(candidate, bool)
    n = len(ref)
    b = int(np.sum(ref & ~cand))
    c = int(np.sum(~ref & cand))
    drop = (b - c) / n
    z = NormalDist().inv_cdf(confidence) if confidence > 0.5 else 0.0
    se = math.sqrt(max(0.0, b + c - (b - c) ** 2 / n)) / n
    return drop - z * se > allowed + 1e-12


def fragile_against(reference: np.ndarray | None, reference_accuracy: float | None,
                    ev: Evaluation, allowed: float, confidence: float) -> bool:
    """Whether a model that scored ``ev`` lost too much against the reference:
    :func:`significant_drop` by ``allowed`` at ``confidence`` on the reference's per-example
    results, a plain comparison with ``reference_accuracy`` when those are not known."""
    if reference is None or len(reference) != len(ev.correct):
        return ev.accuracy < reference_accuracy - allowed
    return significant_drop(reference, ev.correct, allowed, confidence)
