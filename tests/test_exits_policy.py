"""Exit policy on hand-made costs, threshold calibration, segment costs, and the int8 incremental
reference against TFLite Micro."""

from __future__ import annotations

import numpy as np
import pytest

from freeml_keras import devices, memory
from freeml_keras.conversion.converter import convert
from freeml_keras.exits import (ExitPolicy, HeadQuantization, attach_global_exit,
                                calibrate_thresholds, evaluate_policy, incremental_logits,
                                incremental_logits_int8, segment_costs)
from freeml_keras.exits.incremental import multiply_by_quantized_multiplier, quantize_multiplier
from freeml_keras.keras import keras


def logits_with_confidence(p_top: float, classes: int = 3, top: int = 0) -> np.ndarray:
    """Logits whose softmax gives p_top to class ``top`` and the rest evenly to the others."""
    p = np.full(classes, (1 - p_top) / (classes - 1))
    p[top] = p_top
    return np.log(p)


def test_decisions_on_hand_made_costs():
    pol = ExitPolicy(thresholds=[0.9, None], segment_energy_j=[1.0, 2.0, 4.0])
    sure, unsure = logits_with_confidence(0.95), logits_with_confidence(0.5)
    assert pol.decide(0, sure, energy_available_j=100.0) == (True, "confident")
    assert pol.decide(0, unsure, energy_available_j=100.0) == (False, "continue")
    assert pol.decide(0, unsure, energy_available_j=1.99) == (True, "energy")   # exit 1 costs 2
    assert pol.decide(0, unsure, energy_available_j=2.0) == (False, "continue")
    assert pol.decide(1, sure, energy_available_j=100.0) == (False, "continue")  # never by confidence
    assert pol.decide(1, sure, energy_available_j=3.0) == (True, "energy")
    assert pol.decide(2, unsure, energy_available_j=0.0) == (True, "final")
    margin = ExitPolicy([0.5, 0.5], [1, 1, 1], confidence="margin")
    assert margin.confidence_of(logits_with_confidence(0.7)) == pytest.approx(0.7 - 0.15)


def test_run_follows_energy_and_confidence():
    pol = ExitPolicy(thresholds=[0.9, 0.8], segment_energy_j=[1.0, 2.0, 4.0])
    z = np.stack([np.stack([logits_with_confidence(c, top=t) for c, t in row])
                  for row in ([(0.95, 1), (0.5, 0), (0.5, 0), (0.5, 0), (0.5, 0)],
                              [(0.5, 0), (0.85, 2), (0.5, 1), (0.5, 1), (0.5, 1)])])
    final = np.eye(3)[[0, 0, 2, 2, 2]]
    r = pol.run(z, final, energy_j=np.array([100, 100, 100, 2.5, 0.5]))
    assert r["exit"].tolist() == [0, 1, 2, 0, -1]
    assert r["prediction"].tolist() == [1, 2, 2, 0, -1]
    np.testing.assert_allclose(r["energy_j"], [1, 3, 7, 1, 0])
    assert pol.run(z, final)["exit"].tolist() == [0, 1, 2, 2, 2]


def test_policy_json_round_trip():
    pol = ExitPolicy([0.7, None, 0.9], [1e-6, 2e-6, 3e-6, 4e-6], "margin", "apollo3", {"a": 1})
    back = ExitPolicy.from_json(pol.to_json())
    assert back == pol
    with pytest.raises(ValueError, match="not a freeml exit policy"):
        ExitPolicy.from_dict({"thresholds": []})
    with pytest.raises(ValueError, match="segment energies"):
        ExitPolicy([0.5], [1.0])


class FakeExits:
    """Hand-made exit logits standing in for an exit model (predict_all only)."""

    def __init__(self, z, final):
        self.z, self.final = z, final

    def predict_all(self, x):
        return self.z[:, x], self.final[x]


