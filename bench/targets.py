"""Kernel speed, per-operator cost and code size on the microcontroller targets (issue 7).

1. int8 MAC inner loop: marginal cost per MAC between 64 and 256 MACs (call overhead cancels),
   for TFLite Micro's reference form (int32 operands: ``ref32``), portable C with 16-bit
   products (``c``), the Cortex-M4 DSP loop (``dsp``: SXTB16 + SMLAD) and the MSP430 hardware
   multiplier loop (``hwmult``: MACS/OP2). MSP430 also without the hardware multiplier (every
   multiply a shift-and-add helper). Targets: <= 3 instructions/MAC (M4), <= 30 cycles/MAC
   (MSP430).
2. Whole models with the tflm_port runtime, model in flash / FRAM: instructions (M4) or MCLK
   cycles (MSP430) per operator, per inference and for fm_init; outputs checked against the
   host runtime; code size (text / data / bss). The per-operator figures are written as cost
   tables (``cost_tables``: per op its cost, units, MACs, sparse MACs and output bytes) for the
   converter's metadata and the energy simulation. Models: small digit models, the zoo's cnn_s,
   the compressed cnn_s that fits the MSP430 (``bench/fixtures.py``) and the demo's
   compressed cnn_s (``--demo-model``, default runs/demo/model.tflite, when present); a model
   that does not fit a target is recorded with the linker's overflow per memory region.
   Per operator also cost per executed (non-zero) MAC and per output value, per model cost per
   executed MAC and, on the MSP430, energy per inference in uJ on the MSP430FR5994 profile
   (``freeml_keras.devices``); ``before``: the same figures with the kernels before issue 15
   (``bench/results/targets_before_issue15.json``, the JSON of that commit), side by side.
   ``kernel_code``: bytes of each kernel's code (Cortex-M4 objects; the MSP430 build links with
   LTO, so there its assembly helpers and the whole image).
   ``layers``: the six layer shapes of issue 15 (random int8 weights, one layer per model) on
   both targets, instructions / cycles per MAC and per output value, next to Arm's CMSIS-NN on
   the Cortex-M4: measured when a checkout of it is given (``--cmsis-nn PATH`` or
   ``$FREEML_CMSIS_NN``: its int8 sources built with arm-none-eabi-gcc -O2, called by
   ``programs/cmsis_nn_layer.c``, outputs compared), else the issue's figures (it is not on PyPI
   or Debian, and CI has no network); and the figures of these kernels before.
3. Checkpointing on the targets (arena and checkpoint records in FRAM / the retained region):
   cost per inference at several granularities against the continuous run (overhead %), in
   units per step and in the runtime's default work mode (MAC-equivalents per step), commits
   and NVM bytes written by commits, and a run resumed after an emulated power loss.

Counts: QEMU mps2-an386 + the project's TCG plugin (exact instruction counts; QEMU does not
model M4 cycles); mspdebug 0.22's simulator (MSP430 instruction timings, no FRAM wait states).

    .venv/bin/python bench/targets.py [--quick] [--demo-model runs/demo/model.tflite] [--update-tables]
        [--cmsis-nn PATH]
    .venv/bin/python bench/targets.py --msp430 [--demo-model PATH] [--update-tables]   # the MSP430's
    # requantization, SOFTMAX, models and the demo's dense layers one per model:
    # bench/results/targets_msp430.json (with --update-tables: the MSP430 cost tables it measured)
    .venv/bin/python bench/targets.py --layers [--cmsis-nn PATH]   # the six shapes and the demo
    # model on the Cortex-M4 only: bench/results/targets_layers.json and targets_layers.png (also
    # written by a full run: per shape, ours before issue 15, CMSIS-NN and ours now)
    # bench/results/targets.json and targets.png; with --update-tables also the cost tables the
    # package ships (freeml_keras/data/cost_tables.json), never as a side effect of a plain run
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from fixtures import CNN_S_DIGITS_EPOCHS, compressed_cnn_s

from freeml_keras import targets as T
from freeml_keras.costs import COST_TABLES_VERSION, CostTableError
from freeml_keras.runtime.intermittent import DEFAULT_STEP_WORK

# The cost tables the library ships with (package data): written only with --update-tables.
SHIPPED_TABLES = Path(__file__).resolve().parents[1] / "freeml_keras" / "data" / "cost_tables.json"
RESULTS = Path(__file__).resolve().parent / "results"
OP_NAMES = {3: "CONV_2D", 4: "DEPTHWISE_CONV_2D", 9: "FULLY_CONNECTED", 17: "MAX_POOL_2D",
            1: "AVERAGE_POOL_2D", 22: "RESHAPE", 25: "SOFTMAX", 40: "MEAN", 0: "ADD",
            2: "CONCATENATION", 114: "QUANTIZE", 6: "DEQUANTIZE"}
KERNEL_BUILDS = [("cortex_m4", {"DSP": 1}, "hardware"), ("msp430", {"HWMULT": 1}, "hardware multiplier"),
                 ("msp430", {"HWMULT": 0}, "software multiply")]
KERNEL_SYMBOLS = {"ref32": "dot_ref32", "c": "fm_dot_s8_c", "dsp": "fm_dot_s8_dsp", "hwmult": "fm_dot_s8_hwmult"}


BASELINE = RESULTS / "targets_before_issue15.json"
# Issue 15's measurements (instructions per MAC on the Cortex-M4, int8 per-channel, QEMU + the
# same plugin): Arm's CMSIS-NN built from its public sources with arm-none-eabi-gcc 12 -O2, and
# these kernels before that issue. Keras layer, input shape, layer arguments.
LAYER_SHAPES = [
    ("CONV_2D 3x3, 28x28x1 -> 26x26x16", "conv", (28, 28, 1), {"filters": 16, "kernel_size": 3}, 10.42, 21.33),
    ("CONV_2D 3x3, 13x13x16 -> 11x11x32", "conv", (13, 13, 16), {"filters": 32, "kernel_size": 3}, 2.15, 4.10),
    ("DEPTHWISE_CONV_2D 3x3 same, 25x5x64", "dw", (25, 5, 64), {"kernel_size": 3, "padding": "same"}, 7.79, 32.35),
    ("CONV_2D 1x1, 64 -> 64 on 25x5", "conv", (25, 5, 64), {"filters": 64, "kernel_size": 1}, 2.09, 4.64),
    ("FULLY_CONNECTED 512 -> 64", "fc", (512,), {"units": 64}, 1.99, 2.70),
    ("FULLY_CONNECTED 64 -> 10", "fc", (64,), {"units": 10}, 2.98, 4.39),
]


def layer_model(kind: str, shape: tuple, kwargs: dict, seed: int = 0) -> tuple[bytes, np.ndarray]:
    """One layer with random weights and bias, converted to int8 (per-channel), and one input."""
    from freeml_keras.conversion import converter
    from freeml_keras.keras import keras
    from freeml_keras.runtime.reference import io_quantization, quantize

    keras.utils.set_random_seed(seed)
    layer = {"conv": keras.layers.Conv2D, "dw": keras.layers.DepthwiseConv2D, "fc": keras.layers.Dense}[kind]
    m = keras.Sequential([keras.layers.Input(shape), layer(**kwargs, bias_initializer="glorot_uniform")])
    x = np.random.default_rng(seed).normal(size=(32, *shape)).astype(np.float32)
    b = converter.convert(m, x, sparse=False)
    (scale, zp), = io_quantization(b)[0]
    return b, quantize(x[:1], scale, zp)


CMSIS_ENV = "FREEML_CMSIS_NN"
CMSIS_PROGRAM = T.TARGETS_DIR / "programs" / "cmsis_nn_layer.c"


def cmsis_nn_library(src: Path, work: Path) -> Path:
    """CMSIS-NN's integer sources (``src``: a checkout with Include/ and Source/; the float ones
    left out) compiled as TFLite Micro builds them for a Cortex-M4F: arm-none-eabi-gcc -O2, into
    one static library."""
    import subprocess
    out = work / "cmsis_nn"
    out.mkdir(parents=True, exist_ok=True)
    objs = []
    for c in sorted((src / "Source").glob("*/*.c")):
        if c.stem.endswith(("_f16", "_f32", "_flt")):
            continue
        o = out / f"{c.stem}.o"
        subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16",
                        "-O2", "-std=c11", "-ffunction-sections", "-fdata-sections", f"-I{src / 'Include'}",
                        "-c", str(c), "-o", str(o)], check=True, capture_output=True)
        objs.append(str(o))
    lib = out / "libcmsisnn.a"
    lib.unlink(missing_ok=True)
    subprocess.run(["arm-none-eabi-ar", "rcs", str(lib), *objs], check=True)
    return lib


def cmsis_nn_case(model_bytes: bytes, x: np.ndarray) -> str:
    """The header of programs/cmsis_nn_layer.c for the model's one weighted operator: shapes,
    offsets, activation range, and per output channel the multiplier and shift TFLite Micro
    computes (double(input scale) * double(filter scale) / double(output scale))."""
    from freeml_keras.format import tflite as ts
    from freeml_keras.format.prepared import quantize_multiplier

    m = ts.read_model(model_bytes)
    sg = m.subgraphs[0]
    op = [o for o in sg.operators if ts.op_name(m, o.opcodeIndex) in MAC_OPS][0]
    kind = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 3}[ts.op_name(m, op.opcodeIndex)]
    t_in, t_w, t_b = (sg.tensors[int(i)] for i in op.inputs[:3])
    t_out = sg.tensors[int(op.outputs[0])]

    def data(t, dtype):
        return np.frombuffer(bytes(m.buffers[t.buffer].data), dtype=dtype)

    s_in, s_out = float(np.float32(t_in.quantization.scale[0])), float(np.float32(t_out.quantization.scale[0]))
    zp_in, zp_out = int(t_in.quantization.zeroPoint[0]), int(t_out.quantization.zeroPoint[0])
    w_scales = [float(np.float32(v)) for v in t_w.quantization.scale]
    mults, shifts = zip(*[quantize_multiplier(s_in * w / s_out)[1:] for w in w_scales])
    opts = op.builtinOptions
    act = {0: (-128, 127), 1: (max(-128, zp_out), 127)}[int(opts.fusedActivationFunction)]
    d = {"CN_KIND": kind, "CN_IN_OFF": -zp_in, "CN_OUT_OFF": zp_out, "CN_ACT_MIN": act[0], "CN_ACT_MAX": act[1],
         "CN_PER_CHANNEL": int(len(w_scales) > 1), "CN_BUF_WORDS": 16384}
    if kind == 3:
        out_c, depth = (int(v) for v in t_w.shape)
        d.update({"CN_IN_N": int(np.prod(t_in.shape)) // depth, "CN_IN_H": 1, "CN_IN_W": 1, "CN_IN_C": depth,
                  "CN_F_N": depth, "CN_F_H": 1, "CN_F_W": 1, "CN_F_C": out_c,
                  "CN_OUT_H": 1, "CN_OUT_W": 1, "CN_OUT_C": out_c})
    else:
        n, ih, iw, ic = (int(v) for v in t_in.shape)
        fn, fh, fw, fc = (int(v) for v in t_w.shape)
        _, oh, ow, oc = (int(v) for v in t_out.shape)
        sh, sw = int(opts.strideH), int(opts.strideW)
        pad = [max(0, ((o - 1) * st + k - i) // 2) if int(opts.padding) == 0 else 0
               for o, st, k, i in ((oh, sh, fh, ih), (ow, sw, fw, iw))]
        d.update({"CN_IN_N": n, "CN_IN_H": ih, "CN_IN_W": iw, "CN_IN_C": ic, "CN_F_N": fn, "CN_F_H": fh,
                  "CN_F_W": fw, "CN_F_C": fc, "CN_OUT_H": oh, "CN_OUT_W": ow, "CN_OUT_C": oc,
                  "CN_STRIDE_H": sh, "CN_STRIDE_W": sw, "CN_PAD_H": pad[0], "CN_PAD_W": pad[1]})
    d["CN_OUT_SIZE"] = d["CN_IN_N"] * d["CN_OUT_H"] * d["CN_OUT_W"] * d["CN_OUT_C"]
    return ("/* Generated by bench/targets.py (cmsis_nn_case). */\n#include <stdint.h>\n"
            + "".join(f"#define {k} ({v})\n" for k, v in d.items())
            + T.c_array("cn_input", "int8_t", np.asarray(x, dtype=np.int8).ravel().tolist())
            + T.c_array("cn_filter", "int8_t", data(t_w, np.int8).tolist())
            + T.c_array("cn_bias", "int32_t", data(t_b, np.int32).tolist())
            + T.c_array("cn_mult", "int32_t", list(mults)) + T.c_array("cn_shift", "int32_t", list(shifts)))


def cmsis_nn_layer(src: Path, lib: Path, model_bytes: bytes, x: np.ndarray, out: Path) -> tuple[int, list[int], int]:
    """CMSIS-NN's instructions for the layer of ``model_bytes`` (between the marks), its
    outputs and its linked code bytes (text of the CMSIS-NN functions in the image)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "cmsis_nn_case.h").write_text(cmsis_nn_case(model_bytes, x))
    elf = T.build("cortex_m4", "cmsis_nn_layer", [CMSIS_PROGRAM], out, include_dirs=[out, src / "Include"],
                  options={"LDFLAGS": str(lib)})
    r = T.run("cortex_m4", elf)
    status = r.lines("status")
    if r.exit_code != 0 or not status or status[0][0] != "0":
        raise SystemExit(f"CMSIS-NN layer run failed ({out}): {r.output[-500:]}")
    sizes = symbol_sizes("cortex_m4", elf)
    code = sum(v for k, v in sizes.items() if k.startswith("arm_"))
    return r.regions()[0], [int(v) for v in r.lines("output")[0]], code


