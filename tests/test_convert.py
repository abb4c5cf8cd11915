"""The converter: int8 accuracy, TFLite Micro vs tf.lite, sparse == dense, the exit head
subgraph vs the int8 incremental reference, sizes, metadata, C export, bad input."""

import shutil
import subprocess

import numpy as np
import pytest

from freeml_keras import datasets, memory, zoo
from freeml_keras.format import tflite as ts
from freeml_keras.cli import main
from freeml_keras.conversion import ConversionError, convert, export_c, extract_subgraph
from freeml_keras.exits import HeadQuantization, attach_global_exit, incremental_logits_int8
from freeml_keras.runtime.reference import io_quantization, quantize, run_tflite, run_tflm
from freeml_keras.keras import keras, tf
from freeml_keras.format.metadata import FreemlMetadata, MetadataError, read_metadata
from freeml_keras.compression.pruning import hard_threshold

EXITS = ["pool1", "conv2", "fc1"]


def prune(model, zero_fraction=0.7):
    """A copy of the model with the smallest-magnitude weights of every kernel set to zero."""
    m = keras.models.clone_model(model)
    m.set_weights(model.get_weights())
    for layer in m.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            w = layer.get_weights()
            w[0] = hard_threshold(w[0], 1.0 - zero_fraction)
            layer.set_weights(w)
    return m


@pytest.fixture(scope="module")
def setup():
    tr, va, te = datasets.load("digits")
    keras.utils.set_random_seed(0)
    model = zoo.build("cnn_s", (8, 8, 1), 10, width=0.5)
    zoo.train(model, tr, va, zoo.TrainConfig(epochs=10, batch_size=32), verbose=0)
    pruned = prune(model)
    zoo.compile_for_training(pruned)
    pruned.fit(*tr, epochs=1, batch_size=32, verbose=0)  # a step of recovery; zeros come back
    pruned = prune(pruned)                                # so prune again: exactly 70% zeros
    em = attach_global_exit(pruned, EXITS, pooled_size=[2, 1, None])
    rng = np.random.default_rng(0)
    em.set_head_weights(rng.normal(0, 0.3, (sum(em.pooled_dims), 10)), rng.normal(0, 0.1, 10))
    calib = tr[0][:200]
    return {
        "data": (tr, va, te), "model": model, "pruned": pruned, "exit_model": em,
        "dense": convert(pruned, calib, sparse=False, exit_model=em),
        "sparse": convert(pruned, calib, sparse=True, exit_model=em),
        "plain": convert(model, calib, sparse=False),
    }


def int8_predict(b, x):
    (iq,), _ = io_quantization(b)
    return run_tflite(b, [quantize(x, *iq)])[0]


def test_int8_accuracy_close_to_keras(setup):
    _, _, (x, y) = setup["data"]
    keras_acc = zoo.accuracy(setup["model"], (x, y))
    int8_acc = float(np.mean(np.argmax(int8_predict(setup["plain"], x), -1) == y))
    print(f"digits cnn_s/2: Keras {keras_acc:.4f}, int8 {int8_acc:.4f}")
    assert keras_acc > 0.8
    assert abs(int8_acc - keras_acc) <= 0.02


def _micro_vs_tflite(b, x):
    (iq,), _ = io_quantization(b)
    xq = quantize(x, *iq)
    return run_tflite(b, [xq])[0].astype(np.int32), run_tflm(b, [xq])[0].astype(np.int32)


def test_convolutions_are_identical_in_tflite_micro_and_tflite(setup):
    tr, _, (x, _) = setup["data"]
    m = setup["model"]
    convs = keras.Model(m.input, m.get_layer("conv3").output)
    ref, micro = _micro_vs_tflite(convert(convs, tr[0][:100], sparse=False), x[:200])
    assert np.array_equal(ref, micro)


def test_fully_connected_differs_by_at_most_one_lsb():
    """The documented difference: TFLite Micro's FULLY_CONNECTED rounds twice (gemmlowp), the
    tf.lite reference kernel once, so single outputs may differ by 1 LSB."""
    rng = np.random.default_rng(1)
    inp = keras.Input((64,))
    m = keras.Model(inp, keras.layers.Dense(32, name="fc")(inp))
    m.get_layer("fc").set_weights([rng.normal(0, 0.3, (64, 32)).astype(np.float32),
                                   rng.normal(0, 0.1, 32).astype(np.float32)])
    x = rng.normal(0, 1, (500, 64)).astype(np.float32)
    ref, micro = _micro_vs_tflite(convert(m, x[:200], sparse=False), x)
    diff = np.abs(ref - micro)
    print(f"single FULLY_CONNECTED: {np.count_nonzero(diff)} of {diff.size} outputs differ by 1 LSB")
    assert diff.max() <= 1


