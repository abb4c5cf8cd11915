"""Operators' requantization parameters computed by the converter: the ``freeml_prepare``
metadata entry.

The C runtime prepares each operator from float scales (per-channel multipliers and shifts,
activation ranges, softmax's input multiplier): double arithmetic, software on the MSP430 and
millions of cycles at every power-on. This entry holds those integers, computed here with the
C runtime's arithmetic bit for bit (``tflm_port/src/math.c`` ``fm_quantize_multiplier``,
``fm_round_d``; ``kernel_util.c`` ``fm_activation_range``, ``fm_conv_multipliers``; the
prepare functions of ``kernels/*.c``). The host runtime computes them too and refuses a model
whose words differ.

Blob (all little-endian):

======  =====  ==============================================================================
offset  type   field
======  =====  ==============================================================================
0       4 B    magic ``FMLP``
4       u16    version (2; 1 had no SOFTMAX exp table, and the runtime ignores it)
6       u16    S: number of subgraph records
8       u32    model id: FNV-1a 32-bit of the whole flatbuffer file with these 4 bytes zero
12      u32    R: bytes of the entry that a prepared device keeps (read after preparation):
               the header, the subgraph records and the words read in place, which come
               right after the records (0 in older files: all of it)
16      8 B    S subgraph records: u16 subgraph index, u16 N operators, u32 offset of its
               operator table
======  =====  ==============================================================================

Operator table: N records of 8 B, u32 offset of the operator's words, u32 number of int32 words
(0: none, and offset 0). Words are int32 at 4-byte aligned offsets. Every subgraph has a record.

Words per operator (``in`` = inputs[0], ``filter`` = inputs[1], ``out`` = outputs[0]):

- CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV: act_min, act_max, then
  multiplier, shift of each output channel;
- AVERAGE_POOL_2D, MAX_POOL_2D: act_min, act_max;
- ADD, SUB: act_min, act_max, in1 multiplier, in1 shift, in2 multiplier, in2 shift, out
  multiplier, out shift (SUB's in float arithmetic, as TFLite Micro computes them);
- MUL: act_min, act_max, multiplier, shift;
- LOGISTIC, TANH: input multiplier, input left shift, input range radius;
- SOFTMAX: input multiplier, input left shift, diff_min, n_exp | n_small << 16, then the exp
  table of :func:`softmax_table` (n_exp u16, n_exp u16, n_small u8, zero-padded to whole words;
  the device reads it in place);
- MEAN: multiplier, shift (before the runtime's adjustment for the element count);
- QUANTIZE of an int8, uint8 or int16 input: multiplier, shift;
- RELU: multiplier, shift (input scale / output scale);
- RESIZE_NEAREST_NEIGHBOR: the source row of each output row, then the source column of each
  output column;
- SVDF: the two (multiplier, shift) pairs of :func:`_svdf_words`;
- UNIDIRECTIONAL_SEQUENCE_LSTM: the 11 (multiplier, shift) pairs, the cell scale's log2 and the
  quantized cell clip of :func:`_lstm_words`;
- every other operator: none.

The model id is kept right by :func:`freeml_keras.format.tflite.write_model`, the one place that
serializes, whenever a model with this entry is written.

Example::

    from freeml_keras.format.prepared import with_prepared, read_prepared
    b = with_prepared(open("model.tflite", "rb").read())
    p = read_prepared(b)
    print(p.model_id == model_id(b), p.subgraphs[0][0])
"""

from __future__ import annotations

import copy
import math
import struct
from dataclasses import dataclass, field

import numpy as np

from freeml_keras.format import tflite as ts
from freeml_keras.format.model import ModelLike, TFLiteModel, as_model

__all__ = ["PREPARED_NAME", "PREPARED_VERSION", "PrepareError", "PreparedParams", "prepared_blob",
           "with_prepared", "read_prepared", "model_id", "has_current_prepared", "ensure_prepared",
           "operator_words", "quantize_multiplier", "round_f", "activation_range",
           "exp_on_negative_values_q5", "softmax_table"]

PREPARED_NAME = ts.PREPARED_NAME
PREPARED_VERSION = 2
MAGIC = ts.PREPARED_MAGIC
_HEADER = struct.Struct("<4sHHII")
_SG = struct.Struct("<HHI")
_OP = struct.Struct("<II")
INT32_MIN, INT32_MAX = -2**31, 2**31 - 1


class PrepareError(ValueError):
    """A model whose operators' parameters cannot be precomputed (the C runtime would refuse
    it too), or a ``freeml_prepare`` entry that cannot be decoded; the message says where."""


