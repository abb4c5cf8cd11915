"""The one place that reads and writes TFLite flatbuffers: the TFLite schema's object API.

Uses tflite-micro's generated copy of the schema module, which imports without TensorFlow.
"""

from __future__ import annotations

import copy

import flatbuffers
import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

__all__ = ["schema", "read_model", "write_model", "BuiltinOperator", "TensorType",
           "op_name", "tensor_type_name", "TFLiteFormatError", "FILE_IDENTIFIER",
           "PREPARED_NAME", "PREPARED_MAGIC", "fnv1a32", "prepared_data_span", "stamp_model_id",
           "tensor_spec", "op_model", "name_str"]

FILE_IDENTIFIER = b"TFL3"
# The metadata entry with the operators' precomputed requantization parameters
# (freeml_keras.format.prepared): its bytes 8..12 hold the FNV-1a hash of the whole file (with
# those 4 bytes zero), which write_model keeps right.
PREPARED_NAME = "freeml_prepare"
PREPARED_MAGIC = b"FMLP"
_ID_AT = 8                      # offset of the model id in the entry's data
_FNV_OFFSET = 2166136261
_FNV_PRIME = 16777619
BuiltinOperator = schema.BuiltinOperator
TensorType = schema.TensorType

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
TENSOR_TYPE_BYTES = {
    schema.TensorType.FLOAT32: 4, schema.TensorType.INT32: 4, schema.TensorType.INT8: 1,
    schema.TensorType.UINT8: 1, schema.TensorType.INT16: 2, schema.TensorType.INT64: 8,
    schema.TensorType.BOOL: 1, schema.TensorType.FLOAT16: 2,
}


class TFLiteFormatError(ValueError):
    """A file that is not a TFLite flatbuffer we can read; the message says why."""


def builtin_code(model: "schema.ModelT", opcode_index: int) -> int:
    """Builtin operator code of this opcode index (the larger of the two fields: files from
    before schema 3a hold it in the deprecated one)."""
    code = model.operatorCodes[opcode_index]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def op_name(model: "schema.ModelT", opcode_index: int) -> str:
    """Name of the operator with this opcode index (``CONV_2D``, or the custom code)."""
    code = model.operatorCodes[opcode_index]
    builtin = builtin_code(model, opcode_index)
    if builtin == schema.BuiltinOperator.CUSTOM:
        cc = code.customCode
        return "CUSTOM:" + (cc.decode() if isinstance(cc, bytes) else str(cc))
    return _OP_NAMES.get(builtin, f"OP_{builtin}")


def name_str(name) -> str:
    r"""A name from the file (bytes, str or None) as text; bytes that are not UTF-8 are replaced.

    >>> name_str(b"conv1"), name_str(None), name_str(b"bad\xff") == "bad\ufffd"
    ('conv1', '', True)
    """
    if name is None:
        return ""
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)


def tensor_type_name(t: int) -> str:
    return _TYPE_NAMES.get(t, f"TYPE_{t}")


def read_model(data: bytes) -> "schema.ModelT":
    """Unpack a TFLite flatbuffer into the object API, or raise TFLiteFormatError with the reason."""
    data = bytes(data)
    if len(data) < 8:
        raise TFLiteFormatError(f"file is {len(data)} bytes: too short to be a TFLite flatbuffer")
    ident = data[4:8]
    if ident != FILE_IDENTIFIER:
        raise TFLiteFormatError(
            f"bytes 4..8 are {ident!r}, not the TFLite file identifier {FILE_IDENTIFIER!r}")
    root = int.from_bytes(data[0:4], "little")
    if root >= len(data):
        raise TFLiteFormatError(f"root table offset {root} is past the end of the file ({len(data)} bytes)")
    try:
        m = schema.Model.GetRootAsModel(data, 0)
        model = schema.ModelT.InitFromObj(m)
    except Exception as e:  # the generated reader raises anything from struct.error to IndexError
        raise TFLiteFormatError(f"corrupt flatbuffer: {type(e).__name__}: {e}") from None
    if not model.subgraphs:
        raise TFLiteFormatError("the model has no subgraphs")
    _check_indices(model)
    return model


class _Packed:
    """A table already in the builder: ``Pack`` returns its offset. (The object API packs a
    model's children in a fixed order; this is how :func:`write_model` chooses another.)"""

    def __init__(self, offset: int):
        self.offset = offset

    def Pack(self, builder) -> int:  # noqa: N802 (the object API's name)
        return self.offset


