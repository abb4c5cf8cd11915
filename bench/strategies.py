"""Energy-adaptive exits against running to completion, on every bundled trace: the demo
pipeline (cnn_s, SparseComp to the MSP430FR5994 budget, gNet and branches, converted, checked
under power failures) and its simulation stage. Writes bench/results/strategies.json.

    .venv/bin/python bench/strategies.py [--quick] [--restart-cycles N]

Every power-on in the simulation is charged the warm restart measured for the device
(``freeml_keras.costs.restart_cycles``: 1,929 cycles on the MSP430FR5994); ``--restart-cycles``
charges another figure (0: restarts free, the figures before issue 13).

The pipeline's stages are cached in bench/results/strategies_run/ (``--quick``:
strategies_run_quick/); delete that directory to rerun them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from freeml_keras.demo import DemoConfig, run_demo  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="6,000 training examples, short training")
    ap.add_argument("--restart-cycles", type=int, default=None, metavar="N",
                    help="cycles charged at every power-on (default: the measured warm restart)")
    args = ap.parse_args(argv)
    run_dir = RESULTS / ("strategies_run_quick" if args.quick else "strategies_run")
    s = run_demo(DemoConfig(out_dir=str(run_dir), quick=args.quick,
                            restart_cycles=args.restart_cycles))
    rows = []
    for trace, strategies in s["simulate"]["traces"].items():
        base = next(r for r in strategies if r["name"] == "no exit")
        for r in strategies:
            rows.append({"trace": trace, **r,
                         "latency_speedup_vs_no_exit": base["latency_mean_s"] / r["latency_mean_s"],
                         "energy_saving_vs_no_exit": 1.0 - r["energy_mj"] / base["energy_mj"]})
    out = {"command": "bench/strategies.py" + (" --quick" if args.quick else "")
           + ("" if args.restart_cycles is None else f" --restart-cycles {args.restart_cycles}"),
           "config": s["config"], "inputs": s["simulate"]["inputs"],
           "capacitor_f": s["simulate"]["capacitor_f"], "restart": s["simulate"]["restart"],
           "exits": s["exits"], "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    r0 = s["simulate"]["restart"]
    print(f"every power-on charged {r0['cycles']:,} cycles ({r0['energy_uj']:.3g} uJ): {r0['source']}")
    (RESULTS / "strategies.json").write_text(json.dumps(out, indent=1))
    for r in rows:
        print(f"{r['trace']:>13} {r['name']:>18}: accuracy {r['accuracy']:.3f}, latency "
              f"{r['latency_mean_s']:8.2f} s ({r['latency_speedup_vs_no_exit']:.1f}x), energy "
              f"{r['energy_mj']:.3f} mJ ({100 * r['energy_saving_vs_no_exit']:+.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
