"""UNIDIRECTIONAL_SEQUENCE_LSTM (what the TFLite converter makes of a Keras LSTM, int8 with an
int16 cell state): single-operator models drawn by hypothesis (shapes, batch- and time-major,
quantization, cell clip) and a Keras LSTM converted here, each invoked several times in
sequence (the hidden and cell states are variable tensors carried from one invocation to the
next), give TFLite Micro's outputs, whole, in resumable steps, with precomputed parameters and
under power failures with the states in NVM; what the kernel does not run is refused by name;
mutated copies never crash the runtime under AddressSanitizer + UBSan. A Keras GRU, unrolled (the
only way it converts to int8), runs bit-exact."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

from conftest import fixed_and_fresh
from freeml_keras.format import tflite as ts
from freeml_keras.format.prepared import with_prepared
from freeml_keras.runtime import Interpreter, RuntimeModelError, operator_support
from freeml_keras.runtime.build import make_host
from freeml_keras.runtime.intermittent import run_with_power_failures

ROOT = Path(__file__).resolve().parents[1]


def lstm_model(c: dict) -> bytes:
    """One UNIDIRECTIONAL_SEQUENCE_LSTM operator as the converter writes it: int8 input and
    output [batch, time, input] (or time-major), int8 weights with one scale each (four input
    and four recurrent matrices), int32 biases of the input * weights scale, an int8 hidden
    state and an int16 cell state as variable tensors (not graph inputs), tanh cell activation."""
    S, T = ts.schema, ts.TensorType
    rng = np.random.default_rng(c["seed"])
    B, N, I, H = c["batch"], c["time"], c["input"], c["state"]
    s_in, s_h = (float(np.float32(v)) for v in (c["s_in"], c["s_h"]))
    s_c = float(np.float32(c["s_c"]))
    seq = [N, B] if c["time_major"] else [B, N]
    ins = [ts.tensor_spec(seq + [I], scale=s_in, zp=c["in_zp"])]
    w_scales = [float(np.float32(v)) for v in c["s_w"]]
    for g in range(4):
        ins.append(ts.tensor_spec([H, I], scale=w_scales[g], data=rng.integers(-127, 128, (H, I))))
    for g in range(4):
        ins.append(ts.tensor_spec([H, H], scale=w_scales[4 + g], data=rng.integers(-127, 128, (H, H))))
    ins += [None] * 3
    for g in range(4):
        ins.append(ts.tensor_spec([H], T.INT32, scale=float(np.float32(s_in) * np.float32(w_scales[g])),
                                  data=rng.integers(-c["bias"], c["bias"] + 1, H)))
    ins += [None] * 2
    ins += [ts.tensor_spec([B, H], scale=s_h, zp=c["h_zp"]), ts.tensor_spec([B, H], T.INT16, scale=s_c, zp=0)]
    ins += [None] * 4
    o = S.UnidirectionalSequenceLSTMOptionsT()
    o.fusedActivationFunction = S.ActivationFunctionType.TANH
    o.cellClip, o.timeMajor = float(c["clip"]), bool(c["time_major"])
    b = ts.op_model("UNIDIRECTIONAL_SEQUENCE_LSTM", ins, [ts.tensor_spec(seq + [H], scale=s_h, zp=c["h_zp"])], o)
    m = ts.read_model(b)
    sg = m.subgraphs[0]
    states = [int(sg.operators[0].inputs[k]) for k in (18, 19)]
    for t in states:
        sg.tensors[t].isVariable = True
    sg.inputs = [i for i in sg.inputs if int(i) not in states]
    return ts.write_model(m)


@st.composite
def lstm_case(draw):
    return dict(batch=draw(st.integers(1, 2)), time=draw(st.integers(1, 4)), input=draw(st.integers(1, 7)),
                state=draw(st.integers(1, 6)), time_major=draw(st.booleans()),
                s_in=draw(st.floats(0.005, 0.1)), s_h=draw(st.floats(1 / 256, 1 / 64)),
                s_w=[draw(st.floats(0.001, 0.03)) for _ in range(8)],
                # the converter's cell scale is a power of two; any other is rounded to one
                s_c=2.0 ** -draw(st.integers(9, 15)) * draw(st.sampled_from([1.0, 1.0, 0.8, 1.3])),
                clip=draw(st.sampled_from([0.0, 10.0, 1.5, 0.3])), in_zp=draw(st.integers(-128, 127)),
                h_zp=draw(st.integers(-20, 20)), bias=draw(st.sampled_from([100, 5000, 100_000])),
                seed=draw(st.integers(0, 10_000)))


def _tflm_sequence(b: bytes, xs) -> list[np.ndarray]:
    from tflite_micro import runtime
    tflm = runtime.Interpreter.from_bytes(b, arena_size=1 << 16)
    refs = []
    for x in xs:
        tflm.set_input(x, 0)
        tflm.invoke()
        refs.append(tflm.get_output(0).copy())
    return refs


def _inputs(b: bytes, n: int, seed: int) -> np.ndarray:
    sg = ts.read_model(b).subgraphs[0]
    shape = [int(d) for d in sg.tensors[int(sg.inputs[0])].shape]
    return np.random.default_rng(seed).integers(-128, 128, [n] + shape).astype(np.int8)


def _sequence_matches(b: bytes, seed: int, n: int = 4) -> tuple[np.ndarray, list[np.ndarray]]:
    xs = _inputs(b, n, seed)
    refs = _tflm_sequence(b, xs)
    for model in (b, with_prepared(b)):
        whole, stepped = Interpreter(model), Interpreter(model)
        for k, x in enumerate(xs):
            assert np.array_equal(whole.invoke(x)[0].reshape(refs[k].shape), refs[k]), k
            out = stepped.invoke_in_steps(x, max_units=1 + k % 3)[0][0]
            assert np.array_equal(out.reshape(refs[k].shape), refs[k]), k
    return xs, refs


@fixed_and_fresh(lstm_case(), max_examples=10)
def test_lstm_sequence_bit_exact(c):
    """The LSTM operator invoked 4 times in sequence: TFLite Micro's outputs, with computed and
    precomputed parameters, whole and in resumable steps of 1-3 units."""
    _sequence_matches(lstm_model(c), c["seed"])


def test_sigmoid_and_tanh_knots_are_tflite_micros():
    """The 256 knots in kernels/lstm.c are the ones TFLite Micro's int16 TANH interpolates
    between: read back from its kernel with an input scale that lands every 128th input on one
    (input scale 2 / 12288: the table index is x / 128, the output the knot - 32768)."""
    from tflite_micro import runtime
    T = ts.TensorType
    s = float(np.nextafter(np.float32(2.0 / 12288.0), np.float32(1.0)))
    b = ts.op_model("TANH", [ts.tensor_spec([256], T.INT16, scale=s)], [ts.tensor_spec([256], T.INT16, scale=1 / 32768)])
    tflm = runtime.Interpreter.from_bytes(b, arena_size=1 << 14)
    tflm.set_input((np.arange(256) * 128).astype(np.int16), 0)
    tflm.invoke()
    theirs = (tflm.get_output(0).astype(np.int64) + 32768).tolist()
    src = (ROOT / "tflm_port" / "src" / "kernels" / "lstm.c").read_text()
    ours = [int(v) for v in re.findall(r"\d+", src.split("knots[256] = {", 1)[1].split("}", 1)[0])]
    assert ours == theirs


# ---- a Keras LSTM converted by the stock converter ------------------------------------------

def _architectures():
    spec = importlib.util.spec_from_file_location("bench_architectures", ROOT / "bench" / "architectures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def keras_lstm():
    """tf_keras LSTM(10) over 5 steps of 4 features, a Dense head, converted to int8."""
    A = _architectures()
    b = A.convert_int8(A.randomize(A.lstm_model(steps=5, features=4, units=10, classes=3), seed=2))
    xs = _inputs(b, 6, 1)
    return b, xs, _tflm_sequence(b, xs)


def test_keras_lstm_is_the_fused_operator_with_state(keras_lstm):
    b = keras_lstm[0]
    m = ts.read_model(b)
    sg = m.subgraphs[0]
    lstm = next(o for o in sg.operators if ts.op_name(m, o.opcodeIndex) == "UNIDIRECTIONAL_SEQUENCE_LSTM")
    h, c = (sg.tensors[int(lstm.inputs[k])] for k in (18, 19))
    assert h.isVariable and c.isVariable and h.type == ts.TensorType.INT8 and c.type == ts.TensorType.INT16
    assert all(r["supported"] for r in operator_support(b)), operator_support(b)


def test_keras_lstm_sequence_bit_exact(keras_lstm):
    """Six invocations in sequence: the state carries (the same input twice gives two answers,
    in TFLite Micro as here) and every output is TFLite Micro's."""
    b, xs, refs = keras_lstm
    assert len({r.tobytes() for r in refs}) == len(refs)
    again = _tflm_sequence(b, [xs[0], xs[0]])
    assert not np.array_equal(again[0], again[1])
    for model in (b, with_prepared(b)):
        it = Interpreter(model)
        for k, x in enumerate(xs):
            assert np.array_equal(it.invoke(x)[0].reshape(refs[k].shape), refs[k]), k
        fresh = Interpreter(model)                  # a new interpreter starts from reset states
        assert np.array_equal(fresh.invoke(xs[0])[0].reshape(refs[0].shape), refs[0])