@dataclass
class PreparedParams:
    """A decoded ``freeml_prepare`` entry: ``subgraphs[i][k]`` the words of operator ``k`` of
    subgraph ``i``."""
    version: int
    model_id: int
    subgraphs: dict[int, list[list[int]]] = field(default_factory=dict)

    def words(self, subgraph: int, op: int) -> list[int]:
        return self.subgraphs[subgraph][op]


# ---- the C runtime's arithmetic ------------------------------------------------------------

def round_f(v: float) -> int:
    """``fm_round_d``: to the nearest integer, ties away from zero, saturated to int32; NaN
    gives 0."""
    v = float(v)
    if v != v:
        return 0
    a = abs(v)
    if a >= 2147483647.0:
        return INT32_MIN if v < 0 else INT32_MAX
    r = int(a)                      # truncation; a - r is exact
    if a - r >= 0.5:
        r += 1
    return -r if v < 0 else r


def quantize_multiplier(m: float) -> tuple[bool, int, int]:
    """``fm_quantize_multiplier``: (ok, q, shift) with m = q * 2^(shift - 31), q in
    [2^30, 2^31) (or 0); not ok for NaN, negative or above 1e30."""
    m = float(m)
    if m != m or m < 0 or m > 1e30:
        return False, 0, 0
    if m == 0.0:
        return True, 0, 0
    frac, e = math.frexp(m)         # exact, as the C's halving / doubling: frac in [0.5, 1)
    scaled = frac * 2147483648.0    # exact, in [2^30, 2^31)
    fixed = int(scaled)
    if scaled - fixed >= 0.5:
        fixed += 1
    if fixed == 2**31:
        fixed //= 2
        e += 1
    if e < -31:
        e, fixed = 0, 0
    return True, fixed, e


def _f64(x) -> np.float64:
    return np.float64(x)


def _ddiv(a, b) -> float:
    """a / b in IEEE double (inf or NaN for a zero divisor, as in C)."""
    with np.errstate(all="ignore"):
        return float(np.float64(a) / np.float64(b))


def _dmul(a, b) -> float:
    with np.errstate(all="ignore"):
        return float(np.float64(a) * np.float64(b))


# ---- tensors as the C runtime reads them ----------------------------------------------------

def _scales(t) -> list[np.float32]:
    q = t.quantization
    if q is None or q.scale is None:
        return []
    return [np.float32(s) for s in np.asarray(q.scale, dtype=np.float32).ravel()]


def _scale(t) -> np.float32:
    """scale[0] as float32, 0 without quantization (``fm_tensor.scale``)."""
    s = _scales(t)
    return s[0] if s else np.float32(0.0)


def _zero_point(t) -> int:
    q = t.quantization
    if q is None or q.zeroPoint is None or len(q.zeroPoint) == 0:
        return 0
    return int(np.asarray(q.zeroPoint).ravel()[0])


def activation_range(act: int, out_scale: np.float32, out_zp: int) -> tuple[int, int] | None:
    """``fm_activation_range``: (act_min, act_max) of an int8 output for TFLite's fused
    activation ``act`` (0 NONE, 1 RELU, 2 RELU_N1_TO_1, 3 RELU6), or None where the runtime
    refuses (another activation, an output scale that is not positive)."""
    out_scale = np.float32(out_scale)
    if not out_scale > 0 or act < 0 or act > 3:
        return None
    lower, upper = (0, 0, -1, 0), (0, 0, 1, 6)
    lo, hi = -128, 127
    with np.errstate(all="ignore"):
        # zero_point + round: int32 with wrap-around, as the C compiles it (a bound saturated
        # at INT32_MIN / INT32_MAX by a tiny scale plus a zero point of the other sign wraps)
        if act >= 1:
            lo = max(lo, _wrap32(out_zp + round_f(np.float32(lower[act]) / out_scale)))
        if act >= 2:
            hi = min(hi, _wrap32(out_zp + round_f(np.float32(upper[act]) / out_scale)))
    return lo, hi


def _wrap32(v: int) -> int:
    return (v + 2**31) % 2**32 - 2**31


# ---- words per operator ---------------------------------------------------------------------

_CONV = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
_POOL = ("AVERAGE_POOL_2D", "MAX_POOL_2D")
# operators whose output the C runtime makes an alias of their input (fm_root follows them)
_ALIAS = ("RESHAPE", "EXPAND_DIMS", "SQUEEZE", "DENSIFY")


