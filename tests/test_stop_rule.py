"""The stop rule at an exit point: its decisions, the users that share it (the exit policy, the
energy simulator), and the C runtime taking the same decision on the same inputs: the model's
metadata (thresholds, per-operator costs), the exit logits of the runtime's head (equal to
TFLite Micro's, test_intermittent.py) and the platform's energy reading."""

from __future__ import annotations

from conftest import prune_kernels

import numpy as np
import pytest

from freeml_keras.exits.stop_rule import (StopRule, confidence, confidence_limit, fixed_point_exp_sum,
                                          runtime_confidence)

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


# ---- the C runtime against the Python rule -------------------------------------------------------


def _f32(bits) -> np.ndarray:
    return np.asarray(bits, np.uint32).view(np.float32)


def _runtime_lib():
    import ctypes
    from freeml_keras.runtime.build import build_library
    lib = ctypes.CDLL(str(build_library()))
    lib.fm_exit_exp_sum.restype = ctypes.c_uint32
    lib.fm_exit_exp_sum.argtypes = [ctypes.c_char_p, ctypes.c_uint16, ctypes.c_float]
    lib.fm_exit_conf_limit.restype = ctypes.c_uint32
    lib.fm_exit_conf_limit.argtypes = [ctypes.c_float]
    return lib


def test_the_fixed_point_confidence_is_the_runtimes_bit_for_bit():
    """fixed_point_exp_sum and confidence_limit equal the runtime's fm_exit_exp_sum and
    fm_exit_conf_limit (integer arithmetic on the float32 bits, no floating point on the
    targets) on random and extreme logits, scales and thresholds; the confidence is the float
    softmax's within 1e-5; and comparing 2^22 / S with a threshold is exactly S <= limit."""
    from fractions import Fraction
    lib = _runtime_lib()
    rng = np.random.default_rng(0)
    scales = np.concatenate([rng.uniform(1e-3, 0.5, 40).astype(np.float32),
                             _f32(rng.integers(0, 0x7F800001, 40)),          # any positive float32
                             _f32([1, 0x007FFFFF, 0x00800000, 0x3B800000, 0x3E000000, 0x3E800000,
                                   0x3F800000, 0x4E000000, 0x4F000000, 0x7F7FFFFF, 0x7F800000])])
    for scale in scales:
        for n in (1, 2, 10, 64):
            z = rng.integers(-128, 128, (4, n)).astype(np.int8)
            z[0] = 127
            z[1, :] = -128
            z[1, 0] = 127
            py = fixed_point_exp_sum(z, scale)
            c = [lib.fm_exit_exp_sum(bytes(row.tobytes()), n, float(scale)) for row in z]
            assert py.tolist() == c, (scale, n)
            assert (py <= n << 22).all() and (py >= 1 << 22).all()
    z = rng.integers(-128, 128, (200, 10)).astype(np.int8)
    for scale in (0.02, 0.1, 0.25):
        exact = confidence(z.astype(np.float64) * scale)
        assert np.abs(runtime_confidence(z, np.float32(scale)) - exact).max() < 1e-5
    thresholds = np.concatenate([rng.uniform(0, 1, 200).astype(np.float32),
                                 _f32(rng.integers(0, 1 << 32, 200, dtype=np.uint64)),
                                 np.float32([0.0, -0.0, 1.0, 2.0 ** -9, np.nextafter(2.0 ** -9, 0),
                                             np.nextafter(1, 2), np.inf, -np.inf, np.nan, -1.0]),
                                 _f32([0x7FC00001, 0xFFC00000, 1])])
    sums = np.concatenate([rng.integers(1 << 22, 64 << 22, 300), [1 << 22, (1 << 22) + 1, 64 << 22]])
    for t in thresholds:
        lim = confidence_limit(t)
        assert lim == lib.fm_exit_conf_limit(float(t)), t
        if lim:             # the float64 quotient decides as the integer comparison
            assert ((float(1 << 22) / sums >= t) == (sums <= lim)).all(), t
            if 2.0 ** -9 <= t <= 1:
                assert lim == int(Fraction(1 << 22) / Fraction(float(t)))
        else:
            assert np.isnan(t) or t > 1


EXIT_POINTS = ["pool1", "conv2", "fc1"]
N_INPUTS = 6
PER_MAC, PER_CYCLE = 1e-9, 3e-10      # J: 1,000 and 300 of the harness's integer pJ
LEVELS = ["no reading", "empty", "just below the next segment", "at the next segment", "plenty"]


def _exit_model(sparse: bool):
    """cnn_s on digits with a random gNet head (untrained: the rule only needs varied
    confidences), converted with the msp430 per-operator costs; pruned for the sparse variant
    (its DENSIFY operators are aliases: no units, cost 0)."""
    from freeml_keras import zoo
    from freeml_keras.exits import attach_global_exit
    from freeml_keras.keras import keras
    keras.utils.set_random_seed(int(sparse))
    m = zoo.build("cnn_s", (8, 8, 1), 10, width=0.5)
    if sparse:
        prune_kernels(m, 0.7)
    em = attach_global_exit(m, EXIT_POINTS, pooled_size=[2, 1, None])
    rng = np.random.default_rng(0)
    em.set_head_weights(rng.normal(0, 0.3, (sum(em.pooled_dims), 10)), rng.normal(0, 0.1, 10))
    return m, em