def layer_costs(work: Path, cmsis_src: Path | None = None, targets: Sequence[str] = T.TARGETS) -> list[dict]:
    """The six layer shapes of issue 15 on both targets (the MSP430 where they fit); with
    ``cmsis_src`` (a CMSIS-NN checkout) also CMSIS-NN's instructions on the Cortex-M4 for the same
    layer, its outputs compared with the host runtime's."""
    from freeml_keras import memory
    from freeml_keras.runtime import Interpreter

    lib = cmsis_nn_library(cmsis_src, work) if cmsis_src else None
    rows = []
    for name, kind, shape, kwargs, cmsis, before in LAYER_SHAPES:
        b, x = layer_model(kind, shape, kwargs)
        want = Interpreter(b).invoke(x)[0].ravel().tolist()
        layer = [l for l in memory.tflite_footprint(b).layers if l.subgraph == 0 and l.macs][0]
        outputs = op_output_bytes(b)[layer.op_index]
        for target in targets:
            row = {"layer": name, "target": target, "macs": int(layer.macs), "outputs": outputs}
            if target == "cortex_m4":
                row.update({"cmsis_nn_per_mac_issue15": cmsis, "before_per_mac_issue15": before})
                if lib is not None:
                    cost, got, code = cmsis_nn_layer(cmsis_src, lib, b, x, work / "layers" / f"cmsis_{len(rows)}")
                    row.update({"cmsis_nn_measured": cost, "cmsis_nn_per_mac": cost / layer.macs,
                                "cmsis_nn_output_equals_host": got == want, "cmsis_nn_code_bytes": code})
            try:
                r = T.run_model(target, b, x[0], work / "layers" / f"{target}_{kind}_{len(rows)}")
            except T.TargetRunError as e:
                row["error"] = str(e)[:300]
                row["overflow_bytes"] = T.memory_overflow(str(e))
                rows.append(row)
                print(f"  {target:10s} {name:38s} not run: {row['overflow_bytes'] or row['error'][:80]}", flush=True)
                continue
            # mspdebug's console keeps about 1,200 output values of a run: those are compared
            n = len(r.output)
            if r.output != want[:n] or n < min(len(want), 1000):
                raise SystemExit(f"{target} {name}: output differs from the host's")
            row["output_values_compared"] = n
            cost = [c for i, _, _, c in r.ops if i == layer.op_index][0]
            row.update({"unit": r.run.unit, "cost": cost, "per_mac": cost / layer.macs,
                        "per_output": cost / outputs, "text_bytes": r.size["text"]})
            if target == "cortex_m4":
                ref = row.get("cmsis_nn_per_mac", cmsis)
                row["cmsis_nn_figure_used"] = "measured here" if "cmsis_nn_per_mac" in row else "issue 15"
                row["at_most_cmsis_nn"] = row["per_mac"] <= ref
            rows.append(row)
            print(f"  {target:10s} {name:38s} {row['per_mac']:7.2f} {r.run.unit}/MAC"
                  + (f" (CMSIS-NN {row.get('cmsis_nn_per_mac', cmsis):.2f} "
                     f"{'measured' if 'cmsis_nn_per_mac' in row else 'issue 15'}, before {before})"
                     if target == "cortex_m4" else ""), flush=True)
    return rows


def kernel_code_bytes(work: Path, model_rows: list[dict]) -> dict:
    """Code bytes per kernel: text of each kernel's object in the Cortex-M4 builds (no LTO there);
    on the MSP430 (LTO) the assembly helpers and the whole image per model."""
    import subprocess
    out: dict = {"cortex_m4": {}, "msp430": {}}
    for obj in sorted(work.glob("cortex_m4_*/model_run.obj/*kernels_*.o")) + \
            sorted(work.glob("cortex_m4_*/model_run.obj/*src_math_c.o")):
        name = "math" if obj.name.endswith("src_math_c.o") else \
            obj.name.split("kernels_")[-1].replace("_c.o", "").replace(".o", "")
        text = subprocess.run(["arm-none-eabi-size", str(obj)], capture_output=True, text=True,
                              check=True).stdout.splitlines()[1].split()[0]
        out["cortex_m4"][name] = max(out["cortex_m4"].get(name, 0), int(text))
    for elf in sorted(work.glob("msp430_*/model_run.elf")):
        sizes = symbol_sizes("msp430", elf)
        for sym in ("fm_dot_s8_rows_hwmult", "fm_mul_by_qm", "fm_requant_s8", "fm_dot_s8_hwmult",
                    "fm_softmax_sum_hwmult", "fm_softmax_out_hwmult", "fm_px_hwmult"):
            if sym in sizes:
                out["msp430"][sym] = sizes[sym]
    out["msp430"]["image_text_by_model"] = {r["model"]: r["size"]["text"] for r in model_rows
                                            if r["target"] == "msp430" and "size" in r}
    out["msp430"]["note"] = ("fm_mul_by_qm: hwmult_asm.S's section of fm_mul_by_qm, fm_srdhm and fm_rdbpot; "
                             "fm_requant_s8 in its own section")
    return out


