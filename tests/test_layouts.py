"""Dense or CSR per layer by cost (issue 15, item 3): conversion.layouts and the stored format
in the cost model."""

from __future__ import annotations

import numpy as np
import pytest

from freeml_keras import costs, memory
from freeml_keras.costs import CostModel, KindCost
from freeml_keras.format import sparsity
from freeml_keras.format import tflite as ts


def _model(kinds: dict[str, KindCost]) -> CostModel:
    return CostModel("msp430", "cycles", {**kinds, "*weights": KindCost(1.0, 0.0, 0.0, 3, 0.0),
                                          "*other": KindCost(0.0, 1.0, 0.0, 3, 0.0)})


@pytest.fixture(scope="module")
def sparse_cnn():
    """A small CNN whose two convolutions and first Dense are 60% zero (CSR), converted sparse
    and dense, and int8 inputs."""
    from conftest import prune_kernels
    from freeml_keras.conversion import converter
    from freeml_keras.keras import keras
    from freeml_keras.runtime.reference import io_quantization, quantize

    keras.utils.set_random_seed(7)
    x = np.random.default_rng(7).normal(size=(32, 10, 10, 2)).astype(np.float32)
    m = keras.Sequential([keras.layers.Input((10, 10, 2)), keras.layers.Conv2D(6, 3, activation="relu"),
                          keras.layers.Conv2D(8, 3), keras.layers.Flatten(),
                          keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)])
    prune_kernels(m, 0.6)
    sparse, dense = converter.convert(m, x, sparse=True), converter.convert(m, x, sparse=False)
    (scale, zp), = io_quantization(sparse)[0]
    return sparse, dense, quantize(x[:4], scale, zp)


def test_kind_follows_the_stored_format():
    assert costs.kind_of("CONV_2D", 1000, 500) == "CONV_2D/csr"             # the 30% rule
    assert costs.kind_of("CONV_2D", 1000, 500, "int8") == "CONV_2D"
    assert costs.kind_of("FULLY_CONNECTED", 1000, 900, "int8_csr") == "FULLY_CONNECTED/csr"
    assert costs.kind_of("MAX_POOL_2D", 0, 0, "int8_csr") == "MAX_POOL_2D"
    cm = _model({"CONV_2D": KindCost(2.0, 0.0, 0.0, 3, 0.0), "CONV_2D/csr": KindCost(10.0, 0.0, 0.0, 3, 0.0)})
    assert cm.op_cost("CONV_2D", 1000, 500, 0, "int8") == 2000.0
    assert cm.op_cost("CONV_2D", 1000, 500, 0, "int8_csr") == 5000.0


def test_dense_from_csr_inverts_csr_last_dim():
    w = np.random.default_rng(0).integers(-127, 128, (5, 3, 3, 4)).astype(np.int8)
    w[np.random.default_rng(1).random(w.shape) < 0.7] = 0
    stored, sp = sparsity.csr_last_dim(w)
    assert np.array_equal(sparsity.dense_from_csr(stored, sp, w.shape), w)
    sp.traversalOrder = [1, 0, 2, 3]
    with pytest.raises(ValueError):
        sparsity.dense_from_csr(stored, sp, w.shape)


def test_choose_layouts_stores_dense_where_cheaper(sparse_cnn):
    """CSR costs 10x dense per executed MAC for convolutions and the same per MAC for fully
    connected layers: at 40% density the convolutions go dense (their DENSIFY ops removed), the
    fully connected layer stays CSR; outputs equal the sparse and dense conversions'."""
    from freeml_keras.conversion.layouts import choose_layouts
    from freeml_keras.format.prepared import with_prepared
    from freeml_keras.runtime import Interpreter

    sparse, dense, x = sparse_cnn
    before = {(l.op_index, l.type): l.stored_format for l in memory.tflite_footprint(sparse).layers}
    assert list(before.values()).count("int8_csr") >= 3
    cm = _model({"CONV_2D": KindCost(1.0, 0.0, 0.0, 3, 0.0), "CONV_2D/csr": KindCost(10.0, 0.0, 0.0, 3, 0.0),
                 "FULLY_CONNECTED": KindCost(1.0, 0.0, 0.0, 3, 0.0),
                 "FULLY_CONNECTED/csr": KindCost(1.0, 0.0, 0.0, 3, 0.0)})
    m = ts.read_model(sparse)
    n_ops = len(m.subgraphs[0].operators)
    choices = choose_layouts(m, cm)
    assert {c.op: c.stored for c in choices} == {"CONV_2D": "int8", "FULLY_CONNECTED": "int8_csr"}
    assert all(0.3 < c.density < 0.5 for c in choices)
    out = with_prepared(ts.write_model(m))         # the precomputed parameters follow the graph
    after = memory.tflite_footprint(out)
    assert {l.type: l.stored_format for l in after.layers if l.type == "CONV_2D"} == {"CONV_2D": "int8"}
    assert "int8_csr" in {l.stored_format for l in after.layers if l.type == "FULLY_CONNECTED"}
    assert len(ts.read_model(out).subgraphs[0].operators) == n_ops - 2          # two DENSIFY ops fewer
    a, b, c = Interpreter(sparse), Interpreter(out), Interpreter(dense)
    for i in range(len(x)):
        y = b.invoke(x[i:i + 1])[0]
        assert np.array_equal(y, a.invoke(x[i:i + 1])[0]) and np.array_equal(y, c.invoke(x[i:i + 1])[0])
    m2 = ts.read_model(sparse)                                  # CSR cheaper everywhere: unchanged
    cheap = _model({"CONV_2D": KindCost(10.0, 0.0, 0.0, 3, 0.0), "CONV_2D/csr": KindCost(1.0, 0.0, 0.0, 3, 0.0)})
    assert all(ch.stored == "int8_csr" for ch in choose_layouts(m2, cheap))
    assert len(m2.subgraphs[0].operators) == n_ops


