"""Kernel speed, per-operator cost and code size on the microcontroller targets (issue 7).

1. int8 MAC inner loop: marginal cost per MAC between 64 and 256 MACs (call overhead cancels),
   for TFLite Micro's reference form (int32 operands: ``ref32``), portable C with 16-bit
   products (``c``), the Cortex-M4 DSP loop (``dsp``: SXTB16 + SMLAD) and the MSP430 hardware
   multiplier loop (``hwmult``: MACS/OP2). MSP430 also without the hardware multiplier (every
   multiply a shift-and-add helper). Targets: <= 3 instructions/MAC (M4), <= 30 cycles/MAC
   (MSP430).
2. Whole models with the tflm_port runtime, model in flash / FRAM: instructions (M4) or MCLK
   cycles (MSP430) per operator, per inference and for fm_init; outputs checked against the
   host runtime; code size (text / data / bss). The per-operator figures are written as cost
   tables (``cost_tables``: per op its cost, units, MACs, sparse MACs and output bytes) for the
   converter's metadata and the energy simulation. Models: small digit models, the zoo's cnn_s,
   the compressed cnn_s that fits the MSP430 (``bench/fixtures.py``) and the demo's
   compressed cnn_s (``--demo-model``, default runs/demo/model.tflite, when present); a model
   that does not fit a target is recorded with the linker's overflow per memory region.
3. Checkpointing on the targets (arena and checkpoint records in FRAM / the retained region):
   cost per inference at several granularities against the continuous run (overhead %), in
   units per step and in the runtime's default work mode (MAC-equivalents per step), commits
   and NVM bytes written by commits, and a run resumed after an emulated power loss.

Counts: QEMU mps2-an386 + the project's TCG plugin (exact instruction counts; QEMU does not
model M4 cycles); mspdebug 0.22's simulator (MSP430 instruction timings, no FRAM wait states).

    .venv/bin/python bench/targets.py [--quick] [--demo-model runs/demo/model.tflite] [--update-tables]
    # bench/results/targets.json and targets.png; with --update-tables also the cost tables the
    # package ships (freeml_keras/data/cost_tables.json), never as a side effect of a plain run
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from fixtures import CNN_S_DIGITS_EPOCHS, compressed_cnn_s

from freeml_keras import targets as T
from freeml_keras.costs import COST_TABLES_VERSION, CostTableError
from freeml_keras.runtime.intermittent import DEFAULT_STEP_WORK

# The cost tables the library ships with (package data): written only with --update-tables.
SHIPPED_TABLES = Path(__file__).resolve().parents[1] / "freeml_keras" / "data" / "cost_tables.json"
RESULTS = Path(__file__).resolve().parent / "results"
OP_NAMES = {3: "CONV_2D", 4: "DEPTHWISE_CONV_2D", 9: "FULLY_CONNECTED", 17: "MAX_POOL_2D",
            1: "AVERAGE_POOL_2D", 22: "RESHAPE", 25: "SOFTMAX", 40: "MEAN", 0: "ADD",
            2: "CONCATENATION", 114: "QUANTIZE", 6: "DEQUANTIZE"}
KERNEL_BUILDS = [("cortex_m4", {"DSP": 1}, "hardware"), ("msp430", {"HWMULT": 1}, "hardware multiplier"),
                 ("msp430", {"HWMULT": 0}, "software multiply")]
KERNEL_SYMBOLS = {"ref32": "dot_ref32", "c": "fm_dot_s8_c", "dsp": "fm_dot_s8_dsp", "hwmult": "fm_dot_s8_hwmult"}


def symbol_sizes(target: str, elf: Path) -> dict[str, int]:
    """Bytes of each function in ``elf`` (nm -S)."""
    import subprocess
    nm = "arm-none-eabi-nm" if target == "cortex_m4" else "llvm-nm"
    out = subprocess.run([nm, "-S", str(elf)], capture_output=True, text=True, check=True).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            sizes[parts[3]] = int(parts[1], 16)
    return sizes


def kernel_speed(work: Path) -> list[dict]:
    rng = np.random.default_rng(0)
    lengths = [64, 256]
    xs = [rng.integers(-128, 128, n).astype(np.int8) for n in lengths]
    ws = [rng.integers(-128, 128, n).astype(np.int8) for n in lengths]
    offsets, biases = [5, 5], [0, 0]
    expect = [int(np.sum((x.astype(np.int64) + 5) * w)) for x, w in zip(xs, ws)]
    rows = []
    for target, options, multiply in KERNEL_BUILDS:
        tag = target + "".join(f"_{k}{v}" for k, v in options.items())
        d = T.run_dot_cases(target, work / tag, xs, ws, offsets, biases, options)
        sizes = symbol_sizes(target, d.elf)
        for impl, costs in d.costs.items():
            if d.results[impl] != expect:
                raise SystemExit(f"{tag} {impl}: wrong dot products {d.results[impl]} != {expect}")
            rows.append({"target": target, "build": options, "multiply": multiply, "impl": impl,
                         "unit": d.run.unit, "per_mac": (costs[1] - costs[0]) / (lengths[1] - lengths[0]),
                         "cost_64": costs[0], "cost_256": costs[1],
                         "function_bytes": sizes.get(KERNEL_SYMBOLS[impl], 0)})
            print(f"  {tag:22s} {impl:7s} {rows[-1]['per_mac']:8.2f} {d.run.unit}/MAC", flush=True)
    return rows


DEMO_MODEL = Path("runs/demo/model.tflite")


@functools.lru_cache(maxsize=None)
def models(quick: bool, demo_model: Path | None = None) -> dict[str, tuple[bytes, np.ndarray]]:
    """Small trained digit models (8x8 inputs): an MLP that fits the MSP430 together with the
    runtime, a CNN, the zoo's cnn_s at width 0.25 and that cnn_s compressed to fit the MSP430;
    and the demo's compressed cnn_s (Fashion-MNIST) when ``demo_model`` exists."""
    from freeml_keras import datasets, zoo
    from freeml_keras.conversion import converter
    from freeml_keras.runtime.reference import io_quantization, quantize
    from freeml_keras.keras import keras

    (xtr, ytr), _, (xte, _) = datasets.load("digits")
    keras.utils.set_random_seed(0)
    built = {
        "mlp_64_16_10": keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(),
                                          keras.layers.Dense(16, activation="relu"),
                                          keras.layers.Dense(10, activation="softmax")]),
        "cnn_4x3x3": keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                                       keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
                                       keras.layers.Dense(10, activation="softmax")]),
    }
    for m in built.values():
        m.compile("adam", "sparse_categorical_crossentropy")
        m.fit(xtr, ytr, epochs=2 if quick else 10, verbose=0)
    if not quick:
        built["cnn_s_w0.25"] = zoo.pretrained("cnn_s", "digits", width=0.25, epochs=CNN_S_DIGITS_EPOCHS,
                                              verbose=0)
    out = {}
    for name, m in built.items():
        b = converter.convert(m, xtr[:100], sparse=False)
        (scale, zp), = io_quantization(b)[0]
        out[name] = (b, quantize(xte[:1], scale, zp))
    b, x, _ = compressed_cnn_s()
    out["cnn_s_compressed"] = (b, x[:1])
    if demo_model is not None and demo_model.exists():
        b = demo_model.read_bytes()
        (scale, zp), = io_quantization(b)[0]
        _, _, (xf, _) = datasets.load("fashion_mnist")
        out["cnn_s_demo"] = (b, quantize(xf[:1], scale, zp))
    return out


