"""``freeml compress MODEL --dataset NAME (--device D | --flash-kb N [--ram-kb M]) --out DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("compress", help="compress a Keras model to a device budget (SparseComp)",
                       description="Compress a pre-trained .keras model to a stored-size budget "
                                   "(and a RAM budget for activations + checkpoint state) with "
                                   "SparseComp: narrowing, factorization, hard-threshold "
                                   "sparsity and int8 QAT. The state is saved after every step; "
                                   "--resume continues an interrupted run.")
    p.add_argument("model", help="the .keras model file (it is not modified)")
    p.add_argument("--dataset", required=True, help="mnist, fashion_mnist, digits or watch_imu")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--device", help="device profile whose budgets to meet (e.g. msp430fr5994)")
    g.add_argument("--flash-kb", type=float, help="budget for stored parameters, KB (1024 B)")
    p.add_argument("--ram-kb", type=float, default=None,
                   help="budget for activations + checkpoint state, KB (with --flash-kb)")
    p.add_argument("--out", required=True, help="output directory (state, model, report)")
    p.add_argument("--resume", action="store_true", help="continue from the state in --out")
    p.add_argument("--train-limit", type=int, default=None,
                   help="fine-tune on this many training examples (a fixed subset)")
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per step")
    p.add_argument("--qat-epochs", type=int, default=1, help="int8 QAT epochs at the end")
    p.add_argument("--density-step", type=float, default=0.7,
                   help="multiplicative density step (default 0.7)")
    p.add_argument("--fragile-drop", type=float, default=1.0,
                   help="validation accuracy points a step may lose before the layer is fragile")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-factorize", action="store_true", help="skip layer separation")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from freeml_keras.cli import CommandError

    if args.ram_kb is not None and args.device:
        raise CommandError("--ram-kb goes with --flash-kb; a --device has its own RAM budget")
    path = Path(args.model)
    if not path.exists():
        raise CommandError(f"no model file {path}")
    from freeml_keras import datasets
    from freeml_keras.keras import keras
    from freeml_keras.compression.sparsecomp import Budget, compress

    model = keras.models.load_model(path)
    tr, va, _ = datasets.load(args.dataset)
    if args.train_limit:
        tr = datasets.subset(tr, args.train_limit)
    if args.device:
        budget = Budget.of(args.device)
    else:
        budget = Budget(int(args.flash_kb * 1024),
                        None if args.ram_kb is None else int(args.ram_kb * 1024))
    result = compress(model, budget, tr, va, out_dir=args.out, resume=args.resume,
                      fine_tune_epochs=args.epochs, qat_epochs=args.qat_epochs,
                      density_step=args.density_step, fragile_drop=args.fragile_drop / 100.0,
                      batch_size=args.batch_size, factorize=not args.no_factorize)
    print(result.table())
    print(f"\ncompressed model: {Path(args.out) / 'model.keras'}; report: "
          f"{Path(args.out) / 'report.json'}, {Path(args.out) / 'report.txt'}")
    return 0 if result.report["meets_budget"] else 1