def test_keras_lstm_survives_power_failures(keras_lstm, tmp_path):
    """The states in the harness's NVM, kept from one inference to the next; each inference is
    killed at seeded bytes of its commits (six times), resumed, and gives TFLite Micro's
    output (four inferences); the first again under AddressSanitizer + UBSan."""
    b, xs, refs = keras_lstm
    by_phase = {"restart": 0, "work": 0, "commit": 0}
    for k, x in enumerate(xs[:4]):
        rep = run_with_power_failures(b, x, nvm=tmp_path / "nvm", seed=10 + k, max_failures=6, time_fraction=0.0,
                                      granularity=3)
        assert np.array_equal(rep.output, refs[k].ravel()), (k, rep.failures_by_phase)
        for p in by_phase:
            by_phase[p] += rep.failures_by_phase[p]
    print("LSTM power failures by phase:", by_phase)
    # (kills at seeded bytes of the NVM writes, the same on every run: timed kills can land past
    # the end of a short inference and end it early; the MSP430 test below kills inside kernels)
    assert by_phase["commit"] >= 12, by_phase
    asan = make_host("intermittent_asan", "fm_intermittent_asan")
    for k, x in enumerate(xs[:1]):
        rep = run_with_power_failures(b, x, nvm=tmp_path / "nvm_asan", seed=k, max_failures=3, harness=asan,
                                      granularity=2)
        assert np.array_equal(rep.output, refs[k].ravel()), k