class _Op:
    """One operator in context, for the words and the error messages."""

    def __init__(self, model, sg, sg_index, op_index, producers):
        self.model, self.sg, self.sgi, self.index = model, sg, sg_index, op_index
        self.op = sg.operators[op_index]
        self.name = ts.op_name(model, self.op.opcodeIndex)
        self.producers = producers

    def tensor_index(self, role: str, k: int = 0) -> int:
        ids = self.op.inputs if role == "in" else self.op.outputs
        if ids is None or len(ids) <= k or int(ids[k]) < 0 or int(ids[k]) >= len(self.sg.tensors):
            raise self.error(f"has no {'input' if role == 'in' else 'output'} {k}")
        return int(ids[k])

    def tensor(self, role: str, k: int = 0):
        return self.sg.tensors[self.tensor_index(role, k)]

    def describe(self, t: int) -> str:
        name = self.sg.tensors[t].name
        name = name.decode(errors="replace") if isinstance(name, bytes) else name
        return f"tensor {t}" + (f" ({name!r})" if name else "")

    def error(self, what: str, tensor: int | None = None) -> PrepareError:
        where = f"subgraph {self.sgi} operator {self.index} ({self.name})"
        return PrepareError(f"{where}{': ' + self.describe(tensor) if tensor is not None else ''} "
                            f"{what}: its parameters cannot be precomputed (the runtime refuses it)")

    def options(self):
        return self.op.builtinOptions

    def activation(self) -> int:
        o = self.options()
        return int(getattr(o, "fusedActivationFunction", 0) or 0) if o is not None else 0

    def act_range(self) -> list[int]:
        out = self.tensor_index("out")
        r = activation_range(self.activation(), _scale(self.sg.tensors[out]),
                             _zero_point(self.sg.tensors[out]))
        if r is None:
            raise self.error(f"has fused activation {self.activation()} and output scale "
                             f"{float(_scale(self.sg.tensors[out]))!r} (activation 0..3 and a "
                             f"positive scale needed)", out)
        return list(r)

    def root(self, t: int) -> int:
        """The tensor the runtime reads for ``t`` (``fm_root``): through the RESHAPE,
        EXPAND_DIMS, SQUEEZE and DENSIFY operators before this one that produce it."""
        seen = set()
        while t not in seen:
            seen.add(t)
            p = self.producers.get(t)
            if p is None or p >= self.index:
                break
            src = self.sg.operators[p]
            # fm_alias(out = outputs[0], inputs[0])
            if ts.op_name(self.model, src.opcodeIndex) not in _ALIAS or src.inputs is None \
                    or not len(src.inputs) or int(src.inputs[0]) < 0 or int(src.outputs[0]) != t:
                break
            t = int(src.inputs[0])
        return t


def _multiplier(op: _Op, m: float, what: str, tensor: int | None, check) -> tuple[int, int]:
    ok, q, shift = quantize_multiplier(m)
    if not ok or not check(m, shift):
        raise op.error(f"{what}: multiplier {m!r} (shift {shift}) out of range", tensor)
    return q, shift


def _conv_words(op: _Op) -> list[int]:
    words = op.act_range()
    # (TRANSPOSE_CONV's inputs: output shape, weights, input, bias)
    in_t, out_t = op.tensor("in", 2 if op.name == "TRANSPOSE_CONV" else 0), op.tensor("out")
    f_i = op.tensor_index("in", 1)
    f = op.sg.tensors[f_i]
    dims = list(f.shape) if f.shape is not None else []
    dim = 3 if op.name == "DEPTHWISE_CONV_2D" else 0
    if len(dims) <= dim:
        raise op.error(f"weights of shape {dims}", f_i)
    channels = int(dims[dim])
    fq_i = f_i if _scales(f) else op.root(f_i)        # f->num_scales ? f : fm_root(f)
    fq = op.sg.tensors[fq_i]
    scales = _scales(fq)
    if len(scales) > 1 and len(scales) != channels:
        raise op.error(f"has {len(scales)} per-channel scales for {channels} channels", fq_i)
    s_in, s_out = _scale(in_t), _scale(out_t)
    in_range = lambda m, shift: -31 <= shift <= 30  # noqa: E731
    pairs = []
    for c in range(channels):            # fm_conv_multipliers
        cs = scales[c] if len(scales) > 1 else _scale(fq)
        m = _ddiv(_dmul(float(s_in), float(cs)), float(s_out))
        pairs.append(_multiplier(op, m, f"channel {c}", fq_i, in_range))
    if op.name == "FULLY_CONNECTED" and len(scales) <= 1:
        # per-tensor: TFLite multiplies the two float scales in float first
        with np.errstate(all="ignore"):
            prod = np.float32(s_in) * np.float32(_scale(fq))
        m = _ddiv(float(prod), float(s_out))
        pairs = [_multiplier(op, m, "per-tensor", fq_i, in_range)] * channels
    for q, shift in pairs:
        words += [q, shift]
    return words