def _routing_thresholds(conf: np.ndarray, gap: float = 2e-4) -> list[float]:
    """Thresholds per exit (conf: exits x inputs) such that at least one input stops by
    confidence at every exit and one reaches the model's output: at each exit, the widest gap
    between the confidences of the inputs still running that leaves one for every later exit
    and the output. Every confidence is at least ``gap`` / 2 from its threshold (the runtime's
    float32 exp is within 1e-5)."""
    k, n = conf.shape
    running = list(range(n))
    out = []
    for e in range(k):
        order = sorted(running, key=lambda j: -conf[e, j])
        c = conf[e, order]
        cut = max(range(1, len(order) - (k - e) + 1), key=lambda i: c[i - 1] - c[i])
        assert c[cut - 1] - c[cut] >= gap, f"exit {e}: confidences {c} too close together"
        out.append(float((c[cut - 1] + c[cut]) / 2))
        running = order[cut:]
    return out


@pytest.fixture(scope="module")
def cases():
    """Per model (dense and sparse, complete cost tables; dense with a cost missing for an
    operator that runs): the model (its metadata's thresholds route the inputs to every exit),
    int8 inputs, the runtime's exit logits for them, the runtime's units per operator."""
    from freeml_keras import datasets
    from freeml_keras.conversion.converter import convert
    from freeml_keras.format import tflite as ts
    from freeml_keras.format.metadata import read_metadata, replace_metadata
    from freeml_keras.format.model import TFLiteModel
    from freeml_keras.runtime.exit_decision import exit_confidences
    from freeml_keras.runtime.intermittent import exit_options, plan, run_uninterrupted
    from freeml_keras.runtime.reference import io_quantization, quantize
    tr, _, te = datasets.load("digits")
    out = {}
    for sparse in (False, True):
        m, em = _exit_model(sparse)
        b = convert(m, tr[0][:64], sparse=sparse, exit_model=em, target="msp430")
        (iq,), _ = io_quantization(b)
        xs = quantize(te[0][:N_INPUTS], *iq)
        logits = np.stack([np.stack([run_uninterrupted(b, x, options=exit_options(stop_at_exit=e))[0]
                                     for e in range(len(EXIT_POINTS))]) for x in xs])
        md = read_metadata(b)
        for rec, t in zip(md.exits, _routing_thresholds(
                np.stack([exit_confidences(b, z) for z in logits], axis=1))):
            rec.threshold = t
        b = replace_metadata(ts.read_model(b), md)
        units = [o["units"] for o in plan(b)["ops"]]
        out["sparse" if sparse else "dense"] = (TFLiteModel(b), xs, logits, units)
        if not sparse:
            md.ops[next(i for i, u in enumerate(units) if u > 0)].cost = 0
            out["dense, a running operator without cost"] = (
                TFLiteModel(replace_metadata(ts.read_model(b), md)), xs, logits, units)
    return out


def _settings(cases, level: str):
    """(model, settings of exit_options) for an energy level: every model and pricing (MACs;
    the cost table, which falls back to MACs where incomplete), thresholds off and on."""
    from freeml_keras.runtime.exit_decision import energy_to_next_exit
    from freeml_keras.runtime.intermittent import ENERGY_UNIT_J
    for name, (b, _, _, units) in cases.items():
        for thresholds in (False, True):
            if level == "no reading":
                yield name, dict(thresholds=thresholds)
                continue
            for per_cycle in ((0.0, PER_CYCLE) if name != "dense, a running operator without cost"
                              else (PER_CYCLE,)):
                need = energy_to_next_exit(b.metadata, energy_per_mac_j=PER_MAC,
                                           energy_per_cycle_j=per_cycle, units=units)  # pJ
                energies = {"empty": [0],
                            "just below the next segment": [n - 1 for n in need if n > 0],
                            "at the next segment": need,
                            "plenty": [2 * max(need)]}[level]
                for energy in energies:
                    yield name, dict(thresholds=thresholds, energy_j=energy * ENERGY_UNIT_J,
                                     energy_per_mac_j=PER_MAC, energy_per_cycle_j=per_cycle)


@pytest.mark.parametrize("level", LEVELS)
def test_the_runtime_stops_where_the_python_rule_does(cases, level):
    from freeml_keras.runtime.exit_decision import predicted_exit
    from freeml_keras.runtime.intermittent import exit_options, run_uninterrupted
    differ = []
    for name, settings in _settings(cases, level):
        b, xs, logits, units = cases[name]
        for x, z in zip(xs, logits):
            _, info = run_uninterrupted(bytes(b), x, options=exit_options(**settings))
            py = predicted_exit(b, z, units=units, **settings)
            if info["exit"] != py:
                differ.append((name, settings, info["exit"], py))
    assert not differ, f"runtime and Python rule differ (model, settings, C, Python): {differ}"


def test_the_cases_reach_every_exit_and_the_output(cases):
    """The grid above makes the rule answer at every exit point and at the model's output (so
    does the runtime, which stops where the rule does: the test above): by confidence alone
    (every exit and the output), and by energy alone (the exits whose next segment costs more
    than the earlier ones: 0 and 1 for these models)."""
    from freeml_keras.runtime.exit_decision import predicted_exit
    by_confidence, by_energy, every = set(), set(), set()
    for level in LEVELS:
        for name, settings in _settings(cases, level):
            b, _, logits, units = cases[name]
            for z in logits:
                e = predicted_exit(b, z, units=units, **settings)
                every.add(e)
                if "energy_j" not in settings:
                    (by_confidence if settings["thresholds"] else set()).add(e)
                elif not settings["thresholds"]:
                    by_energy.add(e)
    everything = set(range(len(EXIT_POINTS) + 1))
    assert every == everything and by_confidence == everything, (every, by_confidence)
    assert by_energy >= {0, 1, len(EXIT_POINTS)}, by_energy
