"""``freeml compress MODEL (--dataset NAME | --data FILE.npz) (--device D | --flash-kb N [--ram-kb M])
--out DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from freeml_keras.commands.data import add_data_options, load_data, model_io, progress_bar


def register(sub) -> None:
    p = sub.add_parser("compress", help="compress a Keras model to a device budget (SparseComp)",
                       description="Compress a pre-trained .keras model to a stored-size budget "
                                   "(and a RAM budget for activations + checkpoint state) with "
                                   "SparseComp: narrowing, factorization, hard-threshold "
                                   "sparsity and int8 QAT. The state is saved after every step; "
                                   "--resume continues an interrupted run.")
    p.add_argument("model", help="the model file, .keras or .h5, written by Keras 3 or tf_keras "
                                 "(it is not modified; a Keras 3 model comes back as Keras 3)")
    add_data_options(p)
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
        raise CommandError(f"{path}: no such file or directory")
    from freeml_keras import datasets
    from freeml_keras.bridge import load_model
    from freeml_keras.compression.sparsecomp import Budget, compress

    model, _ = load_model(path, bridge=False)      # compress() answers in the model's Keras
    data = load_data(args, **dict(zip(("input_shape", "num_classes", "input_name"), model_io(model))))
    tr, va = data.train, data.val
    if args.train_limit:
        tr = datasets.subset(tr, args.train_limit)
    if args.device:
        budget = Budget.of(args.device)
    else:
        budget = Budget(int(args.flash_kb * 1024),
                        None if args.ram_kb is None else int(args.ram_kb * 1024))
    bar = _StepBar(budget) if sys.stdout.isatty() else None   # lines in logs, a bar on a terminal
    result = compress(model, budget, tr, va, out_dir=args.out, resume=args.resume,
                      fine_tune_epochs=args.epochs, qat_epochs=args.qat_epochs,
                      density_step=args.density_step, fragile_drop=args.fragile_drop / 100.0,
                      batch_size=args.batch_size, factorize=not args.no_factorize,
                      verbose=bar is None, progress=bar)
    if bar is not None:
        print()
    print(result.table())
    print(f"\ncompressed model: {Path(args.out) / 'model.keras'}; report: "
          f"{Path(args.out) / 'report.json'}, {Path(args.out) / 'report.txt'}")
    return 0 if result.report["meets_budget"] else 1


class _StepBar:
    """SparseComp's ``progress`` callable as Keras's progress bar: one tick per step, with the
    step's phase, stored bytes against the budget and validation accuracy."""

    def __init__(self, budget) -> None:
        self.budget = budget
        self.bar = progress_bar(None, unit="step", shown=("stored_B", "RAM_B", "val_acc"))
        self.n = 0

    def __call__(self, rec: dict) -> None:
        self.n += 1
        values = [("stored_B", rec["weight_bytes_now"]), ("RAM_B", rec["peak_ram_bytes_now"]),
                  ("val_acc", rec.get("val_accuracy") or 0.0)]
        self.bar.update(self.n, values=values)
