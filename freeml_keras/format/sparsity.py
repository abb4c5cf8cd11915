"""TFLite's sparse tensor format (``SparsityParameters``): reading any of it back to dense
values, and writing the one layout the runtime reads in place (CSR on the last dimension, the
other dimensions dense, no blocks).

The TFLite converter (``Optimize.EXPERIMENTAL_SPARSITY``) writes block-sparse weights (blocks of
1x4 or 1x16 on the last dimension) for some layers whose zeros come in such blocks; the runtime's
kernels read only plain CSR. ``unblock`` rewrites those tensors as plain CSR with the same
values, so that a pruned model converts whatever pattern its zeros took. (TensorFlow has this
conversion only in C++, ``FormatConverter``; the schema module gives the tables, not the
arithmetic.)

Example::

    from freeml_keras.format import sparsity, tflite
    m = tflite.read_model(open("model.tflite", "rb").read())
    if sparsity.unblock(m):
        open("model.tflite", "wb").write(tflite.write_model(m))
"""

from __future__ import annotations

import copy

import numpy as np

from freeml_keras.format.tflite import schema

__all__ = ["to_dense", "csr_last_dim", "unblock"]

_DENSE = schema.DimensionType.DENSE
_VECTORS = {schema.SparseIndexVector.Int32Vector: schema.Int32VectorT,
            schema.SparseIndexVector.Uint16Vector: schema.Uint16VectorT,
            schema.SparseIndexVector.Uint8Vector: schema.Uint8VectorT}


def _index_values(vec) -> np.ndarray:
    return np.asarray(vec.values if vec is not None and vec.values is not None else [], dtype=np.int64)


def to_dense(values: np.ndarray, shape: tuple[int, ...], sp: "schema.SparsityParametersT") -> np.ndarray:
    """The dense tensor of ``shape`` that the stored ``values`` and sparsity parameters ``sp``
    describe (any traversal order, block map and mix of DENSE / SPARSE_CSR levels)."""
    n = len(shape)
    order = [int(v) for v in sp.traversalOrder]
    block_map = [int(v) for v in (sp.blockMap if sp.blockMap is not None else [])]
    dms = sp.dimMetadata
    if len(order) != n + len(block_map) or len(dms) != len(order):
        raise ValueError(f"sparsity parameters with {len(order)} traversal levels for a {n}-D tensor "
                         f"and {len(block_map)} blocked dimensions")
    block = {d: int(dms[order.index(n + j)].denseSize) for j, d in enumerate(block_map)}
    expanded = np.zeros([shape[d] // block.get(d, 1) for d in range(n)] + [block[d] for d in block_map],
                       dtype=values.dtype)
    idx = [0] * len(order)
    values = np.asarray(values).ravel()

    def walk(level: int, pos: int) -> None:
        dm, d = dms[level], order[level]
        if dm.format == _DENSE:
            children = [(i, pos * int(dm.denseSize) + i) for i in range(int(dm.denseSize))]
        else:
            seg = _index_values(dm.arraySegments)
            ind = _index_values(dm.arrayIndices)
            children = [(int(ind[p]), p) for p in range(int(seg[pos]), int(seg[pos + 1]))]
        for i, child in children:
            idx[d] = i
            if level + 1 == len(order):
                expanded[tuple(idx)] = values[child]
            else:
                walk(level + 1, child)

    walk(0, 0)
    # blocked dimension d: element (b, i) of the expanded tensor is element b * size + i
    out = expanded
    for d in block_map:          # each block axis in turn is the first after the n outer ones
        out = _merge_block(out, d, n)
    return out.reshape(shape)


def _merge_block(t: np.ndarray, d: int, n: int) -> np.ndarray:
    """Fold the block axis at position ``n`` into dimension ``d`` (index b * size + i)."""
    t = np.moveaxis(t, n, d + 1)
    return t.reshape(t.shape[:d] + (t.shape[d] * t.shape[d + 1],) + t.shape[d + 2:])


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


def unblock(model: "schema.ModelT") -> list[str]:
    """Rewrite every block-sparse tensor of ``model`` (in place) as plain CSR on its last
    dimension with the same values; the names of the tensors rewritten. A consumer that read
    the block-sparse weights directly (TFLite's FULLY_CONNECTED does, for blocks) now reads them
    through a DENSIFY op, as the converter writes plain CSR weights: stock TFLite runs the
    result, and the runtime reads the CSR weights in place."""
    done = []
    for sg in model.subgraphs:
        for ti, t in enumerate(list(sg.tensors)):
            sp = t.sparsity
            if sp is None or not (sp.blockMap is not None and len(sp.blockMap)):
                continue
            name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
            if t.type != schema.TensorType.INT8:
                raise ValueError(f"block-sparse tensor {name!r} of type {t.type}: only int8 is rewritten")
            buf = model.buffers[t.buffer]
            values = np.frombuffer(bytes(bytearray(buf.data)), dtype=np.int8)
            stored, t.sparsity = csr_last_dim(to_dense(values, tuple(int(v) for v in t.shape), sp))
            buf.data = np.frombuffer(stored.tobytes(), dtype=np.uint8).copy()
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
