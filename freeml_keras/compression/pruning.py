"""Hard-threshold pruning and sparsity-preserving int8 quantization-aware training.

The pieces SparseComp fine-tunes with, reusable in a user's own ``model.fit``:

- :func:`prune_layers` wraps the layers given a density with tfmot's ``PruneLowMagnitude``
  and a per-layer constant density (a :class:`~freeml_keras.compression.callback.DensitySchedule`,
  tfmot's ``ConstantSparsity(1 - density, 0, frequency=1)`` with the density in a variable,
  so SparseComp's callback can change it between epochs): with the
  :func:`pruning_callbacks` (tfmot's ``UpdatePruningStep``) the mask is recomputed and applied at
  every training step, i.e. a hard threshold that keeps the top-|w| fraction of the kernel.
- :func:`strip` returns the plain model with the masked weights. tfmot keeps every weight whose
  magnitude ties with the threshold, so :func:`strip` (through :func:`hard_threshold`) cuts ties
  and leaves exactly ``max(1, round(density * size))`` non-zeros: the density asked for.
- :func:`quantize_aware` / :func:`strip_quantization`: int8 QAT with
  ``Default8BitPrunePreserveQuantizeScheme`` (zeros stay zeros), stripped back to a plain model
  of the original architecture.

BatchNormalization after a pruned convolution: the kernel is pruned before folding. The TFLite
converter folds BN into the convolution by scaling each output channel by gamma/sqrt(var+eps):
a zero stays a zero, and per-channel int8 quantization rounds the same weights to zero, so the
sparsity pattern and the stored size (``memory.keras_footprint``) hold for the folded kernel.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from freeml_keras.keras import keras, tf

import tensorflow_model_optimization as tfmot  # noqa: E402  (after the Keras selection)
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (  # noqa: E402
    PruneLowMagnitude)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit.default_8bit_quantize_configs import (  # noqa: E402,E501
    NoOpQuantizeConfig)

__all__ = ["PRUNABLE_TYPES", "kernel_density", "hard_threshold", "prune_layers", "wrap",
           "DensitySchedule", "resolve_densities",
           "pruning_callbacks", "strip", "quantize_aware", "strip_quantization",
           "BestWeights", "transfer_weights", "kept_count", "zero_masks", "apply_zero_masks"]

PRUNABLE_TYPES = ("Conv1D", "Conv2D", "DepthwiseConv2D", "Dense")


def kernel_density(layer) -> float:
    """Fraction of non-zero entries of a layer's kernel (its first weight)."""
    k = layer.get_weights()[0]
    return float(np.count_nonzero(k)) / k.size


def kept_count(size: int, density: float) -> int:
    """How many weights a kernel of ``size`` keeps at ``density`` (as tfmot counts: round, >=1)."""
    return max(1, int(round(size * float(density))))


def hard_threshold(kernel: np.ndarray, density: float) -> np.ndarray:
    """The kernel with all but its ``kept_count`` largest-magnitude entries set to zero
    (ties broken by position, so the count is exact)."""
    k = np.asarray(kernel)
    keep = kept_count(k.size, density)
    flat = np.abs(k).reshape(-1)
    order = np.argsort(-flat, kind="stable")
    mask = np.zeros(flat.size, dtype=bool)
    mask[order[:keep]] = True
    return np.where(mask.reshape(k.shape), k, 0).astype(k.dtype)


def resolve_densities(densities: float | Mapping[str, float] | None = None,
                      target_sparsity: float | Mapping[str, float] | None = None,
                      names: list[str] | None = None) -> dict[str, float]:
    """Per layer name, the density (fraction kept) from either ``densities`` or tfmot's
    ``target_sparsity`` (fraction zeroed, ``1 - density``); a single number applies to every
    layer in ``names``. Giving both raises ``ValueError`` (they are inverses: one would be
    mistaken for the other).

    >>> resolve_densities(target_sparsity=0.75, names=["fc"])
    {'fc': 0.25}
    >>> resolve_densities(densities={"fc": 0.25})
    {'fc': 0.25}
    """
    if densities is not None and target_sparsity is not None:
        raise ValueError("give densities= (fraction of weights kept) or target_sparsity= "
                         "(tfmot's fraction set to zero), not both")
    given, flip = (densities, False) if target_sparsity is None else (target_sparsity, True)
    if given is None:
        return {}
    if isinstance(given, Mapping):
        values = {str(k): float(v) for k, v in given.items()}
    else:
        values = {n: float(given) for n in (names or [])}
    what = "target_sparsity" if flip else "densities"
    out = {}
    for name, v in values.items():
        d = 1.0 - v if flip else v
        if not (0.0 < d <= 1.0):
            raise ValueError(f"{what}[{name!r}] = {v}: a density must be in (0, 1] "
                             f"(a sparsity in [0, 1))")
        out[name] = d
    return out