def requant_costs(work: Path, targets: Sequence[str] = T.TARGETS) -> list[dict]:
    """Cost of one requantized int8 output value (fm_requant_s8) per target, on accumulators of
    the sizes convolutions produce and the shifts of their multipliers; checked against the
    Python definition of TFLite's arithmetic."""
    from freeml_keras.exits.incremental import multiply_by_quantized_multiplier
    rng = np.random.default_rng(5)
    acc = [int(v) for v in rng.integers(-2**20, 2**20, 12)] + [-7, 3, 2**31 - 1, -2**31]
    shift = [int(v) for v in rng.integers(-12, -4, 12)] + [0, 1, -1, -31]
    mult = [int(v) for v in rng.integers(2**30, 2**31, len(acc))]
    want = [int(np.clip(multiply_by_quantized_multiplier(np.array([a]), m, sh)[0] - 5, -128, 127))
            for a, m, sh in zip(acc, mult, shift)]
    rows = []
    for target in targets:
        d = work / "requant" / target
        d.mkdir(parents=True, exist_ok=True)
        (d / "requant_cases.h").write_text("#include <stdint.h>\n" f"#define RQ_NUM_CASES {len(acc)}\n"
                                           + T.c_array("rq_acc", "int32_t", acc) + T.c_array("rq_mult", "int32_t", mult)
                                           + T.c_array("rq_shift", "int16_t", shift))
        elf = T.build(target, "requant_bench", [T.TARGETS_DIR / "programs" / "requant_bench.c",
                                                T.RUNTIME_DIR / "src" / "math.c"], d,
                      include_dirs=[d, T.RUNTIME_DIR / "include"], defines=T.TARGET_DEFINES[target],
                      opt=T.TARGET_OPT[target])
        r = T.run(target, elf)
        got = [int(line[1]) for line in r.lines("rq")]
        if got != want:
            raise SystemExit(f"{target}: fm_requant_s8 differs from TFLite's arithmetic: {got} != {want}")
        markers, *costs = r.regions()
        typical = costs[:12]
        rows.append({"target": target, "unit": r.unit, "per_output_typical_mean": float(np.mean(typical)),
                     "per_output_typical_max": int(max(typical)), "per_output_all_max": int(max(costs)),
                     "markers": markers, "per_output_typical_mean_less_markers": float(np.mean(typical)) - markers,
                     "cases": [{"acc": a, "shift": sh, "cost": c} for a, sh, c in zip(acc, shift, costs)],
                     "includes": "the call (its arguments, call and return) and the two markers' own few "
                                 "instructions (markers: an empty region's cost)"})
        print(f"  {target:10s} fm_requant_s8: mean {rows[-1]['per_output_typical_mean']:.0f}, "
              f"max {rows[-1]['per_output_all_max']} {r.unit} per output value "
              f"(of which the markers {markers})", flush=True)
    return rows


