"""Conversion of tf_keras models to full-int8 TFLite flatbuffers, with the exit head and the
``freeml`` metadata, and export as C source.

How sparse weights are expressed: ``sparse=True`` keeps what the TFLite converter writes with
``Optimize.EXPERIMENTAL_SPARSITY``: each weight tensor with at least 30% zeros is stored in
TFLite's sparsity format (CSR on the last dimension; where the converter chose 1x16 blocks,
rewritten as plain CSR from the dense conversion's values by
:func:`freeml_keras.format.sparsity.unblock`) and feeds a DENSIFY op whose output is the
consuming CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED's weight input. Stock TFLite runs this
graph as is (DENSIFY expands the weights into RAM); the FreeML runtime treats DENSIFY as an
alias and its kernels read the CSR weights in place. ``sparse=False`` stores every weight dense;
stock TFLite Micro (which has no DENSIFY) runs that variant.

With an exit model the flatbuffer holds a second subgraph, the exit head: one int8 input per
exit point, with the quantization of the main-subgraph tensor it reads (a QUANTIZE op
requantizes it where the head was calibrated to another scale), pooling, concatenation and one
FULLY_CONNECTED to the logits. The ``freeml`` metadata (see :mod:`freeml_keras.format.metadata`)
records which tensors connect the two, per-operator costs and the exit thresholds.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Callable, Iterable

import numpy as np

from freeml_keras import memory
from freeml_keras.bridge import to_tf_keras
from freeml_keras import costs
from freeml_keras.conversion import layouts
from freeml_keras.format import sparsity
from freeml_keras.format import tflite as ts
from freeml_keras.keras import keras, tf
from freeml_keras.format.metadata import (NEVER, METADATA_NAME, ExitRecord, FreemlMetadata, OpCost,
                                          replace_metadata)
from freeml_keras.format.prepared import PREPARED_NAME, PrepareError, with_prepared

__all__ = ["convert", "extract_subgraph", "strip_names", "compact", "ConversionError", "HEAD_SUBGRAPH_NAME"]

HEAD_SUBGRAPH_NAME = "freeml_exit_head"


class ConversionError(ValueError):
    """The model or data cannot be converted; the message names the layer or the shapes."""


def _check_shape(name: str, x: np.ndarray, want: tuple[int, ...]) -> None:
    if tuple(x.shape[1:]) != tuple(want):
        raise ConversionError(f"representative data has examples of shape {tuple(x.shape[1:])}, "
                              f"the model's input {name!r} takes {tuple(want)}")


def _tflite_convert(model: "keras.Model", gen: Callable[[], Iterable], sparse: bool,
                    layout_costs: "costs.CostModel | None" = None) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if sparse:
        conv.optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    conv.representative_dataset = gen
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = bytes(conv.convert())
    except Exception as e:  # the converter raises ConverterError with MLIR diagnostics
        raise ConversionError(_explain(model, e)) from e
    _check_full_int8(model, data)
    if sparse:      # block-sparse weights, which the converter writes for some layers: plain CSR
        m = ts.read_model(data)
        if sparsity.blocked_tensors(m):
            sparsity.unblock(m, ts.read_model(_tflite_convert(model, gen, False)))
            data = ts.write_model(m)
    if sparse and layout_costs is not None:     # dense where the target runs the layer faster dense
        m = ts.read_model(data)
        if any(c.stored == "int8" for c in layouts.choose_layouts(m, layout_costs)):
            data = ts.write_model(m)
    return data


def _layer_of_tensor(model: "keras.Model", tensor_name: str):
    for layer in model.layers:
        if f"/{layer.name}/" in tensor_name:
            return layer
    return None


def _check_full_int8(model: "keras.Model", data: bytes) -> None:
    """The converter keeps ops without an int8 kernel in float32 between DEQUANTIZE and
    QUANTIZE; a microcontroller model must not have such islands."""
    m = ts.read_model(data)
    for sg in m.subgraphs:
        for op in sg.operators:
            name = ts.op_name(m, op.opcodeIndex)
            if name in ("QUANTIZE", "DEQUANTIZE"):
                continue
            tensors = [sg.tensors[int(i)] for i in list(op.inputs) + list(op.outputs) if i >= 0]
            if any(t.type == ts.TensorType.FLOAT32 for t in tensors):
                out = sg.tensors[int(op.outputs[0])].name.decode()
                layer = _layer_of_tensor(model, out)
                where = (f"layer {layer.name!r} ({type(layer).__name__})" if layer is not None
                         else f"the op producing {out!r}")
                raise ConversionError(f"{where} cannot be made full int8: TFLite has no int8 "
                                      f"kernel for its {name} op, so the converter left it in float32")


def _layer_with_op(model: "keras.Model", op_type: str):
    """The first layer whose computation contains a TensorFlow op of this type."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            spec = tf.TensorSpec((1,) + tuple(layer.input.shape[1:]), tf.float32)
            graph = tf.function(layer.call).get_concrete_function(spec).graph
        except Exception:  # layers with several inputs or special calls: not searched
            continue
        if any(o.type == op_type for o in graph.get_operations()):
            return layer
    return None


