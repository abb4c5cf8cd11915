"""gNet: one shared exit head for all exit points of a frozen pre-trained backbone.

At each exit point the feature map is max-pooled to a small fixed size (points.py); the pooled
vectors of all exit points are concatenated, with zeros for exit points not yet reached, and one
Dense layer gives the logits. Because the head is linear after pooling, the logits at exit k are
``b + sum_{i<=k} W_i . p_i`` (incremental.py), which is what the runtime accumulates.

The exits of an :class:`ExitModel` are its exit points, in order (``num_exits`` of them), then
the backbone's own output, which is untouched: ``keras_model`` outputs the head's logits at every
exit point followed by the backbone's output (probabilities, exactly the pre-trained model's).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from freeml_keras.bridge import to_tf_keras
from freeml_keras.keras import keras
from freeml_keras.exits import points as pts
from freeml_keras.exits import choice
from freeml_keras.exits import training as tr
from freeml_keras.exits.incremental import incremental_logits
from freeml_keras.exits.layers import ExitMask, ExitScale

__all__ = ["ExitModel", "attach_global_exit", "train_global_exit", "training_model",
           "GlobalExitValidation", "METHODS"]

FORMAT_VERSION = 1
METHODS = ("random", "balanced", "stagewise")
STEPS_PER_EPOCH = 40        # at least, when train_global_exit chooses the epochs
HEAD_PREFIX = "exit"


class ExitModel(pts.PooledPredictions):
    """A frozen backbone with one shared linear exit head over its exit points.

    Attributes: ``backbone`` (the user's model, never modified), ``exit_points`` (layer names,
    input to output), ``pooling`` (a :class:`~freeml_keras.exits.points.PoolSpec` per exit point),
    ``num_classes``, ``kernel`` (concatenated pooled dims x classes, per-exit scaling folded in)
    and ``bias``; ``info`` records how the head was trained.
    """

    def __init__(self, backbone: "keras.Model", exit_points: Sequence[str],
                 pooling: Sequence[pts.PoolSpec], num_classes: int, kernel: np.ndarray,
                 bias: np.ndarray, dropout: float = 0.0, info: dict | None = None):
        self.backbone = backbone
        self.exit_points = list(exit_points)
        self.pooling = list(pooling)
        self.num_classes = int(num_classes)
        self.dropout = float(dropout)
        self.info = dict(info or {})
        self.set_head_weights(kernel, bias)
        self._pooled_model = None
        self.pool_prefix = HEAD_PREFIX
        self._keras_model = None

    # -- head weights --------------------------------------------------------------------------


    def set_head_weights(self, kernel: np.ndarray, bias: np.ndarray) -> None:
        """Replace the head's Dense weights: kernel (sum of pooled dims, classes), bias (classes)."""
        kernel = np.asarray(kernel, np.float32)
        bias = np.asarray(bias, np.float32)
        want = (sum(self.pooled_dims), self.num_classes)
        if kernel.shape != want or bias.shape != (self.num_classes,):
            raise ValueError(f"head weights of shapes {kernel.shape}, {bias.shape}; expected "
                             f"{want}, ({self.num_classes},)")
        self.kernel, self.bias = kernel, bias
        self._keras_model = None

    def head_weights(self) -> tuple[list[np.ndarray], np.ndarray]:
        """([W_i of shape (pooled_dim_i, classes) per exit point], b), as in head_model's Dense."""
        cuts = np.cumsum([0] + self.pooled_dims)
        return [self.kernel[a:b].copy() for a, b in zip(cuts[:-1], cuts[1:])], self.bias.copy()

    # -- Keras models --------------------------------------------------------------------------
    def features_model(self) -> "keras.Model":
        """Backbone input -> the raw feature map of every exit point (before pooling)."""
        return pts.features_model(self.backbone, self.exit_points)

    def _head_layers(self, pooled: list, exit_index: int | None = None):
        x = pooled if exit_index is None else ExitMask(self.num_exits, exit_index,
                                                      name=f"{HEAD_PREFIX}_mask_{exit_index}")(pooled)
        x = x[0] if len(x) == 1 else keras.layers.Concatenate(name=f"{HEAD_PREFIX}_concat_{exit_index}"
                                                              if exit_index is not None else
                                                              f"{HEAD_PREFIX}_concat")(x)
        return x

    def _dense(self) -> "keras.layers.Dense":
        dense = keras.layers.Dense(self.num_classes, name=f"{HEAD_PREFIX}_head")
        dense.build((None, sum(self.pooled_dims)))
        dense.set_weights([self.kernel, self.bias])
        return dense

    def head_model(self) -> "keras.Model":
        """Exit-point feature maps (one input each, backbone shapes) -> max-pool -> flatten ->
        concatenate -> Dense -> logits (no softmax). Only full-int8 convertible ops."""
        inputs = [keras.Input(shape=s.feature_shape, name=f"{HEAD_PREFIX}_in_{s.exit_point}")
                  for s in self.pooling]
        pooled = [pts.apply_pooling(s, x, HEAD_PREFIX) for s, x in zip(self.pooling, inputs)]
        logits = self._dense()(self._head_layers(pooled))
        return keras.Model(inputs, logits, name=f"{self.backbone.name}_exit_head")

    @property
    def keras_model(self) -> "keras.Model":
        """Backbone input -> [head logits at exit point 0, ..., at exit point K-1, backbone
        output]. The last output is the backbone's own output tensor (pre-trained model's output
        exactly). For inference; the head's Dense is shared by the exit outputs."""
        if self._keras_model is None:
            feats = [self.backbone.get_layer(n).output for n in self.exit_points]
            pooled = [pts.apply_pooling(s, x, HEAD_PREFIX) for s, x in zip(self.pooling, feats)]
            dense = self._dense()
            outs = [keras.layers.Activation("linear", name=f"exit_{k}")(
                        dense(self._head_layers(pooled, k))) for k in range(self.num_exits)]
            self._keras_model = keras.Model(self.backbone.inputs, outs + [self.backbone.outputs[-1]],
                                            name=f"{self.backbone.name}_gnet")
        return self._keras_model

    def training_model(self, method: str = "random", **kwargs) -> "keras.Model":
        """The head on the frozen backbone as a ``keras.Model`` for your own ``fit``:
        :func:`training_model` (its example shows the fit)."""
        return training_model(self, method, **kwargs)

    # -- inference -----------------------------------------------------------------------------
    def exit_logits_from_pooled(self, pooled: Sequence[np.ndarray]) -> np.ndarray:
        """(num_exits, n, classes) head logits from pooled features (incremental sums)."""
        weights = self.head_weights()
        return np.stack([incremental_logits(weights, pooled, k) for k in range(self.num_exits)])

    # -- serialization -------------------------------------------------------------------------
    def config(self) -> dict:
        return {"format": "freeml-exit-model", "version": FORMAT_VERSION,
                "exit_points": self.exit_points, "pooling": [s.to_dict() for s in self.pooling],
                "num_classes": self.num_classes, "dropout": self.dropout, "info": self.info}

    def save(self, directory: str | Path) -> Path:
        """Write ``backbone.keras``, ``head.npz`` (kernel, bias) and ``exit_model.json``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.backbone.save(d / "backbone.keras")
        np.savez(d / "head.npz", kernel=self.kernel, bias=self.bias)
        (d / "exit_model.json").write_text(json.dumps(self.config(), indent=2))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "ExitModel":
        """An ExitModel written by :meth:`save`."""
        d = Path(directory)
        meta_path = d / "exit_model.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{d}: no exit_model.json; not a saved exit model")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != "freeml-exit-model" or meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: format {meta.get('format')!r} version "
                             f"{meta.get('version')!r}; expected freeml-exit-model {FORMAT_VERSION}")
        backbone = keras.models.load_model(d / "backbone.keras", compile=False)
        head = np.load(d / "head.npz")
        return cls(backbone, meta["exit_points"], [pts.PoolSpec.from_dict(s) for s in meta["pooling"]],
                   meta["num_classes"], head["kernel"], head["bias"], meta.get("dropout", 0.2),
                   meta.get("info"))


def attach_global_exit(model: "keras.Model", exit_points: str | Sequence[str] = "auto", *,
                       pooled_size: str | int | None | Sequence[int | None] = "auto",
                       max_width: str | int | None | Sequence[int | None] = "auto",
                       dropout: float = 0.0, seed: int = 0, head_budget_bytes: int | None = None,
                       device: str | None = None) -> ExitModel:
    """An untrained shared exit head on ``model`` (which is not modified).

    ``exit_points``: layer names from input to output, or "auto" (after each pooling stage).
    ``pooled_size``: max-pool each spatial side to at most this (per exit point if a list; None:
    no pooling, required for exit points without spatial axes). ``max_width``: cap the channels
    of each exit point by max-pooling groups of adjacent channels (None: no cap). A Keras 3
    ``model`` is bridged to tf_keras first (:mod:`freeml_keras.bridge`): the backbone is the
    bridged copy. ``dropout``: on the pooled features while the head trains (0 by default: the
    head is one linear layer over a few hundred features, and dropout there left it underfitted,
    see :func:`train_global_exit`).

    With ``pooled_size="auto"`` (the default) both are chosen per exit point to fit a head of
    ``head_budget_bytes`` stored bytes (:mod:`~freeml_keras.exits.choice`); without a budget,
    what ``device``'s model budget leaves after the backbone, else a quarter of the per-exit
    branches' head and at most a quarter of the backbone's stored bytes. The budget, its rule
    and the choice are in ``info["pooling"]`` (and in the exit report).

    >>> em = attach_global_exit(model)                       # doctest: +SKIP
    >>> em.info["pooling"]["head_budget_bytes"], em.pooled_dims   # doctest: +SKIP
    """
    model = to_tf_keras(model)
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a tf_keras Model, got {type(model).__name__}")
    names = pts.resolve_exit_points(model, exit_points)
    out_shape = tuple(model.outputs[-1].shape[1:])
    if len(out_shape) != 1:
        raise ValueError(f"model {model.name!r} output has shape {out_shape}; a classifier "
                         "with (classes,) output is needed")
    info: dict = {"trained": False}
    if isinstance(pooled_size, str):
        if pooled_size != "auto":
            raise ValueError(f"pooled_size must be 'auto', a size, None or a list, not {pooled_size!r}")
        if head_budget_bytes is None:
            budget, rule = choice.default_head_budget(model, names, device)
        else:
            budget, rule = int(head_budget_bytes), "given"
        if max_width not in ("auto", None):
            raise ValueError("pooled_size='auto' chooses max_width too; give both or neither")
        pooled_size, max_width, record = choice.choose_pooling(model, names, budget)
        info["pooling"] = {"rule": rule, **record, "candidates": [
            {"allocation": a, "pooled_size": ps, "max_width": mw}
            for a, (ps, mw, _) in ((a, choice.choose_pooling(model, names, budget, a))
                                   for a in choice.RULES)]}
    elif isinstance(max_width, str):
        if max_width != "auto":
            raise ValueError(f"max_width must be 'auto', a width, None or a list, not {max_width!r}")
        max_width = None            # a given pooled_size without a given cap: no cap
    specs = pts.plan_pooling(model, names, pooled_size, max_width)
    num_classes = int(out_shape[0])
    dim = sum(s.pooled_dim for s in specs)
    kernel = keras.initializers.GlorotUniform(seed=seed)((dim, num_classes)).numpy()
    return ExitModel(model, names, specs, num_classes, kernel, np.zeros(num_classes, np.float32),
                     dropout, info)


def _exit_weights(weights: Sequence[float] | None, k: int) -> list[float]:
    if weights is None:
        return [1.0] * k
    if len(weights) != k or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"exit_weights must be {k} non-negative numbers, got {list(weights)}")
    return [float(w) for w in weights]


def _fold(dense: "keras.layers.Dense", scale: ExitScale | None, dims: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Dense kernel with the per-exit scales folded in: W_i <- diag(s_i) W_i."""
    kernel, bias = [w.copy() for w in dense.get_weights()]
    if scale is not None:
        cuts = np.cumsum([0] + dims)
        for s, a, b in zip(scale.get_weights(), cuts[:-1], cuts[1:]):
            kernel[a:b] *= s.reshape(-1, 1)
    return kernel.astype(np.float32), bias.astype(np.float32)