def _indices(v) -> list[int]:
    return [] if v is None else [int(i) for i in v]


def _check_indices(model: "schema.ModelT") -> None:
    """Every index the file holds points inside its list (operator codes, tensors, buffers), as
    TFLite's verifier and the C runtime require; a tensor without a shape gets the empty one (a
    scalar). Raises TFLiteFormatError naming the first that does not."""
    n_buf, n_codes = len(model.buffers or []), len(model.operatorCodes or [])
    for md in model.metadata or []:
        if not 0 <= md.buffer < max(n_buf, 1):
            raise TFLiteFormatError(f"metadata buffer index {md.buffer} out of range ({n_buf} buffers)")
    for si, sg in enumerate(model.subgraphs):
        tensors = sg.tensors or []
        nt = len(tensors)
        for ti, t in enumerate(tensors):
            if t.shape is None:
                t.shape = np.zeros(0, np.int32)
            if not 0 <= t.buffer < max(n_buf, 1):
                raise TFLiteFormatError(f"subgraph {si} tensor {ti}: buffer index {t.buffer} out of range")
        for what in ("inputs", "outputs"):
            for i in _indices(getattr(sg, what)):
                if not 0 <= i < nt:
                    raise TFLiteFormatError(f"subgraph {si} {what[:-1]} tensor index {i} out of range ({nt} tensors)")
        for k, op in enumerate(sg.operators or []):
            if not 0 <= op.opcodeIndex < n_codes:
                raise TFLiteFormatError(f"subgraph {si} operator {k}: operator code index {op.opcodeIndex} "
                                        f"out of range ({n_codes} codes)")
            for i in _indices(op.inputs):
                if not -1 <= i < nt:
                    raise TFLiteFormatError(f"subgraph {si} operator {k}: input tensor index {i} out of range")
            for i in _indices(op.outputs):
                if not 0 <= i < nt:
                    raise TFLiteFormatError(f"subgraph {si} operator {k}: output tensor index {i} out of range")


def write_model(model: "schema.ModelT") -> bytes:
    """Serialize an object-API model back to flatbuffer bytes with the TFL3 identifier. When the
    model has a ``freeml_prepare`` metadata entry, its model id is set for these very bytes
    (:func:`stamp_model_id`), so that every writer of the package keeps it right.

    Layout (a flatbuffer is built from its end), from the end of the file: the buffers that only
    metadata entries other than ``freeml_prepare`` hold (the ``freeml`` entry: read to prepare
    and by people), the operators' and the dense tensors' tables, the ``freeml_prepare`` entry
    (the part a prepared device reads in place first: :mod:`freeml_keras.format.prepared`), the
    sparse tensors' tables with their CSR index arrays, the rest of the graph, the tensors'
    buffers, the root. So everything the runtime reads once the model is prepared (weights,
    biases, CSR indices, the model id, SOFTMAX's table) comes before what it reads only to
    prepare (:func:`data_prefix`), and a provisioned device stores only that prefix."""
    b = flatbuffers.Builder(1024)
    m = copy.copy(model)
    m.subgraphs = [copy.copy(sg) for sg in model.subgraphs or []] if model.subgraphs is not None else None
    m.buffers = list(model.buffers) if model.buffers is not None else None
    prepared, meta_only = _metadata_buffers(model)
    for i in sorted(meta_only - {prepared}):
        m.buffers[i] = _Packed(m.buffers[i].Pack(b))
    for sg in m.subgraphs or []:
        if sg.operators is not None:
            sg.operators = [_Packed(op.Pack(b)) for op in sg.operators]
    for sparse in (False, True):
        if sparse and prepared is not None:
            m.buffers[prepared] = _Packed(m.buffers[prepared].Pack(b))
        for sg in m.subgraphs or []:
            if sg.tensors is not None:
                sg.tensors = [_Packed(t.Pack(b)) if not isinstance(t, _Packed) and (t.sparsity is not None) == sparse
                              else t for t in sg.tensors]
    b.Finish(m.Pack(b), file_identifier=FILE_IDENTIFIER)
    return stamp_model_id(bytes(b.Output()))


