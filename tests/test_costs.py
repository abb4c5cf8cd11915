"""Per-operator costs: the cost model fitted to target measurements, the costs the converter
writes into the freeml metadata (version 2), the segment costs the simulation reads back, and
stripping names from a flatbuffer."""

import struct

import numpy as np
import pytest

from freeml_keras import costs, datasets, targets, zoo
from freeml_keras.format import tflite as ts
from freeml_keras.cli import main
from freeml_keras.conversion.converter import convert, strip_names
from freeml_keras.exits import attach_global_exit, segment_costs
from freeml_keras.runtime.reference import io_quantization, quantize, run_tflite
from freeml_keras.runtime.intermittent import exit_options, run_uninterrupted
from freeml_keras.keras import keras
from freeml_keras.format.metadata import FreemlMetadata, read_metadata
from freeml_keras.compression.pruning import hard_threshold
from freeml_keras.runtime import Interpreter

EXITS = ["pool1", "conv3"]


def table(unit, ops):
    return {"unit": unit, "ops": [dict(zip(("op", "macs", "sparse_macs", "output_bytes", unit), o)) for o in ops]}


@pytest.fixture(scope="module")
def setup():
    tr, _, te = datasets.load("digits")
    model = zoo.pretrained("cnn_s", "digits", width=0.25, epochs=5, verbose=0)
    pruned = keras.models.clone_model(model)
    pruned.set_weights([hard_threshold(w, 0.4) if w.ndim > 1 else w for w in model.get_weights()])
    em = attach_global_exit(pruned, EXITS, pooled_size=[2, 1])
    rng = np.random.default_rng(0)
    em.set_head_weights(rng.normal(0, 0.3, (sum(em.pooled_dims), 10)), rng.normal(0, 0.1, 10))
    calib = tr[0][:100]
    return {"data": (tr, te), "pruned": pruned, "exit_model": em,
            "plain": convert(pruned, calib, sparse=True),
            "exits": convert(pruned, calib, sparse=True, exit_model=em, target="msp430fr5994")}


def test_fit_recovers_a_linear_cost_per_kind():
    rows = [("CONV_2D", m, m, b, 3 * m + 0.5 * b + 100) for m, b in ((1000, 200), (4000, 100), (2500, 800), (700, 50))]
    rows += [("MAX_POOL_2D", 0, 0, b, 7 * b + 40) for b in (100, 300)]
    cm = costs.CostModel.fit("msp430", {"a": table("cycles", rows)})
    conv = cm.kinds["CONV_2D"]
    assert (conv.per_mac, conv.per_byte, conv.fixed) == pytest.approx((3.0, 0.5, 100.0), rel=1e-9)
    assert conv.samples == 4 and conv.max_rel_error < 1e-9
    assert cm.op_cost("MAX_POOL_2D", 0, 0, 200) == pytest.approx(7 * 200 + 40)
    # sparse weights are their own kind; unmeasured kinds fall back to the pooled fits
    assert costs.kind_of("CONV_2D", 1000, 300) == "CONV_2D/csr"
    assert cm.op_cost("CONV_2D", 1000, 300, 200) == pytest.approx(3 * 300 + 0.5 * 200 + 100)
    assert cm.op_cost("FULLY_CONNECTED", 500, 500, 10) == pytest.approx(cm.kinds["*weights"].cost(500, 10))
    assert cm.op_cost("SOFTMAX", 0, 0, 10) == pytest.approx(cm.kinds["*other"].cost(0, 10))


def test_fit_with_few_measurements_uses_fewer_terms():
    cm = costs.CostModel.fit("cortex_m4", {"mlp": table("instructions", [
        ("FULLY_CONNECTED", 1000, 1000, 16, 4000), ("FULLY_CONNECTED", 160, 160, 10, 1480),
        ("SOFTMAX", 0, 0, 10, 5000)])})
    fc = cm.kinds["FULLY_CONNECTED"]
    assert fc.per_byte == 0 and fc.per_mac == pytest.approx(3.0) and fc.fixed == pytest.approx(1000.0)
    assert cm.kinds["SOFTMAX"].cost(0, 10) == pytest.approx(5000)     # one measurement: exact
    # costs are never negative, whatever the data
    cm = costs.CostModel.fit("msp430", {"m": table("cycles", [("CONV_2D", 100, 100, 1, 10),
                                                            ("CONV_2D", 200, 200, 1, 5),
                                                            ("CONV_2D", 300, 300, 1, 1)])})
    assert min(cm.kinds["CONV_2D"].per_mac, cm.kinds["CONV_2D"].fixed) >= 0