def _add_words(op: _Op) -> list[int]:
    words = op.act_range()
    a, b = _scale(op.tensor("in", 0)), _scale(op.tensor("in", 1))
    out_s = _scale(op.tensor("out"))
    twice = 2.0 * float(a if a > b else b)
    below_one = lambda m, shift: m > 0 and m < 1.0 and shift <= 0  # noqa: E731
    for what, m, t in (("input 1", _ddiv(float(a), twice), op.tensor_index("in", 0)),
                       ("input 2", _ddiv(float(b), twice), op.tensor_index("in", 1)),
                       ("output", _ddiv(twice, float(1 << 20) * float(out_s)), op.tensor_index("out"))):
        words += list(_multiplier(op, m, what, t, below_one))
    return words


def _sub_words(op: _Op) -> list[int]:
    """TFLite Micro's SUB: the three rescalings divided in float32, then widened."""
    words = op.act_range()
    a, b = _scale(op.tensor("in", 0)), _scale(op.tensor("in", 1))
    out_s = _scale(op.tensor("out"))
    below_one = lambda m, shift: m > 0 and m < 1.0 and shift <= 0  # noqa: E731
    with np.errstate(all="ignore"):
        twice = np.float32(2.0) * (a if a > b else b)
        ms = (("input 1", float(a / twice), op.tensor_index("in", 0)),
              ("input 2", float(b / twice), op.tensor_index("in", 1)),
              ("output", float(twice / (np.float32(1 << 20) * out_s)), op.tensor_index("out")))
    for what, m, t in ms:
        words += list(_multiplier(op, m, what, t, below_one))
    return words


def _mul_words(op: _Op) -> list[int]:
    words = op.act_range()
    a, b = _scale(op.tensor("in", 0)), _scale(op.tensor("in", 1))
    m = _ddiv(_dmul(float(a), float(b)), float(_scale(op.tensor("out"))))
    in_range = lambda m, shift: -31 <= shift <= 30  # noqa: E731
    return words + list(_multiplier(op, m, "input scales / output scale", op.tensor_index("out"), in_range))


def _logistic_words(op: _Op) -> list[int]:
    """TFLite Micro's LOGISTIC and TANH: the input scale times 2^27 as multiplier and left shift (frexp),
    and the radius floor(15 * 2^27 / 2^shift) beyond which the output saturates."""
    in_i = op.tensor_index("in")
    s_in = _scale(op.sg.tensors[in_i])
    ok, q, shift = quantize_multiplier(_dmul(float(s_in), float(1 << 27)))
    if not s_in > 0 or not ok or not 0 <= shift <= 31:
        raise op.error(f"input scale {float(s_in)!r} (shift {shift}) out of range", in_i)
    radius = math.floor(15.0 * float(1 << 27) / float(1 << shift))
    if radius >= 2**31 - 1:
        raise op.error(f"input scale {float(s_in)!r} gives an input radius {radius} out of range", in_i)
    return [q, shift, radius]


# ---- SOFTMAX's exp table: gemmlowp's fixed-point exp as tflm_port/src/math.c computes it ----

def _wrap32(v: int) -> int:
    return (v + 2**31) % 2**32 - 2**31


def _srdhm(a: int, b: int) -> int:
    """``fm_srdhm``: round(a * b / 2^31), TFLite's nudge, truncated toward zero."""
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    v = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    q = abs(v) >> 31
    return q if v >= 0 else -q


def _rdbpot(x: int, e: int) -> int:
    """``fm_rdbpot``: x / 2^e rounded half away from zero."""
    mask = (1 << e) - 1
    return (x >> e) + (1 if (x & mask) > (mask >> 1) + (1 if x < 0 else 0) else 0)


def _sat_shift_left(x: int, e: int) -> int:
    t = (1 << (31 - e)) - 1
    return INT32_MAX if x > t else INT32_MIN if x < -t else _wrap32(x << e)


_EXP_MULTS = (1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242)


def exp_on_negative_values_q5(a: int) -> int:
    """``fm_exp_on_negative_values_q5``: exp(a) for a <= 0 in Q5.26, in Q0.31.

    >>> exp_on_negative_values_q5(0), exp_on_negative_values_q5(-(1 << 26))  # exp(-1) * 2^31
    (2147483647, 790015308)
    """
    mod = (a & ((1 << 24) - 1)) - (1 << 24)
    x = _sat_shift_left(mod, 5) + (1 << 28)
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    poly = _rdbpot(_wrap32(_srdhm(_wrap32(_rdbpot(x4, 2) + x3), 715827883) + x2), 1)
    result = _wrap32(1895147668 + _srdhm(1895147668, _wrap32(x + poly)))
    rem = mod - a
    for k, m in enumerate(_EXP_MULTS):
        if rem & (1 << (24 + k)):
            result = _srdhm(result, m)
    return INT32_MAX if a == 0 else result


