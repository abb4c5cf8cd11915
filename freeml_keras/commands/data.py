"""The data options every subcommand that needs examples shares (``--dataset`` / ``--data``
/ ``--val-split``), the one place that loads them for the command line and checks them
against the model, and the progress bars of the commands."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

DATA_HELP = ("arrays x_train, y_train, x_val, y_val (optional x_test, y_test): inputs shaped "
             "like the model input, labels as integer class indices")


@dataclass
class Data:
    """The splits a command works on, and what to call them in messages."""
    train: Any
    val: Any
    test: Any                  # the test split, or the validation split when there is none
    name: str                  # the dataset's name or the file
    test_is_val: bool = False


def add_data_options(p: argparse.ArgumentParser, *, required: bool = True,
                     val_split: bool = True) -> None:
    """``--dataset NAME | --data FILE.npz`` (one of them required unless ``required=False``)
    and ``--val-split F``, in their own section of ``--help``."""
    g = p.add_argument_group("data", "a built-in dataset, or your own examples in one .npz file")
    src = g.add_mutually_exclusive_group(required=required)
    src.add_argument("--dataset", metavar="NAME",
                     help="built-in: mnist, fashion_mnist, digits or watch_imu")
    src.add_argument("--data", metavar="FILE.npz", help=DATA_HELP)
    if val_split:
        g.add_argument("--val-split", type=float, default=None, metavar="F",
                       help="with --data: hold out this fraction of x_train for validation "
                            "(then the file need not have x_val, y_val)")


def model_io(model: Any) -> tuple[tuple[int, ...], int | None, str]:
    """A Keras model's input shape (no batch axis), its class count (None unless the output is
    (batch, classes)) and its input's name."""
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    out = model.outputs[-1].shape
    classes = int(out[-1]) if len(out) == 2 else None
    history = getattr(model.inputs[0], "_keras_history", None)
    name = history[0].name if history else model.inputs[0].name.split(":")[0]
    return shape, classes, name


def load_data(args: argparse.Namespace, *, input_shape: tuple[int, ...] | None = None,
              num_classes: int | None = None, input_name: str = "input",
              test_only: bool = False) -> Data:
    """The splits of ``--dataset`` or ``--data``, checked against the model input (shape) and
    output (label range) when those are given. Errors are one line naming the array.
    ``test_only``: a command that only evaluates reads only the test (or validation) arrays."""
    from freeml_keras import datasets
    if getattr(args, "data", None):
        tr, va, te = datasets.load_npz(args.data, val_split=getattr(args, "val_split", None),
                                       test_only=test_only)
        name = str(args.data)
    else:
        if getattr(args, "val_split", None) is not None:
            raise datasets.DataError("--val-split goes with --data (a built-in dataset has its "
                                     "own validation split)")
        tr, va, te = datasets.load(args.dataset)
        name = args.dataset
    if input_shape is not None:
        parts = {"test": te} if test_only else {"train": tr, "val": va, "test": te}
        datasets.check_fits(parts, input_shape, num_classes,
                            source=name, input_name=input_name)
    return Data(train=tr, val=va, test=te if te is not None else va, name=name,
                test_is_val=te is None)


def progress_bar(target: int | None, unit: str = "step", shown: tuple[str, ...] = ()):
    """Keras's progress bar (``update(n, values=[(name, value), ...])``); the ``shown`` values
    are displayed as given, not averaged."""
    from freeml_keras.keras import keras
    return keras.utils.Progbar(target, unit_name=unit, stateful_metrics=shown)