def op_output_bytes(model_bytes: bytes) -> dict[int, int]:
    """Bytes of each main-subgraph operator's output tensor, by operator index."""
    from freeml_keras.format import tflite as ts
    m = ts.read_model(model_bytes)
    sg = m.subgraphs[0]
    out = {}
    for i, op in enumerate(sg.operators or []):
        t = sg.tensors[int(op.outputs[0])]
        out[i] = int(np.prod(t.shape if t.shape is not None else [])) * ts.TENSOR_TYPE_BYTES[t.type]
    return out


def model_costs(work: Path, quick: bool, demo_model: Path | None) -> tuple[list[dict], dict]:
    from freeml_keras import memory
    from freeml_keras.runtime import Interpreter

    rows, tables = [], {}
    for name, (b, x) in models(quick, demo_model).items():
        want = Interpreter(b).invoke(x)[0].ravel().tolist()
        for target in T.TARGETS:
            try:
                r = T.run_model(target, b, x[0], work / f"{target}_{name}")
            except T.TargetRunError as e:
                over = T.memory_overflow(str(e))
                reason = (f"does not fit: {', '.join(f'{k} over by {v:,} B' for k, v in over.items())}"
                          if over else str(e)[:300])
                rows.append({"target": target, "model": name, "model_bytes": len(b), "error": reason,
                             "overflow_bytes": over})
                print(f"  {target:10s} {name:16s} not run: {reason}", flush=True)
                continue
            if r.output != want or r.output_invoke != want:
                raise SystemExit(f"{target} {name}: output {r.output} differs from the host's {want}")
            layers = {l.op_index: l for l in memory.tflite_footprint(b).layers if l.subgraph == 0}
            out_bytes = op_output_bytes(b)
            ops = [{"index": i, "op": OP_NAMES.get(c, str(c)), "units": u, r.run.unit: cost,
                    "per_unit": cost / u if u else 0.0,
                    "macs": layers[i].macs if i in layers else 0,
                    "sparse_macs": layers[i].sparse_macs if i in layers else 0,
                    "output_bytes": out_bytes[i]} for i, c, u, cost in r.ops]
            tables.setdefault(target, {})[name] = {"unit": r.run.unit, "ops": ops}
            rows.append({"target": target, "model": name, "model_bytes": len(b), "unit": r.run.unit,
                         "per_inference": r.invoke_cost, "op_by_op_total": sum(o[r.run.unit] for o in ops),
                         "init": r.init_cost, "ops": ops, "size": r.size, "state_bytes": r.state_used,
                         "arena_bytes": r.arena_bytes, "output_equals_host": True})
            print(f"  {target:10s} {name:16s} {r.invoke_cost:10d} {r.run.unit}/inference, "
                  f"text {r.size['text']} B", flush=True)
    return rows, tables


