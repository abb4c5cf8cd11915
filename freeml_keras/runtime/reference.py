"""Reference interpreters for int8 flatbuffers: tf.lite (reference kernels) and TFLite Micro.

Both take and return int8 arrays; ``quantize``/``dequantize`` convert with a tensor's
(scale, zero point).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from freeml_keras import memory
from freeml_keras.format import tflite as ts
from freeml_keras.format.model import ModelLike, as_model
__all__ = ["quantize", "dequantize", "io_quantization", "run_tflite", "run_tflm",
           "run_tflm_isolated", "smallest_tflm_arena", "TFLMCrash"]


class TFLMCrash(RuntimeError):
    """TFLite Micro ended its (child) process: a segfault or an abort, or it refused the model;
    the message says which."""


def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float -> int8 the way TFLite quantizes inputs (round half away from zero, saturate)."""
    q = np.asarray(x, np.float64) / scale
    q = np.sign(q) * np.floor(np.abs(q) + 0.5) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (np.asarray(q, np.float32) - zero_point) * np.float32(scale)


def io_quantization(model_bytes: ModelLike, subgraph: int = 0) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
    """(scale, zero point) of each input and output of a subgraph (of a flatbuffer's bytes, or
    of a ``TFLiteModel``, parsed once)."""
    m = as_model(model_bytes).parsed
    sg = m.subgraphs[subgraph]

    def q(i: int) -> tuple[float, int]:
        t = sg.tensors[int(i)].quantization
        return float(t.scale[0]), int(t.zeroPoint[0])
    return [q(i) for i in sg.inputs], [q(i) for i in sg.outputs]


def run_tflite(model_bytes: bytes, inputs: list[np.ndarray], *, reference: bool = True) -> list[np.ndarray]:
    """Run subgraph 0 of the model once per example with tf.lite's interpreter (its reference
    kernels by default). ``inputs``: one int8 array per model input, batch first.
    Returns one int8 array per output, batch first, in subgraph output order."""
    from freeml_keras.keras import tf
    kwargs = {}
    if reference:
        kwargs["experimental_op_resolver_type"] = tf.lite.experimental.OpResolverType.BUILTIN_REF
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interp = tf.lite.Interpreter(model_content=bytes(model_bytes), **kwargs)
    interp.allocate_tensors()
    ins = interp.get_input_details()
    outs = interp.get_output_details()
    n = len(inputs[0])
    results: list[list[np.ndarray]] = [[] for _ in outs]
    for k in range(n):
        for d, x in zip(ins, inputs):
            interp.set_tensor(d["index"], x[k:k + 1])
        interp.invoke()
        for r, d in zip(results, outs):
            r.append(interp.get_tensor(d["index"])[0].copy())
    return [np.stack(r) for r in results]


def run_tflm(model_bytes: bytes, inputs: list[np.ndarray], *, arena_size: int | None = None) -> list[np.ndarray]:
    """Run the model once per example in TFLite Micro (tflite-micro's Python interpreter)."""
    from tflite_micro import runtime
    interp = runtime.Interpreter.from_bytes(bytes(model_bytes),
                                            arena_size=arena_size or _default_arena(model_bytes))
    n = len(inputs[0])
    n_out = len(_output_indices(model_bytes))
    shapes = _input_shapes(model_bytes)
    results: list[list[np.ndarray]] = [[] for _ in range(n_out)]
    for k in range(n):
        for i, x in enumerate(inputs):
            xk = x[k:k + 1]
            # example k in the input's own shape (one without a batch dimension too)
            interp.set_input(xk.reshape(shapes[i]) if xk.size == int(np.prod(shapes[i])) else xk, i)
        interp.invoke()
        for j in range(n_out):
            y = interp.get_output(j)        # without its batch dimension of 1, if it has one
            results[j].append((y[0] if y.ndim and y.shape[0] == 1 else y).copy())
    return [np.stack(r) for r in results]


