"""``freeml run MODEL.tflite [--dataset NAME | --data FILE.npz]``: run a model in the C runtime
(tflm_port). With a dataset: accuracy on its test split, agreement with TFLite Micro, arena
bytes, time per inference. Without one: random valid inputs (or the arrays of an .npz), invoked
in sequence, every output compared with TFLite Micro's (run in a child process, so that a model
that crashes TFLite Micro only ends the comparison)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from freeml_keras.cli import CommandError
from freeml_keras.commands.data import add_data_options, load_data


def register(sub) -> None:
    p = sub.add_parser("run", help="run a .tflite model in the C runtime (on a dataset, or on random "
                                   "inputs against TFLite Micro)",
                       description="Run a .tflite model in freeml's C runtime (tflm_port). With "
                                   "--dataset, or --data with labelled arrays (x_test, y_test or "
                                   "x_val, y_val): accuracy, agreement with TFLite Micro (identical "
                                   "int8 outputs), arena bytes and time per inference. Without: "
                                   "random valid inputs (or --data with one array per model input), "
                                   "invoked in sequence, every output compared with TFLite Micro's.")
    p.add_argument("path", help="a .tflite file (dense or sparse)")
    add_data_options(p, required=False, val_split=False)
    p.add_argument("--examples", type=int, default=8, help="random inputs to run without --data (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
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


def model_inputs(model_bytes: bytes, *, data: Path | None = None, examples: int = 8,
                 seed: int = 0) -> list:
    """One array per model input, examples first, in the input's type and shape: the arrays of
    ``data`` (an .npz, in input order; float arrays of an integer input are quantized with its
    scale and zero point) or ``examples`` random values over the input type's range."""
    import numpy as np

    from freeml_keras.runtime import Interpreter
    from freeml_keras.runtime.reference import quantize
    infos = Interpreter(model_bytes).inputs
    if data is not None:
        try:
            with np.load(data) as z:
                arrays = [z[k] for k in z.files]
        except (OSError, ValueError) as e:
            raise CommandError(f"{data}: not a readable .npz ({e})") from None
        if len(arrays) != len(infos):
            raise CommandError(f"{data} has {len(arrays)} arrays, the model {len(infos)} inputs")
        out = []
        for a, info in zip(arrays, infos):
            size = int(np.prod(info["shape"]))
            if a.size % size:
                raise CommandError(f"{data}: an array of shape {a.shape} is not examples of the "
                                   f"model's input shape {info['shape']}")
            if np.issubdtype(a.dtype, np.floating) and info["dtype"] == np.int8:
                a = quantize(a, info["scale"], info["zero_point"])
            out.append(a.astype(info["dtype"]).reshape((-1,) + tuple(info["shape"])))
        return out
    rng = np.random.default_rng(seed)
    out = []
    for info in infos:
        shape = (examples,) + tuple(info["shape"])
        if np.issubdtype(info["dtype"], np.integer):
            lim = np.iinfo(info["dtype"])
            out.append(rng.integers(lim.min, lim.max + 1, shape).astype(info["dtype"]))
        else:
            out.append(rng.normal(0, 1, shape).astype(info["dtype"]))
    return out


def compare_with_tflm(model_bytes: bytes, xs: list) -> dict:
    """The model on inputs ``xs`` (one array per input, examples first) in the C runtime,
    invoked in sequence, and in TFLite Micro in a child process: per output, the fraction of
    examples with identical outputs and the largest difference. A model TFLite Micro cannot
    run (DENSIFY) or that crashes it is reported, not raised."""
    import numpy as np

    from freeml_keras.runtime import Interpreter
    from freeml_keras.runtime.reference import TFLMCrash, run_tflm_isolated
    it = Interpreter(model_bytes)
    n = len(xs[0])
    t0 = time.perf_counter()
    ours = [it.invoke(*[x[k] for x in xs]) for k in range(n)]
    result = {"examples": n, "inputs": len(xs), "outputs": len(it.outputs),
              "arena_bytes": it.arena_bytes, "state_bytes": it.state_bytes,
              "ms_per_inference": 1e3 * (time.perf_counter() - t0) / max(n, 1)}
    if _has_densify(model_bytes):
        result["tflite_micro"] = "not compared: TFLite Micro cannot run DENSIFY (a sparse model)"
        return result
    t0 = time.perf_counter()
    try:
        micro = run_tflm_isolated(model_bytes, xs)
    except TFLMCrash as e:
        result["tflite_micro"] = f"not compared: {e}"
        return result
    result["tflm_ms_per_inference"] = 1e3 * (time.perf_counter() - t0) / max(n, 1)
    per = []
    for j in range(len(it.outputs)):
        a = np.stack([o[j].reshape(-1) for o in ours])
        b = micro[j].reshape(a.shape)
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        per.append({"output": j, "identical_examples": int(np.sum(np.all(a == b, axis=1))),
                    "max_abs_difference": float(diff.max()) if diff.size else 0.0})
    result["per_output"] = per
    result["identical"] = all(p["identical_examples"] == n for p in per)
    result["tflite_micro"] = "compared"
    return result


def run(args: argparse.Namespace) -> int:
    from freeml_keras.runtime import RuntimeModelError
    path = Path(args.path)
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    data = path.read_bytes()
    if args.dataset is None and (args.data is None or not _labelled_npz(args.data)):
        _has_densify(data)                      # a file that is not TFLite: a one-line error
        try:
            xs = model_inputs(data, data=Path(args.data) if args.data else None,
                              examples=args.examples, seed=args.seed)
            r = compare_with_tflm(data, xs)
        except RuntimeModelError as e:
            raise CommandError(f"{path}: {e}") from None
        r["model"] = str(path)
        if args.json:
            print(json.dumps(r, indent=2))
            return 0 if r.get("identical", True) else 1
        src = args.data or f"random inputs (seed {args.seed})"
        print(f"{path}: {r['examples']} examples of {src}, invoked in sequence")
        print(f"  arena {r['arena_bytes']:,} B, state {r['state_bytes']:,} B, {r['ms_per_inference']:.3f} ms "
              f"per inference" + (f" (TFLite Micro {r['tflm_ms_per_inference']:.3f} ms in a child process)"
                                  if "tflm_ms_per_inference" in r else ""))
        if r["tflite_micro"] != "compared":
            print(f"  TFLite Micro: {r['tflite_micro']}")
            return 0
        for p in r["per_output"]:
            print(f"  output {p['output']}: {p['identical_examples']}/{r['examples']} examples identical to "
                  f"TFLite Micro (largest difference {p['max_abs_difference']:g})")
        print("  every output identical to TFLite Micro" if r["identical"] else "  outputs DIFFER from TFLite Micro")
        return 0 if r["identical"] else 1
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


def _labelled_npz(path: str) -> bool:
    """Whether an .npz holds a labelled split (the --data layout of every command) rather than
    one array per model input."""
    import numpy as np
    try:
        with np.load(path) as f:
            names = set(f.files)
    except (OSError, ValueError) as e:
        raise CommandError(f"{path}: not a readable .npz ({e})") from None
    return bool(names & {"x_test", "x_val", "x_train"})


def _has_densify(data: bytes) -> bool:
    from freeml_keras.format import tflite as ts
    try:
        m = ts.read_model(data)
    except ts.TFLiteFormatError as e:
        raise CommandError(f"not a usable TFLite file: {e}") from None
    return any(ts.op_name(m, op.opcodeIndex) == "DENSIFY" for op in m.subgraphs[0].operators)