def demo_accumulators(demo_model: Path) -> list[dict]:
    """The int32 accumulators of the demo's CONV_2D / FULLY_CONNECTED layers on its first
    Fashion-MNIST test image, with each output's multiplier, shift and output range: from the
    dense form of the demo's model (``model_dense.tflite`` beside it, else the model itself) run
    by tf.lite's reference kernels with every tensor kept, each layer's input convolved in
    float64 (exact below 2^53) and checked: requantized, the accumulators give TFLite's outputs."""
    import warnings

    from freeml_keras.exits.incremental import multiply_by_quantized_multiplier
    from freeml_keras.format import tflite as ts
    from freeml_keras.format.prepared import quantize_multiplier
    from freeml_keras.keras import tf

    dense = demo_model.with_name("model_dense.tflite")
    b = (dense if dense.exists() else demo_model).read_bytes()
    _, x = demo_input(demo_model.read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = tf.lite.Interpreter(model_content=b, experimental_preserve_all_tensors=True,
                                 experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    m = ts.read_model(b)
    sg, S = m.subgraphs[0], ts.schema
    layers = []
    for i, op in enumerate(sg.operators):
        code = m.operatorCodes[op.opcodeIndex]
        kind = max(code.builtinCode, code.deprecatedBuiltinCode)
        if kind not in (S.BuiltinOperator.CONV_2D, S.BuiltinOperator.FULLY_CONNECTED):
            continue
        t_in, t_w, t_out = (sg.tensors[int(op.inputs[0])], sg.tensors[int(op.inputs[1])],
                            sg.tensors[int(op.outputs[0])])
        xin = it.get_tensor(int(op.inputs[0])).astype(np.float64) - int(t_in.quantization.zeroPoint[0])
        w = it.get_tensor(int(op.inputs[1])).astype(np.float64)
        bias = (it.get_tensor(int(op.inputs[2])).astype(np.float64) if len(op.inputs) > 2 and op.inputs[2] >= 0
                else np.zeros(w.shape[0]))
        opts = op.builtinOptions
        if kind == S.BuiltinOperator.CONV_2D:
            acc = tf.nn.conv2d(xin, np.transpose(w, (1, 2, 3, 0)), [1, opts.strideH, opts.strideW, 1],
                               "SAME" if opts.padding == S.Padding.SAME else "VALID",
                               dilations=[1, opts.dilationHFactor, opts.dilationWFactor, 1]).numpy()
        else:
            acc = xin.reshape(-1, w.shape[1]) @ w.T
        acc = (acc + bias).astype(np.int64).reshape(-1, w.shape[0])
        w_scales = list(t_w.quantization.scale)
        w_scales = w_scales * w.shape[0] if len(w_scales) == 1 else w_scales
        out_zp, out_scale = int(t_out.quantization.zeroPoint[0]), float(t_out.quantization.scale[0])
        act = opts.fusedActivationFunction
        lo = max(-128, out_zp) if act in (S.ActivationFunctionType.RELU, S.ActivationFunctionType.RELU6) else -128
        hi = min(127, out_zp + round(6 / out_scale)) if act == S.ActivationFunctionType.RELU6 else 127
        qm = [quantize_multiplier(float(t_in.quantization.scale[0]) * s / out_scale)[1:] for s in w_scales]
        want = it.get_tensor(int(op.outputs[0])).reshape(-1, w.shape[0])
        got = np.stack([np.clip(multiply_by_quantized_multiplier(acc[:, c], *qm[c]) + out_zp, lo, hi)
                        for c in range(w.shape[0])], axis=1)
        if not np.array_equal(got, want):
            raise SystemExit(f"demo op {i}: the accumulators do not give TFLite's outputs")
        layers.append({"op_index": i, "op": "CONV_2D" if kind == S.BuiltinOperator.CONV_2D else "FULLY_CONNECTED",
                       "acc": acc, "qm": qm, "range": (out_zp, lo, hi), "want": want})
    return layers


def demo_requant_costs(work: Path, demo_model: Path, per_layer: int = 120) -> dict:
    """fm_requant_s8 on the MSP430 on the demo's real accumulators (``demo_accumulators``): up
    to ``per_layer`` outputs of each layer drawn at random (seeded), each with its channel's
    multiplier and shift and its layer's output range (a fused ReLU clamps), outputs checked
    against TFLite's; the mean per output weighted by each layer's number of outputs (the
    requantization's cost per output value of an inference), as bench's requant cases (the call
    and the markers' few instructions included)."""
    rng = np.random.default_rng(15)
    rows, total, count = [], 0.0, 0
    for layer in demo_accumulators(demo_model):
        acc, n_ch = layer["acc"], layer["acc"].shape[1]
        flat = rng.choice(acc.size, min(per_layer, acc.size), replace=False)
        pix, ch = flat // n_ch, flat % n_ch
        off, lo, hi = layer["range"]
        d = work / "demo_requant" / str(layer["op_index"])
        d.mkdir(parents=True, exist_ok=True)
        n = len(flat)
        (d / "requant_cases.h").write_text(
            "#include <stdint.h>\n#define RQ_RANGES 1\n" f"#define RQ_NUM_CASES {n}\n"
            + T.c_array("rq_acc", "int32_t", acc[pix, ch])
            + T.c_array("rq_mult", "int32_t", [layer["qm"][c][0] for c in ch])
            + T.c_array("rq_shift", "int16_t", [layer["qm"][c][1] for c in ch])
            + T.c_array("rq_off", "int16_t", [off] * n) + T.c_array("rq_min", "int16_t", [lo] * n)
            + T.c_array("rq_max", "int16_t", [hi] * n))
        elf = T.build("msp430", "requant_bench", [T.TARGETS_DIR / "programs" / "requant_bench.c",
                                                  T.RUNTIME_DIR / "src" / "math.c"], d,
                      include_dirs=[d, T.RUNTIME_DIR / "include"], defines=T.TARGET_DEFINES["msp430"],
                      opt=T.TARGET_OPT["msp430"])
        r = T.run("msp430", elf)
        got = [int(line[1]) for line in r.lines("rq")]
        if got != layer["want"][pix, ch].tolist():
            raise SystemExit(f"msp430: fm_requant_s8 on demo op {layer['op_index']} differs from TFLite")
        markers, *costs = r.regions()
        outputs = int(acc.size)
        clamped = float(np.mean([(v == lo and lo > -128) or (v == hi and hi < 127) for v in got]))
        rows.append({"op_index": layer["op_index"], "op": layer["op"], "outputs": outputs, "sampled": n,
                     "range": [off, lo, hi], "mean": float(np.mean(costs)), "max": int(max(costs)),
                     "shifts": sorted({int(q[1]) for q in layer["qm"]}),
                     "acc_abs_max": int(np.abs(acc).max()), "clamped_share": clamped, "markers": markers})
        total += rows[-1]["mean"] * outputs
        count += outputs
        print(f"  msp430     demo op {layer['op_index']:2d} {layer['op']:16s} fm_requant_s8 mean "
              f"{rows[-1]['mean']:.0f} cycles per output ({outputs} outputs, range {off} [{lo}, {hi}])", flush=True)
    mean = total / count
    print(f"  msp430     the demo's layers: {mean:.1f} cycles per output value (weighted by outputs)", flush=True)
    return {"per_output_mean_weighted": mean, "outputs": count, "layers": rows,
            "source": "the dense form of the demo's model (model_dense.tflite beside it when present), "
                      "its first Fashion-MNIST test image; includes the call and the markers' few instructions"}


def softmax_costs(work: Path, targets: Sequence[str] = T.TARGETS) -> list[dict]:
    """SOFTMAX alone (one row of 10 and of 100 classes, input scale 0.1, beta 1): its cost per
    class (the difference over the 90 more classes) and its fixed cost (10 classes less 10 of
    those), outputs checked against TFLite Micro; and the bytes of its exp table (in the
    model's freeml_prepare words)."""
    from freeml_keras.format import tflite as ts
    from freeml_keras.format.prepared import operator_words, with_prepared
    from freeml_keras.runtime.reference import run_tflm

    rng = np.random.default_rng(25)
    rows = []
    for target in targets:
        cost, table = {}, {}
        for depth in (10, 100):
            opts = ts.schema.SoftmaxOptionsT()
            opts.beta = 1.0
            b = with_prepared(ts.op_model("SOFTMAX", [ts.tensor_spec([1, depth], scale=0.1, zp=0)],
                                          [ts.tensor_spec([1, depth], scale=1 / 256, zp=-128)], opts))
            x = rng.integers(-128, 128, (1, depth)).astype(np.int8)
            want = run_tflm(b, [x[None]])[0].ravel().tolist()
            r = T.run_model(target, b, x, work / "softmax" / f"{target}_{depth}")
            if r.output != want:
                raise SystemExit(f"{target}: SOFTMAX of {depth} classes differs from TFLite Micro")
            cost[depth] = r.ops[0][3]
            lengths = operator_words(b)[0][0][3]
            table[depth] = 4 * (lengths & 0xFFFF) + (lengths >> 16)
        per_class = (cost[100] - cost[10]) / 90
        rows.append({"target": target, "unit": "cycles" if target == "msp430" else "instructions",
                     "classes_10": cost[10], "classes_100": cost[100], "per_class": per_class,
                     "fixed": cost[10] - 10 * per_class, "table_bytes_scale_0.1": table[10]})
        print(f"  {target:10s} SOFTMAX: {per_class:.1f} per class + {rows[-1]['fixed']:.0f} fixed "
              f"(10 classes: {cost[10]})", flush=True)
    return rows


MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def per_mac_fields(row: dict) -> None:
    """Add cost per executed MAC and per output value to a model row's operators and totals."""
    from freeml_keras import devices
    unit = row["unit"]
    for o in row["ops"]:
        if o["op"] in MAC_OPS and o["sparse_macs"]:
            o["per_executed_mac"] = o[unit] / o["sparse_macs"]
        if o["output_bytes"]:
            o["per_output"] = o[unit] / o["output_bytes"]
    executed = sum(o["sparse_macs"] for o in row["ops"] if o["op"] in MAC_OPS)
    row["executed_macs"] = executed
    row["per_executed_mac"] = row["per_inference"] / executed if executed else None
    if row["target"] == "msp430":
        row["energy_uj_msp430fr5994"] = row["per_inference"] * devices.get("msp430fr5994").energy_per_cycle_j * 1e6


def before_figures() -> list[dict]:
    """The model rows of the JSON written before issue 15's kernels, with the same derived fields."""
    if not BASELINE.exists():
        return []
    rows = [r for r in json.loads(BASELINE.read_text())["models"] if "error" not in r]
    for r in rows:
        per_mac_fields(r)
    return [{k: r[k] for k in ("target", "model", "unit", "per_inference", "per_executed_mac", "executed_macs",
                               "ops", "size") if k in r} | ({"energy_uj_msp430fr5994": r["energy_uj_msp430fr5994"]}
                                                           if "energy_uj_msp430fr5994" in r else {})
            for r in rows]


def symbol_sizes(target: str, elf: Path) -> dict[str, int]:
    """Bytes of each function in ``elf`` (nm -S)."""
    import subprocess
    nm = "arm-none-eabi-nm" if target == "cortex_m4" else "llvm-nm"
    out = subprocess.run([nm, "-S", str(elf)], capture_output=True, text=True, check=True).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            sizes[parts[3]] = int(parts[1], 16)
    return sizes


def kernel_speed(work: Path) -> list[dict]:
    rng = np.random.default_rng(0)
    lengths = [64, 256]
    xs = [rng.integers(-128, 128, n).astype(np.int8) for n in lengths]
    ws = [rng.integers(-128, 128, n).astype(np.int8) for n in lengths]
    offsets, biases = [5, 5], [0, 0]
    expect = [int(np.sum((x.astype(np.int64) + 5) * w)) for x, w in zip(xs, ws)]
    rows = []
    for target, options, multiply in KERNEL_BUILDS:
        tag = target + "".join(f"_{k}{v}" for k, v in options.items())
        d = T.run_dot_cases(target, work / tag, xs, ws, offsets, biases, options)
        sizes = symbol_sizes(target, d.elf)
        for impl, costs in d.costs.items():
            if d.results[impl] != expect:
                raise SystemExit(f"{tag} {impl}: wrong dot products {d.results[impl]} != {expect}")
            rows.append({"target": target, "build": options, "multiply": multiply, "impl": impl,
                         "unit": d.run.unit, "per_mac": (costs[1] - costs[0]) / (lengths[1] - lengths[0]),
                         "cost_64": costs[0], "cost_256": costs[1],
                         "function_bytes": sizes.get(KERNEL_SYMBOLS[impl], 0)})
            print(f"  {tag:22s} {impl:7s} {rows[-1]['per_mac']:8.2f} {d.run.unit}/MAC", flush=True)
    return rows


DEMO_MODEL = Path("runs/demo/model.tflite")


@functools.lru_cache(maxsize=None)
def models(quick: bool, demo_model: Path | None = None) -> dict[str, tuple[bytes, np.ndarray]]:
    """Small trained digit models (8x8 inputs): an MLP that fits the MSP430 together with the
    runtime, a CNN, the zoo's cnn_s at width 0.25 and that cnn_s compressed to fit the MSP430;
    and the demo's compressed cnn_s (Fashion-MNIST) when ``demo_model`` exists."""
    from freeml_keras import datasets, zoo
    from freeml_keras.conversion import converter
    from freeml_keras.runtime.reference import io_quantization, quantize
    from freeml_keras.keras import keras

    (xtr, ytr), _, (xte, _) = datasets.load("digits")
    keras.utils.set_random_seed(0)
    built = {
        "mlp_64_16_10": keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(),
                                          keras.layers.Dense(16, activation="relu"),
                                          keras.layers.Dense(10, activation="softmax")]),
        "cnn_4x3x3": keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                                       keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
                                       keras.layers.Dense(10, activation="softmax")]),
    }
    for m in built.values():
        m.compile("adam", "sparse_categorical_crossentropy")
        m.fit(xtr, ytr, epochs=2 if quick else 10, verbose=0)
    if not quick:
        built["cnn_s_w0.25"] = zoo.pretrained("cnn_s", "digits", width=0.25, epochs=CNN_S_DIGITS_EPOCHS,
                                              verbose=0)
    out = {}
    for name, m in built.items():
        b = converter.convert(m, xtr[:100], sparse=False)
        (scale, zp), = io_quantization(b)[0]
        out[name] = (b, quantize(xte[:1], scale, zp))
    b, x, _ = compressed_cnn_s()
    out["cnn_s_compressed"] = (b, x[:1])
    if demo_model is not None and demo_model.exists():
        b = demo_model.read_bytes()
        out["cnn_s_demo"] = demo_input(b)
    return out


def demo_input(b: bytes) -> tuple[bytes, np.ndarray]:
    """The demo's model with its first Fashion-MNIST test image, quantized."""
    from freeml_keras import datasets
    from freeml_keras.runtime.reference import io_quantization, quantize

    (scale, zp), = io_quantization(b)[0]
    _, _, (xf, _) = datasets.load("fashion_mnist")
    return b, quantize(xf[:1], scale, zp)


def single_op_model(model_bytes: bytes, op_index: int, rows: int | None = None) -> bytes:
    """Operator ``op_index`` of the main subgraph as a model of its own (its constant inputs
    kept, the other buffers and the metadata left out); ``rows``: the input cut to its first
    ``rows`` rows and the output to as many as they give (stride 1, 'valid'), for a layer whose
    whole activations do not fit a build's RAM."""
    from freeml_keras.conversion import extract_subgraph
    from freeml_keras.format import tflite as ts
    m = ts.read_model(model_bytes)
    sg = m.subgraphs[0]
    op = sg.operators[op_index]
    const = {int(j) for j in op.inputs if j >= 0 and m.buffers[sg.tensors[j].buffer].data is not None
             and len(m.buffers[sg.tensors[j].buffer].data)}
    sg.operators = [op]
    sg.inputs = [int(j) for j in op.inputs if j >= 0 and int(j) not in const]
    sg.outputs = [int(op.outputs[0])]
    if rows is not None:
        t_in, t_out = sg.tensors[sg.inputs[0]], sg.tensors[sg.outputs[0]]
        cut = int(t_in.shape[1]) - rows
        t_in.shape = [t_in.shape[0], rows, *t_in.shape[2:]]
        t_out.shape = [t_out.shape[0], int(t_out.shape[1]) - cut, *t_out.shape[2:]]
        t_in.shapeSignature = t_out.shapeSignature = None
    m.subgraphs = [sg]
    return extract_subgraph(ts.write_model(m), 0)


