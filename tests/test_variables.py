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
        ops = m.subgraphs[1].operators
        m.subgraphs[1].operators = ops + [m.subgraphs[0].operators[-2]]   # a FULLY_CONNECTED or the like
    with pytest.raises(RuntimeModelError, match=r"only VAR_HANDLE and ASSIGN_VARIABLE.*CALL_ONCE"):
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
    r = subprocess.run([str(driver), "mutate", str(path), "7", "1000"], capture_output=True, text=True, timeout=300)
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
