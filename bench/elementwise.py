"""Benchmark: element-wise operators (ADD, SUB, MUL, MAXIMUM) of the C runtime against TFLite
Micro's Python interpreter on the host, same process, same one-operator int8 models: operands
of the output's shape, and the second broadcast along the last dimension.

Best of N invocations each (ours through the ctypes binding, which copies inputs and outputs;
TFLite Micro's invoke alone), and whether the outputs are identical.

Writes ``bench/results/elementwise.json``.

    .venv/bin/python bench/elementwise.py            # 32x32x32 outputs, 30 repetitions
    .venv/bin/python bench/elementwise.py --quick    # 16x16x16, 5 repetitions
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

from freeml_keras.format import tflite as ts  # noqa: E402
from freeml_keras.runtime import Interpreter  # noqa: E402

OPS = ("ADD", "SUB", "MUL", "MAXIMUM")


def model(op: str, out: list[int], b_shape: list[int]) -> bytes:
    opts = {"ADD": ts.schema.AddOptionsT, "SUB": ts.schema.SubOptionsT, "MUL": ts.schema.MulOptionsT}.get(op)
    s_out = 0.05 * 0.07 * 20 if op == "MUL" else 0.09
    return ts.op_model(op, [ts.tensor_spec(out, scale=0.05, zp=3), ts.tensor_spec(b_shape, scale=0.07, zp=-5)],
                       [ts.tensor_spec(out, scale=s_out, zp=7)], opts() if opts else None)


def best_ms(f, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    from tflite_micro import runtime
    side, reps = (16, 5) if args.quick else (32, 30)
    out = [side, side, side]
    rows = []
    for op in OPS:
        for case, b_shape in (("same shape", out), ("broadcast", [side])):
            b = model(op, out, b_shape)
            rng = np.random.default_rng(0)
            xa = rng.integers(-128, 128, out).astype(np.int8)
            xb = rng.integers(-128, 128, b_shape).astype(np.int8)
            it = Interpreter(b)
            micro = runtime.Interpreter.from_bytes(b, arena_size=1 << 20)
            micro.set_input(xa, 0)
            micro.set_input(xb, 1)
            micro.invoke()
            same = bool(np.array_equal(it.invoke(xa, xb)[0], micro.get_output(0)))
            ours, tflm = best_ms(lambda: it.invoke(xa, xb), reps), best_ms(micro.invoke, reps)
            rows.append({"op": op, "case": case, "elements": int(np.prod(out)), "ours_ms": ours,
                         "tflm_ms": tflm, "speed_vs_tflm": tflm / ours, "identical": same})
            print(f"{op:8s} {case:10s} ours {ours:.3f} ms  TFLite Micro {tflm:.3f} ms  "
                  f"{tflm / ours:.2f}x  identical={same}")
    res = {"machine": platform.machine(), "python": platform.python_version(), "quick": args.quick,
           "rows": rows}
    path = ROOT / "bench" / "results" / "elementwise.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