def test_calibrate_for_accuracy_and_cost():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 3, n)
    conf = rng.uniform(0.34, 1.0, n)
    # exit 0 is right exactly when its confidence is above 0.7
    pred0 = np.where(conf > 0.7, y, (y + 1) % 3)
    z0 = np.stack([logits_with_confidence(c, top=p) for c, p in zip(conf, pred0)])
    z1 = np.stack([logits_with_confidence(0.6, top=t) for t in y])
    final = np.eye(3)[y]
    fake = FakeExits(np.stack([z0, z1]), final)
    costs = [1.0, 1.0, 2.0]
    pol = calibrate_thresholds(fake, (np.arange(n), y), target_accuracy=1.0,
                               costs=[_seg(e) for e in costs])
    # every answer right: exit 0 only above 0.7, so exit 1 (always 0.6 sure) never stops; the
    # cheapest such threshold is the least confidence above 0.7
    t = conf[conf > 0.7].min()
    assert pol.thresholds == [pytest.approx(t)] * 2
    res = evaluate_policy(pol, fake, (np.arange(n), y))
    assert res["accuracy"] == 1.0
    assert res["exit_histogram"] == [int(np.sum(conf > 0.7)), 0, int(np.sum(conf <= 0.7))]
    assert res["mean_cost_fraction"] == pytest.approx(np.mean(np.where(conf > 0.7, 0.25, 1.0)))
    assert pol.meta["target_met_on_validation"]
    never = calibrate_thresholds(FakeExits(np.stack([z0, z0]), np.eye(3)[(y + 1) % 3]),
                                 (np.arange(n), y), target_accuracy=1.0, costs=[_seg(e) for e in costs])
    assert never.thresholds == [None, None] and not never.meta["target_met_on_validation"]
    cheap = calibrate_thresholds(fake, (np.arange(n), y), target_cost=0.5,
                                 costs=[_seg(e) for e in costs])
    # exit 1 is always 0.6 sure: thresholds up to 0.6 stop everything by exit 1 (cost fraction
    # 0.25 or 0.5), above it the unsure half of exit 0 runs to the end (cost 1.0)
    assert cheap.thresholds == [pytest.approx(0.6, abs=1e-6)] * 2
    frac = np.mean(conf >= 0.6)
    assert cheap.meta["validation"]["mean_cost_fraction"] == pytest.approx(0.25 * frac + 0.5 * (1 - frac))
    with pytest.raises(ValueError, match="exactly one"):
        calibrate_thresholds(fake, (np.arange(n), y), costs=[_seg(e) for e in costs])


def _seg(e: float):
    from freeml_keras.exits.policy import SegmentCost
    return SegmentCost("s", 0, 0, 0, 0.0, e, 0.0)


def test_segment_costs_from_macs_and_bytes():
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inp)
    h = keras.layers.MaxPooling2D(2, name="p1")(h)
    h = keras.layers.Conv2D(6, 3, padding="same", name="c2")(h)
    h = keras.layers.MaxPooling2D(2, name="p2")(h)
    out = keras.layers.Dense(3, name="out")(keras.layers.Flatten(name="f")(h))
    model = keras.Model(inp, out)
    em = attach_global_exit(model, "auto", pooled_size=1)
    fp = memory.keras_footprint(model)
    segs = segment_costs(em, "msp430fr5994", cycles_per_mac=10.0, cycles_per_byte=0.0)
    assert [s.macs for s in segs] == [8 * 8 * 9 * 4 + 4 * 3, 4 * 4 * 36 * 6 + 6 * 3, 2 * 2 * 6 * 3]
    assert sum(s.macs for s in segs) == fp.macs + (4 + 6) * 3
    dev = devices.get("msp430fr5994")
    # activations live in FRAM on the MSP430: their writes add NVM write time
    s0 = segs[0]
    nvm = s0.bytes_written / 2 * 125e-9 * dev.clock_hz
    assert s0.cycles == pytest.approx(10.0 * s0.macs + nvm)
    assert s0.energy_j == pytest.approx(s0.cycles * dev.energy_per_cycle_j)
    m4 = segment_costs(em, "apollo3", cycles_per_mac=1.0, cycles_per_byte=1.0)
    assert m4[0].cycles == m4[0].macs + m4[0].bytes_moved


def test_quantized_multiplier_matches_float():
    for real in (0.0037, 0.25, 0.7, 1.3e-5):
        m, shift = quantize_multiplier(real)
        x = np.array([-100000, -1234, -1, 0, 1, 999, 123456])
        got = multiply_by_quantized_multiplier(x, m, shift)
        assert np.all(np.abs(got - x * real) <= 1)


