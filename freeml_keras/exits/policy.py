"""Energy-adaptive exit policy: what each segment of inference costs on a device, the policy
(the stop rule of :mod:`freeml_keras.exits.stop_rule` with these costs and calibrated
thresholds), and thresholds calibrated for a target accuracy or a target mean cost.

Segment i (i < K) runs the backbone from exit point i-1 (or the input) to exit point i and adds
exit point i's contribution to the head; segment K runs the rest of the backbone to its output.
Each TFLite operator a segment becomes is priced by the cost model fitted to the per-operator
counts measured on the device's core (:mod:`freeml_keras.costs`). Without measurements, costs
are estimated from MACs and bytes moved: cycles = MACs * cycles_per_mac + bytes moved *
cycles_per_byte. Either way plus the NVM write time of activations on devices that keep them
in NVM; energy = cycles * the device's energy per cycle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from freeml_keras import devices
from freeml_keras import costs
from freeml_keras.exits.footprint import layer_work
from freeml_keras.exits.stop_rule import CONFIDENCES, StopRule, confidence as _confidence

__all__ = ["SegmentCost", "segment_costs", "ExitPolicy", "calibrate_thresholds",
           "evaluate_policy", "CONFIDENCES", "CYCLE_ESTIMATES"]

POLICY_VERSION = 1
# Estimated cycles per int8 MAC and per byte moved by reference kernels, by core, when nothing was
# measured:
# MSP430 multiplies through the memory-mapped MPY32 (operand writes, result reads, 16-bit adds
# of a 32-bit sum); the Cortex-M4F does a load pair, sign extension and SMLABB.
CYCLE_ESTIMATES = {"MSP430": (12.0, 2.0), "Cortex-M4": (3.0, 1.0)}


@dataclass(frozen=True)
class SegmentCost:
    """Work and cost of one segment of inference."""
    name: str
    macs: int
    bytes_moved: int
    bytes_written: int
    cycles: float
    energy_j: float
    seconds: float
    pricing: str = "analytical"


def _cost_model(device: devices.DeviceProfile):
    """The per-operator cost model measured on the device's core, or None when the targets
    benchmark has not measured it."""
    try:
        return costs.CostModel.load(costs.target_of(device))
    except costs.CostTableError:
        return None


def _estimates(device: devices.DeviceProfile) -> tuple[float, float]:
    """(cycles per MAC, cycles per byte moved): the analytical estimate for the device's core."""
    for prefix, est in CYCLE_ESTIMATES.items():
        if device.core.startswith(prefix):
            return est
    raise ValueError(f"no cycle estimate for core {device.core!r} of {device.name!r}; pass "
                     "cycles_per_mac and cycles_per_byte")


def segment_costs(exit_model, device: str | devices.DeviceProfile = "msp430fr5994", *,
                  cycles_per_mac: float | None = None,
                  cycles_per_byte: float | None = None,
                  include_heads: bool = True) -> list[SegmentCost]:
    """Costs of the K+1 segments of an ExitModel (or ExitBranches) on ``device``; each segment
    ends with its exit head's work unless ``include_heads=False`` (the backbone alone).

    Priced per TFLite operator by the cost model fitted to the operators measured on the
    device's core (:mod:`freeml_keras.costs`), or, when ``cycles_per_mac`` / ``cycles_per_byte``
    are given or nothing was measured, analytically (module docstring)."""
    dev = devices.get(device)
    analytical = cycles_per_mac is not None or cycles_per_byte is not None
    cm = None if analytical else _cost_model(dev)
    cpm, cpb = _estimates(dev) if cm is None and (cycles_per_mac is None or cycles_per_byte is None) else (0, 0)
    cpm = cycles_per_mac if cycles_per_mac is not None else cpm
    cpb = cycles_per_byte if cycles_per_byte is not None else cpb
    work = layer_work(exit_model.backbone)
    names = [w["name"] for w in work]
    C = exit_model.num_classes
    bounds = [names.index(n) for n in exit_model.exit_points] + [len(work) - 1]
    out, start = [], 0
    for i, end in enumerate(bounds):
        seg = work[start:end + 1]
        macs = sum(w["macs"] for w in seg)
        written = sum(w["written_bytes"] for w in seg)
        moved = sum(w["weight_bytes"] + w["read_bytes"] + w["written_bytes"] for w in seg)
        # each layer in the weight format the converter chooses for this target
        priced = sum(cm.op_cost(*op, cm.chosen_format(*op)) for w in seg for op in w["ops"]) if cm is not None else 0.0
        if i < len(exit_model.exit_points) and include_heads:
            spec = exit_model.pooling[i]
            d = spec.pooled_dim
            macs += d * C                                   # W_i . p_i
            moved += int(np.prod(spec.feature_shape)) + d * C + 2 * 4 * C  # map, W_i, accumulator
            written += 4 * C
            if cm is not None:
                priced += cm.op_cost("MAX_POOL_2D", 0, 0, d) + cm.op_cost("FULLY_CONNECTED", d * C, d * C, 4 * C)
            name = f"to exit {i} ({exit_model.exit_points[i]})"
        elif i < len(exit_model.exit_points):
            name = f"to exit point {i} ({exit_model.exit_points[i]}), backbone only"
        else:
            name = "to the backbone output"
        cycles = priced if cm is not None else macs * cpm + moved * cpb
        if dev.activations_in_nvm:
            cycles += written / dev.word_bytes * dev.nvm_write_ns_per_word * 1e-9 * dev.clock_hz
        out.append(SegmentCost(name, int(macs), int(moved), int(written), float(cycles),
                               float(cycles * dev.energy_per_cycle_j), float(cycles / dev.clock_hz),
                               f"per-operator cost model ({cm.target}, {', '.join(cm.models)})"
                               if cm is not None else "analytical"))
        start = end + 1
    return out