def _trainable_head(pooled: list, num_classes: int, method: str, weights: Sequence[float],
                    dropout: float, scale: bool, seed: int) -> list:
    """The head being trained, on the pooled vectors ``pooled`` (Keras tensors, one per exit
    point): [per-feature scale] -> exit mask -> concatenate -> dropout -> Dense ``exit_head``.
    "random": one output, an exit sampled per example (``weights`` as probabilities);
    "balanced": one output per exit. The layers are named ``exit_scale`` and ``exit_head``
    (what :class:`GlobalExitValidation` reads)."""
    K = len(pooled)
    x = ExitScale(name="exit_scale")(pooled) if scale else list(pooled)
    drop = keras.layers.Dropout(dropout, seed=seed, name="exit_dropout")
    dense = keras.layers.Dense(num_classes, name="exit_head")
    concat = (lambda t: t[0]) if K == 1 else keras.layers.Concatenate(name="exit_concat")
    if method == "random":
        p = [w / sum(weights) for w in weights]
        return [dense(drop(concat(ExitMask(K, probabilities=p, seed=seed, name="exit_mask")(x))))]
    if method == "balanced":
        return [keras.layers.Activation("linear", name=f"exit_{k}")(
                    dense(drop(concat(ExitMask(K, k, name=f"exit_mask_{k}")(x)))))
                for k in range(K)]
    raise ValueError(f"a head trained in one fit is 'random' or 'balanced', not {method!r}")