def test_dense_variant_runs_in_tflite_micro_like_tflite(setup):
    """The whole model with its exit head: 1-LSB differences in fc1 can grow through fc2, the
    logits and the softmax; they are counted and bounded, and the decisions agree."""
    _, _, (x, _) = setup["data"]
    ref, micro = _micro_vs_tflite(setup["dense"], x)
    diff = np.abs(ref - micro)
    print(f"TFLite Micro vs tf.lite reference: {int(np.count_nonzero(diff))} of {diff.size} "
          f"outputs differ, by at most {diff.max()} LSB (histogram {np.bincount(diff.ravel())}); "
          f"argmax agrees on {np.mean(ref.argmax(1) == micro.argmax(1)):.4f}")
    assert np.count_nonzero(diff) <= 0.03 * diff.size
    assert np.mean(ref.argmax(1) == micro.argmax(1)) >= 0.99


def test_sparse_variant_equals_dense(setup):
    _, _, (x, _) = setup["data"]
    dense, sparse = setup["dense"], setup["sparse"]
    assert np.array_equal(int8_predict(dense, x[:200]), int8_predict(sparse, x[:200]))
    m = ts.read_model(sparse)
    ops = [ts.op_name(m, op.opcodeIndex) for op in m.subgraphs[0].operators]
    assert ops.count("DENSIFY") >= 4
    assert len(sparse) < len(dense)


