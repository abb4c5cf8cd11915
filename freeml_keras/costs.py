"""What each operator costs on a target core: a cost model fitted per operator kind from the
per-operator counts measured on the emulated targets (the cost tables shipped with the package,
``freeml_keras/data/cost_tables.json``, written on purpose by ``bench/targets.py
--update-tables``), and the per-operator costs of a converted model, which the
converter writes into the ``freeml`` metadata and the energy simulation reads back.

Per kind (the builtin op name, ``/csr`` appended when its weights are stored sparse: a table
row's ``stored`` format, ``int8`` or ``int8_csr``, where it has one, else the converter's 30%
rule) the cost
is ``per_mac * MACs executed (all for dense weights, the stored non-zero ones for CSR) +
per_byte * output bytes + fixed``, fitted by non-negative least squares (scipy's NNLS) on the
measured operators of that kind. A kind measured fewer than three times takes the shape of its
family's fit (all operators with weights pooled, or all others but SOFTMAX) scaled to its
measurements. A kind never measured on the target is priced with the
fit of all the target's operators with weights, or of all the others except SOFTMAX.
Units: instructions on the Cortex-M4 (QEMU counts instructions, not cycles), MCLK cycles on the
MSP430.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from freeml_keras import devices, memory
from freeml_keras.format import tflite as ts
from freeml_keras.format.metadata import FreemlMetadata, OpCost, replace_metadata
from freeml_keras.format.model import ModelLike, as_model

__all__ = ["CostModel", "KindCost", "CostTableError", "target_of", "op_costs", "with_costs",
           "segment_cycles", "keras_layer_ops", "read_cost_tables", "restart_cost", "restart_cycles", "restart_source", "CYCLES_PER_COST_UNIT",
           "COST_TABLES_VERSION"]

# Version of the shipped cost tables' layout (``freeml_keras/data/cost_tables.json``).
COST_TABLES_VERSION = 1

_TARGET_OF_CORE = {"MSP430": "msp430", "Cortex-M4": "cortex_m4"}
MAC_KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
_ANY_MAC, _ANY_OTHER = "*weights", "*other"
# Simulator cycles (at the device profile's clock, ``DeviceProfile.energy_per_cycle_j`` each) per
# unit of a target's cost tables. The MSP430 tables are MCLK cycles already (mspdebug's
# instruction timings, no FRAM wait states). The Cortex-M4 tables count instructions (QEMU does
# not model cycles): one cycle per instruction, the figure every per-operator cost on a
# Cortex-M4 device is used at (``segment_cycles``, ``exits.segment_costs``, the metadata), so
# restarts and inference are converted alike. The one place the conversion is made.
CYCLES_PER_COST_UNIT = {"msp430": 1.0, "cortex_m4": 1.0}
_MIN_OWN_FIT = 3          # a kind measured fewer times takes its family's shape (see _scaled)


class CostTableError(ValueError):
    """No usable measurements for a target; the message says which and how to make them."""


def target_of(device: str | devices.DeviceProfile) -> str:
    """The emulated target (``msp430`` or ``cortex_m4``) whose measurements price ``device``,
    or the target name itself."""
    if isinstance(device, str) and device in _TARGET_OF_CORE.values():
        return device
    dev = devices.get(device)
    for prefix, target in _TARGET_OF_CORE.items():
        if dev.core.startswith(prefix):
            return target
    raise CostTableError(f"no measured target for core {dev.core!r} of {dev.name!r}")


def kind_of(op: str, macs: int, sparse_macs: int, stored: str | None = None) -> str:
    """The cost-model kind of an operator: its name, ``/csr`` when its weights are stored sparse:
    ``stored`` (``"int8_csr"`` or ``"int8"``, as :func:`memory.tflite_footprint` reports it) when
    given, else the converter's default rule (at least ``SPARSE_MIN_ZERO_FRACTION`` of them zero).

    >>> kind_of("CONV_2D", 1000, 300), kind_of("CONV_2D", 1000, 300, "int8")
    ('CONV_2D/csr', 'CONV_2D')
    """
    if op not in MAC_KINDS or macs <= 0:
        return op
    csr = (stored == "int8_csr") if stored in ("int8", "int8_csr") else \
        sparse_macs <= (1.0 - memory.SPARSE_MIN_ZERO_FRACTION) * macs
    return f"{op}/csr" if csr else op


def _work(kind: str, macs: int, sparse_macs: int) -> int:
    """The MACs a kernel executes: all of them when dense, the stored non-zero ones in CSR."""
    return sparse_macs if kind.endswith("/csr") else macs


@dataclass
class KindCost:
    """Fitted cost of one operator kind: ``per_mac * MACs + per_byte * output bytes + fixed``."""
    per_mac: float
    per_byte: float
    fixed: float
    samples: int
    max_rel_error: float         # worst relative error on the measurements it was fitted to

    def cost(self, macs: int, output_bytes: int) -> float:
        return self.per_mac * macs + self.per_byte * output_bytes + self.fixed


@dataclass
class CostModel:
    """Per-kind costs on one target (see the module docstring)."""
    target: str
    unit: str
    kinds: dict[str, KindCost]   # also "*weights" and "*other": such operators pooled
    models: list[str] = field(default_factory=list)
    # fitted from these tables and the per-layer dense / CSR tables ("layouts"): prices the
    # dense-or-CSR choice (chosen_format) only, where the shipped tables have them
    layouts: "CostModel | None" = field(default=None, compare=False, repr=False)

    @classmethod
    def fit(cls, target: str, tables: Mapping[str, Mapping]) -> "CostModel":
        """Fit from ``{model: {"unit", "ops": [{"op", "macs", "sparse_macs", "output_bytes",
        <unit>}, ...]}}`` as in ``targets.json``'s ``cost_tables[target]``."""
        rows: dict[str, list[tuple[float, float, float]]] = {}
        unit = ""
        for table in tables.values():
            unit = table["unit"]
            for op in table["ops"]:
                macs = int(op.get("macs", 0))
                smacs = int(op.get("sparse_macs", macs))
                k = kind_of(op["op"], macs, smacs, op.get("stored"))
                rows.setdefault(k, []).append((_work(k, macs, smacs), int(op.get("output_bytes", 0)),
                                               float(op[unit])))
        if not rows:
            raise CostTableError(f"no per-operator measurements for target {target!r}")
        mac_rows = [x for k, r in rows.items() if k.split("/")[0] in MAC_KINDS for x in r]
        # SOFTMAX (exponentials) is no guide to what an unmeasured data-movement op costs
        other = [x for k, r in rows.items() if k.split("/")[0] not in MAC_KINDS + ("SOFTMAX",) for x in r]
        pooled = {True: _fit(mac_rows, True) if mac_rows else KindCost(0.0, 0.0, 0.0, 0, 0.0),
                  False: _fit(other, False) if other else KindCost(0.0, 0.0, 0.0, 0, 0.0)}
        kinds = {}
        for k, r in rows.items():
            with_macs = k.split("/")[0] in MAC_KINDS
            if len(r) >= _MIN_OWN_FIT or not pooled[with_macs].samples:
                kinds[k] = _fit(r, with_macs)
            else:
                kinds[k] = _scaled(pooled[with_macs], r)
        kinds[_ANY_MAC], kinds[_ANY_OTHER] = pooled[True], pooled[False]
        return cls(target, unit, kinds, sorted(tables))

    @classmethod
    def load(cls, target: str, path: str | Path | None = None) -> "CostModel":
        """The cost model of ``target`` fitted from the cost tables shipped with the package, or
        from ``path`` (a file ``bench/targets.py`` wrote: its result JSON or the tables file)."""
        try:
            tables = read_cost_tables(path).get(target)
        except FileNotFoundError as e:
            raise CostTableError(str(e)) from None
        if not tables:
            raise CostTableError(f"{path or 'the shipped cost tables'} have no cost tables for target "
                                 f"{target!r}; run `python bench/targets.py --update-tables`")
        model = cls.fit(target, tables)
        extra = read_cost_tables(path, "layouts").get(target)
        if extra:
            model.layouts = cls.fit(target, {**tables, **extra})
        return model

    def op_cost(self, op: str, macs: int, sparse_macs: int, output_bytes: int,
                stored: str | None = None) -> float:
        """Predicted cost of one operator (in ``unit``); ``stored``: its weights' format
        (``int8`` or ``int8_csr``; default: the converter's 30% rule, see :func:`kind_of`)."""
        k = kind_of(op, macs, sparse_macs, stored)
        fit = (self.kinds.get(k) or self.kinds.get(k.split("/")[0])
               or self.kinds[_ANY_MAC if op in MAC_KINDS else _ANY_OTHER])
        return fit.cost(_work(k, macs, sparse_macs), output_bytes)

    def chosen_format(self, op: str, macs: int, sparse_macs: int, output_bytes: int) -> str:
        """The weight format the converter stores a layer in when given this target: CSR
        (``"int8_csr"``) where the 30% rule allows it and CSR is predicted cheaper than dense,
        else ``"int8"`` (:mod:`freeml_keras.conversion.layouts`); priced with ``layouts`` (the
        per-layer dense / CSR measurements too) where the tables have them."""
        if kind_of(op, macs, sparse_macs) == op:
            return "int8"
        m = self.layouts or self
        dense = m.op_cost(op, macs, sparse_macs, output_bytes, "int8")
        return "int8" if dense < m.op_cost(op, macs, sparse_macs, output_bytes, "int8_csr") else "int8_csr"

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("layouts", None)
        return d


