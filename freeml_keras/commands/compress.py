"""``freeml compress MODEL (--dataset NAME | --data FILE.npz) (--device D | --flash-kb N [--ram-kb M])
--out DIR``: the options of :func:`freeml_keras.compression.sparsecomp.compress` that change
the result (distillation, the recovery fine-tune, the fragile test, resume)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from freeml_keras.commands.data import add_data_options, load_data, model_io, progress_bar


class _Default:
    """An option left at ``compress()``'s default: shown in ``--help`` as that value (read from
    :class:`~freeml_keras.compression.options.Options` only then: importing the package
    starts TensorFlow) and not passed to ``compress``."""

    def __init__(self, name: str, scale: float = 1.0) -> None:
        self.name, self.scale = name, scale

    def __str__(self) -> str:
        from freeml_keras.compression.options import Options
        return f"{getattr(Options(), self.name) * self.scale:g}"


# option -> (Options field, CLI value / compress value)
_PASSED = {"epochs": ("fine_tune_epochs", 1), "qat_epochs": ("qat_epochs", 1),
           "density_step": ("density_step", 1), "fragile_drop": ("fragile_drop", 100),
           "fragile_confidence": ("fragile_confidence", 1), "batch_size": ("batch_size", 1),
           "learning_rate": ("learning_rate", 1), "seed": ("seed", 1),
           "distill": ("distill", 1), "temperature": ("temperature", 1),
           "recovery_epochs": ("recovery_epochs", 1), "recovery_patience": ("recovery_patience", 1)}


def _d(arg: str) -> _Default:
    field, scale = _PASSED[arg]
    return _Default(field, scale)


def register(sub) -> None:
    p = sub.add_parser("compress", help="compress a Keras model to a device budget (SparseComp)",
                       description="Compress a pre-trained .keras model to a stored-size budget "
                                   "(and a RAM budget for activations + checkpoint state) with "
                                   "SparseComp: narrowing, factorization, hard-threshold "
                                   "sparsity, distillation from the pre-trained model, a "
                                   "recovery fine-tune at the budget and int8 QAT. The state is "
                                   "saved after every step; --resume continues an interrupted "
                                   "run (with the same options).")
    p.add_argument("model", help="the model file, .keras or .h5, written by Keras 3 or tf_keras "
                                 "(it is not modified; a Keras 3 model comes back as Keras 3)")
    add_data_options(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--device", help="device profile whose budgets to meet (e.g. msp430fr5994)")
    g.add_argument("--flash-kb", type=float, help="budget for stored parameters, KB (1024 B)")
    p.add_argument("--ram-kb", type=float, default=None,
                   help="budget for activations + checkpoint state, KB (with --flash-kb)")
    p.add_argument("--out", required=True, help="output directory (state, model, report)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the state in --out (refused when the options differ)")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop after N steps; the state is saved and --resume continues")
    p.add_argument("--train-limit", type=int, default=None,
                   help="fine-tune on this many training examples (a fixed subset)")
    p.add_argument("--epochs", type=int, default=_d("epochs"),
                   help="fine-tuning epochs per step (default %(default)s)")
    p.add_argument("--qat-epochs", type=int, default=_d("qat_epochs"),
                   help="int8 QAT epochs at the end (default %(default)s)")
    p.add_argument("--density-step", type=float, default=_d("density_step"),
                   help="multiplicative density step (default %(default)s)")
    p.add_argument("--fragile-drop", type=float, default=_d("fragile_drop"),
                   help="validation accuracy points a step may lose before the layer is "
                        "fragile (default %(default)s)")
    p.add_argument("--fragile-confidence", type=float, default=_d("fragile_confidence"), metavar="P",
                   help="... lost with this one-sided confidence, by a paired test on the "
                        "validation set (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=_d("batch_size"), help="(default %(default)s)")
    p.add_argument("--learning-rate", type=float, default=_d("learning_rate"),
                   help="fine-tuning learning rate (default %(default)s)")
    p.add_argument("--seed", type=int, default=_d("seed"), help="(default %(default)s)")
    p.add_argument("--no-factorize", action="store_true", help="skip layer separation")
    k = p.add_argument_group("recovery (giving back what the steps lose)")
    k.add_argument("--distill", type=float, default=_d("distill"), metavar="W",
                   help="weight of distillation from the pre-trained model in every fine-tune, "
                        "0 to 1 (default %(default)s; 0 trains on the labels alone)")
    k.add_argument("--no-distill", action="store_const", const=0.0, dest="distill",
                   help="no distillation (the same as --distill 0)")
    k.add_argument("--temperature", type=float, default=_d("temperature"),
                   help="of the distillation (default %(default)s)")
    k.add_argument("--recovery-epochs", type=int, default=_d("recovery_epochs"), metavar="N",
                   help="the final fine-tune at the budget: up to N epochs, early stopping on "
                        "validation loss (default %(default)s; 0: none)")
    k.add_argument("--recovery-patience", type=int, default=_d("recovery_patience"), metavar="N",
                   help="epochs without a lower validation loss before the recovery stops "
                        "(default %(default)s)")
    k.add_argument("--reconstruct", choices=("none", "ram", "all"), default=None,
                   help="where a narrowing (or layer separation) refits the next layer by least "
                        "squares on training inputs: the RAM phase, all, none (default)")
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
    given = {field: getattr(args, arg) / scale for arg, (field, scale) in _PASSED.items()
             if not isinstance(getattr(args, arg), _Default)}
    for field in ("fine_tune_epochs", "qat_epochs", "batch_size", "seed", "recovery_epochs",
                  "recovery_patience"):
        if field in given:
            given[field] = int(given[field])
    if args.reconstruct is not None:
        given["reconstruct"] = args.reconstruct
    result = compress(model, budget, tr, va, out_dir=args.out, resume=args.resume,
                      factorize=not args.no_factorize, stop_after=args.stop_after,
                      verbose=bar is None, progress=bar, **given)
    if bar is not None:
        print()
    print(result.table())
    if not result.complete:
        print(f"\nstopped after {args.stop_after} steps; the state is in {args.out} "
              "(add --resume to continue)")
        return 0
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
