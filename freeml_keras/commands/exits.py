"""``freeml exits MODEL (--dataset NAME | --data FILE.npz) --out DIR``: train the gNet shared
exit head on a (compressed) model and save the exit model for ``freeml convert --exit-model``."""

from __future__ import annotations

import argparse
from pathlib import Path

from freeml_keras.cli import CommandError
from freeml_keras.commands.data import add_data_options, load_data, model_io


def register(sub) -> None:
    p = sub.add_parser("exits", help="train the gNet shared exit head on a model",
                       description="Attach the gNet shared exit head to a Keras model (Keras 3 "
                                   "or tf_keras; the backbone is not changed), train it on the "
                                   "frozen backbone and save the exit model directory that "
                                   "`freeml convert --exit-model DIR` and `freeml inspect DIR` read.")
    p.add_argument("model", help="the model file, .keras or .h5 (e.g. freeml compress's model.keras)")
    add_data_options(p)
    p.add_argument("--out", required=True, help="output directory for the exit model")
    p.add_argument("--exit-points", default="auto",
                   help="comma-separated layer names, input to output (default: after each pooling stage)")
    p.add_argument("--pooled-size", type=int, default=None,
                   help="max-pool each spatial side of every exit point's features to this "
                        "(default: chosen per exit point, with a channel cap, to fit the head "
                        "budget)")
    b = p.add_mutually_exclusive_group()
    b.add_argument("--head-budget-bytes", type=int, default=None, metavar="B",
                   help="stored bytes of the exit head the chosen pooling fits (default: a "
                        "quarter of per-exit branches' head, at most a quarter of the model's "
                        "stored bytes)")
    b.add_argument("--device", default=None,
                   help="a device profile: the head gets what its model budget leaves after "
                        "the model (e.g. msp430fr5994)")
    p.add_argument("--method", default="stagewise", choices=("stagewise", "random", "balanced"),
                   help="how the head is trained (default stagewise)")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs, early stopping (default: enough for 4,000 steps)")
    p.add_argument("--train-limit", type=int, default=None,
                   help="train on this many training examples (a fixed subset)")
    p.add_argument("--target-accuracy", type=float, default=None, metavar="A",
                   help="also calibrate exit thresholds for this validation accuracy "
                        "(written to DIR/policy.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from freeml_keras import datasets
    from freeml_keras.bridge import load_model
    from freeml_keras.exits import ExitPointError, attach_global_exit, calibrate_thresholds, train_global_exit

    path = Path(args.model)
    model, _ = load_model(path)
    shape, classes, name = model_io(model)
    if classes is None:
        raise CommandError(f"{path}: the model's output has shape {tuple(model.outputs[-1].shape)}; "
                           "exits need a classifier with a (batch, classes) output")
    d = load_data(args, input_shape=shape, num_classes=classes, input_name=name)
    tr = datasets.subset(d.train, args.train_limit) if args.train_limit else d.train
    points = "auto" if args.exit_points == "auto" else [s.strip() for s in args.exit_points.split(",")]
    try:
        if args.pooled_size is None:
            em = attach_global_exit(model, points, head_budget_bytes=args.head_budget_bytes,
                                    device=args.device)
        else:
            if args.head_budget_bytes is not None or args.device is not None:
                raise CommandError("--pooled-size is a choice made by hand; --head-budget-bytes "
                                   "and --device are for the automatic choice")
            em = attach_global_exit(model, points, pooled_size=args.pooled_size)
    except (ExitPointError, KeyError, ValueError) as e:
        raise CommandError(f"{path}: {e}") from None
    rec = train_global_exit(em, tr, d.val, method=args.method, epochs=args.epochs, verbose=1)
    out = Path(args.out)
    em.save(out)
    print(f"exit points {', '.join(em.exit_points)}: validation accuracy "
          + " ".join(f"{a:.4f}" for a in rec["val_exit_accuracy"]))
    pc = em.info.get("pooling")
    if pc:
        print(f"head {pc['head_bytes']:,} B of a {pc['head_budget_bytes']:,} B budget "
              f"({pc['rule']}); pooling per exit point: " + ", ".join(
                  f"{c['exit_point']} {c['pooled_dim']} features (pooled to "
                  f"{c['pooled_size'] or 'no pooling'}, channels {c['max_width'] or 'all'})"
                  for c in pc["choice"]))
    if args.target_accuracy is not None:
        policy = calibrate_thresholds(em, d.val, target_accuracy=args.target_accuracy)
        (out / "policy.json").write_text(policy.to_json())
        print(f"thresholds for validation accuracy {args.target_accuracy}: "
              + " ".join("-" if t is None else f"{t:.3f}" for t in policy.thresholds) + f" ({out / 'policy.json'})")
    print(f"exit model: {out} (freeml convert MODEL --exit-model {out} ...)")
    return 0