def _metadata_buffers(model: "schema.ModelT") -> tuple[int | None, set[int]]:
    """(the buffer of the ``freeml_prepare`` entry or None, the buffers that metadata entries
    and no tensor hold): the buffers :func:`write_model` places apart from the weights."""
    held = {int(t.buffer) for sg in model.subgraphs or [] for t in sg.tensors or []}
    n = len(model.buffers or [])
    prepared, meta_only = None, set()
    for md in model.metadata or []:
        if 0 < md.buffer < n and md.buffer not in held:
            meta_only.add(int(md.buffer))
            if name_str(md.name) == PREPARED_NAME and prepared is None:
                prepared = int(md.buffer)
    return prepared, meta_only


def fnv1a32(data: bytes, h: int = _FNV_OFFSET) -> int:
    """32-bit FNV-1a of ``data`` (offset basis 2166136261, prime 16777619)."""
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def prepared_data_span(data: bytes) -> tuple[int, int] | None:
    """(absolute offset, length) in the flatbuffer ``data`` of the data of the buffer that the
    first ``freeml_prepare`` metadata entry points at, or None when there is no such entry (or
    it points at no buffer or an empty one). Read with the flatbuffers reader, not unpacked;
    raises TFLiteFormatError for a file the reader cannot follow."""
    try:
        m = schema.Model.GetRootAsModel(data, 0)
        name = PREPARED_NAME.encode()
        for i in range(m.MetadataLength()):
            md = m.Metadata(i)
            if md.Name() != name:
                continue
            index = md.Buffer()
            if not 0 <= index < m.BuffersLength():
                return None
            tab = m.Buffers(index)._tab
            o = tab.Offset(4)                       # Buffer.data
            if not o:
                return None
            at, n = tab.Vector(o), tab.VectorLen(o)
            if at + n > len(data):
                raise TFLiteFormatError(f"the freeml_prepare entry's data ({n} B at {at}) runs past "
                                        f"the end of the file")
            return at, n
    except TFLiteFormatError:
        raise
    except Exception as e:  # the generated reader raises anything from struct.error to TypeError
        raise TFLiteFormatError(f"corrupt flatbuffer: {type(e).__name__}: {e}") from None
    return None


def data_prefix(data: bytes) -> int:
    """Bytes from the start of the flatbuffer ``data`` to the end of the last thing that a build
    which does not parse the model reads of it (rounded up to 4): the tensors' buffers (weights,
    biases), the CSR index arrays and the resident part of the ``freeml_prepare`` entry (its
    header with the model id, its subgraph records, the words read in place: u32 at byte 12 of
    the entry, 0 in older files, which then count whole). Buffers that only other metadata
    entries hold (the ``freeml`` entry) are not read once prepared. In files written by
    :func:`write_model` those and the graph's tables come after the prefix; in other layouts
    the prefix may be the whole file. Read with the flatbuffers reader."""
    def vector_end(tab, slot: int, width: int) -> int:
        o = tab.Offset(slot)
        return tab.Vector(o) + width * tab.VectorLen(o) if o and tab.VectorLen(o) else 0

    widths = {schema.SparseIndexVector.Int32Vector: 4, schema.SparseIndexVector.Uint16Vector: 2,
              schema.SparseIndexVector.Uint8Vector: 1}
    try:
        m = schema.Model.GetRootAsModel(data, 0)
        held = {m.Subgraphs(g).Tensors(t).Buffer() for g in range(m.SubgraphsLength())
                for t in range(m.Subgraphs(g).TensorsLength())}
        entries = {m.Metadata(i).Buffer(): m.Metadata(i).Name() for i in range(m.MetadataLength())}
        end = 0
        for i in range(m.BuffersLength()):
            tab = m.Buffers(i)._tab
            if i in entries and i not in held:
                if entries[i] != PREPARED_NAME.encode():
                    continue                            # read only to prepare
                o = tab.Offset(4)
                if o and tab.VectorLen(o) >= 16:
                    at = tab.Vector(o)
                    resident = int.from_bytes(data[at + 12:at + 16], "little")
                    if 0 < resident <= tab.VectorLen(o):
                        end = max(end, at + resident)
                        continue
            end = max(end, vector_end(tab, 4, 1))      # Buffer.data
        for g in range(m.SubgraphsLength()):        # CSR index arrays, read in place by the kernels
            sg = m.Subgraphs(g)
            for t in range(sg.TensorsLength()):
                sp = sg.Tensors(t).Sparsity()
                for d in range(sp.DimMetadataLength() if sp is not None else 0):
                    dm = sp.DimMetadata(d)
                    for kind, table in ((dm.ArraySegmentsType(), dm.ArraySegments()),
                                        (dm.ArrayIndicesType(), dm.ArrayIndices())):
                        if table is not None and kind in widths:
                            end = max(end, vector_end(table, 4, widths[kind]))   # <Type>Vector.values
    except Exception as e:  # the generated reader raises anything from struct.error to TypeError
        raise TFLiteFormatError(f"corrupt flatbuffer: {type(e).__name__}: {e}") from None
    return min(len(data), (end + 3) & ~3)


