"""``freeml pretrain NAME DATASET``: train a reference model once and cache it."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="train (or load from the cache) a reference model",
                       description="Train a reference model with a fixed seed and cache it, "
                                   "or load it from the cache.")
    p.add_argument("name", help="cnn_s, cnn_m or imu_cnn")
    p.add_argument("dataset", help="mnist, fashion_mnist, digits or watch_imu")
    p.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    p.add_argument("--out", default=None, help="also save the model to this .keras file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from freeml_keras import zoo
    model = zoo.pretrained(args.name, args.dataset, epochs=args.epochs, verbose=1)  # progress bars
    meta = zoo.pretrained_meta(args.name, args.dataset)
    print(f"{args.name} on {args.dataset}: test accuracy {meta.get('test_accuracy', float('nan')):.4f}, "
          f"{meta.get('params', model.count_params()):,} parameters, trained in "
          f"{meta.get('train_seconds', 0):.0f} s; cached in {zoo.cache_dir() / 'models'}")
    if args.out:
        model.save(args.out)
        print(f"saved to {args.out}")
    return 0
