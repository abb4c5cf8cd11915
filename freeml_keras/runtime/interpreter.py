"""Python binding (ctypes) of the tflm_port C runtime: run int8 .tflite models on the host.

``Interpreter(model_bytes)`` parses, validates and plans the model once; ``invoke(x)`` runs one
inference and returns the int8 outputs. The shared library is built with ``make``
on first use into the per-user cache (``freeml_keras.runtime.build``).
"""

from __future__ import annotations

import ctypes
from typing import Sequence

import numpy as np

from freeml_keras.format import tflite as ts
from freeml_keras.runtime.build import build_library

__all__ = ["Interpreter", "RuntimeModelError", "supported_operators", "operator_support"]

_STATUS = {1: "bad argument", 2: "malformed model", 3: "unsupported model", 4: "not enough memory",
           5: "bad call order"}
_TYPES = {0: np.float32, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8}
_lib = None
# operators whose state is a variable tensor (is_variable): SVDF's, the LSTM's hidden and cell
_STATEFUL_OPS = ("SVDF", "UNIDIRECTIONAL_SEQUENCE_LSTM")
# operators that take a RESOURCE tensor (a resource variable's handle)
_RESOURCE_OPS = ("VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE")


class RuntimeModelError(ValueError):
    """The C runtime refused a model or a call; the message is the runtime's, with the operator,
    tensor and byte offset it names."""

    def __init__(self, message: str, status: int, op: int = -1, tensor: int = -1,
                 offset: int = -1, value: int = 0):
        super().__init__(message)
        self.status, self.op, self.tensor, self.offset, self.value = status, op, tensor, offset, value


class _Error(ctypes.Structure):
    _fields_ = [("msg", ctypes.c_char_p), ("op", ctypes.c_int32), ("tensor", ctypes.c_int32),
                ("offset", ctypes.c_int32), ("value", ctypes.c_int32)]


class _Cursor(ctypes.Structure):
    _fields_ = [("op", ctypes.c_uint16), ("unit", ctypes.c_uint32)]


def _builtin_name(code: int) -> str:
    names = {v: k for k, v in vars(ts.BuiltinOperator).items() if not k.startswith("_")}
    return names.get(code, f"OP_{code}")


def _describe(data: bytes, status: int, msg: str, op: int, tensor: int, offset: int, value: int) -> str:
    """The runtime's error in words: the operator by index and builtin name, the tensor by index,
    name and type (names read from the model when it parses)."""
    try:
        m = ts.read_model(data)
        sg = m.subgraphs[0]
    except ts.TFLiteFormatError:
        m = sg = None
    parts = []
    if op >= 0:
        name = None
        if sg is not None and op < len(sg.operators or []):
            name = ts.op_name(m, sg.operators[op].opcodeIndex)
        elif msg == "operator not supported":
            name = _builtin_name(value)
        parts.append(f"operator {op}" + (f" {name}" if name else ""))
    if tensor >= 0:
        text = f"tensor {tensor}"
        if sg is not None and tensor < len(sg.tensors or []):
            t = sg.tensors[tensor]
            tname = t.name.decode(errors="replace") if isinstance(t.name, bytes) else t.name
            text += (f" '{tname}'" if tname else "") + f" of type {ts.tensor_type_name(t.type)}" + \
                (" (a variable)" if t.isVariable else "")
        parts.append(text)
    if offset >= 0:
        parts.append(f"model byte offset {offset}")
    if msg == "operator not supported" and op < 0:
        parts.append(f"code {value} ({_builtin_name(value)})")
    elif value and msg not in ("operator not supported", "tensor type not supported",
                               "tensor has an unsupported type",
                               "variable tensor (operator state) not supported"):
        parts.append(f"value {value}")
    detail = f" ({', '.join(parts)})" if parts else ""
    return f"{_STATUS.get(status, 'error')}: {msg}{detail}"


def supported_operators() -> list[str]:
    """Builtin names of the operators the host build of the C runtime runs, sorted.

    >>> "CONV_2D" in supported_operators()
    True
    """
    lib = _load()
    codes, k = [], 0
    while (c := lib.fm_kernel_code(k)) >= 0:
        codes.append(c)
        k += 1
    return sorted({_builtin_name(c) for c in codes})


