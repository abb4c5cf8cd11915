"""The operators standard Keras layers convert to, one at a time: single-operator flatbuffers
built here (shapes, broadcasts, quantization and options drawn by hypothesis) give the same
bytes in the C runtime as in TFLite Micro, with the operators' parameters computed by the
runtime and precomputed (``freeml_prepare``); plus a Keras model with a Rescaling input layer
(MUL + ADD) and the sanitized driver over mutated flatbuffers of these operators."""

import numpy as np
import pytest
from hypothesis import strategies as st

from conftest import fixed_and_fresh
from freeml_keras.format import tflite as ts
from freeml_keras.format.prepared import with_prepared
from freeml_keras.runtime import Interpreter, RuntimeModelError


def run_tflm(b: bytes, xs: list[np.ndarray]) -> list[np.ndarray]:
    """TFLite Micro on each example k of the inputs (``x[k]`` has the input's full shape)."""
    from tflite_micro import runtime
    interp = runtime.Interpreter.from_bytes(bytes(b), arena_size=1 << 20)
    outs = []
    for k in range(len(xs[0])):
        for i, x in enumerate(xs):
            interp.set_input(x[k], i)
        interp.invoke()
        outs.append([interp.get_output(j).copy() for j in range(len(ts.read_model(b).subgraphs[0].outputs))])
    return [np.stack(o) for o in zip(*outs)]

T = ts.TensorType
S = ts.schema
_NP = {T.INT8: np.int8, T.UINT8: np.uint8, T.INT16: np.int16, T.INT32: np.int32, T.FLOAT32: np.float32}


tensor = ts.tensor_spec
op_model = ts.op_model


def assert_same_as_tflm(b: bytes, seed: int, n: int = 3) -> list[np.ndarray]:
    """Random inputs of the model's input types: the C runtime's outputs (parameters computed,
    and precomputed) equal TFLite Micro's, bit for bit."""
    rng = np.random.default_rng(seed)
    sg = ts.read_model(b).subgraphs[0]
    xs = []
    for i in sg.inputs:
        t = sg.tensors[int(i)]
        info = np.iinfo(_NP[t.type])
        xs.append(rng.integers(info.min, info.max + 1, [n] + list(t.shape)).astype(_NP[t.type]))
    micro = run_tflm(b, xs)
    for model in (b, with_prepared(b)):
        it = Interpreter(model)
        for k in range(n):
            ours = it.invoke(*[x[k] for x in xs])
            for o, ref in zip(ours, micro):
                assert o.dtype == ref.dtype
                assert np.array_equal(o.reshape(ref[k].shape), ref[k]), (k, o, ref[k])
        # the same through resumable steps of one unit
        ours, _ = it.invoke_in_steps(*[x[0] for x in xs], max_units=1)
        assert all(np.array_equal(o.reshape(r[0].shape), r[0]) for o, r in zip(ours, micro))
    return micro


scales = st.floats(0.002, 0.5).map(lambda s: float(np.float32(s)))
zps = st.integers(-128, 127)
acts = st.sampled_from([0, 1, 3])          # NONE, RELU, RELU6


@st.composite
def broadcast_shapes(draw):
    """An output shape (rank 1..4) and two operand shapes that broadcast to it."""
    rank = draw(st.integers(1, 4))
    out = [draw(st.integers(1, 5)) for _ in range(rank)]
    shapes = []
    for _ in range(2):
        s = [d if draw(st.booleans()) else 1 for d in out]
        drop = draw(st.integers(0, rank - 1))
        shapes.append(s[drop:])
    if draw(st.booleans()):
        shapes[draw(st.integers(0, 1))] = list(out)    # often one operand has the output shape
    for k in range(1, rank + 1):                       # every output dimension comes from an operand
        if out[-k] > 1 and all(len(s) < k or s[-k] == 1 for s in shapes):
            shapes[0] = list(out)
    return out, shapes


@st.composite
def binary_case(draw):
    out, (sa, sb) = draw(broadcast_shapes())
    return dict(out=out, a=sa, b=sb, scales=[draw(scales) for _ in range(3)], zps=[draw(zps) for _ in range(3)],
                act=draw(acts), const_b=draw(st.booleans()), seed=draw(st.integers(0, 10_000)))


def binary_model(op: str, c: dict) -> bytes:
    rng = np.random.default_rng(c["seed"])
    (s1, s2, s3), (z1, z2, z3) = c["scales"], c["zps"]
    if op == "MUL":
        s3 = float(np.float32(s1 * s2 * 20))       # a product rescaled into the int8 range
    b_data = rng.integers(-128, 128, c["b"]).astype(np.int8) if c["const_b"] else None
    options = {"ADD": S.AddOptionsT, "SUB": S.SubOptionsT, "MUL": S.MulOptionsT}.get(op)
    if options is not None:
        options = options()
        options.fusedActivationFunction = c["act"]
    return op_model(op, [tensor(c["a"], scale=s1, zp=z1), tensor(c["b"], scale=s2, zp=z2, data=b_data)],
                    [tensor(c["out"], scale=s3, zp=z3)], options)