def _explain(model: "keras.Model", err: Exception) -> str:
    import re
    text = str(err)
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    detail = next((l[l.index("error:"):] for l in lines if "error:" in l), lines[0] if lines else type(err).__name__)
    layer = None
    m = re.search(r"'tf\.(\w+)' op", text)
    if m:
        layer = _layer_with_op(model, m.group(1))
    if layer is None:
        layer = _layer_of_tensor(model, text)
    if layer is not None:
        return f"layer {layer.name!r} ({type(layer).__name__}) cannot be converted to full int8: {detail}"
    return f"the TFLite converter refused the model: {detail}"


def _single_input_gen(model: "keras.Model", data: np.ndarray, limit: int):
    x = np.asarray(data, dtype=np.float32)
    _check_shape(model.inputs[0].name, x, tuple(int(d) for d in model.inputs[0].shape[1:]))

    def gen():
        for i in range(min(limit, len(x))):
            yield [x[i:i + 1]]
    return gen


def convert(model: "keras.Model", representative_data: np.ndarray, *, sparse: bool = True,
            exit_model: Any = None, policy: Any = None, num_calibration: int = 200,
            target: str | None = None, strip: bool = False, device_form: bool = False) -> bytes:
    """A full-int8 (int8 input and output) TFLite flatbuffer of ``model``.

    ``representative_data``: float inputs (batch first) for calibration. ``sparse``: store
    weights with at least 30% zeros in TFLite's sparsity format. ``exit_model``: an
    :class:`freeml_keras.exits.ExitModel` on this model; its head becomes a second subgraph and
    the ``freeml`` metadata is written. ``policy``: an exit policy (``to_dict()`` with
    ``thresholds``) whose thresholds go into the metadata. ``target``: a device name or
    ``msp430`` / ``cortex_m4``; the metadata gets each operator's cost on it, predicted from
    the targets benchmark's measurements (:mod:`freeml_keras.costs`). ``strip``: drop names and
    signatures (:func:`strip_names`). ``device_form``: the flatbuffer as a device holds it
    (:func:`compact`, names stripped too): TFLite Micro and the FreeML runtime run it, the
    TensorFlow Lite interpreter refuses its single zero points. Last, every operator's requantization parameters are
    precomputed into the ``freeml_prepare`` entry (:mod:`freeml_keras.format.prepared`), so the
    runtime need not compute them from float scales at every power-on. The model is not
    modified; a Keras 3 model is bridged to tf_keras first (:mod:`freeml_keras.bridge`), so
    it converts to the same flatbuffer as its tf_keras copy.
    """
    model = to_tf_keras(model)
    if len(model.inputs) != 1:
        raise ConversionError(f"the model has {len(model.inputs)} inputs; convert takes one")
    cost_model = costs.CostModel.load(costs.target_of(target)) if target is not None else None
    if exit_model is None:
        data = _tflite_convert(model, _single_input_gen(model, representative_data, num_calibration), sparse,
                               cost_model)
    else:
        data = _convert_with_exits(model, representative_data, sparse, exit_model, policy, num_calibration,
                                   cost_model)
    if cost_model is not None:
        data = costs.with_costs(data, cost_model)
    if strip or device_form:
        data = strip_names(data)
    if device_form:
        data = compact(data)
    try:
        return with_prepared(data)
    except PrepareError as e:
        raise ConversionError(str(e)) from None


