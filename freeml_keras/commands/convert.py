"""``freeml convert MODEL (--dataset NAME | --data FILE.npz)``: int8 TFLite flatbuffer (+ exit
head, + C source)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from freeml_keras.cli import CommandError
from freeml_keras.commands.data import add_data_options, load_data, model_io


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert a Keras model to a full-int8 .tflite",
                       description="Full-int8 TFLite flatbuffer, sparse weights in TFLite's "
                                   "sparsity format (unless --dense), the exit head and FreeML "
                                   "metadata with --exit-model; reports int8 vs Keras accuracy.")
    p.add_argument("model", help="Keras model file (.keras/.h5, Keras 3 or tf_keras) or a saved "
                                 "exit model directory")
    add_data_options(p)
    p.add_argument("--exit-model", default=None, help="exit model directory (ExitModel.save)")
    p.add_argument("--dense", action="store_true", help="store all weights dense (stock TFLite Micro)")
    p.add_argument("--out", required=True, help="output .tflite path")
    p.add_argument("--c-header", default=None, help="also write the model as C source (.h + .c)")
    p.add_argument("--section", default=None, help="linker section for the C array (e.g. .fram)")
    p.add_argument("--target", default=None,
                   help="device (msp430fr5994, apollo3, apollo4) or core (msp430, cortex_m4) whose "
                        "measured per-operator costs go into the metadata")
    p.add_argument("--measure", action="store_true",
                   help="with --target: run one inference on the target's emulator (QEMU or "
                        "mspdebug) and write the measured per-operator costs instead")
    p.add_argument("--strip-names", action="store_true",
                   help="drop tensor names and signatures (saves kilobytes of FRAM)")
    p.add_argument("--calibration", type=int, default=200,
                   help="calibration (representative) examples from the training split (default 200)")
    p.add_argument("--eval-limit", type=int, default=1000,
                   help="test examples to evaluate (default 1000; the validation split when "
                        "--data has no x_test)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from freeml_keras import datasets, zoo
    from freeml_keras.bridge import load_model
    from freeml_keras.conversion import convert, export_c
    from freeml_keras.runtime.reference import io_quantization, quantize, run_tflite
    from freeml_keras.format.metadata import read_metadata

    if args.measure and not args.target:
        raise CommandError("--measure needs --target (the emulator to measure on)")
    exit_model = None
    if args.exit_model:
        from freeml_keras.exits import ExitModel
        exit_model = ExitModel.load(args.exit_model)
    path = Path(args.model)
    if not path.exists():
        raise CommandError(f"{path}: no such file or directory")
    if (path / "exit_model.json").exists():
        from freeml_keras.exits import ExitModel
        exit_model = exit_model or ExitModel.load(path)
        model = exit_model.backbone
    else:
        model, _ = load_model(path)
    shape, classes, name = model_io(model)
    d = load_data(args, input_shape=shape, num_classes=classes, input_name=name)
    tr, te = d.train, d.test
    calib = datasets.subset(tr, args.calibration, seed=1)[0]
    policy = None
    exit_dir = Path(args.exit_model) if args.exit_model else path if exit_model is not None else None
    if exit_dir is not None and (exit_dir / "policy.json").exists():   # from freeml exits
        from freeml_keras.exits import ExitPolicy
        policy = ExitPolicy.from_json((exit_dir / "policy.json").read_text())
    data = convert(model, calib, sparse=not args.dense, exit_model=exit_model, policy=policy,
                   num_calibration=args.calibration, target=args.target, strip=args.strip_names)
    x, y = datasets.subset(te, args.eval_limit, seed=2)
    (iq,), _ = io_quantization(data)
    if args.measure:
        import tempfile
        from freeml_keras.targets import measure
        print(f"measuring one inference on the {args.target} emulator ...", file=sys.stderr, flush=True)
        from freeml_keras.targets import TargetRunError, ToolMissingError, memory_overflow
        with tempfile.TemporaryDirectory() as work:
            try:
                data = measure(data, args.target, quantize(x[:1], *iq), work)
            except (TargetRunError, ToolMissingError) as e:
                over = memory_overflow(str(e))
                why = (", ".join(f"{region} over by {n:,} B" for region, n in over.items()) if over
                       else str(e).strip().splitlines()[-1])
                raise CommandError(f"cannot measure on {args.target}: {why}; nothing was written") from None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    pred = run_tflite(data, [quantize(x, *iq)])[0]
    summary = {"out": str(out), "bytes": len(data), "sparse": not args.dense,
               "keras_accuracy": zoo.accuracy(model, (x, y)),
               "int8_accuracy": float(np.mean(np.argmax(pred, axis=-1) == y)),
               "eval_examples": int(len(x))}
    md = read_metadata(data)
    if md is not None and md.exits:
        summary["exit_points"] = md.info.get("exit_points")
        summary["head_weight_bytes"] = md.info.get("head_weight_bytes")
    if md is not None and "cost" in md.info:
        summary["cost"] = dict(md.info["cost"], total=sum(o.cost for o in md.ops))
    if args.c_header:
        h, c = export_c(data, args.c_header, symbol=_symbol(out.stem), section=args.section)
        summary["c_files"] = [str(h), str(c)]
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {out} ({len(data):,} B, {'sparse' if summary['sparse'] else 'dense'} weights)")
        print(f"test accuracy on {summary['eval_examples']} examples: Keras "
              f"{summary['keras_accuracy']:.4f}, int8 {summary['int8_accuracy']:.4f} "
              f"({100 * (summary['int8_accuracy'] - summary['keras_accuracy']):+.2f} points)")
        if "exit_points" in summary:
            print(f"exit head: {len(md.exits)} exit points {summary['exit_points']}, "
                  f"{summary['head_weight_bytes']:,} B of weights")
        if "cost" in summary:
            c = summary["cost"]
            print(f"per-operator costs ({c['source']}) for {c['target']}: {c['total']:,} "
                  f"{c['unit']} per inference")
        if args.c_header:
            print("C source: " + ", ".join(summary["c_files"]))
    return 0


def _symbol(stem: str) -> str:
    s = "".join(ch if ch.isalnum() else "_" for ch in stem)
    return s if s and not s[0].isdigit() else "model_" + s