@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM"])
def test_binary_elementwise(op):
    @fixed_and_fresh(binary_case(), max_examples=12)
    def check(c):
        assert_same_as_tflm(binary_model(op, c), c["seed"])
    check("fixed")
    check("fresh")


def test_sub_uses_float_scale_arithmetic():
    """SUB's multipliers come from float32 divisions (TFLite Micro's), ADD's from double: a case
    where they differ still matches TFLite Micro for both."""
    for op in ("ADD", "SUB"):
        c = dict(out=[2, 3], a=[2, 3], b=[3], scales=[0.0123457, 0.0876543, 0.1111111], zps=[3, -7, 1],
                 act=0, const_b=False, seed=1)
        assert_same_as_tflm(binary_model(op, c), 1, n=4)


@fixed_and_fresh(st.integers(1, 4).flatmap(lambda r: st.tuples(
    st.lists(st.integers(1, 5), min_size=r, max_size=r),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=r, max_size=r))),
    scales, zps, st.booleans(), st.integers(0, 10_000), max_examples=10)
def test_pad(shape_pads, scale, zp, v2, seed):
    shape, pads = shape_pads
    out = [d + a + b for d, (a, b) in zip(shape, pads)]
    ins = [tensor(shape, scale=scale, zp=zp), tensor([len(shape), 2], T.INT32, data=np.array(pads, np.int32))]
    if v2:
        ins.append(tensor([1], scale=scale, zp=zp, data=np.array([seed % 256 - 128], np.int8)))
    assert_same_as_tflm(op_model("PADV2" if v2 else "PAD", ins, [tensor(out, scale=scale, zp=zp)]), seed)


@fixed_and_fresh(st.integers(1, 4).flatmap(lambda r: st.tuples(
    st.lists(st.integers(1, 5), min_size=r, max_size=r), st.permutations(list(range(r))))),
    st.sampled_from([T.INT8, T.INT16, T.FLOAT32]), st.integers(0, 10_000), max_examples=10)
def test_transpose(shape_perm, type, seed):
    shape, perm = shape_perm
    q = dict(scale=0.1, zp=0) if type != T.FLOAT32 else {}
    ins = [tensor(shape, type, **q), tensor([len(shape)], T.INT32, data=np.array(perm, np.int32))]
    out = [shape[p] for p in perm]
    b = op_model("TRANSPOSE", ins, [tensor(out, type, **q)])
    if type == T.FLOAT32:
        x = np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)
        assert np.array_equal(Interpreter(b).invoke(x)[0], np.transpose(x, perm))
        assert np.array_equal(run_tflm(b, [x[None]])[0][0], np.transpose(x, perm))
    else:
        assert_same_as_tflm(b, seed)


