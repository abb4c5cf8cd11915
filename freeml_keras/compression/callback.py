"""SparseComp inside your own ``model.fit``, in tfmot's shape: :func:`prepare` wraps a model's
layers for pruning, the :class:`SparseComp` callback runs SparseComp's schedule across the
epochs of your ``fit``, :func:`strip` gives back a plain model.

>>> from freeml_keras import datasets
>>> from freeml_keras.keras import keras
>>> from freeml_keras.compression.callback import prepare, SparseComp, strip
>>> (x, y), (xv, yv), _ = datasets.load("digits")
>>> keras.utils.set_random_seed(0)
>>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
...                           keras.layers.Dense(32, activation="relu", name="fc"),
...                           keras.layers.Dense(10, name="logits")])
>>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> _ = model.fit(x, y, epochs=10, verbose=0)
>>> pruned = prepare(model, budget=2600)                  # every Dense/Conv wrapped, density 1
>>> pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> sc = SparseComp(budget=2600, validation_data=(xv, yv), epochs_per_step=1, verbose=0)
>>> _ = pruned.fit(x, y, epochs=20, validation_data=(xv, yv), verbose=0, callbacks=[sc])
>>> small = strip(pruned)                                 # plain model, kernels at their densities
>>> sc.budget_met, sc.weight_bytes <= 2600
(True, True)

What one SparseComp step is (the same in :func:`~freeml_keras.compression.compress`, which
runs its sparsity steps through this callback): take the largest layer by stored bytes that is
not fragile, lower its density by ``density_step`` (up to ``max_density_jumps`` steps at once
when one does not lower the stored size: CSR indices make a layer larger until enough weights
are zero), train ``epochs_per_step`` epochs with tfmot's hard threshold after every optimizer
step (the top-|w| fraction kept), keep the weights of the epoch with the lowest validation loss,
cut every kernel to exactly its density, and score on the validation data; if the accuracy fell
more than ``fragile_drop`` below the reference (the model when ``fit`` began) with
``fragile_confidence`` (a paired test per example), undo the step (weights and density) and mark
the layer fragile. When the stored size (``memory.keras_footprint``: int8, CSR where it pays)
meets the budget, training stops (``stop_when_met``), or goes on at those densities keeping the
best epoch by validation loss (a recovery fine-tune).

Densities and sparsities: a *density* is the fraction of a kernel's weights kept (SparseComp's
convention), tfmot's *target_sparsity* the fraction set to zero (``1 - density``). Functions that
take targets accept either, by name (``densities=`` or ``target_sparsity=``), never both.

Not in the callback (they change the architecture, so they cannot happen inside one ``fit``):
narrowing a layer, layer separation (SVD / Tucker-2), the RAM budget, the allocation by measured
accuracy per byte when every layer is fragile, and int8 QAT: ``compress`` does those around it.
Under a ``tf.distribute`` strategy call :func:`prepare` (and ``compile``) inside
``strategy.scope()``, as with tfmot.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

from freeml_keras.compression import pruning
from freeml_keras.compression.budget import Budget
from freeml_keras.compression.evaluation import (clone, evaluate_outputs, fragile_against,
                                                 outputs_probs)
from freeml_keras.compression.job import sizes, weighted_rows
from freeml_keras.compression.pruning import (DensitySchedule, PruneLowMagnitude,
                                              resolve_densities, tfmot)
from freeml_keras.keras import keras

__all__ = ["prepare", "SparseComp", "strip", "DensitySchedule", "resolve_densities",
           "densities_of", "DensityPlan", "density_plan", "choose_step"]


# ---------------------------------------------------------------------------------------------
# The wrapped model

def _wrappers(model: "keras.Model") -> dict[str, PruneLowMagnitude]:
    return {l.layer.name: l for l in model.layers if isinstance(l, PruneLowMagnitude)}


def densities_of(model: "keras.Model") -> dict[str, float]:
    """The density each wrapped layer of a :func:`prepare` model is pruned to now."""
    return {n: w.pruning_schedule.value for n, w in _wrappers(model).items()}


def prepare(model: "keras.Model", budget: Any = None, *,
            densities: float | Mapping[str, float] | None = None,
            target_sparsity: float | Mapping[str, float] | None = None,
            layers: list[str] | None = None) -> "keras.Model":
    """A new model with every Dense / Conv1D / Conv2D / DepthwiseConv2D layer wrapped in tfmot's
    ``PruneLowMagnitude`` with a :class:`DensitySchedule` (a hard threshold at every training
    step), for the :class:`SparseComp` callback; ``model`` is not modified.

    Each layer starts at the density given (``densities=`` or tfmot's ``target_sparsity=``, one
    number for all layers or a dict by layer name), else at its kernel's present fraction of
    non-zeros (1.0 for a dense model). ``layers``: wrap only these (default: every prunable
    layer; the callback steps only wrapped layers). ``budget`` (bytes of stored parameters, a device name, or
    a :class:`~freeml_keras.compression.budget.Budget`) is checked and kept for the callback.
    A Keras 3 ``model`` is bridged to tf_keras (:mod:`freeml_keras.bridge`); :func:`strip`
    gives it back in Keras 3. Compile and fit the result with tf_keras objects or strings
    (``"adam"``), as for any tfmot-wrapped model. The ``model.fit(..., callbacks=[SparseComp(...)])``
    example is the module's (and :class:`SparseComp`'s); ``tests/test_fit_callbacks.py`` runs it.

    >>> from freeml_keras.keras import keras
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="fc")])
    >>> densities_of(prepare(m, target_sparsity=0.5))
    {'fc': 0.5}
    """
    from freeml_keras.bridge import is_keras3, to_tf_keras
    keras3 = is_keras3(model)
    model = to_tf_keras(model)
    b = Budget.of(budget) if budget is not None else None
    prunable = [l.name for l in model.layers if type(l).__name__ in pruning.PRUNABLE_TYPES]
    if layers is not None:
        missing = set(layers) - set(prunable)
        if missing:
            raise ValueError(f"prepare: no prunable layer named {', '.join(sorted(missing))} in "
                             f"{model.name} (prunable: {', '.join(prunable) or 'none'})")
        prunable = [n for n in prunable if n in set(layers)]
    wanted = resolve_densities(densities, target_sparsity, prunable)
    unknown = set(wanted) - set(prunable)
    if unknown:
        raise ValueError(f"prepare: no prunable layer named {', '.join(sorted(unknown))} in "
                         f"{model.name} (prunable: {', '.join(prunable) or 'none'})")

    wrapped = pruning.wrap(model, wanted, prunable)
    wrapped._freeml_keras3 = keras3
    wrapped._freeml_budget = b
    return wrapped


def plain_copy(model: "keras.Model") -> "keras.Model":
    """The plain model of a :func:`prepare` model (new layers, the wrapped layers' weights as
    they are, not thresholded)."""
    def unwrap(layer):
        inner = layer.layer if isinstance(layer, PruneLowMagnitude) else layer
        return inner.__class__.from_config(inner.get_config())
    plain = keras.models.clone_model(model, clone_function=unwrap)
    return pruning.transfer_weights(model, plain)


def exact(model: "keras.Model") -> None:
    """Cuts every wrapped kernel of a :func:`prepare` model to exactly its density (ties broken
    by position) and sets its mask to match, in place."""
    for name, w in _wrappers(model).items():
        d = w.pruning_schedule.value
        for weight, mask, _ in w.pruning_vars:
            k = pruning.hard_threshold(weight.numpy(), d) if d < 1.0 else weight.numpy()
            weight.assign(k)
            mask.assign((k != 0).astype(mask.dtype.as_numpy_dtype) if d < 1.0
                        else np.ones(k.shape, mask.dtype.as_numpy_dtype))


def strip(model: "keras.Model") -> "keras.Model":
    """The plain model of a :func:`prepare` model: wrappers removed, every kernel holding
    exactly ``max(1, round(density * size))`` non-zeros (tfmot keeps weights that tie with the
    threshold). Back in Keras 3 when the model given to :func:`prepare` was Keras 3. The
    prepared model is not modified. The fit in between: the module's example.

    >>> from freeml_keras.keras import keras
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="fc")])
    >>> int((strip(prepare(m, densities=0.25)).get_layer("fc").get_weights()[0] != 0).sum())
    8
    """
    plain = strip_plain(model)
    if getattr(model, "_freeml_keras3", False):
        from freeml_keras.bridge import to_keras3
        return to_keras3(plain)
    return plain


def strip_plain(model: "keras.Model") -> "keras.Model":
    """:func:`strip` in tf_keras whatever Keras the model came from (for measuring)."""
    plain = plain_copy(model)
    for name, d in densities_of(model).items():
        if d < 1.0:
            layer = plain.get_layer(name)
            w = layer.get_weights()
            w[0] = pruning.hard_threshold(w[0], d)
            layer.set_weights(w)
    return plain


# ---------------------------------------------------------------------------------------------
# The step: which layer, which density

class DensityPlan(NamedTuple):
    """A density step of one layer: from ``before`` to ``density``, saving ``gain`` stored
    bytes (before training)."""
    layer: str
    before: float
    density: float
    gain: int

    @property
    def change(self) -> str:
        return f"density {self.before:.3f} -> {self.density:.3f}"


def density_plan(model: "keras.Model", layer: str, weight_bytes: int, density_step: float,
                 min_density: float, max_jumps: int) -> DensityPlan | None:
    """The density step of ``layer`` in the plain ``model`` (stored size ``weight_bytes``):
    its present density times ``density_step``, up to ``max_jumps`` times until the stored size
    drops; None when no density at or above ``min_density`` lowers it."""
    k = model.get_layer(layer).get_weights()[0]
    nz = int(np.count_nonzero(k))
    density = nz / k.size
    if density * density_step < min_density or pruning.kept_count(k.size, density * density_step) >= nz:
        return None
    trial = clone(model)
    w = trial.get_layer(layer).get_weights()
    d = density
    for _ in range(max_jumps):
        d *= density_step
        if d < min_density:
            break
        w2 = list(w)
        w2[0] = pruning.hard_threshold(w[0], d)
        trial.get_layer(layer).set_weights(w2)
        gain = weight_bytes - sizes(trial)[0]
        if gain > 0:
            return DensityPlan(layer, density, d, int(gain))
    return None


def choose_step(model: "keras.Model", fragile, density_step: float, min_density: float,
                max_jumps: int, layers=None) -> DensityPlan | None:
    """SparseComp's rule on the plain ``model``: the largest layer by stored bytes (among
    ``layers``, all prunable ones if None) that is not in ``fragile`` and whose density step
    lowers the stored size."""
    wb = sizes(model)[0]
    for r in sorted(weighted_rows(model), key=lambda r: -r.stored_bytes):
        if r.name in fragile or (layers is not None and r.name not in layers):
            continue
        plan = density_plan(model, r.name, wb, density_step, min_density, max_jumps)
        if plan is not None:
            return plan
    return None


# ---------------------------------------------------------------------------------------------
# The callback

@dataclass
class _Open:
    """A step being trained."""
    plan: DensityPlan | None
    first_epoch: int
    undo: list | None
    best: pruning.BestWeights


class SparseComp(tfmot.sparsity.keras.UpdatePruningStep):
    """SparseComp's schedule across the epochs of your own ``fit`` of a :func:`prepare` model
    (it also does tfmot's ``UpdatePruningStep``: do not add that one).

    Every ``epochs_per_step`` epochs one step (see the module's documentation): the largest
    non-fragile layer's density lowered by ``density_step``, trained under the hard threshold,
    the best epoch by validation loss kept (``monitor`` from the logs when ``fit`` validates,
    else the cross-entropy on ``validation_data`` computed here), judged against the reference
    with the paired test (``fragile_drop`` at ``fragile_confidence``), undone and the layer marked
    fragile when it fails. Stops training once the stored size meets ``budget`` (bytes, a device
    name, a :class:`~freeml_keras.compression.budget.Budget`, or the linked-image budget of
    :func:`freeml_keras.targets.image.device_budget`; None: the budget given to
    :func:`prepare`); with ``stop_when_met=False`` the remaining epochs fine-tune at the final
    densities, keeping the best epoch (when the budget is met already as ``fit`` begins, Keras
    stops after the first batch). ``validation_data`` is ``(x, labels)``, always needed (the
    fragile test is per example). Only the stored-size budget is worked toward: a RAM budget
    needs narrower layers, which ``compress`` does.

    After ``fit``: ``budget_met``, ``weight_bytes``, ``densities``, ``fragile``, ``steps`` (one
    record per step) and ``reference_accuracy``; :func:`strip` gives the plain model.

    >>> from freeml_keras import datasets
    >>> from freeml_keras.keras import keras
    >>> (x, y), (xv, yv), _ = datasets.load("digits")
    >>> keras.utils.set_random_seed(1)
    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
    ...                           keras.layers.Dense(384, activation="relu", name="fc"),
    ...                           keras.layers.Dense(10, activation="softmax", name="out")])
    >>> model.compile("adam", "sparse_categorical_crossentropy")
    >>> _ = model.fit(x, y, epochs=10, verbose=0)
    >>> pruned = prepare(model)                              # 39,448 B stored
    >>> pruned.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    >>> sc = SparseComp("msp430fr5994", (xv, yv), epochs_per_step=1, verbose=0)
    >>> _ = pruned.fit(x, y, epochs=8, validation_data=(xv, yv), verbose=0, callbacks=[sc])
    >>> sc.budget_met, sc.weight_bytes <= 20 * 1024          # the device's 20 KB model budget
    (True, True)
    """

    def __init__(self, budget: Any = None, validation_data: tuple | None = None, *,
                 epochs_per_step: int = 2, density_step: float = 0.7,
                 fragile_drop: float = 0.01, fragile_confidence: float = 0.9,
                 min_density: float = 0.02, max_density_jumps: int = 3,
                 monitor: str = "val_loss", stop_when_met: bool = True,
                 reference: np.ndarray | None = None, reference_accuracy: float | None = None,
                 fragile: tuple | list = (),
                 max_steps: int | None = None,
                 choose: Callable[["keras.Model", "SparseComp"], DensityPlan | None] | None = None,
                 verbose: int = 1):
        super().__init__()
        if validation_data is None:
            raise ValueError("SparseComp needs validation_data=(x, labels): the fragile test "
                             "compares the accuracy per example")
        if not 0.0 < density_step < 1.0:
            raise ValueError(f"density_step must be in (0, 1), got {density_step}")
        if epochs_per_step < 1:
            raise ValueError(f"epochs_per_step must be at least 1, got {epochs_per_step}")
        self.budget_spec = budget
        self.x_val, self.y_val = validation_data[0], np.asarray(validation_data[1]).reshape(-1)
        self.epochs_per_step = int(epochs_per_step)
        self.density_step = float(density_step)
        self.fragile_drop = float(fragile_drop)
        self.fragile_confidence = float(fragile_confidence)
        self.min_density = float(min_density)
        self.max_density_jumps = int(max_density_jumps)
        self.monitor = monitor
        self.stop_when_met = bool(stop_when_met)
        self.reference = None if reference is None else np.asarray(reference, bool)
        self.fragile = list(fragile)
        self.max_steps = max_steps
        self.choose = choose
        self.verbose = verbose
        self.steps: list[dict] = []
        self.budget: Budget | None = None
        self.budget_met = False
        self.exhausted = False
        self.weight_bytes: int | None = None
        self.densities: dict[str, float] = {}
        self.reference_accuracy: float | None = reference_accuracy
        self.evaluation = None
        self._open: _Open | None = None
        self._hold: pruning.BestWeights | None = None

    # -- helpers -------------------------------------------------------------------------------
    def _log(self, msg: str) -> None:
        if self.verbose:
            print(msg, file=sys.stdout, flush=True)

    def _evaluate(self):
        out = self.model.predict(self.x_val, batch_size=512, verbose=0)
        return evaluate_outputs(out, self.y_val, outputs_probs(self.model))

    def _size(self) -> int | None:
        if self.max_steps == 0:         # holding the densities: nothing decides on the size
            return None
        return sizes(strip_plain(self.model))[0]

    def _fragile(self, ev) -> bool:
        return fragile_against(self.reference, self.reference_accuracy, ev, self.fragile_drop,
                               self.fragile_confidence)

    def _set_density(self, layer: str, d: float) -> None:
        self._wrapped[layer].pruning_schedule.set(d)

    def _flash(self) -> int | None:
        return None if self.budget is None else self.budget.flash_bytes

    # -- Keras hooks ---------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._wrapped = _wrappers(self.model)
        if not self._wrapped and self.max_steps != 0:
            raise ValueError("SparseComp: the model has no pruning wrappers; give it the model "
                             "freeml_keras.compression.callback.prepare returns")
        spec = self.budget_spec if self.budget_spec is not None else getattr(
            self.model, "_freeml_budget", None)
        self.budget = Budget.of(spec) if spec is not None else None
        exact(self.model)
        if self.reference is not None and len(self.reference) != len(self.y_val):
            self.reference = None
        if self.reference is None and self.reference_accuracy is None:
            ev = self._evaluate()
            self.reference = ev.correct
            self.evaluation = ev
        if self.reference is not None:
            self.reference_accuracy = float(np.mean(self.reference))
        self.weight_bytes = self._size()
        self.densities = densities_of(self.model)
        self._check_met()
        if self.weight_bytes is not None:
            self._log(f"SparseComp: {self.weight_bytes:,} B stored"
                      + (f", budget {self._flash():,} B" if self._flash() else "")
                      + f", reference validation accuracy {self.reference_accuracy:.4f}")

    def _check_met(self) -> None:
        limit = self._flash()
        self.budget_met = limit is not None and self.weight_bytes is not None and \
            self.weight_bytes <= limit
        if self.budget_met and self.stop_when_met and self.max_steps is None:
            self.model.stop_training = True

    def _steps_allowed(self) -> bool:
        if self.max_steps is not None:
            return len(self.steps) < self.max_steps
        return not self.budget_met and not self.exhausted and self._flash() is not None

    def on_epoch_begin(self, epoch, logs=None):
        if self._open is not None or not self._steps_allowed():
            if self._open is None and self._hold is None:
                self._hold = pruning.BestWeights(self.monitor)
                self._hold.set_model(self.model)
            return
        if self._hold is not None:        # a step again after held epochs: keep their best
            self._hold.on_train_end()
            self._hold = None
        plain = strip_plain(self.model)
        if self.choose is not None:
            plan = self.choose(plain, self)
        else:
            plan = choose_step(plain, self.fragile, self.density_step, self.min_density,
                               self.max_density_jumps, layers=set(self._wrapped))
        if plan is None and self.choose is None:
            self.exhausted = True
            self._log("SparseComp: no step on a non-fragile layer lowers the stored size "
                      f"({self.weight_bytes:,} B); stopping")
            self.model.stop_training = True
            return
        undo = self.model.get_weights() if plan is not None else None
        if plan is not None:
            self._set_density(plan.layer, plan.density)
        best = pruning.BestWeights(self.monitor)
        best.set_model(self.model)
        self._open = _Open(plan, epoch, undo, best)

    def _monitored(self, logs: dict) -> dict:
        if self.monitor in logs:
            return logs
        return {**logs, self.monitor: self._evaluate().loss}

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        logs = logs if logs is not None else {}
        if self._open is not None:
            self._open.best.on_epoch_end(epoch, self._monitored(logs))
            if epoch + 1 - self._open.first_epoch >= self.epochs_per_step:
                self._close(epoch)
        elif self._hold is not None:
            self._hold.on_epoch_end(epoch, self._monitored(logs))

    def on_train_end(self, logs=None):
        if self._open is not None:
            self._close(None)
        if self._hold is not None:
            self._hold.on_train_end()
            self._hold = None
        exact(self.model)
        self.densities = densities_of(self.model)
        self.weight_bytes = self._size()
        self._check_met()
        limit = self._flash()
        if self.weight_bytes is not None and limit is not None and not self.budget_met and self.max_steps is None:
            self._log(f"SparseComp: budget not met: {self.weight_bytes:,} B stored, "
                      f"{self.weight_bytes - limit:+,} B over "
                      + ("(every layer fragile or at min_density)" if self.exhausted
                         else "(fit ended first: more epochs)"))

    def _close(self, epoch: int | None) -> None:
        """Ends the open step: best epoch back, exact densities, judged, undone if fragile."""
        step, self._open = self._open, None
        step.best.on_train_end()
        exact(self.model)
        ev = self._evaluate()
        plan = step.plan
        frag = plan is not None and self._fragile(ev)
        self.step_correct = ev.correct
        rec = {"layer": plan.layer if plan else "", "change": plan.change if plan else "",
               "epochs": (epoch + 1 - step.first_epoch) if epoch is not None else None,
               "best_epoch": step.best.best_epoch, "val_accuracy": ev.accuracy,
               "val_loss": ev.loss, "fragile": bool(frag), "accepted": not frag}
        if frag:
            self.model.set_weights(step.undo)
            self._set_density(plan.layer, plan.before)
            self.fragile.append(plan.layer)
        else:
            self.evaluation = ev
        self.weight_bytes = self._size()
        self.densities = densities_of(self.model)
        rec["weight_bytes"] = self.weight_bytes
        self.steps.append(rec)
        if plan is not None:
            self._log(f"SparseComp step {len(self.steps)}: {plan.layer} {plan.change}: val acc "
                      f"{ev.accuracy:.4f} (reference {self.reference_accuracy:.4f})"
                      + (" -> fragile, undone" if frag else "")
                      + f"; {self.weight_bytes:,} B stored")
        self._check_met()

