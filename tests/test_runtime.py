"""The C runtime (tflm_port) through its Python binding: the reference models dense and sparse
are bit-exact with TFLite Micro, sparse equals dense, resumable steps equal one invoke, the arena
is no larger than TFLite Micro's, bad models give clear errors, and ``freeml run``."""

import json

import numpy as np
import pytest

from freeml_keras import memory, zoo
from freeml_keras.cli import main
from freeml_keras.conversion.converter import convert
from freeml_keras.runtime.reference import io_quantization, quantize, run_tflm, smallest_tflm_arena
from freeml_keras.keras import keras
from freeml_keras.runtime import Interpreter, RuntimeModelError

MODELS = {"cnn_s": ((28, 28, 1), 10), "cnn_m": ((28, 28, 1), 10), "imu_cnn": ((100, 6), 7)}


def prune_copy(model, zero_fraction=0.7):
    """A copy of the model with the smallest-magnitude weights of every kernel set to zero."""
    m = keras.models.clone_model(model)
    m.set_weights(model.get_weights())
    for layer in m.layers:
        ws = layer.get_weights()
        if ws and ws[0].ndim > 1:
            cut = np.quantile(np.abs(ws[0]), zero_fraction)
            ws[0] = np.where(np.abs(ws[0]) <= cut, 0.0, ws[0])
            if len(ws) > 1 and ws[1].ndim == 1:     # non-zero biases exercise the bias path
                ws[1] = np.random.default_rng(len(ws[1])).normal(0, 0.05, ws[1].shape)
            layer.set_weights(ws)
    return m


@pytest.fixture(scope="module", params=sorted(MODELS))
def variants(request):
    name = request.param
    shape, classes = MODELS[name]
    keras.utils.set_random_seed(3)
    model = prune_copy(zoo.build(name, shape, classes, width=0.25))
    rng = np.random.default_rng(0)
    calib = rng.normal(0.5, 0.3, (64,) + shape).astype(np.float32)
    dense, sparse = convert(model, calib, sparse=False), convert(model, calib, sparse=True)
    (iq,), _ = io_quantization(dense)
    x = np.concatenate([quantize(rng.normal(0.5, 0.3, (12,) + shape), *iq),
                        rng.integers(-128, 128, (4, 1) + shape, dtype=np.int8).reshape((4,) + shape)])
    return {"name": name, "dense": dense, "sparse": sparse, "x": x}


def run_ours(b, x):
    it = Interpreter(b)
    return np.stack([it.invoke(xi[None])[0][0] for xi in x])


def test_dense_is_bit_exact_with_tflite_micro(variants):
    ours = run_ours(variants["dense"], variants["x"])
    micro = run_tflm(variants["dense"], [variants["x"]])[0].reshape(ours.shape)
    assert ours.dtype == np.int8
    assert len(np.unique(ours)) > 3          # not a saturated, trivially equal output
    assert np.array_equal(ours, micro)


def test_sparse_weights_run_in_place_and_equal_dense(variants):
    it = Interpreter(variants["sparse"])
    assert "DENSIFY" in it.op_codes
    dense = run_ours(variants["dense"], variants["x"])
    assert np.array_equal(run_ours(variants["sparse"], variants["x"]), dense)
    # never densified into RAM: the arena grows only by the sparse convolution's row scratch
    # (one row of int32 accumulators and the input rows it reads), far less than the weights
    dense_arena = Interpreter(variants["dense"]).arena_bytes
    assert dense_arena <= it.arena_bytes <= dense_arena + 2048


@pytest.mark.parametrize("max_units", [1, 7])
def test_resumable_steps_give_the_same_bytes(variants, max_units):
    it = Interpreter(variants["sparse"])
    x = variants["x"][:2]
    whole = [it.invoke(xi[None])[0] for xi in x]
    for xi, ref in zip(x, whole):
        out, steps = it.invoke_in_steps(xi[None], max_units=max_units)
        assert np.array_equal(out[0], ref)
        assert steps >= sum(it.op_units()) // max_units