def _signature_map(model: "ts.schema.ModelT", kind: str) -> dict[str, int]:
    sig = model.signatureDefs[0]
    entries = sig.outputs if kind == "outputs" else sig.inputs
    return {(e.name.decode() if isinstance(e.name, bytes) else e.name): int(e.tensorIndex) for e in entries}


def _convert_with_exits(model, data, sparse, exit_model, policy, limit, cost_model=None) -> bytes:
    points = list(exit_model.exit_points)
    for p in points:
        if p not in [l.name for l in model.layers]:
            raise ConversionError(f"exit point {p!r} is not a layer of model {model.name!r}")
    x = np.asarray(data, dtype=np.float32)
    # Main subgraph: the model with its exit-point tensors as extra outputs, so that the
    # converter names them in the signature; they are turned back into internal tensors below.
    outputs = list(model.outputs) + [model.get_layer(p).output for p in points]
    with_exits = keras.Model(model.inputs, outputs, name=model.name)
    main = ts.read_model(_tflite_convert(with_exits, _single_input_gen(with_exits, x, limit), sparse, cost_model))
    out_map = _signature_map(main, "outputs")
    missing = [p for p in points if p not in out_map]
    if missing:
        raise ConversionError(f"exit points {missing} have no tensor in the converted graph")
    exit_tensors = [out_map[p] for p in points]
    sg0 = main.subgraphs[0]
    sg0.outputs = np.array([t for t in sg0.outputs if int(t) not in exit_tensors], dtype=np.int32)
    main.signatureDefs[0].outputs = [e for e in main.signatureDefs[0].outputs if int(e.tensorIndex) not in exit_tensors]

    # Exit head: converted on its own, calibrated on the exit-point features of the same data.
    head_model = exit_model.head_model()
    feats = exit_model.features_model().predict(x[:limit], verbose=0)
    feats = feats if isinstance(feats, list) else [feats]
    names = [t.name.split(":")[0] for t in head_model.inputs]
    names = list(head_model.input_names) if hasattr(head_model, "input_names") else names

    def head_gen():
        for i in range(len(feats[0])):
            yield {n: f[i:i + 1].astype(np.float32) for n, f in zip(names, feats)}
    head = ts.read_model(_tflite_convert(head_model, head_gen, sparse, cost_model))
    head_in = _signature_map(head, "inputs")
    head_inputs = [head_in[n] for n in names]

    head_index = _append_head_subgraph(main, head, exit_tensors, head_inputs)
    producers = {int(o): i for i, op in enumerate(sg0.operators) for o in op.outputs}
    thresholds = _thresholds(policy, len(points))
    exits = [ExitRecord(main_tensor=t, head_input_tensor=int(main.subgraphs[head_index].inputs[i]),
                        after_op=producers.get(t, 0), threshold=thresholds[i])
             for i, t in enumerate(exit_tensors)]
    provisional = ts.write_model(main)
    fp = memory.tflite_footprint(provisional)
    layer_of = {l.op_index: l for l in fp.layers if l.subgraph == 0}
    ops = [OpCost(layer_of[i].macs, layer_of[i].sparse_macs, layer_of[i].stored_bytes, layer_of[i].activation_bytes)
           if i in layer_of else OpCost(0, 0, 0, 0) for i in range(len(sg0.operators))]
    head_weight = sum(l.stored_bytes for l in fp.layers if l.subgraph == head_index)
    info = {"exit_points": points, "head_weight_bytes": head_weight,
            "num_classes": int(exit_model.num_classes),
            "policy": policy.to_dict() if hasattr(policy, "to_dict") else (policy or {})}
    md = FreemlMetadata(num_classes=int(exit_model.num_classes), head_subgraph=head_index,
                        exits=exits, ops=ops, info=info)
    return replace_metadata(main, md)


def _thresholds(policy: Any, n: int) -> list[float]:
    if policy is None:
        return [NEVER] * n
    d = policy.to_dict() if hasattr(policy, "to_dict") else dict(policy)
    th = list(d.get("thresholds") or [])
    if len(th) not in (n, n - 1, 0):
        raise ConversionError(f"the policy has {len(th)} thresholds for {n} exit points")
    th = [float(t) if t is not None else NEVER for t in th]
    return th + [NEVER] * (n - len(th))


