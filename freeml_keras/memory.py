"""Memory accounting: stored parameter bytes, peak activation memory, checkpoint state, MACs.

Formats a parameter can be stored in, as the runtime stores them:

- ``fp32``: every Keras weight as float32 (BatchNorm statistics included).
- ``int8``: weights int8, one float32 scale and one int64 zero point per output channel
  (TFLite's per-channel quantization, which tf 2.21 applies to Conv2D, DepthwiseConv2D and
  Dense), bias int32 with the same per-channel parameters. A BatchNormalization that follows a
  convolution or Dense layer folds into it (it adds a bias, nothing else).
- ``int8_csr``: TFLite's sparsity encoding of the int8 weights: all dimensions dense but the
  last, which is CSR: the non-zero values, ``rows + 1`` segment offsets and one column index
  per non-zero. Offsets and indices use the narrowest of uint8, uint16 and int32 that holds their
  largest value. The TFLite converter encodes a tensor this way when at least 30% of its
  weights are zero (``SPARSE_MIN_ZERO_FRACTION``), which is also what ``stored`` picks here.

Peak activation memory assumes sequential execution with int8 activations: at every step the
bytes of all live tensors (produced and still to be read, plus the step's output), maximum over
steps. Layers that the converter folds away (Dropout, BatchNormalization, an activation after a
convolution) produce no tensor of their own.

Checkpoint state (intermittent execution, ``tflm_port/include/freeml/fm_checkpoint.h``): two
copies (double buffering) of a record holding a sequence number (4 B), the operator index (2 B),
flags with the number of exit points passed (2 B), the position inside the operator (4 B), the
exit head's int32 accumulator (4 B per class, at offset 12) and a tag, the complement of the
sequence number (4 B), written last. The activation buffers
themselves live in NVM too on the MSP430 (``DeviceProfile.activations_in_nvm``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from freeml_keras import devices
from freeml_keras.format import tflite as ts
from freeml_keras.format.model import ModelLike, as_model

SPARSE_MIN_ZERO_FRACTION = 0.3
SCALE_BYTES = 4          # float32 scale per channel
ZERO_POINT_BYTES = 8     # int64 zero point per channel (TFLite schema: [long])
BIAS_BYTES = 4           # int32 bias
CHECKPOINT_RECORD_HEADER_BYTES = 16
ARENA_ALIGNMENT = 16     # TFLite Micro aligns arena buffers to 16 bytes


@dataclass
class LayerFootprint:
    """One layer (Keras) or operator (TFLite): what it stores, produces and computes."""
    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int = 0
    nonzero: int = 0
    fp32_bytes: int = 0
    int8_bytes: int = 0
    int8_csr_bytes: int = 0
    stored_format: str = "-"
    stored_bytes: int = 0
    activation_bytes: int = 0
    macs: int = 0
    sparse_macs: int = 0
    subgraph: int = 0
    op_index: int = -1       # operator index in its subgraph (.tflite rows)

    @property
    def density(self) -> float:
        return self.nonzero / self.params if self.params else 1.0


@dataclass
class Footprint:
    """Per-layer and total memory of a model in the runtime's formats."""
    source: str
    layers: list[LayerFootprint]
    flash_bytes: int            # what goes in NVM: stored parameters (Keras) or the file (.tflite)
    weight_bytes: int           # stored parameters: values, sparse indices, bias, quantization
    arena_bytes: int            # peak live activation bytes, sequential execution
    checkpoint_bytes: int
    macs: int
    sparse_macs: int
    num_classes: int
    totals: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        for row, layer in zip(d["layers"], self.layers):
            row["density"] = round(layer.density, 4)
            row["output_shape"] = list(layer.output_shape)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def fits(self, device: str | devices.DeviceProfile) -> dict:
        """Whether parameters and runtime memory fit the device's budgets, with the margins."""
        dev = devices.get(device)
        ram = self.arena_bytes + self.checkpoint_bytes
        return {"device": dev.name,
                "flash_ok": self.flash_bytes <= dev.model_budget_bytes,
                "flash_margin_bytes": dev.model_budget_bytes - self.flash_bytes,
                "ram_ok": ram <= dev.ram_budget_bytes,
                "ram_margin_bytes": dev.ram_budget_bytes - ram}

    def table(self) -> str:
        """A readable per-layer table with totals."""
        head = ("layer", "type", "output", "params", "density", "fp32 B", "int8 B", "csr B",
                "stored", "act B", "MACs")
        rows = [head]
        for l in self.layers:
            rows.append((l.name, l.type, "x".join(map(str, l.output_shape)) or "-", f"{l.params:,}",
                         f"{l.density:.2f}" if l.params else "-", f"{l.fp32_bytes:,}",
                         f"{l.int8_bytes:,}", f"{l.int8_csr_bytes:,}",
                         f"{l.stored_bytes:,} {l.stored_format}" if l.params else "-",
                         f"{l.activation_bytes:,}", f"{l.macs:,}"))
        rows.append(("total", "", "", f"{sum(l.params for l in self.layers):,}", "",
                     f"{self.totals.get('fp32', 0):,}", f"{self.totals.get('int8', 0):,}",
                     f"{self.totals.get('int8_csr', 0):,}", f"{self.weight_bytes:,}", "",
                     f"{self.macs:,}"))
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
        lines = ["  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w)
                           for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.insert(len(lines) - 1, "-" * len(lines[0]))
        lines += ["",
                  f"flash (NVM) bytes     {self.flash_bytes:,}",
                  f"weight bytes          {self.weight_bytes:,}",
                  f"peak activation bytes {self.arena_bytes:,}",
                  f"checkpoint bytes      {self.checkpoint_bytes:,}",
                  f"MACs (dense / sparse) {self.macs:,} / {self.sparse_macs:,}"]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def index_bytes(max_value: int) -> int:
    """Width of the narrowest index type the sparsity encoding uses for values up to max_value."""
    if max_value <= 0xFF:
        return 1
    if max_value <= 0xFFFF:
        return 2
    return 4


def csr_bytes(weights: np.ndarray) -> int:
    """Bytes of an int8 tensor (in TFLite layout) in TFLite's CSR-on-last-dimension encoding."""
    w = np.asarray(weights)
    last = w.shape[-1]
    rows = int(np.prod(w.shape[:-1]))
    nnz = int(np.count_nonzero(w))
    return nnz + (rows + 1) * index_bytes(nnz) + nnz * index_bytes(last - 1)


def checkpoint_state_bytes(num_classes: int) -> int:
    """NVM bytes the intermittent runtime adds: two copies of the state record."""
    return 2 * (CHECKPOINT_RECORD_HEADER_BYTES + 4 * num_classes)


def peak_live_bytes(sizes: Sequence[int], first_use: Sequence[int], last_use: Sequence[int]) -> int:
    """Maximum over steps of the bytes of tensors live at that step (first_use..last_use)."""
    if not sizes:
        return 0
    steps = max(last_use) + 1
    live = np.zeros(steps + 1, dtype=np.int64)
    for s, a, b in zip(sizes, first_use, last_use):
        live[a:b + 1] += s
    return int(live.max())


def greedy_arena_bytes(sizes: Sequence[int], first_use: Sequence[int], last_use: Sequence[int],
                       alignment: int = ARENA_ALIGNMENT) -> int:
    """Arena size of a greedy first-fit plan (largest tensors first, aligned offsets), the way
    TFLite Micro's greedy memory planner places non-persistent buffers."""
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], first_use[i]))
    placed: list[tuple[int, int, int, int]] = []  # offset, size, first, last
    top = 0
    for i in order:
        size = -(-sizes[i] // alignment) * alignment
        overlapping = sorted((o, s) for o, s, a, b in placed
                             if not (b < first_use[i] or last_use[i] < a))
        offset = 0
        for o, s in overlapping:
            if offset + size <= o:
                break
            offset = max(offset, o + s)
        placed.append((offset, size, first_use[i], last_use[i]))
        top = max(top, offset + size)
    return top


# ---------------------------------------------------------------------------------------------
# Keras models

_FOLDED = {"Dropout", "BatchNormalization", "InputLayer", "SpatialDropout1D", "SpatialDropout2D",
           "GaussianNoise", "ActivityRegularization"}
_ACTIVATIONS = {"ReLU", "Activation", "LeakyReLU", "Softmax"}
# layers whose weights keras_footprint stores as the converter does (BatchNormalization: folded
# into the layer before it, or per-channel scale and offset); a layer with weights of another
# kind is refused (KerasFootprintError), never counted as 0 bytes
_WEIGHTED = {"Conv2D", "Conv1D", "DepthwiseConv2D", "Dense", "SeparableConv2D"}
_COUNTED = _WEIGHTED | {"BatchNormalization"}


class KerasFootprintError(ValueError):
    """A Keras layer with parameters whose stored bytes keras_footprint cannot count as the
    converter stores them; the message names the layer."""


def tflite_layout_kernels(layer) -> list[tuple[np.ndarray, int, str]]:
    """The kernels a Keras layer converts to, each in the layout the TFLite converter stores,
    with its output-channel axis and its operator: one for Conv1D, Conv2D, DepthwiseConv2D and
    Dense, two for SeparableConv2D (DEPTHWISE_CONV_2D then a 1x1 CONV_2D), none otherwise."""
    kind = type(layer).__name__
    weights = layer.get_weights()
    if kind not in _WEIGHTED or not weights:
        return []
    if kind == "SeparableConv2D":
        dw, pw = weights[0], weights[1]
        return [(dw.reshape(1, dw.shape[0], dw.shape[1], -1), -1, "DEPTHWISE_CONV_2D"),
                (np.transpose(pw, (3, 0, 1, 2)), 0, "CONV_2D")]
    op = {"Dense": "FULLY_CONNECTED", "DepthwiseConv2D": "DEPTHWISE_CONV_2D"}.get(kind, "CONV_2D")
    return [(tflite_layout_kernel(layer), -1 if kind == "DepthwiseConv2D" else 0, op)]


def tflite_layout_kernel(layer) -> np.ndarray | None:
    """A Keras layer's kernel transposed to the layout the TFLite converter stores."""
    kind = type(layer).__name__
    weights = layer.get_weights()
    if kind not in _WEIGHTED or kind == "SeparableConv2D" or not weights:
        return None
    k = weights[0]
    if kind == "Conv2D":
        return np.transpose(k, (3, 0, 1, 2))
    if kind == "Conv1D":
        return np.transpose(k, (2, 0, 1))[:, None, :, :]
    if kind == "DepthwiseConv2D":
        return k.reshape(1, k.shape[0], k.shape[1], -1)
    return np.transpose(k, (1, 0))  # Dense


def quantize_kernel(kernel: np.ndarray, channel_axis: int = 0) -> np.ndarray:
    """Symmetric per-channel int8 quantization (scale = max|w| / 127), as the converter does it;
    weights that round to zero are not stored by the sparsity encoding."""
    k = np.asarray(kernel, dtype=np.float64)
    axes = tuple(a for a in range(k.ndim) if a != channel_axis % k.ndim)
    amax = np.max(np.abs(k), axis=axes, keepdims=True)
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    return np.clip(np.round(k / scale), -127, 127).astype(np.int8)


def _shape(t) -> tuple[int, ...]:
    return tuple(int(d) for d in t.shape[1:])


def keras_footprint(model, *, num_classes: int | None = None) -> Footprint:
    """Footprint of a Keras model (tf_keras, or Keras 3 through :mod:`freeml_keras.bridge`) in
    the formats the runtime stores (batch size 1): every layer's parameters as the converter
    stores them (Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D, Dense, BatchNormalization;
    layers without parameters store nothing). Raises :class:`KerasFootprintError` naming a
    layer with parameters of another kind (an LSTM, a Normalization, a nested model), rather
    than counting it as 0 bytes.

    >>> from freeml_keras import memory
    >>> memory.keras_footprint(model).weight_bytes   # doctest: +SKIP
    6381
    """
    from freeml_keras.bridge import to_tf_keras
    model = to_tf_keras(model)
    layers = [l for l in model.layers]
    fold_bn_into: set[str] = set()
    rows: list[LayerFootprint] = []
    # Tensor bookkeeping for liveness: id(KerasTensor) -> index of the materialized tensor.
    tensor_of: dict[int, int] = {}
    sizes: list[int] = []
    first: list[int] = []
    last: list[int] = []
    notes: list[str] = []
    for inp in model.inputs:
        tensor_of[id(inp)] = len(sizes)
        sizes.append(int(np.prod(_shape(inp))))
        first.append(0)
        last.append(0)
    step = 0
    prev_kind: dict[str, str] = {}
    for layer in layers:
        kind = type(layer).__name__
        ins = layer.input if isinstance(layer.input, list) else [layer.input]
        outs = layer.output if isinstance(layer.output, list) else [layer.output]
        out_shape = _shape(outs[0])
        producer = [getattr(t, "_keras_history", None) for t in ins]
        producer_kind = type(producer[0].layer).__name__ if producer and producer[0] else ""
        row = LayerFootprint(name=layer.name, type=kind, output_shape=out_shape)
        params = int(sum(np.prod(w.shape) for w in layer.get_weights()))
        row.params = params
        row.nonzero = params
        row.fp32_bytes = 4 * params
        if params and kind not in _COUNTED:
            raise KerasFootprintError(
                f"layer {layer.name!r} ({kind}) has {params:,} parameters that memory.keras_footprint "
                f"cannot count as the converter stores them (it counts {', '.join(sorted(_COUNTED))}); "
                f"measure the converted model with memory.tflite_footprint instead")
        kernels = tflite_layout_kernels(layer)
        folded = (kind in _FOLDED or
                  (kind in _ACTIVATIONS and producer_kind in _WEIGHTED | {"BatchNormalization"}))
        if kind == "BatchNormalization" and producer_kind in _WEIGHTED:
            fold_bn_into.add(producer[0].layer.name)
        if kind == "BatchNormalization" and producer_kind not in _WEIGHTED and kind != "InputLayer":
            notes.append(f"{layer.name}: BatchNormalization not after a conv/Dense layer is not "
                         "folded; counted as int8 scale and offset per channel")
            row.int8_bytes = 2 * BIAS_BYTES * out_shape[-1]
        if kernels:
            # The converter gives every convolution a bias tensor (both halves of a
            # SeparableConv2D too), and drops a Dense bias that is all zeros.
            ws = layer.get_weights()
            has_bias = kind != "Dense" or (bool(layer.use_bias) and bool(np.any(ws[1])))
            row.int8_bytes = row.int8_csr_bytes = row.stored_bytes = 0
            formats, nonzero = [], 0
            for k_layout, axis, op in kernels:
                kernel = quantize_kernel(k_layout, axis)
                channels = kernel.shape[0] if axis == 0 else kernel.shape[-1]
                per_channel = channels * (SCALE_BYTES + ZERO_POINT_BYTES)
                bias = (BIAS_BYTES * channels + per_channel) if has_bias else 0
                overhead = per_channel + bias
                nonzero += int(np.count_nonzero(kernel))
                dense_bytes, csr = kernel.size + overhead, csr_bytes(kernel) + overhead
                sparse = 1.0 - np.count_nonzero(kernel) / kernel.size >= SPARSE_MIN_ZERO_FRACTION
                formats.append("int8_csr" if sparse else "int8")
                row.int8_bytes += dense_bytes
                row.int8_csr_bytes += csr
                row.stored_bytes += csr if sparse else dense_bytes
                positions = int(np.prod(out_shape[:-1])) if len(out_shape) > 1 or kind != "Dense" else 1
                row.macs += positions * kernel.size
                row.sparse_macs += positions * int(np.count_nonzero(kernel))
            bias_w = ws[2] if kind == "SeparableConv2D" and len(ws) > 2 else (ws[1] if kind != "SeparableConv2D" and len(ws) > 1 else None)
            row.nonzero = nonzero + (int(np.count_nonzero(bias_w)) if bias_w is not None else 0)
            row.stored_format = "+".join(dict.fromkeys(formats))
        elif row.int8_bytes:
            row.stored_format, row.stored_bytes = "int8", row.int8_bytes
        prev_kind[layer.name] = kind
        if kind == "InputLayer":
            rows.append(row)
            row.activation_bytes = int(np.prod(out_shape))
            continue
        in_idx = [tensor_of[id(t)] for t in ins if id(t) in tensor_of]
        if folded:
            for t in outs:
                tensor_of[id(t)] = in_idx[0]
            row.activation_bytes = 0
        else:
            step += 1
            for i in in_idx:
                last[i] = max(last[i], step)
            if kind == "SeparableConv2D":    # the depthwise half's output feeds the pointwise half
                sizes.append(int(np.prod(out_shape[:-1])) * int(kernels[0][0].shape[-1]))
                first.append(step)
                last.append(step + 1)
                step += 1
            for t in outs:
                tensor_of[id(t)] = len(sizes)
                sizes.append(int(np.prod(_shape(t))))
                first.append(step)
                last.append(step)
            row.activation_bytes = int(np.prod(out_shape))
        rows.append(row)
    # A BatchNormalization folded into a bias-less layer gives it a bias.
    for row, layer in zip(rows, layers):
        if layer.name in fold_bn_into and type(layer).__name__ == "Dense" and not layer.use_bias:
            ch = row.output_shape[-1]
            extra = BIAS_BYTES * ch + ch * (SCALE_BYTES + ZERO_POINT_BYTES)
            row.int8_bytes += extra
            row.int8_csr_bytes += extra
            row.stored_bytes += extra
    for o in model.outputs:  # outputs stay live to the end
        if id(o) in tensor_of:
            last[tensor_of[id(o)]] = step
    if num_classes is None:
        num_classes = int(_shape(model.outputs[-1])[-1])
    weight_bytes = sum(r.stored_bytes for r in rows)
    return Footprint(
        source=f"keras:{model.name}", layers=rows, flash_bytes=weight_bytes,
        weight_bytes=weight_bytes, arena_bytes=greedy_arena_bytes(sizes, first, last),
        checkpoint_bytes=checkpoint_state_bytes(num_classes),
        macs=sum(r.macs for r in rows), sparse_macs=sum(r.sparse_macs for r in rows),
        num_classes=num_classes,
        totals={"fp32": sum(r.fp32_bytes for r in rows), "int8": sum(r.int8_bytes or r.stored_bytes for r in rows),
                "int8_csr": sum(r.int8_csr_bytes or r.stored_bytes for r in rows),
                "params": sum(r.params for r in rows),
                "peak_live_bytes": peak_live_bytes(sizes, first, last)},
        notes=notes)


# ---------------------------------------------------------------------------------------------
# TFLite flatbuffers

_WEIGHTED_OPS = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1}
# other operators with constant weights: the inputs that hold them (TRANSPOSE_CONV: weights and
# bias; the LSTM: four input and four recurrent matrices, four biases)
_OTHER_WEIGHTED_OPS = {"TRANSPOSE_CONV": (1, 3), "UNIDIRECTIONAL_SEQUENCE_LSTM": tuple(range(1, 9)) + (12, 13, 14, 15)}
_INDEX_VECTOR_BYTES = {1: 4, 2: 2, 3: 1}  # SparseIndexVector union: Int32, Uint16, Uint8
_NUMPY_TYPES = {ts.TensorType.FLOAT32: np.float32, ts.TensorType.INT8: np.int8, ts.TensorType.UINT8: np.uint8,
                ts.TensorType.INT16: np.int16, ts.TensorType.INT32: np.int32, ts.TensorType.FLOAT16: np.float16}


