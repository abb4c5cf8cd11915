"""The stop rule at an exit point: its decisions, and the users that share it (the exit policy,
the energy simulator)."""

from __future__ import annotations

import numpy as np
import pytest

from freeml_keras.exits.stop_rule import StopRule, confidence

# ---- the rule -----------------------------------------------------------------------------------


def test_decisions_in_order_confidence_then_energy():
    rule = StopRule(thresholds=(0.8, None, 2.0), energy_margin=1.5)
    assert rule.decide(0, confidence=0.8) == (True, "confident")        # at the threshold
    assert rule.decide(0, confidence=0.79) == (False, "continue")
    assert rule.decide(0, confidence=0.9, energy_available_j=0.0, energy_to_next_exit_j=1.0) == \
        (True, "confident")                                              # confidence first
    assert rule.decide(0, confidence=0.5, energy_available_j=1.49, energy_to_next_exit_j=1.0) == \
        (True, "energy")                                                 # 1.49 < 1.5 x 1.0
    assert rule.decide(0, confidence=0.5, energy_available_j=1.5, energy_to_next_exit_j=1.0) == \
        (False, "continue")
    assert rule.decide(1, confidence=1.0) == (False, "continue")         # None: never
    assert rule.decide(2, confidence=1.0) == (False, "continue")         # above 1: never
    assert rule.threshold(1) is None and rule.threshold(2) is None and rule.threshold(0) == 0.8
    with pytest.raises(ValueError, match="needs the\\s+confidence"):
        rule.decide(0)
    assert StopRule().decide(0, energy_available_j=0.5, energy_to_next_exit_j=1.0) == (True, "energy")
    assert StopRule(energy_margin=None).decide(0, energy_available_j=0.0,
                                               energy_to_next_exit_j=1.0) == (False, "continue")
    with pytest.raises(ValueError, match="margin"):
        StopRule(energy_margin=-1.0)
    assert confidence(np.log([0.6, 0.3, 0.1]), "margin") == pytest.approx(0.3)
    with pytest.raises(ValueError, match="unknown confidence"):
        confidence(np.zeros(3), "entropy")


@pytest.mark.parametrize("seed", range(5))
def test_first_exit_is_the_first_decision_to_stop(seed):
    """The vectorized walk over exits equals deciding exit by exit."""
    rng = np.random.default_rng(seed)
    k, n = 4, 300
    thresholds = [float(t) if rng.random() < 0.7 else None for t in rng.uniform(0.3, 1.0, k)]
    rule = StopRule(thresholds, energy_margin=[None, 1.0, 1.3][seed % 3])
    conf = rng.uniform(0, 1, (k, n))
    avail = rng.uniform(0, 10, (k, n))
    need = rng.uniform(0, 10, k)
    got = rule.first_exit(conf, avail, need)
    for j in range(n):
        expect = next((i for i in range(k) if rule.decide(
            i, confidence=conf[i, j], energy_available_j=avail[i, j],
            energy_to_next_exit_j=need[i])[0]), k)
        assert got[j] == expect
    assert rule.first_exit(conf).tolist() == StopRule(thresholds, energy_margin=None).first_exit(
        conf, avail, need).tolist()                    # no energy given: unlimited
    # one reading for every exit, no confidence rule
    assert StopRule().first_exit(energy_available_j=5.0, energy_to_next_exit_j=[1, 6, 1]).tolist() == [1]


def test_the_simulator_and_the_policy_decide_with_the_rule():
    from freeml_keras.energy import Capacitor, Constant, ExitContext, Program, Simulator, Step
    from freeml_keras.exits.policy import ExitPolicy
    rule = StopRule((0.7, None))
    ctx = ExitContext(exit_index=0, num_exits=3, example=0, energy_available_j=1.0,
                      energy_to_next_exit_j=2.0, cycles_to_next_exit=10, confidence=0.5,
                      time_since_arrival_s=0.0, power_failures=0)
    assert rule.should_stop(ctx)                                   # energy
    assert not rule.should_stop(ExitContext(**{**vars(ctx), "energy_available_j": 3.0}))
    prog = Program((Step(1_000_000, 0, 0), Step(1_000_000, 0, 1), Step(1_000_000, 0, 2)))
    cap = Capacitor()
    sim = Simulator(Constant(10e-3), cap, v_start=cap.v_max)         # plenty of energy
    conf = np.array([[0.9, 0.1, 1.0], [0.2, 0.99, 1.0], [0.1, 0.1, 1.0]])
    res = sim.run(prog, [0.0, 1.0, 2.0], policy=rule, confidence=conf)
    assert [r.exit_index for r in res.inferences] == [0, 2, 2]       # exit 1 never by confidence
    pol = ExitPolicy([0.7, None], [1.0, 2.0, 4.0])
    assert pol.rule == rule