class DensitySchedule(tfmot.sparsity.keras.PruningSchedule):
    """A tfmot pruning schedule whose density lives in a ``tf.Variable``: pruning at every step
    (the hard threshold) at a density the :class:`SparseComp` callback changes between epochs
    without retracing the training function. Create it inside ``strategy.scope()`` under a
    distribution strategy (:func:`prepare` does, when called there)."""

    def __init__(self, density: float = 1.0):
        self.value = float(density)     # exact (the variable is float32)
        self.density = tf.Variable(self.value, trainable=False, dtype=tf.float32,
                                   name="freeml_density",
                                   aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def set(self, density: float) -> None:
        """The density from the next training step on."""
        self.value = float(density)
        self.density.assign(self.value)

    def __call__(self, step):
        return tf.math.greater_equal(step, 0), 1.0 - tf.identity(self.density)

    def get_config(self) -> dict:
        return {"class_name": "DensitySchedule", "config": {"density": self.value}}


def wrap(model: "keras.Model", densities: Mapping[str, float], layers: list[str]) -> "keras.Model":
    """A new model with each of ``layers`` (prunable) wrapped in tfmot's ``PruneLowMagnitude``
    with a :class:`DensitySchedule` at its density in ``densities``, else at its kernel's
    present fraction of non-zeros; all layers are fresh clones holding the same weights."""
    layers = set(layers)

    def clone(layer):
        new = layer.__class__.from_config(layer.get_config())
        if layer.name not in layers:
            return new
        if type(layer).__name__ not in PRUNABLE_TYPES:
            raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) cannot be pruned")
        d = densities.get(layer.name)
        if d is None:
            d = kernel_density(layer) if layer.get_weights() else 1.0
        return PruneLowMagnitude(new, pruning_schedule=DensitySchedule(d))

    wrapped = keras.models.clone_model(model, clone_function=clone)
    inner = {getattr(l, "layer", l).name: getattr(l, "layer", l) for l in wrapped.layers}
    for layer in model.layers:
        if layer.weights:
            inner[layer.name].set_weights(layer.get_weights())
    return wrapped


def prune_layers(model: "keras.Model", densities: Mapping[str, float] | None = None, *,
                 target_sparsity: Mapping[str, float] | None = None) -> "keras.Model":
    """A new model where each layer given a density < 1 (``densities``, the fraction kept, or
    tfmot's ``target_sparsity``, the fraction zeroed; not both) is wrapped for pruning at that
    constant density (:func:`wrap`); all layers are fresh clones holding the same weights.
    ``model`` is not modified. (:func:`freeml_keras.compression.callback.prepare` wraps every
    prunable layer, for the SparseComp callback.)"""
    wanted = resolve_densities(densities, target_sparsity)
    unknown = set(wanted) - {l.name for l in model.layers}
    if unknown:
        raise ValueError(f"prune_layers: no layer named {', '.join(sorted(unknown))} in {model.name}")
    wanted = {k: v for k, v in wanted.items() if v < 1.0}
    return wrap(model, wanted, sorted(wanted))


def _find(model: "keras.Model", name: str):
    for layer in model.layers:
        if layer.name == name or (hasattr(layer, "layer") and layer.layer.name == name):
            return layer
    raise ValueError(f"no layer {name!r} in {model.name}")


def transfer_weights(src: "keras.Model", dst: "keras.Model") -> "keras.Model":
    """Copies every layer's weights from ``src`` (plain or with pruning wrappers) into the
    same-named layers of the plain model ``dst``; returns ``dst``."""
    for layer in dst.layers:
        if layer.weights:
            s = _find(src, layer.name)
            inner = s.layer if isinstance(s, PruneLowMagnitude) else s
            layer.set_weights(inner.get_weights())
    return dst


def pruning_callbacks() -> list:
    """The callbacks a pruned model needs in ``fit``: tfmot's ``UpdatePruningStep``."""
    return [tfmot.sparsity.keras.UpdatePruningStep()]