GRANULARITIES = (1, 2, 4, 8, 16, 64, 1 << 30)
STEP_WORKS = (256, 512, 1024, 4096)          # work mode (the runtime's default mode)


def restart_costs(work: Path, quick: bool, demo_model: Path | None) -> list[dict]:
    """Power-on to progress, per model and target (freeml_keras.targets.power): cold
    preparation (precomputed requantization words; and, for comparison, the float prepare the
    runtime had before), warm restart from reset to the first resumed unit of work, the power-on
    budget (restart + largest atomic step, the smallest capacitor) and, on the MSP430, a short
    campaign of power failures inside the emulator, counted by where they landed."""
    from freeml_keras.conversion import extract_subgraph
    from freeml_keras.energy.livelock import power_on_budget
    from freeml_keras.format.prepared import with_prepared
    from freeml_keras.runtime import Interpreter
    from freeml_keras.targets import power
    rows = []
    ms = dict(models(quick, demo_model))
    b, x = ms["cnn_s_compressed"]
    ms["cnn_s_compressed_nohead"] = (with_prepared(extract_subgraph(b, 0)), x)
    for name, (b, x) in ms.items():
        b = with_prepared(b)
        xi = np.asarray(x).reshape(-1)
        ref = Interpreter(b).invoke(np.asarray(x))[0].ravel().tolist()
        for target in T.TARGETS:
            if target == "msp430" and name == "cnn_s_compressed":
                continue                      # measured without its head (cnn_s_compressed_nohead)
            row = {"model": name, "target": target}
            try:
                r = power.measure_restart(target, b, xi, work / "restart" / target / name)
                row.update({k: v for k, v in r.items() if k != "target"})
                try:
                    f = power.measure_restart(target, b, xi, work / "restart_float" / target / name,
                                              prepare_float=True)
                    row["cold_init_float_prepare"] = f["cold_init"]
                except T.TargetRunError as e:
                    row["cold_init_float_prepare"] = None
                    row["float_prepare_overflow"] = T.memory_overflow(str(e))
                dev = "msp430fr5994" if target == "msp430" else "apollo3"
                try:
                    bud = power_on_budget(b, dev)
                    row["power_on_budget"] = {k: bud[k] for k in ("restart", "largest_step", "step_mode",
                                                                  "needed_cycles", "needed_j", "min_capacitance_f")}
                except CostTableError as e:        # no per-operator costs for this core in its metadata
                    row["power_on_budget"] = {"error": str(e)}
                if target == "msp430" and not quick:
                    rep = power.run_power_failures(target, b, xi, work / "failures" / name, failures=60, seed=1)
                    row["failures"] = {"by_phase": rep.failures_by_phase, "answers": len(rep.outputs),
                                       "bit_exact": all(y == ref for _, y in rep.outputs),
                                       "power_ons": rep.power_ons, "warm_power_ons": rep.warm_power_ons}
                print(f"  {target:9s} {name:24s} warm restart {row['warm_restart']:>6,} {row['unit']}, "
                      f"cold {row['cold_init']:>9,} (float prepare: {row['cold_init_float_prepare']})", flush=True)
            except T.TargetRunError as e:
                row["error"] = str(e)[-300:]
                row["overflow"] = T.memory_overflow(str(e))
                print(f"  {target:9s} {name:24s} does not run: {row['overflow'] or row['error'][:120]}", flush=True)
            rows.append(row)
    return rows