def sparse_index_bytes(tensor) -> int:
    """Bytes of the segment and index arrays of a tensor in TFLite's sparsity encoding."""
    sp = tensor.sparsity
    if sp is None:
        return 0
    total = 0
    for dm in sp.dimMetadata or []:
        for kind, vec in ((dm.arraySegmentsType, dm.arraySegments), (dm.arrayIndicesType, dm.arrayIndices)):
            if vec is not None and vec.values is not None:
                total += len(vec.values) * _INDEX_VECTOR_BYTES[kind]
    return total


def quantization_bytes(tensor) -> int:
    q = tensor.quantization
    if q is None:
        return 0
    n_scale = 0 if q.scale is None else len(q.scale)
    n_zp = 0 if q.zeroPoint is None else len(q.zeroPoint)
    return SCALE_BYTES * n_scale + ZERO_POINT_BYTES * n_zp


def tflite_footprint(data: ModelLike) -> Footprint:
    """Footprint of a .tflite flatbuffer (bytes or ``TFLiteModel``): stored weights (values,
    sparse indices, bias, quantization) per operator, arena plan of the main subgraph, MACs."""
    model = as_model(data).parsed
    buffers = model.buffers or []

    def const_bytes(t) -> int:
        buf = buffers[t.buffer].data if 0 <= t.buffer < len(buffers) else None
        return 0 if buf is None else len(buf)

    def values(t) -> np.ndarray:
        """A constant tensor's values in its own type (a float32 weight is one value, not 4)."""
        buf = np.asarray(buffers[t.buffer].data, dtype=np.uint8)
        dtype = _NUMPY_TYPES.get(t.type, np.int8)
        return buf[:len(buf) - len(buf) % np.dtype(dtype).itemsize].view(dtype)

    rows: list[LayerFootprint] = []
    notes: list[str] = []
    arena = peak = 0
    num_classes = 0
    for sg_index, sg in enumerate(model.subgraphs):
        tensors = sg.tensors or []
        densify_src: dict[int, int] = {}
        sizes: list[int] = []
        first: list[int] = []
        last: list[int] = []
        slot: dict[int, int] = {}

        def activation(ti: int, step: int) -> None:
            if ti < 0 or const_bytes(tensors[ti]) or ti in densify_src:
                return
            if ti not in slot:
                t = tensors[ti]
                slot[ti] = len(sizes)
                sizes.append(int(np.prod(t.shape)) * ts.TENSOR_TYPE_BYTES.get(t.type, 4) if t.shape is not None else 0)
                first.append(step)
                last.append(step)
            last[slot[ti]] = max(last[slot[ti]], step)

        for ti in sg.inputs if sg.inputs is not None else []:
            activation(int(ti), 0)
        densify_bytes = 0
        for step, op in enumerate(sg.operators or [], start=1):
            name = ts.op_name(model, op.opcodeIndex)
            ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
            outs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
            if name == "DENSIFY":
                densify_src[outs[0]] = ins[0]
                t = tensors[outs[0]]
                densify_bytes += int(np.prod(t.shape)) * ts.TENSOR_TYPE_BYTES.get(t.type, 4)
                continue
            for ti in ins + outs:
                activation(ti, step)
            out_t = tensors[outs[0]] if outs else None
            prefix = f"sg{sg_index}/" if sg_index else ""
            row = LayerFootprint(name=prefix + (ts.name_str(out_t.name) if out_t is not None and out_t.name else f"op{step}"),
                                 type=name, output_shape=tuple(int(d) for d in out_t.shape) if out_t is not None else (),
                                 subgraph=sg_index, op_index=step - 1)
            row.activation_bytes = (int(np.prod(out_t.shape)) * ts.TENSOR_TYPE_BYTES.get(out_t.type, 4)
                                    if out_t is not None else 0)
            if name in _WEIGHTED_OPS and len(ins) > 1:
                if ins[1] < 0 or len(tensors[densify_src.get(ins[1], ins[1])].shape) < 2:
                    raise ts.TFLiteFormatError(f"subgraph {sg_index} operator {step - 1} ({name}): weights "
                                               f"missing or not at least 2-D")
                w = tensors[densify_src.get(ins[1], ins[1])]
                bias = tensors[densify_src.get(ins[2], ins[2])] if len(ins) > 2 and ins[2] >= 0 else None
                dense_size = int(np.prod(w.shape))
                nnz = int(np.count_nonzero(values(w))) if const_bytes(w) else 0
                bias_n = int(np.prod(bias.shape)) if bias is not None else 0
                overhead = quantization_bytes(w) + (const_bytes(bias) + quantization_bytes(bias) if bias is not None else 0)
                row.params = dense_size + bias_n
                row.nonzero = nnz + bias_n
                row.fp32_bytes = 4 * row.params
                row.int8_bytes = dense_size + overhead
                row.stored_format = "int8_csr" if w.sparsity is not None else "int8"
                row.stored_bytes = const_bytes(w) + sparse_index_bytes(w) + overhead
                row.int8_csr_bytes = row.stored_bytes if w.sparsity is not None else 0
                positions = int(np.prod(row.output_shape[:-1])) if row.output_shape else 1
                if name == "DEPTHWISE_CONV_2D":
                    row.macs = positions * int(np.prod(w.shape[1:]))
                    row.sparse_macs = positions * nnz
                else:
                    per_out = int(np.prod(w.shape[1:]))
                    out_ch = int(w.shape[0])
                    row.macs = positions * per_out * out_ch
                    row.sparse_macs = positions * nnz
            elif name in _OTHER_WEIGHTED_OPS:
                ws = [tensors[densify_src.get(ins[k], ins[k])] for k in _OTHER_WEIGHTED_OPS[name]
                      if k < len(ins) and ins[k] >= 0]
                ws = [w for w in ws if const_bytes(w)]
                row.params = sum(int(np.prod(w.shape)) for w in ws)
                row.nonzero = sum(int(np.count_nonzero(values(w))) for w in ws)
                row.fp32_bytes = 4 * row.params
                row.stored_format = "int8_csr" if any(w.sparsity is not None for w in ws) else "int8"
                row.stored_bytes = sum(const_bytes(w) + sparse_index_bytes(w) + quantization_bytes(w) for w in ws)
                row.int8_bytes = sum(int(np.prod(w.shape)) * ts.TENSOR_TYPE_BYTES.get(w.type, 1) +
                                     quantization_bytes(w) for w in ws)
                row.int8_csr_bytes = row.stored_bytes if row.stored_format == "int8_csr" else 0
                if name == "TRANSPOSE_CONV" and ws and len(ins) > 2 and ins[2] >= 0:
                    # every input value meets every tap of every output channel
                    row.macs = row.sparse_macs = int(np.prod(tensors[ins[2]].shape)) * int(np.prod(ws[0].shape[:3]))
                elif name == "UNIDIRECTIONAL_SEQUENCE_LSTM" and out_t is not None:
                    # per sequential step and state element: four gates of input + state MACs
                    row.macs = row.sparse_macs = sum(int(np.prod(w.shape)) for w in ws if len(w.shape) == 2) * \
                        int(np.prod(out_t.shape[:-1]))
            rows.append(row)
        for ti in sg.outputs if sg.outputs is not None else []:
            activation(int(ti), len(sg.operators or []))
        if sg_index == 0:
            arena = greedy_arena_bytes(sizes, first, last)
            peak = peak_live_bytes(sizes, first, last)
            outs0 = list(sg.outputs if sg.outputs is not None else [])
            if outs0:
                num_classes = int(tensors[int(outs0[-1])].shape[-1])
            if densify_bytes:
                notes.append(f"the graph has DENSIFY ops: stock TFLite expands sparse weights into "
                             f"{densify_bytes:,} B of RAM; the FreeML runtime reads CSR in place")
    weight_bytes = sum(r.stored_bytes for r in rows)
    return Footprint(
        source="tflite", layers=rows, flash_bytes=len(data), weight_bytes=weight_bytes,
        arena_bytes=arena, checkpoint_bytes=checkpoint_state_bytes(num_classes),
        macs=sum(r.macs for r in rows), sparse_macs=sum(r.sparse_macs for r in rows),
        num_classes=num_classes,
        totals={"fp32": sum(r.fp32_bytes for r in rows), "int8": sum(r.int8_bytes for r in rows),
                "int8_csr": sum(r.int8_csr_bytes for r in rows), "params": sum(r.params for r in rows),
                "peak_live_bytes": peak},
        notes=notes)