def test_int8_incremental_reference_equals_tflite_micro():
    """The head's FULLY_CONNECTED alone, converted to int8: TFLite Micro's logits with the
    features of later exit points at the input zero point equal the int8 reference."""
    from freeml_keras.keras import tf
    from tflite_micro import runtime
    dims, C = [6, 4, 5], 4
    rng = np.random.default_rng(1)
    w = [rng.normal(0, 0.5, (d, C)).astype(np.float32) for d in dims]
    b = rng.normal(0, 0.3, C).astype(np.float32)
    inp = keras.Input((sum(dims),))
    dense = keras.layers.Dense(C)
    model = keras.Model(inp, dense(inp))
    dense.set_weights([np.concatenate(w), b])
    rep = rng.uniform(0, 3, (200, sum(dims))).astype(np.float32)
    data = convert(model, rep, sparse=False)
    interp = tf.lite.Interpreter(model_content=data)
    interp.allocate_tensors()
    details = {d["index"]: d for d in interp.get_tensor_details()}
    inp_d, out_d = interp.get_input_details()[0], interp.get_output_details()[0]
    fc = next(d for d in details.values() if d["dtype"] == np.int8 and len(d["shape"]) == 2
              and tuple(d["shape"]) == (C, sum(dims)))
    bias = next(d for d in details.values() if d["dtype"] == np.int32)
    wq = interp.get_tensor(fc["index"]).T          # TFLite stores (classes, inputs)
    bq = interp.get_tensor(bias["index"])
    quant = HeadQuantization(float(inp_d["quantization_parameters"]["scales"][0]),
                             int(inp_d["quantization_parameters"]["zero_points"][0]),
                             tuple(float(s) for s in fc["quantization_parameters"]["scales"]),
                             float(out_d["quantization_parameters"]["scales"][0]),
                             int(out_d["quantization_parameters"]["zero_points"][0]))
    cuts = np.cumsum([0] + dims)
    wq_parts = [wq[a:c] for a, c in zip(cuts[:-1], cuts[1:])]
    micro = runtime.Interpreter.from_bytes(data, arena_size=4096)
    x = rng.uniform(0, 3, (20, sum(dims))).astype(np.float32)
    xq = np.clip(np.round(x / quant.input_scale) + quant.input_zero_point, -128, 127).astype(np.int8)
    for k in range(len(dims)):
        masked = xq.copy()
        masked[:, cuts[k + 1]:] = quant.input_zero_point
        pooled_q = [masked[:, a:c] for a, c in zip(cuts[:-1], cuts[1:])]
        ref = incremental_logits_int8(wq_parts, bq, pooled_q, quant, k)
        for i in range(len(x)):
            micro.set_input(masked[i:i + 1], 0)
            micro.invoke()
            np.testing.assert_array_equal(micro.get_output(0)[0], ref[i])
        # and the float reference agrees with the dequantized int8 logits
        flt = incremental_logits((w, b), [x[:, a:c] * (np.arange(len(dims))[j] <= k)
                                          for j, (a, c) in enumerate(zip(cuts[:-1], cuts[1:]))], k)
        deq = (ref.astype(np.float32) - quant.output_zero_point) * quant.output_scale
        assert np.max(np.abs(deq - flt)) < 0.1 * np.max(np.abs(flt)) + 3 * quant.output_scale


def test_head_model_converts_to_full_int8_and_runs_in_tflite_micro():
    """The head the converter takes: only pooling, reshapes, concatenation and one
    FULLY_CONNECTED once converted to int8, and TFLite Micro runs it close to the float head."""
    from freeml_keras.keras import tf
    from freeml_keras.format.tflite import read_model, op_name
    from tflite_micro import runtime
    keras.utils.set_random_seed(3)
    inp = keras.Input((12, 12, 1))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(inp)           # 10x10x8
    h = keras.layers.MaxPooling2D(2, name="p1")(h)                             # 5x5x8
    h = keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="c2")(h)
    h = keras.layers.Flatten(name="f")(keras.layers.MaxPooling2D(2, name="p2")(h))
    model = keras.Model(inp, keras.layers.Dense(4, activation="softmax", name="out")(h))
    em = attach_global_exit(model, ["p1", "c2"], pooled_size=[2, 1], max_width=[None, 6])
    assert [s.channel_group for s in em.pooling] == [1, 2] and em.pooled_dims == [32, 6]
    x = np.random.default_rng(0).uniform(size=(64, 12, 12, 1)).astype(np.float32)
    maps = em.features_model().predict(x, verbose=0)
    head = em.head_model()
    names = [t.name.split(":")[0] for t in head.inputs]
    conv = tf.lite.TFLiteConverter.from_keras_model(head)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ({n: m[i:i + 1] for n, m in zip(names, maps)}
                                           for i in range(len(x)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    data = conv.convert()
    ops = {op_name(read_model(data), op.opcodeIndex) for op in read_model(data).subgraphs[0].operators}
    assert ops <= {"MAX_POOL_2D", "RESHAPE", "EXPAND_DIMS", "CONCATENATION", "FULLY_CONNECTED"}
    micro = runtime.Interpreter.from_bytes(data, arena_size=16384)
    ref = em.predict_exits(x)[-1]
    sig = tf.lite.Interpreter(model_content=data)
    # input slots follow the flatbuffer's input order, which need not be the Keras order
    slots = [(next(j for j, n in enumerate(names) if n in d["name"]), d["quantization"])
             for d in sig.get_input_details()]
    assert sorted(j for j, _ in slots) == [0, 1]
    out_q = sig.get_output_details()[0]["quantization"]
    for i in range(8):
        for slot, (j, (s, z)) in enumerate(slots):
            micro.set_input(np.clip(np.round(maps[j][i:i + 1] / s) + z, -128, 127).astype(np.int8), slot)
        micro.invoke()
        got = (micro.get_output(0)[0].astype(np.float32) - out_q[1]) * out_q[0]
        assert np.max(np.abs(got - ref[i])) < 0.05 * np.max(np.abs(ref)) + 4 * out_q[0]