# The demo's dense layers measured by demo_layer_costs with the kernels before issue 15's third
# MSP430 pass (commit 290e285): the "before" of --msp430's demo_layers.
DEMO_LAYERS_BEFORE = RESULTS / "targets_msp430_demo_layers_before.json"
# The demo's layers whose activations do not fit the bench build's RAM on the MSP430: measured on
# their first rows (the same weights and per-output work; cost per MAC is what is compared).
DEMO_LAYER_ROWS = {0: 20}


def demo_layer_costs(work: Path, demo_model: Path, target: str = "msp430") -> list[dict]:
    """Each dense MAC layer of the demo's model alone on ``target`` (one operator per model, a
    seeded random int8 input): cycles per MAC and per output value, outputs compared with the
    host runtime's. (The demo's whole model does not fit the bench's build: its device build is
    measured by bench/image.py.)"""
    from freeml_keras import memory
    from freeml_keras.format import tflite as ts
    from freeml_keras.runtime import Interpreter
    b = demo_model.read_bytes()
    rows = []
    for layer in memory.tflite_footprint(b).layers:
        if layer.subgraph or not layer.macs or layer.stored_format != "int8":
            continue
        cut = DEMO_LAYER_ROWS.get(layer.op_index)
        ob = single_op_model(b, layer.op_index, cut)
        om = ts.read_model(ob)
        shape = om.subgraphs[0].tensors[om.subgraphs[0].inputs[0]].shape
        x = np.random.default_rng(layer.op_index).integers(-128, 128, shape).astype(np.int8)
        want = Interpreter(ob).invoke(x)[0].ravel().tolist()
        macs = int(memory.tflite_footprint(ob).layers[0].macs)
        r = T.run_model(target, ob, x[0], work / "demo_layers" / f"{target}_{layer.op_index}")
        n = len(r.output)        # mspdebug's console keeps the first 850 .. 1,200 output values of a run
        if r.output != want[:n] or n < min(len(want), 500):
            raise SystemExit(f"{target} demo layer {layer.op_index}: output differs from the host's")
        cost = r.ops[0][3]
        rows.append({"op_index": layer.op_index, "op": layer.type, "target": target, "unit": r.run.unit,
                     "macs": macs, "outputs": len(want), "cost": cost, "per_mac": cost / macs,
                     "per_output": cost / len(want), "input_rows": cut or int(shape[1]),
                     "output_values_compared": n, "text_bytes": r.size["text"]})
        print(f"  {target:10s} demo op {layer.op_index:2d} {layer.type:16s} {cost / macs:6.1f} {r.run.unit}/MAC"
              + (f" (first {cut} input rows)" if cut else ""), flush=True)
    return rows


def op_output_bytes(model_bytes: bytes) -> dict[int, int]:
    """Bytes of each main-subgraph operator's output tensor, by operator index."""
    from freeml_keras.format import tflite as ts
    m = ts.read_model(model_bytes)
    sg = m.subgraphs[0]
    out = {}
    for i, op in enumerate(sg.operators or []):
        t = sg.tensors[int(op.outputs[0])]
        out[i] = int(np.prod(t.shape if t.shape is not None else [])) * ts.TENSOR_TYPE_BYTES[t.type]
    return out


def model_costs(work: Path, quick: bool, demo_model: Path | None,
                targets: Sequence[str] = T.TARGETS,
                only: dict[str, tuple[bytes, np.ndarray]] | None = None) -> tuple[list[dict], dict]:
    """Each model (``only``: these instead of ``models``) on the targets, per operator."""
    from freeml_keras import memory
    from freeml_keras.format.prepared import ensure_prepared
    from freeml_keras.runtime import Interpreter

    rows, tables = [], {}
    for name, (b, x) in (only if only is not None else models(quick, demo_model)).items():
        want = Interpreter(b).invoke(x)[0].ravel().tolist()
        for target in targets:
            try:
                r = T.run_model(target, b, x[0], work / f"{target}_{name}")
            except T.TargetRunError as e:
                over = T.memory_overflow(str(e))
                reason = (f"does not fit: {', '.join(f'{k} over by {v:,} B' for k, v in over.items())}"
                          if over else str(e)[:300])
                rows.append({"target": target, "model": name, "model_bytes": len(b), "error": reason,
                             "overflow_bytes": over})
                print(f"  {target:10s} {name:16s} not run: {reason}", flush=True)
                continue
            if r.output != want or r.output_invoke != want:
                raise SystemExit(f"{target} {name}: output {r.output} differs from the host's {want}")
            layers = {l.op_index: l for l in memory.tflite_footprint(b).layers if l.subgraph == 0}
            out_bytes = op_output_bytes(b)
            ops = [{"index": i, "op": OP_NAMES.get(c, str(c)), "units": u, r.run.unit: cost,
                    "per_unit": cost / u if u else 0.0,
                    "macs": layers[i].macs if i in layers else 0,
                    "sparse_macs": layers[i].sparse_macs if i in layers else 0,
                    "output_bytes": out_bytes[i]} for i, c, u, cost in r.ops]
            tables.setdefault(target, {})[name] = {"unit": r.run.unit, "ops": ops}
            rows.append({"target": target, "model": name, "model_bytes": len(ensure_prepared(b).data),
                         "unit": r.run.unit,
                         "per_inference": r.invoke_cost, "op_by_op_total": sum(o[r.run.unit] for o in ops),
                         "init": r.init_cost, "ops": ops, "size": r.size, "state_bytes": r.state_used,
                         "arena_bytes": r.arena_bytes, "output_equals_host": True})
            per_mac_fields(rows[-1])
            print(f"  {target:10s} {name:16s} {r.invoke_cost:10d} {r.run.unit}/inference, "
                  f"text {r.size['text']} B", flush=True)
    return rows, tables


GRANULARITIES = (1, 2, 4, 8, 16, 64, 1 << 30)
STEP_WORKS = (256, 512, 1024, 4096)          # work mode (the runtime's default mode)


def restart_costs(work: Path, quick: bool, demo_model: Path | None) -> list[dict]:
    """Power-on to progress, per model and target (freeml_keras.targets.power): cold
    preparation (precomputed requantization words; and, for comparison, the float prepare the
    runtime had before), warm restart from reset to the first resumed unit of work, the power-on
    budget (restart + largest atomic step, the smallest capacitor) and, on the MSP430, a short
    campaign of power failures inside the emulator, counted by where they landed."""
    from freeml_keras.conversion import extract_subgraph
    from freeml_keras.energy.livelock import power_on_budget
    from freeml_keras.format.prepared import with_prepared
    from freeml_keras.runtime import Interpreter
    from freeml_keras.targets import power
    rows = []
    ms = dict(models(quick, demo_model))
    b, x = ms["cnn_s_compressed"]
    ms["cnn_s_compressed_nohead"] = (with_prepared(extract_subgraph(b, 0)), x)
    for name, (b, x) in ms.items():
        b = with_prepared(b)
        xi = np.asarray(x).reshape(-1)
        ref = Interpreter(b).invoke(np.asarray(x))[0].ravel().tolist()
        for target in T.TARGETS:
            if target == "msp430" and name == "cnn_s_compressed":
                continue                      # measured without its head (cnn_s_compressed_nohead)
            row = {"model": name, "target": target}
            try:
                r = power.measure_restart(target, b, xi, work / "restart" / target / name)
                row.update({k: v for k, v in r.items() if k != "target"})
                try:
                    f = power.measure_restart(target, b, xi, work / "restart_float" / target / name,
                                              prepare_float=True)
                    row["cold_init_float_prepare"] = f["cold_init"]
                except T.TargetRunError as e:
                    row["cold_init_float_prepare"] = None
                    row["float_prepare_overflow"] = T.memory_overflow(str(e))
                dev = "msp430fr5994" if target == "msp430" else "apollo3"
                try:
                    bud = power_on_budget(b, dev)
                    row["power_on_budget"] = {k: bud[k] for k in ("restart", "largest_step", "step_mode",
                                                                  "needed_cycles", "needed_j", "min_capacitance_f")}
                except CostTableError as e:        # no per-operator costs for this core in its metadata
                    row["power_on_budget"] = {"error": str(e)}
                if target == "msp430" and not quick:
                    rep = power.run_power_failures(target, b, xi, work / "failures" / name, failures=60, seed=1)
                    row["failures"] = {"by_phase": rep.failures_by_phase, "answers": len(rep.outputs),
                                       "bit_exact": all(y == ref for _, y in rep.outputs),
                                       "power_ons": rep.power_ons, "warm_power_ons": rep.warm_power_ons}
                print(f"  {target:9s} {name:24s} warm restart {row['warm_restart']:>6,} {row['unit']}, "
                      f"cold {row['cold_init']:>9,} (float prepare: {row['cold_init_float_prepare']})", flush=True)
            except T.TargetRunError as e:
                row["error"] = str(e)[-300:]
                row["overflow"] = T.memory_overflow(str(e))
                print(f"  {target:9s} {name:24s} does not run: {row['overflow'] or row['error'][:120]}", flush=True)
            rows.append(row)
    return rows


