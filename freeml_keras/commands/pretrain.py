"""``freeml pretrain NAME (DATASET | --data FILE.npz --out MODEL.keras)``: train a reference
model once and cache it, or train it on the user's data."""

from __future__ import annotations

import argparse

from freeml_keras.cli import CommandError
from freeml_keras.commands.data import DATA_HELP


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="train (or load from the cache) a reference model",
                       description="Train a reference model with a fixed seed and cache it, "
                                   "or load it from the cache; with --data, train it on your "
                                   "data and save it to --out.")
    p.add_argument("name", help="cnn_s, cnn_m or imu_cnn")
    p.add_argument("dataset", nargs="?", default=None,
                   help="mnist, fashion_mnist, digits or watch_imu (or --data)")
    g = p.add_argument_group("data", "a built-in dataset (the DATASET argument), or your own "
                                     "examples in one .npz file")
    g.add_argument("--data", metavar="FILE.npz", help=DATA_HELP)
    g.add_argument("--val-split", type=float, default=None, metavar="F",
                   help="with --data: hold out this fraction of x_train for validation")
    p.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    p.add_argument("--out", default=None, help="also save the model to this .keras file "
                                               "(required with --data)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from freeml_keras import zoo
    if (args.dataset is None) == (args.data is None):
        raise CommandError("give a DATASET or --data FILE.npz (one of them)")
    if args.data is not None:
        return _train_on_file(args)
    if args.val_split is not None:
        raise CommandError("--val-split goes with --data")
    model = zoo.pretrained(args.name, args.dataset, epochs=args.epochs, verbose=1)  # progress bars
    meta = zoo.pretrained_meta(args.name, args.dataset)
    print(f"{args.name} on {args.dataset}: test accuracy {meta.get('test_accuracy', float('nan')):.4f}, "
          f"{meta.get('params', model.count_params()):,} parameters, trained in "
          f"{meta.get('train_seconds', 0):.0f} s; cached in {zoo.cache_dir() / 'models'}")
    if args.out:
        model.save(args.out)
        print(f"saved to {args.out}")
    return 0


def _train_on_file(args: argparse.Namespace) -> int:
    from freeml_keras import datasets, zoo
    from freeml_keras.keras import keras
    if not args.out:
        raise CommandError("--data needs --out MODEL.keras (models trained on your data are not cached)")
    if args.name not in zoo.TRAIN_CONFIGS:
        raise CommandError(f"unknown model {args.name!r}; known: {', '.join(zoo.TRAIN_CONFIGS)}")
    tr, va, te = datasets.load_npz(args.data, val_split=args.val_split)
    classes = int(max(tr[1].max(), va[1].max(), te[1].max() if te is not None else 0)) + 1
    cfg = zoo.TRAIN_CONFIGS[args.name]
    if args.epochs is not None:
        cfg = zoo.TrainConfig(**{**cfg.__dict__, "epochs": args.epochs})
    keras.utils.set_random_seed(cfg.seed)
    model = zoo.build(args.name, tr[0].shape[1:], classes)
    zoo.train(model, tr, va, cfg, verbose=1)
    test = te if te is not None else va
    print(f"{args.name} on {args.data}: {'test' if te is not None else 'validation'} accuracy "
          f"{zoo.accuracy(model, test):.4f}, {model.count_params():,} parameters")
    model.save(args.out)
    print(f"saved to {args.out}")
    return 0
