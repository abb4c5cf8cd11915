"""Device memory maps, the predicted power-on image and the linker's figure for it, and the
device form of a flatbuffer (conversion.compact)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from freeml_keras import devices
from freeml_keras.conversion import compact, extract_subgraph, strip_names
from freeml_keras.format import tflite as ts
from freeml_keras.format.prepared import ensure_prepared
from freeml_keras.runtime.interpreter import Interpreter
from freeml_keras.runtime.reference import run_tflm
from freeml_keras.targets import image

DATA = Path(__file__).parent / "data"
# the bound: the prediction within 2% or 256 B of what the linker placed
BOUND_BYTES = 256


def _bound(n: int) -> float:
    return max(BOUND_BYTES, 0.02 * n)


def test_memory_maps_place_every_part():
    d = devices.get("msp430fr5994")
    assert d.memory.region("code").name == "FRAM" and d.memory.region("code").length == 0xBF80
    assert d.memory.region("arena").nonvolatile and not d.memory.region("stack").nonvolatile
    big = devices.get("msp430fr5994_256k")
    assert big.memory.region("model").length > 5 * d.memory.region("model").length
    assert not big.memory.runnable and d.memory.runnable
    with pytest.raises(ValueError, match="part 'heap'"):
        d.memory.region("heap")
    bad = devices.MemoryMap((devices.MemoryRegion("FRAM", 0, 10, True),), {p: "FRAM" for p in devices.PARTS[:-1]})
    with pytest.raises(ValueError, match="no 'stack'"):
        devices.register(devices.DeviceProfile(
            "bad_map", "MSP430X", 1, 10, 10, 1, 1, True, 3.0, 1.0, 1.0, 1.0, 2, memory=bad))


@pytest.fixture(scope="module")
def reference_models(digit_models):
    """Models the linker is asked about: the digits MLP and CNN (they fit), the pinned
    compressed cnn_s with its exit head (over the 48 KB) and without it (fits)."""
    head = (DATA / "cnn_s_compressed.tflite").read_bytes()
    return {"mlp": digit_models["mlp"][0], "cnn": digit_models["cnn"][0],
            "cnn_s_head": head, "cnn_s_backbone": extract_subgraph(head, 0)}


@pytest.mark.parametrize("name,build", [("mlp", "provisioned"), ("cnn", "provisioned"),
                                        ("cnn_s_head", "provisioned"), ("cnn_s_backbone", "provisioned"),
                                        ("mlp", "on_device"), ("cnn_s_head", "on_device")])
def test_predicted_image_equals_the_linkers(reference_models, name, build, tmp_path):
    """The FRAM the prediction says the build uses is what ld.lld placed (or, for a build that
    does not fit, the region plus what the linker says it overflowed by), within the bound; a
    provisioned device's figure is the larger of its preparing and its running build."""
    r = image.link(reference_models[name], "msp430fr5994", tmp_path, build=build)
    pred = r["estimate"]["regions"]["FRAM"]
    if r["linked"]:
        linked = r["regions"]["FRAM"]
        assert r["estimate"]["fits"]
    else:
        linked = pred["length"] + r["overflow"]["FRAM"]
        assert not r["estimate"]["fits"]
    assert abs(pred["used"] - linked) <= _bound(linked), (name, pred, linked)
    parts = r["estimate"]["parts"]
    b = ensure_prepared(reference_models[name]).data       # what the build holds
    # a provisioned device stores the file's data (buffers, CSR indices, metadata), not its tables
    assert parts["model"] >= (ts.data_prefix(b) if build == "provisioned" else len(b)) and parts["code"] > 4_000
    if build == "provisioned":       # the device runs without preparation code: less code than the preparing build
        by = r["estimate"]["by_build"]
        assert set(by) == {"preparing", "device"} and set(r["by_build"]) == {"preparing", "device"}
    assert sum(parts[p] for p in ("code", "model", "arena", "state", "checkpoint")) <= pred["used"] + 64