def test_arena_no_larger_than_tflite_micro(variants):
    b = variants["dense"]
    it = Interpreter(b)
    tflm = smallest_tflm_arena(b)
    fp = memory.tflite_footprint(b).arena_bytes
    print(f"{variants['name']}: our arena {it.arena_bytes} B (+ state {it.state_bytes} B), "
          f"TFLite Micro smallest arena {tflm} B, footprint estimate {fp} B")
    assert it.arena_bytes <= fp
    assert it.arena_bytes < tflm


def test_truncated_and_corrupt_models_raise_clear_errors(variants):
    b = variants["dense"]
    with pytest.raises(RuntimeModelError, match="malformed model"):
        Interpreter(b[:7])
    with pytest.raises(RuntimeModelError, match="TFL3"):
        Interpreter(b[:4] + b"XXXX" + b[8:])
    for cut in (100, len(b) // 2, len(b) - 1):
        with pytest.raises(RuntimeModelError) as e:
            Interpreter(b[:cut])
        assert e.value.status in (2, 3)
        assert str(e.value)


def test_unsupported_operator_names_the_operator():
    inp = keras.Input((8,))
    m = keras.Model(inp, keras.layers.Dense(4, activation="gelu")(inp))
    b = convert(m, np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32), sparse=False)
    with pytest.raises(RuntimeModelError, match=r"operator not supported \(operator 1 GELU\)"):
        Interpreter(b)


def test_wrong_input_size_is_refused(variants):
    it = Interpreter(variants["dense"])
    with pytest.raises(ValueError, match="does not fit"):
        it.invoke(np.zeros(3, np.int8))


def test_freeml_run_reports_accuracy_and_agreement(tmp_path, capsys):
    from freeml_keras import datasets
    keras.utils.set_random_seed(0)
    (xtr, ytr), _, _ = datasets.load("digits")
    (xte, yte) = datasets.load("digits")[2]
    m = zoo.build("cnn_s", (8, 8, 1), 10, width=0.5)
    zoo.compile_for_training(m)
    m.fit(xtr, ytr, epochs=15, batch_size=32, verbose=0)
    keras_acc = zoo.accuracy(m, (xte[:60], yte[:60]))
    path = tmp_path / "m.tflite"
    path.write_bytes(convert(m, xtr[:100], sparse=False))
    assert main(["run", str(path), "--dataset", "digits", "--limit", "60", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["examples"] == 60
    assert r["agreement_with_tflite_micro"] == 1.0
    assert r["accuracy"] > 0.6 and abs(r["accuracy"] - keras_acc) <= 0.05
    assert r["arena_bytes"] > 0 and r["ms_per_inference"] > 0
    assert main(["run", str(tmp_path / "missing.tflite"), "--dataset", "digits"]) == 2


def test_model_with_exit_head_subgraph_runs_its_main_subgraph():
    """The converter's full output (main subgraph + exit-head subgraph + freeml metadata): the
    runtime runs the main subgraph bit-exactly; the head subgraph is left to the exit logic."""
    from freeml_keras.exits import attach_global_exit
    keras.utils.set_random_seed(0)
    m = zoo.build("cnn_s", (8, 8, 1), 10, width=0.5)
    em = attach_global_exit(m, ["pool1", "conv2", "fc1"], pooled_size=[2, 1, None])
    rng = np.random.default_rng(0)
    em.set_head_weights(rng.normal(0, 0.3, (sum(em.pooled_dims), 10)), rng.normal(0, 0.1, 10))
    b = convert(m, rng.random((50, 8, 8, 1)).astype(np.float32), sparse=False, exit_model=em)
    x = rng.integers(-128, 128, (4, 8, 8, 1), dtype=np.int8)
    assert np.array_equal(run_ours(b, x), run_tflm(b, [x])[0])
