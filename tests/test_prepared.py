"""The ``freeml_prepare`` entry: operators' requantization words computed by the converter with the
C runtime's arithmetic, their blob layout, the model id that every writer keeps right, and a
cross-check against the words the C runtime's own prepare functions compute from the same
scales (on converted models and on models with random scales)."""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freeml_keras import costs, zoo
from freeml_keras.conversion.converter import convert, extract_subgraph, strip_names
from freeml_keras.format import tflite as ts
from freeml_keras.format.metadata import read_metadata, replace_metadata
from freeml_keras.format.prepared import (PREPARED_NAME, PREPARED_VERSION, PrepareError, activation_range,
                                          ensure_prepared, has_current_prepared, model_id,
                                          operator_words, prepared_blob, quantize_multiplier,
                                          read_prepared, round_f, with_prepared)
from freeml_keras.keras import keras

INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
L = keras.layers


# ---- reference arithmetic, written independently (exact rationals) ----------------------------

def ref_quantize_multiplier(m: float):
    """TFLite's QuantizeMultiplier on the exact value of the double ``m``: m = q * 2^(e - 31)
    with q = round-half-up(m * 2^(31 - e)), 2^(e-1) <= m < 2^e."""
    if m != m or m < 0 or m > 1e30:
        return False, 0, 0
    if m == 0:
        return True, 0, 0
    x = Fraction(m)
    e = x.numerator.bit_length() - x.denominator.bit_length()
    while Fraction(2) ** (e - 1) > x:
        e -= 1
    while Fraction(2) ** e <= x:
        e += 1
    q = math.floor(x * Fraction(2) ** (31 - e) + Fraction(1, 2))
    if q == 2**31:
        q, e = q // 2, e + 1
    if e < -31:
        q, e = 0, 0
    return True, q, e


def ref_round(v: float) -> int:
    if v != v:
        return 0
    if abs(v) >= 2147483647.0:
        return INT32_MIN if v < 0 else INT32_MAX
    r = math.floor(abs(Fraction(v)) + Fraction(1, 2))
    return -r if v < 0 else r


# ---- the arithmetic ---------------------------------------------------------------------------

def test_quantize_multiplier_known_values():
    assert quantize_multiplier(0.0) == (True, 0, 0)
    assert quantize_multiplier(0.5) == (True, 2**30, 0)
    assert quantize_multiplier(1.0) == (True, 2**30, 1)
    assert quantize_multiplier(0.75) == (True, 3 * 2**29, 0)
    assert quantize_multiplier(3.0) == (True, 3 * 2**29, 2)
    # ties of the 31-bit rounding go up; a round-up to 2^31 renormalizes
    assert quantize_multiplier((2**30 + 0.5) / 2**31) == (True, 2**30 + 1, 0)
    assert quantize_multiplier((2**30 + 1.5) / 2**31) == (True, 2**30 + 2, 0)
    assert quantize_multiplier((2**30 + 0.4999) / 2**31) == (True, 2**30, 0)
    assert quantize_multiplier((2**31 - 0.5) / 2**31) == (True, 2**30, 1)
    # below 2^-32: zero (shift < -31)
    assert quantize_multiplier(2.0**-32) == (True, 2**30, -31)
    assert quantize_multiplier(2.0**-33) == (True, 0, 0)
    assert quantize_multiplier(5e-324) == (True, 0, 0)
    assert quantize_multiplier(1e30)[0] and not quantize_multiplier(1.0000001e30)[0]
    for bad in (float("nan"), float("inf"), -1e-9, -1.0):
        assert quantize_multiplier(bad) == (False, 0, 0)
    # what TFLite Micro's reference computes for a typical conv scale (known value)
    ok, q, shift = quantize_multiplier(0.0035294117647058825)
    assert ok and shift == -8 and q == round(0.0035294117647058825 * 2**39)