def _scaled(base: KindCost, rows: Sequence[tuple[float, float, float]]) -> KindCost:
    """``base`` (the family's pooled fit) scaled to a kind's few measurements: their shape from
    the family, their level from the kind."""
    a = np.array(rows, dtype=float)
    pred = np.array([base.cost(m, b) for m, b, _ in rows])
    scale = float(a[:, 2].sum() / pred.sum()) if pred.sum() > 0 else 1.0
    err = float(np.max(np.abs(scale * pred - a[:, 2]) / np.maximum(a[:, 2], 1.0)))
    return KindCost(base.per_mac * scale, base.per_byte * scale, base.fixed * scale, len(rows), err)


def _fit(rows: Sequence[tuple[float, float, float]], with_macs: bool) -> KindCost:
    """Fit (MACs, output bytes, cost) rows by non-negative least squares: a cost term is never
    a saving."""
    from scipy.optimize import nnls
    a = np.array(rows, dtype=float)
    # Terms in order of preference, as many as there are measurements; a term whose column is
    # all zero (e.g. output bytes missing from old tables) is left out.
    order = [0, 2, 1] if with_macs else [1, 2]
    cols = [c for c in order if c == 2 or np.any(a[:, c])][:len(rows)]
    full_design = np.column_stack([a[:, 0], a[:, 1], np.ones(len(a))])
    coef, _ = nnls(full_design[:, cols], a[:, 2])
    full = np.zeros(3)
    full[cols] = coef
    err = float(np.max(np.abs(full_design @ full - a[:, 2]) / np.maximum(a[:, 2], 1.0)))
    return KindCost(float(full[0]), float(full[1]), float(full[2]), len(rows), err)


