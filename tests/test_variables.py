"""Resource variables (VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE, CALL_ONCE): a streaming model
made here (a ``tf.Variable`` ring buffer of past frames, converted to int8 with its variable
quantized) invoked many times in sequence gives TFLite Micro's outputs step by step, on the host
interpreter and on the power-failure harness, where the variable lives in NVM with the arena and
survives kills inside kernels, commits and restarts; what the runtime cannot run is refused by
name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

from conftest import fixed_and_fresh
from freeml_keras.format import tflite as ts
from freeml_keras.format.prepared import with_prepared
from freeml_keras.runtime import Interpreter, RuntimeModelError
from freeml_keras.runtime.build import make_host
from freeml_keras.runtime.intermittent import run_uninterrupted, run_with_power_failures

STEPS = 12


def _architectures():
    """bench/architectures.py (model makers shared with bench/coverage.py, not in the package)."""
    spec = importlib.util.spec_from_file_location("bench_architectures",
                                                  Path(__file__).resolve().parents[1] / "bench" / "architectures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def stream():
    """The streaming model, its inputs and TFLite Micro's outputs, invoked in sequence."""
    from tflite_micro import runtime
    b = _architectures().streaming_conv(frame=8, window=6, filters=12)
    xs = np.random.default_rng(3).integers(-128, 128, (STEPS, 1, 1, 8), dtype=np.int8)
    tflm = runtime.Interpreter.from_bytes(b, arena_size=1 << 16)
    refs = []
    for x in xs:
        tflm.set_input(x, 0)
        tflm.invoke()
        refs.append(tflm.get_output(0).ravel().copy())
    return b, xs, refs


def test_the_model_has_resource_variables(stream):
    b = stream[0]
    m = ts.read_model(b)
    names = [[ts.op_name(m, o.opcodeIndex) for o in sg.operators] for sg in m.subgraphs]
    assert {"CALL_ONCE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"} <= set(names[0])
    assert names[1] == ["VAR_HANDLE", "ASSIGN_VARIABLE"]          # the init subgraph
    # freeml inspect's table: every operator supported, RESOURCE tensors included
    from freeml_keras.runtime import operator_support
    assert [r["name"] for r in operator_support(b) if not r["supported"]] == []


def test_stream_bit_exact_with_tflite_micro_step_by_step(stream):
    b, xs, refs = stream
    assert len({r.tobytes() for r in refs}) > STEPS // 2      # the state changes the answers
    for model in (b, with_prepared(b)):
        it = Interpreter(model)
        for k, x in enumerate(xs):
            assert np.array_equal(it.invoke(x)[0].ravel(), refs[k]), k
    # in resumable steps of one unit, and the state carried from one way of running to the other
    it = Interpreter(b)
    for k, x in enumerate(xs):
        out = it.invoke_in_steps(x, max_units=1)[0] if k % 2 else it.invoke(x)
        assert np.array_equal(out[0].ravel(), refs[k]), k


def test_variable_is_state_in_the_arena(stream):
    """The variable has arena memory of its own (value + initialized word), kept from step to
    step: a second interpreter starts again from the initial value."""
    b, xs, refs = stream
    a, c = Interpreter(b), Interpreter(b)
    for k in range(3):
        a.invoke(xs[k])
    assert np.array_equal(c.invoke(xs[0])[0].ravel(), refs[0])
    assert np.array_equal(a.invoke(xs[3])[0].ravel(), refs[3])


def test_stream_survives_power_failures_bit_exact(stream, tmp_path):
    """The harness's NVM (arena, variables, checkpoint, prepared image) is kept from one step of
    the stream to the next; every step is killed at random times, at bytes of its commits and
    at bytes of the prepared image's seal, resumed, and must give TFLite Micro's output."""
    b, xs, refs = stream
    nvm = tmp_path / "nvm"
    by_phase = {"restart": 0, "work": 0, "commit": 0}
    for k, x in enumerate(xs):
        rep = run_with_power_failures(b, x, nvm=nvm, seed=100 + k, max_failures=6, time_fraction=0.3,
                                      granularity=1)
        assert np.array_equal(rep.output, refs[k]), (k, rep.failures_by_phase)
        for p in by_phase:
            by_phase[p] += rep.failures_by_phase[p]
    print("stream power failures by phase:", by_phase)
    # (the kills at commit bytes are seeded; a timed kill of so small a model mostly lands
    # outside the inference, where it is not counted)
    assert by_phase["commit"] >= 20 and by_phase["work"] + by_phase["restart"] >= 1, by_phase
    # the same stream uninterrupted under AddressSanitizer + UBSan, from the NVM the kills left
    asan = make_host("intermittent_asan", "fm_intermittent_asan")
    for k, x in enumerate(xs[:3]):
        rep = run_with_power_failures(b, x, nvm=tmp_path / "nvm_asan", seed=k, max_failures=3, harness=asan)
        assert np.array_equal(rep.output, refs[k]), k


