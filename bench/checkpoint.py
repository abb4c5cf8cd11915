"""Checkpoint overhead of the intermittent runtime.

1. Host: instructions executed (valgrind callgrind, exact and repeatable) by one inference at
   several granularities (units mode: units of one operator per atomic step) and step works (work
   mode, the runtime's default: MAC-equivalents per atomic step), against one commit per operator.
2. Targets (QEMU Cortex-M4 instructions, mspdebug MSP430 cycles; programs/ckpt_run.c through
   freeml_keras.targets.run_checkpointed, the models of bench/targets.py): the checkpointed
   inference against the continuous one at granularities 1 and 8, one operator per step, and the
   runtime's default (work mode, FM_DEFAULT_STEP_WORK). The region measured is fm_resume: the two
   commits of fm_prepare_input and fm_start are outside it.

Writes bench/results/checkpoint.json and .png.

    .venv/bin/python bench/checkpoint.py [--quick] [--no-targets]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from freeml_keras import datasets, zoo  # noqa: E402
from freeml_keras.runtime.reference import io_quantization, quantize  # noqa: E402
from freeml_keras.runtime.intermittent import DEFAULT_STEP_WORK, harness_path, plan, step_options  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GRANULARITIES = [1, 2, 4, 8, 16, 64, 1_000_000]
STEP_WORKS = [256, 512, DEFAULT_STEP_WORK, 4096, 16384]


def instructions(cmd: list[str]) -> int:
    r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd],
                       capture_output=True, text=True)
    m = re.search(r"Collected : (\d+)", r.stderr)
    if not m:
        raise RuntimeError(f"callgrind failed: {r.stderr[-500:]}")
    return int(m.group(1))


def measure(name: str, model_bytes: bytes, x: np.ndarray) -> dict:
    tool = str(harness_path())
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "m.tflite").write_bytes(model_bytes)
        (d / "x.bin").write_bytes(x.tobytes())
        base = [tool, str(d / "m.tflite"), str(d / "nvm")]
        setup = instructions(base + ["plan"])          # parse, prepare, plan: no inference
        rows = []
        for g, w in [(g, None) for g in GRANULARITIES] + [(None, w) for w in STEP_WORKS]:
            total = instructions(base + ["new", str(d / "x.bin"), *step_options(g, w)])
            p = plan(model_bytes, granularity=g, step_work=w)
            rows.append({"granularity": g, "step_work": w, "instructions": total - setup,
                         "commits": len(p["steps"]) + 2, "largest_step_units": p["largest_step_units"],
                         "largest_step_work": p["largest_step_work"]})
    base_row = rows[len(GRANULARITIES) - 1]   # one commit per operator
    for r in rows:
        r["overhead_percent"] = 100.0 * (r["instructions"] - base_row["instructions"]) / base_row["instructions"]
    return {"model": name, "rows": rows, "record_bytes": plan(model_bytes)["record_bytes"]}


def target_costs(quick: bool) -> list[dict]:
    """Overhead on the targets: the MLP on both, cnn_s width 0.25 on the Cortex-M4 (not with
    ``quick``: bench/targets.py trains it only then)."""
    import importlib.util
    from freeml_keras import targets as T
    from freeml_keras.runtime import Interpreter
    spec = importlib.util.spec_from_file_location("bench_targets", Path(__file__).with_name("targets.py"))
    bt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bt)
    models = bt.models(quick)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for target, name in [("cortex_m4", "mlp_64_16_10"), ("msp430", "mlp_64_16_10"), ("cortex_m4", "cnn_s_w0.25")]:
            if name not in models:
                continue
            b, x = models[name]
            want = Interpreter(b).invoke(x)[0].ravel().tolist()
            c = T.run_checkpointed(target, b, x[0], Path(d) / f"{target}_{name}", granularities=(1, 8, 1 << 30))
            work = c.run.lines("work")[0]           # the default configuration, measured last
            runs = [(f"units {r['granularity'] if r['granularity'] < (1 << 30) else 'operator'}", r["cost"],
                     r["commits"], r["nvm_bytes"], r["output"], None) for r in c.runs]
            runs.append((f"default: work {work[0]}", c.run.regions()[-1], int(work[2]), int(work[3]),
                         [int(v) for v in work[6:]], int(work[4])))
            for step, cost, commits, nvm, output, largest in runs:
                if output != want or c.resume_output != want:
                    raise SystemExit(f"{target} {name} {step}: output differs from the host's")
                rows.append({"target": target, "model": name, "unit": c.run.unit, "steps": step, "cost": cost,
                             "continuous": c.plain_cost, "overhead_percent": 100.0 * (cost / c.plain_cost - 1.0),
                             "commits": commits, "nvm_bytes": nvm, "largest_step_work": largest,
                             "text_bytes": c.size["text"]})
                print(f"{target:10s} {name:13s} {step:22s} {rows[-1]['overhead_percent']:6.2f}% over "
                      f"{c.plain_cost} {c.run.unit}, {commits} commits", flush=True)
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a small model only")
    ap.add_argument("--no-targets", action="store_true", help="host only")
    args = ap.parse_args(argv)
    from freeml_keras.conversion.converter import convert
    models = []
    tr, _, te = datasets.load("digits")
    m = zoo.build("cnn_s", (8, 8, 1), 10, width=0.5)
    models.append(("cnn_s (digits, width 0.5)", convert(m, tr[0][:64], sparse=False), te[0][:1]))
    if not args.quick:
        trf, _, tef = datasets.load("fashion_mnist")
        m = zoo.pretrained("cnn_s", "fashion_mnist", verbose=0)
        models.append(("cnn_s (fashion_mnist, pre-trained)", convert(m, trf[0][:200], sparse=False), tef[0][:1]))
    out = {"command": "bench/checkpoint.py" + (" --quick" if args.quick else ""),
           "method": "valgrind callgrind instructions of one inference (setup subtracted); overhead "
                     "relative to one commit per operator", "models": []}
    for name, b, x in models:
        (iq,), _ = io_quantization(b)
        res = measure(name, b, quantize(x, *iq)[0])
        out["models"].append(res)
        for r in res["rows"]:
            mode = f"g={r['granularity']:>7}" if r["step_work"] is None else f"w={r['step_work']:>7}"
            print(f"{name}: {mode}  {r['instructions']:>12,} instr  "
                  f"{r['commits']:>6} commits  overhead {r['overhead_percent']:6.2f}%")
    if not args.no_targets:
        out["targets"] = target_costs(args.quick)
        out["targets_command"] = "freeml_keras.targets.run_checkpointed, granularities (1, 8, operator) + default"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "checkpoint.json").write_text(json.dumps(out, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for res in out["models"]:
        units = [r for r in res["rows"][:len(GRANULARITIES) - 1]]
        work = [r for r in res["rows"] if r["step_work"] is not None]
        ax.plot([r["granularity"] for r in units], [r["overhead_percent"] for r in units], "o-",
                label=f"{res['model']}, units per step")
        ax.plot([r["step_work"] for r in work], [r["overhead_percent"] for r in work], "s--",
                label=f"{res['model']}, MAC-equivalents per step")
    ax.axhline(5, color="k", ls=":", label="5% target")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("atomic step: units (units mode) or MAC-equivalents (work mode)")
    ax.set_ylabel("checkpoint overhead (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "checkpoint.png", dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
