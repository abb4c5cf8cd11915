"""Inference strategies compared on the same harvester, capacitor and inputs.

A strategy is a program (the steps the runtime executes, from an exit model's costs), a decision
rule at the exit points, the per-example correctness of the answer at each exit, and the memory
its exit mechanism takes. Four are defined:

- ``run_to_completion``: the backbone alone, no exit heads, always the final answer;
- ``branches_energy``: a separate classifier per exit point (its cost is run at every exit
  point reached), stopping when the stored energy will not reach the next exit;
- ``gnet_energy``: the shared gNet head (its per-exit cost is one W_i . p_i accumulation), same
  energy rule;
- ``gnet_anytime``: gNet, stopping at the first exit whose confidence reaches its threshold
  (optionally also on the energy rule).

The decision rule is the stop rule of the exits, :class:`freeml_keras.exits.StopRule` (its
energy half alone, its confidence half alone, or both).

Costs are plain numbers (``ExitCosts``): cycles per backbone segment between exit points, cycles
of the exit head at each exit point, NVM bytes, and the restart every power-on costs (by
default the one measured for the simulated device, :func:`freeml_keras.costs.restart_cycles`). They can come from the analytical cost model of
``freeml_keras.exits.policy`` or from measured cycle tables; nothing here depends on either.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np

from freeml_keras.energy.simulator import DeciderLike, Program, SimulationResult, Simulator, Step
from freeml_keras.exits.stop_rule import StopRule

__all__ = ["ExitCosts", "Strategy", "StrategyReport", "run_to_completion", "branches_energy",
           "gnet_energy", "gnet_anytime", "compare"]


# -- costs --------------------------------------------------------------------------------------
def _per_item(value: int | Sequence[int], n: int, what: str) -> list[int]:
    if isinstance(value, (int, np.integer)):
        return [int(value)] * n
    items = [int(v) for v in value]
    if len(items) != n:
        raise ValueError(f"{what}: expected {n} values, got {len(items)}")
    if any(v < 0 for v in items):
        raise ValueError(f"{what}: values must be >= 0, got {items}")
    return items


@dataclass(frozen=True)
class ExitCosts:
    """Execution costs of an exit model with K intermediate exit points.

    - ``segment_cycles``: K+1 backbone segments; exit point i follows segment i, the final answer
      follows the last segment.
    - ``head_cycles``: K exit-head costs, run after segment i at exit point i.
    - ``segment_nvm_bytes``: bytes each segment writes to NVM (its outputs, when activations live
      in NVM), spread over its atomic steps; ``head_nvm_bytes``: per head (its state update).
    - ``commit_bytes``: checkpoint record written by every atomic step's commit.
    - ``max_step_cycles``: segments longer than this are split into equal atomic steps (the
      runtime's checkpoint granularity); None keeps one step per segment.
    - ``resume_cycles``: the restart (reset to the first resumed unit of work) run at every
      power-on; None (the default): the warm restart measured for the device the program is
      simulated on (:func:`freeml_keras.costs.restart_cycles`); 0: restarts are free.
    """
    segment_cycles: Sequence[int]
    head_cycles: Sequence[int] | int = 0
    segment_nvm_bytes: Sequence[int] | int = 0
    head_nvm_bytes: Sequence[int] | int = 0
    commit_bytes: int = 0
    max_step_cycles: int | None = None
    resume_cycles: int | None = None

    def __post_init__(self) -> None:
        seg = ([] if isinstance(self.segment_cycles, (int, np.integer))
               else _per_item(self.segment_cycles, len(self.segment_cycles), "segment_cycles"))
        if not seg:
            raise ValueError("segment_cycles: need one value per backbone segment (at least 1)")
        k = len(seg) - 1
        object.__setattr__(self, "segment_cycles", tuple(seg))
        object.__setattr__(self, "head_cycles", tuple(_per_item(self.head_cycles, k, "head_cycles")))
        object.__setattr__(self, "segment_nvm_bytes",
                           tuple(_per_item(self.segment_nvm_bytes, k + 1, "segment_nvm_bytes")))
        object.__setattr__(self, "head_nvm_bytes",
                           tuple(_per_item(self.head_nvm_bytes, k, "head_nvm_bytes")))
        if self.max_step_cycles is not None and self.max_step_cycles < 1:
            raise ValueError(f"max_step_cycles must be >= 1, got {self.max_step_cycles}")
        if self.commit_bytes < 0 or (self.resume_cycles is not None and self.resume_cycles < 0):
            raise ValueError("commit_bytes and resume_cycles must be >= 0")

    @classmethod
    def from_dict(cls, d: Mapping) -> "ExitCosts":
        """From a plain mapping with the field names above (extra keys are an error)."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown cost fields {sorted(unknown)}; known: "
                             f"{sorted(cls.__dataclass_fields__)}")
        return cls(**dict(d))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def num_exit_points(self) -> int:
        """Intermediate exit points K (the final answer is exit K)."""
        return len(self.segment_cycles) - 1

    def _split(self, cycles: int, nvm_bytes: int) -> list[tuple[int, int]]:
        n = 1 if not self.max_step_cycles else max(1, math.ceil(cycles / self.max_step_cycles))
        c = [cycles // n + (1 if i < cycles % n else 0) for i in range(n)]
        b = [nvm_bytes // n + (1 if i < nvm_bytes % n else 0) for i in range(n)]
        return [(ci, bi + self.commit_bytes) for ci, bi in zip(c, b)]

    def program(self, *, heads: bool = True, exits: bool = True, name: str = "program") -> Program:
        """The runtime's steps: each segment (split to ``max_step_cycles``), then at each exit
        point its head (``heads``), marked as an exit (``exits``); the last step is the final."""
        steps: list[Step] = []
        k = self.num_exit_points
        for i in range(k + 1):
            parts = self._split(self.segment_cycles[i], self.segment_nvm_bytes[i])
            for ci, bi in parts[:-1]:
                steps.append(Step(ci, bi))
            ci, bi = parts[-1]
            if i == k:
                steps.append(Step(ci, bi, k if exits else 0))
            elif heads:
                steps.append(Step(ci, bi))
                steps.append(Step(self.head_cycles[i], self.head_nvm_bytes[i] + self.commit_bytes,
                                  i if exits else None))
            else:
                steps.append(Step(ci, bi, i if exits else None))
        return Program(tuple(steps), resume_cycles=self.resume_cycles, name=name)


# -- strategies ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Strategy:
    """A program, its decision rule (a stop decider, see :meth:`Simulator.run`), its per-exit
    correctness and the memory of its exits.

    ``correct`` is (examples, exits): whether the answer at each exit (the last column: the
    final answer) is right; ``confidence`` likewise, for confidence rules.
    """
    name: str
    program: Program
    correct: np.ndarray
    policy: DeciderLike = None
    confidence: np.ndarray | None = None
    memory_bytes: int = 0

    def __post_init__(self) -> None:
        correct = np.asarray(self.correct, dtype=bool)
        if correct.ndim == 1:
            correct = correct[:, None]
        if correct.ndim != 2 or correct.shape[1] != self.program.num_exits:
            raise ValueError(f"strategy {self.name!r}: correct must be (examples, "
                             f"{self.program.num_exits} exits), got {correct.shape}")
        object.__setattr__(self, "correct", correct)
        if self.confidence is not None:
            conf = np.asarray(self.confidence, dtype=np.float64)
            if conf.shape != correct.shape:
                raise ValueError(f"strategy {self.name!r}: confidence {conf.shape} and correct "
                                 f"{correct.shape} differ")
            object.__setattr__(self, "confidence", conf)

    @property
    def num_examples(self) -> int:
        return self.correct.shape[0]


def _as_2d(correct: np.ndarray, exits: int, what: str) -> np.ndarray:
    c = np.asarray(correct, dtype=bool)
    if c.ndim != 2 or c.shape[1] != exits:
        raise ValueError(f"{what}: correct must be (examples, {exits} exits), got {c.shape}")
    return c


def run_to_completion(costs: ExitCosts, correct: np.ndarray, *, memory_bytes: int = 0,
                      name: str = "no exit") -> Strategy:
    """The backbone alone: no heads, always the final answer. ``correct`` is (examples,) for
    the final answer or (examples, exits) (the last column is used)."""
    c = np.asarray(correct, dtype=bool)
    final = c if c.ndim == 1 else c[:, -1]
    program = costs.program(heads=False, exits=False, name=name)
    return Strategy(name, program, final[:, None], None, None, memory_bytes)


def branches_energy(costs: ExitCosts, correct: np.ndarray, *, memory_bytes: int = 0,
                    margin: float = 1.0, name: str = "branches + energy") -> Strategy:
    """Per-exit branches (``costs.head_cycles`` are the branch classifiers) with the energy rule."""
    program = costs.program(name=name)
    return Strategy(name, program, _as_2d(correct, program.num_exits, name),
                    StopRule(energy_margin=margin), None, memory_bytes)


def gnet_energy(costs: ExitCosts, correct: np.ndarray, *, memory_bytes: int = 0,
                margin: float = 1.0, name: str = "gNet + energy") -> Strategy:
    """gNet (``costs.head_cycles``: one accumulation per exit point) with the energy rule."""
    program = costs.program(name=name)
    return Strategy(name, program, _as_2d(correct, program.num_exits, name),
                    StopRule(energy_margin=margin), None, memory_bytes)


def gnet_anytime(costs: ExitCosts, correct: np.ndarray, confidence: np.ndarray,
                 thresholds: Sequence[float], *, memory_bytes: int = 0,
                 energy: bool = False, margin: float = 1.0,
                 name: str = "gNet anytime") -> Strategy:
    """gNet stopping at the first exit whose confidence reaches ``thresholds[exit]`` (one per
    intermediate exit point; above 1: never by confidence); with ``energy=True`` also on the
    energy rule."""
    program = costs.program(name=name)
    if len(thresholds) < program.num_exits - 1:
        raise ValueError(f"{name}: need {program.num_exits - 1} thresholds, got {len(thresholds)}")
    policy = StopRule(tuple(float(t) for t in thresholds), energy_margin=margin if energy else None)
    return Strategy(name, program, _as_2d(correct, program.num_exits, name), policy,
                    confidence, memory_bytes)


# -- comparison ---------------------------------------------------------------------------------
@dataclass
class StrategyReport:
    """Per-strategy figures over all inputs of one run (never-completed inputs count as wrong
    and are left out of latency, energy and failure figures)."""
    name: str
    harvester: str
    inputs: int
    completed: int
    accuracy: float
    exit_counts: list[int]                   # answers per exit (the last: the final answer)
    final_fraction: float                    # of the completed, answered at the final exit
    latency_s: dict[str, float]              # mean, p50, p90, p99, max
    energy_per_inference_j: float
    power_failures_per_inference: float
    reexecuted_cycles_per_inference: float
    cycles_per_inference: float
    nvm_bytes_per_inference: float
    memory_bytes: int
    never_completes: str = ""
    result: SimulationResult | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("result")
        return d


def _report(strategy: Strategy, res: SimulationResult) -> StrategyReport:
    done = [r for r in res.inferences if r.completed]
    n = len(res.inferences)
    right = sum(bool(strategy.correct[r.example, r.exit_index]) for r in done)
    counts = [0] * strategy.program.num_exits
    for r in done:
        counts[r.exit_index] += 1
    lat = np.array([r.latency_s for r in done])

    def mean(name: str) -> float:
        return float(np.mean([getattr(r, name) for r in done])) if done else math.nan

    latency = ({"mean": float(lat.mean()), "p50": float(np.percentile(lat, 50)),
                "p90": float(np.percentile(lat, 90)), "p99": float(np.percentile(lat, 99)),
                "max": float(lat.max())} if done else
               {k: math.inf for k in ("mean", "p50", "p90", "p99", "max")})
    return StrategyReport(
        name=strategy.name, harvester=res.harvester, inputs=n, completed=len(done),
        accuracy=right / n if n else math.nan, exit_counts=counts,
        final_fraction=counts[-1] / len(done) if done else math.nan, latency_s=latency,
        energy_per_inference_j=mean("energy_j"),
        power_failures_per_inference=mean("power_failures"),
        reexecuted_cycles_per_inference=mean("reexecuted_cycles"),
        cycles_per_inference=mean("cycles"), nvm_bytes_per_inference=mean("nvm_bytes"),
        memory_bytes=strategy.memory_bytes, never_completes=res.never_completes, result=res)


def compare(strategies: Sequence[Strategy], simulator: Simulator, arrivals: Sequence[float], *,
            examples: Sequence[int] | None = None) -> dict[str, StrategyReport]:
    """Run every strategy from the same initial state on the same harvester and inputs.

    Input j (arriving at ``arrivals[j]``) is example ``examples[j]`` (default j).
    """
    names = [s.name for s in strategies]
    if len(set(names)) != len(names):
        raise ValueError(f"strategy names must differ, got {names}")
    arrivals = np.asarray(arrivals, dtype=np.float64)
    ex = np.arange(len(arrivals)) if examples is None else np.asarray(examples, dtype=np.int64)
    out: dict[str, StrategyReport] = {}
    for s in strategies:
        if ex.size and ex.max() >= s.num_examples:
            raise ValueError(f"strategy {s.name!r} has correctness for {s.num_examples} examples; "
                             f"input needs example {ex.max()}")
        res = simulator.run(s.program, arrivals, policy=s.policy, confidence=s.confidence,
                            examples=ex)
        out[s.name] = _report(s, res)
    return out
