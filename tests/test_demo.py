"""The main job end to end on a small setting (digits, training subsets): every stage runs,
writes the report, and a second run comes from the caches in seconds."""

from __future__ import annotations

import json
import time

from freeml_keras import costs
from freeml_keras.demo import DemoConfig, _stage, run_demo


def test_demo_end_to_end_and_cached(tmp_path):
    lines: list[str] = []
    cfg = DemoConfig(out_dir=str(tmp_path / "demo"), dataset="digits", quick=True,
                     power_failure_inputs=2, failures_per_input=20)
    s = run_demo(cfg, log=lines.append)
    out = tmp_path / "demo"
    for f in ("report.md", "summary.json", "model.tflite", "model.h", "model.c", "size_ladder.png",
              "exits.png", "latency_accuracy.png"):
        assert (out / f).exists(), f
    budget = s["compress"]["budget"]
    assert budget["requested"] == "memory_map"
    assert s["compress"]["weight_bytes"] <= budget["flash_bytes"]
    assert s["compress"]["peak_ram_bytes"] <= budget["ram_bytes"]
    # the device stage linked the power-on image and says how it compares with the prediction
    img = s["device"]["image"]
    fram = img["predicted"]["regions"]["FRAM"]
    linked = (img["linked"] or {}).get("FRAM") or fram["length"] + img["overflow"]["FRAM"]
    assert abs(fram["used"] - linked) <= max(256, 0.02 * linked)
    if img["linked"]:     # the build the device runs, measured from its provisioned image
        m = s["device"]["msp430"]
        assert m["bit_exact"] and m["power_failures_bit_exact"] and m["power_failures"] > 0
        assert m["inference"] > 0 and len(m["to_exit"]) == len(s["exits"]["exit_points"])
        assert 0 < m["largest_step"] < m["inference"] and m["warm_restart"] > 0
    assert "full_fram" in s["device"] and s["device"]["full_fram"]["weight_bytes"] > s["compress"]["weight_bytes"]
    assert s["compress"]["ratio_vs_fp32"] > 10
    # within reach of the pre-trained model (a QAT that collapses accuracy is not kept)
    assert s["compress"]["test_accuracy"] > s["pretrained"]["test_accuracy"] - 0.15
    assert s["power_failures"]["bit_exact"] and s["power_failures"]["equals_tflite_micro"]
    assert s["power_failures"]["failures"] > 0
    assert set(s["simulate"]["traces"]) == {"rf_walk", "rf_static", "solar_indoor"}
    assert len(s["exits"]["gnet_accuracy"]) == len(s["exits"]["exit_points"]) >= 1
    report = (out / "report.md").read_text()
    assert "| SparseComp |" in report
    # every power-on charged the measured warm restart, and the report says so and from where:
    # this model's, when the device stage ran it, else the cost tables' models'
    sim = s["simulate"]
    if img["linked"]:
        restart = s["device"]["msp430"]["warm_restart"]
        assert "measured in the device stage" in report
        # the simulation's costs scaled to the device's measured cycles, segment by segment
        f = sim["costs"]["segment_factors"]
        assert len(f) == len(s["exits"]["exit_points"]) + 1 and all(v > 0 for v in f)
        assert sim["costs"]["measured_cycles"] == s["device"]["msp430"]["inference"]
        assert sim["costs"]["max_step_cycles"] == s["device"]["msp430"]["largest_step"]
        assert f"the device ran {s['device']['msp430']['inference']:,}" in report
    else:
        restart = costs.restart_cycles("msp430fr5994")
        assert "cost_tables.json" in report and sim["costs"]["segment_factors"] is None
    assert sim["restart"]["cycles"] == restart
    assert f"restart of {restart:,} cycles" in report
    assert "charged no cycles" not in report and "charged nothing" not in report
    assert any(l.startswith("[8/8]") for l in lines)

    t0 = time.time()
    again: list[str] = []
    s2 = run_demo(cfg, log=again.append)
    assert time.time() - t0 < 60
    assert sum("cached" in l for l in again) == 7
    assert json.dumps(s2["compress"], sort_keys=True) == json.dumps(s["compress"], sort_keys=True)


def test_a_stage_cached_with_other_settings_runs_again(tmp_path):
    """The simulation stage is cached with the restart it charged: another restart runs it
    again, the same one comes from the cache."""
    runs, lines = [], []

    def fn(cycles):
        runs.append(cycles)
        return {"restart": {"cycles": cycles}}
    for cycles in (1929, 1929, 0):
        s = _stage(tmp_path, "simulate", lambda: fn(cycles), lines.append,
                   valid=lambda c: c.get("restart", {}).get("cycles") == cycles)
        assert s["restart"]["cycles"] == cycles
    assert runs == [1929, 0] and sum("cached" in l for l in lines) == 1