def checkpoint_costs(work: Path, quick: bool, demo_model: Path | None,
                     only: Sequence[tuple[str, str]] | None = None) -> list[dict]:
    """Checkpointed vs continuous inference: the MLP and the compressed cnn_s on both targets,
    the zoo's cnn_s at width 0.25 and the demo's cnn_s on the Cortex-M4. The compressed cnn_s
    with its exit head (FM_EXITS 1) does not fit the MSP430 checkpointed; its backbone alone
    (``cnn_s_compressed_nohead``: ``compressed_cnn_s(exit_head=False)``, no exit points, so
    the build leaves the exit head's code out) does. A build that does not fit is recorded with
    the linker's overflow. ``only``: just these (target, model) cases."""
    from freeml_keras.runtime import Interpreter

    have = dict(models(quick, demo_model))
    b, x, _ = compressed_cnn_s(exit_head=False)
    have["cnn_s_compressed_nohead"] = (b, x[:1])
    cases = [(t, n) for n in ("mlp_64_16_10", "cnn_s_compressed") for t in T.TARGETS]
    cases += [("msp430", "cnn_s_compressed_nohead")]
    cases += [("cortex_m4", n) for n in ("cnn_s_w0.25", "cnn_s_demo") if n in have]
    if only is not None:
        cases = [c for c in cases if c in set(only)]
    rows = []
    for target, name in cases:
        b, x = have[name]
        want = Interpreter(b).invoke(x)[0].ravel().tolist()
        try:
            c = T.run_checkpointed(target, b, x[0], work / f"ckpt_{target}_{name}", granularities=GRANULARITIES,
                                   step_works=STEP_WORKS)
        except T.TargetRunError as e:
            over = T.memory_overflow(str(e))
            if not over:
                raise
            rows.append({"target": target, "model": name, "error": "does not fit", "overflow_bytes": over,
                         "exit_head_code": T.model_has_exits(b)})
            print(f"  {target:10s} {name:16s} not run: does not fit ({over})", flush=True)
            continue
        if c.plain_output != want or c.resume_output != want or \
                any(r["output"] != want for r in c.runs + c.work_runs):
            raise SystemExit(f"{target} {name}: checkpointed output differs from the host's")
        if not c.exits and c.exits_refused != (3, 3):
            raise SystemExit(f"{target} {name}: a build without exits did not refuse exits ({c.exits_refused})")
        for r in c.work_runs:
            rows.append({"target": target, "model": name, "unit": c.run.unit, "mode": "work",
                         "step_work": r["step_work"], "default": r["step_work"] == DEFAULT_STEP_WORK,
                         "cost": r["cost"], "continuous": c.plain_cost,
                         "overhead_pct": 100.0 * (r["cost"] / c.plain_cost - 1.0), "commits": r["commits"],
                         "steps": r["steps"], "largest_step_work": r["largest_step_work"],
                         "nvm_commit_bytes": r["nvm_bytes"], "units": r["units"],
                         "resume_ok": True, "text_bytes": c.size["text"], "exit_head_code": c.exits})
            print(f"  {target:10s} {name:16s} step work {r['step_work']:>6d}"
                  f"{' (default)' if rows[-1]['default'] else ''}: {rows[-1]['overhead_pct']:6.1f}% over "
                  f"{c.plain_cost} {c.run.unit}, {r['steps']} steps, {r['commits']} commits, "
                  f"{r['nvm_bytes']} B", flush=True)
        for r in c.runs:
            rows.append({"target": target, "model": name, "unit": c.run.unit, "mode": "units",
                         "granularity": r["granularity"] if r["granularity"] < (1 << 30) else "operator",
                         "cost": r["cost"], "continuous": c.plain_cost,
                         "overhead_pct": 100.0 * (r["cost"] / c.plain_cost - 1.0), "commits": r["commits"],
                         "nvm_commit_bytes": r["nvm_bytes"], "units": r["units"],
                         "resume_ok": True, "text_bytes": c.size["text"], "exit_head_code": c.exits})
            print(f"  {target:10s} {name:16s} granularity {rows[-1]['granularity']!s:>8s}: "
                  f"{rows[-1]['overhead_pct']:6.1f}% over {c.plain_cost} {c.run.unit}, "
                  f"{r['commits']} commits, {r['nvm_bytes']} B", flush=True)
    return rows