def _opcode_index(model: "ts.schema.ModelT", code: "ts.schema.OperatorCodeT") -> int:
    for i, c in enumerate(model.operatorCodes):
        if (c.builtinCode, c.deprecatedBuiltinCode, c.customCode, c.version) == \
                (code.builtinCode, code.deprecatedBuiltinCode, code.customCode, code.version):
            return i
    model.operatorCodes.append(copy.deepcopy(code))
    return len(model.operatorCodes) - 1


def _same_quantization(a, b) -> bool:
    return (np.allclose(np.asarray(a.scale), np.asarray(b.scale), rtol=0, atol=0)
            and np.array_equal(np.asarray(a.zeroPoint), np.asarray(b.zeroPoint)))


def _append_head_subgraph(main, head, exit_tensors: list[int], head_inputs: list[int]) -> int:
    """Append the head's subgraph to ``main`` (buffers and operator codes merged); its inputs
    take the quantization of the main tensors they read. Returns the new subgraph's index."""
    sg = copy.deepcopy(head.subgraphs[0])
    buffer_map = {0: 0}
    for i, b in enumerate(head.buffers):
        if i == 0:
            continue
        main.buffers.append(copy.deepcopy(b))
        buffer_map[i] = len(main.buffers) - 1
    for t in sg.tensors:
        t.buffer = buffer_map.get(t.buffer, 0)
    for op in sg.operators:
        op.opcodeIndex = _opcode_index(main, head.operatorCodes[op.opcodeIndex])
    main_tensors = main.subgraphs[0].tensors
    new_inputs: list[int] = []
    requantize: list = []
    for i, (mt, hi) in enumerate(zip(exit_tensors, head_inputs)):
        src, dst = main_tensors[mt], sg.tensors[hi]
        if list(src.shape) != list(dst.shape):
            raise ConversionError(f"exit point {i}: main tensor shape {list(src.shape)} differs "
                                  f"from the head input shape {list(dst.shape)}")
        if _same_quantization(src.quantization, dst.quantization):
            new_inputs.append(hi)
            continue
        t = copy.deepcopy(dst)
        t.name = f"freeml_exit{i}_input".encode()
        t.quantization = copy.deepcopy(src.quantization)
        sg.tensors.append(t)
        new_inputs.append(len(sg.tensors) - 1)
        op = ts.schema.OperatorT()
        code = ts.schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = ts.BuiltinOperator.QUANTIZE
        code.version = 2
        op.opcodeIndex = _opcode_index(main, code)
        op.inputs = np.array([len(sg.tensors) - 1], dtype=np.int32)
        op.outputs = np.array([hi], dtype=np.int32)
        op.builtinOptionsType = ts.schema.BuiltinOptions.QuantizeOptions
        op.builtinOptions = ts.schema.QuantizeOptionsT()
        requantize.append(op)
    sg.operators = requantize + list(sg.operators)
    sg.inputs = np.array(new_inputs, dtype=np.int32)
    sg.name = HEAD_SUBGRAPH_NAME.encode()
    main.subgraphs.append(sg)
    return len(main.subgraphs) - 1


def strip_names(model_bytes: bytes) -> bytes:
    """The same model without what only people and the TFLite Python API read: tensor and
    subgraph names, signature definitions, the description and the converter's metadata entries
    (the ``freeml`` and ``freeml_prepare`` entries stay). Interpreters run it unchanged; on the
    MSP430 the names alone are kilobytes of FRAM."""
    model = ts.read_model(model_bytes)
    for sg in model.subgraphs:
        sg.name = None
        for t in sg.tensors:
            t.name = None
    model.signatureDefs = []
    model.description = None
    kept = []
    for m in model.metadata or []:
        if (m.name.decode() if isinstance(m.name, bytes) else m.name) in (METADATA_NAME, PREPARED_NAME):
            kept.append(m)
        elif 0 <= m.buffer < len(model.buffers):
            model.buffers[m.buffer].data = None     # buffer indices stay valid
    model.metadata = kept
    return ts.write_model(model)