def softmax_table(mult: int, left_shift: int, diff_min: int) -> tuple[int, int, bytes]:
    """SOFTMAX's exp table (``kernels/softmax.c``): (n_exp, n_small, bytes) for the int8
    differences k = max - x from 0 up to -diff_min (and 255): the Q0.31 exp's high and low 16-bit
    halves for the n_exp differences whose Q12.19 term exceeds 255, then n_small bytes: that term
    less 16 * the high half (0 .. 16) for k < n_exp, the term itself after. It ends at the last
    non-zero term; the scan stops at the first exp under 2^10 (the exact exp falls by more per
    step there than the fixed-point one is off by).

    >>> n_exp, n_small, table = softmax_table(1717986918, 23, -248)  # beta * scale = 0.1
    >>> n_exp, n_small, len(table)
    (77, 139, 447)
    """
    terms, exps = [], []
    for k in range(min(255, -diff_min) + 1):
        e = exp_on_negative_values_q5(_srdhm(_wrap32((-k) << left_shift), mult))
        if e < 1024:
            break
        exps.append(e)
        terms.append(_rdbpot(e, 12))
    n_small = max((k + 1 for k, t in enumerate(terms) if t > 0), default=0)
    n_exp = max((k + 1 for k, t in enumerate(terms) if t > 255), default=0)
    hi = [e >> 16 for e in exps[:n_exp]]
    lo = [e & 0xFFFF for e in exps[:n_exp]]
    small = [terms[k] - 16 * hi[k] if k < n_exp else terms[k] for k in range(n_small)]
    return n_exp, n_small, struct.pack(f"<{n_exp}H{n_exp}H{n_small}B", *hi, *lo, *small)


def _softmax_words(op: _Op) -> list[int]:
    o = op.options()
    beta = np.float32(getattr(o, "beta", 0.0) if o is not None else 0.0)
    in_i = op.tensor_index("in")
    real = _dmul(_dmul(float(beta), float(_scale(op.sg.tensors[in_i]))), float(1 << 26))
    if real > 2147483647.0:
        real = 2147483647.0
    ok, q, shift = quantize_multiplier(real)
    if not real > 1.0 or not ok or not 0 <= shift <= 31:
        raise op.error(f"beta {float(beta)!r} times the input scale gives {real!r} (shift {shift}): "
                       f"out of range", in_i)
    radius = 31.0 * float(1 << 26)
    for _ in range(shift):
        radius *= 0.5
    n_exp, n_small, table = softmax_table(q, shift, -int(radius))
    table += bytes(-len(table) % 4)
    return [q, shift, -int(radius), n_exp | n_small << 16] + [
        int(v) for v in np.frombuffer(table, "<i4")]


def _requant_words(op: _Op, max_shift: int | None) -> list[int]:
    in_i, out_i = op.tensor_index("in"), op.tensor_index("out")
    s_in, s_out = _scale(op.sg.tensors[in_i]), _scale(op.sg.tensors[out_i])
    if op.name == "MEAN" and not s_in > 0:
        raise op.error(f"input scale {float(s_in)!r} is not positive", in_i)
    if not s_out > 0:
        raise op.error(f"output scale {float(s_out)!r} is not positive", out_i)
    m = _ddiv(float(s_in), float(s_out))
    ok = lambda m, shift: max_shift is None or shift <= max_shift  # noqa: E731
    return list(_multiplier(op, m, "input scale / output scale", in_i, ok))


def _relu_words(op: _Op) -> list[int]:
    """RELU: input scale / output scale, divided in float32 as TFLite Micro does."""
    in_i, out_i = op.tensor_index("in"), op.tensor_index("out")
    s_out = np.float32(_scale(op.sg.tensors[out_i]))
    if not s_out > 0:
        raise op.error(f"output scale {float(s_out)!r} is not positive", out_i)
    with np.errstate(all="ignore"):
        m = float(np.float32(_scale(op.sg.tensors[in_i])) / s_out)
    return list(_multiplier(op, m, "input scale / output scale", in_i, lambda m, shift: -31 <= shift <= 30))


