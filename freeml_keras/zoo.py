"""Reference models (the architectures FreeML was evaluated on) and their pre-trained copies.

- ``cnn_s``: Conv2D 64, 128, 64 (3x3, valid, ReLU, 2x2 max-pool after each), Flatten,
  Dense 256, 64, classes.
- ``cnn_m``: VGG-style Conv2D 32, 32, 64, 64, 128, 128 (3x3, same, BatchNorm, ReLU, 2x2 max-pool
  and dropout after each pair), Flatten, Dense 128, 128, classes.
- ``imu_cnn``: Conv1D 32 (k5), 64 (k5), 64 (k3), ReLU, 2x max-pool after each, Flatten,
  Dense 64, classes; for ``watch_imu`` windows of shape (100, 6).

Adapted to small inputs: a valid 3x3 convolution that would shrink a side below 1 becomes
'same', and a 2x2 pool on a side of 1 is left out. ``width`` scales every layer's channel or
unit count (tests use small widths).

Pre-trained models are cached in ``$FREEML_CACHE_DIR`` (default ``~/.cache/freeml``) under
``models/<name>-<dataset>/``: ``model.keras`` and ``meta.json`` (accuracies, training time,
epochs, seed).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from freeml_keras import datasets
from freeml_keras.cache import cache_dir
from freeml_keras.keras import keras, tf

NAMES = ("cnn_s", "cnn_m", "imu_cnn")
CACHE_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """How ``pretrained`` trains a model: fixed seed, Adam, early stopping on validation loss."""
    epochs: int
    batch_size: int = 128
    learning_rate: float = 1e-3
    patience: int = 3
    seed: int = 0


TRAIN_CONFIGS = {"cnn_s": TrainConfig(epochs=8), "cnn_m": TrainConfig(epochs=12),
                 "imu_cnn": TrainConfig(epochs=40, batch_size=64, patience=8)}


def _ch(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


def _conv_pool_2d(x, filters: int, padding: str, pool: bool, name: str):
    side = min(int(x.shape[1]), int(x.shape[2]))
    if padding == "valid" and side < 3:
        padding = "same"
    x = keras.layers.Conv2D(filters, 3, padding=padding, activation="relu", name=name)(x)
    if pool and min(int(x.shape[1]), int(x.shape[2])) >= 2:
        x = keras.layers.MaxPooling2D(2, name=name.replace("conv", "pool"))(x)
    return x


def _cnn_s(inp, num_classes: int, width: float):
    x = inp
    for i, f in enumerate((64, 128, 64), start=1):
        x = _conv_pool_2d(x, _ch(f, width), "valid", True, f"conv{i}")
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(_ch(256, width), activation="relu", name="fc1")(x)
    x = keras.layers.Dense(_ch(64, width), activation="relu", name="fc2")(x)
    return keras.layers.Dense(num_classes, activation="softmax", name="logits")(x)


def _cnn_m(inp, num_classes: int, width: float):
    x = inp
    n = 0
    for block, f in enumerate((32, 64, 128), start=1):
        for _ in range(2):
            n += 1
            x = keras.layers.Conv2D(_ch(f, width), 3, padding="same", use_bias=False, name=f"conv{n}")(x)
            x = keras.layers.BatchNormalization(name=f"bn{n}")(x)
            x = keras.layers.ReLU(name=f"relu{n}")(x)
        if min(int(x.shape[1]), int(x.shape[2])) >= 2:
            x = keras.layers.MaxPooling2D(2, name=f"pool{block}")(x)
        x = keras.layers.Dropout(0.2, name=f"drop{block}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(_ch(128, width), activation="relu", name="fc1")(x)
    x = keras.layers.Dense(_ch(128, width), activation="relu", name="fc2")(x)
    return keras.layers.Dense(num_classes, activation="softmax", name="logits")(x)


def _imu_cnn(inp, num_classes: int, width: float):
    if len(inp.shape) != 3:
        raise ValueError(f"imu_cnn takes (time, channels) windows, not input shape {tuple(inp.shape[1:])}")
    x = inp
    for i, (f, k) in enumerate(((32, 5), (64, 5), (64, 3)), start=1):
        x = keras.layers.Conv1D(_ch(f, width), k, padding="same", activation="relu", name=f"conv{i}")(x)
        if int(x.shape[1]) >= 2:
            x = keras.layers.MaxPooling1D(2, name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(_ch(64, width), activation="relu", name="fc1")(x)
    return keras.layers.Dense(num_classes, activation="softmax", name="logits")(x)


_BUILDERS: dict[str, Callable] = {"cnn_s": _cnn_s, "cnn_m": _cnn_m, "imu_cnn": _imu_cnn}


def build(name: str, input_shape: tuple[int, ...], num_classes: int, *, width: float = 1.0) -> "keras.Model":
    """A fresh, untrained reference model ``name`` for inputs of ``input_shape``."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(NAMES)}")
    if name != "imu_cnn" and len(input_shape) != 3:
        raise ValueError(f"{name} takes (height, width, channels) images, not input shape {input_shape}")
    inp = keras.Input(shape=tuple(input_shape), name="input")
    return keras.Model(inp, _BUILDERS[name](inp, num_classes, width), name=name)