def _child(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """This module's command line (``_main``) in a child Python process."""
    return subprocess.run([sys.executable, "-m", "freeml_keras.runtime.reference", *args],
                          capture_output=True, text=True, timeout=timeout)


def _death(r: subprocess.CompletedProcess) -> str:
    if r.returncode < 0:
        try:
            name = signal.Signals(-r.returncode).name
        except ValueError:
            name = f"signal {-r.returncode}"
        return f"TFLite Micro crashed ({name})"
    tail = r.stderr.strip().splitlines()
    return f"TFLite Micro failed (exit {r.returncode}): {tail[-1] if tail else ''}"


def run_tflm_isolated(model_bytes: bytes, inputs: list[np.ndarray], *, arena_size: int | None = None,
                      timeout: float = 600.0) -> list[np.ndarray]:
    """``run_tflm`` in a child process: a model that makes TFLite Micro segfault or abort raises
    :class:`TFLMCrash` here instead of ending this process.

    >>> from freeml_keras.runtime.reference import run_tflm_isolated
    >>> outs = run_tflm_isolated(model_bytes, [x])   # doctest: +SKIP
    """
    with tempfile.TemporaryDirectory() as d:
        np.savez(Path(d) / "in.npz", model=np.frombuffer(bytes(model_bytes), np.uint8),
                 arena=np.int64(arena_size or 0), **{f"x{i}": x for i, x in enumerate(inputs)})
        r = _child(["run", str(Path(d) / "in.npz"), str(Path(d) / "out.npz")], timeout)
        if r.returncode != 0:
            raise TFLMCrash(_death(r))
        with np.load(Path(d) / "out.npz") as z:
            return [z[f"y{j}"] for j in range(len(z.files))]


def smallest_tflm_arena(model_bytes: bytes, upper: int = 1 << 24, *, timeout: float = 600.0) -> int:
    """The smallest arena (bytes) with which TFLite Micro allocates the model. The probes run
    in a child process: TFLite Micro segfaults on some too-small arenas; a probe that crashes
    counts as too small and the search goes on in a new child."""
    lo, hi = 16, upper
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.tflite"
        path.write_bytes(bytes(model_bytes))
        while lo < hi:
            r = _child(["arena", str(path), str(lo), str(hi)], timeout)
            tried = None
            for line in r.stdout.splitlines():
                word, _, size = line.partition(" ")
                if word == "try":
                    tried = int(size)
                elif word == "ok":
                    hi, tried = int(size), None
                elif word == "fail":
                    lo, tried = int(size) + 1, None
            if r.returncode == 0:
                break
            if tried is None:                 # died outside a probe: not a small-arena crash
                raise TFLMCrash(_death(r))
            lo = tried + 1                    # the probe that crashed: too small
    return lo


def _main(argv: list[str]) -> int:
    """Child side of ``run_tflm_isolated`` (``run IN.npz OUT.npz``) and of
    ``smallest_tflm_arena`` (``arena MODEL LO HI``: one line per probe, flushed)."""
    if argv[0] == "run":
        with np.load(argv[1]) as z:
            model = z["model"].tobytes()
            arena = int(z["arena"]) or None
            xs = [z[f"x{i}"] for i in range(len(z.files) - 2)]
        outs = run_tflm(model, xs, arena_size=arena)
        np.savez(argv[2], **{f"y{j}": y for j, y in enumerate(outs)})
        return 0
    from tflite_micro import runtime
    model = Path(argv[1]).read_bytes()
    lo, hi = int(argv[2]), int(argv[3])
    while lo < hi:
        mid = (lo + hi) // 2
        print("try", mid, flush=True)
        try:
            runtime.Interpreter.from_bytes(model, arena_size=mid)
            hi = mid
            print("ok", mid, flush=True)
        except Exception:  # TFLite Micro reports allocation failure as a RuntimeError
            lo = mid + 1
            print("fail", mid, flush=True)
    return 0


def _output_indices(model_bytes: bytes) -> list[int]:
    return [int(i) for i in ts.read_model(model_bytes).subgraphs[0].outputs]


def _input_shapes(model_bytes: bytes) -> list[tuple[int, ...]]:
    sg = ts.read_model(model_bytes).subgraphs[0]
    return [tuple(int(d) for d in sg.tensors[int(i)].shape) for i in sg.inputs]


def _default_arena(model_bytes: bytes) -> int:
    fp = memory.tflite_footprint(model_bytes)
    # TFLite Micro's persistent structs come on top of the tensor plan; this margin covers them.
    return 2 * fp.arena_bytes + 64 * 1024 + 256 * len(fp.layers)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