def test_stream_uninterrupted_harness(stream, tmp_path):
    b, xs, refs = stream
    for k, x in enumerate(xs[:5]):
        out, _ = run_uninterrupted(b, x, nvm=tmp_path / "nvm")
        assert np.array_equal(out, refs[k]), k


def _edited(b: bytes, edit) -> bytes:
    m = ts.read_model(b)
    edit(m)
    return ts.write_model(m)


def test_refusals_name_the_operator(stream):
    b = stream[0]

    def drop_call_once(m):
        ops = m.subgraphs[0].operators
        m.subgraphs[0].operators = [o for o in ops if ts.op_name(m, o.opcodeIndex) != "CALL_ONCE"]
    with pytest.raises(RuntimeModelError, match=r"without a CALL_ONCE.*VAR_HANDLE.*RESOURCE"):
        Interpreter(_edited(b, drop_call_once))

    def init_runs_main(m):
        import copy
        init = m.subgraphs[1]
        const = next(i for i, t in enumerate(init.tensors) if t.type != ts.TensorType.RESOURCE)
        out = copy.deepcopy(init.tensors[const])
        out.buffer, out.name = 0, b"copy"
        init.tensors.append(out)
        op = copy.deepcopy(next(o for o in m.subgraphs[0].operators if ts.op_name(m, o.opcodeIndex) == "RESHAPE"))
        op.inputs, op.outputs = [const], [len(init.tensors) - 1]
        init.operators.append(op)                       # an operator other than the two allowed
    with pytest.raises(RuntimeModelError, match=r"only VAR_HANDLE and ASSIGN_VARIABLE.*operator 0 CALL_ONCE.*value 22"):
        Interpreter(_edited(b, init_runs_main))

    def resize_read(m):
        sg = m.subgraphs[0]
        read = next(o for o in sg.operators if ts.op_name(m, o.opcodeIndex) == "READ_VARIABLE")
        sg.tensors[int(read.outputs[0])].shape = np.array([1, 1, 8], np.int32)
    with pytest.raises(RuntimeModelError, match=r"size differs.*READ_VARIABLE"):
        Interpreter(_edited(b, resize_read))