CASE = dict(batch=2, time=3, input=5, state=4, time_major=False, s_in=0.03, s_h=1 / 128, s_w=[0.01] * 8,
            s_c=2.0 ** -11, clip=3.0, in_zp=5, h_zp=-3, bias=3000, seed=7)


def test_lstm_operator_survives_power_failures_in_one_unit_steps(tmp_path):
    """Two batches of three steps, atomic steps of one unit: a kill between any two units,
    including between a step's element units and its copy, resumes to TFLite Micro's output."""
    b = lstm_model(CASE)
    xs = _inputs(b, 3, 4)
    refs = _tflm_sequence(b, xs)
    for k, x in enumerate(xs):
        rep = run_with_power_failures(b, x, nvm=tmp_path / "nvm", seed=k, max_failures=8, time_fraction=0.7,
                                      granularity=1)
        assert np.array_equal(rep.output, refs[k].ravel()), (k, rep.failures_by_phase)


def test_lstm_survives_power_failures_on_the_msp430(tmp_path):
    """The LSTM on the MSP430 emulator (16-bit int, parameters precomputed in the model, the
    states in FRAM): four inferences of the same input cut by 12 seeded power failures give
    TFLite Micro's four answers, in order."""
    from freeml_keras.targets import power
    from freeml_keras.targets.toolchain import check_tools
    check_tools("msp430")
    b = lstm_model(dict(CASE, batch=1, time=2, input=3, state=4))
    x = _inputs(b, 1, 4)[0]
    refs = [r.ravel().tolist() for r in _tflm_sequence(b, [x] * 4)]
    assert len({tuple(r) for r in refs}) == 4
    rep = power.run_power_failures("msp430", b, x, tmp_path, failures=12, seed=3, inferences=4)
    assert [list(o) for _, o in rep.outputs[:4]] == refs
    assert rep.failures_by_phase["work"] >= 6, rep.failures_by_phase