def strip(pruned: "keras.Model", densities: Mapping[str, float] | None = None) -> "keras.Model":
    """The plain model of a :func:`prune_layers` model, with masked weights; with
    ``densities`` every listed kernel holds exactly the requested number of non-zeros."""
    plain = tfmot.sparsity.keras.strip_pruning(pruned)
    if densities:
        for name, d in densities.items():
            if d < 1.0:
                layer = plain.get_layer(name)
                w = layer.get_weights()
                w[0] = hard_threshold(w[0], d)
                layer.set_weights(w)
    return plain


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the lowest ``monitor`` and restores them at the end
    of training; when no epoch's value is below +inf (every one inf or NaN), the last epoch's
    weights stay.

    Not tf_keras's ``EarlyStopping(monitor, patience=epochs, restore_best_weights=True)``: in
    tf_keras 2.21 it too restores the best epoch at the end of a run that did not stop early,
    but when no epoch improves on +inf it restores the first epoch's weights instead of
    leaving the last, so the fine-tuning result would change for a run that diverges."""

    def __init__(self, monitor: str = "val_loss"):
        super().__init__()
        self.monitor = monitor
        self.best = np.inf
        self.best_epoch = -1
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value < self.best:
            self.best, self.best_epoch = float(value), epoch
            self.best_weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)

    def get_config(self) -> dict:
        return {"monitor": self.monitor}


# ---------------------------------------------------------------------------------------------
# Quantization-aware training that keeps the sparsity

def zero_masks(model: "keras.Model") -> dict[str, np.ndarray]:
    """Where each prunable layer's kernel is zero (layers with any zeros only)."""
    out = {}
    for layer in model.layers:
        if type(layer).__name__ in PRUNABLE_TYPES and layer.get_weights():
            k = layer.get_weights()[0]
            if np.any(k == 0):
                out[layer.name] = k == 0
    return out


def apply_zero_masks(model: "keras.Model", masks: Mapping[str, np.ndarray]) -> int:
    """Sets the masked kernel entries to zero in place; returns how many were non-zero."""
    changed = 0
    for name, m in masks.items():
        layer = model.get_layer(name)
        w = layer.get_weights()
        changed += int(np.count_nonzero(w[0][m]))
        w[0] = np.where(m, 0, w[0]).astype(w[0].dtype)
        layer.set_weights(w)
    return changed


def quantize_aware(model: "keras.Model") -> "keras.Model":
    """A QAT model of ``model`` (int8 fake-quantization, sparsity preserved) for ``fit``.

    Layers tfmot's 8-bit registry does not support (Conv1D, for example) are left in float
    and frozen (so their zeros stay zeros; the converter still quantizes them); the rest are
    annotated and quantized with ``Default8BitPrunePreserveQuantizeScheme``."""
    q = tfmot.quantization.keras
    Default8BitPrunePreserveQuantizeScheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme
    registry = Default8BitPrunePreserveQuantizeScheme().get_quantize_registry()

    def supported(layer) -> bool:
        # The prune-preserve registry calls every layer without weights supported, but
        # defers to the 8-bit registry, which refuses some (MaxPooling1D): ask for the config.
        if not registry.supports(layer):
            return False
        try:
            registry.get_quantize_config(layer)
        except (ValueError, KeyError):
            return False
        return True

    if all(supported(l) for l in model.layers if type(l).__name__ != "InputLayer"):
        annotated = q.quantize_annotate_model(model)
    else:
        # Unsupported layers without weights (MaxPooling1D) get a no-op config: tfmot would
        # otherwise ask its registry for their output quantization and fail.
        def annotate(layer):
            new = layer.__class__.from_config(layer.get_config())
            if supported(layer):
                return q.quantize_annotate_layer(new)
            if not layer.weights:
                return q.quantize_annotate_layer(new, quantize_config=NoOpQuantizeConfig())
            return new
        annotated = keras.models.clone_model(model, clone_function=annotate)
        annotated.set_weights(model.get_weights())
    with q.quantize_scope({"NoOpQuantizeConfig": NoOpQuantizeConfig}):
        qat = q.quantize_apply(annotated, Default8BitPrunePreserveQuantizeScheme())
    # Weighted layers left in float are frozen so their zeros stay zeros. (Frozen before
    # quantize_apply, tfmot would take them for weightless layers and fail.)
    for layer in qat.layers:
        if layer.weights and not hasattr(layer, "quantize_config") and \
                type(layer).__name__ in PRUNABLE_TYPES:
            layer.trainable = False
    return qat


def strip_quantization(qat: "keras.Model", like: "keras.Model") -> "keras.Model":
    """A plain model of ``like``'s architecture holding the float weights trained in ``qat``.

    The converter quantizes them again (per channel, as QAT simulated); activation ranges come
    from its calibration data."""
    plain = keras.models.clone_model(like)
    # A QuantizeWrapper owns the kernel it fake-quantizes; the other weights stay with the
    # wrapped layer. Both are named "<layer>/<weight>:0".
    by_name = {}
    for layer in qat.layers:
        inner = getattr(layer, "layer", layer)
        by_name[inner.name] = layer
    for layer in plain.layers:
        src = by_name.get(layer.name)
        if src is None or not layer.weights:
            continue
        values = {w.name.split("/")[-1].split(":")[0]: v
                  for w, v in zip(src.weights, src.get_weights())
                  if w.name.startswith(layer.name + "/")}
        new = []
        for w in layer.weights:
            key = w.name.split("/")[-1].split(":")[0]
            if key not in values:
                raise ValueError(f"strip_quantization: layer {layer.name!r} has no trained {key!r}")
            new.append(values[key])
        layer.set_weights(new)
    return plain
