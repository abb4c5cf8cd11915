"""Speed of the energy-harvesting simulator: wall time per simulated inference.

For each bundled trace and each capacitor leakage model, simulates ``--inferences`` inputs
arriving every ``--period`` seconds, each an inference of ``--steps`` atomic steps of
``--step-cycles`` cycles (a 20 M-cycle inference with two exit points, run to completion: the
most work per inference; every power-on charged the warm restart measured for the MSP430FR5994,
``freeml_keras.costs.restart_cycles``, or ``--restart-cycles``), and records wall time per inference, per constant-power interval
integrated, power failures and the energy books' balance. Target (issue 8): one inference well
under a second; here we aim at milliseconds so that thousands of inputs x traces take seconds.

    .venv/bin/python bench/energy.py            # writes bench/results/energy.json and .png
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from freeml_keras import costs
from freeml_keras.energy import Capacitor, Program, Simulator, Step, periodic_arrivals, traces

RESULTS = Path(__file__).resolve().parent / "results"

LEAKS = {"resistor 1 MOhm": dict(leak_resistance_ohm=1e6),
         "current 3 uA": dict(leak_resistance_ohm=None, leak_current_a=3e-6),
         "none": dict(leak_resistance_ohm=None)}


def program(steps: int, step_cycles: int, restart_cycles: int | None = None) -> Program:
    """``restart_cycles`` at every power-on; None: the warm restart measured for the device."""
    marks = {steps // 3 - 1: 0, 2 * steps // 3 - 1: 1, steps - 1: 2}
    return Program(tuple(Step(step_cycles, 64, marks.get(i)) for i in range(steps)),
                   resume_cycles=restart_cycles, name=f"{steps}x{step_cycles}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inferences", type=int, default=1000)
    ap.add_argument("--period", type=float, default=120.0, help="seconds between inputs")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--step-cycles", type=int, default=1_000_000)
    ap.add_argument("--restart-cycles", type=int, default=None,
                    help="cycles charged at every power-on (default: the measured warm restart)")
    ap.add_argument("--out", type=Path, default=RESULTS / "energy.json")
    args = ap.parse_args()
    prog = program(args.steps, args.step_cycles, args.restart_cycles)
    restart = (costs.restart_cycles("msp430fr5994") if args.restart_cycles is None
               else args.restart_cycles)
    rows = []
    for trace_name in traces.names():
        trace = traces.load(trace_name)
        for leak_name, leak in LEAKS.items():
            sim = Simulator(trace, Capacitor(**leak), v_start=0.0)
            arrivals = periodic_arrivals(args.inferences, args.period)
            t0 = time.perf_counter()
            res = sim.run(prog, arrivals)
            wall = time.perf_counter() - t0
            n = len(res.inferences)
            row = {
                "trace": trace_name, "leakage": leak_name, "inferences": n,
                "completed": int(res.array("completed").sum()),
                "simulated_s": res.duration_s, "wall_s": wall,
                "wall_ms_per_inference": 1e3 * wall / n,
                "intervals": res.intervals,
                "wall_us_per_interval": 1e6 * wall / max(res.intervals, 1),
                "power_failures_per_inference": float(res.array("power_failures").mean()),
                "mean_latency_s": float(res.array("latency_s").mean()),
                "balance_error_rel": abs(res.balance_error_j) / res.ledger.harvested_j,
            }
            rows.append(row)
            print(f"{trace_name:13s} {leak_name:17s} {row['wall_ms_per_inference']:7.3f} ms/inference"
                  f" {row['wall_us_per_interval']:6.2f} us/interval "
                  f"{row['power_failures_per_inference']:5.2f} failures/inference "
                  f"balance {row['balance_error_rel']:.1e}", flush=True)
    worst = max(r["wall_ms_per_inference"] for r in rows)
    out = {
        "benchmark": "energy simulator speed",
        "command": "python bench/energy.py" + ("" if args.inferences == 1000 else
                                               f" --inferences {args.inferences}")
                   + ("" if args.restart_cycles is None else f" --restart-cycles {args.restart_cycles}"),
        "program": {"steps": args.steps, "step_cycles": args.step_cycles, "exits": 3,
                    "total_cycles": prog.total_cycles, "restart_cycles": restart,
                    "restart_source": (costs.restart_source("msp430fr5994")
                                       if args.restart_cycles is None else "--restart-cycles")},
        "device": "msp430fr5994", "capacitor": "470 uF, on 3.3 V, off 1.8 V, max 3.6 V",
        "inputs_every_s": args.period, "machine": platform.platform(),
        "note": "wall time on a shared 2-core machine with other jobs running",
        "rows": rows,
        "worst_ms_per_inference": worst,
        "target": "one inference well under a second (issue 8)",
        "target_met": worst < 1000.0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 3.5))
        labels = [f"{r['trace']}\n{r['leakage']}" for r in rows]
        ax.bar(range(len(rows)), [r["wall_ms_per_inference"] for r in rows])
        ax.set_xticks(range(len(rows)), labels, rotation=60, fontsize=7, ha="right")
        ax.set_ylabel("wall ms per inference")
        ax.set_title(f"Simulator speed ({prog.total_cycles / 1e6:.0f} M-cycle inference, "
                     f"{args.inferences} inputs)")
        fig.tight_layout()
        fig.savefig(args.out.with_suffix(".png"), dpi=120)
    except ImportError:
        pass
    print(f"worst {worst:.3f} ms per inference; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
