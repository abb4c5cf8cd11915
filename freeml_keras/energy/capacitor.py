"""The storage capacitor of a harvesting front end, integrated exactly between events.

Model: an ideal capacitor ``C`` holding ``E = C V^2 / 2``, charged by the harvester's power and
discharged by a constant-power load (the MCU behind its regulator draws constant power whatever
the capacitor voltage) and by leakage, either a resistance ``R`` (power ``V^2 / R``) or a
constant current ``I`` (power ``I V``), or none. With a constant net power ``P`` (harvested minus
load) over an interval:

- no leakage:  ``dE/dt = P``: E linear in t.
- resistance:  ``dE/dt = P - 2E/(RC)``: ``E(t) = E_ss + (E0 - E_ss) exp(-t/tau)``, ``tau = RC/2``,
  ``E_ss = P tau``; the time to reach a given energy is a logarithm.
- current:     ``C V dV/dt = P - I V``: the time to go from V0 to V is explicit,
  ``t = C [-(V - V0)/I - (P/I^2) ln((P - I V)/(P - I V0))]`` (evaluated in a form without
  cancellation, also near the equilibrium ``P/I``); the voltage after a given time is the root
  of that monotone expression (``scipy.optimize.brentq``): the inverse needs Lambert's W near its
  branch point, which loses half the digits in the usual case of a small leak. Once the voltage
  has settled within 1e-12 of the equilibrium the same expression is solved in closed form for
  the distance to it.

The voltage is clamped at ``v_max`` (the front end's overvoltage protection: surplus power is
spilled) and at 0 V (leakage stops; a load that finds the capacitor empty gets only what is
harvested, see ``freeml_keras.energy.simulator``). Between those limits a segment is monotone, so
the first crossing of a threshold is the only one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from scipy.optimize import brentq

__all__ = ["Capacitor", "Evolution"]


class Evolution(NamedTuple):
    """What happened to the capacitor over one constant-power interval."""
    dt: float            # time actually advanced (shorter than asked when an event happened)
    v: float             # voltage at the end
    event: str | None    # "up": reached v_up; "down": reached v_down; None: ran the whole interval
    leaked_j: float      # energy lost to leakage
    spilled_j: float     # harvested energy thrown away at v_max


def _log1p_series_h(x: float) -> float:
    """h(x) = (-log1p(-x) - x) / x^2, so that -log1p(-x) = x + x^2 h(x); exact for any x < 1."""
    if abs(x) < 1e-3:
        return 0.5 + x * (1 / 3 + x * (0.25 + x * (0.2 + x / 6)))
    return (-math.log1p(-x) - x) / (x * x)


@dataclass(frozen=True)
class Capacitor:
    """Storage capacitor with turn-on/turn-off thresholds of the supply supervisor.

    The MCU is powered up when the voltage reaches ``v_on`` and cut off when it falls to
    ``v_off``. Leakage: ``leak_resistance_ohm`` or ``leak_current_a`` (at most one; neither means
    no leakage).
    """
    capacitance_f: float = 470e-6
    v_on: float = 3.3
    v_off: float = 1.8
    v_max: float = 3.6
    leak_resistance_ohm: float | None = 1e6
    leak_current_a: float | None = None

    def __post_init__(self) -> None:
        if not (self.capacitance_f > 0 and math.isfinite(self.capacitance_f)):
            raise ValueError(f"capacitance must be > 0, got {self.capacitance_f}")
        if not (0 < self.v_off < self.v_on <= self.v_max and math.isfinite(self.v_max)):
            raise ValueError(f"need 0 < v_off < v_on <= v_max, got v_off={self.v_off}, "
                             f"v_on={self.v_on}, v_max={self.v_max}")
        if self.leak_resistance_ohm is not None and self.leak_current_a is not None:
            raise ValueError("give leak_resistance_ohm or leak_current_a, not both")
        if self.leak_resistance_ohm is not None and not self.leak_resistance_ohm > 0:
            raise ValueError(f"leak resistance must be > 0 ohm, got {self.leak_resistance_ohm}")
        if self.leak_current_a is not None and not (self.leak_current_a >= 0
                                                    and math.isfinite(self.leak_current_a)):
            raise ValueError(f"leak current must be finite and >= 0, got {self.leak_current_a}")

    # -- energy and voltage -------------------------------------------------------------------
    def energy(self, v: float) -> float:
        """Stored energy in J at voltage ``v``."""
        return 0.5 * self.capacitance_f * v * v

    def voltage(self, e: float) -> float:
        """Voltage at stored energy ``e`` J."""
        return math.sqrt(max(2.0 * e / self.capacitance_f, 0.0))

    @property
    def usable_energy_j(self) -> float:
        """Energy of one charge between turn-on and turn-off: C (v_on^2 - v_off^2) / 2."""
        return self.energy(self.v_on) - self.energy(self.v_off)

    def leak_power(self, v: float) -> float:
        """Power lost to leakage at voltage ``v``."""
        if self.leak_resistance_ohm is not None:
            return v * v / self.leak_resistance_ohm
        if self.leak_current_a:
            return self.leak_current_a * v if v > 0 else 0.0
        return 0.0

    def equilibrium_voltage(self, p_net: float) -> float:
        """Voltage at which leakage takes all of a constant net power (inf without leakage)."""
        if p_net <= 0:
            return 0.0
        if self.leak_resistance_ohm is not None:
            return math.sqrt(p_net * self.leak_resistance_ohm)
        if self.leak_current_a:
            return p_net / self.leak_current_a
        return math.inf

    @property
    def _tau(self) -> float:
        """Energy time constant RC/2 of resistive leakage (inf without it)."""
        if self.leak_resistance_ohm is None:
            return math.inf
        return 0.5 * self.leak_resistance_ohm * self.capacitance_f

    @property
    def _current(self) -> float:
        return self.leak_current_a or 0.0

    # -- the ODE without clamps ---------------------------------------------------------------
    def time_to(self, v0: float, p_net: float, v: float) -> float:
        """Time for the voltage to go from ``v0`` to ``v`` under net power ``p_net`` (W, harvested
        minus load); ``inf`` if it never gets there. Ignores the clamps at 0 V and v_max."""
        if v == v0:
            return 0.0
        c = self.capacitance_f
        b = self._current
        if b > 0:
            u0 = p_net - b * v0           # C V dV/dt at v0
            if u0 == 0.0 or (u0 > 0) != (v > v0):
                return math.inf
            if p_net == 0.0:              # pure current drain: linear in V
                return c * (v0 - v) / b
            x = b * (v - v0) / u0
            if x > 0.5:
                # Near the equilibrium P/I: 1 - x = (P - I V)/u0 from P - I V directly; forming
                # it from x cancels (x carries the rounding of V - V0, which can be hundreds of
                # ulps of V when V0 >> V).
                rest = (p_net - b * v) / u0
                if rest <= 0.0:           # at or beyond the equilibrium
                    return math.inf
                h = (-math.log(rest) - x) / (x * x)
            else:
                h = _log1p_series_h(x)
            # t = C (V - V0) [V0/u0 + P (V - V0) h(x) / u0^2], no cancellation for small I.
            t = c * (v - v0) * (v0 / u0 + p_net * (v - v0) * h / (u0 * u0))
            return t if t >= 0 else math.inf
        e0, e1 = self.energy(v0), self.energy(v)
        tau = self._tau
        if math.isinf(tau):
            if p_net == 0.0 or (p_net > 0) != (e1 > e0):
                return math.inf
            return (e1 - e0) / p_net
        ess = p_net * tau
        d0 = e0 - ess
        if d0 == 0.0:
            return math.inf
        r = (e1 - e0) / d0                # E1 - Ess = (E0 - Ess)(1 + r) = (E0 - Ess) exp(-t/tau)
        if r >= 0.0 or r <= -1.0:
            return math.inf
        return -tau * math.log1p(r)

    def voltage_after(self, v0: float, p_net: float, dt: float) -> float:
        """Voltage after ``dt`` seconds at net power ``p_net``, ignoring the clamp at v_max
        (0 V once a draw has emptied the capacitor)."""
        if dt <= 0.0:
            return v0
        b = self._current
        if b > 0:
            u0 = p_net - b * v0
            if u0 == 0.0:
                return v0
            if p_net == 0.0:
                return v0 - b * dt / self.capacitance_f
            # Bracket the root of the monotone t(V) - dt between v0 and a bound from the leak
            # at v0 (the leak only grows with V when rising, shrinks when falling) or, nearer, a
            # hair (1e-12) short of the equilibrium voltage P/I that is never reached.
            e0 = self.energy(v0)
            end = self.voltage(e0 + u0 * dt) if u0 > 0 else self.voltage(max(e0 + u0 * dt, 0.0))
            hair = p_net / b * (1.0 - 1e-12 if u0 > 0 else 1.0 + 1e-12) if p_net > 0 else None
            settles = hair is not None and (hair < end if u0 > 0 else hair > end)
            if settles:
                end = hair
            if self.time_to(v0, p_net, end) <= dt:
                # Past the leak bound only rounding remains; past the hair, the voltage has
                # settled closer to P/I than the hair, by far (a few time constants later it is
                # within rounding of P/I): solved in closed form.
                return self._settled_voltage(v0, p_net, dt, end) if settles else end
            return brentq(lambda v: self.time_to(v0, p_net, v) - dt, min(v0, end), max(v0, end),
                          xtol=1e-15, rtol=1e-15, maxiter=200)
        tau = self._tau
        e0 = self.energy(v0)
        if math.isinf(tau):
            e1 = e0 + p_net * dt
        else:
            ess = p_net * tau
            e1 = e0 + (ess - e0) * -math.expm1(-dt / tau)
        return self.voltage(e1)           # 0 V once empty (voltage() clamps)

    def _settled_voltage(self, v0: float, p_net: float, dt: float, hair: float) -> float:
        """Voltage after ``dt`` under a leak current I when it ends closer to the equilibrium
        P/I (P > 0) than ``hair`` (P/I times 1 -/+ 1e-12). With q = (P - I V)/(P - I V0), the
        distance to the equilibrium as a fraction of the one at V0, the time of :meth:`time_to`
        reads ``t = C/I^2 [P ln(1/q) - (P - I V0)(1 - q)]``: solved for ln(1/q) by fixed-point
        iteration, whose contraction factor |P - I V0| q / P is below 1e-12 past the hair (it
        converges at once; an error in q moves V by that fraction of V - P/I, itself below 1e-12
        of P/I), then V = (P - q (P - I V0)) / I. The equilibrium is never reached: the result
        stays on the side of V0, at the nearest voltage whose time is finite."""
        b = self._current
        u0 = p_net - b * v0
        t_scaled = dt * b * b / self.capacitance_f
        q = 0.0
        for _ in range(3):
            q = math.exp(-(t_scaled + u0 * (1.0 - q)) / p_net)
        v = (p_net - q * u0) / b
        for _ in range(64):               # one or two ulps
            if self.time_to(v0, p_net, v) < math.inf:
                return v
            v = math.nextafter(v, v0)
        return hair

    # -- one interval with events and clamps --------------------------------------------------
    def evolve(self, v0: float, p_net: float, dt: float, *, v_down: float | None = None,
               v_up: float | None = None) -> Evolution:
        """Advance ``dt`` seconds at constant net power ``p_net``, stopping early when the voltage
        reaches ``v_down`` (falling) or ``v_up`` (rising). Without ``v_down`` the voltage stops at
        0 V (event "down" at 0 V so the caller can account the starved load); at ``v_max`` it
        stays, spilling the surplus."""
        floor = 0.0 if v_down is None else v_down
        slope = p_net - self.leak_power(v0)   # dE/dt at v0
        if slope > 0:
            if v_up is not None and v0 >= v_up:
                return Evolution(0.0, v0, "up", 0.0, 0.0)
            if v0 >= self.v_max:
                leak = self.leak_power(self.v_max)
                return Evolution(dt, self.v_max, None, leak * dt, (p_net - leak) * dt)
            if v_up is not None:
                t_up = self.time_to(v0, p_net, v_up)
                if t_up <= dt and t_up < math.inf:
                    return self._plain(v0, p_net, t_up, v_up, "up")
            t_max = self.time_to(v0, p_net, self.v_max)
            if t_max <= dt and t_max < math.inf:
                head = self._plain(v0, p_net, t_max, self.v_max, None)
                rest = dt - t_max
                leak = self.leak_power(self.v_max)
                return Evolution(dt, self.v_max, None, head.leaked_j + leak * rest,
                                 (p_net - leak) * rest)
        elif slope < 0:
            if v0 <= floor:
                return Evolution(0.0, v0, "down", 0.0, 0.0)
            t_down = self.time_to(v0, p_net, floor)
            if t_down <= dt and t_down < math.inf:
                return self._plain(v0, p_net, t_down, floor, "down")
        else:
            return Evolution(dt, v0, None, self.leak_power(v0) * dt, 0.0)
        v1 = self.voltage_after(v0, p_net, dt)
        # Rounding can put v1 a hair beyond a threshold that the exact solution only reaches
        # after dt; keep it on the right side.
        if slope > 0:
            v1 = min(v1, self.v_max, v_up if v_up is not None else math.inf)
        else:
            v1 = max(v1, floor)
        return self._plain(v0, p_net, dt, v1, None)

    def _plain(self, v0: float, p_net: float, dt: float, v1: float, event: str | None) -> Evolution:
        """An unclamped interval: leakage is what the net power did not put in the store."""
        leaked = p_net * dt - (self.energy(v1) - self.energy(v0))
        return Evolution(dt, v1, event, leaked, 0.0)