def checkpoint_costs(work: Path, quick: bool, demo_model: Path | None,
                     only: Sequence[tuple[str, str]] | None = None) -> list[dict]:
    """Checkpointed vs continuous inference: the MLP and the compressed cnn_s on both targets,
    the zoo's cnn_s at width 0.25 and the demo's cnn_s on the Cortex-M4. The compressed cnn_s
    with its exit head (FM_EXITS 1) does not fit the MSP430 checkpointed; its backbone alone
    (``cnn_s_compressed_nohead``: ``compressed_cnn_s(exit_head=False)``, no exit points, so
    the build leaves the exit head's code out) does. A build that does not fit is recorded with
    the linker's overflow. ``only``: just these (target, model) cases."""
    from freeml_keras.runtime import Interpreter

    have = dict(models(quick, demo_model))
    b, x, _ = compressed_cnn_s(exit_head=False)
    have["cnn_s_compressed_nohead"] = (b, x[:1])
    cases = [(t, n) for n in ("mlp_64_16_10", "cnn_s_compressed") for t in T.TARGETS]
    cases += [("msp430", "cnn_s_compressed_nohead")]
    cases += [("cortex_m4", n) for n in ("cnn_s_w0.25", "cnn_s_demo") if n in have]
    if only is not None:
        cases = [c for c in cases if c in set(only)]
    rows = []
    for target, name in cases:
        b, x = have[name]
        want = Interpreter(b).invoke(x)[0].ravel().tolist()
        try:
            c = T.run_checkpointed(target, b, x[0], work / f"ckpt_{target}_{name}", granularities=GRANULARITIES,
                                   step_works=STEP_WORKS)
        except T.TargetRunError as e:
            over = T.memory_overflow(str(e))
            if not over:
                raise
            rows.append({"target": target, "model": name, "error": "does not fit", "overflow_bytes": over,
                         "exit_head_code": T.model_has_exits(b)})
            print(f"  {target:10s} {name:16s} not run: does not fit ({over})", flush=True)
            continue
        if c.plain_output != want or c.resume_output != want or \
                any(r["output"] != want for r in c.runs + c.work_runs):
            raise SystemExit(f"{target} {name}: checkpointed output differs from the host's")
        if not c.exits and c.exits_refused != (3, 3):
            raise SystemExit(f"{target} {name}: a build without exits did not refuse exits ({c.exits_refused})")
        for r in c.work_runs:
            rows.append({"target": target, "model": name, "unit": c.run.unit, "mode": "work",
                         "step_work": r["step_work"], "default": r["step_work"] == DEFAULT_STEP_WORK,
                         "cost": r["cost"], "continuous": c.plain_cost,
                         "overhead_pct": 100.0 * (r["cost"] / c.plain_cost - 1.0), "commits": r["commits"],
                         "steps": r["steps"], "largest_step_work": r["largest_step_work"],
                         "nvm_commit_bytes": r["nvm_bytes"], "units": r["units"],
                         "resume_ok": True, "text_bytes": c.size["text"], "exit_head_code": c.exits})
            print(f"  {target:10s} {name:16s} step work {r['step_work']:>6d}"
                  f"{' (default)' if rows[-1]['default'] else ''}: {rows[-1]['overhead_pct']:6.1f}% over "
                  f"{c.plain_cost} {c.run.unit}, {r['steps']} steps, {r['commits']} commits, "
                  f"{r['nvm_bytes']} B", flush=True)
        for r in c.runs:
            rows.append({"target": target, "model": name, "unit": c.run.unit, "mode": "units",
                         "granularity": r["granularity"] if r["granularity"] < (1 << 30) else "operator",
                         "cost": r["cost"], "continuous": c.plain_cost,
                         "overhead_pct": 100.0 * (r["cost"] / c.plain_cost - 1.0), "commits": r["commits"],
                         "nvm_commit_bytes": r["nvm_bytes"], "units": r["units"],
                         "resume_ok": True, "text_bytes": c.size["text"], "exit_head_code": c.exits})
            print(f"  {target:10s} {name:16s} granularity {rows[-1]['granularity']!s:>8s}: "
                  f"{rows[-1]['overhead_pct']:6.1f}% over {c.plain_cost} {c.run.unit}, "
                  f"{r['commits']} commits, {r['nvm_bytes']} B", flush=True)
    return rows