def test_cost_tables_missing_or_empty(tmp_path):
    with pytest.raises(costs.CostTableError, match="run `python bench/targets.py`"):
        costs.CostModel.load("msp430", tmp_path / "none.json")
    (tmp_path / "t.json").write_text('{"cost_tables": {"cortex_m4": {}}}')
    with pytest.raises(costs.CostTableError, match="no cost tables for target 'msp430'"):
        costs.CostModel.load("msp430", tmp_path / "t.json")
    assert costs.target_of("apollo4") == "cortex_m4" and costs.target_of("msp430fr5994") == "msp430"
    with pytest.raises(ValueError, match="unknown device 'esp32'"):
        costs.target_of("esp32")


def test_restart_cycles_in_the_simulators_unit():
    """The measured warm restart converted to cycles of the device's clock, in one place
    (``CYCLES_PER_COST_UNIT``): MSP430 cycles as measured, one cycle per Cortex-M4 instruction
    (as every per-operator cost on a Cortex-M4 device); the largest over the measured models."""
    msp, m4 = _table_restart("msp430"), _table_restart("cortex_m4")
    assert 0 < msp <= 2000 and 0 < m4 <= 1000              # the targets the measurements meet
    assert costs.restart_cost("msp430fr5994") == costs.restart_cycles("msp430fr5994") == msp
    for dev in ("apollo3", "apollo4"):
        assert costs.restart_cost(dev) == m4
        assert costs.restart_cycles(dev) == round(m4 * costs.CYCLES_PER_COST_UNIT["cortex_m4"])
    cold = _table_restart("msp430", "cold_init")
    assert costs.restart_cycles("msp430fr5994", what="cold_init") == cold > 100 * msp
    assert f"{msp:,} cycles" in costs.restart_source("msp430fr5994")
    assert f"{m4:,} instructions, 1 cycle per instruction" in costs.restart_source("apollo3")


def test_version_1_metadata_still_reads():
    head = struct.pack("<4sHHHHHHIIII", b"FMLM", 1, 32, 0, 10, 0, 2, 32, 32, 64, 2)
    recs = struct.pack("<IIII", 100, 50, 40, 16) + struct.pack("<IIII", 0, 0, 0, 8)
    md = FreemlMetadata.decode(head + recs + b"{}")
    assert md.version == 1 and [o.cost for o in md.ops] == [0, 0] and md.ops[0].sparse_macs == 50
    again = FreemlMetadata.decode(md.encode())
    assert again.version == 2 and again.ops == md.ops


def test_converter_writes_fitted_costs(setup):
    b = setup["exits"]
    md = read_metadata(b)
    assert md.version == 2
    assert md.info["cost"] == {"target": "msp430", "unit": "cycles", "source": "fitted"}
    assert [o.cost for o in md.ops] == costs.op_costs(b, costs.CostModel.load("msp430"))
    m = ts.read_model(b)
    for o, op in zip(md.ops, m.subgraphs[0].operators):
        name = ts.op_name(m, op.opcodeIndex)
        assert (o.cost == 0) == (name == "DENSIFY"), name
        if o.macs:
            assert o.cost > o.sparse_macs              # more than one cycle per MAC on the MSP430
    # the C runtime reads version 2: same exit logits as without costs
    tr, te = setup["data"]
    (iq,), _ = io_quantization(b)
    x = quantize(te[0][:1], *iq)
    plain = convert(setup["pruned"], tr[0][:100], sparse=True, exit_model=setup["exit_model"])
    for e in range(len(EXITS)):
        opts = exit_options(stop_at_exit=e)
        assert np.array_equal(run_uninterrupted(b, x, options=opts)[0], run_uninterrupted(plain, x, options=opts)[0])


