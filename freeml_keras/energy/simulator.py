"""Event-driven simulation of intermittent inference on harvested energy.

The device: a harvester charges a capacitor (``capacitor.Capacitor``); a supervisor powers the
MCU up when the voltage reaches ``v_on`` and cuts it off at ``v_off``. The MCU draws constant
power (the device profile's figures at its nominal voltage, behind a regulator):

- running: ``active_power_w`` (``energy_per_cycle_j`` times the clock); an NVM commit adds active
  time of ``nvm_write_ns_per_word`` per ``word_bytes`` written;
- powered but idle (waiting for an input): ``sleep_power_w``;
- cut off, waiting for ``v_on`` ("charging"): ``charging_power_w``, by default also the sleep
  power (the brief of issue 8; pass 0 for a supervisor that holds the MCU without current). An
  empty capacitor gives a load only what is harvested.

The inference, as the runtime of issue 7 executes it, is a ``Program``: a list of atomic
``Step`` s, each a number of cycles followed by a commit of some NVM bytes. A step that reaches
``v_off`` before its commit ends is lost; after the capacitor recharges to ``v_on`` the MCU
restarts and runs the step again from its start. Every power-on costs a restart (reset to the
first resumed unit of work), run at active power before the first step that follows it
(``Program.resume_cycles``; by default the warm restart measured for the device on the
emulators, :func:`freeml_keras.costs.restart_cycles`: 1,929 cycles on the MSP430FR5994; 0 for
free restarts). A power-on while idle is paid when the next step runs; the MCU that is on when a
simulation starts (``v_start=None``) has already booted.
When a step that ends at an exit point commits, a stop decider (``policy``) decides whether to
answer now: usually the stop rule, :class:`freeml_keras.exits.StopRule`; any object with
``should_stop(ctx)``, or a callable of the ``ExitContext``, will do.

Events only: the time to the next threshold crossing (``v_off`` while running, ``v_on`` while
charging) or to the next change of harvested power is solved in closed form, so the cost of a
simulation is proportional to the number of events and trace segments crossed, not to time.

Inputs are served in arrival order; one that arrives during an inference waits for it (its
latency counts from its arrival). Between inferences the MCU sleeps.

Termination: a capacitor that cannot reach ``v_on`` (its leakage and the off-state draw hold it
below ``v_on`` even at the harvester's highest power; a constant or ended harvest that settles
below ``v_on``; a looping trace over one pass of which the voltage does not rise, or over whose
passes it converges, geometrically with resistive leakage, to a limit below ``v_on``; no ``v_on``
within ``max_charge_periods`` passes of the trace), or a step that one charge cannot
complete (statically: its energy at the trace's highest power exceeds the capacitor's; or
``max_consecutive_failures`` failures of one step in a row) ends the simulation with a result
marked ``completed=False`` and the reason, for that inference and every later one.

``PowerSupply`` is the capacitor+harvester state with ``run_step(cycles, nvm_bytes) -> bool``
(True: completed and committed; False: power failed, the step is lost), ``charge()`` and
``wait_until(t)``; it can drive the host runtime's energy hook step by step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol, Sequence, Union, runtime_checkable

import numpy as np

from freeml_keras import devices
from freeml_keras.energy.capacitor import Capacitor
from freeml_keras.energy.harvester import Harvester

__all__ = ["Step", "Program", "ExitContext", "StopDecider", "NeverCompletes", "Ledger",
           "PowerSupply", "InferenceResult", "SimulationResult", "Simulator",
           "periodic_arrivals"]


class NeverCompletes(RuntimeError):
    """The inference cannot finish on this harvester and capacitor; the message says why."""


# -- the program --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """An atomic unit of work: ``cycles`` of computation, then a commit writing ``nvm_bytes``.

    ``exit_index`` marks a step after whose commit exit point ``exit_index`` is reached.
    """
    cycles: int
    nvm_bytes: int = 0
    exit_index: int | None = None

    def __post_init__(self) -> None:
        if self.cycles < 0 or self.nvm_bytes < 0:
            raise ValueError(f"step cycles and bytes must be >= 0, got {self.cycles}, "
                             f"{self.nvm_bytes}")


@dataclass(frozen=True)
class Program:
    """An inference as the runtime executes it.

    The last step is the final exit (the backbone's answer); earlier steps may mark intermediate
    exits, numbered 0, 1, ... in order; the final exit's index is one more than the last
    intermediate one. ``resume_cycles``: the restart run at every power-on, before the step that
    follows it (after each power failure); None (the default): the warm restart measured for the
    device the program is simulated on (:func:`freeml_keras.costs.restart_cycles`), 0: restarts
    are free.
    """
    steps: tuple[Step, ...]
    resume_cycles: int | None = None
    name: str = "program"

    def __post_init__(self) -> None:
        steps = tuple(s if isinstance(s, Step) else Step(*s) for s in self.steps)
        object.__setattr__(self, "steps", steps)
        if not steps:
            raise ValueError(f"program {self.name!r} has no steps")
        exits = [(i, s.exit_index) for i, s in enumerate(steps) if s.exit_index is not None]
        for k, (i, e) in enumerate(exits):
            if e != k:
                raise ValueError(f"program {self.name!r}: step {i} has exit {e}, expected exit {k} "
                                 f"(exits are numbered 0, 1, ... in order)")
        if not exits or exits[-1][0] != len(steps) - 1:
            raise ValueError(f"program {self.name!r}: the last step must carry the final exit "
                             f"(the next exit index after the intermediate ones)")
        if self.resume_cycles is not None and self.resume_cycles < 0:
            raise ValueError(f"resume cycles must be >= 0, got {self.resume_cycles}")

    @property
    def num_exits(self) -> int:
        """Number of exits including the final one."""
        return self.steps[-1].exit_index + 1

    @property
    def total_cycles(self) -> int:
        return sum(s.cycles for s in self.steps)

    @property
    def total_nvm_bytes(self) -> int:
        return sum(s.nvm_bytes for s in self.steps)

    @property
    def largest_step(self) -> Step:
        return max(self.steps, key=lambda s: s.cycles)


# -- exit decisions -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ExitContext:
    """What a stop decider sees at an intermediate exit point (the runtime can know all of it:
    the stored energy from the capacitor voltage, the costs from the model's cost table)."""
    exit_index: int
    num_exits: int
    example: int
    energy_available_j: float       # stored energy above v_off (what this charge still holds)
    energy_to_next_exit_j: float    # active energy of the steps up to the next exit, commits included
    cycles_to_next_exit: int
    confidence: float | None        # confidence of the answer at this exit, if given
    time_since_arrival_s: float
    power_failures: int


@runtime_checkable
class StopDecider(Protocol):
    """Decides at an exit point whether to answer now (True) or go on; the stop rule
    (:class:`freeml_keras.exits.StopRule`) is one."""
    def should_stop(self, ctx: ExitContext) -> bool: ...


DeciderLike = Union[StopDecider, Callable[[ExitContext], bool], None]


def _decider(policy: DeciderLike) -> Callable[[ExitContext], bool] | None:
    if policy is None:
        return None
    if isinstance(policy, StopDecider):
        return policy.should_stop
    if callable(policy):
        return policy
    raise TypeError(f"a stop decider needs should_stop(ctx) or must be callable, got {policy!r}")


# -- the power supply ---------------------------------------------------------------------------
@dataclass
class Ledger:
    """Energy totals in J since the supply was created."""
    harvested_j: float = 0.0
    consumed_j: float = 0.0     # drawn by the MCU in all states
    active_j: float = 0.0       # of which: running (steps attempted, commits, resumes)
    leaked_j: float = 0.0
    spilled_j: float = 0.0      # harvested but thrown away at v_max


class PowerSupply:
    """Capacitor + harvester + MCU power states at a point in time, advanced by events."""

    def __init__(self, harvester: Harvester, capacitor: Capacitor | None = None,
                 device: str | devices.DeviceProfile = "msp430fr5994", *, t0: float = 0.0,
                 v0: float | None = None, charging_power_w: float | None = None,
                 max_charge_periods: int = 50, record: bool = False) -> None:
        self.harvester = harvester
        self.capacitor = capacitor or Capacitor()
        self.device = devices.get(device)
        cap = self.capacitor
        self.t = float(t0)
        self.v = cap.v_on if v0 is None else float(v0)
        if not 0 <= self.v <= cap.v_max:
            raise ValueError(f"initial voltage {self.v} V outside [0, v_max={cap.v_max}] V")
        self.on = self.v >= cap.v_on if v0 is not None else True
        self.active_power_w = self.device.active_power_w
        self.sleep_power_w = self.device.sleep_power_w
        self.charging_power_w = (self.sleep_power_w if charging_power_w is None
                                 else float(charging_power_w))
        self.max_charge_periods = max_charge_periods
        self.ledger = Ledger()
        self.stored_start_j = cap.energy(self.v)
        self.failures = 0
        self.power_ons = 0           # off -> on switches (each costs the MCU a restart)
        self.intervals = 0           # constant-power intervals integrated (a measure of work)
        # (time, voltage) at the start and at the end of every interval, when recording: the
        # voltage is monotone within an interval, so these points bound it.
        self.record: list[tuple[float, float]] | None = [(self.t, self.v)] if record else None
        self.last_fraction = 1.0     # fraction of the last run_step's time done (1 if completed)
        self._clock = float(self.device.clock_hz)
        self._s_per_byte = self.device.nvm_write_ns_per_word * 1e-9 / self.device.word_bytes

    # -- costs ---------------------------------------------------------------------------------
    def step_time(self, cycles: float, nvm_bytes: int = 0) -> float:
        """Active time of a step: its cycles at the clock plus the NVM write time of its commit."""
        words = -(-int(nvm_bytes) // self.device.word_bytes)
        return cycles / self._clock + words * self.device.nvm_write_ns_per_word * 1e-9

    def step_energy(self, cycles: float, nvm_bytes: int = 0) -> float:
        """Energy of a step at active power."""
        return self.active_power_w * self.step_time(cycles, nvm_bytes)

    @property
    def stored_j(self) -> float:
        return self.capacitor.energy(self.v)

    def energy_available(self) -> float:
        """Energy the MCU can still use before the supply is cut (0 when off)."""
        if not self.on:
            return 0.0
        return max(self.capacitor.energy(self.v) - self.capacitor.energy(self.capacitor.v_off), 0.0)

    # -- the event loop ------------------------------------------------------------------------
    def _advance(self, p_load: float, t_stop: float, v_down: float | None,
                 v_up: float | None) -> str | None:
        """Run at constant load until ``t_stop`` or a threshold event ("down"/"up")."""
        harvester, cap, ledger = self.harvester, self.capacitor, self.ledger
        while self.t < t_stop:
            p_h, seg_end = harvester.segment(self.t)
            end = seg_end if seg_end < t_stop else t_stop
            dt = end - self.t
            if self.v <= 0.0 and p_h <= p_load and v_down is None:
                # Empty capacitor: the load gets what is harvested, the voltage stays at 0.
                if math.isinf(dt):
                    raise NeverCompletes(
                        f"the harvester gives {p_h:.3g} W from t={self.t:.6g} s on (constant, or "
                        f"the trace has ended), not more than "
                        f"the off-state draw of {p_load:.3g} W: the capacitor stays empty")
                ledger.harvested_j += p_h * dt
                ledger.consumed_j += p_h * dt
                self.t = end
                if self.record is not None:
                    self.record.append((self.t, self.v))
                continue
            ev = cap.evolve(self.v, p_h - p_load, dt, v_down=v_down, v_up=v_up)
            self.intervals += 1
            if ev.event is None and math.isinf(dt):
                raise NeverCompletes(
                    f"the harvester gives {p_h:.3g} W from t={self.t:.6g} s on (constant, or the "
                    f"trace has ended), and with a draw of {p_load:.3g} W and the capacitor's "
                    f"leakage the voltage settles at {ev.v:.4g} V, below v_on={cap.v_on} V")
            ledger.harvested_j += p_h * ev.dt
            ledger.consumed_j += p_load * ev.dt
            ledger.leaked_j += ev.leaked_j
            ledger.spilled_j += ev.spilled_j
            self.v = ev.v
            if ev.event is not None:
                self.t = self.t + ev.dt if ev.dt < dt else end
                if self.record is not None:
                    self.record.append((self.t, self.v))
                if ev.event == "down" and v_down is None:
                    continue            # reached 0 V: the starved branch above takes over
                return ev.event
            self.t = end
            if self.record is not None:
                self.record.append((self.t, self.v))
        return None

    def run_step(self, cycles: float, nvm_bytes: int = 0) -> bool:
        """Run one atomic step and its commit. True if it committed; False if the supply was cut
        first (the step is lost; the MCU is off at ``v_off``; ``last_fraction`` tells how much
        of the step's time had passed)."""
        if not self.on:
            raise RuntimeError("run_step with the MCU off: call charge() first")
        duration = self.step_time(cycles, nvm_bytes)
        t0 = self.t
        event = self._advance(self.active_power_w, t0 + duration, self.capacitor.v_off, None)
        self.ledger.active_j += self.active_power_w * (self.t - t0)
        if event == "down":
            self.on = False
            self.failures += 1
            self.last_fraction = (self.t - t0) / duration if duration > 0 else 0.0
            return False
        self.last_fraction = 1.0
        return True

    def charge(self) -> float:
        """With the MCU off, wait until the capacitor reaches ``v_on`` and the MCU powers up;
        return the time waited. Raises ``NeverCompletes`` when that cannot happen."""
        t_start = self.t
        if self.on:
            return 0.0
        cap = self.capacitor
        period = self.harvester.period_s
        p_top = self.harvester.max_power_w - self.charging_power_w
        if cap.equilibrium_voltage(p_top) < cap.v_on and self.v < cap.v_on:
            raise NeverCompletes(
                f"even at the harvester's highest power ({self.harvester.max_power_w:.3g} W) the "
                f"capacitor's leakage and the off-state draw of {self.charging_power_w:.3g} W hold "
                f"it below {cap.equilibrium_voltage(p_top):.4g} V, short of v_on={cap.v_on} V")
        if math.isinf(period):
            self._advance(self.charging_power_w, math.inf, None, cap.v_on)
        else:
            v_first = self.v
            e_on = cap.energy(cap.v_on)
            gains: list[float] = []
            for _ in range(self.max_charge_periods):
                e_before = self.stored_j
                if self._advance(self.charging_power_w, self.t + period, None, cap.v_on) == "up":
                    break
                gain = self.stored_j - e_before
                if gain <= 0.0:
                    raise NeverCompletes(
                        f"over one pass of the trace ({period:.6g} s from t={self.t - period:.6g} s)"
                        f" the capacitor went from {cap.voltage(e_before):.4g} V to {self.v:.4g} V "
                        f"without reaching v_on={cap.v_on} V: the harvested power (mean "
                        f"{self.harvester.energy(self.t - period, self.t) / period:.3g} W) does not "
                        f"cover the leakage and the off-state draw of {self.charging_power_w:.3g} W")
                gains.append(gain)
                # With resistive (or no) leakage and no clamp, the stored energy after one pass
                # is an affine function of the energy before it, so the gains per pass shrink
                # by a constant ratio and their sum has a closed form: when three passes agree
                # on the ratio and the limit is below v_on, it will never get there. (Other
                # cases run to max_charge_periods.)
                if len(gains) >= 3 and cap.leak_current_a is None:
                    r1, r2 = gains[-2] / gains[-3], gains[-1] / gains[-2]
                    if r1 < 1.0 and r2 < 1.0 and abs(r2 - r1) <= 1e-6 * r2:
                        limit = self.stored_j + gain * r2 / (1.0 - r2)
                        if limit < e_on * (1 - 1e-6):
                            raise NeverCompletes(
                                f"passing the trace ({period:.6g} s) over and over, the capacitor "
                                f"approaches {cap.voltage(limit):.4g} V, below v_on={cap.v_on} V "
                                f"(after {len(gains)} passes: {self.v:.4g} V): the harvested power"
                                f" does not cover the leakage and the off-state draw of "
                                f"{self.charging_power_w:.3g} W")
            else:
                raise NeverCompletes(
                    f"the capacitor did not reach v_on={cap.v_on} V within {self.max_charge_periods}"
                    f" passes of the trace ({self.max_charge_periods * period:.6g} s); it rose from "
                    f"{v_first:.4g} V to {self.v:.4g} V")
        self.on = True
        self.power_ons += 1
        return self.t - t_start

    def wait_until(self, t: float) -> None:
        """Stay idle until time ``t``: asleep while powered, charging while off (the supervisor
        switches at ``v_off``/``v_on``)."""
        cap = self.capacitor
        while self.t < t:
            if self.on:
                if self._advance(self.sleep_power_w, t, cap.v_off, None) == "down":
                    self.on = False
            else:
                if self._advance(self.charging_power_w, t, None, cap.v_on) == "up":
                    self.on = True
                    self.power_ons += 1

    def balance_error_j(self) -> float:
        """harvested - consumed - leaked - spilled - (stored now - stored at start); 0 if the
        books balance."""
        lg = self.ledger
        return (lg.harvested_j - lg.consumed_j - lg.leaked_j - lg.spilled_j
                - (self.stored_j - self.stored_start_j))


# -- results ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InferenceResult:
    """One inference: when it arrived, started, answered, at which exit, at what cost."""
    index: int
    example: int
    arrival_s: float
    start_s: float
    end_s: float                    # time of the answer (nan if it never completes)
    exit_index: int                 # -1 if it never completes
    completed: bool
    latency_s: float                # end - arrival (inf if it never completes)
    energy_j: float                 # drawn by the MCU from start to answer (all states)
    active_energy_j: float          # of which while running
    power_failures: int
    cycles: int                     # cycles executed, re-executions and resumes included
    reexecuted_cycles: int          # cycles of attempts lost to power failures
    resume_cycles: int              # cycles of restarts (one per power-on)
    nvm_bytes: int                  # NVM bytes committed
    reason: str = ""                # why it never completes


@dataclass
class SimulationResult:
    """The inferences of one run and the energy books of the whole run."""
    program: str
    harvester: str
    inferences: list[InferenceResult]
    ledger: Ledger
    stored_start_j: float
    stored_end_j: float
    duration_s: float
    never_completes: str = ""
    intervals: int = 0              # constant-power intervals integrated
    voltage: np.ndarray | None = None   # (points, 2): time s, capacitor voltage, if recorded
    restart_cycles: int = 0         # charged at every power-on (the program's resume_cycles)

    def array(self, name: str) -> np.ndarray:
        """One field of every inference as an array (e.g. ``"latency_s"``)."""
        return np.array([getattr(r, name) for r in self.inferences])

    @property
    def balance_error_j(self) -> float:
        lg = self.ledger
        return (lg.harvested_j - lg.consumed_j - lg.leaked_j - lg.spilled_j
                - (self.stored_end_j - self.stored_start_j))

    def to_dict(self) -> dict:
        return {"program": self.program, "harvester": self.harvester,
                "ledger": asdict(self.ledger), "stored_start_j": self.stored_start_j,
                "stored_end_j": self.stored_end_j, "duration_s": self.duration_s,
                "never_completes": self.never_completes, "intervals": self.intervals,
                "restart_cycles": self.restart_cycles, "inferences": [asdict(r) for r in self.inferences]}


def periodic_arrivals(n: int, period_s: float, start_s: float = 0.0) -> np.ndarray:
    """``n`` input arrival times, one every ``period_s`` seconds from ``start_s``."""
    return start_s + period_s * np.arange(n, dtype=np.float64)


# -- the simulator ------------------------------------------------------------------------------
@dataclass
class Simulator:
    """Runs programs over a harvester and capacitor for a device (see the module docstring).

    Inputs are served in arrival order: an input that arrives while the previous inference is
    running waits (its latency counts from its arrival).
    """
    harvester: Harvester
    capacitor: Capacitor = field(default_factory=Capacitor)
    device: str | devices.DeviceProfile = "msp430fr5994"
    v_start: float | None = None            # initial voltage; None: v_on, MCU on
    charging_power_w: float | None = None   # draw while off; None: the device's sleep power
    max_consecutive_failures: int = 1000
    max_charge_periods: int = 50
    record_voltage: bool = False            # keep the capacitor voltage at every event (plots)

    def supply(self) -> PowerSupply:
        """A fresh power supply in the initial state."""
        return PowerSupply(self.harvester, self.capacitor, self.device, v0=self.v_start,
                           charging_power_w=self.charging_power_w,
                           max_charge_periods=self.max_charge_periods,
                           record=self.record_voltage)

    def restart_cycles(self, program: Program) -> int:
        """The cycles charged at every power-on for ``program``: its ``resume_cycles``, or when
        None the warm restart measured for this simulator's device
        (:func:`freeml_keras.costs.restart_cycles`)."""
        if program.resume_cycles is not None:
            return int(program.resume_cycles)
        from freeml_keras import costs
        try:
            return costs.restart_cycles(self.device)
        except costs.CostTableError as e:
            raise costs.CostTableError(
                f"{e}; no measured restart for device {devices.get(self.device).name!r}: give the "
                f"program resume_cycles (0: restarts free)") from None

    def check_steps(self, program: Program) -> str:
        """Why some step can never complete on one charge (empty string if none is known to)."""
        sup = self.supply()
        cap = self.capacitor
        budget = cap.energy(cap.v_max) - cap.energy(cap.v_off)
        p_h = self.harvester.max_power_w
        restart = self.restart_cycles(program)
        for i, s in enumerate(program.steps):
            cycles = s.cycles + restart
            duration = sup.step_time(cycles, s.nvm_bytes)
            drain = (sup.active_power_w - p_h) * duration
            if drain > budget:
                return (f"step {i} ({cycles} cycles with the restart, {s.nvm_bytes} B committed) needs "
                        f"{sup.active_power_w * duration:.4g} J over {duration:.4g} s; even at the "
                        f"harvester's highest power ({p_h:.3g} W) it drains {drain:.4g} J, more "
                        f"than a full capacitor holds above v_off ({budget:.4g} J): split it into "
                        f"smaller atomic steps")
        return ""

    def run(self, program: Program, arrivals: Sequence[float], *, policy: DeciderLike = None,
            confidence: np.ndarray | None = None,
            examples: Sequence[int] | None = None) -> SimulationResult:
        """Simulate one inference of ``program`` per arrival time.

        ``policy`` decides at each intermediate exit point (a :class:`StopDecider`, e.g.
        :class:`freeml_keras.exits.StopRule`, or a callable of the :class:`ExitContext`; None:
        run every program to its end). ``confidence`` (examples x exits) is what it sees as
        ``ctx.confidence``; ``examples`` maps each arrival to an example (default: 0, 1, 2, ...).

        Example::

            from freeml_keras.energy import Constant, Program, Simulator, Step
            from freeml_keras.exits import StopRule
            program = Program((Step(2_000_000, 64, 0), Step(3_000_000, 64, 1)))
            res = Simulator(Constant(1e-4)).run(program, [0.0, 1.0], policy=StopRule())
            print([r.exit_index for r in res.inferences])
        """
        arrivals = np.asarray(arrivals, dtype=np.float64)
        if arrivals.ndim != 1 or np.any(np.diff(arrivals) < 0) or np.any(arrivals < 0):
            raise ValueError("arrivals must be a 1-D sequence of non-decreasing times >= 0")
        examples = (np.arange(len(arrivals)) if examples is None
                    else np.asarray(examples, dtype=np.int64))
        if examples.shape != arrivals.shape:
            raise ValueError(f"examples {examples.shape} and arrivals {arrivals.shape} differ")
        if confidence is not None:
            confidence = np.asarray(confidence, dtype=np.float64)
            if confidence.ndim != 2 or confidence.shape[1] != program.num_exits:
                raise ValueError(f"confidence must be (examples, {program.num_exits} exits), "
                                 f"got {confidence.shape}")
            if examples.size and examples.max() >= confidence.shape[0]:
                raise ValueError(f"example {examples.max()} has no confidence row "
                                 f"({confidence.shape[0]} rows)")
        decide = _decider(policy)
        sup = self.supply()
        steps = program.steps
        n_steps = len(steps)
        # Energy and cycles from after step i to the next exit (the decider's look-ahead).
        to_next_e = [0.0] * n_steps
        to_next_c = [0] * n_steps
        acc_e, acc_c = 0.0, 0
        for i in range(n_steps - 1, -1, -1):
            to_next_e[i], to_next_c[i] = acc_e, acc_c
            s = steps[i]
            if s.exit_index is not None:    # steps before i look ahead only as far as step i
                acc_e, acc_c = 0.0, 0
            acc_e += sup.step_energy(s.cycles, s.nvm_bytes)
            acc_c += s.cycles
        results: list[InferenceResult] = []
        restart = self.restart_cycles(program)
        never = self.check_steps(program)
        final = program.num_exits - 1
        seen_power_ons = sup.power_ons
        for j, (t_arr, ex) in enumerate(zip(arrivals.tolist(), examples.tolist())):
            if never:
                results.append(_not_completed(j, ex, t_arr, never))
                continue
            cycles = reexec = resumes = nvm = 0
            exit_index = final
            try:
                if sup.t < t_arr:
                    sup.wait_until(t_arr)
                t_start = sup.t
                consumed0, active0, failures0 = (sup.ledger.consumed_j, sup.ledger.active_j,
                                                 sup.failures)
                sup.charge()
                for i, s in enumerate(steps):
                    streak = 0
                    while True:
                        # a restart before the first step after each power-on
                        resume = restart if sup.power_ons != seen_power_ons else 0
                        seen_power_ons = sup.power_ons
                        attempt = s.cycles + resume
                        if sup.run_step(attempt, s.nvm_bytes):
                            cycles += attempt
                            resumes += resume
                            nvm += s.nvm_bytes
                            break
                        done = int(attempt * min(sup.last_fraction, 1.0))
                        cycles += done
                        reexec += done
                        resumes += min(resume, done)
                        streak += 1
                        if streak >= self.max_consecutive_failures:
                            need = sup.step_energy(attempt, s.nvm_bytes)
                            raise NeverCompletes(
                                f"step {i} ({s.cycles} cycles after a restart of {resume}, "
                                f"{need:.4g} J at active power) "
                                f"failed {streak} times in a row; one charge "
                                f"holds {self.capacitor.usable_energy_j:.4g} J above v_off: split it "
                                f"into smaller atomic steps or use a larger capacitor")
                        sup.charge()
                    e = s.exit_index
                    if e is not None and e != final and decide is not None:
                        ctx = ExitContext(
                            exit_index=e, num_exits=final + 1, example=ex,
                            energy_available_j=sup.energy_available(),
                            energy_to_next_exit_j=to_next_e[i], cycles_to_next_exit=to_next_c[i],
                            confidence=None if confidence is None else float(confidence[ex, e]),
                            time_since_arrival_s=sup.t - t_arr,
                            power_failures=sup.failures - failures0)
                        if decide(ctx):
                            exit_index = e
                            break
            except NeverCompletes as err:
                never = str(err)
                results.append(_not_completed(j, ex, t_arr, never))
                continue
            results.append(InferenceResult(
                index=j, example=ex, arrival_s=t_arr, start_s=t_start, end_s=sup.t,
                exit_index=exit_index, completed=True, latency_s=sup.t - t_arr,
                energy_j=sup.ledger.consumed_j - consumed0,
                active_energy_j=sup.ledger.active_j - active0,
                power_failures=sup.failures - failures0, cycles=cycles,
                reexecuted_cycles=reexec, resume_cycles=resumes, nvm_bytes=nvm))
        return SimulationResult(program=program.name, harvester=getattr(self.harvester, "name", ""),
                                inferences=results, ledger=sup.ledger,
                                stored_start_j=sup.stored_start_j, stored_end_j=sup.stored_j,
                                duration_s=sup.t, never_completes=never,
                                intervals=sup.intervals, restart_cycles=restart,
                                voltage=None if sup.record is None else np.array(sup.record))


def _not_completed(j: int, example: int, t_arr: float, reason: str) -> InferenceResult:
    return InferenceResult(index=j, example=example, arrival_s=t_arr, start_s=math.nan,
                           end_s=math.nan, exit_index=-1, completed=False, latency_s=math.inf,
                           energy_j=math.nan, active_energy_j=math.nan, power_failures=0,
                           cycles=0, reexecuted_cycles=0, resume_cycles=0, nvm_bytes=0,
                           reason=reason)
