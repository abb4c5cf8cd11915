"""TFLite's sparse tensor format (``SparsityParameters``): the one layout the runtime reads in
place (CSR on the last dimension, the other dimensions dense, no blocks), and the repair of the
block-sparse weights the TFLite converter writes.

The TFLite converter (``Optimize.EXPERIMENTAL_SPARSITY``) writes block-sparse weights (blocks of
1x16 on the last dimension) for some layers whose zeros come in such blocks, which the runtime's
kernels do not read; and where that dimension is not a multiple of the block, the values it
stores are wrong (TF 2.21: a 20x10 FULLY_CONNECTED weight stored as one block holding the first
16 values of the flattened matrix, so that stock TFLite runs the layer with other weights than
the model's). ``unblock`` therefore rewrites each block-sparse tensor as plain CSR from the
values of the dense conversion of the same model, which the converter writes right.

Example::

    from freeml_keras.format import sparsity, tflite
    m = tflite.read_model(sparse_bytes)
    if sparsity.blocked_tensors(m):
        sparsity.unblock(m, tflite.read_model(dense_bytes))
"""

from __future__ import annotations

import copy

import numpy as np

from freeml_keras.format.tflite import op_name, schema

__all__ = ["blocked_tensors", "csr_last_dim", "dense_from_csr", "unblock"]

_DENSE = schema.DimensionType.DENSE
_VECTORS = {schema.SparseIndexVector.Int32Vector: schema.Int32VectorT,
            schema.SparseIndexVector.Uint16Vector: schema.Uint16VectorT,
            schema.SparseIndexVector.Uint8Vector: schema.Uint8VectorT}


def _vector(values: np.ndarray) -> tuple[int, object]:
    """The narrowest index vector the runtime reads for these non-negative values."""
    top = int(values.max()) if values.size else 0
    kind = (schema.SparseIndexVector.Uint8Vector if top < 1 << 8 else
            schema.SparseIndexVector.Uint16Vector if top < 1 << 16 else schema.SparseIndexVector.Int32Vector)
    vec = _VECTORS[kind]()
    vec.values = [int(v) for v in values]
    return kind, vec


def csr_last_dim(dense: np.ndarray) -> tuple[np.ndarray, "schema.SparsityParametersT"]:
    """``dense`` as stored values and sparsity parameters: the leading dimensions dense, the
    last one CSR (segments per row of the flattened leading dimensions, column indices)."""
    rows = dense.reshape(-1, dense.shape[-1])
    nz = rows != 0
    seg = np.concatenate([[0], np.cumsum(nz.sum(axis=1))])
    cols = np.nonzero(nz)[1]
    sp = schema.SparsityParametersT()
    sp.traversalOrder = list(range(dense.ndim))
    sp.blockMap = []
    sp.dimMetadata = []
    for size in dense.shape[:-1]:
        dm = schema.DimensionMetadataT()
        dm.format, dm.denseSize = _DENSE, int(size)
        sp.dimMetadata.append(dm)
    dm = schema.DimensionMetadataT()
    dm.format = schema.DimensionType.SPARSE_CSR
    dm.arraySegmentsType, dm.arraySegments = _vector(seg)
    dm.arrayIndicesType, dm.arrayIndices = _vector(cols)
    sp.dimMetadata.append(dm)
    return rows[nz].astype(dense.dtype), sp


def _index_values(kind: int, vec) -> np.ndarray:
    """The values of a sparse index vector (segments or indices)."""
    if vec is None:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(vec.values if vec.values is not None else [], dtype=np.int64)


def dense_from_csr(stored: np.ndarray, sp: "schema.SparsityParametersT", shape) -> np.ndarray:
    """The dense tensor of ``shape`` whose values ``stored`` and sparsity parameters ``sp`` are
    CSR on the last dimension (the layout :func:`csr_last_dim` writes and the runtime reads);
    the inverse of :func:`csr_last_dim`. Other layouts raise ``ValueError``.

    >>> import numpy as np
    >>> w = np.array([[0, 3, 0], [1, 0, -2]], dtype=np.int8)
    >>> bool(np.array_equal(dense_from_csr(*csr_last_dim(w), w.shape), w))
    True
    """
    shape = tuple(int(v) for v in shape)
    dims = list(sp.dimMetadata or [])
    if (list(sp.traversalOrder if sp.traversalOrder is not None else []) != list(range(len(shape)))
            or (sp.blockMap is not None and len(sp.blockMap)) or len(dims) != len(shape)
            or any(d.format != _DENSE for d in dims[:-1]) or dims[-1].format != schema.DimensionType.SPARSE_CSR):
        raise ValueError("not CSR on the last dimension with the others dense")
    seg = _index_values(dims[-1].arraySegmentsType, dims[-1].arraySegments)
    cols = _index_values(dims[-1].arrayIndicesType, dims[-1].arrayIndices)
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    if len(seg) != rows + 1 or len(cols) != len(stored) or seg[-1] != len(stored):
        raise ValueError("CSR segments and indices do not match the stored values")
    out = np.zeros((rows, shape[-1]), dtype=stored.dtype)
    out[np.repeat(np.arange(rows), np.diff(seg)), cols] = stored
    return out.reshape(shape)