def _resize_words(op: _Op) -> list[int]:
    """RESIZE_NEAREST_NEIGHBOR: the source row of each output row, then the source column of
    each output column, as TFLite Micro's GetNearestNeighbor computes them in float32."""
    o = op.options()
    align = bool(getattr(o, "alignCorners", False)) if o is not None else False
    half = bool(getattr(o, "halfPixelCenters", False)) if o is not None else False
    src, out = op.tensor("in"), op.tensor("out")
    if src.shape is None or out.shape is None or len(src.shape) != 4 or len(out.shape) != 4:
        raise op.error("input and output must be 4-D")
    words = []
    with np.errstate(all="ignore"):
        for d in (1, 2):
            n_in, n_out = int(src.shape[d]), int(out.shape[d])
            scale = (np.float32(n_in - 1) / np.float32(n_out - 1) if align and n_out > 1
                     else np.float32(n_in) / np.float32(n_out))
            for i in range(n_out):
                v = (np.float32(i) + np.float32(0.5 if half else 0.0)) * scale
                r = round_f(float(v)) if align else int(math.floor(float(v)))
                r = min(r, n_in - 1)
                words.append(max(r, 0) if half else r)
    return words


def _svdf_words(op: _Op) -> list[int]:
    """SVDF: the feature rescaling (input * feature weights / state) and the output rescaling
    (state * time weights / output), each a float32 product and quotient as TFLite Micro
    computes it."""
    s = [np.float32(_scale(op.tensor("in", k))) for k in (0, 1, 2, 4)]   # input, feature, time, state
    s_out = np.float32(_scale(op.tensor("out")))
    words = []
    with np.errstate(all="ignore"):
        for what, m in (("input * feature weights / state", s[0] * s[1] / s[3]),
                        ("state * time weights / output", s[3] * s[2] / s_out)):
            words += _multiplier(op, float(np.float32(m)), what, None, lambda m, shift: -31 <= shift <= 30)
    return words


def _lstm_words(op: _Op) -> list[int]:
    """UNIDIRECTIONAL_SEQUENCE_LSTM (kernels/lstm.c), in TFLite Micro's order: per gate (forget,
    input, cell, output) the input and the recurrent product to Q3.12 (each scale product in
    float32); forget x cell, input x cell gate and output x tanh(cell) (products and quotients
    in double); the cell scale's rounded log2; the quantized cell clip (-1: none)."""
    s_in = np.float32(_scale(op.tensor("in", 0)))
    s_h, s_c = np.float32(_scale(op.tensor("in", 18))), np.float32(_scale(op.tensor("in", 19)))
    q12, q15 = 1.0 / 4096.0, 1.0 / 32768.0
    in_range = lambda m, shift: -31 <= shift <= 30  # noqa: E731
    words = []
    with np.errstate(all="ignore"):
        for g in (1, 0, 2, 3):
            for src, k in ((s_in, 1 + g), (s_h, 5 + g)):
                w_i = op.tensor_index("in", k)
                m = _ddiv(float(np.float32(src * np.float32(_scale(op.sg.tensors[w_i])))), q12)
                words += _multiplier(op, m, "input scale * weights scale / 2^-12", w_i, in_range)
        for a, b, c, what in ((q15, s_c, s_c, "2^-15 * cell / cell"), (q15, q15, s_c, "2^-30 / cell"),
                              (q15, q15, s_h, "2^-30 / hidden state")):
            words += _multiplier(op, _ddiv(_dmul(a, float(b)), float(c)), what, None, in_range)
    c = float(s_c)
    if not (0 < c < 1e30):
        raise op.error(f"cell state scale {c!r} is not positive", op.tensor_index("in", 19))
    frac, e = math.frexp(c)
    words.append(e - 1 if frac * frac < 0.5 else e)
    clip = float(np.float32(getattr(op.options(), "cellClip", 0.0) or 0.0))
    words.append(int(max(-32768.0, min(32767.0, clip / c))) if clip > 0 else -1)
    return words


def _words(op: _Op) -> list[int]:
    if op.name in _CONV:
        return _conv_words(op)
    if op.name in _POOL:
        return op.act_range()
    if op.name == "ADD":
        return _add_words(op)
    if op.name == "SUB":
        return _sub_words(op)
    if op.name == "MUL":
        return _mul_words(op)
    if op.name in ("LOGISTIC", "TANH"):
        return _logistic_words(op)
    if op.name == "SOFTMAX":
        return _softmax_words(op)
    if op.name == "MEAN":
        return _requant_words(op, None)
    if op.name == "SVDF":
        return _svdf_words(op)
    if op.name == "RELU":
        return _relu_words(op)
    if op.name == "RESIZE_NEAREST_NEIGHBOR":
        return _resize_words(op)
    if op.name == "UNIDIRECTIONAL_SEQUENCE_LSTM":
        return _lstm_words(op)
    integer = (ts.TensorType.INT8, ts.TensorType.UINT8, ts.TensorType.INT16)
    if op.name == "QUANTIZE" and op.tensor("in").type in integer and op.tensor("out").type in integer \
            and not op.tensor("in").type == op.tensor("out").type == ts.TensorType.UINT8:
        return _requant_words(op, 30)
    return []


