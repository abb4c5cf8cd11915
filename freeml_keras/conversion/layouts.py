"""Dense or CSR weights per layer, by their cost on a target.

The TFLite converter stores a weight tensor in CSR when at least 30% of it is zero. On a
microcontroller that rule can make a layer slower: a CSR kernel costs more per executed MAC than
the dense one (index loads, gathers, per-tap bookkeeping), so between about 25% and 70% density
the dense kernel is often the faster (``bench/sparse.py`` measures where CSR overtakes dense per
kernel and target). :func:`choose_layouts` prices each CSR layer both ways with the target's
cost model (:class:`freeml_keras.costs.CostModel`, fitted from measurements on the emulated
targets: whole models and, where the shipped tables have them, single layers measured dense and
in CSR at several densities) and stores it dense where that is cheaper: its weights expanded in place of the CSR
values and the DENSIFY op before it removed. It works on a converted graph before the ``freeml``
metadata is attached (operator indices change); :func:`freeml_keras.conversion.convert` calls it
when given a ``target``. Layers the converter stored dense stay dense (CSR is not measured
cheaper above 70% density on any target).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from freeml_keras import memory
from freeml_keras.costs import MAC_KINDS, CostModel
from freeml_keras.costs import target_of, with_costs
from freeml_keras.format import sparsity
from freeml_keras.format import tflite as ts
from freeml_keras.format.metadata import read_metadata, replace_metadata
from freeml_keras.format.model import ModelLike, as_model
from freeml_keras.format.prepared import PREPARED_NAME, with_prepared

__all__ = ["LayoutChoice", "choose_layouts", "relayout"]


@dataclass
class LayoutChoice:
    """The choice for one layer stored in CSR by the converter: its predicted cost dense and
    in CSR (in the cost model's unit) and the format kept."""
    subgraph: int
    op_index: int           # in the graph as the converter wrote it (DENSIFY ops included)
    op: str
    density: float          # stored non-zero weights / all weights
    dense_cost: float
    csr_cost: float
    stored: str             # "int8" or "int8_csr"
    removed_op: int | None = None   # the DENSIFY op removed (stored dense), same numbering


def choose_layouts(model: "ts.schema.ModelT", cost_model: CostModel) -> list[LayoutChoice]:
    """Store dense (in place, in ``model``) each CSR weight tensor whose layer is predicted
    cheaper dense by ``cost_model``; one :class:`LayoutChoice` per CSR layer considered.

    Example::

        m = tflite.read_model(sparse_bytes)
        for c in choose_layouts(m, CostModel.load("msp430")):
            print(c.op, f"{c.density:.0%}", c.stored)
        dense_where_cheaper = tflite.write_model(m)
    """
    fp = memory.tflite_footprint(ts.write_model(model))
    rows = {(l.subgraph, l.op_index): l for l in fp.layers}
    choices: list[LayoutChoice] = []
    for g, sg in enumerate(model.subgraphs):
        ops = list(sg.operators or [])
        producer = {int(o): k for k, op in enumerate(ops) for o in op.outputs}
        drop: list[int] = []
        for i, op in enumerate(ops):
            name = ts.op_name(model, op.opcodeIndex)
            l = rows.get((g, i))
            if name not in MAC_KINDS or l is None or len(op.inputs) < 2 or l.macs <= 0:
                continue
            k = producer.get(int(op.inputs[1]))
            if k is None or ts.op_name(model, ops[k].opcodeIndex) != "DENSIFY":
                continue
            src = int(ops[k].inputs[0])
            t = sg.tensors[src]
            if t.sparsity is None:
                continue
            priced = cost_model.layouts or cost_model
            dense_cost = priced.op_cost(name, l.macs, l.sparse_macs, l.activation_bytes, "int8")
            csr_cost = priced.op_cost(name, l.macs, l.sparse_macs, l.activation_bytes, "int8_csr")
            stored = cost_model.chosen_format(name, l.macs, l.sparse_macs, l.activation_bytes)
            choices.append(LayoutChoice(g, i, name, l.sparse_macs / l.macs, dense_cost, csr_cost, stored))
            if stored == "int8_csr":
                continue
            users = [j for j, o in enumerate(ops) if j != k and int(ops[k].outputs[0]) in [int(v) for v in o.inputs]]
            if users != [i]:
                continue        # DENSIFY's output read elsewhere too: left as it is
            buf = model.buffers[t.buffer]
            values = np.frombuffer(bytes(bytearray(buf.data)), dtype=np.int8)
            dense = sparsity.dense_from_csr(values, t.sparsity, t.shape)
            buf.data = np.frombuffer(dense.tobytes(), dtype=np.uint8).copy()
            t.sparsity = None
            op.inputs = np.array([src if n == 1 else int(v) for n, v in enumerate(op.inputs)], dtype=np.int32)
            drop.append(k)
            choices[-1].removed_op = k
        for k in sorted(drop, reverse=True):
            del sg.operators[k]
    return choices


def relayout(model_bytes: ModelLike, target: str, cost_model: CostModel | None = None) -> tuple[bytes, list[LayoutChoice]]:
    """A converted flatbuffer (with or without ``freeml`` metadata) with each CSR layer stored
    dense where ``target``'s cost model prices it cheaper (:func:`choose_layouts`): the metadata's
    operator records and exit points renumbered, its costs priced on ``target`` and the
    precomputed ``freeml_prepare`` entry rewritten; and the choices.

    Example::

        data, choices = relayout(open("model.tflite", "rb").read(), "msp430")
    """
    cm = cost_model or CostModel.load(target_of(target))
    src = as_model(model_bytes)
    md = read_metadata(src.data)
    had_prepared = any((e.name.decode() if isinstance(e.name, bytes) else e.name) == PREPARED_NAME
                       for e in (src.parsed.metadata or []))
    m = ts.read_model(src.data)
    choices = choose_layouts(m, cm)
    removed = sorted(c.removed_op for c in choices if c.subgraph == 0 and c.removed_op is not None)
    if md is not None:
        def renumber(i: int) -> int:
            return i - sum(1 for k in removed if k < i)
        md.ops = [o for i, o in enumerate(md.ops) if i not in removed]
        for e in md.exits:
            e.after_op = renumber(e.after_op)
        data = replace_metadata(m, md)
    else:
        data = ts.write_model(m)
    data = with_costs(data, cm)
    return (with_prepared(data) if had_prepared else data), choices