def operator_support(model_bytes: bytes) -> list[dict]:
    """Every operator of subgraph 0 with whether the C runtime runs it: ``index``, ``name``,
    ``supported`` (bool) and ``reason`` (why not, else ""). An operator is unsupported when the
    runtime has no kernel for it, when one of its tensors has a type the runtime cannot hold or
    is a variable, or when the runtime refuses the model at that operator.

    >>> from freeml_keras.runtime import operator_support
    >>> [r["name"] for r in operator_support(open("model.tflite", "rb").read())]  # doctest: +SKIP
    ['CONV_2D', 'MAX_POOL_2D', 'RESHAPE', 'FULLY_CONNECTED', 'SOFTMAX']
    """
    data = bytes(model_bytes)
    m = ts.read_model(data)
    sg = m.subgraphs[0]
    have = set(supported_operators())
    rows = []
    for i, op in enumerate(sg.operators or []):
        name = ts.op_name(m, op.opcodeIndex)
        reason = "" if name in have else "no kernel in this runtime"
        for t in [int(x) for x in list(op.inputs if op.inputs is not None else []) +
                  list(op.outputs if op.outputs is not None else []) if int(x) >= 0]:
            if reason or t >= len(sg.tensors):
                break
            tt = sg.tensors[t]
            resource = tt.type == ts.TensorType.RESOURCE and name in _RESOURCE_OPS
            if tt.type not in _TYPES and not resource:
                reason = f"tensor {t} has type {ts.tensor_type_name(tt.type)}"
            elif tt.isVariable and name not in _STATEFUL_OPS:
                reason = f"tensor {t} is a variable (operator state)"
        rows.append({"index": i, "name": name, "supported": not reason, "reason": reason})
    try:
        Interpreter(data)
    except RuntimeModelError as e:
        if 0 <= e.op < len(rows) and rows[e.op]["supported"]:
            rows[e.op].update(supported=False, reason=str(e))
    return rows


def _load():
    global _lib
    if _lib is not None:
        return _lib
    lib = ctypes.CDLL(str(build_library()))
    P, u8p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8)
    sig = {
        "fm_sizeof_interp": (ctypes.c_uint32, []),
        "fm_init": (ctypes.c_int, [P, P, ctypes.c_uint32, P, ctypes.c_uint32, P, ctypes.c_uint32]),
        "fm_invoke": (ctypes.c_int, [P]),
        "fm_step": (ctypes.c_int, [P, ctypes.POINTER(_Cursor), ctypes.c_uint32, u8p]),
        "fm_last_error": (ctypes.POINTER(_Error), [P]),
        "fm_state_needed": (ctypes.c_uint32, [P]),
        "fm_arena_needed": (ctypes.c_uint32, [P]),
        "fm_num_inputs": (ctypes.c_uint8, [P]),
        "fm_num_outputs": (ctypes.c_uint8, [P]),
        "fm_input": (ctypes.c_int16, [P, ctypes.c_uint8]),
        "fm_output": (ctypes.c_int16, [P, ctypes.c_uint8]),
        "fm_num_ops": (ctypes.c_uint16, [P]),
        "fm_op_code": (ctypes.c_int32, [P, ctypes.c_uint16]),
        "fm_kernel_code": (ctypes.c_int32, [ctypes.c_uint16]),
        "fm_op_units": (ctypes.c_uint32, [P, ctypes.c_uint16]),
        "fm_tensor_data": (P, [P, ctypes.c_int16]),
        "fm_tensor_bytes": (ctypes.c_uint32, [P, ctypes.c_int16]),
        "fm_tensor_type": (ctypes.c_int32, [P, ctypes.c_int16]),
        "fm_tensor_dims": (ctypes.c_int32, [P, ctypes.c_int16, ctypes.POINTER(ctypes.c_int32)]),
        "fm_tensor_scale": (ctypes.c_float, [P, ctypes.c_int16]),
        "fm_tensor_zero_point": (ctypes.c_int32, [P, ctypes.c_int16]),
    }
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    _lib = lib
    return lib


def _aligned(n: int, align: int = 16) -> tuple[ctypes.Array, int]:
    """A zeroed buffer of at least n bytes and the address of its first aligned byte."""
    buf = (ctypes.c_uint8 * (n + align))()
    addr = ctypes.addressof(buf)
    return buf, addr + (-addr) % align