def test_measured_costs_replace_the_fitted_ones(setup):
    b = setup["exits"]
    n = len(read_metadata(b).ops)
    measured = costs.with_costs(b, list(range(1, n + 1)), target="msp430", unit="cycles", source="measured")
    md = read_metadata(measured)
    assert [o.cost for o in md.ops] == list(range(1, n + 1)) and md.info["cost"]["source"] == "measured"
    assert len(ts.read_model(measured).metadata) == len(ts.read_model(b).metadata)   # replaced, not added
    with pytest.raises(ValueError, match=f"3 costs for the {n} operators"):
        costs.with_costs(b, [1, 2, 3], target="msp430", unit="cycles")
    with pytest.raises(ValueError, match="need the target and unit"):
        costs.with_costs(b, [1] * n)


def test_model_without_exits_gets_costs_and_still_runs(setup):
    b = setup["plain"]
    assert read_metadata(b) is None
    with_c = costs.with_costs(b, costs.CostModel.load("cortex_m4"))
    md = read_metadata(with_c)
    assert md.exits == [] and md.info["cost"]["unit"] == "instructions" and sum(o.cost for o in md.ops) > 0
    te = setup["data"][1]
    (iq,), _ = io_quantization(b)
    x = quantize(te[0][:3], *iq)
    assert np.array_equal(Interpreter(with_c).invoke(x[:1])[0], Interpreter(b).invoke(x[:1])[0])
    assert np.array_equal(run_uninterrupted(with_c, x[:1])[0], run_uninterrupted(b, x[:1])[0])
    assert costs.segment_cycles(with_c) == [sum(o.cost for o in md.ops)]


def test_segment_cycles_agree_with_the_keras_side_pricing(setup):
    b, em = setup["exits"], setup["exit_model"]
    md = read_metadata(b)
    backbone = costs.segment_cycles(b, include_heads=False)
    assert sum(backbone) == sum(o.cost for o in md.ops) and len(backbone) == len(EXITS) + 1
    with_heads = costs.segment_cycles(b)
    heads = [a - c for a, c in zip(with_heads, backbone)]
    assert all(h > 0 for h in heads[:-1]) and heads[-1] == 0
    keras_side = segment_costs(em, "msp430fr5994")
    assert all(s.pricing.startswith("per-operator cost model (msp430") for s in keras_side)
    for k, c in zip(keras_side, with_heads):
        assert k.cycles == pytest.approx(c, rel=0.15), (k.name, k.cycles, c)


def test_strip_names_keeps_the_model_and_its_metadata(setup):
    b = setup["exits"]
    s = strip_names(b)
    assert len(s) < len(b) - 500
    m = ts.read_model(s)
    assert all(not t.name for sg in m.subgraphs for t in sg.tensors) and not m.signatureDefs
    assert read_metadata(s) == read_metadata(b)
    te = setup["data"][1]
    (iq,), _ = io_quantization(b)
    x = quantize(te[0][:5], *iq)
    assert np.array_equal(run_tflite(s, [x])[0], run_tflite(b, [x])[0])
    assert np.array_equal(Interpreter(s).invoke(x[:1])[0], Interpreter(b).invoke(x[:1])[0])


