"""Strategies on a tiny made-up exit model: hand-made costs and per-exit correctness."""

from __future__ import annotations

import numpy as np
import pytest

from freeml_keras import devices
from freeml_keras.energy import (Capacitor, Constant, ExitCosts, Simulator, branches_energy,
                                 compare, gnet_anytime, gnet_energy, periodic_arrivals,
                                 run_to_completion, traces)

N = 60
SEGMENTS = [3_000_000, 3_000_000, 4_000_000]


def costs(head_cycles):
    return ExitCosts(segment_cycles=SEGMENTS, head_cycles=head_cycles,
                     segment_nvm_bytes=[2048, 1024, 0], head_nvm_bytes=[20, 20], commit_bytes=32,
                     max_step_cycles=1_000_000, resume_cycles=5_000)


GNET = costs([20_000, 20_000])
BRANCHES = costs([400_000, 300_000])


@pytest.fixture(scope="module")
def answers():
    """Correctness at exits 0, 1 and final (55%, 75%, 90% right) and confidences that are
    higher on right answers."""
    rng = np.random.default_rng(7)
    correct = rng.uniform(size=(N, 3)) < np.array([0.55, 0.75, 0.9])
    confidence = np.clip(0.35 + 0.4 * correct + rng.normal(0, 0.15, (N, 3)), 0, 1)
    return correct, confidence


def strategies(correct, confidence, thresholds=(0.8, 0.75)):
    return [run_to_completion(GNET, correct, memory_bytes=0),
            branches_energy(BRANCHES, correct, memory_bytes=9000),
            gnet_energy(GNET, correct, memory_bytes=1200),
            gnet_anytime(GNET, correct, confidence, thresholds, memory_bytes=1200)]


def recomputed_accuracy(report, correct):
    res = report.result
    cols = correct if correct.shape[1] == len(report.exit_counts) else correct[:, -1:]
    return np.mean([r.completed and cols[r.example, r.exit_index] for r in res.inferences])


def test_programs_from_costs():
    prog = GNET.program()
    assert prog.total_cycles == sum(SEGMENTS) + 40_000 and prog.num_exits == 3
    assert max(s.cycles for s in prog.steps) <= 1_000_000 and prog.resume_cycles == 5_000
    assert [i for i, s in enumerate(prog.steps) if s.exit_index is not None] == [3, 7, 11]
    assert prog.steps[3].cycles == 20_000 and prog.steps[7].cycles == 20_000
    assert prog.total_nvm_bytes == 2048 + 1024 + 40 + 32 * len(prog.steps)
    plain = GNET.program(heads=False, exits=False)
    assert plain.total_cycles == sum(SEGMENTS) and plain.num_exits == 1
    odd = ExitCosts([7, 5], head_cycles=[1], max_step_cycles=3).program()
    assert [s.cycles for s in odd.steps] == [3, 2, 2, 1, 3, 2]
    assert ExitCosts.from_dict(GNET.to_dict()) == GNET


@pytest.mark.parametrize("kwargs,match", [
    (dict(segment_cycles=[]), "at least 1"),
    (dict(segment_cycles=[10, 10], head_cycles=[1, 2]), "head_cycles: expected 1"),
    (dict(segment_cycles=[10, -1]), ">= 0"),
    (dict(segment_cycles=[10], max_step_cycles=0), "max_step_cycles"),
])
def test_bad_costs_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExitCosts(**kwargs)
    with pytest.raises(ValueError, match="unknown cost fields"):
        ExitCosts.from_dict({"segment_cycles": [1], "macs": [3]})


def test_plenty_of_energy_every_energy_strategy_runs_to_the_end(answers):
    correct, confidence = answers
    cap = Capacitor()
    p_active = devices.get("msp430fr5994").active_power_w
    sim = Simulator(Constant(1.5 * p_active), cap, v_start=cap.v_max)
    reports = compare(strategies(correct, confidence), sim, periodic_arrivals(N, 2.0))
    final_acc = correct[:, -1].mean()
    for name in ("no exit", "branches + energy", "gNet + energy"):
        r = reports[name]
        assert r.completed == N and r.final_fraction == 1.0
        assert r.accuracy == pytest.approx(final_acc)
        assert r.power_failures_per_inference == 0 and r.reexecuted_cycles_per_inference == 0
    assert reports["no exit"].cycles_per_inference == sum(SEGMENTS)
    assert reports["gNet + energy"].cycles_per_inference == sum(SEGMENTS) + 40_000
    assert reports["branches + energy"].cycles_per_inference == sum(SEGMENTS) + 700_000
    assert reports["branches + energy"].memory_bytes == 9000
    # Anytime: the first exit whose confidence reaches its threshold, else the final answer.
    any_r = reports["gNet anytime"]
    thr = np.array([0.8, 0.75, -np.inf])
    expect_exit = np.argmax(confidence >= thr, axis=1)
    got = any_r.result.array("exit_index")
    np.testing.assert_array_equal(got, expect_exit)
    assert any_r.accuracy == pytest.approx(correct[np.arange(N), expect_exit].mean())
    assert any_r.exit_counts == np.bincount(expect_exit, minlength=3).tolist()