def plot(kernels: list[dict], model_rows: list[dict], ckpt_rows: list[dict], path: Path,
         before: Sequence[dict] = ()) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2, a3, a4, a5) = plt.subplots(1, 5, figsize=(28, 4.5))
    # cost per executed MAC by operator kind, before issue 15 and now (models in both runs)
    now = {(r["target"], r["model"]): r for r in model_rows if "error" not in r}
    old = {(r["target"], r["model"]): r for r in before}
    bars = []
    for key in [k for k in now if k in old]:
        for op in MAC_OPS:
            pair = []
            for rows in (old[key], now[key]):
                ops = [o for o in rows["ops"] if o["op"] == op and o["sparse_macs"]]
                if ops:
                    pair.append(sum(o[rows["unit"]] for o in ops) / sum(o["sparse_macs"] for o in ops))
            if len(pair) == 2:
                bars.append((f"{'M4' if key[0] == 'cortex_m4' else '430'} {key[1]}\n{op}", *pair))
    xs = np.arange(len(bars))
    a5.bar(xs - 0.2, [b[1] for b in bars], 0.4, label="before issue 15", color="tab:gray")
    a5.bar(xs + 0.2, [b[2] for b in bars], 0.4, label="now", color="tab:green")
    a5.set_yscale("log")
    a5.set_xticks(xs, [b[0] for b in bars], fontsize=5, rotation=60)
    a5.set_ylabel("instructions (M4) / cycles (MSP430) per executed MAC")
    a5.set_title("cost per executed MAC by operator")
    a5.legend(fontsize=7)
    short = {"hardware": "", "hardware multiplier": " hw", "software multiply": " sw"}
    labels = [f"{'M4' if k['target'] == 'cortex_m4' else '430'}{short[k['multiply']]}\n{k['impl']}"
              for k in kernels]
    colors = ["tab:blue" if k["target"] == "cortex_m4" else "tab:orange" for k in kernels]
    a1.bar(range(len(kernels)), [k["per_mac"] for k in kernels], color=colors)
    a1.set_yscale("log")
    a1.set_xticks(range(len(kernels)), labels, fontsize=7)
    a1.set_ylabel("instructions (M4) / MCLK cycles (MSP430) per int8 MAC")
    a1.axhline(3, color="tab:blue", ls="--", lw=0.8, label="M4 target: 3 instructions")
    a1.axhline(30, color="tab:orange", ls="--", lw=0.8, label="MSP430 target: 30 cycles")
    a1.legend(fontsize=7)
    a1.set_title("int8 MAC inner loop")
    ok = [r for r in model_rows if "error" not in r]
    bottom = np.zeros(len(ok))
    ops = sorted({o["op"] for r in ok for o in r["ops"]})
    for op in ops:
        vals = np.array([sum(o[r["unit"]] for o in r["ops"] if o["op"] == op) / r["op_by_op_total"] for r in ok])
        a2.bar(range(len(ok)), vals, bottom=bottom, label=op)
        bottom += vals
    a2.set_xticks(range(len(ok)), [f"{r['target']}\n{r['model']}" for r in ok], fontsize=6, rotation=30)
    a2.set_ylabel("share of one inference")
    a2.set_title("per-operator cost")
    a2.legend(fontsize=7)
    ran = [r for r in ckpt_rows if "error" not in r]
    for (target, model) in dict.fromkeys((r["target"], r["model"]) for r in ran):
        rows = [r for r in ran if r["target"] == target and r["model"] == model and r["mode"] == "units"]
        gs = [r["granularity"] if isinstance(r["granularity"], int) else 1024 for r in rows]
        style = "o-" if target == "cortex_m4" else "s--"
        label = f"{'M4' if target == 'cortex_m4' else '430'} {model}"
        a3.plot(gs, [r["overhead_pct"] for r in rows], style, label=label)
        rows = [r for r in ran if r["target"] == target and r["model"] == model and r["mode"] == "work"]
        a4.plot([r["step_work"] for r in rows], [r["overhead_pct"] for r in rows], style, label=label)
    a3.set_xscale("log", base=2)
    a3.set_xlabel("units per atomic step (rightmost: one operator)")
    a3.set_title("granularity in units / overhead")
    a4.set_xscale("log", base=2)
    a4.axvline(DEFAULT_STEP_WORK, color="k", ls=":", lw=0.8, label="default")
    a4.set_xlabel("MAC-equivalents per atomic step (work mode)")
    a4.set_title("granularity in work (default mode) / overhead")
    for ax in (a3, a4):
        ax.set_ylabel("checkpoint overhead, % of continuous run")
        ax.axhline(5, color="grey", ls="--", lw=0.8, label="target: 5%")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_layers(layers: list[dict], path: Path) -> None:
    """Issue 15's six layer shapes on the Cortex-M4: instructions per MAC of these kernels before
    that issue, of Arm's CMSIS-NN (measured here, or the issue's figure) and now."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in layers if r["target"] == "cortex_m4" and "per_mac" in r]
    xs = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.bar(xs - 0.27, [r["before_per_mac_issue15"] for r in rows], 0.27, label="ours before issue 15", color="tab:gray")
    ax.bar(xs, [r.get("cmsis_nn_per_mac", r["cmsis_nn_per_mac_issue15"]) for r in rows], 0.27,
           label="CMSIS-NN" + (" (measured here)" if rows and "cmsis_nn_per_mac" in rows[0] else " (issue 15)"),
           color="tab:blue")
    ax.bar(xs + 0.27, [r["per_mac"] for r in rows], 0.27, label="ours now", color="tab:green")
    ax.set_xticks(xs, ["\n".join(r["layer"].replace(",", "").split(" ", 1)) for r in rows], fontsize=7)
    ax.set_ylabel("instructions per MAC (Cortex-M4, QEMU + TCG plugin)")
    ax.set_title("issue 15 layer shapes: cost per MAC by operator, before and after")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 training epochs, no zoo cnn_s")
    ap.add_argument("--demo-model", type=Path, default=DEMO_MODEL,
                    help="the demo's model.tflite (`freeml demo --out DIR`), measured when it exists")
    ap.add_argument("--out", type=Path, default=RESULTS / "targets.json")
    ap.add_argument("--update-tables", action="store_true",
                    help="also write the measured cost tables into the package "
                         f"({SHIPPED_TABLES.relative_to(SHIPPED_TABLES.parents[2])}), which the library uses")
    ap.add_argument("--power-only", action="store_true",
                    help="only the power-on section: bench/results/restart.json (and, with --update-tables, "
                         "only the shipped tables' restart section)")
    ap.add_argument("--msp430", action="store_true",
                    help="only the MSP430's requantization, SOFTMAX, models and the demo's layers, into "
                         "bench/results/targets_msp430.json with bench/results/targets.json's MSP430 figures as "
                         "'before' (with --update-tables: the MSP430 cost tables of the models measured)")
    ap.add_argument("--layers", action="store_true",
                    help="only the six layer shapes of issue 15 on the Cortex-M4 and the demo model there, into "
                         "bench/results/targets_layers.json")
    ap.add_argument("--cmsis-nn", type=Path, default=Path(os.environ[CMSIS_ENV]) if os.environ.get(CMSIS_ENV) else None,
                    help=f"a checkout of Arm's CMSIS-NN (Include/, Source/; default ${CMSIS_ENV}): also measure its "
                         "kernels on the six layer shapes (not fetched here: CI has no network)")
    args = ap.parse_args()
    for target in T.TARGETS:
        T.check_tools(target)
    if args.layers:
        return layers_only(args)
    if args.power_only:
        return power_only(args)
    if args.msp430:
        return msp430_only(args)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="freeml-targets-") as tmp:
        work = Path(tmp)
        print("int8 MAC inner loop:", flush=True)
        kernels = kernel_speed(work)
        print("requantization (one output value):", flush=True)
        requant = requant_costs(work)
        print("SOFTMAX (exp table):", flush=True)
        softmax = softmax_costs(work)
        print("models:", flush=True)
        model_rows, tables = model_costs(work, args.quick, args.demo_model)
        kernel_code = kernel_code_bytes(work, model_rows)
        print("layer shapes of issue 15:", flush=True)
        layers = layer_costs(work, args.cmsis_nn)
        print("checkpointing:", flush=True)
        ckpt_rows = checkpoint_costs(work, args.quick, args.demo_model)
        print("power-on (restart, cold preparation, failures):", flush=True)
        restart_rows = restart_costs(work, args.quick, args.demo_model)
    best = {t: min(k["per_mac"] for k in kernels if k["target"] == t and k["impl"] in ("dsp", "hwmult"))
            for t in T.TARGETS}
    result = {
        "benchmark": "targets", "quick": args.quick, "host": platform.platform(),
        "demo_model": str(args.demo_model) if args.demo_model.exists() else None,
        "wall_s": time.time() - t0,
        "counters": {"cortex_m4": "qemu-system-arm 7.2 mps2-an386, TCG plugin: executed instructions",
                     "msp430": "mspdebug 0.22 sim: MCLK cycles (MSP430 timings, no FRAM wait states)"},
        "targets_met": {"m4_instructions_per_mac<=3": best["cortex_m4"] <= 3.0,
                        "msp430_cycles_per_mac<=30": best["msp430"] <= 30.0},
        "best_per_mac": best, "kernels": kernels, "requant": requant, "softmax": softmax, "models": model_rows,
        "before": {"source": str(BASELINE.relative_to(RESULTS.parents[1])), "models": before_figures()},
        "kernel_code_bytes": kernel_code, "layers": layers, "cost_tables": tables,
        "cmsis_nn": cmsis_note(args.cmsis_nn),
        "checkpointing": ckpt_rows, "restart": restart_rows,
    }
    result["targets_met"].update(issue15_targets(requant, model_rows, layers, softmax))
    ok = [r for r in restart_rows if "warm_restart" in r]
    result["targets_met"].update({
        "msp430_warm_restart<=2000_cycles": all(r["warm_restart"] <= 2000 for r in ok if r["target"] == "msp430"),
        "m4_warm_restart<=1000_instructions": all(r["warm_restart"] <= 1000 for r in ok if r["target"] == "cortex_m4"),
    })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(kernels, model_rows, ckpt_rows, args.out.with_suffix(".png"), result["before"]["models"])
    plot_layers(layers, args.out.with_name("targets_layers.png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')} in {result['wall_s']:.0f} s")
    if args.update_tables:
        restart = _restart_section(ok)
        # bench/sparse.py's per-layer dense / CSR tables (section "layouts") are kept
        layouts = json.loads(SHIPPED_TABLES.read_text()).get("layouts", {}) if SHIPPED_TABLES.exists() else {}
        SHIPPED_TABLES.write_text(json.dumps({"version": COST_TABLES_VERSION, "layouts": layouts,
                                              "written_by": "bench/targets.py --update-tables",
                                              "quick": args.quick, "cost_tables": tables,
                                              "restart": restart}, indent=1))
        print(f"updated the shipped cost tables {SHIPPED_TABLES}")
    return 0


def issue15_targets(requant: list[dict], model_rows: list[dict], layers: list[dict],
                    softmax: Sequence[dict] = (), demo_layers: Sequence[dict] = (),
                    demo_requant: dict | None = None) -> dict:
    """Issue 15's targets: met or not, with the measured figure."""
    rq = {r["target"]: r for r in requant}
    ok = {(r["target"], r["model"]): r for r in model_rows if "error" not in r}
    out: dict = {}
    if "msp430" in rq:
        out["msp430_requant<=150_cycles_per_output"] = rq["msp430"]["per_output_typical_mean"] <= 150
    if demo_requant:
        out["msp430_requant<=150_cycles_per_output (the demo's real accumulators)"] = \
            demo_requant["per_output_mean_weighted"] <= 150
    m = ok.get(("msp430", "cnn_s_compressed"))
    if m:
        out["msp430_cnn_s_compressed<=60_cycles_per_executed_mac"] = m["per_executed_mac"] <= 60
    for key, r in ok.items():
        sm = [o for o in r["ops"] if o["op"] == "SOFTMAX"]
        if key[0] == "msp430" and sm:
            classes = sm[0]["output_bytes"]
            out[f"msp430_softmax<=20_per_class+2000 ({key[1]})"] = sm[0]["cycles"] <= 20 * classes + 2000
    for r in softmax:
        if r["target"] == "msp430":
            out["msp430_softmax<=20_cycles_per_class"] = r["per_class"] <= 20
            out["msp430_softmax_fixed<2000_cycles"] = r["fixed"] < 2000
    for r in demo_layers:
        if r["target"] == "msp430":
            out[f"msp430_demo_layer_{r['op_index']}_{r['op']}<=40_cycles_per_mac"] = r["per_mac"] <= 40
    d = ok.get(("cortex_m4", "cnn_s_demo"))
    if d:
        out["m4_demo<=4_instructions_per_executed_mac"] = d["per_executed_mac"] <= 4
    for r in layers:
        if r["target"] == "cortex_m4" and "per_mac" in r:
            out[f"m4_at_most_cmsis_nn ({r['layer']})"] = r["at_most_cmsis_nn"]
    return out


def _restart_section(rows: list[dict]) -> dict:
    """The shipped tables' restart section from the power-on rows."""
    restart: dict = {}
    for r in rows:
        if "warm_restart" not in r:
            continue
        t = restart.setdefault(r["target"], {"unit": r["unit"], "measured_by":
                                             "freeml_keras.targets.power.measure_restart (bench/targets.py)",
                                             "models": {}})
        t["models"][r["model"]] = {"warm_restart": r["warm_restart"], "cold_init": r["cold_init"]}
    return restart


