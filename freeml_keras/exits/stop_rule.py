"""The exit decision at an exit point: the one rule that the calibrated exit policy
(:mod:`freeml_keras.exits.policy`), the energy simulator and its strategies
(:mod:`freeml_keras.energy`) apply, and that the C runtime takes in ``exit_decision``
(``tflm_port/src/checkpoint.c``; :mod:`freeml_keras.runtime.exit_decision` predicts it).

At intermediate exit point ``i`` (0 <= i < K; the model's own output, exit K, always answers):

1. stop, ``"confident"``, when the confidence of exit i's answer reaches ``thresholds[i]``
   (``None``, or a value above 1 as the model's metadata writes it: never by confidence);
2. else stop, ``"energy"``, when the energy available cannot pay for the work to the next exit
   point (exit i+1, or the model's output after the last one):
   ``energy available < margin x energy to the next exit``;
3. else go on (``"continue"``).

Either half can be left out: ``thresholds=None`` (no confidence rule), ``energy_margin=None``
(no energy rule). Everything here is numpy; the decisions take numbers or arrays alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

__all__ = ["StopRule", "ExitState", "CONFIDENCES", "softmax", "confidence"]

CONFIDENCES = ("max_softmax", "margin")


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def confidence(logits: np.ndarray, kind: str = "max_softmax") -> np.ndarray:
    """Confidence of logits (..., classes): the largest softmax probability (``max_softmax``,
    what the C runtime computes) or the top-1 minus the top-2 probability (``margin``).

    Example::

        import numpy as np
        from freeml_keras.exits.stop_rule import confidence
        print(confidence(np.log([[0.7, 0.2, 0.1]])))            # [0.7]
    """
    if kind not in CONFIDENCES:
        raise ValueError(f"unknown confidence {kind!r}; known: {', '.join(CONFIDENCES)}")
    p = softmax(np.asarray(logits, np.float64))
    if kind == "max_softmax":
        return p.max(axis=-1)
    top = np.sort(p, axis=-1)
    return top[..., -1] - top[..., -2]


class ExitState(Protocol):
    """What :meth:`StopRule.should_stop` reads at an exit point (the energy simulator's
    ``ExitContext`` is one)."""
    exit_index: int
    confidence: float | None
    energy_available_j: float
    energy_to_next_exit_j: float


@dataclass(frozen=True)
class StopRule:
    """When to answer at an intermediate exit point (module docstring): confidence at least
    ``thresholds[i]``, or energy available below ``energy_margin`` x the energy to the next
    exit point.

    Example::

        from freeml_keras.exits import StopRule
        rule = StopRule(thresholds=(0.9, None))
        print(rule.decide(0, confidence=0.95))                                    # (True, 'confident')
        print(rule.decide(1, confidence=0.95, energy_available_j=1e-6,
                          energy_to_next_exit_j=2e-6))                            # (True, 'energy')
        print(rule.first_exit([[0.5, 0.95], [0.5, 0.5]]))                         # [2 0]
    """
    thresholds: Sequence[float | None] | None = None
    energy_margin: float | None = 1.0

    def __post_init__(self) -> None:
        if self.thresholds is not None:
            object.__setattr__(self, "thresholds", tuple(
                None if t is None else float(t) for t in self.thresholds))
        if self.energy_margin is not None and not self.energy_margin >= 0:
            raise ValueError(f"energy margin must be >= 0, got {self.energy_margin}")

    def threshold(self, exit_index: int) -> float | None:
        """The confidence threshold of an exit point, None when it never stops by confidence."""
        if self.thresholds is None:
            return None
        t = self.thresholds[exit_index]
        return None if t is None or t > 1.0 else t

    def confident(self, exit_index: int, confidence: float | np.ndarray | None) -> bool | np.ndarray:
        """Whether the answer at ``exit_index`` is confident enough to stop (elementwise for an
        array of confidences)."""
        t = self.threshold(exit_index)
        if t is None:
            return False if confidence is None or np.ndim(confidence) == 0 else \
                np.zeros(np.shape(confidence), bool)
        if confidence is None:
            raise ValueError(f"exit {exit_index} has confidence threshold {t}: the rule needs the "
                             "confidence of its answer (for the simulator: run(confidence=...))")
        return np.greater_equal(confidence, t) if np.ndim(confidence) else bool(confidence >= t)

    def short_of_energy(self, energy_available_j: float | np.ndarray,
                        energy_to_next_exit_j: float | np.ndarray) -> bool | np.ndarray:
        """Whether the energy available cannot pay for the work to the next exit point
        (elementwise for arrays; never without an energy rule)."""
        if self.energy_margin is None:
            return False
        short = np.less(energy_available_j, self.energy_margin * np.asarray(energy_to_next_exit_j))
        return short if np.ndim(short) else bool(short)

    def decide(self, exit_index: int, *, confidence: float | None = None,
               energy_available_j: float = math.inf,
               energy_to_next_exit_j: float = 0.0) -> tuple[bool, str]:
        """(stop, reason) at intermediate exit ``exit_index``: reason is ``"confident"``,
        ``"energy"`` or ``"continue"``."""
        if self.confident(exit_index, confidence):
            return True, "confident"
        if self.short_of_energy(energy_available_j, energy_to_next_exit_j):
            return True, "energy"
        return False, "continue"

    def should_stop(self, state: ExitState) -> bool:
        """The decision for an exit state (the energy simulator's stop-decider interface)."""
        return self.decide(state.exit_index, confidence=state.confidence,
                           energy_available_j=state.energy_available_j,
                           energy_to_next_exit_j=state.energy_to_next_exit_j)[0]

    def first_exit(self, confidence: np.ndarray | None = None,
                   energy_available_j: float | np.ndarray | None = None,
                   energy_to_next_exit_j: Sequence[float] | None = None, *,
                   num_exits: int | None = None) -> np.ndarray:
        """Per example, the first intermediate exit at which the rule stops, K (the model's
        output) when none does.

        ``confidence``: (K, examples), each exit's answer; ``energy_available_j``: what is
        available at each exit point, (K, examples), (K, 1), or one value for all (None:
        unlimited); ``energy_to_next_exit_j``: (K,), the energy from each exit point to the
        next (to the model's output from the last). K comes from the first of ``num_exits``,
        ``confidence``, ``energy_to_next_exit_j`` and the thresholds that is given."""
        conf = None if confidence is None else np.asarray(confidence, np.float64)
        need = None if energy_to_next_exit_j is None else np.asarray(energy_to_next_exit_j, np.float64)
        k = next((int(n) for n in (num_exits,
                                   None if conf is None else conf.shape[0],
                                   None if need is None else len(need),
                                   None if self.thresholds is None else len(self.thresholds))
                  if n is not None), None)
        if k is None:
            raise ValueError("first_exit: give num_exits, confidences, energies or thresholds")
        avail = np.asarray(math.inf if energy_available_j is None else energy_available_j, np.float64)
        if avail.ndim == 0:
            avail = np.full((k, 1), float(avail))
        elif avail.ndim == 1:
            avail = avail[:, None]
        if need is None:
            need = np.zeros(k)
        if len(need) != k or avail.shape[0] != k or (conf is not None and conf.shape[0] != k):
            raise ValueError(f"first_exit: {k} exits, but confidences "
                             f"{None if conf is None else conf.shape}, energies available "
                             f"{avail.shape} and to the next exit {need.shape}")
        n = np.broadcast_shapes(avail.shape[1:], () if conf is None else conf.shape[1:])
        stop = np.ones((k + 1,) + n, bool)              # the model's output always answers
        for i in range(k):
            stop[i] = (self.confident(i, None if conf is None else conf[i])
                       | self.short_of_energy(avail[i], need[i]))
        return np.argmax(stop, axis=0)
