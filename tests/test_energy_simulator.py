"""The event-driven simulator: hand-computed runs, energy books, termination, exit contexts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freeml_keras import costs, devices
from freeml_keras.energy import (Capacitor, Constant, NeverCompletes, PowerSupply, Program,
                                 Simulator, Step, Trace, periodic_arrivals, traces)

MSP = devices.get("msp430fr5994")
P_ACTIVE = MSP.active_power_w


def steps(n, cycles, nvm_bytes=0, resume_cycles=None):
    return Program(tuple(Step(cycles, nvm_bytes) for _ in range(n - 1))
                   + (Step(cycles, nvm_bytes, 0),), resume_cycles=resume_cycles, name=f"{n}x{cycles}")


def test_constant_harvest_above_the_draw_gives_no_failures_and_exact_latency():
    prog = steps(12, 3_000_000, 100)        # 36 M cycles: ~7 charges' worth of the capacitor
    sim = Simulator(Constant(1.2 * P_ACTIVE), Capacitor())
    res = sim.run(prog, periodic_arrivals(20, 5.0))
    assert all(r.completed for r in res.inferences)
    assert res.array("power_failures").sum() == 0 and res.array("reexecuted_cycles").sum() == 0
    commit_s = 12 * 50 * MSP.nvm_write_ns_per_word * 1e-9           # 100 B = 50 words per step
    np.testing.assert_allclose(res.array("latency_s"), 36e6 / MSP.clock_hz + commit_s, rtol=1e-12)
    np.testing.assert_allclose(res.array("active_energy_j"),
                               P_ACTIVE * (36e6 / MSP.clock_hz + commit_s), rtol=1e-12)
    assert (res.array("exit_index") == 0).all() and (res.array("nvm_bytes") == 1200).all()


MEASURED_RESTART = costs.restart_cycles(MSP)     # the measured warm restart (about 2,000 cycles)


@pytest.mark.parametrize("restart", [0, MEASURED_RESTART, 400_000])
def test_failures_and_latency_match_a_hand_computation(restart):
    # No leakage and constant power: energy is linear in time, so everything has a closed form.
    # Every power-on costs `restart` cycles before the next step (the MCU that is on at t=0 has
    # booted already).
    cap = Capacitor(leak_resistance_ohm=None)
    p_h, cycles, n = 1e-3, 1_000_000, 20
    d, d_r = cycles / MSP.clock_hz, restart / MSP.clock_hz
    drain, drain_r = (P_ACTIVE - p_h) * d, (P_ACTIVE - p_h) * d_r   # energy taken from the store
    k0 = math.floor(cap.usable_energy_j / drain)                  # steps in the first charge
    k1 = math.floor((cap.usable_energy_j - drain_r) / drain)      # in every later one
    failures = math.ceil((n - k0) / k1)
    last = n - k0 - (failures - 1) * k1                           # steps in the final on-period
    on_period = cap.usable_energy_j / (P_ACTIVE - p_h)            # v_on to v_off while running
    recharge = cap.usable_energy_j / (p_h - MSP.sleep_power_w)
    wasted = (on_period - k0 * d) + (failures - 1) * (on_period - d_r - k1 * d)
    res = Simulator(Constant(p_h), cap).run(steps(n, cycles, resume_cycles=restart), [0.0])
    r = res.inferences[0]
    assert (k0, k1, failures) == {0: (6, 6, 3), MEASURED_RESTART: (6, 6, 3),
                                  400_000: (6, 5, 3)}[restart] and r.power_failures == failures
    assert res.restart_cycles == restart and r.resume_cycles == failures * restart
    assert r.latency_s == pytest.approx(failures * (on_period + recharge) + d_r + last * d, rel=1e-10)
    assert r.reexecuted_cycles == pytest.approx(wasted * MSP.clock_hz, abs=failures)
    assert r.cycles == n * cycles + r.reexecuted_cycles + r.resume_cycles
    # The recorded voltage: down to v_off at each failure, up to v_on after each recharge.
    v = Simulator(Constant(p_h), cap, record_voltage=True).run(
        steps(n, cycles, resume_cycles=restart), [0.0]).voltage
    assert np.all(np.diff(v[:, 0]) >= 0) and v[:, 1].min() == cap.v_off
    assert np.sum(v[:, 1] == cap.v_off) == failures and np.sum(v[:, 1] == cap.v_on) == 1 + failures
    assert res.voltage is None
    # The same run driven step by step through the power supply's API.
    sup = PowerSupply(Constant(p_h), cap)
    outcomes = []
    seen = sup.power_ons
    for _ in range(n):
        while True:
            extra = restart if sup.power_ons != seen else 0
            seen = sup.power_ons
            if sup.run_step(cycles + extra):
                break
            outcomes.append("failed")
            sup.charge()
        outcomes.append("done")
    assert outcomes.count("failed") == failures and outcomes[k0] == "failed"
    assert sup.power_ons == failures
    assert sup.t == pytest.approx(r.end_s, rel=1e-12)


@pytest.mark.parametrize("leak", [dict(leak_resistance_ohm=3e5),
                                  dict(leak_resistance_ohm=None, leak_current_a=5e-6)])
def test_energy_books_balance_over_a_trace(leak):
    tr = traces.load("rf_walk")
    cap = Capacitor(**leak)
    prog = Program(tuple(Step(2_000_000, 64) for _ in range(9)) + (Step(1_000_000, 64, 0),),
                   resume_cycles=20_000)
    res = Simulator(tr, cap, v_start=0.5).run(prog, periodic_arrivals(60, 11.0, start_s=3.0))
    lg = res.ledger
    assert all(r.completed for r in res.inferences)
    assert res.array("power_failures").sum() > 10 and lg.spilled_j > 0 and lg.leaked_j > 0
    # harvested = consumed + delta stored + leaked + spilled, each side from its own sums
    assert abs(res.balance_error_j) <= 1e-9 * lg.harvested_j
    assert lg.harvested_j == pytest.approx(tr.energy(0.0, res.duration_s), rel=1e-9)
    # The MCU's active energy is its active power for the cycles run and the commit times.
    commit_s = 32 * MSP.nvm_write_ns_per_word * 1e-9
    active_s = res.array("cycles").sum() / MSP.clock_hz + 10 * len(res.inferences) * commit_s
    assert res.array("active_energy_j").sum() == pytest.approx(P_ACTIVE * active_s, rel=1e-4)
    assert res.array("energy_j").sum() <= lg.consumed_j


def test_books_balance_with_an_empty_capacitor_starving_its_load():
    # Harvest below the off-state draw for a while: the capacitor empties, the load gets only
    # what is harvested, then the harvest returns.
    tr = Trace.from_samples([0, 30, 60], [0.5e-6, 3e-3, 3e-3], duration_s=90.0)
    cap = Capacitor(leak_resistance_ohm=None, leak_current_a=2e-6)
    sim = Simulator(tr, cap, v_start=0.05, charging_power_w=2e-6)
    res = sim.run(steps(3, 1_000_000), [0.0, 100.0])
    assert all(r.completed for r in res.inferences)
    assert res.inferences[0].start_s == 0.0 and res.inferences[0].end_s > 30.0
    assert abs(res.balance_error_j) <= 1e-9 * res.ledger.harvested_j


def test_idle_supply_sleeps_turns_off_and_back_on():
    tr = Trace.from_samples([0, 100, 200], [0.0, 0.0, 2e-3], duration_s=300.0)
    cap = Capacitor(leak_resistance_ohm=2e5)
    sup = PowerSupply(tr, cap, charging_power_w=0.0)
    assert sup.on
    sup.wait_until(150.0)
    assert not sup.on and sup.v < cap.v_off             # drained by sleep and leakage, off
    sup.wait_until(250.0)
    assert sup.on and sup.v > cap.v_on                  # harvest returned: on again
    assert abs(sup.balance_error_j()) <= 1e-9 * sup.ledger.harvested_j


def test_capacitor_that_never_reaches_v_on_is_reported_not_looped():
    cap = Capacitor(leak_resistance_ohm=1e5)            # leaks 109 uW at 3.3 V
    res = Simulator(Constant(50e-6), cap, v_start=0.0).run(steps(2, 1000), [0.0, 1.0, 2.0])
    assert not any(r.completed for r in res.inferences)
    assert "hold it below 2.2" in res.never_completes and "short of v_on" in res.never_completes
    assert all(r.reason == res.never_completes and r.latency_s == math.inf
               for r in res.inferences)
    weak = Trace.from_samples([0, 1], [120e-6, 5e-6])      # enough at its peak, not on average
    res = Simulator(weak, cap, v_start=0.0).run(steps(2, 1000), [0.0])
    assert "the capacitor approaches 2.4" in res.never_completes
    brute = PowerSupply(weak, cap, v0=0.0)
    brute._advance(brute.charging_power_w, 200 * weak.period_s, None, cap.v_on)
    assert f"approaches {brute.v:.4g} V" in res.never_completes        # the limit is exact
    res = Simulator(weak, cap, v_start=3.0).run(steps(2, 1000), [0.0])
    assert "over one pass of the trace" in res.never_completes
    low = Capacitor(leak_resistance_ohm=None, leak_current_a=50e-6)    # 120 uW / 50 uA < 3.3 V
    res = Simulator(weak, low, v_start=0.0).run(steps(2, 1000), [0.0])
    assert "even at the harvester's highest power" in res.never_completes
    slow = Capacitor(leak_resistance_ohm=None, leak_current_a=20e-6)
    res = Simulator(weak, slow, v_start=0.0, max_charge_periods=30).run(steps(2, 1000), [0.0])
    assert "within 30 passes of the trace" in res.never_completes
    ended = Trace.from_samples([0, 1], [1e-3, 1e-3], loop=False)
    res = Simulator(ended, cap, v_start=0.0).run(steps(2, 1000), [0.0])
    assert "trace has ended" in res.never_completes and "stays empty" in res.never_completes
    res = Simulator(ended, cap, v_start=0.0, charging_power_w=0.0).run(steps(2, 1000), [0.0])
    assert "trace has ended" in res.never_completes and "settles at 0 V" in res.never_completes
    with pytest.raises(NeverCompletes, match="highest power"):
        PowerSupply(Constant(0.0), cap, v0=0.0, charging_power_w=1e-6).charge()


def test_step_larger_than_a_charge_is_reported():
    cap = Capacitor()
    big = steps(2, 200_000_000)                          # 70 mJ in one atomic step
    res = Simulator(Constant(1e-3), cap).run(big, [0.0])
    assert not res.inferences[0].completed and "split it into smaller atomic steps" in \
        res.never_completes and "step 0" in res.never_completes
    # A short burst above the active power defeats the static check; the retries are bounded.
    bursty = Trace.from_samples([0, 0.1], [10e-3, 1e-4], duration_s=10.0)
    sim = Simulator(bursty, cap, max_consecutive_failures=25)
    res = sim.run(steps(1, 120_000_000), [0.0])
    assert "failed 25 times in a row" in res.never_completes


def test_policy_sees_energy_costs_and_confidence():
    prog = Program((Step(1_000_000, 0), Step(10_000, 40, 0), Step(2_000_000, 0),
                    Step(10_000, 40, 1), Step(3_000_000, 0, 2)))
    seen = []

    def policy(ctx):
        seen.append(ctx)
        return ctx.exit_index == 1 and ctx.example == 1

    conf = np.array([[0.2, 0.5, 0.9], [0.3, 0.8, 0.95]])
    cap = Capacitor()
    sim = Simulator(Constant(10e-3), cap, v_start=cap.v_max)       # stays full: harvest > draw
    res = sim.run(prog, [0.0, 5.0], policy=policy, confidence=conf)
    assert [r.exit_index for r in res.inferences] == [2, 1]
    assert [(c.example, c.exit_index, c.confidence) for c in seen] == \
        [(0, 0, 0.2), (0, 1, 0.5), (1, 0, 0.3), (1, 1, 0.8)]
    sup = PowerSupply(Constant(0.0))
    assert seen[0].energy_to_next_exit_j == pytest.approx(sup.step_energy(2_010_000, 40))
    assert seen[1].energy_to_next_exit_j == pytest.approx(sup.step_energy(3_000_000, 0))
    assert seen[0].cycles_to_next_exit == 2_010_000 and seen[0].num_exits == 3
    assert seen[0].energy_available_j == pytest.approx(cap.energy(cap.v_max) - cap.energy(cap.v_off))


def test_bad_programs_and_inputs_are_refused():
    with pytest.raises(ValueError, match="no steps"):
        Program(())
    with pytest.raises(ValueError, match="last step must carry the final exit"):
        Program((Step(10, 0, 0), Step(10)))
    with pytest.raises(ValueError, match="expected exit 0"):
        Program((Step(10, 0, 1), Step(10, 0, 2)))
    with pytest.raises(ValueError, match=">= 0"):
        Step(-1)
    sim = Simulator(Constant(1e-3))
    with pytest.raises(ValueError, match="non-decreasing"):
        sim.run(steps(1, 10), [2.0, 1.0])
    with pytest.raises(ValueError, match="confidence must be"):
        sim.run(steps(1, 10), [0.0], confidence=np.zeros((1, 3)))
    with pytest.raises(ValueError, match="initial voltage"):
        PowerSupply(Constant(1e-3), v0=5.0)
    with pytest.raises(RuntimeError, match="charge"):
        PowerSupply(Constant(1e-3), v0=1.0).run_step(10)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), leak=st.sampled_from(["r", "i", "none"]),
       loop=st.booleans(), charging=st.sampled_from([None, 0.0, 5e-6]))
def test_random_runs_balance_and_respect_the_physics(seed, leak, loop, charging):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    times = np.cumsum(rng.uniform(0.01, 3.0, n))
    power = rng.choice([0.0, 1.0], n) * rng.uniform(0, 8e-3, n)
    tr = Trace.from_samples(times, power, loop=loop)
    cap = Capacitor(capacitance_f=float(rng.uniform(100e-6, 1e-3)),
                    leak_resistance_ohm=float(rng.uniform(1e5, 1e7)) if leak == "r" else None,
                    leak_current_a=float(rng.uniform(1e-7, 2e-5)) if leak == "i" else None)
    k = int(rng.integers(1, 8))
    exits = sorted(rng.choice(k, size=int(rng.integers(0, k)), replace=False).tolist())
    marks = {i: j for j, i in enumerate(e for e in exits if e != k - 1)}
    marks[k - 1] = len(marks)
    prog = Program(tuple(Step(int(rng.integers(0, 3_000_000)), int(rng.integers(0, 200)),
                              marks.get(i)) for i in range(k)),
                   resume_cycles=int(rng.integers(0, 50_000)))
    sim = Simulator(tr, cap, v_start=float(rng.uniform(0, cap.v_max)), charging_power_w=charging,
                    max_consecutive_failures=30, max_charge_periods=20)
    arrivals = np.sort(rng.uniform(0, 60, int(rng.integers(1, 12))))
    res = sim.run(prog, arrivals, policy=lambda ctx: bool(rng.integers(0, 2)))
    lg = res.ledger
    assert abs(res.balance_error_j) <= 1e-9 * max(lg.harvested_j, cap.energy(cap.v_max))
    assert lg.harvested_j == pytest.approx(tr.energy(0.0, res.duration_s), rel=1e-9, abs=1e-15)
    assert min(lg.consumed_j, lg.leaked_j, lg.spilled_j) >= -1e-15
    assert 0.0 <= res.stored_end_j <= cap.energy(cap.v_max) * (1 + 1e-12)
    done = [r for r in res.inferences if r.completed]
    assert all(not r.completed for r in res.inferences[len(done):])   # stops at the first failure
    for r in done:
        assert r.latency_s >= (r.cycles - r.reexecuted_cycles - r.resume_cycles) / MSP.clock_hz \
            * (1 - 1e-12)
        assert r.reexecuted_cycles <= r.cycles and r.start_s >= r.arrival_s
    if len(done) < len(res.inferences):
        assert res.never_completes


# ---- restarts: every power-on costs the measured warm restart --------------------------------

def test_the_measured_restart_is_charged_by_default_at_every_power_on():
    """Same program and harvester, restarts free (0) against the measured warm restart (the
    default): every power failure is followed by one restart, charged at active power, so the
    run uses exactly failures x the restart's energy more than its work (useful and lost); it
    uses more energy than the free-restart run and answers later."""
    assert MEASURED_RESTART == costs.restart_cost(MSP)   # MSP430 cycles as measured
    assert 1000 < MEASURED_RESTART <= 2000
    cap = Capacitor(capacitance_f=100e-6, leak_resistance_ohm=None)     # ~7 steps per charge
    work = 120 * 150_000
    program = {r: Program(tuple(Step(150_000, 0) for _ in range(119)) + (Step(150_000, 0, 0),),
                          resume_cycles=r) for r in (0, None)}
    runs = {r: Simulator(Constant(2e-4), cap, charging_power_w=0.0).run(p, [0.0])
            for r, p in program.items()}
    assert runs[None].restart_cycles == MEASURED_RESTART and runs[0].restart_cycles == 0
    free, charged = runs[0].inferences[0], runs[None].inferences[0]
    assert free.completed and charged.completed and charged.power_failures >= 5
    restart_j = MEASURED_RESTART * MSP.energy_per_cycle_j
    assert free.resume_cycles == 0
    assert charged.resume_cycles == charged.power_failures * MEASURED_RESTART
    for r in (free, charged):
        # no commits and no off-state draw: the energy is the cycles run at active power; they
        # are the work, the lost parts of failed steps, and the restarts
        assert r.cycles == work + r.reexecuted_cycles + r.resume_cycles
        assert r.energy_j == pytest.approx(r.cycles * MSP.energy_per_cycle_j, rel=1e-6)
        restarts_j = r.energy_j - (work + r.reexecuted_cycles) * MSP.energy_per_cycle_j
        # (up to the cycle a lost step is cut at, per failure)
        assert restarts_j == pytest.approx(r.power_failures * (restart_j if r is charged else 0.0),
                                           abs=(r.power_failures + 1) * MSP.energy_per_cycle_j)
    assert charged.energy_j > free.energy_j and charged.end_s > free.end_s
    assert charged.power_failures >= free.power_failures


@pytest.mark.parametrize("v_max", [3.3, 3.6])
def test_a_capacitor_that_cannot_pay_restart_plus_largest_step_never_finishes(v_max):
    """An on-period (v_on to v_off) that pays for the largest step but not for the restart plus
    the largest step: free restarts finish, the measured restart never does (statically when
    the capacitor cannot hold more than v_on, otherwise after failing in a row); 1.2 x (restart
    + largest step) finishes with the restart charged."""
    p_h = 1e-5                                               # a trickle: the on-period is the store
    big = 1_000_000
    prog = {r: Program((Step(200_000, 0), Step(big, 0), Step(300_000, 0, 0)), resume_cycles=r)
            for r in (0, None)}

    def capacitor(cycles):                                   # usable energy = drain of `cycles`
        drain = (P_ACTIVE - p_h) * cycles / MSP.clock_hz
        return Capacitor(capacitance_f=2 * drain / (3.3 ** 2 - 1.8 ** 2), v_max=v_max,
                         leak_resistance_ohm=None)

    short = capacitor(big + MEASURED_RESTART / 2)            # pays the step, not restart + step
    for r, completes in ((0, True), (None, False)):
        res = Simulator(Constant(p_h), short, charging_power_w=0.0,
                        max_consecutive_failures=20).run(prog[r], [0.0, 1.0])
        assert [x.completed for x in res.inferences] == [completes] * 2, res.never_completes
        if not completes:
            assert res.restart_cycles == MEASURED_RESTART
            assert ("with the restart" if v_max == 3.3 else "failed 20 times in a row") \
                in res.never_completes
    enough = capacitor(1.2 * (big + MEASURED_RESTART))
    res = Simulator(Constant(p_h), enough, charging_power_w=0.0,
                    max_consecutive_failures=20).run(prog[None], [0.0, 1.0])
    assert all(x.completed for x in res.inferences) and res.inferences[0].power_failures >= 1