def test_round_f_ties_away_from_zero_and_saturates():
    cases = {2.5: 3, -2.5: -3, 0.5: 1, -0.5: -1, 1.5: 2, 0.49999999999999994: 0, -0.49999999999999994: 0,
             0.0: 0, -0.0: 0, 127.49999: 127, -127.5: -128, 2147483646.5: 2147483647,
             2147483647.0: INT32_MAX, -2147483647.0: INT32_MIN, 1e300: INT32_MAX, -1e300: INT32_MIN,
             float("inf"): INT32_MAX, float("-inf"): INT32_MIN, float("nan"): 0}
    for v, want in cases.items():
        assert round_f(v) == want, v
    # agrees with numpy away from ties
    for v in np.random.default_rng(0).normal(0, 1e4, 2000):
        if abs(v - math.floor(v) - 0.5) > 1e-6:
            assert round_f(v) == int(np.rint(v)), v


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.floats(min_value=0.0, max_value=1e31, allow_nan=False, allow_infinity=False))
def test_quantize_multiplier_equals_exact_reference_on_doubles(m):
    assert quantize_multiplier(m) == ref_quantize_multiplier(m)


float32s = st.floats(min_value=2.0**-100, max_value=2.0**33, width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=600, deadline=None, derandomize=True)
@given(float32s, float32s, float32s, st.integers(0, 2**8))
def test_quantize_multiplier_on_scale_products(a, b, c, few_bits):
    """m = (in * filter) / out of random float32 scales (and scales with few mantissa bits, so
    that exact ties of the 31-bit rounding occur), as the conv kernels form it in double."""
    if few_bits:   # mantissas with at most 8 bits: products tie often
        a = float(np.float32(math.ldexp(few_bits | 1, math.frexp(a)[1] - 9)))
    m = float(np.float32(a)) * float(np.float32(b)) / float(np.float32(c))
    assert quantize_multiplier(m) == ref_quantize_multiplier(m)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False))
def test_round_f_equals_exact_reference(v):
    assert round_f(v) == ref_round(v)
    assert round_f(v + 0.5 - (v % 1)) == ref_round(v + 0.5 - (v % 1))   # near ties


def test_activation_ranges():
    s = np.float32(6 / 255)
    assert activation_range(0, s, -128) == (-128, 127)
    assert activation_range(1, s, -128) == (-128, 127)                 # RELU: lower 0 at zp
    assert activation_range(1, s, -10) == (-10, 127)
    # RELU6: 6 / s in float32, rounded
    assert activation_range(3, s, -128) == (-128, -128 + round_f(np.float32(6) / s))
    assert activation_range(3, np.float32(0.1), 0) == (0, 60)
    # RELU_N1_TO_1 with a tie: the float32 quotient 1 / 0.4f is exactly 2.5 -> 3 (away from zero)
    assert np.float32(1) / np.float32(0.4) == np.float32(2.5)
    assert activation_range(2, np.float32(0.4), 0) == (-3, 3)
    assert activation_range(2, np.float32(2 / 255), 0) == (-127, 127)
    assert activation_range(2, np.float32(0.25), 3) == (-1, 7)
    # a bound saturated to INT32_MIN plus a negative zero point wraps in the runtime's int32
    lo, hi = activation_range(2, np.float32(1e-30), -15)
    assert lo == 2147483647 - 15 + 1 and hi == min(127, INT32_MAX - 15)
    for bad in ((4, s, 0), (-1, s, 0), (0, np.float32(0), 0), (1, np.float32(-1), 0),
                (0, np.float32("nan"), 0)):
        assert activation_range(*bad) is None


# ---- models -----------------------------------------------------------------------------------

