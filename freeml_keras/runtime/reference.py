"""Reference interpreters for int8 flatbuffers: tf.lite (reference kernels) and TFLite Micro.

Both take and return int8 arrays; ``quantize``/``dequantize`` convert with a tensor's
(scale, zero point).
"""

from __future__ import annotations

import numpy as np

from freeml_keras import memory
from freeml_keras.format import tflite as ts
from freeml_keras.format.model import ModelLike, as_model
__all__ = ["quantize", "dequantize", "io_quantization", "run_tflite", "run_tflm",
           "smallest_tflm_arena"]


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
    results: list[list[np.ndarray]] = [[] for _ in range(n_out)]
    for k in range(n):
        for i, x in enumerate(inputs):
            interp.set_input(x[k:k + 1], i)
        interp.invoke()
        for j in range(n_out):
            results[j].append(interp.get_output(j)[0].copy())
    return [np.stack(r) for r in results]


def smallest_tflm_arena(model_bytes: bytes, upper: int = 1 << 24) -> int:
    """The smallest arena (bytes) with which TFLite Micro allocates the model."""
    from tflite_micro import runtime
    lo, hi = 16, upper
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=mid)
            hi = mid
        except Exception:  # TFLite Micro reports allocation failure as a RuntimeError
            lo = mid + 1
    return lo


def _output_indices(model_bytes: bytes) -> list[int]:
    return [int(i) for i in ts.read_model(model_bytes).subgraphs[0].outputs]


def _default_arena(model_bytes: bytes) -> int:
    fp = memory.tflite_footprint(model_bytes)
    # TFLite Micro's persistent structs come on top of the tensor plan; this margin covers them.
    return 2 * fp.arena_bytes + 64 * 1024 + 256 * len(fp.layers)
