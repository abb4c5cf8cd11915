"""How well the per-operator cost model predicts what the targets measured.

Reads the per-operator counts of ``bench/results/targets.json`` (written by bench/targets.py).
For each target and each measured model: the cost model fitted to all models (what the
converter writes into the metadata), and the one fitted to the other models only
(leave-one-model-out: how it prices a model it has never seen). Reports per model the measured
and predicted cost of one inference and the relative error, per operator kind the fitted terms,
and plots predicted against measured per operator.

    .venv/bin/python bench/costs.py          # writes bench/results/costs.json and costs.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from freeml_keras.costs import CostModel
from freeml_keras.costs import read_cost_tables

RESULTS = Path(__file__).resolve().parent / "results"


def _predict(cm: CostModel, table: dict) -> list[float]:
    return [cm.op_cost(op["op"], int(op.get("macs", 0)), int(op.get("sparse_macs", op.get("macs", 0))),
                       int(op.get("output_bytes", 0))) for op in table["ops"]]


def evaluate(target: str, tables: dict) -> dict:
    """Fitted terms and in-sample / leave-one-model-out errors for one target."""
    full = CostModel.fit(target, tables)
    models = {}
    for name, table in tables.items():
        unit = table["unit"]
        measured = [float(op[unit]) for op in table["ops"]]
        row = {"unit": unit, "measured": sum(measured), "fitted_all": sum(_predict(full, table)),
               "ops": [{"op": op["op"], "measured": m, "fitted_all": p}
                       for op, m, p in zip(table["ops"], measured, _predict(full, table))]}
        others = {k: v for k, v in tables.items() if k != name}
        if others:
            loo = CostModel.fit(target, others)
            pred = _predict(loo, table)
            row["leave_one_out"] = sum(pred)
            for o, p in zip(row["ops"], pred):
                o["leave_one_out"] = p
        for key in ("fitted_all", "leave_one_out"):
            if key in row:
                row[f"{key}_error"] = (row[key] - row["measured"]) / row["measured"]
        models[name] = row
    return {"unit": full.unit, "kinds": {k: vars(v) for k, v in full.kinds.items()}, "models": models}


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    targets = list(result["targets"])
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 4.2), squeeze=False)
    for ax, target in zip(axes[0], targets):
        r = result["targets"][target]
        lo, hi = float("inf"), 0.0
        for name, m in r["models"].items():
            for key, marker in (("fitted_all", "o"), ("leave_one_out", "x")):
                pts = [(o["measured"], o[key]) for o in m["ops"] if key in o and o["measured"] > 0]
                if not pts:
                    continue
                xs, ys = zip(*pts)
                ax.scatter(xs, [max(y, 1.0) for y in ys], marker=marker, s=18,
                           label=f"{name} ({'all models' if key == 'fitted_all' else 'without it'})")
                lo, hi = min(lo, *xs), max(hi, *xs)
        if hi > 0:
            ax.plot([lo, hi], [lo, hi], "k:", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"measured {r['unit']} per operator")
        ax.set_ylabel(f"predicted {r['unit']}")
        ax.set_title(target)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", default=None,
                    help="a targets benchmark result file (default: the tables the package ships)")
    ap.add_argument("--quick", action="store_true", help="accepted for make bench; same work")
    args = ap.parse_args()
    tables = read_cost_tables(args.tables)
    result = {"benchmark": "costs", "source": str(Path(args.tables).name) if args.tables else "freeml_keras/data/cost_tables.json",
              "targets": {t: evaluate(t, tab) for t, tab in tables.items() if tab}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "costs.json").write_text(json.dumps(result, indent=1))
    plot(result, RESULTS / "costs.png")
    for target, r in result["targets"].items():
        for name, m in r["models"].items():
            loo = (f", leave-one-out {m['leave_one_out']:,.0f} ({100 * m['leave_one_out_error']:+.1f}%)"
                   if "leave_one_out" in m else "")
            print(f"{target:10s} {name:24s} measured {m['measured']:>12,.0f} {r['unit']}, fitted "
                  f"{m['fitted_all']:,.0f} ({100 * m['fitted_all_error']:+.1f}%){loo}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