def test_scarce_energy_exits_early_and_answers_sooner(answers):
    correct, confidence = answers
    sim = Simulator(traces.load("rf_static"), Capacitor(), v_start=0.0)
    reports = compare(strategies(correct, confidence), sim, periodic_arrivals(N, 20.0))
    none, gnet, br = reports["no exit"], reports["gNet + energy"], reports["branches + energy"]
    assert all(r.completed == N and not r.never_completes for r in reports.values())
    assert none.power_failures_per_inference > 1 and none.reexecuted_cycles_per_inference > 0
    assert gnet.exit_counts[0] > 0 and gnet.final_fraction < 1.0
    assert gnet.latency_s["mean"] < none.latency_s["mean"]
    assert gnet.cycles_per_inference < none.cycles_per_inference
    assert gnet.energy_per_inference_j < none.energy_per_inference_j
    for r in reports.values():
        assert r.accuracy == pytest.approx(recomputed_accuracy(r, correct))
        assert sum(r.exit_counts) == N
        assert r.latency_s["p50"] <= r.latency_s["p90"] <= r.latency_s["max"]
    # Every strategy saw the same inputs at the same times.
    arrivals = [r.result.array("arrival_s") for r in reports.values()]
    for a in arrivals[1:]:
        np.testing.assert_array_equal(a, arrivals[0])
    assert br.to_dict()["name"] == "branches + energy" and "result" not in br.to_dict()


def test_strategy_inputs_are_checked(answers):
    correct, confidence = answers
    with pytest.raises(ValueError, match="correct must be"):
        gnet_energy(GNET, correct[:, :2])
    with pytest.raises(ValueError, match="thresholds"):
        gnet_anytime(GNET, correct, confidence, [0.5])
    sim = Simulator(Constant(1e-2))
    s = strategies(correct, confidence)
    with pytest.raises(ValueError, match="names must differ"):
        compare([s[0], s[0]], sim, [0.0])
    with pytest.raises(ValueError, match="correctness for 60 examples"):
        compare(s, sim, [0.0], examples=[60])


@pytest.mark.parametrize("device", ["msp430fr5994", "apollo3"])
def test_exit_costs_charge_the_measured_restart_of_the_device_by_default(device):
    """ExitCosts without resume_cycles: the simulator charges the warm restart measured for its
    device (``costs.restart_cycles``, cycles at the device's clock) at every power-on; 0 keeps
    restarts free."""
    from freeml_keras import costs as op_costs
    default = ExitCosts(segment_cycles=SEGMENTS, max_step_cycles=1_000_000)
    assert default.resume_cycles is None and default.program().resume_cycles is None
    assert ExitCosts.from_dict(default.to_dict()) == default
    dev = devices.get(device)
    # a capacitor that holds a fraction of one inference (100 uF on the MSP430, 5 uF on the Apollo3)
    sim = Simulator(Constant(0.5 * dev.active_power_w), Capacitor(capacitance_f=5e-6 if
                    device == "apollo3" else 100e-6), device=device)
    res = sim.run(default.program(), [0.0])
    measured = op_costs.restart_cycles(device)
    import json
    from importlib import resources
    doc = json.loads(resources.files("freeml_keras").joinpath("data", "cost_tables.json").read_text())
    table = max(m["warm_restart"] for m in doc["restart"][op_costs.target_of(device)]["models"].values())
    assert measured == op_costs.restart_cost(device) == table
    assert res.restart_cycles == measured
    r = res.inferences[0]
    assert r.power_failures > 0 and r.resume_cycles == r.power_failures * measured
    free = sim.run(ExitCosts(segment_cycles=SEGMENTS, max_step_cycles=1_000_000,
                             resume_cycles=0).program(), [0.0])
    assert free.restart_cycles == 0 and free.inferences[0].resume_cycles == 0
    assert free.inferences[0].end_s < r.end_s