def test_mutated_stream_models_never_crash(stream, tmp_path):
    """VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE and CALL_ONCE's walk of its init subgraph under
    AddressSanitizer + UBSan on truncated, bit-flipped and overwritten copies of the streaming
    model: refused or run, never a crash."""
    import subprocess
    driver = make_host("asan", "fm_driver_asan")
    path = tmp_path / "stream.tflite"
    path.write_bytes(stream[0])
    r = subprocess.run([str(driver), "mutate", str(path), "7", "600"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout, r.stderr[-3000:])
    fields = r.stdout.split()
    print(r.stdout.strip())
    assert int(fields[3]) > 0 and int(fields[5]) > 0


def test_stream_on_the_msp430_carries_its_state(stream, tmp_path):
    """The MSP430 build (16-bit int, clang, mspdebug): model_run runs one inference operator by
    operator, then one with fm_invoke; the variable carries the first into the second, as TFLite
    Micro's first two invocations."""
    from freeml_keras.targets.runs import run_model
    from freeml_keras.targets.toolchain import check_tools
    check_tools("msp430")                 # CI installs it: fail, never skip
    b, xs, _ = stream
    from tflite_micro import runtime
    tflm = runtime.Interpreter.from_bytes(b, arena_size=1 << 16)
    refs = []
    for _ in range(2):
        tflm.set_input(xs[0], 0)
        tflm.invoke()
        refs.append(tflm.get_output(0).ravel().tolist())
    assert refs[0] != refs[1]
    r = run_model("msp430", b, xs[0], tmp_path)
    assert r.output == refs[0] and r.output_invoke == refs[1]


def test_small_stream_survives_power_failures_on_the_msp430(tmp_path):
    """A small streaming model (frames of 4, a window of 3, 4 filters) answering the same frame
    four times on the MSP430 emulator, cut by 12 seeded power failures (the variable in FRAM with
    the arena, SRAM clobbered at each): TFLite Micro's four answers, in order, which the state
    makes differ."""
    from tflite_micro import runtime

    from freeml_keras.targets import power
    from freeml_keras.targets.toolchain import check_tools
    check_tools("msp430")
    b = _architectures().streaming_conv(frame=4, window=3, filters=4, classes=3)
    x = np.random.default_rng(3).integers(-128, 128, (1, 1, 4)).astype(np.int8)
    tflm = runtime.Interpreter.from_bytes(b, arena_size=1 << 16)
    refs = []
    for _ in range(4):
        tflm.set_input(x, 0)
        tflm.invoke()
        refs.append(tflm.get_output(0).ravel().tolist())
    assert len({tuple(r) for r in refs}) >= 3
    rep = power.run_power_failures("msp430", b, x, tmp_path, failures=12, seed=3, inferences=4)
    assert [list(o) for _, o in rep.outputs[:4]] == refs
    assert rep.failures_by_phase["work"] >= 4, rep.failures_by_phase


# ---- SVDF: a variable tensor (is_variable) as the operator's state -------------------------------

def svdf_model(c: dict) -> bytes:
    """One SVDF operator: int8 input [batch, input], int8 feature weights, int16 (or int8) time
    weights and state (a variable tensor, not a graph input), int32 bias of the state * time scale."""
    S, T = ts.schema, ts.TensorType
    rng = np.random.default_rng(c["seed"])
    st_type = T.INT16 if c["int16"] else T.INT8
    filters = c["rank"] * c["units"]
    s_in, s_wf, s_wt, s_st, s_out = (float(np.float32(v)) for v in c["scales"])
    st_zp = 0 if c["int16"] else c["st_zp"]
    wt_max = 32767 if c["int16"] else 127
    ins = [ts.tensor_spec([c["batch"], c["input"]], scale=s_in, zp=c["in_zp"]),
           ts.tensor_spec([filters, c["input"]], scale=s_wf, data=rng.integers(-127, 128, (filters, c["input"]))),
           ts.tensor_spec([filters, c["memory"]], st_type, scale=s_wt,
                          data=rng.integers(-wt_max, wt_max + 1, (filters, c["memory"]))),
           ts.tensor_spec([c["units"]], T.INT32, scale=float(np.float32(s_st) * np.float32(s_wt)),
                          data=rng.integers(-5000, 5000, c["units"])),
           ts.tensor_spec([c["batch"], c["memory"] * filters], st_type, scale=s_st, zp=st_zp)]
    o = S.SVDFOptionsT()
    o.rank = c["rank"]
    b = ts.op_model("SVDF", ins, [ts.tensor_spec([c["batch"], c["units"]], scale=s_out, zp=c["out_zp"])], o)
    m = ts.read_model(b)
    sg = m.subgraphs[0]
    state = int(sg.operators[0].inputs[4])
    sg.tensors[state].isVariable = True
    sg.inputs = [i for i in sg.inputs if int(i) != state]
    return ts.write_model(m)


@st.composite
def svdf_case(draw):
    return dict(batch=draw(st.integers(1, 2)), input=draw(st.integers(1, 8)), rank=draw(st.integers(1, 2)),
                units=draw(st.integers(1, 4)), memory=draw(st.integers(1, 6)), int16=draw(st.booleans()),
                scales=[draw(st.floats(0.005, 0.2)), draw(st.floats(0.002, 0.05)), draw(st.floats(1e-5, 1e-3)),
                        draw(st.floats(0.01, 0.5)), draw(st.floats(0.05, 2.0))],
                in_zp=draw(st.integers(-128, 127)), st_zp=draw(st.integers(-20, 20)),
                out_zp=draw(st.integers(-128, 127)), seed=draw(st.integers(0, 10_000)))


def _svdf_sequence_matches(b: bytes, seed: int, n: int = 6) -> None:
    from tflite_micro import runtime
    sg = ts.read_model(b).subgraphs[0]
    shape = [int(d) for d in sg.tensors[int(sg.inputs[0])].shape]
    xs = np.random.default_rng(seed).integers(-128, 128, [n] + shape).astype(np.int8)
    tflm = runtime.Interpreter.from_bytes(b, arena_size=1 << 16)
    refs = []
    for x in xs:
        tflm.set_input(x, 0)
        tflm.invoke()
        refs.append(tflm.get_output(0).copy())
    for model in (b, with_prepared(b)):
        whole, stepped = Interpreter(model), Interpreter(model)
        for k, x in enumerate(xs):
            assert np.array_equal(whole.invoke(x)[0].reshape(refs[k].shape), refs[k]), k
            assert np.array_equal(stepped.invoke_in_steps(x, max_units=1 + k % 3)[0][0].reshape(refs[k].shape),
                                  refs[k]), k
    return refs


@fixed_and_fresh(svdf_case(), max_examples=6)
def test_svdf_sequence_bit_exact(c):
    """SVDF invoked 6 times in sequence (its state carried): TFLite Micro's outputs, computed
    and precomputed parameters, whole and in steps of 1-3 units."""
    _svdf_sequence_matches(svdf_model(c), c["seed"])


SVDF_CASE = dict(batch=1, input=10, rank=2, units=4, memory=5, int16=True, scales=[0.05, 0.01, 2e-4, 0.1, 0.3],
                 in_zp=3, st_zp=0, out_zp=-4, seed=5)


def test_svdf_survives_power_failures(tmp_path):
    """The SVDF state (a variable tensor in NVM) under power failures, over a sequence of
    inferences with the harness's NVM kept: every output is TFLite Micro's."""
    b = svdf_model(SVDF_CASE)
    refs = _svdf_sequence_matches(b, 11, n=8)
    xs = np.random.default_rng(11).integers(-128, 128, (8, 1, 10)).astype(np.int8)
    commits = 0
    for k, x in enumerate(xs):
        rep = run_with_power_failures(b, x, nvm=tmp_path / "nvm", seed=k, max_failures=5, granularity=3)
        assert np.array_equal(rep.output, refs[k].ravel()), (k, rep.failures_by_phase)
        commits += rep.failures_by_phase["commit"]
    assert commits >= 10


def test_variable_tensors_of_other_operators_are_refused():
    """A variable tensor anywhere but SVDF's state is refused by name."""
    m = ts.read_model(svdf_model(SVDF_CASE))
    sg = m.subgraphs[0]
    sg.tensors[int(sg.operators[0].inputs[0])].isVariable = True       # the input
    with pytest.raises(RuntimeModelError, match=r"variable tensor \(operator state\) not supported "
                                                r"\(tensor 0 'in0' of type INT8 \(a variable\)\)"):
        Interpreter(ts.write_model(m))


def test_svdf_survives_power_failures_on_the_msp430(tmp_path):
    """Six inferences in sequence (the same input: the state makes the answers differ) on the
    MSP430 emulator, cut by 20 seeded power failures (the state in FRAM, SRAM clobbered at each):
    the answers are TFLite Micro's six, in order."""
    from tflite_micro import runtime

    from freeml_keras.targets import power
    from freeml_keras.targets.toolchain import check_tools
    check_tools("msp430")
    b = svdf_model(SVDF_CASE)
    x = np.random.default_rng(0).integers(-128, 128, (1, 10)).astype(np.int8)
    tflm = runtime.Interpreter.from_bytes(b, arena_size=1 << 16)
    refs = []
    for _ in range(6):
        tflm.set_input(x, 0)
        tflm.invoke()
        refs.append(tflm.get_output(0).ravel().tolist())
    assert len({tuple(r) for r in refs}) >= 4
    rep = power.run_power_failures("msp430", b, x, tmp_path, failures=20, seed=3, inferences=6)
    assert [list(o) for _, o in rep.outputs[:6]] == refs
    assert rep.failures_by_phase["work"] >= 5, rep.failures_by_phase
