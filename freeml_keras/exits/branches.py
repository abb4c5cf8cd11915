"""Per-exit branches, the multi-exit baseline: a separate classifier per exit point (max-pool to
a fixed size, as SDN's internal classifiers reduce features to 4x4, then one Dense layer), each
trained on the frozen backbone's features for its own exit."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from freeml_keras.bridge import to_tf_keras
from freeml_keras.keras import keras
from freeml_keras.exits import points as pts
from freeml_keras.exits import training as tr

__all__ = ["ExitBranches", "attach_exit_branches", "train_exit_branches"]

BRANCH_PREFIX = "branch"
SDN_POSITIONS_2D = 4    # SDN reduces internal classifier inputs to 4x4 positions
SDN_POSITIONS_1D = 16   # the same number of positions for 1-D feature maps


class ExitBranches(pts.PooledPredictions):
    """A frozen backbone with one classifier per exit point: ``weights[k] = (W_k, b_k)``."""

    def __init__(self, backbone: "keras.Model", exit_points: Sequence[str],
                 pooling: Sequence[pts.PoolSpec], num_classes: int,
                 weights: Sequence[tuple[np.ndarray, np.ndarray]], dropout: float = 0.2,
                 info: dict | None = None):
        self.backbone = backbone
        self.exit_points = list(exit_points)
        self.pooling = list(pooling)
        self.num_classes = int(num_classes)
        self.weights = [(np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in weights]
        self.dropout = dropout
        self.info = dict(info or {})
        self._pooled_model = None
        self.pool_prefix = BRANCH_PREFIX

    def branch_models(self) -> list["keras.Model"]:
        """Per exit point: its feature map -> max-pool -> flatten -> Dense -> logits."""
        models = []
        for k, (s, (w, b)) in enumerate(zip(self.pooling, self.weights)):
            inp = keras.Input(shape=s.feature_shape, name=f"{BRANCH_PREFIX}{k}_in")
            dense = keras.layers.Dense(self.num_classes, name=f"{BRANCH_PREFIX}{k}_dense")
            out = dense(pts.apply_pooling(s, inp, f"{BRANCH_PREFIX}{k}"))
            dense.set_weights([w, b])
            models.append(keras.Model(inp, out, name=f"{BRANCH_PREFIX}_{s.exit_point}"))
        return models

    def exit_logits_from_pooled(self, pooled: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([p @ w + b for p, (w, b) in zip(pooled, self.weights)])


def attach_exit_branches(model: "keras.Model", exit_points: str | Sequence[str] = "auto", *,
                         pooled_size: str | int | None | Sequence[int | None] = "sdn",
                         max_width: int | None | Sequence[int | None] = None, dropout: float = 0.2,
                         seed: int = 0) -> ExitBranches:
    """Untrained per-exit classifiers on ``model`` (not modified); arguments as
    :func:`~freeml_keras.exits.attach_global_exit`. ``pooled_size="sdn"`` (default) reduces
    each feature map to at most 16 positions as SDN does: 4x4 for 2-D maps, 16 for 1-D maps.
    A Keras 3 ``model`` is bridged to tf_keras first (:mod:`freeml_keras.bridge`)."""
    model = to_tf_keras(model)
    names = pts.resolve_exit_points(model, exit_points)
    if isinstance(pooled_size, str):
        if pooled_size != "sdn":
            raise ValueError(f"pooled_size must be 'sdn', an int, None or a list, got {pooled_size!r}")
        ranks = [len(model.get_layer(n).output.shape) - 1 for n in names]
        pooled_size = [SDN_POSITIONS_2D if r == 3 else SDN_POSITIONS_1D if r == 2 else None for r in ranks]
    specs = pts.plan_pooling(model, names, pooled_size, max_width)
    C = int(model.outputs[-1].shape[-1])
    init = keras.initializers.GlorotUniform(seed=seed)
    weights = [(init((s.pooled_dim, C)).numpy(), np.zeros(C, np.float32)) for s in specs]
    return ExitBranches(model, names, specs, C, weights, dropout, {"trained": False})


def train_exit_branches(branches: ExitBranches, train_data, val_data, *, distill: float = 0.0,
                        temperature: float = 2.0, epochs: int = 30, batch_size: int = 128,
                        learning_rate: float = 3e-3, patience: int = 4, seed: int = 0,
                        verbose: int = 1, features=None) -> dict:
    """Train every branch in place for its own exit, early stopping on its validation loss."""
    (xtr, ytr), (xva, yva) = train_data, val_data
    keras.utils.set_random_seed(seed)
    C = branches.num_classes
    if features is None:
        tr.log(verbose, f"running the frozen backbone on {len(xtr):,} + {len(xva):,} examples")
        a, b = branches._pooled_and_output(xtr), branches._pooled_and_output(xva)
        features = (a[:-1], a[-1], b[:-1], b[-1])
    ptr, ttr, pva, tva = features
    targets = tr.pack_targets(ytr, ttr if distill else None, C)
    val_targets = tr.pack_targets(yva, tva if distill else None, C)
    loss = tr.exit_loss(distill, temperature)
    history, weights = [], []
    for k, d in enumerate(branches.pooled_dims):
        tr.log(verbose, f" branch {k + 1}/{branches.num_exits} at {branches.exit_points[k]!r}: "
                        f"{d} pooled features, {d * C + C:,} parameters")
        inp = keras.Input((d,))
        dense = keras.layers.Dense(C, name=f"branch_{k}")
        model = keras.Model(inp, dense(keras.layers.Dropout(branches.dropout, seed=seed + k)(inp)))
        model.compile(keras.optimizers.Adam(learning_rate), loss=loss)
        history.append(tr.fit(model, ptr[k], targets, epochs=epochs, batch_size=batch_size,
                              patience=patience, callbacks=[], monitor="val_loss",
                              validation_data=(pva[k], val_targets)))
        weights.append(tuple(dense.get_weights()))
    branches.weights = [(w.astype(np.float32), b.astype(np.float32)) for w, b in weights]
    val = branches.exit_logits_from_pooled(pva)
    branches.info = {"trained": True, "distill": distill, "epochs": epochs,
                     "learning_rate": learning_rate, "train_examples": int(len(ytr)),
                     "val_exit_accuracy": [float(np.mean(np.argmax(z, -1) == yva)) for z in val]}
    tr.log(verbose, "branches validation accuracy per exit: "
                    + " ".join(f"{a:.3f}" for a in branches.info["val_exit_accuracy"]))
    return {"history": history, **branches.info}