def compact(model_bytes: bytes) -> bytes:
    """The same model in fewer bytes, as a device holds it: a per-channel tensor whose zero
    points are all 0 keeps one (TFLite Micro reads a single zero point as every channel's,
    a space saving it documents for weights; the TensorFlow Lite interpreter refuses it), no
    shape signatures (the runtimes take static shapes), one empty buffer that every tensor
    without data points at (the converter gives each activation a buffer of its own), and in the
    ``freeml`` metadata the exit policy without its ``meta`` (the calibration's cost segments
    and validation figures, for people: the policy file keeps them). Names are not touched
    (:func:`strip_names`). On the demo's model this is a quarter of the file.

    Example::

        from freeml_keras.conversion import compact
        small = compact(open("model.tflite", "rb").read())
    """
    model = ts.read_model(model_bytes)
    for sg in model.subgraphs:
        for t in sg.tensors or []:
            t.shapeSignature = None
            q = t.quantization
            if (q is not None and q.zeroPoint is not None and len(q.zeroPoint) > 1
                    and not np.any(np.asarray(q.zeroPoint))):
                q.zeroPoint = np.zeros(1, dtype=np.int64)
    buffers = list(model.buffers or [])
    for entry in model.metadata or []:
        if ts.name_str(entry.name) == METADATA_NAME and 0 <= entry.buffer < len(buffers):
            md = FreemlMetadata.decode(bytes(buffers[entry.buffer].data))
            if isinstance(md.info.get("policy"), dict) and "meta" in md.info["policy"]:
                md.info["policy"] = {k: v for k, v in md.info["policy"].items() if k != "meta"}
                buffers[entry.buffer] = ts.schema.BufferT()
                buffers[entry.buffer].data = np.frombuffer(md.encode(), dtype=np.uint8)
    has_data = [b.data is not None and len(b.data) > 0 for b in buffers]
    # the schema's buffer 0 is the empty buffer; keep it and every buffer with data
    keep = [0] + [i for i in range(1, len(buffers)) if has_data[i]]
    if has_data and has_data[0]:
        raise ConversionError("buffer 0 holds data: the TFLite schema reserves it as the empty buffer")
    new_index = {old: new for new, old in enumerate(keep)}
    for sg in model.subgraphs:
        for t in sg.tensors or []:
            t.buffer = new_index.get(int(t.buffer), 0)
    for m in model.metadata or []:
        if int(m.buffer) not in new_index:
            raise ConversionError(f"metadata entry {m.name!r} refers to the empty buffer {m.buffer}")
        m.buffer = new_index[int(m.buffer)]
    if model.metadataBuffer is not None:        # deprecated list of metadata buffers
        model.metadataBuffer = [new_index[int(i)] for i in model.metadataBuffer if int(i) in new_index] or None
    model.buffers = [buffers[i] for i in keep]
    return ts.write_model(model)


def extract_subgraph(model_bytes: bytes, index: int) -> bytes:
    """A flatbuffer whose only subgraph is subgraph ``index`` of the given one, without the
    ``freeml`` metadata (to run the exit head alone in an interpreter, or the backbone without
    its head). Operator codes and buffer indices are kept; the data of buffers nothing refers
    to any more is left out. A model with a ``freeml_prepare`` entry gets one computed for the
    extracted subgraph (its records are by subgraph index)."""
    model = ts.read_model(model_bytes)
    prepared = any((m.name.decode() if isinstance(m.name, bytes) else m.name) == PREPARED_NAME
                   for m in model.metadata or [])
    if not 0 <= index < len(model.subgraphs):
        raise ConversionError(f"the model has {len(model.subgraphs)} subgraphs; no subgraph {index}")
    model.subgraphs = [model.subgraphs[index]]
    model.signatureDefs = []
    model.metadata = [m for m in (model.metadata or [])
                      if (m.name.decode() if isinstance(m.name, bytes) else m.name) not in (METADATA_NAME, PREPARED_NAME)]
    used = {int(t.buffer) for t in model.subgraphs[0].tensors or []} | {int(m.buffer) for m in model.metadata}
    for i, buf in enumerate(model.buffers or []):
        if i not in used:
            buf.data = None
    data = ts.write_model(model)
    return with_prepared(data) if prepared else data