class Interpreter:
    """One model loaded into the C runtime, with its own state block and arena."""

    def __init__(self, model_bytes: bytes):
        self._lib = lib = _load()
        self._data = data = bytes(model_bytes)
        self._model_buf, self._model = _aligned(len(data))
        ctypes.memmove(self._model, data, len(data))
        self._it = ctypes.create_string_buffer(lib.fm_sizeof_interp())
        n = len(data)
        # The state size is known from the model's counts, the arena size after planning.
        st = lib.fm_init(self._it, self._model, n, None, 0, None, 0)
        if st not in (0, 4):
            self._raise(st)
        self.state_bytes = int(lib.fm_state_needed(self._it))
        self._state_buf, self._state = _aligned(max(self.state_bytes, 1))
        st = lib.fm_init(self._it, self._model, n, self._state, self.state_bytes, None, 0)
        if st not in (0, 4) or (st == 4 and lib.fm_state_needed(self._it) > self.state_bytes):
            self._raise(st)
        self.arena_bytes = int(lib.fm_arena_needed(self._it))
        self._arena_buf, self._arena = _aligned(max(self.arena_bytes, 1))
        st = lib.fm_init(self._it, self._model, n, self._state, self.state_bytes, self._arena,
                         self.arena_bytes)
        if st != 0:
            self._raise(st)
        self.inputs = [self._tensor_info(lib.fm_input(self._it, i))
                       for i in range(lib.fm_num_inputs(self._it))]
        self.outputs = [self._tensor_info(lib.fm_output(self._it, i))
                        for i in range(lib.fm_num_outputs(self._it))]

    @property
    def total_bytes(self) -> int:
        """RAM the runtime needs besides the model: arena plus state block."""
        return self.arena_bytes + self.state_bytes

    @property
    def op_codes(self) -> list[str]:
        """Operator names in execution order."""
        n = self._lib.fm_num_ops(self._it)
        return [_builtin_name(self._lib.fm_op_code(self._it, i)) for i in range(n)]

    def op_units(self) -> list[int]:
        """Resumable units (rows, output values, elements) of each operator."""
        return [int(self._lib.fm_op_units(self._it, i)) for i in range(self._lib.fm_num_ops(self._it))]

    def _tensor_info(self, t: int) -> dict:
        dims = (ctypes.c_int32 * 8)()
        nd = self._lib.fm_tensor_dims(self._it, t, dims)
        return {"index": int(t), "shape": tuple(int(dims[i]) for i in range(nd)),
                "dtype": _TYPES[self._lib.fm_tensor_type(self._it, t)],
                "scale": float(self._lib.fm_tensor_scale(self._it, t)),
                "zero_point": int(self._lib.fm_tensor_zero_point(self._it, t))}

    def _raise(self, status: int):
        e = self._lib.fm_last_error(self._it).contents
        msg = e.msg.decode() if e.msg else _STATUS.get(status, f"status {status}")
        raise RuntimeModelError(_describe(self._data, status, msg, e.op, e.tensor, e.offset, e.value),
                                status, e.op, e.tensor, e.offset, e.value)

    def _set_inputs(self, xs: Sequence[np.ndarray]) -> None:
        if len(xs) != len(self.inputs):
            raise ValueError(f"the model has {len(self.inputs)} inputs, got {len(xs)}")
        for x, info in zip(xs, self.inputs):
            a = np.ascontiguousarray(x, dtype=info["dtype"])
            if a.size != int(np.prod(info["shape"])):
                raise ValueError(f"input of shape {a.shape} does not fit the model's input "
                                 f"{info['shape']}")
            ctypes.memmove(self._lib.fm_tensor_data(self._it, info["index"]), a.ctypes.data, a.nbytes)

    def _get_outputs(self) -> list[np.ndarray]:
        out = []
        for info in self.outputs:
            n = self._lib.fm_tensor_bytes(self._it, info["index"])
            raw = ctypes.string_at(self._lib.fm_tensor_data(self._it, info["index"]), n)
            out.append(np.frombuffer(raw, dtype=info["dtype"]).reshape(info["shape"]).copy())
        return out

    def invoke(self, *xs: np.ndarray) -> list[np.ndarray]:
        """Run one inference on int8 input(s) of the model's input shape; the output arrays."""
        self._set_inputs(xs)
        st = self._lib.fm_invoke(self._it)
        if st:
            self._raise(st)
        return self._get_outputs()

    def invoke_in_steps(self, *xs: np.ndarray, max_units: int = 1) -> tuple[list[np.ndarray], int]:
        """Like ``invoke`` but through the resumable-step interface, at most ``max_units`` units
        per step; also returns the number of steps taken."""
        self._set_inputs(xs)
        cur, done, steps = _Cursor(0, 0), ctypes.c_uint8(0), 0
        while not done.value:
            st = self._lib.fm_step(self._it, ctypes.byref(cur), max_units, ctypes.byref(done))
            if st:
                self._raise(st)
            steps += 1
        return self._get_outputs(), steps