def flatbuffer_breakdown(data: ModelLike) -> dict[str, int]:
    """Where the bytes of a .tflite file go: ``weights`` (constant non-int32 tensors' values and
    their sparse indices), ``biases`` (constant int32 tensors), ``scales`` (every tensor's float
    scales), ``zero_points``, ``metadata:<name>`` per metadata entry, ``names`` (tensor and
    subgraph names) and ``tables`` (the rest: the flatbuffer's tables, vectors, shapes,
    alignment). ``overhead`` is everything but weights, biases and scales, and
    ``overhead_fraction`` its share of the file. ``stored``: the bytes a provisioned device keeps
    (:func:`freeml_keras.format.tflite.data_prefix`, the whole file for a model without its id
    in ``freeml_prepare``), and ``stored_overhead_fraction`` the share of those that are not
    weights, sparse indices or biases (the device keeps no scales: its prepared state has
    the multipliers)."""
    m = as_model(data)
    parsed = m.parsed
    out = {"file": len(m), "weights": 0, "biases": 0, "scales": 0, "zero_points": 0, "names": 0}
    for sg in parsed.subgraphs:
        out["names"] += len(sg.name or b"")
        for t in sg.tensors or []:
            out["names"] += len(t.name or b"")
            q = t.quantization
            if q is not None:
                out["scales"] += SCALE_BYTES * (0 if q.scale is None else len(q.scale))
                out["zero_points"] += ZERO_POINT_BYTES * (0 if q.zeroPoint is None else len(q.zeroPoint))
            buf = parsed.buffers[t.buffer].data if 0 <= t.buffer < len(parsed.buffers) else None
            if buf is not None and len(buf):
                out["biases" if t.type == ts.TensorType.INT32 else "weights"] += len(buf)
            out["weights"] += sparse_index_bytes(t)
    for md in parsed.metadata or []:
        name = md.name.decode() if isinstance(md.name, bytes) else str(md.name)
        buf = parsed.buffers[md.buffer].data if 0 <= md.buffer < len(parsed.buffers) else None
        out[f"metadata:{name}"] = 0 if buf is None else len(buf)
    counted = sum(v for k, v in out.items() if k != "file")
    out["tables"] = out["file"] - counted
    out["overhead"] = out["file"] - out["weights"] - out["biases"] - out["scales"]
    out["overhead_fraction"] = out["overhead"] / out["file"] if out["file"] else 0.0
    out["stored"] = ts.data_prefix(m.data) if ts.prepared_data_span(m.data) is not None else len(m)
    out["stored_overhead_fraction"] = (max(0, out["stored"] - out["weights"] - out["biases"]) / out["stored"]
                                       if out["stored"] else 0.0)
    return out