def training_model(exit_model: ExitModel, method: str = "random", *, scale: bool = True,
                   exit_weights: Sequence[float] | None = None, seed: int = 0) -> "keras.Model":
    """A ``keras.Model`` that trains ``exit_model``'s shared head in your own ``fit``: backbone
    input -> the frozen backbone (inference mode, not trainable) -> pooling at every exit point
    -> the head (``method`` "random": the published gNet, an exit sampled per example, one
    output; "balanced": one output per exit, give the labels once per output). Compile it with
    :func:`~freeml_keras.exits.training.exit_loss` and fit it with a
    :class:`GlobalExitValidation` callback, which scores every exit after each epoch, keeps the
    best head by ``val_exit_loss`` and writes it into ``exit_model`` (scales folded in).

    >>> from freeml_keras import datasets
    >>> from freeml_keras.keras import keras
    >>> from freeml_keras.exits import attach_global_exit, exit_loss
    >>> (x, y), (xv, yv), _ = datasets.load("digits")
    >>> keras.utils.set_random_seed(0)
    >>> inp = keras.Input((8, 8, 1))
    >>> h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inp)
    >>> out = keras.layers.Dense(10, activation="softmax", name="out")(keras.layers.Flatten()(h))
    >>> backbone = keras.Model(inp, out)
    >>> backbone.compile("adam", "sparse_categorical_crossentropy")
    >>> _ = backbone.fit(x, y, epochs=3, verbose=0)
    >>> em = attach_global_exit(backbone, ["conv"], pooled_size=2)
    >>> tm = training_model(em)                          # the head on the frozen backbone
    >>> tm.compile(keras.optimizers.Adam(1e-2), loss=exit_loss())
    >>> val = GlobalExitValidation(em, (xv, yv), verbose=0)
    >>> _ = tm.fit(x, y, epochs=5, batch_size=64, verbose=0, callbacks=[val])
    >>> em.info["val_exit_accuracy"][0] > 0.5               # em holds the best head
    True
    """
    if method not in ("random", "balanced"):
        raise ValueError(f"training_model: method 'random' or 'balanced', not {method!r} "
                         "(stagewise is a sequence of fits: train_global_exit)")
    weights = _exit_weights(exit_weights, exit_model.num_exits)
    backbone = keras.models.clone_model(exit_model.backbone)   # the user's model stays as it is
    backbone.set_weights(exit_model.backbone.get_weights())
    frozen = keras.Model(backbone.inputs, [backbone.get_layer(n).output
                                           for n in exit_model.exit_points],
                         name=f"{backbone.name}_frozen")
    frozen.trainable = False
    inputs = [keras.Input(tuple(t.shape[1:]), name=f"in_{i}") for i, t in enumerate(backbone.inputs)]
    feats = frozen(inputs if len(inputs) > 1 else inputs[0], training=False)
    feats = feats if isinstance(feats, (list, tuple)) else [feats]
    pooled = [pts.apply_pooling(s, f, HEAD_PREFIX) for s, f in zip(exit_model.pooling, feats)]
    outs = _trainable_head(pooled, exit_model.num_classes, method, weights, exit_model.dropout,
                           scale, seed)
    return keras.Model(inputs, outs, name=f"{backbone.name}_gnet_training")