def plot(kernels: list[dict], model_rows: list[dict], ckpt_rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2, a3, a4) = plt.subplots(1, 4, figsize=(22, 4.5))
    short = {"hardware": "", "hardware multiplier": " hw", "software multiply": " sw"}
    labels = [f"{'M4' if k['target'] == 'cortex_m4' else '430'}{short[k['multiply']]}\n{k['impl']}"
              for k in kernels]
    colors = ["tab:blue" if k["target"] == "cortex_m4" else "tab:orange" for k in kernels]
    a1.bar(range(len(kernels)), [k["per_mac"] for k in kernels], color=colors)
    a1.set_yscale("log")
    a1.set_xticks(range(len(kernels)), labels, fontsize=7)
    a1.set_ylabel("instructions (M4) / MCLK cycles (MSP430) per int8 MAC")
    a1.axhline(3, color="tab:blue", ls="--", lw=0.8, label="M4 target: 3 instructions")
    a1.axhline(30, color="tab:orange", ls="--", lw=0.8, label="MSP430 target: 30 cycles")
    a1.legend(fontsize=7)
    a1.set_title("int8 MAC inner loop")
    ok = [r for r in model_rows if "error" not in r]
    bottom = np.zeros(len(ok))
    ops = sorted({o["op"] for r in ok for o in r["ops"]})
    for op in ops:
        vals = np.array([sum(o[r["unit"]] for o in r["ops"] if o["op"] == op) / r["op_by_op_total"] for r in ok])
        a2.bar(range(len(ok)), vals, bottom=bottom, label=op)
        bottom += vals
    a2.set_xticks(range(len(ok)), [f"{r['target']}\n{r['model']}" for r in ok], fontsize=6, rotation=30)
    a2.set_ylabel("share of one inference")
    a2.set_title("per-operator cost")
    a2.legend(fontsize=7)
    ran = [r for r in ckpt_rows if "error" not in r]
    for (target, model) in dict.fromkeys((r["target"], r["model"]) for r in ran):
        rows = [r for r in ran if r["target"] == target and r["model"] == model and r["mode"] == "units"]
        gs = [r["granularity"] if isinstance(r["granularity"], int) else 1024 for r in rows]
        style = "o-" if target == "cortex_m4" else "s--"
        label = f"{'M4' if target == 'cortex_m4' else '430'} {model}"
        a3.plot(gs, [r["overhead_pct"] for r in rows], style, label=label)
        rows = [r for r in ran if r["target"] == target and r["model"] == model and r["mode"] == "work"]
        a4.plot([r["step_work"] for r in rows], [r["overhead_pct"] for r in rows], style, label=label)
    a3.set_xscale("log", base=2)
    a3.set_xlabel("units per atomic step (rightmost: one operator)")
    a3.set_title("granularity in units / overhead")
    a4.set_xscale("log", base=2)
    a4.axvline(DEFAULT_STEP_WORK, color="k", ls=":", lw=0.8, label="default")
    a4.set_xlabel("MAC-equivalents per atomic step (work mode)")
    a4.set_title("granularity in work (default mode) / overhead")
    for ax in (a3, a4):
        ax.set_ylabel("checkpoint overhead, % of continuous run")
        ax.axhline(5, color="grey", ls="--", lw=0.8, label="target: 5%")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 training epochs, no zoo cnn_s")
    ap.add_argument("--demo-model", type=Path, default=DEMO_MODEL,
                    help="the demo's model.tflite (`freeml demo --out DIR`), measured when it exists")
    ap.add_argument("--out", type=Path, default=RESULTS / "targets.json")
    ap.add_argument("--update-tables", action="store_true",
                    help="also write the measured cost tables into the package "
                         f"({SHIPPED_TABLES.relative_to(SHIPPED_TABLES.parents[2])}), which the library uses")
    ap.add_argument("--power-only", action="store_true",
                    help="only the power-on section: bench/results/restart.json (and, with --update-tables, "
                         "only the shipped tables' restart section)")
    args = ap.parse_args()
    for target in T.TARGETS:
        T.check_tools(target)
    if args.power_only:
        return power_only(args)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="freeml-targets-") as tmp:
        work = Path(tmp)
        print("int8 MAC inner loop:", flush=True)
        kernels = kernel_speed(work)
        print("models:", flush=True)
        model_rows, tables = model_costs(work, args.quick, args.demo_model)
        print("checkpointing:", flush=True)
        ckpt_rows = checkpoint_costs(work, args.quick, args.demo_model)
        print("power-on (restart, cold preparation, failures):", flush=True)
        restart_rows = restart_costs(work, args.quick, args.demo_model)
    best = {t: min(k["per_mac"] for k in kernels if k["target"] == t and k["impl"] in ("dsp", "hwmult"))
            for t in T.TARGETS}
    result = {
        "benchmark": "targets", "quick": args.quick, "host": platform.platform(),
        "demo_model": str(args.demo_model) if args.demo_model.exists() else None,
        "wall_s": time.time() - t0,
        "counters": {"cortex_m4": "qemu-system-arm 7.2 mps2-an386, TCG plugin: executed instructions",
                     "msp430": "mspdebug 0.22 sim: MCLK cycles (MSP430 timings, no FRAM wait states)"},
        "targets_met": {"m4_instructions_per_mac<=3": best["cortex_m4"] <= 3.0,
                        "msp430_cycles_per_mac<=30": best["msp430"] <= 30.0},
        "best_per_mac": best, "kernels": kernels, "models": model_rows, "cost_tables": tables,
        "checkpointing": ckpt_rows, "restart": restart_rows,
    }
    ok = [r for r in restart_rows if "warm_restart" in r]
    result["targets_met"].update({
        "msp430_warm_restart<=2000_cycles": all(r["warm_restart"] <= 2000 for r in ok if r["target"] == "msp430"),
        "m4_warm_restart<=1000_instructions": all(r["warm_restart"] <= 1000 for r in ok if r["target"] == "cortex_m4"),
    })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(kernels, model_rows, ckpt_rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')} in {result['wall_s']:.0f} s")
    if args.update_tables:
        restart = _restart_section(ok)
        SHIPPED_TABLES.write_text(json.dumps({"version": COST_TABLES_VERSION,
                                              "written_by": "bench/targets.py --update-tables",
                                              "quick": args.quick, "cost_tables": tables,
                                              "restart": restart}, indent=1))
        print(f"updated the shipped cost tables {SHIPPED_TABLES}")
    return 0


def _restart_section(rows: list[dict]) -> dict:
    """The shipped tables' restart section from the power-on rows."""
    restart: dict = {}
    for r in rows:
        if "warm_restart" not in r:
            continue
        t = restart.setdefault(r["target"], {"unit": r["unit"], "measured_by":
                                             "freeml_keras.targets.power.measure_restart (bench/targets.py)",
                                             "models": {}})
        t["models"][r["model"]] = {"warm_restart": r["warm_restart"], "cold_init": r["cold_init"]}
    return restart


def power_only(args) -> int:
    """The power-on section alone, into bench/results/restart.json (and the shipped tables)."""
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="freeml-power-") as tmp:
        print("power-on (restart, cold preparation, failures):", flush=True)
        rows = restart_costs(Path(tmp), args.quick, args.demo_model)
    ok = [r for r in rows if "warm_restart" in r]
    out = RESULTS / "restart.json"
    result = {"benchmark": "targets --power-only", "quick": args.quick, "host": platform.platform(),
              "command": "bench/targets.py --power-only" + (" --quick" if args.quick else ""),
              "wall_s": time.time() - t0,
              "targets_met": {
                  "msp430_warm_restart<=2000_cycles": all(r["warm_restart"] <= 2000 for r in ok
                                                          if r["target"] == "msp430"),
                  "m4_warm_restart<=1000_instructions": all(r["warm_restart"] <= 1000 for r in ok
                                                            if r["target"] == "cortex_m4")},
              "restart": rows}
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out} in {result['wall_s']:.0f} s; targets met: {result['targets_met']}")
    if args.update_tables:
        doc = json.loads(SHIPPED_TABLES.read_text())
        doc["restart"] = _restart_section(rows)
        SHIPPED_TABLES.write_text(json.dumps(doc, indent=1))
        print(f"updated the restart section of {SHIPPED_TABLES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