def test_cli_convert_with_target_and_inspect(setup, tmp_path, capsys):
    path = tmp_path / "m.keras"
    setup["pruned"].save(path)
    out = tmp_path / "m.tflite"
    assert main(["convert", str(path), "--dataset", "digits", "--out", str(out), "--target", "apollo3",
                 "--strip-names", "--eval-limit", "50", "--calibration", "50"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "per-operator costs: instructions on cortex_m4 (fitted)" in text
    assert main(["convert", str(path), "--dataset", "digits", "--out", str(out), "--target", "esp32",
                 "--eval-limit", "50", "--calibration", "50"]) == 2
    assert "unknown device 'esp32'" in capsys.readouterr().err


def test_measured_on_the_cortex_m4_emulator(setup, tmp_path, capsys, monkeypatch):
    b = setup["plain"]
    te = setup["data"][1]
    (iq,), _ = io_quantization(b)
    # the model is parsed once for the whole chain (build files, kernel config, run, costs)
    parses = []
    real_read = ts.read_model
    monkeypatch.setattr(ts, "read_model", lambda data: parses.append(len(data)) or real_read(data))
    measured = targets.measure(b, "apollo3", quantize(te[0][:1], *iq), tmp_path / "m4")
    monkeypatch.undo()
    assert parses == [len(b)]
    md = read_metadata(measured)
    assert md.info["cost"] == {"target": "cortex_m4", "unit": "instructions", "source": "measured"}
    m = ts.read_model(b)
    for o, op in zip(md.ops, m.subgraphs[0].operators):
        if ts.op_name(m, op.opcodeIndex) in ("CONV_2D", "FULLY_CONNECTED"):
            assert o.cost > 2 * o.sparse_macs        # at least 2.5 instructions per MAC on the M4
    # the CLI does the same; --measure without a target is refused before any work
    path = tmp_path / "m.keras"
    setup["pruned"].save(path)
    assert main(["convert", str(path), "--dataset", "digits", "--out", str(tmp_path / "x.tflite"),
                 "--measure"]) == 2
    assert "--measure needs --target" in capsys.readouterr().err


def test_atomic_steps_are_priced_by_the_metadata(setup):
    from freeml_keras.runtime.intermittent import atomic_steps
    b = setup["exits"]
    total = sum(o.cost for o in read_metadata(b).ops)
    for g in (1, None):                                  # units mode, the default work mode
        steps = atomic_steps(b, granularity=g)
        assert sum(s.cycles for s in steps) == pytest.approx(total, rel=1e-3)
    # without costs in the metadata: the analytical model
    plain = atomic_steps(setup["plain"], granularity=1, cycles_per_mac=1.0, cycles_per_unit=0.0)
    assert sum(s.cycles for s in plain) == pytest.approx(sum(s.macs for s in plain), abs=len(plain))


def test_inspect_prices_the_largest_atomic_step(setup, tmp_path, capsys):
    from freeml_keras import devices
    from freeml_keras.runtime.intermittent import atomic_steps
    path = tmp_path / "m.tflite"
    path.write_bytes(setup["exits"])
    assert main(["inspect", str(path), "--device", "msp430fr5994"]) == 0
    text = capsys.readouterr().out
    big = max(s.cycles for s in atomic_steps(setup["exits"]))
    energy = big * devices.get("msp430fr5994").energy_per_cycle_j
    assert f"the largest {big:,}" in text and f"{1e6 * energy:.1f} uJ on msp430fr5994" in text
    assert f"{1e6 * 2 * energy / (3.3 ** 2 - 1.8 ** 2):.1f} uF" in text
    # priced for another core: no cycles, only the work
    assert main(["inspect", str(path), "--device", "apollo3"]) == 0
    assert "uF" not in capsys.readouterr().out


def test_measuring_a_model_that_does_not_fit_says_so_and_writes_nothing(tmp_path, capsys):
    """The zoo's cnn_s at full width is far too large for the MSP430's lower FRAM."""
    model = zoo.build("cnn_s", (8, 8, 1), 10, width=1.0)
    path, out = tmp_path / "big.keras", tmp_path / "big.tflite"
    model.save(path)
    assert main(["convert", str(path), "--dataset", "digits", "--out", str(out), "--target", "msp430",
                 "--measure", "--calibration", "20", "--eval-limit", "20"]) == 2
    err = capsys.readouterr().err
    assert "cannot measure on msp430: FRAM over by" in err and "nothing was written" in err
    assert not out.exists()


def _table_restart(target: str, what: str = "warm_restart") -> int:
    """The largest measured warm restart (or cold preparation) of a target in the shipped
    tables (what the library must return; the figure itself is re-measured by
    bench/targets.py --power-only)."""
    import json
    from importlib import resources
    doc = json.loads(resources.files("freeml_keras").joinpath("data", "cost_tables.json").read_text())
    return max(m[what] for m in doc["restart"][target]["models"].values())