class GlobalExitValidation(tr.ExitValidation):
    """:class:`~freeml_keras.exits.training.ExitValidation` for a head being fitted (a
    :func:`training_model`, or any model with the ``exit_head`` Dense and optional
    ``exit_scale`` of :func:`training_model`): after each epoch the head's weights (scales
    folded in) score every exit on ``validation_data`` (``val_exit_loss``,
    ``val_exit_acc_<k>`` in the logs); the best epoch by ``val_exit_loss`` is written into
    ``exit_model`` (and back into the fitted head at the end), with ``info["trained"]`` and
    ``info["val_exit_accuracy"]``. ``pooled``: the validation set's pooled features, when known
    (else computed once from ``validation_data``). See :func:`training_model` for an example."""

    def __init__(self, exit_model: ExitModel, validation_data: tuple, *,
                 exit_weights: Sequence[float] | None = None, verbose: int = 1,
                 pooled: Sequence[np.ndarray] | None = None):
        super().__init__(self._logits, validation_data[1],
                         _exit_weights(exit_weights, exit_model.num_exits), verbose)
        self.exit_model = exit_model
        self.x_val = validation_data[0]
        self.pooled = pooled
        self.best = np.inf
        self.best_head = None
        self.best_weights = None

    def _layers(self):
        dense = self.model.get_layer("exit_head")
        try:
            scaler = self.model.get_layer("exit_scale")
        except ValueError:
            scaler = None
        return dense, scaler

    def _logits(self) -> np.ndarray:
        kernel, bias = _fold(*self._layers(), self.exit_model.pooled_dims)
        self._current = (kernel, bias)
        cuts = np.cumsum([0] + self.exit_model.pooled_dims)
        parts = [kernel[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
        return np.stack([incremental_logits((parts, bias), self.pooled, k)
                         for k in range(self.exit_model.num_exits)])

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.pooled is None:
            self.pooled = self.exit_model.pooled_features(self.x_val)
        self.best, self.best_head, self.best_weights = np.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        super().on_epoch_end(epoch, logs)
        if logs["val_exit_loss"] < self.best:
            self.best = logs["val_exit_loss"]
            self.best_head = self._current
            self.best_weights = [l.get_weights() for l in self._layers() if l is not None]
            self.best_accuracy = [logs[f"val_exit_acc_{k}"] for k in range(self.exit_model.num_exits)]

    def on_train_end(self, logs=None):
        if self.best_head is None:
            return
        for layer, w in zip([l for l in self._layers() if l is not None], self.best_weights):
            layer.set_weights(w)
        self.exit_model.set_head_weights(*self.best_head)
        self.exit_model.info = {**self.exit_model.info, "trained": True,
                                "val_exit_accuracy": list(self.best_accuracy)}


def train_global_exit(exit_model: ExitModel, train_data: tuple[np.ndarray, np.ndarray],
                      val_data: tuple[np.ndarray, np.ndarray], *, method: str = "stagewise",
                      distill: float = 0.0, temperature: float = 2.0, scale: bool = True,
                      exit_weights: Sequence[float] | None = None, epochs: int | None = None,
                      batch_size: int = 128, learning_rate: float = 3e-3, patience: int = 8,
                      seed: int = 0, verbose: int = 1, features=None,
                      min_updates: int = 4000, choose_pooling: bool = True) -> dict:
    """Train the shared head in place on the frozen backbone; returns the training record.

    ``method``:
      - "random": the published gNet: per example a random exit (``exit_weights`` as sampling
        weights, uniform by default), later exit points zeroed by :class:`ExitMask`.
      - "balanced": every example at every exit at once (the expectation of "random"),
        loss weighted by ``exit_weights``.
      - "stagewise": exit by exit: W_0 and b are trained for exit 0 alone, then each W_k for exit
        k with the earlier contributions fixed (a boosted cascade). Exit 0 is then exactly as
        good as a branch with the same pooling.
    ``distill``: weight of distillation from the backbone's own output (temperature T).
    ``scale``: learn a per-feature scale per exit point (folded into the weights afterwards).
    The defaults (stagewise, scaled) are the best method of ``bench/exits.py``.
    Early stopping on validation loss (mean over exits, or of the exit being trained).
    ``epochs`` (None: 30, grown on little data, with ``patience``, so that a head gets at least
    ``min_updates`` gradient steps: 1,077 digits examples make 9 batches an epoch; then
    several passes over the data make one Keras epoch of at least ``STEPS_PER_EPOCH`` steps,
    ``info["passes_per_epoch"]``). The head is
    small and linear: trained to convergence (4,000 steps, patience 8) without dropout (the
    exit model's ``dropout``, 0 by default) it gained 4.2 and 3.0 points at the first and
    second exits of the digits CNN and 2.6 and 1.1 points on cnn_s over 1,500 steps, patience 4
    and dropout 0.2 (``bench/exits.py --defaults-only``, docs/exits.md).
    ``features``: precomputed ``(train_pooled, train_teacher, val_pooled, val_teacher)``
    (from :func:`extract`), to train several heads without running the backbone again.
    ``choose_pooling``: when ``attach_global_exit`` chose the pooling (``info["pooling"]``) and
    no ``features`` are given, the head is trained under each allocation of the head budget
    (:mod:`~freeml_keras.exits.choice`) and the one with the best mean validation accuracy over
    the exits is kept (its pooling, weights and the accuracies of all in ``info["pooling"]``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    cands = exit_model.info.get("pooling", {}).get("candidates", [])
    distinct = {(tuple(c["pooled_size"]), tuple(c["max_width"])) for c in cands}
    if choose_pooling and features is None and len(distinct) > 1:
        kw = dict(method=method, distill=distill, temperature=temperature, scale=scale,
                  exit_weights=exit_weights, epochs=epochs, batch_size=batch_size,
                  learning_rate=learning_rate, patience=patience, seed=seed, verbose=verbose,
                  min_updates=min_updates, choose_pooling=False)
        return _train_choosing(exit_model, train_data, val_data, cands, kw)
    K, C, dims = exit_model.num_exits, exit_model.num_classes, exit_model.pooled_dims
    weights = _exit_weights(exit_weights, K)
    (xtr, ytr), (xva, yva) = train_data, val_data
    keras.utils.set_random_seed(seed)
    if features is None:
        features = extract(exit_model, xtr, xva, verbose)
    ptr, ttr, pva, tva = features
    per_epoch = max(1, -(-len(ytr) // batch_size))
    grow_epochs = epochs is None
    epochs = 30 if epochs is None else int(epochs)
    if grow_epochs and epochs * per_epoch < min_updates:
        grow = -(-min_updates // per_epoch) / epochs
        epochs, patience = -(-min_updates // per_epoch), max(patience, int(round(patience * grow / 4)))
    targets = tr.pack_targets(ytr, ttr if distill else None, C)
    # On little data an epoch is a few steps and Keras's work per epoch (validation, callbacks)
    # takes most of the time: then several passes over the data make one Keras epoch.
    passes = max(1, min(epochs, -(-STEPS_PER_EPOCH // per_epoch))) if grow_epochs else 1
    if passes > 1:
        ptr = [np.tile(p, (passes, 1)) for p in ptr]
        targets = np.tile(targets, (passes, 1))
        epochs, patience = -(-epochs // passes), max(2, -(-patience // passes))
    loss = tr.exit_loss(distill, temperature)
    tr.log(verbose, f"gNet head ({method}{', scaled' if scale else ''}"
                    f"{f', distill {distill:g}' if distill else ''}): {K} exit points, pooled dims "
                    f"{dims}, {sum(dims) * C + C:,} parameters, {len(ytr):,} training examples")
    if method == "stagewise":
        history = _train_stagewise(exit_model, ptr, targets, pva, yva, tva, loss, scale, epochs,
                                   batch_size, learning_rate, patience, seed, verbose, distill)
    else:
        # the same head and validation callback as a user's fit of training_model, on the
        # pooled features (the backbone is frozen: computed once)
        inputs = [keras.Input((d,), name=f"pooled_{i}") for i, d in enumerate(dims)]
        outs = _trainable_head(inputs, C, method, weights, exit_model.dropout, scale, seed)
        ys, lw = (targets, None) if method == "random" else ([targets] * K, weights)
        model = keras.Model(inputs, outs)
        model.compile(keras.optimizers.Adam(learning_rate), loss=loss, loss_weights=lw)
        cb = GlobalExitValidation(exit_model, (None, yva), exit_weights=weights,
                                  verbose=verbose, pooled=pva)
        history = tr.fit(model, ptr, ys, epochs=epochs, batch_size=batch_size, patience=patience,
                         callbacks=[cb], monitor="val_exit_loss")
        exit_model.set_head_weights(*_fold(model.get_layer("exit_head"),
                                           model.get_layer("exit_scale") if scale else None, dims))
    exit_model.info = {**({"pooling": exit_model.info["pooling"]} if "pooling" in exit_model.info
                          else {}),
                       "trained": True, "method": method, "distill": distill,
                       "temperature": temperature, "scale": scale, "exit_weights": weights,
                       "epochs": epochs, "passes_per_epoch": passes, "learning_rate": learning_rate,
                       "batch_size": batch_size, "dropout": exit_model.dropout, "patience": patience,
                       "train_examples": int(len(ytr)), "seed": seed}
    val = exit_model.exit_logits_from_pooled(pva)
    exit_model.info["val_exit_accuracy"] = [float(np.mean(np.argmax(z, -1) == yva)) for z in val]
    tr.log(verbose, "gNet validation accuracy per exit: "
                    + " ".join(f"{a:.3f}" for a in exit_model.info["val_exit_accuracy"]))
    return {"history": history, **exit_model.info}


def _train_choosing(exit_model: ExitModel, train_data, val_data, cands: list[dict],
                    kw: dict) -> dict:
    """Trains a head per allocation in ``cands``; ``exit_model`` takes the best one's pooling,
    weights and record (mean validation accuracy over the exits)."""
    best, tried = None, []
    for c in cands:
        em = attach_global_exit(exit_model.backbone, exit_model.exit_points,
                                pooled_size=list(c["pooled_size"]), max_width=list(c["max_width"]),
                                dropout=exit_model.dropout, seed=kw["seed"])
        tr.log(kw["verbose"], f"pooling allocation {c['allocation']!r}: pooled dims {em.pooled_dims}")
        rec = train_global_exit(em, train_data, val_data, **kw)
        score = float(np.mean(em.info["val_exit_accuracy"]))
        tried.append({**c, "pooled_dims": em.pooled_dims,
                      "val_exit_accuracy": em.info["val_exit_accuracy"], "mean_val_accuracy": score})
        if best is None or score > best[0]:
            best = (score, em, rec, c)
    _, em, rec, c = best
    pooling = dict(exit_model.info["pooling"])
    pooling.update(allocation=c["allocation"], tried=tried, choice=[
        {"exit_point": s.exit_point, "pooled_size": ps, "max_width": mw, "pooled_dim": s.pooled_dim}
        for s, ps, mw in zip(em.pooling, c["pooled_size"], c["max_width"])],
        head_bytes=choice.head_bytes(sum(em.pooled_dims), em.num_classes))
    pooling["fits_budget"] = pooling["head_bytes"] <= pooling["head_budget_bytes"]
    exit_model.pooling = em.pooling
    exit_model._pooled_model = None
    exit_model.set_head_weights(em.kernel, em.bias)
    exit_model.info = {**em.info, "pooling": pooling}
    return {**rec, "pooling": pooling}


def extract(exit_model: ExitModel, x_train: np.ndarray, x_val: np.ndarray, verbose: int = 1):
    """Pooled features and backbone output probabilities of the training and validation data:
    ``(train_pooled, train_teacher, val_pooled, val_teacher)``."""
    tr.log(verbose, f"running the frozen backbone on {len(x_train):,} + {len(x_val):,} examples")
    a = exit_model._pooled_and_output(x_train)
    b = exit_model._pooled_and_output(x_val)
    return a[:-1], a[-1], b[:-1], b[-1]


def _train_stagewise(exit_model, ptr, targets, pva, yva, tva, loss, scale, epochs, batch_size,
                     learning_rate, patience, seed, verbose, distill) -> list[dict]:
    K, C, dims = exit_model.num_exits, exit_model.num_classes, exit_model.pooled_dims
    off_tr = np.zeros((len(targets), C), np.float32)
    off_va = np.zeros((len(yva), C), np.float32)
    kernels, bias = [], np.zeros(C, np.float32)
    history = []
    val_targets = tr.pack_targets(yva, tva if distill else None, C)
    for k in range(K):
        offset = keras.Input((C,), name="offset")
        p = keras.Input((dims[k],), name=f"pooled_{k}")
        scaler = ExitScale(name="exit_scale") if scale else None
        x = scaler([p])[0] if scaler is not None else p
        x = keras.layers.Dropout(exit_model.dropout, seed=seed + k, name="exit_dropout")(x)
        dense = keras.layers.Dense(C, use_bias=(k == 0), name=f"exit_head_{k}")
        logits = keras.layers.Add(name="accumulate")([offset, dense(x)])
        model = keras.Model([offset, p], logits)
        model.compile(keras.optimizers.Adam(learning_rate), loss=loss)
        tr.log(verbose, f" stage {k + 1}/{K}: exit point {exit_model.exit_points[k]!r} "
                        f"({dims[k]} pooled features)")
        h = tr.fit(model, [off_tr, ptr[k]], targets, epochs=epochs, batch_size=batch_size,
                   patience=patience, callbacks=[_StageLog(k, verbose)], monitor="val_loss",
                   validation_data=([off_va, pva[k]], val_targets))
        history.append(h)
        w = dense.get_weights()
        kernel = w[0] * (scaler.get_weights()[0].reshape(-1, 1) if scaler is not None else 1.0)
        if k == 0:
            bias = w[1].astype(np.float32)
            off_tr = off_tr + bias
            off_va = off_va + bias
        kernels.append(kernel.astype(np.float32))
        off_tr = off_tr + ptr[k] @ kernel
        off_va = off_va + pva[k] @ kernel
    exit_model.set_head_weights(np.concatenate(kernels, axis=0), bias)
    return history


class _StageLog(keras.callbacks.Callback):
    """One line per epoch of a stage: losses and validation accuracy of that exit."""

    def __init__(self, k: int, verbose: int):
        super().__init__()
        self.k, self.verbose = k, verbose

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        tr.log(self.verbose, f"  exit {self.k} epoch {epoch + 1}: loss {logs.get('loss', 0):.4f} "
                             f"val_loss {logs.get('val_loss', 0):.4f}")