def test_target_builds_leave_the_lstm_support_out_unless_the_model_has_one():
    """``FM_LSTM`` in a target's kernel configuration: 1 for a model with an LSTM, 0 otherwise
    (prepare.c's and checkpoint.c's LSTM code left out of the MSP430's FRAM)."""
    from freeml_keras.targets.codegen import kernel_config_source
    assert "#define FM_LSTM 1" in kernel_config_source(lstm_model(CASE))
    other = ts.op_model("TANH", [ts.tensor_spec([4], scale=0.1)], [ts.tensor_spec([4], scale=1 / 128)])
    assert "#define FM_LSTM 0" in kernel_config_source(other)
    assert "#define FM_LSTM 1" in kernel_config_source(None)


def _edited(b: bytes, edit) -> bytes:
    m = ts.read_model(b)
    op = m.subgraphs[0].operators[0]
    op.inputs = np.array(op.inputs, np.int32)            # (writable)
    edit(m)
    return ts.write_model(m)


def test_refusals_name_the_lstm():
    b = lstm_model(CASE)

    def cifg(m):                                   # no input gate: TFLite Micro refuses it too
        m.subgraphs[0].operators[0].inputs[1] = -1
    with pytest.raises(RuntimeModelError, match=r"CIFG.*operator 0 UNIDIRECTIONAL_SEQUENCE_LSTM"):
        Interpreter(_edited(b, cifg))

    def peephole(m):
        ops = m.subgraphs[0].operators[0]
        ops.inputs[9] = ops.inputs[12]
    with pytest.raises(RuntimeModelError, match=r"peepholes.*UNIDIRECTIONAL_SEQUENCE_LSTM"):
        Interpreter(_edited(b, peephole))

    def int16_activations(m):
        sg = m.subgraphs[0]
        sg.tensors[int(sg.operators[0].inputs[0])].type = ts.TensorType.INT16
    with pytest.raises(RuntimeModelError, match=r"unsupported type.*UNIDIRECTIONAL_SEQUENCE_LSTM.*INT16"):
        Interpreter(_edited(b, int16_activations))

    def relu_cell(m):
        m.subgraphs[0].operators[0].builtinOptions.fusedActivationFunction = 1
    with pytest.raises(RuntimeModelError, match=r"cell activation must be tanh"):
        Interpreter(_edited(b, relu_cell))

    def int8_cell(m):
        sg = m.subgraphs[0]
        sg.tensors[int(sg.operators[0].inputs[19])].type = ts.TensorType.INT8
    with pytest.raises(RuntimeModelError, match=r"cell state must be an int16 variable.*'in19' of type INT8 \(a variable\)"):
        Interpreter(_edited(b, int8_cell))


def test_mutated_lstm_models_never_crash(keras_lstm, tmp_path):
    """The LSTM's prepare and eval under AddressSanitizer + UBSan on truncated, bit-flipped and
    overwritten copies of the Keras LSTM model: refused or run, never a crash."""
    import subprocess
    driver = make_host("asan", "fm_driver_asan")
    path = tmp_path / "lstm.tflite"
    path.write_bytes(keras_lstm[0])
    r = subprocess.run([str(driver), "mutate", str(path), "11", "300"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout, r.stderr[-3000:])
    fields = r.stdout.split()
    print(r.stdout.strip())
    assert int(fields[3]) > 0 and int(fields[5]) > 0


# ---- GRU -------------------------------------------------------------------------------------

def test_keras_gru_unrolled_runs_bit_exact():
    """A Keras GRU converts to int8 only unrolled (``unroll=True``; without it the TFLite
    converter of TensorFlow 2.21 crashes on the WHILE loop it makes): UNPACK of the time steps,
    then per step FULLY_CONNECTED, SPLIT / SPLIT_V, ADD, LOGISTIC, MUL, SUB and TANH, which the
    runtime runs bit-exact with TFLite Micro."""
    from freeml_keras.keras import keras
    A = _architectures()
    inp = keras.Input((6, 4), batch_size=1)
    m = A.randomize(keras.Model(inp, keras.layers.Dense(3)(keras.layers.GRU(5, unroll=True)(inp))), seed=1)
    b = A.convert_int8(m)
    names = {r["name"] for r in operator_support(b)}
    assert {"UNPACK", "TANH", "LOGISTIC", "SUB", "MUL"} <= names and "WHILE" not in names, names
    assert all(r["supported"] for r in operator_support(b))
    xs = _inputs(b, 4, 3)
    refs = _tflm_sequence(b, xs)
    for model in (b, with_prepared(b)):
        it = Interpreter(model)
        for k, x in enumerate(xs):
            assert np.array_equal(it.invoke(x)[0].reshape(refs[k].shape), refs[k]), k
