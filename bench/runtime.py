"""Benchmark: the C runtime (tflm_port, via its ctypes binding) against TFLite Micro's Python
interpreter, same process, same model, same int8 inputs.

For each model and weight density (smallest-magnitude weights zeroed: 100%, 50%, 25%, 10%):
time per inference of TFLite Micro on the dense flatbuffer, of our runtime on the dense one and
on the sparse one (CSR weights read in place), whether the outputs are identical (ours vs
TFLite Micro, sparse vs dense), our arena and state bytes, TFLite Micro's smallest arena and the
footprint estimate; and, for cnn_s at widths 0.25-1.0, our arena + state against TFLite
Micro's smallest arena (``memory``). Untrained weights (Glorot init) on 28x28x1 inputs: speed and memory do not
depend on training.

Writes ``bench/results/runtime.json`` and ``runtime.png``.

    .venv/bin/python bench/runtime.py            # cnn_s and cnn_m at width 1.0
    .venv/bin/python bench/runtime.py --quick    # cnn_s only, fewer repetitions
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from freeml_keras import memory, zoo  # noqa: E402
from freeml_keras.conversion.converter import convert  # noqa: E402
from freeml_keras.runtime.reference import io_quantization, quantize, smallest_tflm_arena  # noqa: E402
from freeml_keras.keras import keras  # noqa: E402
from freeml_keras.runtime import Interpreter  # noqa: E402

DENSITIES = (1.0, 0.5, 0.25, 0.1)


def pruned(model, density: float):
    """A copy with all but the largest-magnitude `density` fraction of each kernel zeroed."""
    m = keras.models.clone_model(model)
    m.set_weights(model.get_weights())
    for layer in m.layers:
        ws = layer.get_weights()
        if ws and ws[0].ndim > 1 and density < 1.0:
            cut = np.quantile(np.abs(ws[0]), 1.0 - density)
            ws[0] = np.where(np.abs(ws[0]) < cut, 0.0, ws[0])
            layer.set_weights(ws)
    return m


def timings(b_dense: bytes, b_sparse: bytes, xq: np.ndarray, reps: int):
    """Seconds per inference of TFLite Micro (dense), ours dense and ours sparse, and their outputs.
    The three are timed in turn inside each repetition (so they see the same machine load), in
    process CPU time (not wall time: the machine is shared), and the fastest repetition is kept."""
    from tflite_micro import runtime
    micro = runtime.Interpreter.from_bytes(b_dense, arena_size=smallest_tflm_arena(b_dense) + 1024)
    dense, sparse = Interpreter(b_dense), Interpreter(b_sparse)

    def run_micro(x):
        micro.set_input(x[None], 0)
        micro.invoke()
        return micro.get_output(0).copy()

    runs = {"tflm": run_micro, "dense": lambda x: dense.invoke(x[None])[0],
            "sparse": lambda x: sparse.invoke(x[None])[0]}
    outs = {k: [f(x) for x in xq] for k, f in runs.items()}      # warm-up, and the outputs
    best = {k: float("inf") for k in runs}
    for _ in range(reps):
        for k, f in runs.items():
            t0 = time.process_time()
            for x in xq:
                f(x)
            best[k] = min(best[k], (time.process_time() - t0) / len(xq))
    return best, outs


def bench_model(name: str, width: float, reps: int) -> list[dict]:
    keras.utils.set_random_seed(0)
    base = zoo.build(name, (28, 28, 1), 10, width=width)
    rng = np.random.default_rng(0)
    calib = rng.normal(0.5, 0.3, (64, 28, 28, 1)).astype(np.float32)
    rows = []
    for density in DENSITIES:
        m = pruned(base, density)
        dense, sparse = convert(m, calib, sparse=False), convert(m, calib, sparse=True)
        (iq,), _ = io_quantization(dense)
        xq = quantize(rng.normal(0.5, 0.3, (8, 28, 28, 1)), *iq)
        best, outs = timings(dense, sparse, xq, reps)
        t_micro, t_dense, t_sparse = best["tflm"], best["dense"], best["sparse"]
        out_micro, out_dense, out_sparse = outs["tflm"], outs["dense"], outs["sparse"]
        ours = Interpreter(dense)
        row = {
            "model": name, "width": width, "density": density,
            "macs": memory.tflite_footprint(dense).macs,
            "tflm_ms": 1e3 * t_micro, "ours_dense_ms": 1e3 * t_dense, "ours_sparse_ms": 1e3 * t_sparse,
            "speedup_dense_vs_tflm": t_micro / t_dense,
            "speedup_sparse_vs_our_dense": t_dense / t_sparse,
            "speedup_sparse_vs_tflm": t_micro / t_sparse,
            "identical_to_tflm": all(np.array_equal(a, b) for a, b in zip(out_dense, out_micro)),
            "sparse_identical_to_dense": all(np.array_equal(a, b) for a, b in zip(out_sparse, out_dense)),
            "ours_arena_bytes": ours.arena_bytes, "ours_state_bytes": ours.state_bytes,
            "tflm_smallest_arena_bytes": smallest_tflm_arena(dense),
            "footprint_arena_bytes": memory.tflite_footprint(dense).arena_bytes,
            "dense_file_bytes": len(dense), "sparse_file_bytes": len(sparse),
        }
        print(f"{name} w={width} density {density:4.0%}: TFLM {row['tflm_ms']:.2f} ms, ours dense "
              f"{row['ours_dense_ms']:.2f} ms ({row['speedup_dense_vs_tflm']:.1f}x), sparse "
              f"{row['ours_sparse_ms']:.2f} ms ({row['speedup_sparse_vs_our_dense']:.1f}x our dense); "
              f"arena ours {row['ours_arena_bytes']} + state {row['ours_state_bytes']} B, TFLM "
              f"{row['tflm_smallest_arena_bytes']} B; exact {row['identical_to_tflm']}/"
              f"{row['sparse_identical_to_dense']}", flush=True)
        rows.append(row)
    return rows


def memory_rows(widths=(0.25, 0.5, 1.0)) -> list[dict]:
    """Our arena + state block against TFLite Micro's smallest arena (which holds its tables
    too), dense cnn_s at each width: where small models stand against TFLite Micro in memory."""
    rows = []
    for width in widths:
        keras.utils.set_random_seed(0)
        m = zoo.build("cnn_s", (28, 28, 1), 10, width=width)
        calib = np.random.default_rng(0).normal(0.5, 0.3, (64, 28, 28, 1)).astype(np.float32)
        b = convert(m, calib, sparse=False)
        ours = Interpreter(b)
        row = {"model": "cnn_s", "width": width, "ours_arena_bytes": ours.arena_bytes,
               "ours_state_bytes": ours.state_bytes, "ours_total_bytes": ours.arena_bytes + ours.state_bytes,
               "tflm_smallest_arena_bytes": smallest_tflm_arena(b)}
        row["ours_over_tflm"] = row["ours_total_bytes"] / row["tflm_smallest_arena_bytes"]
        print(f"memory cnn_s w={width}: ours {row['ours_arena_bytes']:,} + {row['ours_state_bytes']:,} = "
              f"{row['ours_total_bytes']:,} B, TFLite Micro {row['tflm_smallest_arena_bytes']:,} B", flush=True)
        rows.append(row)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, name in zip(axes[0], models):
        rs = [r for r in rows if r["model"] == name]
        x = np.arange(len(rs))
        for k, (key, label) in enumerate([("tflm_ms", "TFLite Micro (dense)"),
                                          ("ours_dense_ms", "tflm_port dense"),
                                          ("ours_sparse_ms", "tflm_port sparse (CSR)")]):
            ax.bar(x + (k - 1) * 0.27, [r[key] for r in rs], 0.27, label=label)
        ax.set_xticks(x, [f"{r['density']:.0%}" for r in rs])
        ax.set_xlabel("weight density")
        ax.set_ylabel("ms per inference (from Python)")
        ax.set_title(f"{name} (width {rs[0]['width']}), 28x28x1")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="cnn_s only, fewer repetitions")
    args = ap.parse_args(argv)
    plan = [("cnn_s", 1.0)] if args.quick else [("cnn_s", 1.0), ("cnn_m", 1.0)]
    reps = 3 if args.quick else 7
    rows = [r for name, width in plan for r in bench_model(name, width, reps)]
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "benchmark": "runtime", "quick": args.quick, "repetitions": reps,
        "timing": "per inference, process CPU time, fastest of `repetitions` passes over the "
                  "inputs, the three interpreters timed in turn within each pass; from Python "
                  "(ctypes binding / tflite_micro's Python interpreter), same process",
        "inputs_per_repetition": 8, "machine": platform.machine(), "python": platform.python_version(),
        "command": "bench/runtime.py" + (" --quick" if args.quick else ""),
        "rows": rows,
        "memory": memory_rows(),
    }
    (out / "runtime.json").write_text(json.dumps(summary, indent=2))
    plot(rows, out / "runtime.png")
    print(f"wrote {out / 'runtime.json'} and {out / 'runtime.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