def _densify_opcode(model: "schema.ModelT") -> int:
    """The index of DENSIFY in the model's operator codes (added when missing)."""
    code = schema.BuiltinOperator.DENSIFY
    for i, oc in enumerate(model.operatorCodes):
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code:
            return i
    oc = schema.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def blocked_tensors(model: "schema.ModelT") -> list[tuple[int, int]]:
    """(subgraph, tensor) of every block-sparse tensor of ``model``."""
    return [(g, i) for g, sg in enumerate(model.subgraphs) for i, t in enumerate(sg.tensors)
            if t.sparsity is not None and t.sparsity.blockMap is not None and len(t.sparsity.blockMap)]


def _name(t) -> str:
    return t.name.decode() if isinstance(t.name, bytes) else str(t.name)


def unblock(model: "schema.ModelT", dense: "schema.ModelT") -> list[str]:
    """Rewrite every block-sparse tensor of ``model`` (in place) as plain CSR on its last
    dimension, its values taken from the tensor of the same name in ``dense`` (the same model
    converted without sparsity: same shapes and quantization, checked); the names rewritten. A
    consumer that read the block-sparse weights directly (TFLite's FULLY_CONNECTED does, for
    blocks) now reads them through a DENSIFY op, as the converter writes plain CSR weights: stock
    TFLite runs the result, and the runtime reads the CSR weights in place."""
    done = []
    for g, ti in blocked_tensors(model):
        sg, t = model.subgraphs[g], model.subgraphs[g].tensors[ti]
        name = _name(t)
        same = _dense_counterpart(model, g, ti, dense)
        if same is None or list(same.shape) != list(t.shape) or same.type != t.type or \
                not _same_quantization(same.quantization, t.quantization):
            raise ValueError(f"block-sparse tensor {name!r}: the dense conversion has no weight tensor of the same "
                             f"shape and quantization at the same operator to take its values from")
        values = np.frombuffer(bytes(bytearray(dense.buffers[same.buffer].data)), dtype=np.int8)
        stored, t.sparsity = csr_last_dim(values.reshape(tuple(int(v) for v in t.shape)))
        model.buffers[t.buffer].data = np.frombuffer(stored.tobytes(), dtype=np.uint8).copy()
        densify = _densify_opcode(model)
        users = [k for k, op in enumerate(sg.operators)
                 if op.opcodeIndex != densify and ti in [int(v) for v in op.inputs]]
        if users:
            out = copy.deepcopy(t)
            out.sparsity, out.buffer = None, 0
            out.name = (name + "/densified").encode()
            sg.tensors.append(out)
            new = len(sg.tensors) - 1
            for k in users:
                sg.operators[k].inputs = np.array([new if int(v) == ti else int(v) for v in sg.operators[k].inputs],
                                                  dtype=np.int32)
            op = schema.OperatorT()
            op.opcodeIndex = densify
            op.inputs, op.outputs = np.array([ti], dtype=np.int32), np.array([new], dtype=np.int32)
            sg.operators.insert(users[0], op)
        done.append(name)
    return done


def _dense_counterpart(model: "schema.ModelT", g: int, ti: int, dense: "schema.ModelT"):
    """The tensor of the dense conversion at the same input of the same operator: the two
    conversions have the same operators in the same order once the DENSIFY ops are left out
    (their tensor names differ: the converter names tensors after the ops it fused)."""
    if g >= len(dense.subgraphs):
        return None

    def compute_ops(m, sg):
        return [op for op in sg.operators if _op_name(m, op) != "DENSIFY"]
    ops, twins = compute_ops(model, model.subgraphs[g]), compute_ops(dense, dense.subgraphs[g])
    if [_op_name(model, o) for o in ops] != [_op_name(dense, o) for o in twins]:
        return None
    for op, twin in zip(ops, twins):
        ins = [int(v) for v in op.inputs]
        if ti in ins and len(twin.inputs) == len(ins):
            return dense.subgraphs[g].tensors[int(twin.inputs[ins.index(ti)])]
    return None


def _op_name(m: "schema.ModelT", op) -> str:
    return op_name(m, op.opcodeIndex)


def _same_quantization(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return all(np.array_equal(np.asarray(getattr(a, k) if getattr(a, k) is not None else []),
                              np.asarray(getattr(b, k) if getattr(b, k) is not None else []))
               for k in ("scale", "zeroPoint")) and a.quantizedDimension == b.quantizedDimension