def test_weight_bytes_match_memory_accounting(setup, tmp_path, capsys):
    import json
    keras_fp = memory.keras_footprint(setup["pruned"])
    for b in (setup["sparse"], setup["dense"]):
        fp = memory.tflite_footprint(b)
        main_bytes = sum(l.stored_bytes for l in fp.layers if l.subgraph == 0)
        head_bytes = sum(l.stored_bytes for l in fp.layers if l.subgraph == 1)
        want = keras_fp.weight_bytes if b is setup["sparse"] else keras_fp.totals["int8"]
        assert main_bytes == want
        assert head_bytes == read_metadata(b).info["head_weight_bytes"] > 0
        path = tmp_path / "m.tflite"
        path.write_bytes(b)
        assert main(["inspect", str(path), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["weight_bytes"] == main_bytes + head_bytes


def test_head_subgraph_matches_int8_incremental_reference(setup):
    """The head run alone in TFLite Micro, with the features of exit points after k at their
    zero point, equals the int8 incremental reference b + sum_{i<=k} W_i . p_i, for every k."""
    _, _, (x, _) = setup["data"]
    em, b = setup["exit_model"], setup["dense"]
    md = read_metadata(b)
    head = extract_subgraph(b, md.head_subgraph)
    in_q, _ = io_quantization(head)
    feats = em.features_model().predict(x[:64], verbose=0)
    feats_q = [quantize(f, *q) for f, q in zip(feats, in_q)]
    # The FC's input (concatenated pooled int8 vector) and its parameters, read from the graph.
    model = ts.read_model(head)
    sg = model.subgraphs[0]
    fc = next(op for op in sg.operators if ts.op_name(model, op.opcodeIndex) == "FULLY_CONNECTED")
    x_t, w_t, b_t, o_t = (sg.tensors[int(i)] for i in list(fc.inputs) + list(fc.outputs))
    wq = np.asarray(model.buffers[w_t.buffer].data, np.uint8).view(np.int8).reshape(w_t.shape)
    bq = np.asarray(model.buffers[b_t.buffer].data, np.uint8).view(np.int32)
    quant = HeadQuantization(float(x_t.quantization.scale[0]), int(x_t.quantization.zeroPoint[0]),
                             tuple(float(s) for s in w_t.quantization.scale),
                             float(o_t.quantization.scale[0]), int(o_t.quantization.zeroPoint[0]))
    interp = tf.lite.Interpreter(model_content=head, experimental_preserve_all_tensors=True,
                                 experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    pooled = []
    for n in range(len(x[:64])):
        for d, f in zip(interp.get_input_details(), feats_q):
            interp.set_tensor(d["index"], f[n:n + 1])
        interp.invoke()
        pooled.append(interp.get_tensor(int(fc.inputs[0]))[0].copy())
    pooled = np.stack(pooled)
    cuts = np.cumsum([0] + em.pooled_dims)
    p = [pooled[:, a:c] for a, c in zip(cuts[:-1], cuts[1:])]
    ws = [wq[:, a:c].T for a, c in zip(cuts[:-1], cuts[1:])]
    for k in range(len(EXITS)):
        masked = [f if i <= k else np.full_like(f, q[1]) for i, (f, q) in enumerate(zip(feats_q, in_q))]
        micro = run_tflm(head, masked)[0]
        ref = incremental_logits_int8(ws, bq, p, quant, k)
        assert np.array_equal(micro, ref), f"exit {k}: {np.count_nonzero(micro != ref)} logits differ"


def test_metadata_records_the_graph(setup):
    b = setup["sparse"]
    md = read_metadata(b)
    m = ts.read_model(b)
    assert len(m.subgraphs) == 2 and md.head_subgraph == 1
    assert md.info["exit_points"] == EXITS and md.num_classes == 10
    assert len(md.ops) == len(m.subgraphs[0].operators)
    sg0, sg1 = m.subgraphs
    for e in md.exits:
        assert e.main_tensor in [int(o) for o in sg0.operators[e.after_op].outputs]
        assert e.head_input_tensor in [int(i) for i in sg1.inputs]
        assert sg0.tensors[e.main_tensor].quantization.scale[0] == sg1.tensors[e.head_input_tensor].quantization.scale[0]
    # the exit tensors are internal: the main subgraph has just the model's output
    assert len(sg0.outputs) == 1
    assert sum(o.macs for o in md.ops) == memory.tflite_footprint(b).macs - sum(
        l.macs for l in memory.tflite_footprint(b).layers if l.subgraph == 1)


def test_metadata_round_trip_and_errors():
    from freeml_keras.format.metadata import ExitRecord, OpCost
    md = FreemlMetadata(num_classes=3, head_subgraph=1,
                        exits=[ExitRecord(5, 0, 2, 0.75), ExitRecord(9, 1, 4, 2.0)],
                        ops=[OpCost(10, 5, 100, 64), OpCost(0, 0, 0, 8)],
                        info={"exit_points": ["a", "b"], "policy": {"thresholds": [0.75]}})
    data = md.encode()
    assert FreemlMetadata.decode(data) == md
    with pytest.raises(MetadataError, match="not b'FMLM'"):
        FreemlMetadata.decode(b"XXXX" + data[4:])
    with pytest.raises(MetadataError, match="run past the end"):
        FreemlMetadata.decode(data[:40])
    with pytest.raises(MetadataError, match="version 7 at offset 4"):
        FreemlMetadata.decode(data[:4] + (7).to_bytes(2, "little") + data[6:])


def test_policy_thresholds_go_into_the_metadata(setup):
    tr = setup["data"][0]
    b = convert(setup["pruned"], tr[0][:50], sparse=False, exit_model=setup["exit_model"],
                policy={"thresholds": [0.9, 0.8]})
    assert [round(e.threshold, 3) for e in read_metadata(b).exits] == [0.9, 0.8, 2.0]
    with pytest.raises(ConversionError, match="5 thresholds for 3 exit points"):
        convert(setup["pruned"], tr[0][:50], exit_model=setup["exit_model"],
                policy={"thresholds": [0.9] * 5})


def test_representative_data_of_the_wrong_shape():
    m = zoo.build("cnn_s", (8, 8, 1), 10, width=0.25)
    with pytest.raises(ConversionError, match=r"shape \(28, 28, 1\).*takes \(8, 8, 1\)"):
        convert(m, np.zeros((4, 28, 28, 1), np.float32))


@pytest.mark.parametrize("fn,why", [
    (tf.math.cos, "no int8 kernel for its COS op"),          # left in float32 by the converter
    (tf.math.erf, "'tf.Erf' op is neither a custom op"),    # refused by the converter
])
def test_layer_that_cannot_be_int8_is_named(fn, why):
    inp = keras.Input((8,))
    h = keras.layers.Dense(8, name="fc")(inp)
    h = keras.layers.Lambda(fn, name="odd_one")(h)
    m = keras.Model(inp, keras.layers.Dense(2, name="out")(h))
    with pytest.raises(ConversionError, match=f"layer 'odd_one' \\(Lambda\\).*{why}"):
        convert(m, np.random.default_rng(0).random((8, 8)).astype(np.float32))


def test_original_model_is_not_modified(setup):
    m = setup["model"]
    before = [w.copy() for w in m.get_weights()]
    convert(m, setup["data"][0][0][:20], sparse=True)
    assert all(np.array_equal(a, b) for a, b in zip(before, m.get_weights()))


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is part of the build requirements")
def test_export_c_compiles_and_equals_the_file(setup, tmp_path):
    b = setup["sparse"]
    h, c = export_c(b, tmp_path / "model.h", symbol="g_model", section=".rodata.model")
    prog = tmp_path / "dump.c"
    prog.write_text('#include <stdio.h>\n#include <stdint.h>\n#include "model.h"\n'
                    "int main(void) {\n"
                    "  if (((uintptr_t)g_model & 15u) != 0u) { return 3; }\n"
                    "  return fwrite(g_model, 1, g_model_len, stdout) == g_model_len ? 0 : 1;\n}\n")
    exe = tmp_path / "dump"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(prog), str(c)],
                   check=True, cwd=tmp_path)
    out = subprocess.run([str(exe)], capture_output=True, check=True).stdout
    assert out == b
    with pytest.raises(ValueError, match="not a C identifier"):
        export_c(b, tmp_path / "x.h", symbol="2bad")


def test_cli_convert_and_inspect(setup, tmp_path, capsys):
    path = tmp_path / "m.keras"
    setup["model"].save(path)
    out = tmp_path / "m.tflite"
    assert main(["convert", str(path), "--dataset", "digits", "--out", str(out),
                 "--c-header", str(tmp_path / "m.h"), "--eval-limit", "200"]) == 0
    text = capsys.readouterr().out
    assert "int8" in text and (tmp_path / "m.c").exists() and out.exists()
    exit_dir = tmp_path / "exits"
    setup["exit_model"].save(exit_dir)
    assert main(["convert", str(exit_dir), "--dataset", "digits", "--dense", "--out", str(out),
                 "--eval-limit", "100"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 exit points" in text and "conv2" in text


def test_block_sparse_weights_are_rewritten_as_plain_csr_with_the_dense_values():
    """The TFLite converter writes weights whose zeros come in 1x16 blocks as block-sparse,
    which the runtime does not read, and for a dimension shorter than a block it stores wrong
    values (the demo's 20x10 layer; stock TFLite then runs other weights than the model's).
    `convert` rewrites them as plain CSR behind a DENSIFY op with the dense conversion's values:
    the runtime's outputs equal TFLite Micro's on the dense conversion."""
    from freeml_keras.format import sparsity
    from freeml_keras.runtime import Interpreter

    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.layers.Input((64,)), keras.layers.Dense(32, activation="relu"),
                          keras.layers.Dense(10, activation="relu"), keras.layers.Dense(20)])
    w, b = m.layers[0].get_weights()
    keep = np.random.default_rng(0).random((4, 32)) < 0.2
    m.layers[0].set_weights([w * np.repeat(keep, 16, axis=0), b])        # zeros in 1x16 blocks
    w, b = m.layers[2].get_weights()                                      # 10 inputs: short of a block
    m.layers[2].set_weights([w * (np.random.default_rng(1).random(w.shape) < 0.1), b])
    x = np.random.default_rng(0).normal(size=(50, 64)).astype(np.float32)
    raw = ts.read_model(_raw_sparse(m, x))
    blocked = {tuple(raw.subgraphs[0].tensors[i].shape) for _, i in sparsity.blocked_tensors(raw)}
    assert blocked, "the converter no longer writes block-sparse weights here: the test tests nothing"
    dense_bytes = convert(m, x, sparse=False)
    dense = ts.read_model(dense_bytes)
    out = convert(m, x, sparse=True)
    mt = ts.read_model(out)
    assert not sparsity.blocked_tensors(mt)
    assert "DENSIFY" in [ts.op_name(mt, op.opcodeIndex) for op in mt.subgraphs[0].operators]
    want = {tuple(t.shape): np.frombuffer(bytes(bytearray(dense.buffers[t.buffer].data)), np.int8)
            for t in dense.subgraphs[0].tensors if tuple(t.shape) in blocked and dense.buffers[t.buffer].data is not None}
    for t in mt.subgraphs[0].tensors:
        if tuple(t.shape) in blocked and t.sparsity is not None:     # CSR: the dense values' non-zeros, row by row
            v = want[tuple(t.shape)]
            assert np.array_equal(np.frombuffer(bytes(bytearray(mt.buffers[t.buffer].data)), np.int8), v[v != 0])
    (scale, zp), = io_quantization(out)[0]
    xi = quantize(x[:8], scale, zp)
    ours = np.concatenate([Interpreter(out).invoke(v[None])[0] for v in xi])
    assert np.array_equal(ours, run_tflm(dense_bytes, [xi])[0])          # the oracle, on the same values


def _raw_sparse(m, x) -> bytes:
    """What the TFLite converter writes with sparsity, before the rewrite."""
    conv = tf.lite.TFLiteConverter.from_keras_model(m)
    conv.optimizations = [tf.lite.Optimize.DEFAULT, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    return bytes(conv.convert())
