import re
import subprocess
import sys

import numpy as np
import pytest

from freeml_keras import devices, memory
from freeml_keras.conversion.converter import convert
from freeml_keras.keras import keras


def hand_model():
    """Input 4x4x1 -> Conv2D(2, 3x3 valid) -> Flatten -> Dense(3), with known weights."""
    inp = keras.Input((4, 4, 1), name="x")
    h = keras.layers.Conv2D(2, 3, name="conv")(inp)
    h = keras.layers.Flatten(name="flat")(h)
    out = keras.layers.Dense(3, name="fc")(h)
    m = keras.Model(inp, out)
    k = np.zeros((3, 3, 1, 2), np.float32)
    k[..., 0, 0] = 1.0                                  # channel 0: 9 non-zeros
    k.reshape(9, 2)[:6, 1] = np.arange(1, 7)            # channel 1: 6 non-zeros
    m.get_layer("conv").set_weights([k, np.array([0.5, -0.5], np.float32)])
    m.get_layer("fc").set_weights([np.linspace(-1, 1, 24, dtype=np.float32).reshape(8, 3) + 0.01,
                                   np.array([0.1, 0.2, 0.3], np.float32)])
    return m


def test_hand_checked_footprint():
    fp = memory.keras_footprint(hand_model())
    conv, fc = fp.layers[1], fp.layers[3]
    # conv: 18 weights + 2 biases; 15 of 18 weights non-zero -> 3/18 zeros < 30%: stored dense?
    # No: 12/18... channel 1 has 3 zeros, so 3 zeros in all = 16.7% < 30% -> int8 dense.
    assert (conv.params, conv.fp32_bytes) == (20, 80)
    # int8: 18 weights + per-channel (4 B scale + 8 B zero point) for weights and bias + int32 bias
    assert conv.int8_bytes == 18 + 2 * 12 + 2 * 4 + 2 * 12 == 74
    # CSR on the last (input-channel, size 1) dim: 18 rows + 1 uint8 segments, 15 uint8 indices
    assert conv.int8_csr_bytes == 15 + 19 + 15 + 56
    assert conv.stored_format == "int8" and conv.stored_bytes == 74
    assert fc.int8_bytes == 24 + 3 * 12 + 3 * 4 + 3 * 12 == 108
    assert fp.weight_bytes == 74 + 108 == fp.flash_bytes
    assert fp.totals["fp32"] == 4 * (20 + 27)
    assert (conv.macs, conv.sparse_macs, fc.macs) == (2 * 2 * 2 * 9, 4 * 15, 24)
    # activations (int8): input 16, conv 8, flatten 8, fc 3: peak when conv runs (16 + 8)
    assert fp.totals["peak_live_bytes"] == 24
    # greedy plan with 16-byte alignment: two 16-byte slots
    assert fp.arena_bytes == 32
    assert fp.checkpoint_bytes == 2 * (16 + 4 * 3)


def test_sparse_layer_switches_to_csr_at_30_percent_zeros():
    m = hand_model()
    k, b = m.get_layer("conv").get_weights()
    k.reshape(9, 2)[:, 1] = 0.0  # channel 1 all zeros: 9/18 zeros
    m.get_layer("conv").set_weights([k, b])
    conv = memory.keras_footprint(m).layers[1]
    assert conv.stored_format == "int8_csr"
    assert conv.stored_bytes == 9 + 19 * 1 + 9 * 1 + 56
    assert conv.nonzero == 9 + 2


def test_index_width():
    assert [memory.index_bytes(v) for v in (0, 255, 256, 65535, 65536)] == [1, 1, 2, 2, 4]


def sparse_model(seed=0):
    rng = np.random.default_rng(seed)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(inp)
    h = keras.layers.DepthwiseConv2D(3, name="dw")(h)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Flatten(name="flat")(h)
    h = keras.layers.Dense(300, activation="relu", name="d1")(h)
    out = keras.layers.Dense(10, activation="softmax", name="d2")(h)
    m = keras.Model(inp, out)
    for layer, zeros in zip([m.get_layer(n) for n in ("c1", "dw", "d1", "d2")], (0.1, 0.5, 0.8, 0.4)):
        w = layer.get_weights()
        w[0] = np.where(rng.random(w[0].shape) < zeros, 0.0, w[0] + np.sign(w[0]) * 0.05).astype(np.float32)
        w[1] = rng.normal(0, 0.1, w[1].shape).astype(np.float32)
        layer.set_weights(w)
    return m, rng.random((30, 8, 8, 1)).astype(np.float32)