def op_costs(model_bytes: ModelLike, cost_model: CostModel) -> list[int]:
    """Predicted cost of each operator of the main subgraph of a flatbuffer, in operator order
    (DENSIFY, which the runtime aliases, costs nothing)."""
    model_bytes = as_model(model_bytes)
    model = model_bytes.parsed
    sg = model.subgraphs[0]
    layers = {l.op_index: l for l in memory.tflite_footprint(model_bytes).layers if l.subgraph == 0}
    out = []
    for i, op in enumerate(sg.operators or []):
        name = ts.op_name(model, op.opcodeIndex)
        if name == "DENSIFY":
            out.append(0)
            continue
        l = layers.get(i)
        out_bytes = l.activation_bytes if l is not None else _tensor_bytes(sg, int(op.outputs[0]))
        macs, smacs = (l.macs, l.sparse_macs) if l is not None else (0, 0)
        stored = l.stored_format if l is not None else None
        out.append(max(1, int(round(cost_model.op_cost(name, macs, smacs, out_bytes, stored)))))
    return out


# The TFLite operators a Keras layer becomes (layers not listed fold away: batch norm, ReLU,
# dropout, the input).
_KERAS_OPS = {"Conv2D": "CONV_2D", "Conv1D": "CONV_2D", "DepthwiseConv2D": "DEPTHWISE_CONV_2D",
              "Dense": "FULLY_CONNECTED", "MaxPooling2D": "MAX_POOL_2D", "MaxPooling1D": "MAX_POOL_2D",
              "AveragePooling2D": "AVERAGE_POOL_2D", "GlobalAveragePooling2D": "MEAN",
              "GlobalAveragePooling1D": "MEAN", "Flatten": "RESHAPE", "Reshape": "RESHAPE",
              "Softmax": "SOFTMAX", "Add": "ADD", "Concatenate": "CONCATENATION"}


