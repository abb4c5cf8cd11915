"""Benchmark: which standard tinyML architectures the C runtime runs, against TFLite Micro.

A zoo built the way the tests build models (``bench/architectures.py``: random weights from a
seed, converted to full int8 by the stock TFLite converter with random calibration inputs):
ResNet-8 on 32x32x3, the DS-CNN keyword spotter on 49x10 MFCCs, MobileNetV1 0.25 on 96x96x3,
the FC autoencoder (640 inputs), a streaming convolution with a resource variable (ring
buffer), one LSTM layer and one GRU layer (unrolled). Per model: whether our runtime runs it (or the refusal, by name),
whether TFLite Micro runs it, whether every output of a sequence of invocations is identical to
TFLite Micro's (in order: the stateful model carries its state), the speed ratio (CPU time per
inference from Python, best of N timings of at least 20 ms each, TFLite Micro / ours) and the arenas (ours + our state block,
against TFLite Micro's smallest, which includes its own tables and the variables).

Writes ``bench/results/coverage.json``.

    .venv/bin/python bench/coverage.py            # 7 repetitions, 6 inputs
    .venv/bin/python bench/coverage.py --quick    # 2 repetitions, 3 inputs
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from freeml_keras.format import tflite as ts  # noqa: E402
from freeml_keras.runtime import Interpreter, RuntimeModelError  # noqa: E402
from freeml_keras.runtime.reference import TFLMCrash, run_tflm_isolated, smallest_tflm_arena  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_architectures", ROOT / "bench" / "architectures.py")
A = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(A)


def zoo() -> list[tuple[str, callable]]:
    """(name, maker of the int8 flatbuffer) for each architecture."""
    keras_models = [("resnet8_32x32x3", A.resnet8), ("ds_cnn_49x10", A.ds_cnn),
                    ("mobilenet_v1_0.25_96x96x3", A.mobilenet_v1), ("fc_autoencoder_640", A.fc_autoencoder),
                    ("lstm_8x6", A.lstm_model), ("gru_8x6_unrolled", A.gru_model)]
    makers = [(n, (lambda f=f: A.convert_int8(A.randomize(f())))) for n, f in keras_models]
    return makers[:4] + [("streaming_conv_variable", A.streaming_conv)] + makers[4:]


def _inputs(b: bytes, n: int, seed: int = 0) -> list[np.ndarray]:
    sg = ts.read_model(b).subgraphs[0]
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, (n,) + tuple(int(d) for d in sg.tensors[int(i)].shape)).astype(np.int8)
            for i in sg.inputs]


def measure(name: str, b: bytes, n: int, reps: int) -> dict:
    m = ts.read_model(b)
    ops = sorted({ts.op_name(m, o.opcodeIndex) for sg in m.subgraphs for o in sg.operators})
    row = {"model": name, "file_bytes": len(b), "operators": ops, "runs": False, "refused": None,
           "tflm_runs": False, "tflm_error": None, "bit_exact": None, "speed_vs_tflm": None}
    xs = _inputs(b, n)
    try:
        ours = Interpreter(b)
        row.update(runs=True, ours_arena_bytes=ours.arena_bytes, ours_state_bytes=ours.state_bytes)
    except RuntimeModelError as e:
        row["refused"] = str(e)
        ours = None
    try:
        micro_outs = run_tflm_isolated(b, [x for x in xs])     # in order: state carried
        row.update(tflm_runs=True, tflm_smallest_arena_bytes=smallest_tflm_arena(b))
    except (TFLMCrash, RuntimeError) as e:
        row["tflm_error"] = str(e)
    if ours is None or not row["tflm_runs"]:
        return row
    from tflite_micro import runtime
    outs = [ours.invoke(*[x[k] for x in xs]) for k in range(n)]
    row["bit_exact"] = all(np.array_equal(o.reshape(ref[k].shape), ref[k])
                           for k in range(n) for o, ref in zip(outs[k], micro_outs))
    micro = runtime.Interpreter.from_bytes(b, arena_size=row["tflm_smallest_arena_bytes"] + 1024)

    def run_micro(k):
        for i, x in enumerate(xs):
            micro.set_input(x[k], i)
        micro.invoke()
        return micro.get_output(0)

    runs = {"tflm": run_micro, "ours": lambda k: ours.invoke(*[x[k] for x in xs])}
    t0 = time.process_time()
    for k in range(n):
        run_micro(k)
    # each timing covers at least ~20 ms of TFLite Micro's work (small models: many rounds)
    rounds = max(1, int(0.02 / max(time.process_time() - t0, 1e-6)))
    best = {k: float("inf") for k in runs}
    for _ in range(reps):       # in turn, so both see the same machine load; CPU time of this process
        for key, f in runs.items():
            t0 = time.process_time()
            for _ in range(rounds):
                for k in range(n):
                    f(k)
            best[key] = min(best[key], (time.process_time() - t0) / (n * rounds))
    row.update(tflm_ms=1e3 * best["tflm"], ours_ms=1e3 * best["ours"], speed_vs_tflm=best["tflm"] / best["ours"])
    return row


def _line(r: dict) -> str:
    if not r["runs"]:
        return f"{r['model']}: refused: {r['refused']} (TFLite Micro: {'runs' if r['tflm_runs'] else r['tflm_error']})"
    if not r["tflm_runs"]:
        return f"{r['model']}: runs; TFLite Micro does not: {r['tflm_error']}"
    return (f"{r['model']}: bit-exact {r['bit_exact']}, {r['ours_ms']:.2f} ms vs TFLite Micro {r['tflm_ms']:.2f} ms "
            f"({r['speed_vs_tflm']:.1f}x), arena {r['ours_arena_bytes']:,} + state {r['ours_state_bytes']:,} B vs "
            f"{r['tflm_smallest_arena_bytes']:,} B")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 repetitions, 3 inputs")
    args = ap.parse_args(argv)
    reps, n = (2, 3) if args.quick else (7, 6)
    rows = []
    for name, make in zoo():
        t0 = time.time()
        row = measure(name, make(), n, reps)
        row["seconds"] = time.time() - t0
        print(_line(row), flush=True)
        rows.append(row)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    res = {"benchmark": "coverage", "quick": args.quick, "repetitions": reps, "inputs": n,
           "machine": platform.machine(), "python": platform.python_version(),
           "runs": sum(r["runs"] for r in rows), "bit_exact": sum(bool(r["bit_exact"]) for r in rows),
           "models": len(rows), "rows": rows}
    (out / "coverage.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out / 'coverage.json'}: {res['runs']} of {len(rows)} run, {res['bit_exact']} bit-exact")
    return 0 if all(r["bit_exact"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