def test_files_are_written_data_first_and_a_device_keeps_that_prefix(digit_models):
    """write_model puts the operators' and dense tensors' tables and the freeml metadata (read
    only to prepare) at the end of the file, after the tensors' buffers, the CSR index arrays and
    the resident part of freeml_prepare: the prefix a provisioned device stores is smaller than
    the file, and holds every byte of weights and indices and the model id."""
    from freeml_keras.targets.codegen import model_array_bytes
    for b in (digit_models["cnn"][0], digit_models["mlp"][0]):
        m = ts.read_model(b)
        again = ts.write_model(m)
        n = ts.data_prefix(again)
        assert n < len(again) and model_array_bytes(again, data_only=True) == n
        assert model_array_bytes(again) == len(again)
        held = {int(t.buffer) for sg in m.subgraphs for t in sg.tensors}
        for i, buf in enumerate(m.buffers):     # each tensor buffer's bytes lie inside the prefix
            if i in held and buf.data is not None and len(buf.data):
                at = again.find(bytes(bytearray(buf.data)))
                assert 0 <= at and at + len(buf.data) <= n
        at, _ = ts.prepared_data_span(again)
        assert at + 12 <= n                         # the model id is kept
        md = {ts.name_str(e.name): e.buffer for e in m.metadata}
        if "freeml" in md:                          # read only to prepare: after the prefix
            assert again.find(bytes(bytearray(m.buffers[md["freeml"]].data))) >= n


def test_spill_plan_packs_the_largest_functions_first_fit():
    from freeml_keras.targets import spill
    funcs = [(".text.big", 7000), (".text.a", 5000), (".text.b", 1500), (".text.c", 1001), (".text.d", 600)]
    placed = spill.plan(funcs, sram_bytes=1200)
    assert placed["LOW"] == [".text.a", ".text.b"]            # 6,656 B: 7,000 does not fit anywhere
    assert placed["HOLE"] == [".text.c"] and placed["SRAM"] == [".text.d"]     # 1,001 rounded to 1,002
    assert spill.spilled_bytes(funcs, 1200) == 5000 + 1500 + 600 + 1002
    assert spill.sram_room(8192) == 0 and spill.sram_room(2000) == 0x2000 - 1024 - 2000 - 2


def test_measuring_linker_script_has_the_devices_sections():
    """msp430fr5994_measure.ld (code-only links) places the sections as msp430fr5994.ld does."""
    d = image.TARGETS_DIR / "msp430"
    sections = lambda p: p.read_text().split("ENTRY(_start)", 1)[1]     # noqa: E731
    assert sections(d / "msp430fr5994_measure.ld") == sections(d / "msp430fr5994.ld")


def test_image_table_names_every_part(reference_models):
    est = image.predict(reference_models["mlp"], "msp430fr5994")
    text = est.table()
    for part in devices.PARTS:
        assert part in text
    assert "FRAM" in text and "fits" in text


def test_compact_form_runs_bit_exact_and_is_smaller(digit_models):
    """The device form drops per-channel zero points, shape signatures and empty buffers:
    TFLite Micro and our runtime give the same outputs as on the converter's file."""
    b, x = digit_models["cnn"]
    small = compact(strip_names(b))
    assert len(small) < len(b)
    m = ts.read_model(small)
    for sg in m.subgraphs:
        for t in sg.tensors:
            assert t.shapeSignature is None
            if t.quantization is not None and t.quantization.scale is not None and len(t.quantization.scale) > 1:
                assert len(t.quantization.zeroPoint) == 1
            if m.buffers[t.buffer].data is None:
                assert t.buffer == 0
    for xi in x:
        want = run_tflm(b, [xi[None]])[0]
        assert np.array_equal(run_tflm(small, [xi[None]])[0], want)
        assert np.array_equal(Interpreter(small).invoke(xi[None])[0], want)


def test_compact_keeps_metadata_buffers():
    head = (DATA / "cnn_s_compressed.tflite").read_bytes()
    small = compact(head)
    from freeml_keras.format.model import as_model
    a, b = as_model(head), as_model(small)
    assert b.metadata is not None and b.metadata.exits == a.metadata.exits
    assert len(small) < len(head)