def keras_layer_ops(layer, macs: int, sparse_macs: int, output_bytes: int) -> list[tuple[str, int, int, int]]:
    """(op, MACs, sparse MACs, output bytes) of the TFLite operators a Keras layer converts to."""
    kind = type(layer).__name__
    act = getattr(getattr(layer, "activation", None), "__name__", "")
    op = _KERAS_OPS.get(kind) or ("SOFTMAX" if kind == "Activation" and act == "softmax" else None)
    ops = [(op, macs, sparse_macs, output_bytes)] if op else []
    if kind in ("Conv1D",):
        ops += [("RESHAPE", 0, 0, output_bytes)] * 2       # EXPAND_DIMS in, RESHAPE out
    if kind != "Activation" and act == "softmax":
        ops.append(("SOFTMAX", 0, 0, output_bytes))
    return ops


def _tensor_bytes(sg, index: int) -> int:
    t = sg.tensors[index]
    return int(np.prod(t.shape if t.shape is not None else [])) * ts.TENSOR_TYPE_BYTES.get(t.type, 1)


def with_costs(model_bytes: ModelLike, costs: CostModel | Sequence[int], *, target: str | None = None,
               unit: str | None = None, source: str | None = None) -> bytes:
    """The flatbuffer with per-operator costs in its ``freeml`` metadata: predicted by a
    :class:`CostModel` (source ``fitted``) or given per main-subgraph operator (for example
    measured for this very model by :func:`freeml_keras.targets.run_model`; pass ``target``,
    ``unit`` and ``source="measured"``). A model without metadata gets one with no exits."""
    model_bytes = as_model(model_bytes)
    model = model_bytes.parsed
    n_ops = len(model.subgraphs[0].operators or [])
    if isinstance(costs, CostModel):
        values = op_costs(model_bytes, costs)
        target, unit, source = costs.target, costs.unit, source or "fitted"
    else:
        values = [int(c) for c in costs]
        if target is None or unit is None:
            raise ValueError("per-operator costs need the target and unit they were measured in")
    if len(values) != n_ops:
        raise ValueError(f"{len(values)} costs for the {n_ops} operators of the main subgraph")
    if any(v < 0 for v in values):
        raise ValueError(f"negative cost for operator {min(range(n_ops), key=lambda i: values[i])}")
    md = model_bytes.metadata
    md = None if md is None else FreemlMetadata.decode(md.encode())     # a copy: the parse is shared
    if md is None:
        fp = memory.tflite_footprint(model_bytes)
        layers = {l.op_index: l for l in fp.layers if l.subgraph == 0}
        ops = [OpCost(layers[i].macs, layers[i].sparse_macs, layers[i].stored_bytes,
                      layers[i].activation_bytes) if i in layers else OpCost(0, 0, 0, 0)
               for i in range(n_ops)]
        md = FreemlMetadata(num_classes=fp.num_classes, head_subgraph=0, exits=[], ops=ops, info={})
    for rec, v in zip(md.ops, values):
        rec.cost = v
    md.info["cost"] = {"target": target, "unit": unit, "source": source or "measured"}
    return replace_metadata(model, md)


