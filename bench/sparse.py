"""Sparse (CSR in place) against dense execution per layer, on the host and on both targets
(issue 15, item 3).

For each layer shape (the demo model's CONV_2D and FULLY_CONNECTED layers, and two larger ones
of issue 15's list) and each weight density (the smallest-magnitude weights zeroed; CSR is
what the converter writes below 70% density), one single-layer int8 model converted dense and
sparse, and its cost: on the host CPU time per inference of our runtime (process time, best of
several repetitions, ctypes call included), on the Cortex-M4 the instructions of the operator
(QEMU + the instruction-counting plugin), on the MSP430 its MCLK cycles (mspdebug's simulator).
Every sparse output is checked equal to the dense one (the runtime's dense kernels are checked
against TFLite Micro by the oracle tests). Per layer and target: speedup of sparse over dense at
each density, the density below which sparse is cheaper (``crossover_density``: linear
interpolation between the measured densities), and whether 10% density is at least 4x faster.

    .venv/bin/python bench/sparse.py                # host + cortex_m4 + msp430
    .venv/bin/python bench/sparse.py --targets host # host only (fast)
    .venv/bin/python bench/sparse.py --load bench/results/sparse.json --update-tables

Writes ``bench/results/sparse.json`` and ``sparse.png``. With ``--update-tables`` the targets'
rows also go into the cost tables the package ships (``freeml_keras/data/cost_tables.json``,
section ``layouts``), one table per layer named ``sparse: <layer>`` with the dense row and one
CSR row per density, each with its ``stored`` format: the converter's dense-or-CSR choice per
layer (``freeml_keras.conversion.layouts``, ``CostModel.chosen_format``) is priced from them
with the per-operator tables; the per-operator costs in the metadata are not.
``bench/targets.py --update-tables`` keeps this section.
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
SHIPPED_TABLES = ROOT / "freeml_keras" / "data" / "cost_tables.json"
SWEEP_PREFIX = "sparse: "
DENSITIES = (0.6, 0.4, 0.3, 0.2, 0.1, 0.05)
# name, Keras layer kind, input shape, layer arguments
LAYERS = [
    ("demo CONV_2D 3x3, 28x28x1 -> 26x26x7", "conv", (28, 28, 1), {"filters": 7, "kernel_size": 3}),
    ("demo CONV_2D 3x3, 13x13x7 -> 11x11x23", "conv", (13, 13, 7), {"filters": 23, "kernel_size": 3}),
    ("demo CONV_2D 3x3, 5x5x23 -> 3x3x13", "conv", (5, 5, 23), {"filters": 13, "kernel_size": 3}),
    ("demo FULLY_CONNECTED 44 -> 29", "fc", (44,), {"units": 29}),
    ("CONV_2D 3x3, 13x13x16 -> 11x11x32", "conv", (13, 13, 16), {"filters": 32, "kernel_size": 3}),
    ("FULLY_CONNECTED 512 -> 64", "fc", (512,), {"units": 64}),
]
TARGETS = ("host", "cortex_m4", "msp430")


def layer_models(kind: str, shape: tuple, kwargs: dict, density: float, seed: int = 0):
    """(dense bytes, sparse bytes, int8 input) of one layer whose kernel keeps the
    largest-magnitude ``density`` fraction."""
    from freeml_keras.conversion.converter import convert
    from freeml_keras.keras import keras
    from freeml_keras.runtime.reference import io_quantization, quantize

    keras.utils.set_random_seed(seed)
    layer = {"conv": keras.layers.Conv2D, "fc": keras.layers.Dense}[kind]
    m = keras.Sequential([keras.layers.Input(shape), layer(**kwargs, bias_initializer="glorot_uniform")])
    ws = m.layers[-1].get_weights()
    if density < 1.0:
        cut = np.quantile(np.abs(ws[0]), 1.0 - density)
        ws[0] = np.where(np.abs(ws[0]) < cut, 0.0, ws[0])
        m.layers[-1].set_weights(ws)
    x = np.random.default_rng(seed).normal(size=(32, *shape)).astype(np.float32)
    dense, sparse = convert(m, x, sparse=False), convert(m, x, sparse=True)
    (scale, zp), = io_quantization(dense)[0]
    return dense, sparse, quantize(x[:1], scale, zp)


def host_seconds(models: list[bytes], x: np.ndarray, min_time: float = 0.05, reps: int = 5) -> list[float]:
    """Process-time seconds per inference of each model, timed in turn (same machine load), best
    of ``reps``."""
    from freeml_keras.runtime import Interpreter

    its = [Interpreter(b) for b in models]
    for it in its:
        it.invoke(x)        # sets the input; the loops below call fm_invoke alone (no copies)
    calls = [functools.partial(it._lib.fm_invoke, it._it) for it in its]
    t0, n = time.process_time(), 0
    while time.process_time() - t0 < min_time / 5:
        calls[0]()
        n += 1
    n = max(1, n * 5)
    best = [float("inf")] * len(its)
    for _ in range(reps):
        for k, call in enumerate(calls):
            t0 = time.process_time()
            for _ in range(n):
                call()
            best[k] = min(best[k], (time.process_time() - t0) / n)
    return best


def target_cost(target: str, b: bytes, x: np.ndarray, work: Path) -> tuple[int, list[int], str]:
    """Cost of the model's weighted operator on ``target`` and the outputs (mspdebug's console
    keeps about 1,300 output values of a run and may cut the last: those before it are
    returned)."""
    from freeml_keras import memory
    from freeml_keras import targets as T

    op = [l for l in memory.tflite_footprint(b).layers if l.subgraph == 0 and l.macs][0].op_index
    r = T.run_model(target, b, x[0], work)
    out = r.output if target != "msp430" else r.output[:-1]
    return [c for i, _, _, c in r.ops if i == op][0], out, r.run.unit


def crossover(points: list[tuple[float, float]]) -> float | None:
    """The density below which sparse is faster (speedup > 1), from (density, speedup) points,
    interpolated linearly; None when sparse is faster at every density or at none measured."""
    pts = sorted(points, reverse=True)
    if all(s > 1 for _, s in pts):
        return None if not pts else float(pts[0][0])  # faster already at the densest measured
    for (d0, s0), (d1, s1) in zip(pts, pts[1:]):
        if s0 <= 1 < s1:
            return float(d0 + (1 - s0) * (d1 - d0) / (s1 - s0))
    return None


def bench_layer(name: str, kind: str, shape: tuple, kwargs: dict, targets, work: Path,
                densities=DENSITIES) -> list[dict]:
    from freeml_keras import memory
    from freeml_keras.runtime import Interpreter

    rows = []
    dense_cost: dict[str, float] = {}
    for density in densities:
        dense, sparse, x = layer_models(kind, shape, kwargs, density)
        fp = [l for l in memory.tflite_footprint(sparse).layers if l.subgraph == 0 and l.macs][0]
        if fp.stored_format != "int8_csr":
            print(f"  {name} density {density}: the converter stored it dense, skipped", flush=True)
            continue
        want = Interpreter(dense).invoke(x)[0].ravel().tolist()
        equal = Interpreter(sparse).invoke(x)[0].ravel().tolist() == want
        for target in targets:
            row = {"layer": name, "target": target, "density": density, "macs": int(fp.macs),
                   "sparse_macs": int(fp.sparse_macs), "index_bytes": _index_bytes(sparse),
                   "sparse_equals_dense_host": equal}
            if target == "host":
                td, ts = host_seconds([dense, sparse], x)
                row.update({"unit": "us", "dense": 1e6 * td, "sparse": 1e6 * ts})
            else:
                from freeml_keras.targets import TargetRunError
                try:
                    if target not in dense_cost:
                        dense_cost[target], out, _ = target_cost(target, dense, x, work / f"{target}_d")
                        if out != want[:len(out)]:
                            raise SystemExit(f"{target} {name}: dense output differs from the host's")
                    cost, out, unit = target_cost(target, sparse, x, work / f"{target}_s")
                except TargetRunError as e:     # e.g. the dense weights do not fit the MSP430's FRAM
                    print(f"  {target:9s} {name:40s} {density:4.0%}: not run ({str(e)[:100]})", flush=True)
                    continue
                if out != want[:len(out)]:
                    raise SystemExit(f"{target} {name} density {density}: sparse output differs from dense")
                row.update({"unit": unit, "dense": dense_cost[target], "sparse": cost,
                            "dense_per_mac": dense_cost[target] / fp.macs,
                            "sparse_per_executed_mac": cost / max(fp.sparse_macs, 1)})
            row["speedup"] = row["dense"] / row["sparse"]
            rows.append(row)
            print(f"  {target:9s} {name:40s} {density:4.0%}: dense {row['dense']:11.1f} sparse "
                  f"{row['sparse']:11.1f} {row['unit']}  {row['speedup']:5.2f}x", flush=True)
    return rows


def _index_bytes(b: bytes) -> int:
    from freeml_keras.format import tflite as ts

    m = ts.read_model(b)
    for t in m.subgraphs[0].tensors:
        if t.sparsity is not None:
            return {0: 4, 1: 2, 2: 1}.get(int(t.sparsity.dimMetadata[-1].arrayIndicesType) - 1, 0)
    return 0


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    for (layer, target) in dict.fromkeys((r["layer"], r["target"]) for r in rows):
        rs = [r for r in rows if r["layer"] == layer and r["target"] == target]
        at10 = [r["speedup"] for r in rs if abs(r["density"] - 0.1) < 1e-9]
        out.append({"layer": layer, "target": target,
                    "crossover_density": crossover([(r["density"], r["speedup"]) for r in rs]),
                    "speedup_at_10pct": at10[0] if at10 else None,
                    "at_least_4x_at_10pct": bool(at10 and at10[0] >= 4.0)})
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(r["target"] for r in rows))
    fig, axes = plt.subplots(1, len(targets), figsize=(5.5 * len(targets), 4.2), squeeze=False)
    for ax, target in zip(axes[0], targets):
        for layer in dict.fromkeys(r["layer"] for r in rows):
            rs = sorted((r for r in rows if r["target"] == target and r["layer"] == layer), key=lambda r: r["density"])
            if rs:
                ax.plot([r["density"] for r in rs], [r["speedup"] for r in rs], "o-", label=layer, ms=3)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(4.0, color="r", lw=0.8, ls="--")
        ax.set_xlabel("weight density")
        ax.set_ylabel("speedup of CSR over dense (same layer)")
        ax.set_yscale("log")
        ax.set_title(target)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def output_bytes(kind: str, shape: tuple, kwargs: dict) -> int:
    """Output bytes of one of LAYERS (valid padding, stride 1)."""
    if kind == "fc":
        return int(kwargs["units"])
    k = int(kwargs["kernel_size"])
    return (shape[0] - k + 1) * (shape[1] - k + 1) * int(kwargs["filters"])


def cost_tables(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """The targets' rows as cost tables (``costs.read_cost_tables``'s layout): per target one
    table per layer, its dense row and one CSR row per density, with the stored format."""
    spec = {name: (kind, shape, kwargs) for name, kind, shape, kwargs in LAYERS}
    out: dict[str, dict[str, dict]] = {}
    for r in rows:
        if r["target"] == "host" or r["layer"] not in spec:
            continue
        op = "FULLY_CONNECTED" if spec[r["layer"]][0] == "fc" else "CONV_2D"
        unit, ob = r["unit"], output_bytes(*spec[r["layer"]])
        table = out.setdefault(r["target"], {}).setdefault(SWEEP_PREFIX + r["layer"], {"unit": unit, "ops": []})
        if not any(o["stored"] == "int8" for o in table["ops"]):
            table["ops"].append({"op": op, "macs": r["macs"], "sparse_macs": r["macs"], "output_bytes": ob,
                                 unit: r["dense"], "stored": "int8"})
        table["ops"].append({"op": op, "macs": r["macs"], "sparse_macs": r["sparse_macs"], "output_bytes": ob,
                             unit: r["sparse"], "stored": "int8_csr", "density": r["density"]})
    return out


def update_tables(rows: list[dict], path: Path = SHIPPED_TABLES) -> None:
    """Write these rows' tables as the ``layouts`` section of the shipped cost tables (the
    per-operator ``cost_tables`` are left alone)."""
    doc = json.loads(path.read_text())
    doc["layouts"] = cost_tables(rows)
    path.write_text(json.dumps(doc, indent=1))
    print(f"updated the 'layouts' section of {path}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated: host,cortex_m4,msp430")
    ap.add_argument("--layers", default="", help="comma-separated indices into LAYERS (default all)")
    ap.add_argument("--densities", default="", help="comma-separated densities (default DENSITIES)")
    ap.add_argument("--out", type=Path, default=RESULTS / "sparse.json")
    ap.add_argument("--load", type=Path, help="take the rows of this result file instead of measuring")
    ap.add_argument("--update-tables", action="store_true",
                    help="write the targets' rows into the shipped cost tables (freeml_keras/data/cost_tables.json)")
    args = ap.parse_args(argv)
    if args.load:
        rows = json.loads(args.load.read_text())["rows"]
        if args.update_tables:
            update_tables(rows)
        return 0
    targets = [t for t in args.targets.split(",") if t]
    layers = [LAYERS[int(i)] for i in args.layers.split(",") if i] if args.layers else LAYERS
    densities = tuple(float(d) for d in args.densities.split(",") if d) or DENSITIES
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, kind, shape, kwargs) in enumerate(layers):
            rows += bench_layer(name, kind, shape, kwargs, targets, Path(tmp) / f"l{k}", densities)
    summary = summarize(rows)
    for s in summary:
        print(f"{s['target']:9s} {s['layer']:40s} crossover {s['crossover_density']}, "
              f"10%: {s['speedup_at_10pct']}", flush=True)
    result = {"command": "python bench/sparse.py " + " ".join(argv), "machine": platform.platform(),
              "densities": list(densities), "rows": rows, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    if args.update_tables:
        update_tables(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