def _model_dir(name: str, dataset: str, width: float) -> Path:
    suffix = "" if width == 1.0 else f"-w{width:g}"
    return cache_dir() / "models" / f"{name}-{dataset}{suffix}"


def compile_for_training(model: "keras.Model", learning_rate: float = 1e-3) -> "keras.Model":
    """Compile with the loss and metric every part of the package uses (sparse labels)."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def accuracy(model: "keras.Model", data: datasets.Split, batch_size: int = 512) -> float:
    """Top-1 accuracy of a classifier on ``(x, y)``."""
    x, y = data
    pred = model.predict(x, batch_size=batch_size, verbose=0)
    if isinstance(pred, (list, tuple)):
        pred = pred[-1]
    return float(np.mean(np.argmax(pred, axis=-1) == y))


def train(model: "keras.Model", train_data: datasets.Split, val_data: datasets.Split,
          config: TrainConfig, verbose: int = 2) -> dict:
    """Train in place with early stopping on validation loss; returns the history."""
    keras.utils.set_random_seed(config.seed)
    compile_for_training(model, config.learning_rate)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                         restore_best_weights=True)
    hist = model.fit(*train_data, validation_data=val_data, epochs=config.epochs,
                     batch_size=config.batch_size, callbacks=[stop], verbose=verbose)
    return hist.history


def pretrained(name: str, dataset: str, *, width: float = 1.0, epochs: int | None = None,
               train_limit: int | None = None, verbose: int = 2) -> "keras.Model":
    """The reference model trained on ``dataset`` (fixed seed), from the cache or trained now.

    ``epochs`` and ``train_limit`` (examples) shorten training; they are part of the cache key
    only through ``meta.json``: a cached model trained differently is retrained.
    """
    cfg = TRAIN_CONFIGS[name] if name in TRAIN_CONFIGS else None
    if cfg is None:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(NAMES)}")
    if epochs is not None:
        cfg = TrainConfig(**{**cfg.__dict__, "epochs": epochs})
    d = _model_dir(name, dataset, width)
    wanted = {"version": CACHE_VERSION, "config": cfg.__dict__, "train_limit": train_limit}
    meta_path, model_path = d / "meta.json", d / "model.keras"
    if meta_path.exists() and model_path.exists():
        meta = json.loads(meta_path.read_text())
        if all(meta.get(k) == v for k, v in wanted.items()):
            return keras.models.load_model(model_path)
    tr, va, te = datasets.load(dataset)
    tr = datasets.subset(tr, train_limit)
    keras.utils.set_random_seed(cfg.seed)
    model = build(name, tr[0].shape[1:], int(max(tr[1].max(), te[1].max())) + 1, width=width)
    t0 = time.time()
    hist = train(model, tr, va, cfg, verbose=verbose)
    seconds = time.time() - t0
    meta = {**wanted, "model": name, "dataset": dataset, "width": width,
            "epochs_run": len(hist["loss"]), "train_seconds": round(seconds, 1),
            "val_accuracy": accuracy(model, va), "test_accuracy": accuracy(model, te),
            "params": int(model.count_params()), "tensorflow": tf.__version__}
    d.mkdir(parents=True, exist_ok=True)
    # Write to temporary names and rename, so an interrupted run never leaves a half cache.
    tmp_model = d / "model.tmp.keras"
    model.save(tmp_model)
    tmp_model.replace(model_path)
    tmp_meta = d / "meta.json.tmp"
    tmp_meta.write_text(json.dumps(meta, indent=2))
    tmp_meta.replace(meta_path)
    return model


def pretrained_meta(name: str, dataset: str, *, width: float = 1.0) -> dict:
    """The ``meta.json`` of a cached pre-trained model (accuracy, training time), or {}."""
    p = _model_dir(name, dataset, width) / "meta.json"
    return json.loads(p.read_text()) if p.exists() else {}