def msp430_only(args) -> int:
    """The MSP430's requantization, SOFTMAX, models and the demo's layers alone, next to the MSP430
    figures of the last full run (bench/results/targets.json: ``before_after``) and of the last
    run of this mode (the file this one replaces: ``previous``): bench/results/targets_msp430.json.
    With --update-tables the MSP430 cost tables of the models measured replace theirs in the
    shipped tables (the other entries are kept)."""
    t0 = time.time()
    out = RESULTS / "targets_msp430.json"
    previous = json.loads((RESULTS / "targets.json").read_text())
    last = json.loads(out.read_text()) if out.exists() else None
    with tempfile.TemporaryDirectory(prefix="freeml-msp430-") as tmp:
        work = Path(tmp)
        print("requantization (one output value):", flush=True)
        requant = requant_costs(work, ("msp430",))
        print("SOFTMAX (exp table):", flush=True)
        softmax = softmax_costs(work, ("msp430",))
        print("models:", flush=True)
        model_rows, tables = model_costs(work, args.quick, args.demo_model, ("msp430",))
        code = kernel_code_bytes(work, model_rows)["msp430"]
        demo_layers, demo_requant = [], None
        if args.demo_model.exists():
            print("the demo's dense layers, one per model:", flush=True)
            demo_layers = demo_layer_costs(work, args.demo_model)
            print("requantization on the demo's real accumulators:", flush=True)
            demo_requant = demo_requant_costs(work, args.demo_model)
    before = {r["model"]: r for r in previous["models"] if r["target"] == "msp430" and "error" not in r}
    side = []
    for r in model_rows:
        if "error" in r or r["model"] not in before:
            continue
        b = before[r["model"]]
        side.append({"model": r["model"], "before": b["per_inference"], "after": r["per_inference"],
                     "per_executed_mac_before": b.get("per_executed_mac"),
                     "per_executed_mac_after": r["per_executed_mac"],
                     "init_before": b.get("init"), "init_after": r["init"],
                     "text_before": b["size"]["text"], "text_after": r["size"]["text"],
                     "model_bytes_before": b.get("model_bytes"), "model_bytes_after": r["model_bytes"],
                     "state_before": b.get("state_bytes"), "state_after": r["state_bytes"],
                     "ops": [{"index": o["index"], "op": o["op"], "before": bo["cycles"], "after": o["cycles"]}
                             for o, bo in zip(r["ops"], b["ops"])]})
    prev = None
    if last is not None:
        prev = {"command": last.get("command"), "requant": last.get("requant"), "softmax": last.get("softmax"),
                "demo_requant": last.get("demo_requant"),
                "models": [{k: r.get(k) for k in ("model", "per_inference", "per_executed_mac", "size", "error")}
                           | {"ops": [{k: o.get(k) for k in ("index", "op", "cycles")} for o in r.get("ops", [])]}
                           for r in last.get("models", [])],
                "demo_layers": last.get("demo_layers"), "kernel_code_bytes": last.get("kernel_code_bytes")}
    result = {"benchmark": "targets --msp430", "quick": args.quick, "host": platform.platform(),
              "command": "bench/targets.py --msp430" + (" --quick" if args.quick else "")
                         + (" --demo-model PATH" if demo_layers else ""),
              "before_source": "bench/results/targets.json (the last full run)",
              "previous_source": "the last bench/targets.py --msp430 run (this file before this run)",
              "wall_s": time.time() - t0, "unit": "cycles (mspdebug 0.22 sim)",
              "targets_met": issue15_targets(requant, model_rows, [], softmax, demo_layers, demo_requant),
              "requant_before": [r for r in previous["requant"] if r["target"] == "msp430"],
              "requant": requant, "demo_requant": demo_requant, "softmax": softmax, "models": model_rows,
              "before_after": side, "demo_layers": demo_layers,
              "demo_layers_before": json.loads(DEMO_LAYERS_BEFORE.read_text()) if DEMO_LAYERS_BEFORE.exists() else None,
              "kernel_code_bytes": code, "previous": prev}
    out.write_text(json.dumps(result, indent=1))
    for s in side:
        print(f"  {s['model']:16s} {s['before']:9d} -> {s['after']:9d} cycles; "
              + ", ".join(f"{o['op']} {o['before']} -> {o['after']}" for o in s["ops"]))
    print(f"wrote {out} in {result['wall_s']:.0f} s; targets met: {result['targets_met']}")
    if args.update_tables:
        doc = json.loads(SHIPPED_TABLES.read_text())
        doc["cost_tables"].setdefault("msp430", {}).update(tables.get("msp430", {}))
        doc["written_by"] = "bench/targets.py --update-tables (MSP430 entries: bench/targets.py --msp430 --update-tables)"
        SHIPPED_TABLES.write_text(json.dumps(doc, indent=1))
        print(f"updated the MSP430 cost tables of {', '.join(tables.get('msp430', {}))} in {SHIPPED_TABLES}")
    return 0


def cmsis_note(src: Path | None) -> dict:
    """Where the CMSIS-NN figures of a run come from."""
    if src is None:
        return {"measured": False, "figures": "issue 15's (measured once with CMSIS-NN built from its public sources; "
                f"give --cmsis-nn PATH or ${CMSIS_ENV} to measure them: CI has no network to fetch it)"}
    import subprocess
    head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"measured": True, "source": str(src), "commit": head or None,
            "build": "its int8 sources, arm-none-eabi-gcc 12 -O2 -mcpu=cortex-m4 -mfloat-abi=hard; "
                     "programs/cmsis_nn_layer.c calls the wrapper (conv, depthwise) or FULLY_CONNECTED function; "
                     "the FULLY_CONNECTED kernel sums computed before the measured region, as TFLite Micro's Prepare"}


def layer_code_bytes(rows: list[dict], work: Path) -> None:
    """Code bytes of our kernel per layer row (Cortex-M4): the kernel's object text plus the
    kernels/mac_dsp.c functions it calls (symbol sizes in the image), the shared requantization
    (rq_store, rq_general) included."""
    import subprocess
    obj_of = {"conv": "conv_2d", "dw": "depthwise_conv_2d", "fc": "fully_connected"}
    shared = ("rq_store", "rq_general")
    dsp_of = {"conv": ("fm_conv_pair_dsp", *shared), "dw": ("fm_dw_pixel_dsp", *shared),
              "fc": ("fm_fc_row_dsp", *shared)}
    for d in sorted((work / "layers").glob("cortex_m4_*")):
        kind, i = d.name.split("_")[2], int(d.name.split("_")[3])
        obj = next((d / "model_run.obj").glob(f"*kernels_{obj_of[kind]}_c.o"))
        text = int(subprocess.run(["arm-none-eabi-size", str(obj)], capture_output=True, text=True,
                                  check=True).stdout.splitlines()[1].split()[0])
        sizes = symbol_sizes("cortex_m4", d / "model_run.elf")
        # gcc may clone a static function (rq_store.constprop.0): every copy counts
        rows[i]["code_bytes"] = text + sum(v for k, v in sizes.items() if k.split(".")[0] in dsp_of[kind])


def every_mac_fields(row: dict, model_bytes: bytes) -> None:
    """Add the executed MACs counted as every MAC of a dense layer and the non-zero ones of a
    CSR layer (``executed_macs`` counts non-zero MACs everywhere), and the cost per such MAC."""
    from freeml_keras import memory
    stored = {l.op_index: l.stored_format for l in memory.tflite_footprint(model_bytes).layers if l.subgraph == 0}
    n = sum(o["sparse_macs"] if stored.get(o["index"]) == "int8_csr" else o["macs"]
            for o in row["ops"] if o["op"] in MAC_OPS)
    row["executed_macs_dense_every_mac"] = n
    row["per_executed_mac_dense_every_mac"] = row["per_inference"] / n if n else None


def layers_only(args) -> int:
    """The six layer shapes on the Cortex-M4 (with CMSIS-NN when given) and the demo model's
    whole inference there: bench/results/targets_layers.json."""
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="freeml-layers-") as tmp:
        work = Path(tmp)
        print("layer shapes of issue 15 (Cortex-M4):", flush=True)
        layers = layer_costs(work, args.cmsis_nn, ("cortex_m4",))
        layer_code_bytes(layers, work)
        demo = []
        if args.demo_model.exists():
            print("the demo's model:", flush=True)
            b = args.demo_model.read_bytes()
            demo, _ = model_costs(work, True, None, ("cortex_m4",), only={"cnn_s_demo": demo_input(b)})
            # the same model with the dense-or-CSR choice made for the M4 (the demo converts for
            # the MSP430): when it differs, measured too
            from freeml_keras.conversion.layouts import relayout
            m4, _ = relayout(b, "cortex_m4")
            if m4 != b:
                demo += model_costs(work, True, None, ("cortex_m4",),
                                    only={"cnn_s_demo_m4_layouts": demo_input(m4)})[0]
            for row, data in zip(demo, (b, m4)):
                every_mac_fields(row, data)
    result = {"benchmark": "targets --layers", "host": platform.platform(),
              "command": "bench/targets.py --layers" + (" --cmsis-nn PATH" if args.cmsis_nn else ""),
              "wall_s": time.time() - t0, "unit": "instructions (qemu-system-arm 7.2 mps2-an386, TCG plugin)",
              "cmsis_nn": cmsis_note(args.cmsis_nn), "layers": layers,
              "demo_model": str(args.demo_model) if demo else None, "models": demo,
              "targets_met": issue15_targets([], demo, layers)}
    out = RESULTS / "targets_layers.json"
    out.write_text(json.dumps(result, indent=1))
    plot_layers(layers, out.with_suffix(".png"))
    print(f"wrote {out} in {result['wall_s']:.0f} s; targets met: {result['targets_met']}")
    return 0


def power_only(args) -> int:
    """The power-on section alone, into bench/results/restart.json (and the shipped tables)."""
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="freeml-power-") as tmp:
        print("power-on (restart, cold preparation, failures):", flush=True)
        rows = restart_costs(Path(tmp), args.quick, args.demo_model)
    ok = [r for r in rows if "warm_restart" in r]
    out = RESULTS / "restart.json"
    result = {"benchmark": "targets --power-only", "quick": args.quick, "host": platform.platform(),
              "command": "bench/targets.py --power-only" + (" --quick" if args.quick else ""),
              "wall_s": time.time() - t0,
              "targets_met": {
                  "msp430_warm_restart<=2000_cycles": all(r["warm_restart"] <= 2000 for r in ok
                                                          if r["target"] == "msp430"),
                  "m4_warm_restart<=1000_instructions": all(r["warm_restart"] <= 1000 for r in ok
                                                            if r["target"] == "cortex_m4")},
              "restart": rows}
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out} in {result['wall_s']:.0f} s; targets met: {result['targets_met']}")
    if args.update_tables:
        doc = json.loads(SHIPPED_TABLES.read_text())
        doc["restart"] = _restart_section(rows)
        SHIPPED_TABLES.write_text(json.dumps(doc, indent=1))
        print(f"updated the restart section of {SHIPPED_TABLES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
