"""``freeml run MODEL.tflite --dataset NAME``: run an int8 model in the C runtime (tflm_port) on a
dataset's test split: accuracy, agreement with TFLite Micro, arena bytes, time per inference."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from freeml_keras.cli import CommandError
from freeml_keras.commands.data import add_data_options, load_data


def register(sub) -> None:
    p = sub.add_parser("run", help="run a .tflite model in the C runtime on a dataset",
                       description="Run an int8 .tflite model in freeml's C runtime (tflm_port) on "
                                   "the test split of a dataset; report accuracy, agreement "
                                   "with TFLite Micro (identical int8 outputs), arena bytes and "
                                   "time per inference.")
    p.add_argument("path", help="an int8 .tflite file (dense or sparse)")
    add_data_options(p, val_split=False)
    p.add_argument("--limit", type=int, default=None, help="use the first N test examples")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def evaluate(model_bytes: bytes, x, y, *, compare_tflm: bool = True) -> dict:
    """Accuracy, agreement with TFLite Micro and timings of the model on float inputs x."""
    import numpy as np

    from freeml_keras.runtime.reference import io_quantization, quantize, run_tflm
    from freeml_keras.runtime import Interpreter
    it = Interpreter(model_bytes)
    (iq, *_), _ = io_quantization(model_bytes)
    shape = it.inputs[0]["shape"]
    if int(np.prod(shape)) != int(np.prod(x.shape[1:])):
        raise CommandError(f"the model takes inputs of shape {shape}, the dataset has examples of "
                           f"shape {tuple(x.shape[1:])}")
    inner = tuple(shape[1:]) if len(shape) > 1 and shape[0] == 1 else tuple(shape)
    xq = quantize(x, *iq).reshape((len(x),) + inner)
    t0 = time.perf_counter()
    ours = np.stack([it.invoke(xi[None])[0].reshape(-1) for xi in xq])
    t_ours = (time.perf_counter() - t0) / len(x)
    result = {"examples": int(len(x)), "accuracy": float(np.mean(ours.argmax(1) == y)),
              "arena_bytes": it.arena_bytes, "state_bytes": it.state_bytes,
              "ms_per_inference": 1e3 * t_ours}
    if compare_tflm:
        t0 = time.perf_counter()
        micro = run_tflm(model_bytes, [xq])[0].reshape(ours.shape)
        result["tflm_ms_per_inference"] = 1e3 * (time.perf_counter() - t0) / len(x)
        result["agreement_with_tflite_micro"] = float(np.mean(np.all(ours == micro, axis=1)))
    return result


def run(args: argparse.Namespace) -> int:
    from freeml_keras.runtime import RuntimeModelError
    path = Path(args.path)
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    data = path.read_bytes()
    d = load_data(args, test_only=True)
    x, y = d.test
    if args.limit:
        x, y = x[:args.limit], y[:args.limit]
    sparse = _has_densify(data)
    try:
        r = evaluate(data, x, y, compare_tflm=not sparse)
    except RuntimeModelError as e:
        raise CommandError(f"{path}: {e}") from None
    r["model"] = str(path)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"{path}: {r['examples']} examples of {d.name}")
    print(f"  accuracy           {r['accuracy']:.4f}")
    if "agreement_with_tflite_micro" in r:
        print(f"  same int8 outputs as TFLite Micro: {r['agreement_with_tflite_micro']:.4f}")
    else:
        print("  (sparse model: TFLite Micro cannot run DENSIFY, no comparison)")
    print(f"  arena {r['arena_bytes']:,} B, state {r['state_bytes']:,} B")
    print(f"  {r['ms_per_inference']:.3f} ms per inference"
          + (f" (TFLite Micro {r['tflm_ms_per_inference']:.3f} ms)" if "tflm_ms_per_inference" in r else ""))
    return 0


def _has_densify(data: bytes) -> bool:
    from freeml_keras.format import tflite as ts
    try:
        m = ts.read_model(data)
    except ts.TFLiteFormatError as e:
        raise CommandError(f"not a usable TFLite file: {e}") from None
    return any(ts.op_name(m, op.opcodeIndex) == "DENSIFY" for op in m.subgraphs[0].operators)