def test_keras_accounting_matches_the_converted_flatbuffer():
    m, x = sparse_model()
    fk = memory.keras_footprint(m)
    for sparse in (True, False):
        ft = memory.tflite_footprint(convert(m, x, sparse=sparse))
        assert ft.sparse_macs == fk.sparse_macs and ft.macs == fk.macs
        if sparse:
            assert ft.weight_bytes == fk.weight_bytes
            assert [l.stored_format for l in ft.layers if l.params] == ["int8", "int8_csr", "int8_csr", "int8_csr"]
        else:
            assert ft.weight_bytes == fk.totals["int8"]
        assert ft.arena_bytes == fk.arena_bytes


def test_arena_estimate_equals_tflite_micro_planner(tmp_path):
    """Our plan of the .tflite equals the non-persistent ("head") part that TFLite Micro
    allocates; TFLite Micro's total adds its persistent structs ("tail")."""
    m, x = sparse_model()
    b = convert(m, x, sparse=False)
    ours = memory.tflite_footprint(b).arena_bytes
    path = tmp_path / "m.tflite"
    path.write_bytes(b)
    # TFLite Micro prints from C with buffered stdio: read it from a child process.
    code = ("from tflite_micro import runtime; import sys; "
            f"runtime.Interpreter.from_bytes(open({str(path)!r}, 'rb').read(), "
            "arena_size=64 * 1024).print_allocations()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr  # where it prints depends on the build
    assert "Arena allocation head" in out, (out, proc.stderr[-2000:])
    head = int(re.search(r"Arena allocation head (\d+) bytes", out).group(1))
    tail = int(re.search(r"Arena allocation tail (\d+) bytes", out).group(1))
    print(f"arena: ours {ours} B; TFLite Micro head {head} B + tail {tail} B")
    assert ours == head
    assert tail > 0


def test_fits_device():
    fp = memory.keras_footprint(hand_model())
    fit = fp.fits("msp430fr5994")
    assert fit["flash_ok"] and fit["ram_ok"]
    assert fit["flash_margin_bytes"] == devices.get("msp430fr5994").model_budget_bytes - fp.flash_bytes


def test_device_profiles():
    msp = devices.get("msp430fr5994")
    assert (msp.nvm_bytes, msp.ram_bytes, msp.clock_hz) == (256 * 1024, 8 * 1024, 16_000_000)
    assert msp.energy_per_cycle_j == pytest.approx(0.354e-9, rel=1e-3)
    assert devices.get("apollo4").ram_bytes == 2816 * 1024
    custom = devices.DeviceProfile(
        name="test-mcu", core="x", clock_hz=1_000_000, nvm_bytes=1024, ram_bytes=512,
        model_budget_bytes=512, ram_budget_bytes=256, activations_in_nvm=False, voltage_v=3.0,
        active_ua_per_mhz=100, sleep_ua=1, nvm_write_ns_per_word=0, word_bytes=2)
    devices.register(custom, replace=True)
    assert devices.get("test-mcu") is custom
    with pytest.raises(ValueError, match="already exists"):
        devices.register(custom)
    with pytest.raises(ValueError, match="unknown device 'pdp11'"):
        devices.get("pdp11")


def every_layer_models():
    """Models with every layer keras_footprint counts (and parameter-free layers around them),
    weights partly zero so that some are stored CSR: a 2-D one and a 1-D one."""
    rng = np.random.default_rng(4)
    inp = keras.Input((12, 12, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.Conv2D(6, 3, strides=2)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    a = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)
    b = keras.layers.SeparableConv2D(12, 3, padding="same", activation="relu")(x)
    x = keras.layers.Add()([a, b])
    x = keras.layers.SeparableConv2D(8, 3, depth_multiplier=2, use_bias=False)(x)
    x = keras.layers.MaxPooling2D(2)(x)
    g = keras.layers.GlobalAveragePooling2D()(x)
    f = keras.layers.Flatten()(x)
    x = keras.layers.Concatenate()([g, keras.layers.Dense(8, activation="relu")(f)])
    x = keras.layers.Dropout(0.2)(x)
    x = keras.layers.Dense(5, use_bias=False)(x)
    m2 = keras.Model(inp, keras.layers.Activation("softmax")(x))
    inp = keras.Input((20, 4))
    y = keras.layers.Conv1D(6, 3, activation="relu")(inp)
    y = keras.layers.MaxPooling1D(2)(y)
    y = keras.layers.Flatten()(y)
    m1 = keras.Model(inp, keras.layers.Dense(3)(y))
    for m in (m2, m1):
        for layer in m.layers:
            ws = layer.get_weights()
            if ws and type(layer).__name__ != "BatchNormalization":
                new = [rng.normal(0, 0.5, w.shape).astype(np.float32) for w in ws]
                if new[0].ndim > 1:
                    new[0][rng.random(new[0].shape) < 0.5] = 0.0
                layer.set_weights(new)
    return [(m2, rng.uniform(0, 255, (24, 12, 12, 3)).astype(np.float32)),
            (m1, rng.normal(0, 1, (24, 20, 4)).astype(np.float32))]


def test_keras_stored_bytes_equal_the_flatbuffer_for_every_counted_layer():
    """Stored bytes and MACs counted from Keras equal the converted flatbuffer's, dense and CSR,
    for models with Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D (two operators each),
    Dense with and without bias and a folded BatchNormalization."""
    for m, x in every_layer_models():
        fk = memory.keras_footprint(m)
        for sparse in (False, True):
            ft = memory.tflite_footprint(convert(m, x, sparse=sparse))
            want = fk.weight_bytes if sparse else fk.totals["int8"]
            assert ft.weight_bytes == want, (m.name, sparse, [(l.name, l.stored_bytes) for l in ft.layers])
            assert ft.macs == fk.macs and ft.sparse_macs == fk.sparse_macs
    sep = [l for l in memory.keras_footprint(every_layer_models()[0][0]).layers if l.type == "SeparableConv2D"]
    assert len(sep) == 2 and all(l.stored_bytes > 0 for l in sep)


@pytest.mark.parametrize("layer", ["lstm", "normalization", "embedding", "nested"])
def test_keras_footprint_refuses_a_layer_it_cannot_count(layer):
    """A layer with parameters keras_footprint does not know how the converter stores is
    refused by name, never counted as 0 bytes."""
    inp = keras.Input((6, 4))
    if layer == "lstm":
        x = keras.layers.LSTM(3, name="the_lstm")(inp)
    elif layer == "normalization":
        x = keras.layers.Normalization(name="the_normalization")(inp)   # mean and variance: weights
        x = keras.layers.Flatten()(x)
    elif layer == "embedding":
        inp = keras.Input((6,))
        x = keras.layers.Flatten()(keras.layers.Embedding(10, 2, name="the_embedding")(inp))
    else:
        inner = keras.Sequential([keras.layers.Dense(2)], name="the_nested")
        x = inner(keras.layers.Flatten()(inp))
    m = keras.Model(inp, keras.layers.Dense(2)(x))
    with pytest.raises(memory.KerasFootprintError, match=f"layer 'the_{layer}'"):
        memory.keras_footprint(m)


def test_float_tflite_density_is_at_most_one():
    """A float32 .tflite's weights are counted as values, not bytes: densities at most 1 and
    the non-zero count of each weight tensor."""
    from freeml_keras.keras import tf
    inp = keras.Input((6,))
    m = keras.Model(inp, keras.layers.Dense(4)(keras.layers.Dense(5)(inp)))
    w = m.layers[1].get_weights()
    w[0][:3] = 0.0
    m.layers[1].set_weights(w)
    fp = memory.tflite_footprint(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    rows = [r for r in fp.layers if r.type == "FULLY_CONNECTED"]
    assert all(0 < r.density <= 1 for r in rows)
    assert rows[0].nonzero == 30 - 15 and rows[0].params == 30      # 3 of 6 input rows zero; no bias


def test_tflite_footprint_counts_the_lstm_and_transpose_conv_weights():
    """The LSTM's eight matrices and four biases, and TRANSPOSE_CONV's weights and bias, are
    stored weights of theirs (values and quantization), not 0 bytes."""
    from pathlib import Path

    from freeml_keras.format import tflite as ts
    corpus = Path(__file__).resolve().parent / "data" / "fuzz_corpus"
    for name, op, inputs in (("lstm", "UNIDIRECTIONAL_SEQUENCE_LSTM", list(range(1, 9)) + [12, 13, 14, 15]),
                             ("transpose_conv", "TRANSPOSE_CONV", [1, 3])):
        b = (corpus / f"{name}.tflite").read_bytes()
        m = ts.read_model(b)
        sg = m.subgraphs[0]
        o = sg.operators[0]
        want = 0
        for k in inputs:
            t = sg.tensors[int(o.inputs[k])]
            want += len(m.buffers[t.buffer].data) + memory.quantization_bytes(t)
        row = memory.tflite_footprint(b).layers[0]
        assert row.type == op and row.stored_bytes == want > 0 and row.macs > 0, (name, row)