def stamp_model_id(data: bytes) -> bytes:
    """``data`` with the model id of its ``freeml_prepare`` entry set: FNV-1a over the whole
    file with the id's 4 bytes zero, stored little-endian at bytes 8..12 of the entry's data.
    Unchanged when the file has no such entry or its data is shorter than 16 bytes or does not
    start with ``FMLP``."""
    span = prepared_data_span(data)
    if span is None:
        return data
    at, n = span
    if n < 16 or data[at:at + 4] != PREPARED_MAGIC:
        return data
    out = bytearray(data)
    out[at + _ID_AT:at + _ID_AT + 4] = bytes(4)
    out[at + _ID_AT:at + _ID_AT + 4] = fnv1a32(out).to_bytes(4, "little")
    return bytes(out)


_NUMPY_OF = {schema.TensorType.INT8: np.int8, schema.TensorType.UINT8: np.uint8,
             schema.TensorType.INT16: np.int16, schema.TensorType.INT32: np.int32,
             schema.TensorType.FLOAT32: np.float32}


def tensor_spec(shape, type: int = schema.TensorType.INT8, scale: float | None = None, zp: int = 0,
                data=None) -> dict:
    """A tensor for :func:`op_model`: shape, type, quantization (none when ``scale`` is None)
    and, for a constant, its values."""
    return {"shape": list(shape), "type": type, "scale": scale, "zp": zp, "data": data}


def op_model(op: str, ins: list, outs: list, options=None) -> bytes:
    """A model of one builtin operator ``op``: input tensors ``ins`` (:func:`tensor_spec`; None
    for an omitted optional input; those with data are constants, the others the graph inputs),
    output tensors ``outs`` (the graph outputs) and its options (an ``...OptionsT`` object).

    >>> from freeml_keras.format.tflite import op_model, tensor_spec
    >>> b = op_model("MAXIMUM", [tensor_spec([4], scale=0.1), tensor_spec([4], scale=0.1)],
    ...              [tensor_spec([4], scale=0.1)])
    >>> b[4:8]
    b'TFL3'
    """
    m = schema.ModelT()
    m.version = 3
    code = getattr(schema.BuiltinOperator, op)
    oc = schema.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
    m.operatorCodes = [oc]
    m.buffers = [schema.BufferT()]
    sg = schema.SubGraphT()
    sg.tensors, sg.inputs = [], []

    def add(spec: dict, name: str) -> int:
        t = schema.TensorT()
        t.shape, t.type, t.name = list(spec["shape"]), spec["type"], name.encode()
        if spec["scale"] is not None:
            q = schema.QuantizationParametersT()
            q.scale, q.zeroPoint = [float(spec["scale"])], [int(spec["zp"])]
            t.quantization = q
        t.buffer = 0
        if spec["data"] is not None:
            b = schema.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(spec["data"], _NUMPY_OF[spec["type"]]).tobytes(), np.uint8)
            m.buffers.append(b)
            t.buffer = len(m.buffers) - 1
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    ids = []
    for k, spec in enumerate(ins):
        if spec is None:
            ids.append(-1)
            continue
        ids.append(add(spec, f"in{k}"))
        if spec["data"] is None:
            sg.inputs.append(ids[-1])
    sg.outputs = [add(spec, f"out{k}") for k, spec in enumerate(outs)]
    o = schema.OperatorT()
    o.opcodeIndex, o.inputs, o.outputs = 0, ids, list(sg.outputs)
    if options is not None:
        o.builtinOptionsType = getattr(schema.BuiltinOptions, type(options).__name__[:-1])
        o.builtinOptions = options
    sg.operators = [o]
    m.subgraphs = [sg]
    return write_model(m)