def _randomize(model, seed, zero_fraction=0.0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if ws:
            new = [rng.normal(0, 0.5, w.shape).astype(np.float32) for w in ws]
            if zero_fraction and new[0].ndim > 1 and new[0].size >= 8:
                new[0][np.abs(new[0]) < np.quantile(np.abs(new[0]), zero_fraction)] = 0.0
            layer.set_weights(new)
    return model


@pytest.fixture(scope="module")
def models():
    """Converted models covering every operator kind with words, dense and sparse (DENSIFY),
    and an exit model (head subgraph with QUANTIZE and CONCATENATION)."""
    out = {}
    keras.utils.set_random_seed(3)
    inp = keras.Input((10, 10, 3))
    a = L.Conv2D(8, 3, padding="same", activation="relu6")(inp)
    b = L.DepthwiseConv2D(3, padding="same", activation="relu")(a)
    x = L.Activation("relu")(L.Add()([b, L.Conv2D(8, 1)(inp)]))
    x = L.Concatenate()([L.MaxPooling2D(2)(x), L.AveragePooling2D(2)(L.Conv2D(5, 1)(x))])
    d = L.Dense(12, activation="relu")(L.Flatten()(x))
    y = L.Activation("softmax")(L.Dense(10)(L.Concatenate()([d, L.GlobalAveragePooling2D()(x)])))
    mixed = _randomize(keras.Model(inp, y), 1, zero_fraction=0.7)
    calib = np.random.default_rng(0).normal(0, 1, (32, 10, 10, 3)).astype(np.float32)
    out["mixed_dense"] = convert(mixed, calib, sparse=False)
    out["mixed_sparse"] = convert(mixed, calib, sparse=True)
    cnn = _randomize(zoo.build("cnn_s", (12, 12, 1), 10, width=0.25), 2, zero_fraction=0.7)
    from freeml_keras.exits import attach_global_exit
    em = attach_global_exit(cnn, ["pool1", "conv2", "fc1"], pooled_size=[2, 1, None])
    rng = np.random.default_rng(0)
    em.set_head_weights(rng.normal(0, 0.3, (sum(em.pooled_dims), 10)), rng.normal(0, 0.1, 10))
    x12 = rng.normal(0.5, 0.3, (48, 12, 12, 1)).astype(np.float32)
    out["exits_sparse"] = convert(cnn, x12, sparse=True, exit_model=em)
    imu = zoo.build("imu_cnn", (40, 6), 5, width=0.25)
    out["imu_dense"] = convert(imu, rng.normal(0, 1, (32, 40, 6)).astype(np.float32), sparse=False)
    return out


def _strip_entry(b: bytes) -> bytes:
    """The same flatbuffer without the freeml_prepare entry."""
    m = ts.read_model(b)
    m.metadata = [md for md in m.metadata or [] if md.name not in (PREPARED_NAME, PREPARED_NAME.encode())]
    return ts.write_model(m)


def _expected_count(m, sg, op) -> int:
    name = ts.op_name(m, op.opcodeIndex)
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        shape = list(sg.tensors[int(op.inputs[1])].shape)
        return 2 + 2 * shape[3 if name == "DEPTHWISE_CONV_2D" else 0]
    if name == "QUANTIZE":
        return 2 if sg.tensors[int(op.inputs[0])].type == ts.TensorType.INT8 else 0
    if name == "SOFTMAX":              # 4 words, then the exp table (4 bytes per n_exp, 1 per n_small)
        return 4  # + the table's words, checked by the caller from its lengths
    return {"AVERAGE_POOL_2D": 2, "MAX_POOL_2D": 2, "ADD": 8, "MEAN": 2}.get(name, 0)


def test_converted_models_carry_the_entry_with_the_words_of_each_operator(models):
    kinds = set()
    for key, b in models.items():
        p = read_prepared(b)
        assert p is not None and p.version == PREPARED_VERSION, key
        assert p.model_id == model_id(b) != 0
        m = ts.read_model(b)
        assert sorted(p.subgraphs) == list(range(len(m.subgraphs)))
        assert [p.subgraphs[i] for i in range(len(m.subgraphs))] == operator_words(b)
        for si, sg in enumerate(m.subgraphs):
            assert len(p.subgraphs[si]) == len(sg.operators)
            for op, words in zip(sg.operators, p.subgraphs[si]):
                name = ts.op_name(m, op.opcodeIndex)
                kinds.add(name)
                table = (4 * (words[3] & 0xFFFF) + (words[3] >> 16) + 3) // 4 if name == "SOFTMAX" else 0
                assert len(words) == _expected_count(m, sg, op) + table, (key, name)
                if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D",
                            "AVERAGE_POOL_2D", "ADD"):
                    assert -128 <= words[0] <= words[1] <= 127
                if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
                    assert all(2**30 <= q < 2**31 and -31 <= s <= 30
                               for q, s in zip(words[2::2], words[3::2]))
                if name == "SOFTMAX":
                    assert 2**30 <= words[0] < 2**31 and 0 <= words[1] <= 31 and words[2] < 0
                    n_exp, n_small = words[3] & 0xFFFF, words[3] >> 16
                    assert 1 <= n_exp <= n_small <= 256          # the largest class's exp is there
        assert has_current_prepared(b)
        assert ensure_prepared(b).data == b
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "AVERAGE_POOL_2D",
            "ADD", "SOFTMAX", "MEAN", "QUANTIZE", "DENSIFY", "CONCATENATION", "RESHAPE"} <= kinds


