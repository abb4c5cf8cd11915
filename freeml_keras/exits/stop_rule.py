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

The C runtime decides in integers (no floating point on the targets), and so do these decisions
given its numbers: the confidence of int8 logits is ``2^22 / S`` with ``S`` the fixed-point sum
of exps of :func:`fixed_point_exp_sum` (:func:`runtime_confidence`), which compares with a
float32 threshold exactly as the runtime's ``S <= confidence_limit(threshold)`` does (``S`` is
below 2^29, so the float64 quotient never rounds across the threshold); the energy reading and
the energy to the next exit are integers of one energy unit (``reading < work x price``, which
the runtime decides as ``reading // price < work``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol, Sequence

import numpy as np

__all__ = ["StopRule", "ExitState", "CONFIDENCES", "softmax", "confidence", "fixed_point_exp_sum",
           "runtime_confidence", "confidence_limit", "CONF_BITS"]

CONFIDENCES = ("max_softmax", "margin")
CONF_BITS = 22                  # fixed-point fraction bits of the runtime's exp sum (FM_EXIT_CONF_BITS)
_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1


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


# ---- the runtime's fixed-point confidence (tflm_port/src/exit_head.c), bit for bit --------------

def _srdhm(a: np.ndarray, b: int | np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul of int32 values (int64 arrays), as fm_srdhm."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ab = a * b
    q = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    r = np.where(q >= 0, q >> 31, -((-q) >> 31))            # C division truncates toward zero
    return np.where((a == _I32_MIN) & (b == _I32_MIN), _I32_MAX, r)


def _rdbpot(x: np.ndarray, exponent: int) -> np.ndarray:
    """RoundingDivideByPOT (fm_rdbpot)."""
    mask = (1 << exponent) - 1
    return (x >> exponent) + ((x & mask) > (mask >> 1) + (x < 0)).astype(np.int64)


def _exp_on_negative_values_q5(a: np.ndarray) -> np.ndarray:
    """gemmlowp exp_on_negative_values for Q5.26 input (a <= 0), Q0.31 output
    (fm_exp_on_negative_values_q5)."""
    a = np.asarray(a, np.int64)
    quarter = 1 << 24
    mod = (a & (quarter - 1)) - quarter
    x = np.clip(mod << 5, _I32_MIN, _I32_MAX) + (1 << 28)   # saturating shift, then + 1/8
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    poly = _rdbpot(_srdhm(_rdbpot(x4, 2) + x3, 715827883) + x2, 1)
    result = 1895147668 + _srdhm(1895147668, x + poly)
    remainder = mod - a
    for k, m in enumerate((1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242)):
        result = np.where(remainder & (1 << (24 + k)), _srdhm(result, m), result)
    return np.where(a == 0, _I32_MAX, result)


def fixed_point_exp_sum(logits: np.ndarray, scale: float) -> np.ndarray:
    """The runtime's sum over classes of exp((logits - max) x scale) for int8 logits (...,
    classes) and the float32 scale of the head's output, in Q22 (``fm_exit_exp_sum``): the
    scale in Q5.26 from its bits (truncated), times each difference (at 2^31 and beyond the
    term is 0), gemmlowp's fixed-point exp, each term rounded to 2^-22.

    Example::

        import numpy as np
        from freeml_keras.exits.stop_rule import fixed_point_exp_sum
        print(fixed_point_exp_sum(np.array([10, 10], np.int8), 0.1))     # 8388608 (2 x 2^22)
    """
    z = np.asarray(logits, np.int64)
    bits = int(np.array(scale, np.float32).view(np.uint32))
    e, step = (bits >> 23) & 0xFF, bits & 0x7FFFFF
    if e == 0:
        e = 1
    else:
        step |= 0x800000
    sh = 124 - e
    step = 0 if sh >= 24 else step >> sh if sh >= 0 else step << -sh if sh > -8 else 1 << 31
    dmax = _I32_MAX // step if step else 255
    d = z.max(axis=-1, keepdims=True) - z
    ok = d <= dmax
    term = (_exp_on_negative_values_q5(-np.where(ok, d * step, 0)) + 256) >> 9
    return np.where(ok, term, 0).sum(axis=-1)


def runtime_confidence(logits: np.ndarray, scale: float) -> np.ndarray:
    """The C runtime's confidence of int8 exit logits (..., classes): 2^22 / the fixed-point exp
    sum, its largest softmax probability (within about 1e-6). Compared with a float32 threshold
    (``>=``) it decides exactly as the runtime (module docstring)."""
    return float(1 << CONF_BITS) / fixed_point_exp_sum(logits, scale)


def confidence_limit(threshold: float) -> int:
    """The largest exp sum whose confidence 2^22 / S reaches ``threshold`` (as float32):
    floor(2^22 / t); 0 (never) for NaN and above 1, 2^32 - 1 (always) for t <= 2^-9
    (``fm_exit_conf_limit``).

    Example::

        from freeml_keras.exits.stop_rule import confidence_limit
        print(confidence_limit(1.0), confidence_limit(0.5), confidence_limit(2.0))  # 4194304 8388608 0
    """
    t = np.float32(threshold)
    if np.isnan(t) or t > 1:
        return 0
    if t < 2.0 ** -9:
        return 0xFFFFFFFF
    return int(Fraction(1 << CONF_BITS) / Fraction(float(t)))


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