def test_relayout_keeps_metadata_and_prepared(sparse_cnn):
    """relayout on a converted file with costs and precomputed parameters: the metadata has one
    record per operator left, priced on the target; the runtime runs it to the same outputs."""
    from freeml_keras.conversion.layouts import relayout
    from freeml_keras.format.metadata import read_metadata
    from freeml_keras.format.prepared import with_prepared
    from freeml_keras.runtime import Interpreter

    sparse, _, x = sparse_cnn
    src = with_prepared(costs.with_costs(sparse, CostModel.load("msp430")))
    cm = _model({"CONV_2D": KindCost(1.0, 0.0, 0.0, 3, 0.0), "CONV_2D/csr": KindCost(10.0, 0.0, 0.0, 3, 0.0)})
    out, choices = relayout(src, "msp430", cm)
    removed = [c.removed_op for c in choices if c.removed_op is not None]
    assert len(removed) == 2
    md = read_metadata(out)
    n_ops = len(ts.read_model(out).subgraphs[0].operators)
    assert len(md.ops) == n_ops == len(read_metadata(src).ops) - 2
    assert md.info["cost"]["target"] == "msp430" and all(o.cost > 0 for o in md.ops if o.macs)
    a, b = Interpreter(src), Interpreter(out)
    for i in range(len(x)):
        assert np.array_equal(a.invoke(x[i:i + 1])[0], b.invoke(x[i:i + 1])[0])


def test_fit_reads_the_stored_format():
    """Table rows with ``stored`` are fitted by it, not by the 30% rule: a dense row at 10%
    density prices the dense kind, CSR rows at 50% the CSR kind."""
    tables = {"sweep": {"unit": "cycles", "ops": [
        {"op": "CONV_2D", "macs": 1000 * k, "sparse_macs": 100 * k, "output_bytes": 10 * k, "cycles": 20000.0 * k,
         "stored": "int8"} for k in (1, 2, 3)] + [
        {"op": "CONV_2D", "macs": 1000 * k, "sparse_macs": 500 * k, "output_bytes": 10 * k, "cycles": 50000.0 * k,
         "stored": "int8_csr"} for k in (1, 2, 3)]}}
    cm = CostModel.fit("msp430", tables)
    assert cm.op_cost("CONV_2D", 4000, 400, 40, "int8") == pytest.approx(80000.0, rel=1e-6)
    assert cm.op_cost("CONV_2D", 4000, 2000, 40, "int8_csr") == pytest.approx(200000.0, rel=1e-6)
    assert cm.chosen_format("CONV_2D", 4000, 2000, 40) == "int8"      # 20 per dense MAC < 100 per CSR MAC
    assert cm.chosen_format("CONV_2D", 4000, 100, 40) == "int8_csr"   # 100 x 100 < 20 x 4000
    assert cm.chosen_format("CONV_2D", 4000, 3900, 40) == "int8"      # under 30% zeros: dense, unpriced


def test_layout_tables_price_the_choice_only(tmp_path):
    """A tables file's ``layouts`` section joins the fit that prices the dense-or-CSR choice
    (``CostModel.layouts``); the per-operator costs come from ``cost_tables`` alone."""
    import json

    from freeml_keras.costs import read_cost_tables

    doc = json.loads((__import__("pathlib").Path(costs.__file__).parent / "data" / "cost_tables.json").read_text())
    doc["layouts"] = {"msp430": {"sparse: layer": {"unit": "cycles", "ops": [
        {"op": "CONV_2D", "macs": 100000 * k, "sparse_macs": 100000 * k, "output_bytes": 1000 * k,
         "cycles": 3e6 * k, "stored": "int8"} for k in (1, 2, 3, 4)] + [
        {"op": "CONV_2D", "macs": 100000 * k, "sparse_macs": 30000 * k, "output_bytes": 1000 * k,
         "cycles": 1e6 * k, "stored": "int8_csr"} for k in (1, 2, 3, 4)]}}}
    path = tmp_path / "tables.json"
    path.write_text(json.dumps(doc))
    assert read_cost_tables(path, "layouts") == doc["layouts"]
    plain, with_layouts = CostModel.load("msp430"), CostModel.load("msp430", path)
    assert with_layouts.layouts is not None and "layouts" not in with_layouts.to_dict()
    assert with_layouts.op_cost("CONV_2D", 100000, 30000, 1000) == plain.op_cost("CONV_2D", 100000, 30000, 1000)
    assert with_layouts.chosen_format("CONV_2D", 200000, 60000, 2000) == "int8_csr"