def test_blob_layout_offsets_and_alignment(models):
    for key, b in models.items():
        span = ts.prepared_data_span(b)
        assert span is not None
        at, n = span
        assert at % 4 == 0, "the entry's data is 4-byte aligned in the file"
        blob = b[at:at + n]
        assert blob[8:12] == model_id(b).to_bytes(4, "little")
        assert blob[:8] + bytes(4) + blob[12:] == prepared_blob(b)
        magic, version, n_sg, mid, resident = struct.unpack_from("<4sHHII", blob, 0)
        assert (magic, version, mid) == (b"FMLP", PREPARED_VERSION, model_id(b))
        m = ts.read_model(b)
        assert n_sg == len(m.subgraphs)
        # what a prepared device keeps: header, records and SOFTMAX's words (its table, read in
        # place), which come right after the records; the prefix of the file ends there
        softmax = [(i, k) for i, sg in enumerate(m.subgraphs) for k, op in enumerate(sg.operators)
                   if ts.op_name(m, op.opcodeIndex) == "SOFTMAX"]
        assert resident == 16 + 8 * n_sg + 4 * sum(len(read_prepared(b).words(i, k)) for i, k in softmax)
        assert ts.data_prefix(b) >= at + resident
        words_seen = []
        for i in range(n_sg):
            sgi, n_ops, table = struct.unpack_from("<HHI", blob, 16 + 8 * i)
            assert sgi == i and n_ops == len(m.subgraphs[i].operators)
            assert table % 4 == 0 and 16 + 8 * n_sg <= table and table + 8 * n_ops <= n
            for k in range(n_ops):
                off, cnt = struct.unpack_from("<II", blob, table + 8 * k)
                if cnt == 0:
                    assert off == 0
                    continue
                assert off % 4 == 0 and off + 4 * cnt <= n
                assert (off + 4 * cnt <= resident) == ((i, k) in softmax)
                words_seen.append((off, cnt))
                assert list(struct.unpack_from(f"<{cnt}i", blob, off)) == read_prepared(b).words(i, k)
        # words do not overlap and fill the blob's tail exactly
        words_seen.sort()
        for (o1, c1), (o2, _) in zip(words_seen, words_seen[1:]):
            assert o1 + 4 * c1 <= o2
        assert words_seen[-1][0] + 4 * words_seen[-1][1] == n


def test_model_id_is_kept_right_by_every_writer(models):
    b = models["exits_sparse"]
    words = read_prepared(b).subgraphs

    def same(x: bytes):
        p = read_prepared(x)
        assert p is not None and p.subgraphs == words
        assert p.model_id == model_id(x)
        assert has_current_prepared(x)
        return p.model_id

    ids = {same(b)}
    stripped = strip_names(b)
    assert len(stripped) < len(b)
    ids.add(same(stripped))
    with_c = costs.with_costs(b, costs.CostModel.load("msp430"))
    ids.add(same(with_c))
    ids.add(same(costs.with_costs(stripped, [1] * len(read_metadata(b).ops), target="msp430",
                                  unit="cycles", source="measured")))
    md = read_metadata(b)
    md.info["note"] = "changed"
    ids.add(same(replace_metadata(ts.read_model(b), md)))
    assert len(ids) == 5, "every different file has its own id"
    # with_prepared again: the same bytes (the entry's buffer is reused, the file does not grow)
    assert with_prepared(b) == b
    assert len(ts.read_model(with_prepared(with_c)).buffers) == len(ts.read_model(with_c).buffers)
    # extract_subgraph: an entry of its own for the one subgraph left
    head_index = read_metadata(b).head_subgraph
    head = extract_subgraph(b, head_index)
    p = read_prepared(head)
    assert p.subgraphs == {0: words[head_index]} and p.model_id == model_id(head)
    main = extract_subgraph(b, 0)
    assert read_prepared(main).subgraphs == {0: words[0]}