def segment_cycles(model_bytes: ModelLike, cost_model: CostModel | None = None, *,
                   include_heads: bool = True) -> list[int]:
    """Cost of the segments of an inference from the metadata's per-operator costs: segment i
    (i < K) runs the main subgraph up to exit point i and (unless ``include_heads=False``) adds
    that exit's contribution to the head (pooling and W_i . p_i, priced by ``cost_model``, by
    default the metadata's target); segment K runs the rest. Raises :class:`CostTableError`
    when the model has no costs."""
    model_bytes = as_model(model_bytes)
    md = model_bytes.metadata
    if md is None or not md.ops or not any(o.cost for o in md.ops):
        raise CostTableError("the model's freeml metadata has no per-operator costs; convert "
                             "it with target= (or freeml_keras.costs.with_costs)")
    bounds = [e.after_op for e in md.exits] + [len(md.ops) - 1]
    out, start = [], 0
    head = [0] * len(md.exits)
    if include_heads:
        head = _head_costs(model_bytes, md, cost_model or CostModel.load(md.info["cost"]["target"]))
    for i, end in enumerate(bounds):
        c = sum(o.cost for o in md.ops[start:end + 1])
        if i < len(md.exits):
            c += head[i]
        out.append(int(c))
        start = end + 1
    return out


def _head_costs(model_bytes: ModelLike, md, cm: CostModel) -> list[int]:
    """Per exit: pooling its feature map (priced as the head's pooling operator) and the
    slice of the head FULLY_CONNECTED that multiplies its pooled features."""
    if not md.exits:
        return []
    model = as_model(model_bytes).parsed
    sg = model.subgraphs[md.head_subgraph]
    consumers = {}
    for j, op in enumerate(sg.operators or []):
        for t in op.inputs:
            consumers.setdefault(int(t), []).append(j)
    out = []
    for e in md.exits:
        cost, t, seen = 0.0, e.head_input_tensor, set()
        while t in consumers and not seen.intersection(consumers[t]):
            j = consumers[t][0]
            seen.add(j)
            name = ts.op_name(model, sg.operators[j].opcodeIndex)
            if name in ("FULLY_CONNECTED", "CONCATENATION"):
                break
            o = int(sg.operators[j].outputs[0])
            cost += cm.op_cost(name, 0, 0, _tensor_bytes(sg, o))
            t = o
        pooled = _tensor_bytes(sg, t)
        cost += cm.op_cost("FULLY_CONNECTED", pooled * md.num_classes, pooled * md.num_classes,
                           4 * md.num_classes)
        out.append(int(round(cost)))
    return out


def read_cost_tables(path: str | Path | None = None, section: str = "cost_tables") -> dict[str, dict[str, dict]]:
    """Per-operator cost tables measured on the targets: the ones shipped with the package
    (``freeml_keras/data/cost_tables.json``, written by ``bench/targets.py --update-tables``),
    or those of ``path`` (that file, or a ``bench/targets.py`` result JSON). Layout:
    ``{target: {model: {"unit": "instructions"|"cycles", "ops": [{"index", "op", "units",
    <unit>, "per_unit", "macs", "sparse_macs", "output_bytes"}, ...]}}}`` (``macs``: dense MACs,
    ``sparse_macs``: MACs over the stored non-zero weights, ``output_bytes``: bytes of the
    operator's output tensor). ``section="layouts"``: the tables of single layers measured dense
    and in CSR at several densities (``bench/sparse.py --update-tables``; rows with ``stored``),
    from which the converter's dense-or-CSR choice is priced; empty when the file has none.

    Example::

        from freeml_keras.costs import read_cost_tables
        print(sorted(read_cost_tables()["msp430"]))
    """
    if path is None:
        text = resources.files("freeml_keras").joinpath("data", "cost_tables.json").read_text()
        where = "freeml_keras/data/cost_tables.json"
    else:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such cost table file: run `python bench/targets.py` first")
        text, where = p.read_text(), str(p)
    doc = json.loads(text)
    if "version" in doc and doc["version"] != COST_TABLES_VERSION:
        raise CostTableError(f"{where}: cost tables version {doc['version']}, this package reads "
                             f"{COST_TABLES_VERSION}")
    if section != "cost_tables":
        return doc.get(section, {})
    if "cost_tables" not in doc:
        raise CostTableError(f"{where}: no 'cost_tables' entry")
    return doc["cost_tables"]