@st.composite
def split_case(draw):
    """A shape (rank 1..4), an axis (negative half the time), the sizes its dimension is cut
    into (equal parts for SPLIT; SPLIT_V: any, one of them given as -1 now and then)."""
    rank = draw(st.integers(1, 4))
    shape = [draw(st.integers(1, 5)) for _ in range(rank)]
    axis = draw(st.integers(0, rank - 1))
    v = draw(st.booleans())
    if v:
        shape[axis] = draw(st.integers(1, 7))
        cuts = sorted(draw(st.sets(st.integers(1, shape[axis] - 1), max_size=4))) if shape[axis] > 1 else []
        sizes = [b - a for a, b in zip([0] + cuts, cuts + [shape[axis]])]
    else:
        n = draw(st.integers(1, 4))
        shape[axis] = n * draw(st.integers(1, 3))
        sizes = [shape[axis] // n] * n
    given = list(sizes)
    if v and draw(st.booleans()):
        given[draw(st.integers(0, len(sizes) - 1))] = -1
    return dict(shape=shape, axis=axis - rank if draw(st.booleans()) else axis, sizes=sizes, given=given, v=v,
                type=draw(st.sampled_from([T.INT8, T.INT16, T.FLOAT32])), seed=draw(st.integers(0, 10_000)))


def split_model(c: dict) -> bytes:
    q = dict(scale=0.1, zp=3) if c["type"] != T.FLOAT32 else {}
    outs = [tensor([s if d == c["axis"] % len(c["shape"]) else n for d, n in enumerate(c["shape"])], c["type"], **q)
            for s in c["sizes"]]
    axis = tensor([1], T.INT32, data=np.array([c["axis"]], np.int32))
    x = tensor(c["shape"], c["type"], **q)
    if c["v"]:
        o = S.SplitVOptionsT()
        o.numSplits = len(outs)
        return op_model("SPLIT_V", [x, tensor([len(outs)], T.INT32, data=np.array(c["given"], np.int32)), axis], outs, o)
    o = S.SplitOptionsT()
    o.numSplits = len(outs)
    return op_model("SPLIT", [axis, x], outs, o)


@fixed_and_fresh(split_case(), max_examples=12)
def test_split(c):
    """SPLIT and SPLIT_V, several outputs each: the same bytes as TFLite Micro (floats: as numpy)."""
    b = split_model(c)
    if c["type"] == T.FLOAT32:
        x = np.random.default_rng(c["seed"]).normal(0, 1, c["shape"]).astype(np.float32)
        want = np.split(x, np.cumsum(c["sizes"])[:-1], axis=c["axis"])
        for ours, micro, w in zip(Interpreter(b).invoke(x), run_tflm(b, [x[None]]), want):
            assert np.array_equal(ours.reshape(w.shape), w) and np.array_equal(micro[0], w)
    else:
        assert_same_as_tflm(b, c["seed"])


@fixed_and_fresh(st.lists(st.integers(1, 12), min_size=1, max_size=3), st.floats(0.01, 0.3), zps,
                 st.sampled_from([1.0, 0.5, 2.0]), st.integers(0, 10_000), max_examples=10)
def test_softmax_int8_to_int16(shape, scale, zp, beta, seed):
    """SOFTMAX with int8 input and int16 output (scale 1/65536, zero point -32768)."""
    o = S.SoftmaxOptionsT()
    o.beta = beta
    b = op_model("SOFTMAX", [tensor(shape, scale=float(np.float32(scale)), zp=zp)],
                 [tensor(shape, T.INT16, scale=1 / 65536, zp=-32768)], o)
    micro = assert_same_as_tflm(b, seed)
    assert micro[0].dtype == np.int16


def slice_shape(shape, begin, end, strides, bm, em, sm):
    """The output shape TFLite gives a strided slice (StartForAxis / StopForAxis)."""
    out = []
    for k, size in enumerate(shape):
        s, e, st_ = begin[k], end[k], strides[k]
        if bm >> k & 1:
            s = -2**31 if st_ > 0 else 2**31 - 1
        s = s + size if s < 0 else s
        s = min(max(s, 0), size) if st_ > 0 else min(max(s, -1), size - 1)
        if sm >> k & 1:
            continue
        if em >> k & 1:
            e = 2**31 - 1 if st_ > 0 else -2**31
        e = e + size if e < 0 else e
        e = min(max(e, 0), size) if st_ > 0 else min(max(e, -1), size - 1)
        n = len(range(s, e, st_))
        out.append(n)
    return out


@st.composite
def slice_case(draw):
    rank = draw(st.integers(1, 4))
    shape = [draw(st.integers(1, 6)) for _ in range(rank)]
    begin = [draw(st.integers(-d - 1, d + 1)) for d in shape]
    end = [draw(st.integers(-d - 1, d + 1)) for d in shape]
    strides = [draw(st.sampled_from([-2, -1, 1, 1, 2, 3])) for _ in shape]
    bm, em = draw(st.integers(0, 2**rank - 1)), draw(st.integers(0, 2**rank - 1))
    sm = 0
    for k, d in enumerate(shape):       # shrink an axis whose begin is a valid index
        if draw(st.integers(0, 3)) == 0 and -d <= begin[k] < d and not bm >> k & 1:
            sm |= 1 << k
            strides[k] = 1  # TF writes shrunk axes with stride 1 (TFLite Micro writes nothing for a negative one)
    return shape, begin, end, strides, bm, em, sm


@fixed_and_fresh(slice_case(), st.integers(0, 10_000), max_examples=16)
def test_strided_slice(case, seed):
    shape, begin, end, strides, bm, em, sm = case
    out = slice_shape(shape, begin, end, strides, bm, em, sm)
    if 0 in out:
        return                           # an empty slice: nothing to run
    o = S.StridedSliceOptionsT()
    o.beginMask, o.endMask, o.shrinkAxisMask = bm, em, sm
    ins = [tensor(shape, scale=0.05, zp=3)] + [tensor([len(shape)], T.INT32, data=np.array(v, np.int32))
                                                 for v in (begin, end, strides)]
    assert_same_as_tflm(op_model("STRIDED_SLICE", ins, [tensor(out, scale=0.05, zp=3)], o), seed)


@fixed_and_fresh(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.floats(0.004, 0.3), zps,
                 st.integers(0, 10_000), max_examples=10)
def test_logistic(shape, scale, zp, seed):
    b = op_model("LOGISTIC", [tensor(shape, scale=float(np.float32(scale)), zp=zp)],
                 [tensor(shape, scale=1 / 256, zp=-128)])
    assert_same_as_tflm(b, seed, n=6)


def test_logistic_every_input_value():
    """All 256 inputs at a few input scales, including ones whose radius cuts inside the range."""
    for scale, zp in ((0.02, 0), (0.1, -20), (0.0625, 5), (0.3, 100)):
        b = op_model("LOGISTIC", [tensor([256], scale=scale, zp=zp)], [tensor([256], scale=1 / 256, zp=-128)])
        x = np.arange(-128, 128, dtype=np.int8)
        assert np.array_equal(Interpreter(b).invoke(x)[0], run_tflm(b, [x[None]])[0][0])


@fixed_and_fresh(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.floats(0.004, 0.3), zps,
                 st.integers(0, 10_000), max_examples=10)
def test_tanh(shape, scale, zp, seed):
    b = op_model("TANH", [tensor(shape, scale=float(np.float32(scale)), zp=zp)], [tensor(shape, scale=1 / 128)])
    assert_same_as_tflm(b, seed, n=6)


def test_tanh_every_input_value():
    """All 256 inputs at a few input scales, including ones whose radius cuts inside the range."""
    for scale, zp in ((0.02, 0), (0.1, -20), (0.0625, 5), (0.3, 100), (0.007, -128)):
        b = op_model("TANH", [tensor([256], scale=scale, zp=zp)], [tensor([256], scale=1 / 128)])
        x = np.arange(-128, 128, dtype=np.int8)
        assert np.array_equal(Interpreter(b).invoke(x)[0], run_tflm(b, [x[None]])[0][0])


@st.composite
def unpack_case(draw):
    rank = draw(st.integers(1, 4))
    shape = [draw(st.integers(1, 4)) for _ in range(rank)]
    axis = draw(st.integers(0, rank - 1))
    shape[axis] = draw(st.integers(1, 9))
    return dict(shape=shape, axis=axis - rank if draw(st.booleans()) else axis,
                type=draw(st.sampled_from([T.INT8, T.INT16, T.INT32])), seed=draw(st.integers(0, 10_000)))


def unpack_model(c: dict) -> bytes:
    axis = c["axis"] % len(c["shape"])
    q = dict(scale=0.1, zp=3 if c["type"] == T.INT8 else 0)
    out = [n for d, n in enumerate(c["shape"]) if d != axis] or [1]
    o = S.UnpackOptionsT()
    o.num, o.axis = c["shape"][axis], c["axis"]
    return op_model("UNPACK", [tensor(c["shape"], c["type"], **q)], [tensor(out, c["type"], **q)] * o.num, o)


@fixed_and_fresh(unpack_case(), max_examples=10)
def test_unpack(c):
    """UNPACK (a Keras RNN unrolled by the converter unpacks its time steps) into up to 9
    outputs: the same bytes as TFLite Micro."""
    assert_same_as_tflm(unpack_model(c), c["seed"])


@fixed_and_fresh(st.sampled_from([(T.INT8, T.INT8), (T.INT8, T.UINT8), (T.INT16, T.INT8), (T.INT8, T.INT16),
                                  (T.UINT8, T.INT8)]),
                 st.lists(st.integers(1, 6), min_size=1, max_size=3), scales, scales, zps, zps,
                 st.integers(0, 10_000), max_examples=10)
def test_requantize(types, shape, s_in, s_out, z_in, z_out, seed):
    zr = {T.INT8: (-128, 127), T.UINT8: (0, 255), T.INT16: (0, 0)}
    clip = lambda z, t: int(np.clip(z + (128 if t == T.UINT8 else 0), *zr[t]))  # noqa: E731
    b = op_model("QUANTIZE", [tensor(shape, types[0], scale=s_in, zp=clip(z_in, types[0]))],
                 [tensor(shape, types[1], scale=s_out, zp=clip(z_out, types[1]))])
    assert_same_as_tflm(b, seed)


@pytest.mark.parametrize("first", ["rescaling", "normalization"])
def test_rescaling_and_normalization_input_layers(first):
    """A Keras model with a Rescaling input layer converts to MUL and ADD in front (a
    Normalization layer to SUB and MUL), a sigmoid output to LOGISTIC: the runtime runs it
    bit-exact with TFLite Micro."""
    from freeml_keras.conversion.converter import convert
    from freeml_keras.keras import keras
    keras.utils.set_random_seed(3)
    inp = keras.Input((6, 6, 3))
    x = (keras.layers.Rescaling(1 / 127.5, offset=-1.0) if first == "rescaling" else
         keras.layers.Normalization(mean=[100.0, 120.0, 90.0], variance=[900.0, 1600.0, 2500.0]))(inp)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(4, 2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3, activation="sigmoid")(x)
    m = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    b = convert(m, rng.uniform(0, 255, (32, 6, 6, 3)).astype(np.float32), sparse=False)
    names = Interpreter(b).op_codes
    assert names[:2] == (["MUL", "ADD"] if first == "rescaling" else ["SUB", "MUL"]), names
    assert "LOGISTIC" in names and "MEAN" in names, names
    assert_same_as_tflm(b, 0, n=4)


@st.composite
def transpose_conv_case(draw):
    return dict(batch=draw(st.integers(1, 2)), h=draw(st.integers(1, 5)), w=draw(st.integers(1, 5)),
                in_c=draw(st.integers(1, 4)), out_c=draw(st.integers(1, 4)), k_h=draw(st.integers(1, 4)),
                k_w=draw(st.integers(1, 4)), s_h=draw(st.integers(1, 3)), s_w=draw(st.integers(1, 3)),
                same=draw(st.booleans()), per_channel=draw(st.booleans()), bias=draw(st.booleans()),
                act=draw(acts), s_in=draw(scales), s_out=draw(scales), z_in=draw(zps), z_out=draw(zps),
                seed=draw(st.integers(0, 10_000)))


def transpose_conv_model(c: dict) -> bytes:
    """TRANSPOSE_CONV as the converter writes a Conv2DTranspose: output shape, int8 weights
    [out_c, k_h, k_w, in_c] (per-channel or one scale), int8 input, optional int32 bias."""
    rng = np.random.default_rng(c["seed"])
    oh = c["h"] * c["s_h"] if c["same"] else (c["h"] - 1) * c["s_h"] + c["k_h"]
    ow = c["w"] * c["s_w"] if c["same"] else (c["w"] - 1) * c["s_w"] + c["k_w"]
    out_shape = [c["batch"], oh, ow, c["out_c"]]
    w_scales = rng.uniform(0.002, 0.02, c["out_c"] if c["per_channel"] else 1).astype(np.float32)
    w = tensor([c["out_c"], c["k_h"], c["k_w"], c["in_c"]], scale=float(w_scales[0]),
               data=rng.integers(-127, 128, (c["out_c"], c["k_h"], c["k_w"], c["in_c"])))
    ins = [tensor([4], T.INT32, data=np.array(out_shape, np.int32)), w,
           tensor([c["batch"], c["h"], c["w"], c["in_c"]], scale=c["s_in"], zp=c["z_in"])]
    if c["bias"]:
        ins.append(tensor([c["out_c"]], T.INT32, scale=float(np.float32(c["s_in"]) * w_scales[0]),
                          data=rng.integers(-3000, 3000, c["out_c"])))
    o = S.TransposeConvOptionsT()
    o.padding, o.strideH, o.strideW = 0 if c["same"] else 1, c["s_h"], c["s_w"]
    o.fusedActivationFunction = c["act"]
    b = op_model("TRANSPOSE_CONV", ins, [tensor(out_shape, scale=c["s_out"], zp=c["z_out"])], o)
    if c["per_channel"]:
        m = ts.read_model(b)
        q = m.subgraphs[0].tensors[int(m.subgraphs[0].operators[0].inputs[1])].quantization
        q.scale, q.zeroPoint, q.quantizedDimension = [float(v) for v in w_scales], [0] * c["out_c"], 0
        b = ts.write_model(m)
    return b


@fixed_and_fresh(transpose_conv_case(), max_examples=12)
def test_transpose_conv(c):
    """TRANSPOSE_CONV over shapes, strides, SAME / VALID, per-channel or per-tensor weights, with
    and without bias, fused activations: the same bytes as TFLite Micro."""
    assert_same_as_tflm(transpose_conv_model(c), c["seed"])


def test_keras_conv2d_transpose():
    """A Keras Conv2DTranspose (stride 2, SAME, ReLU) converts to TRANSPOSE_CONV and a RELU the
    converter leaves unfused: bit-exact. (With
    the batch size left open the converter computes the output shape at run time with SHAPE,
    STRIDED_SLICE and PACK, which the runtime refuses: the model's input has batch size 1.)"""
    from freeml_keras.conversion.converter import convert
    from freeml_keras.keras import keras
    keras.utils.set_random_seed(4)
    inp = keras.Input((5, 5, 3), batch_size=1)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same", activation="relu")(x)
    m = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    b = convert(m, np.random.default_rng(0).normal(0, 1, (32, 5, 5, 3)).astype(np.float32), sparse=False)
    assert {"TRANSPOSE_CONV", "RELU"} <= set(Interpreter(b).op_codes)
    assert_same_as_tflm(b, 0, n=4)


@fixed_and_fresh(st.lists(st.integers(1, 6), min_size=1, max_size=4), scales, scales, zps, zps,
                 st.integers(0, 10_000), max_examples=10)
def test_relu(shape, s_in, s_out, z_in, z_out, seed):
    """RELU with the output's quantization other than the input's (a rescaling) or the same."""
    b = op_model("RELU", [tensor(shape, scale=s_in, zp=z_in)], [tensor(shape, scale=s_out, zp=z_out)])
    assert_same_as_tflm(b, seed, n=4)
    same = op_model("RELU", [tensor(shape, scale=s_in, zp=z_in)], [tensor(shape, scale=s_in, zp=z_in)])
    assert_same_as_tflm(same, seed, n=2)


@st.composite
def resize_case(draw):
    align = draw(st.booleans())
    return dict(batch=draw(st.integers(1, 2)), in_h=draw(st.integers(1, 6)), in_w=draw(st.integers(1, 6)),
                out_h=draw(st.integers(1, 13)), out_w=draw(st.integers(1, 13)), c=draw(st.integers(1, 3)),
                align=align, half=not align and draw(st.booleans()),
                type=draw(st.sampled_from([T.INT8, T.INT16])), seed=draw(st.integers(0, 10_000)))


def resize_model(c: dict) -> bytes:
    q = dict(scale=0.1, zp=-3 if c["type"] == T.INT8 else 0)
    o = S.ResizeNearestNeighborOptionsT()
    o.alignCorners, o.halfPixelCenters = c["align"], c["half"]
    return op_model("RESIZE_NEAREST_NEIGHBOR",
                    [tensor([c["batch"], c["in_h"], c["in_w"], c["c"]], c["type"], **q),
                     tensor([2], T.INT32, data=np.array([c["out_h"], c["out_w"]], np.int32))],
                    [tensor([c["batch"], c["out_h"], c["out_w"], c["c"]], c["type"], **q)], o)


@fixed_and_fresh(resize_case(), max_examples=12)
def test_resize_nearest_neighbor(c):
    """RESIZE_NEAREST_NEIGHBOR up and down, aligned corners or half-pixel centers or neither:
    the same bytes as TFLite Micro, with the source rows and columns computed and precomputed."""
    assert_same_as_tflm(resize_model(c), c["seed"])


def resize_bilinear_model(c: dict) -> bytes:
    o = S.ResizeBilinearOptionsT()
    o.alignCorners, o.halfPixelCenters = c["align"], c["half"]
    return op_model("RESIZE_BILINEAR",
                    [tensor([c["batch"], c["in_h"], c["in_w"], c["c"]], scale=0.1, zp=-3),
                     tensor([2], T.INT32, data=np.array([c["out_h"], c["out_w"]], np.int32))],
                    [tensor([c["batch"], c["out_h"], c["out_w"], c["c"]], scale=0.1, zp=-3)], o)


@fixed_and_fresh(resize_case(), max_examples=12)
def test_resize_bilinear(c):
    """RESIZE_BILINEAR (int8) up and down, aligned corners or half-pixel centers or neither."""
    assert_same_as_tflm(resize_bilinear_model(c), c["seed"])


def test_keras_upsampling2d():
    """A Keras UpSampling2D converts to RESIZE_NEAREST_NEIGHBOR (nearest) or RESIZE_BILINEAR
    (bilinear): bit-exact."""
    from freeml_keras.conversion.converter import convert
    from freeml_keras.keras import keras
    keras.utils.set_random_seed(5)
    inp = keras.Input((4, 3, 2), batch_size=1)
    x = keras.layers.Conv2D(3, 2, padding="same")(inp)
    x = keras.layers.UpSampling2D(2, interpolation="bilinear")(keras.layers.UpSampling2D((2, 3))(x))
    m = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    b = convert(m, np.random.default_rng(0).normal(0, 1, (32, 4, 3, 2)).astype(np.float32), sparse=False)
    assert {"RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR"} <= set(Interpreter(b).op_codes)
    assert_same_as_tflm(b, 0, n=4)


def test_unsupported_operator_and_type_are_named():
    """A refused operator is named by builtin name and index; a tensor by index, name and type."""
    b = op_model("HARD_SWISH", [tensor([4], scale=0.1)], [tensor([4], scale=0.1)])
    with pytest.raises(RuntimeModelError, match=r"operator not supported \(operator 0 HARD_SWISH\)"):
        Interpreter(b)
    b = op_model("ADD", [tensor([4], T.BOOL), tensor([4], scale=0.1)], [tensor([4], scale=0.1)])
    with pytest.raises(RuntimeModelError,
                       match=r"tensor type not supported \(operator 0 ADD, tensor 0 'in0' of type BOOL\)"):
        Interpreter(b)
    b = op_model("MUL", [tensor([4], T.INT16, scale=0.1), tensor([4], T.INT16, scale=0.1)],
                 [tensor([4], T.INT16, scale=0.1)])
    with pytest.raises(RuntimeModelError, match=r"operator 0 MUL, tensor 0 'in0' of type INT16"):
        Interpreter(b)


def test_bias_quantized_dimension_is_ignored_on_1d_tensors():
    """A 1-D per-channel bias with quantized_dimension=3 (as in TFLite Micro's person detection
    model) is read as per-channel on its one dimension, as TFLite Micro does."""
    from freeml_keras.conversion.converter import convert
    from freeml_keras.keras import keras
    keras.utils.set_random_seed(1)
    inp = keras.Input((5, 5, 2))
    m = keras.Model(inp, keras.layers.Conv2D(3, 3)(inp))
    b = convert(m, np.random.default_rng(0).normal(0, 1, (16, 5, 5, 2)).astype(np.float32), sparse=False)
    model = ts.read_model(b)
    sg = model.subgraphs[0]
    bias = int(sg.operators[0].inputs[2])
    sg.tensors[bias].quantization.quantizedDimension = 3
    b2 = ts.write_model(model)
    assert_same_as_tflm(b2, 0)


def layer_op_models() -> dict[str, bytes]:
    """One small model of each operator above (with broadcasts, options and constants)."""
    c = dict(out=[2, 3, 4], a=[2, 3, 4], b=[3, 1], scales=[0.05, 0.07, 0.09], zps=[3, -5, 7], act=1,
             const_b=False, seed=0)
    models = {op: binary_model(op, c) for op in ("ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM")}
    models["MUL_const"] = binary_model("MUL", dict(c, const_b=True))
    pads = tensor([3, 2], T.INT32, data=np.array([[0, 1], [2, 0], [1, 1]], np.int32))
    models["PAD"] = op_model("PAD", [tensor([2, 3, 4], scale=0.1, zp=2), pads], [tensor([3, 5, 6], scale=0.1, zp=2)])
    models["PADV2"] = op_model("PADV2", [tensor([2, 3, 4], scale=0.1, zp=2), pads,
                                         tensor([1], scale=0.1, zp=2, data=np.array([9], np.int8))],
                               [tensor([3, 5, 6], scale=0.1, zp=2)])
    models["TRANSPOSE"] = op_model("TRANSPOSE", [tensor([2, 3, 4], scale=0.1),
                                                 tensor([3], T.INT32, data=np.array([2, 0, 1], np.int32))],
                                   [tensor([4, 2, 3], scale=0.1)])
    o = S.StridedSliceOptionsT()
    o.beginMask, o.shrinkAxisMask = 1, 4
    models["STRIDED_SLICE"] = op_model(
        "STRIDED_SLICE", [tensor([4, 5, 3], scale=0.1)] +
        [tensor([3], T.INT32, data=np.array(v, np.int32)) for v in ([1, -1, 1], [3, 0, 2], [1, -2, 1])],
        [tensor(slice_shape([4, 5, 3], [1, -1, 1], [3, 0, 2], [1, -2, 1], 1, 0, 4), scale=0.1)], o)
    models["LOGISTIC"] = op_model("LOGISTIC", [tensor([2, 7], scale=0.05, zp=4)], [tensor([2, 7], scale=1 / 256, zp=-128)])
    models["TANH"] = op_model("TANH", [tensor([2, 7], scale=0.05, zp=4)], [tensor([2, 7], scale=1 / 128)])
    models["UNPACK"] = unpack_model(dict(shape=[3, 4, 2], axis=1, type=T.INT8, seed=0))
    models["TRANSPOSE_CONV"] = transpose_conv_model(dict(batch=1, h=3, w=2, in_c=2, out_c=3, k_h=3, k_w=2, s_h=2,
                                                         s_w=1, same=True, per_channel=True, bias=True, act=1,
                                                         s_in=0.05, s_out=0.1, z_in=3, z_out=-5, seed=0))
    models["RELU"] = op_model("RELU", [tensor([2, 7], scale=0.05, zp=4)], [tensor([2, 7], scale=0.03, zp=-100)])
    models["RESIZE_NEAREST_NEIGHBOR"] = resize_model(dict(batch=1, in_h=3, in_w=2, out_h=6, out_w=5, c=2, align=False,
                                                          half=True, type=T.INT8, seed=0))
    models["RESIZE_BILINEAR"] = resize_bilinear_model(dict(batch=1, in_h=3, in_w=2, out_h=6, out_w=5, c=2, align=False,
                                                           half=True))
    models["QUANTIZE_uint8"] = op_model("QUANTIZE", [tensor([9], scale=0.05, zp=4)], [tensor([9], T.UINT8, scale=0.04, zp=130)])
    models["QUANTIZE_int16"] = op_model("QUANTIZE", [tensor([9], T.INT16, scale=0.001)], [tensor([9], scale=0.04, zp=-3)])
    models["SPLIT"] = split_model(dict(shape=[2, 6, 3], axis=1, sizes=[2, 2, 2], given=[2, 2, 2], v=False,
                                       type=T.INT8, seed=0))
    models["SPLIT_V"] = split_model(dict(shape=[3, 5], axis=-1, sizes=[1, 3, 1], given=[1, -1, 1], v=True,
                                         type=T.INT16, seed=0))
    o = S.SoftmaxOptionsT()
    o.beta = 1.0
    models["SOFTMAX_int16"] = op_model("SOFTMAX", [tensor([2, 10], scale=0.1, zp=-3)],
                                       [tensor([2, 10], T.INT16, scale=1 / 65536, zp=-32768)], o)
    return models


def test_layer_op_models_run_and_match():
    for name, b in layer_op_models().items():
        assert_same_as_tflm(b, 1, n=2), name


def test_mutated_layer_op_models_never_crash(tmp_path):
    """The new operators' prepare and eval under AddressSanitizer + UBSan on thousands of
    truncated, bit-flipped and overwritten copies of their models: refused or run, never a crash."""
    from freeml_keras.runtime.build import make_host
    import subprocess
    driver = make_host("asan", "fm_driver_asan")
    ran = refused = 0
    for seed, (name, b) in enumerate(sorted(layer_op_models().items())):
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(b)
        r = subprocess.run([str(driver), "mutate", str(path), str(seed + 1), "400"], capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, (name, r.stdout, r.stderr[-3000:])
        fields = r.stdout.split()
        ran += int(fields[3])
        refused += int(fields[5])
    print(f"{ran} ran, {refused} refused")
    assert ran > 0 and refused > 0


def test_inspect_lists_every_operator_with_support(tmp_path, capsys):
    """``freeml inspect FILE.tflite`` lists each operator with supported yes / no and why not."""
    import json

    from freeml_keras.cli import main
    cases = {"hard_swish": op_model("HARD_SWISH", [tensor([4], scale=0.1)], [tensor([4], scale=0.1)]),
             "bool": op_model("ADD", [tensor([4], T.BOOL), tensor([4], scale=0.1)], [tensor([4], scale=0.1)]),
             "mul": layer_op_models()["MUL"]}
    for name, b in cases.items():
        (tmp_path / f"{name}.tflite").write_bytes(b)
    assert main(["inspect", str(tmp_path / "hard_swish.tflite")]) == 0
    out = capsys.readouterr().out
    assert "1 NOT supported" in out and "HARD_SWISH" in out and "no kernel in this runtime" in out
    assert "operator not supported (operator 0 HARD_SWISH)" in out
    assert main(["inspect", str(tmp_path / "bool.tflite"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["operators"] == [{"index": 0, "name": "ADD", "supported": False, "reason": "tensor 0 has type BOOL"}]
    assert "tensor 0 'in0' of type BOOL" in d["atomic_steps"]["error"]
    assert main(["inspect", str(tmp_path / "mul.tflite"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["operators"][0] == {"index": 0, "name": "MUL", "supported": True,
                                                                   "reason": ""}


def test_freeml_run_without_dataset_compares_every_output(tmp_path, capsys):
    """``freeml run FILE.tflite`` with random inputs, and with ``--data FILE.npz``: every output
    of a two-input model compared with TFLite Micro's (run in a child process)."""
    import json

    from freeml_keras.cli import main
    path = tmp_path / "mul.tflite"
    path.write_bytes(layer_op_models()["MUL"])
    assert main(["run", str(path), "--examples", "5", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["examples"] == 5 and d["inputs"] == 2 and d["identical"] is True
    assert d["per_output"] == [{"output": 0, "identical_examples": 5, "max_abs_difference": 0.0}]
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "x.npz", rng.normal(0, 2, (3, 2, 3, 4)).astype(np.float32),
             rng.integers(-128, 128, (3, 3, 1)).astype(np.int8))
    assert main(["run", str(path), "--data", str(tmp_path / "x.npz")]) == 0
    out = capsys.readouterr().out
    assert "3 examples of" in out and "every output identical to TFLite Micro" in out


def test_tflite_micro_crash_is_contained():
    """A model on which TFLite Micro aborts (an ADD whose output is larger than both operands'
    broadcast) raises TFLMCrash here, naming the signal; this process lives on, and our runtime
    refuses the model with a reason."""
    from freeml_keras.runtime.reference import TFLMCrash, run_tflm_isolated
    b = binary_model("ADD", dict(out=[2, 3, 1], a=[1], b=[1], scales=[0.4, 0.3, 0.1], zps=[0, 0, 0],
                                 act=0, const_b=False, seed=0))
    with pytest.raises(TFLMCrash, match=r"TFLite Micro crashed \(SIG"):
        run_tflm_isolated(b, [np.zeros((1, 1), np.int8), np.zeros((1, 1), np.int8)])
    with pytest.raises(RuntimeModelError, match="do not broadcast to the output"):
        Interpreter(b)


def test_readme_operator_table_lists_what_the_runtime_runs():
    """The README's operator table names exactly the operators of the runtime's registry."""
    import re
    from pathlib import Path

    from freeml_keras.runtime import supported_operators
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = text[text.index("## Operators"):text.index("## Not supported yet")]
    named = {n for row in re.findall(r"^\| ([A-Z0-9_, ]+) \|", table, re.M) for n in row.split(", ")}
    assert named == set(supported_operators())