def test_model_id_detects_any_changed_byte(models):
    b = models["imu_dense"]
    span = ts.prepared_data_span(b)
    stored = read_prepared(b).model_id
    fb = ts.schema.Model.GetRootAsModel(b, 0)
    weights = next(fb.Buffers(i)._tab for i in range(fb.BuffersLength())
                   if fb.Buffers(i).DataLength() > 64 and i != fb.Metadata(0).Buffer())
    w_at = weights.Vector(weights.Offset(4))
    # a weight byte, the entry's words, its header, the file's first and last byte
    for at in (w_at, w_at + 37, span[0] + 20, span[0] + 4, 4, len(b) - 1):
        x = bytearray(b)
        x[at] ^= 0x01
        assert model_id(bytes(x)) != stored, at
    with pytest.raises(ts.TFLiteFormatError):
        model_id(b"\xff\xff\xff\x7f" + b[4:])        # a root offset past the end
    # the id's own bytes do not count
    x = bytearray(b)
    x[span[0] + 8:span[0] + 12] = b"\xff\xff\xff\xff"
    assert model_id(bytes(x)) == stored
    # FNV-1a 32 known values
    assert ts.fnv1a32(b"") == 0x811C9DC5 and ts.fnv1a32(b"a") == 0xE40C292C
    assert ts.fnv1a32(b"foobar") == 0xBF9CF968


def test_write_model_leaves_other_entries_alone(models):
    m = ts.read_model(_strip_entry(models["imu_dense"]))
    buf = ts.schema.BufferT()
    buf.data = np.frombuffer(b"NOTP" + bytes(20), dtype=np.uint8)
    m.buffers.append(buf)
    e = ts.schema.MetadataT()
    e.name, e.buffer = PREPARED_NAME, len(m.buffers) - 1
    m.metadata = list(m.metadata or []) + [e]
    out = ts.write_model(m)
    at, n = ts.prepared_data_span(out)
    assert out[at:at + n] == b"NOTP" + bytes(20)        # not an FMLP blob: not stamped
    with pytest.raises(PrepareError, match="not b'FMLP'"):
        read_prepared(out)
    assert not has_current_prepared(out)
    fixed = with_prepared(out)                           # replaced, in the same buffer
    assert has_current_prepared(fixed)
    assert len(ts.read_model(fixed).buffers) == len(m.buffers)


def test_entry_is_added_when_missing_and_the_runtime_runs_it_unchanged(models):
    from freeml_keras.runtime import Interpreter
    b = models["mixed_sparse"]
    plain = _strip_entry(b)
    assert read_prepared(plain) is None and not has_current_prepared(plain)
    again = ensure_prepared(plain).data
    assert read_prepared(again).subgraphs == read_prepared(b).subgraphs
    x = np.random.default_rng(1).integers(-128, 128, (1, 10, 10, 3), dtype=np.int8)
    assert np.array_equal(Interpreter(b).invoke(x)[0], Interpreter(plain).invoke(x)[0])


def test_target_build_files_hold_a_prepared_model(models, tmp_path):
    from freeml_keras.targets.codegen import write_model_build_files
    plain = _strip_entry(models["imu_dense"])
    built = write_model_build_files(plain, tmp_path)
    assert has_current_prepared(built)
    text = (tmp_path / "model_data.c").read_text() if (tmp_path / "model_data.c").exists() else \
        (tmp_path / "model_data.h").read_text()
    assert f"{len(built.data)} bytes" in text or str(len(built.data)) in text
    # a model that already has a current entry is built as it is
    assert write_model_build_files(models["imu_dense"], tmp_path).data == models["imu_dense"]