@dataclass
class ExitPolicy:
    """The exit policy of a model on a device: at exit point i, the :class:`StopRule` with
    ``thresholds[i]`` (None: never by confidence) and the energy of segment i+1 as the work to
    the next exit. The backbone's own output (after the last exit point) always stops.

    ``segment_energy_j[i]``: energy of segment i (K+1 entries, see :func:`segment_costs`).

    Example::

        import numpy as np
        from freeml_keras.exits import ExitPolicy
        policy = ExitPolicy(thresholds=[0.9, None], segment_energy_j=[1.0, 2.0, 4.0])
        print(policy.decide(0, np.log([0.5, 0.3, 0.2]), energy_available_j=1.5))  # (True, 'energy')
    """
    thresholds: list[float | None]
    segment_energy_j: list[float]
    confidence: str = "max_softmax"
    device: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.confidence not in CONFIDENCES:
            raise ValueError(f"unknown confidence {self.confidence!r}; known: {', '.join(CONFIDENCES)}")
        if len(self.segment_energy_j) != len(self.thresholds) + 1:
            raise ValueError(f"{len(self.thresholds)} thresholds need {len(self.thresholds) + 1} "
                             f"segment energies, got {len(self.segment_energy_j)}")

    @property
    def num_exits(self) -> int:
        return len(self.thresholds)

    @property
    def rule(self) -> StopRule:
        """The stop rule with this policy's thresholds (the energy rule without margin)."""
        return StopRule(self.thresholds, energy_margin=1.0)

    def confidence_of(self, logits: np.ndarray) -> np.ndarray:
        """Confidence of logits (..., classes): max softmax, or top-1 minus top-2 probability."""
        return _confidence(logits, self.confidence)

    def decide(self, exit_index: int, logits: np.ndarray, energy_available_j: float) -> tuple[bool, str]:
        """(stop, reason) at exit ``exit_index`` (``num_exits`` is the backbone's output);
        reason is "confident", "energy", "final" or "continue"."""
        if exit_index >= self.num_exits:
            return True, "final"
        return self.rule.decide(exit_index, confidence=float(self.confidence_of(logits)),
                                energy_available_j=energy_available_j,
                                energy_to_next_exit_j=self.segment_energy_j[exit_index + 1])

    def run(self, exit_logits: np.ndarray, final_output: np.ndarray,
            energy_j: float | np.ndarray | None = None) -> dict:
        """Apply the policy to a batch: ``exit_logits`` (K, n, classes), ``final_output``
        (n, classes), energy available per example (None: unlimited). Returns per example the
        exit taken (K = backbone output, -1 = not even exit 0 reachable), prediction (-1 when
        none) and energy used."""
        K, n = exit_logits.shape[0], exit_logits.shape[1]
        seg = np.asarray(self.segment_energy_j, np.float64)
        budget = np.full(n, np.inf) if energy_j is None else np.broadcast_to(
            np.asarray(energy_j, float), (n,)).copy()
        rule, cum = self.rule, np.cumsum(seg)
        # at exit point i the budget has paid for segments 0..i
        available = budget[None, :] - cum[:K, None]
        exit_taken = rule.first_exit(self.confidence_of(exit_logits), available, seg[1:])
        exit_taken[rule.short_of_energy(budget, seg[0])] = -1
        preds = np.full(n, -1)
        for i in range(K):
            m = exit_taken == i
            preds[m] = np.argmax(exit_logits[i][m], -1)
        preds[exit_taken == K] = np.argmax(final_output[exit_taken == K], -1)
        used = np.where(exit_taken >= 0, cum[np.clip(exit_taken, 0, K)], 0.0)
        return {"exit": exit_taken, "prediction": preds, "energy_j": used}

    def to_dict(self) -> dict:
        return {"format": "freeml-exit-policy", "version": POLICY_VERSION, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "ExitPolicy":
        if d.get("format") != "freeml-exit-policy" or d.get("version") != POLICY_VERSION:
            raise ValueError(f"not a freeml exit policy of version {POLICY_VERSION}: "
                             f"format {d.get('format')!r} version {d.get('version')!r}")
        return cls(thresholds=[None if t is None else float(t) for t in d["thresholds"]],
                   segment_energy_j=[float(e) for e in d["segment_energy_j"]],
                   confidence=d.get("confidence", "max_softmax"), device=d.get("device"),
                   meta=d.get("meta", {}))

    @classmethod
    def from_json(cls, text: str) -> "ExitPolicy":
        return cls.from_dict(json.loads(text))


def _summary(policy: ExitPolicy, z: np.ndarray, final: np.ndarray, y: np.ndarray) -> dict:
    r = policy.run(z, final)
    K = z.shape[0]
    full = float(np.sum(policy.segment_energy_j))
    return {"accuracy": float(np.mean(r["prediction"] == y)),
            "mean_exit_depth": float(np.mean(r["exit"])),
            "exit_histogram": [int(np.sum(r["exit"] == i)) for i in range(K + 1)],
            "mean_energy_j": float(np.mean(r["energy_j"])),
            "mean_cost_fraction": float(np.mean(r["energy_j"]) / full)}


def _candidates(conf: np.ndarray, limit: int = 2000) -> np.ndarray:
    """Thresholds worth trying: the confidence values seen (their quantiles if there are many)."""
    values = np.unique(conf)
    if len(values) > limit:
        values = np.unique(np.quantile(values, np.linspace(0, 1, limit), method="lower"))
    return values


def calibrate_thresholds(exit_model, val_data: tuple[np.ndarray, np.ndarray], *,
                         target_accuracy: float | None = None, target_cost: float | None = None,
                         confidence: str = "max_softmax",
                         device: str | devices.DeviceProfile = "msp430fr5994",
                         costs: Sequence[SegmentCost] | None = None) -> ExitPolicy:
    """One confidence threshold for all exit points (as SDN does), chosen on validation data
    with unlimited energy, for one of:

    - ``target_accuracy``: the cheapest threshold (lowest mean cost) whose overall accuracy
      reaches the target (no early exit by confidence if none does);
    - ``target_cost``: the most accurate threshold whose mean cost, as a fraction of running
      every segment, stays within the target.
    """
    if (target_accuracy is None) == (target_cost is None):
        raise ValueError("give exactly one of target_accuracy and target_cost")
    x, y = val_data
    costs = list(costs) if costs is not None else segment_costs(exit_model, device)
    dev_name = devices.get(device).name
    z, final = exit_model.predict_all(x)
    K = z.shape[0]
    policy = ExitPolicy([None] * K, [c.energy_j for c in costs], confidence, dev_name)
    conf = policy.confidence_of(z)                                   # (K, n)
    right = np.concatenate([np.argmax(z, -1) == y, (np.argmax(final, -1) == y)[None]])
    cum = np.cumsum(policy.segment_energy_j) / np.sum(policy.segment_energy_j)
    best, best_key = None, None
    for t in _candidates(conf):
        # unlimited energy: the confidence rule alone
        exit_at = StopRule([float(t)] * K, energy_margin=None).first_exit(conf)
        acc = float(np.mean(right[exit_at, np.arange(len(y))]))
        cost = float(np.mean(cum[exit_at]))
        if target_accuracy is not None:
            key = (acc >= target_accuracy, -cost, acc)
        else:
            key = (cost <= target_cost, acc, -cost)
        if best_key is None or key > best_key:
            best, best_key = float(t), key
    if best_key is not None and best_key[0]:
        policy.thresholds = [best] * K
    target = {"target_accuracy": target_accuracy} if target_accuracy is not None else {"target_cost": target_cost}
    policy.meta = {**target, "target_met_on_validation": bool(best_key and best_key[0]),
                   "validation": _summary(policy, z, final, y),
                   "segments": [asdict(c) for c in costs]}
    return policy


def evaluate_policy(policy: ExitPolicy, exit_model, test_data: tuple[np.ndarray, np.ndarray]) -> dict:
    """Accuracy, mean exit depth (K = backbone output), exit histogram and mean cost of the
    policy on test data (unlimited energy: confidence decides)."""
    x, y = test_data
    z, final = exit_model.predict_all(x)
    return _summary(policy, z, final, y)