def operator_words(model: ModelLike) -> list[list[list[int]]]:
    """The words of every operator of every subgraph: ``[subgraph][operator] -> [int, ...]``.
    Raises :class:`PrepareError` naming the operator and tensor where the runtime would refuse
    the scales."""
    m = as_model(model).parsed
    out = []
    for si, sg in enumerate(m.subgraphs):
        ops = sg.operators or []
        producers = {}
        for k, o in enumerate(ops):
            for t in (o.outputs if o.outputs is not None else []):
                producers.setdefault(int(t), k)
        out.append([_words(_Op(m, sg, si, k, producers)) for k in range(len(ops))])
    return out


# ---- the blob -------------------------------------------------------------------------------

def _encode(per_sg: list[list[list[int]]], mid: int = 0, in_place: set[tuple[int, int]] = frozenset()) -> bytes:
    """The entry's bytes: header, subgraph records, the words of the operators in ``in_place``
    ((subgraph, operator): read by the device after preparation), then the operator tables and
    the other words. Bytes 12..16 of the header give the length of that first part: what a
    prepared device keeps of the entry (:func:`freeml_keras.format.tflite.data_prefix`)."""
    if len(per_sg) > 0xFFFF:
        raise PrepareError(f"{len(per_sg)} subgraphs: the entry holds at most 65535")
    order = sorted(((si, k) for si, ops in enumerate(per_sg) for k in range(len(ops))),
                   key=lambda sk: sk not in in_place)        # stable: the in-place words first
    where, at = {}, _HEADER.size + _SG.size * len(per_sg)
    for si, k in order:
        if (si, k) not in in_place and "tables" not in where:
            where["tables"] = at
            at += sum(_OP.size * len(ops) for ops in per_sg)
        where[(si, k)] = at if per_sg[si][k] else 0
        at += 4 * len(per_sg[si][k])
    tables_at = where.get("tables", at)
    resident = tables_at
    sg_recs, tables, words, at_table = [], [], [], tables_at
    for si, ops in enumerate(per_sg):
        if len(ops) > 0xFFFF:
            raise PrepareError(f"subgraph {si} has {len(ops)} operators: the entry holds at most 65535")
        sg_recs.append(_SG.pack(si, len(ops), at_table))
        at_table += _OP.size * len(ops)
        tables += [_OP.pack(where[(si, k)], len(w)) for k, w in enumerate(ops)]
    words = [struct.pack(f"<{len(per_sg[si][k])}i", *per_sg[si][k]) for si, k in order]
    head = _HEADER.pack(MAGIC, PREPARED_VERSION, len(per_sg), mid, resident)
    inplace = b"".join(w for (si, k), w in zip(order, words) if (si, k) in in_place)
    rest = b"".join(w for (si, k), w in zip(order, words) if (si, k) not in in_place)
    return head + b"".join(sg_recs) + inplace + b"".join(tables) + rest


def prepared_blob(model: ModelLike) -> bytes:
    """The ``freeml_prepare`` entry's data for ``model`` (its model id field 0: the id belongs
    to the file the entry ends up in; :func:`with_prepared` writes it). SOFTMAX's words (its
    exp table, read in place) come first."""
    m = as_model(model)
    in_place = {(si, k) for si, sg in enumerate(m.parsed.subgraphs)
                for k, o in enumerate(sg.operators or []) if ts.op_name(m.parsed, o.opcodeIndex) == "SOFTMAX"}
    return _encode(operator_words(m), in_place=in_place)


def _decode(data: bytes) -> PreparedParams:
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise PrepareError(f"freeml_prepare entry is {len(data)} bytes, shorter than its "
                           f"{_HEADER.size}-byte header")
    magic, version, n_sg, mid, _ = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise PrepareError(f"bytes 0..4 of the freeml_prepare entry are {magic!r}, not {MAGIC!r}")
    if version != PREPARED_VERSION:
        raise PrepareError(f"freeml_prepare version {version} at offset 4; this reader knows "
                           f"version {PREPARED_VERSION}")

    def need(at: int, size: int, what: str):
        if at < 0 or at + size > len(data):
            raise PrepareError(f"{what} at offset {at} ({size} B) runs past the end of the "
                               f"{len(data)}-byte freeml_prepare entry")
        if at % 4:
            raise PrepareError(f"{what} at offset {at} is not 4-byte aligned")

    need(_HEADER.size, _SG.size * n_sg, "subgraph records")
    out = PreparedParams(version=version, model_id=mid)
    for i in range(n_sg):
        sgi, n_ops, table = _SG.unpack_from(data, _HEADER.size + i * _SG.size)
        need(table, _OP.size * n_ops, f"operator table of subgraph {sgi}")
        ops = []
        for k in range(n_ops):
            at, n = _OP.unpack_from(data, table + k * _OP.size)
            if n:
                need(at, 4 * n, f"words of subgraph {sgi} operator {k}")
            ops.append(list(struct.unpack_from(f"<{n}i", data, at)) if n else [])
        if sgi in out.subgraphs:
            raise PrepareError(f"subgraph {sgi} has two records")
        out.subgraphs[sgi] = ops
    return out