def test_inspect_shows_the_entry_and_its_model_id(models, tmp_path, capsys):
    import json

    from freeml_keras.cli import main
    b = models["exits_sparse"]
    path = tmp_path / "m.tflite"
    path.write_bytes(b)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"model id 0x{model_id(b):08x} (matches the bytes)" in out and f"freeml_prepare v{PREPARED_VERSION}" in out
    assert main(["inspect", str(path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["prepared"]
    assert d["present"] and d["id_matches"] and d["words_match"] and d["model_id"] == model_id(b)
    assert d["subgraphs"] == 2
    fb = ts.schema.Model.GetRootAsModel(b, 0)
    w = next(fb.Buffers(i)._tab for i in range(fb.BuffersLength()) if fb.Buffers(i).DataLength() > 64)
    x = bytearray(b)
    x[w.Vector(w.Offset(4)) + 3] ^= 0x10         # another weight: another model
    path.write_bytes(bytes(x))
    assert main(["inspect", str(path)]) == 0
    assert "does NOT match the bytes" in capsys.readouterr().out
    path.write_bytes(_strip_entry(b))
    assert main(["inspect", str(path)]) == 0
    assert "precomputed operator parameters: none" in capsys.readouterr().out


def _with_scale(b: bytes, op_name: str, role: str, value: float) -> tuple[bytes, int, int]:
    m = ts.read_model(b)
    sg = m.subgraphs[0]
    k, op = next((k, o) for k, o in enumerate(sg.operators) if ts.op_name(m, o.opcodeIndex) == op_name)
    t = int(op.outputs[0] if role == "out" else op.inputs[0])
    sg.tensors[t].quantization.scale = np.full(len(sg.tensors[t].quantization.scale), value, np.float32)
    return ts.write_model(m), k, t


def test_scales_that_cannot_be_prepared_are_refused_by_operator_and_tensor(models):
    b = models["mixed_dense"]
    bad, k, t = _with_scale(b, "CONV_2D", "out", 0.0)
    with pytest.raises(PrepareError, match=rf"operator {k} \(CONV_2D\): tensor {t}"):
        prepared_blob(bad)
    bad, k, t = _with_scale(b, "MEAN", "in", -1.0)
    with pytest.raises(PrepareError, match=rf"operator {k} \(MEAN\): tensor {t}.*not positive"):
        with_prepared(bad)
    m = ts.read_model(b)
    sg = m.subgraphs[0]
    k = next(k for k, o in enumerate(sg.operators) if ts.op_name(m, o.opcodeIndex) == "SOFTMAX")
    sg.operators[k].builtinOptions.beta = 1e-12
    with pytest.raises(PrepareError, match=rf"operator {k} \(SOFTMAX\): tensor \d+.*beta 9.99"):
        with_prepared(ts.write_model(m))
    # an input scale 2^40 times the output's: shift 41 > 30
    m = ts.read_model(b)
    sg = m.subgraphs[0]
    k = next(k for k, o in enumerate(sg.operators) if ts.op_name(m, o.opcodeIndex) == "FULLY_CONNECTED")
    sg.tensors[int(sg.operators[k].inputs[0])].quantization.scale = np.array([2.0**40], np.float32)
    with pytest.raises(PrepareError, match=rf"operator {k} \(FULLY_CONNECTED\).*out of range"):
        with_prepared(ts.write_model(m))


# ---- cross-check with the C runtime's own prepare ----------------------------------------------

# Prints the parameters fm_init_subgraph computes, one line per operator: "sg op code words...";
# MEAN: mult and shift after the runtime's count adjustment, then the count.
_DUMP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include "freeml/fm_internal.h"
static uint8_t model[1 << 22];
int main(int argc, char **argv)
{
    FILE *f = fopen(argv[1], "rb");
    uint32_t len = (uint32_t)fread(model, 1, sizeof model, f);
    int nsg = atoi(argv[2]), sg;
    fclose(f);
    for (sg = 0; sg < nsg; sg++) {
        fm_interp it;
        uint8_t *state = malloc(1 << 20), *arena = malloc(1 << 22);
        uint16_t k;
        if (fm_init_subgraph(&it, model, len, (uint16_t)sg, state, 1 << 20, arena, 1 << 22) != FM_OK) {
            printf("%d refused\n", sg);
            continue;
        }
        for (k = 0; k < it.num_ops; k++) {
            const fm_op *op = FM_OP(&it, k);
            int32_t c;
            printf("%d %d %d", sg, k, (int)op->code);
            switch (op->code) {
            case FM_OP_CONV_2D: case FM_OP_DEPTHWISE_CONV_2D:
                printf(" %ld %ld", (long)op->p.conv.out.min, (long)op->p.conv.out.max);
                for (c = 0; c < op->p.conv.out_c; c++)
                    printf(" %ld %d", (long)op->p.conv.mult[c], op->p.conv.shift[c]);
                break;
            case FM_OP_FULLY_CONNECTED:
                printf(" %ld %ld", (long)op->p.fc.out.min, (long)op->p.fc.out.max);
                for (c = 0; c < op->p.fc.out_c; c++)
                    printf(" %ld %d", (long)op->p.fc.mult[c], op->p.fc.shift[c]);
                break;
            case FM_OP_MAX_POOL_2D: case FM_OP_AVERAGE_POOL_2D:
                printf(" %ld %ld", (long)op->p.pool.act_min, (long)op->p.pool.act_max);
                break;
            case FM_OP_ADD: {
                const fm_add_params *p = &op->p.add;
                printf(" %ld %ld %ld %ld %ld %ld %ld %ld", (long)p->act_min, (long)p->act_max,
                       (long)p->in1_mult, (long)p->in1_shift, (long)p->in2_mult, (long)p->in2_shift,
                       (long)p->out_mult, (long)p->out_shift);
                break; }
            case FM_OP_SOFTMAX:
                printf(" %ld %ld %ld", (long)op->p.softmax.input_multiplier,
                       (long)op->p.softmax.input_left_shift, (long)op->p.softmax.diff_min);
                break;
            case FM_OP_MEAN:
                printf(" %ld %ld %ld", (long)op->p.mean.mult, (long)op->p.mean.shift, (long)op->p.mean.count);
                break;
            case FM_OP_QUANTIZE:
                if (it.tensors[op->in[0]].type == FM_INT8)
                    printf(" %ld %ld", (long)op->p.rq.mult, (long)op->p.rq.shift);
                break;
            default: break;
            }
            printf("\n");
        }
        free(state);
        free(arena);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def c_dump(tmp_path_factory):
    """The C runtime's prepare, built with the host compiler (skipped without one); a dump that
    no longer builds against the runtime's internals (fm_op parameters) fails the tests that use
    it: the comparison must not go quiet when the structures change."""
    from freeml_keras.targets.toolchain import RUNTIME_DIR
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("prepared_c")
    (d / "dump.c").write_text(_DUMP_C)
    srcs = sorted(str(p) for p in (RUNTIME_DIR / "src").rglob("*.c"))
    r = subprocess.run([cc, "-std=c99", "-O2", f"-I{RUNTIME_DIR / 'include'}", *srcs, str(d / "dump.c"),
                        "-o", str(d / "dump")], capture_output=True, text=True)
    if r.returncode:
        pytest.fail(f"the runtime's internals changed, the dump does not build (update _DUMP_C): {r.stderr[-500:]}")
    return d


def _mean_adjust(mult: int, shift: int, count: int) -> tuple[int, int]:
    """fm_mean_multiplier."""
    s = min(count.bit_length() - 1, 32, 31 + shift)
    s = max(s, 0)
    q = mult << s
    return (abs(q) // count) * (1 if q >= 0 else -1), shift - s


def _c_words(c_dump, b: bytes) -> dict:
    path = c_dump / "model.tflite"
    path.write_bytes(_strip_entry(b))          # the runtime computes from the scales alone
    n = len(ts.read_model(b).subgraphs)
    out = subprocess.run([str(c_dump / "dump"), str(path), str(n)], capture_output=True, text=True,
                         check=True).stdout
    res = {}
    for line in out.splitlines():
        f = line.split()
        if f[1] == "refused":
            res[int(f[0])] = None
            continue
        res.setdefault(int(f[0]), []).append((int(f[2]), [int(v) for v in f[3:]]))
    return res


def _compare_with_c(c_dump, b: bytes) -> str:
    """'same', 'both refuse' or raises AssertionError on any difference."""
    c = _c_words(c_dump, b)
    try:
        ours = operator_words(b)
    except PrepareError:
        assert any(v is None for v in c.values()), "we refuse scales the runtime accepts"
        return "both refuse"
    for si, ops in enumerate(ours):
        assert c[si] is not None, f"the runtime refuses subgraph {si}, we computed words for it"
        assert len(c[si]) == len(ops)
        for k, (w, (code, cw)) in enumerate(zip(ops, c[si])):
            if code == 40:                      # MEAN: the runtime keeps the count-adjusted pair
                w, cw = list(_mean_adjust(w[0], w[1], cw[2])), cw[:2]
            if code == 25:                      # SOFTMAX: the exp table is checked by the runtime
                w = w[:3]                       # itself when it reads it (a model with the entry)
            assert w == cw, (si, k, code, w[:6], cw[:6])
    return "same"


def test_words_equal_the_c_runtimes_own_prepare(models, c_dump):
    for key, b in models.items():
        assert _compare_with_c(c_dump, b) == "same", key


_SAME_QUANT = ("MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "CONCATENATION")


def _random_scales(b: bytes, rng) -> bytes:
    """``b`` with random scales and zero points (kept equal where the runtime requires it),
    random fused activations and softmax betas; DENSIFY outputs sometimes without quantization
    (the runtime then reads the CSR tensor's scales)."""
    m = ts.read_model(b)
    extreme = rng.random() < 0.25
    for sg in m.subgraphs:
        parent = list(range(len(sg.tensors)))

        def find(i):
            while parent[i] != i:
                i = parent[i]
            return i
        fixed = set()
        for op in sg.operators:
            name = ts.op_name(m, op.opcodeIndex)
            if name in _SAME_QUANT:
                ins = [int(i) for i in op.inputs if i >= 0] if name == "CONCATENATION" else [int(op.inputs[0])]
                for i in ins:
                    parent[find(i)] = find(int(op.outputs[0]))
            elif name == "SOFTMAX":
                fixed.add(int(op.outputs[0]))
            elif name == "DENSIFY" and rng.random() < 0.5:
                sg.tensors[int(op.outputs[0])].quantization = None
            o = op.builtinOptions
            if o is not None and hasattr(o, "fusedActivationFunction") and name != "CONCATENATION" \
                    and rng.random() < 0.5:
                o.fusedActivationFunction = int(rng.integers(0, 4))
            if o is not None and hasattr(o, "beta"):
                o.beta = float(np.float32(rng.uniform(0.05, 4)))
        fixed = {find(i) for i in fixed}
        chosen = {}
        for i, t in enumerate(sg.tensors):
            q = t.quantization
            if q is None or q.scale is None or not len(q.scale) or t.type != ts.TensorType.INT8 \
                    or find(i) in fixed:
                continue
            n = len(q.scale)
            if find(i) not in chosen:
                if extreme:
                    pool = np.array([0.0, 1e-45, 1e-38, 2.0**-31, 2.0**-32, 0.5, 1.0, 3e38, np.inf,
                                     np.nan], np.float32)
                    s = np.where(rng.random(n) < 0.3, rng.choice(pool, n),
                                 rng.uniform(1, 2, n) * 2.0 ** rng.integers(-40, 20, n))
                else:
                    mant = rng.uniform(1, 2, n)
                    if rng.random() < 0.3:
                        mant = np.round(mant * 8) / 8        # few mantissa bits: ties
                    s = mant * 2.0 ** rng.integers(-14, 3, n)
                zp = np.asarray(q.zeroPoint).copy() if n > 1 else np.array([rng.integers(-128, 128)])
                chosen[find(i)] = (s.astype(np.float32), zp)
            s, zp = chosen[find(i)]
            q.scale = s.copy() if len(s) == n else np.full(n, s[0], np.float32)
            if len(zp) == len(q.zeroPoint):
                q.zeroPoint = zp.astype(np.int64).copy()
    return ts.write_model(m)


def test_words_equal_the_c_runtime_on_random_scales(models, c_dump):
    rng = np.random.default_rng(2024)
    results = {"same": 0, "both refuse": 0}
    for key, b in sorted(models.items()):
        for _ in range(30):
            results[_compare_with_c(c_dump, _random_scales(b, rng))] += 1
    assert results["same"] >= 60, results