def restart_cost(device: str | devices.DeviceProfile, *, what: str = "warm_restart",
                 path: str | Path | None = None) -> int:
    """What a power-on costs on ``device``'s core, in its cost unit (MSP430 cycles, Cortex-M4
    instructions), as measured on the emulators (``targets.power.measure_restart``, written into
    the shipped tables by ``bench/targets.py --update-tables``): ``warm_restart`` (reset to the
    first resumed unit of work, reusing the prepared image; the largest over the measured
    models) or ``cold_init`` (a preparation from scratch).

    Example::

        from freeml_keras.costs import restart_cost
        print(restart_cost("msp430fr5994"))
    """
    target = target_of(device)
    if path is None:
        doc = json.loads(resources.files("freeml_keras").joinpath("data", "cost_tables.json").read_text())
    else:
        doc = json.loads(Path(path).read_text())
    models = doc.get("restart", {}).get(target, {}).get("models", {})
    values = [int(m[what]) for m in models.values() if what in m]
    if not values:
        raise CostTableError(f"no measured {what} for target {target!r}; run `python bench/targets.py "
                             f"--update-tables`")
    return max(values)


def restart_cycles(device: str | devices.DeviceProfile, *, what: str = "warm_restart",
                   path: str | Path | None = None) -> int:
    """:func:`restart_cost` in the energy simulator's unit: cycles of ``device``'s clock
    (``CYCLES_PER_COST_UNIT``: MSP430 cycles as measured, one cycle per Cortex-M4 instruction).
    The simulator charges it at every power-on unless a program says otherwise
    (:class:`freeml_keras.energy.Program` ``resume_cycles``).

    Example::

        from freeml_keras import devices
        from freeml_keras.costs import restart_cycles
        c = restart_cycles("msp430fr5994")
        print(c, "cycles,", c * devices.get("msp430fr5994").energy_per_cycle_j * 1e6, "uJ")
    """
    units = restart_cost(device, what=what, path=path)
    return int(round(units * CYCLES_PER_COST_UNIT[target_of(device)]))


def restart_source(device: str | devices.DeviceProfile, *, what: str = "warm_restart",
                   path: str | Path | None = None) -> str:
    """Where :func:`restart_cycles` comes from, in words (for reports)."""
    target = target_of(device)
    where = "freeml_keras/data/cost_tables.json" if path is None else str(path)
    doc = json.loads(resources.files("freeml_keras").joinpath("data", "cost_tables.json").read_text()
                     if path is None else Path(path).read_text())
    section = doc.get("restart", {}).get(target, {})
    models = {k: int(m[what]) for k, m in section.get("models", {}).items() if what in m}
    if not models:
        raise CostTableError(f"no measured {what} for target {target!r}")
    worst = max(models, key=models.get)
    unit = section.get("unit", "cycles")
    conv = CYCLES_PER_COST_UNIT[target]
    return (f"{what.replace('_', ' ')} measured on the {target} emulator by "
            f"{section.get('measured_by', 'bench/targets.py')}, the largest over "
            f"{', '.join(sorted(models))} ({worst}: {models[worst]:,} {unit}"
            + ("" if unit == "cycles" else f", {conv:g} cycle per instruction") +
            f"); {where}, section \"restart\"")