def _entry_data(parsed) -> bytes | None:
    for md in parsed.metadata or []:
        name = ts.name_str(md.name)
        if name == PREPARED_NAME:
            if not 0 <= md.buffer < len(parsed.buffers) or parsed.buffers[md.buffer].data is None:
                raise PrepareError(f"the freeml_prepare entry points at buffer {md.buffer}, "
                                   f"which holds no data")
            return bytes(np.asarray(parsed.buffers[md.buffer].data, dtype=np.uint8))
    return None


def read_prepared(model: ModelLike) -> PreparedParams | None:
    """The decoded ``freeml_prepare`` entry, or None when the model has none (raises
    :class:`PrepareError` for one that does not decode)."""
    data = _entry_data(as_model(model).parsed)
    return None if data is None else _decode(data)


def model_id(data: ModelLike) -> int:
    """The model id of a flatbuffer: FNV-1a 32-bit of the whole file with the 4 id bytes of its
    ``freeml_prepare`` entry set to 0 (of the file as it is when it has no such entry)."""
    data = bytes(data)
    span = ts.prepared_data_span(data)
    if span is not None and span[1] >= 16:
        at = span[0] + 8
        data = data[:at] + bytes(4) + data[at + 4:]
    return ts.fnv1a32(data)


def with_prepared(model: ModelLike) -> bytes:
    """The flatbuffer with the ``freeml_prepare`` entry computed for it (added, or replacing
    the one it has; other entries and buffer indices are kept) and its model id set. Raises
    :class:`PrepareError` for a model whose scales the runtime would refuse."""
    m = as_model(model)
    blob = prepared_blob(m)
    parsed = copy.copy(m.parsed)              # the parse is shared: edit a shallow copy
    parsed.buffers = list(parsed.buffers or [])
    buf = ts.schema.BufferT()
    buf.data = np.frombuffer(blob, dtype=np.uint8)
    kept, index = [], None
    for md in parsed.metadata or []:
        if (ts.name_str(md.name)) != PREPARED_NAME:
            kept.append(md)
            continue
        if 0 <= md.buffer < len(parsed.buffers) and index is None and _buffer_used_once(parsed, md.buffer):
            index = md.buffer                 # reuse its buffer: the file does not grow
        elif 0 <= md.buffer < len(parsed.buffers) and _buffer_used_once(parsed, md.buffer):
            parsed.buffers[md.buffer] = ts.schema.BufferT()   # a duplicate entry: emptied
    if index is None:
        parsed.buffers.append(buf)
        index = len(parsed.buffers) - 1
    else:
        parsed.buffers[index] = buf
    entry = ts.schema.MetadataT()
    entry.name = PREPARED_NAME
    entry.buffer = index
    parsed.metadata = kept + [entry]
    return ts.write_model(parsed)


def _buffer_used_once(parsed, index: int) -> bool:
    """Whether only the one metadata entry refers to buffer ``index`` (no tensor, no other
    entry): then it can be replaced."""
    if index == 0:
        return False
    for sg in parsed.subgraphs or []:
        for t in sg.tensors or []:
            if int(t.buffer) == index:
                return False
    return sum(1 for md in parsed.metadata or [] if md.buffer == index) == 1


def has_current_prepared(model: ModelLike) -> bool:
    """Whether the model carries a ``freeml_prepare`` entry that is right for it: the words
    computed now and the model id of its bytes."""
    m = as_model(model)
    try:
        data = _entry_data(m.parsed)
        if data is None or len(data) < 16:
            return False
        stored = data[:8] + bytes(4) + data[12:]
        return stored == prepared_blob(m) and int.from_bytes(data[8:12], "little") == model_id(m.data)
    except PrepareError:
        return False


def ensure_prepared(model: ModelLike) -> TFLiteModel:
    """``model`` itself when it carries a current ``freeml_prepare`` entry, else the model with
    one (:func:`with_prepared`)."""
    m = as_model(model)
    return m if has_current_prepared(m) else TFLiteModel(with_prepared(m))
