"""SparseComp: compress a pre-trained tf_keras model to a device budget (stored bytes and RAM).

``compress(model, budget, train_data, val_data, **options)`` works on a clone and runs, with
a line of progress per step and the state saved to ``out_dir`` after every step:

1. RAM: while peak activation memory + checkpoint state (``memory.keras_footprint``) exceeds
   the RAM budget, narrow the layer whose narrowing lowers the peak most (remove its
   lowest-L1 output channels and the matching inputs of its consumer), to the widest width
   that fits, and fine-tune.
2. Layer separation: factorize each Dense/Conv2D holding at least ``factorize_min_fraction`` of
   the stored bytes (truncated SVD / Tucker-2, ranks by EVBMF); keep it if the stored size
   drops, RAM still fits, and validation accuracy stays within ``fragile_drop`` of the
   reference after a short fine-tune.
3. Sparsity: take the largest non-fragile weighted layer by stored bytes and lower its
   density by ``density_step`` (or, when removing channels saves more than twice as many
   bytes, because per-channel quantization parameters and bias dominate the layer, narrow it
   by that factor); fine-tune with tfmot's hard threshold at every step, keep the best
   weights by validation loss; if validation accuracy fell more than ``fragile_drop`` below
   the reference, undo the step and mark the layer fragile (a failed narrowing only stops
   further narrowing of that layer). When every layer is fragile, continue by size alone
   (steps are kept whatever the accuracy) and say so in the report.
4. int8 quantization-aware fine-tuning that keeps the zeros; if the stored size then exceeds
   the budget (int8 rounding moves a few weights), go back to 3.

The stored size is always ``keras_footprint(m).weight_bytes`` (int8, CSR where the converter
uses it); the reference accuracy is the validation accuracy after step 1 (steps 2-3 may lose
at most ``fragile_drop`` of it until every layer is fragile).

Resume: ``state.json`` and the current model (``step-N.keras``) are written after every step;
``compress(..., out_dir=d, resume=True)`` continues from them and, since every step's
fine-tuning is seeded with ``seed + step``, ends where an uninterrupted run ends.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from freeml_keras import devices, memory
from freeml_keras.compression import factorize, pruning
from freeml_keras.keras import keras

__all__ = ["compress", "CompressionResult", "Budget", "BudgetUnreachable", "Options"]

STATE_VERSION = 1
Split = tuple[np.ndarray, np.ndarray]


class BudgetUnreachable(ValueError):
    """The budget cannot be met; holds the smallest size reached and its accuracy."""

    def __init__(self, message: str, *, kind: str, smallest_bytes: int, accuracy: float,
                 budget_bytes: int, out_dir: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.smallest_bytes = smallest_bytes
        self.accuracy = accuracy
        self.budget_bytes = budget_bytes
        self.out_dir = out_dir


@dataclass(frozen=True)
class Budget:
    """Bytes for stored parameters and (optionally) for activations + checkpoint state."""
    flash_bytes: int | None
    ram_bytes: int | None = None
    device: str | None = None

    @classmethod
    def of(cls, spec: Any) -> "Budget":
        """From a Budget, a byte count, (flash, ram), a dict, or a device name / profile."""
        if isinstance(spec, Budget):
            return spec
        if isinstance(spec, (str, devices.DeviceProfile)):
            dev = devices.get(spec)
            return cls(dev.model_budget_bytes, dev.ram_budget_bytes, dev.name)
        if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
            return cls(int(spec))
        if isinstance(spec, (tuple, list)) and len(spec) == 2:
            return cls(None if spec[0] is None else int(spec[0]),
                       None if spec[1] is None else int(spec[1]))
        if isinstance(spec, dict):
            return cls(spec.get("flash_bytes"), spec.get("ram_bytes"), spec.get("device"))
        raise ValueError(f"budget must be bytes, (flash_bytes, ram_bytes), a Budget or a device "
                         f"name ({', '.join(devices.names())}), not {spec!r}")

    def __post_init__(self):
        for k in ("flash_bytes", "ram_bytes"):
            v = getattr(self, k)
            if v is not None and v <= 0:
                raise ValueError(f"budget {k} must be positive, got {v}")
        if self.flash_bytes is None and self.ram_bytes is None:
            raise ValueError("budget needs flash_bytes, ram_bytes or both")


@dataclass
class Options:
    """What ``compress`` accepts as keyword options (see the module docstring)."""
    density_step: float = 0.7          # multiplicative: new density = density * step
    fragile_drop: float = 0.01         # validation accuracy (fraction) a step may lose
    fine_tune_epochs: int = 2
    qat_epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 5e-4
    min_density: float = 0.02
    min_channels: int = 2
    factorize: bool = True
    factorize_min_fraction: float = 0.25
    narrow_gain_ratio: float = 2.0     # narrow when it saves this many times what sparsity saves
    max_density_jumps: int = 3         # density steps tried at once for a step that saves bytes
    max_steps: int = 400
    max_qat_rounds: int = 3
    seed: int = 0
    # Not part of the saved state (they do not change the result):
    stop_after: int | None = None      # stop this call after that many steps (state is saved)
    verbose: bool = True
    strategy: Any = None               # tf.distribute strategy for fine-tuning
    progress: Callable[[dict], None] | None = None

    _RUNTIME = ("stop_after", "verbose", "strategy", "progress")

    def key(self) -> dict:
        """The options that determine the result (saved with the state, checked on resume)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self._RUNTIME}


@dataclass
class CompressionResult:
    """The compressed model and what was done to it."""
    model: "keras.Model"
    report: dict
    complete: bool = True
    out_dir: str | None = None

    @property
    def weight_bytes(self) -> int:
        return int(self.report["final"]["weight_bytes"])

    @property
    def peak_ram_bytes(self) -> int:
        return int(self.report["final"]["peak_ram_bytes"])

    @property
    def val_accuracy(self) -> float:
        return float(self.report["final"]["val_accuracy"])

    def table(self) -> str:
        """The report as readable text: steps, then the final model's footprint."""
        return format_report(self.report, memory.keras_footprint(self.model))


# ---------------------------------------------------------------------------------------------
# helpers

def _clone(model: "keras.Model") -> "keras.Model":
    m = factorize.functional(model)
    new = keras.models.clone_model(m)
    new.set_weights(m.get_weights())
    return new


def _sizes(model: "keras.Model") -> tuple[int, int]:
    fp = memory.keras_footprint(model)
    return fp.weight_bytes, fp.arena_bytes + fp.checkpoint_bytes


def _loss(model: "keras.Model") -> "keras.losses.Loss":
    """Sparse categorical cross-entropy, on logits unless the model ends with a softmax."""
    last = model.layers[-1]
    probs = type(last).__name__ == "Softmax" or last.get_config().get("activation") == "softmax"
    return keras.losses.SparseCategoricalCrossentropy(from_logits=not probs)


def _evaluate(model: "keras.Model", val: Split) -> tuple[float, float]:
    """Validation loss and accuracy (compiles ``model``)."""
    model.compile(loss=_loss(model), metrics=["accuracy"])
    loss, acc = model.evaluate(val[0], val[1], batch_size=512, verbose=0)
    return float(loss), float(acc)


def _weighted_rows(model: "keras.Model") -> list[memory.LayerFootprint]:
    fp = memory.keras_footprint(model)
    return [r for r in fp.layers if r.type in pruning.PRUNABLE_TYPES and r.params]


def _channels(layer) -> int:
    return int(layer.units if type(layer).__name__ == "Dense" else layer.filters)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def _scope(strategy):
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


class _Compressor:
    def __init__(self, model, budget: Budget, train: Split, val: Split, opts: Options,
                 out_dir: Path | None):
        self.budget = budget
        self.train = train
        self.val = val
        self.o = opts
        self.out = out_dir
        self.model = model
        self.state: dict = {}
        self.steps_this_call = 0

    # -- state --------------------------------------------------------------------------------

    def _save(self) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        name = f"step-{self.state['step']}.keras"
        tmp = self.out / f"tmp-{name}"
        self.model.save(tmp)
        tmp.replace(self.out / name)
        old = self.state.get("model_file")
        self.state["model_file"] = name
        tmp_state = self.out / "state.json.tmp"
        tmp_state.write_text(json.dumps(self.state, indent=1))
        tmp_state.replace(self.out / "state.json")
        if old and old != name and (self.out / old).exists():
            (self.out / old).unlink()

    def load(self) -> bool:
        if self.out is None or not (self.out / "state.json").exists():
            return False
        state = json.loads((self.out / "state.json").read_text())
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{self.out}/state.json has version {state.get('version')}, "
                             f"expected {STATE_VERSION}; start without resume")
        if state["options"] != json.loads(json.dumps(self.o.key())) or \
                state["budget"] != asdict(self.budget):
            raise ValueError(f"cannot resume from {self.out}: it was started with other options "
                             f"or budget ({state['budget']}, {state['options']})")
        self.state = state
        self.model = keras.models.load_model(self.out / state["model_file"])
        self._log(f"resuming from {self.out} at step {state['step']} (phase {state['phase']})")
        return True

    def _log(self, line: str) -> None:
        if self.o.verbose:
            print(line, file=sys.stdout, flush=True)

    # -- fine-tuning --------------------------------------------------------------------------

    def fine_tune(self, model, epochs: int, seed: int) -> tuple["keras.Model", float, float]:
        """Fine-tunes a copy of ``model`` with the hard threshold at the state's densities;
        returns the plain model (best epoch by validation loss), val loss and accuracy."""
        densities = {k: v for k, v in self.state["densities"].items()
                     if v < 1.0 and k in {l.name for l in model.layers}}
        keras.utils.set_random_seed(seed)
        with _scope(self.o.strategy):
            work = pruning.prune_layers(model, densities) if densities else _clone(model)
            work.compile(optimizer=keras.optimizers.Adam(self.o.learning_rate),
                         loss=_loss(model), metrics=["accuracy"])
        if epochs > 0:
            best = pruning.BestWeights("val_loss")
            work.fit(self.train[0], self.train[1], validation_data=self.val, epochs=epochs,
                     batch_size=self.o.batch_size, shuffle=True, verbose=0,
                     callbacks=pruning.pruning_callbacks() + [best])
        plain = pruning.transfer_weights(work, keras.models.clone_model(model))
        for name, d in densities.items():
            layer = plain.get_layer(name)
            w = layer.get_weights()
            w[0] = pruning.hard_threshold(w[0], d)
            layer.set_weights(w)
        loss, acc = _evaluate(plain, self.val)
        return plain, loss, acc

    def qat(self, model, seed: int) -> tuple["keras.Model", float, float, int]:
        masks = pruning.zero_masks(model)
        keras.utils.set_random_seed(seed)
        with _scope(self.o.strategy):
            q = pruning.quantize_aware(_clone(model))
            q.compile(optimizer=keras.optimizers.Adam(self.o.learning_rate / 2),
                      loss=_loss(model), metrics=["accuracy"])
        best = pruning.BestWeights("val_loss")
        q.fit(self.train[0], self.train[1], validation_data=self.val, epochs=self.o.qat_epochs,
              batch_size=self.o.batch_size, shuffle=True, verbose=0, callbacks=[best])
        plain = pruning.strip_quantization(q, model)
        moved = pruning.apply_zero_masks(plain, masks)
        loss, acc = _evaluate(plain, self.val)
        return plain, loss, acc, moved

    # -- steps --------------------------------------------------------------------------------

    def _record(self, rec: dict, t0: float) -> None:
        wb, ram = _sizes(self.model)
        rec.update({"step": self.state["step"], "weight_bytes_now": wb, "peak_ram_bytes_now": ram,
                    "seconds": round(time.time() - t0, 2)})
        self.state["steps"].append(rec)
        self.state["step"] += 1
        self._save()
        self.steps_this_call += 1
        budget = self.budget.flash_bytes
        acc = rec.get("val_accuracy")
        tag = ("fragile, undone" if rec.get("fragile") else
               "kept" if rec.get("accepted", True) else "not kept")
        if rec.get("by_size_alone"):
            tag += ", by size alone"
        self._log(f"[step {rec['step']:3d}] {rec['phase']:<9} {rec['kind']:<16} {rec.get('layer', ''):<14} "
                  f"{rec.get('change', ''):<22} stored {wb:>9,} B"
                  f"{f' / {budget:,}' if budget else ''}  RAM {ram:>8,} B  "
                  f"val acc {acc:.4f} (ref {_fmt(self.state['reference_accuracy'])})  {tag}"
                  f"  {rec['seconds']:.1f} s")
        if self.o.progress is not None:
            self.o.progress(dict(rec))

    def _stop_requested(self) -> bool:
        return self.o.stop_after is not None and self.steps_this_call >= self.o.stop_after

    def _seed(self) -> int:
        return self.o.seed + self.state["step"]

    def run(self) -> CompressionResult:
        if not self.state:
            self._start()
        while self.state["phase"] != "done":
            if self._stop_requested():
                self._log(f"stopped after {self.steps_this_call} steps; state saved in {self.out}")
                return self._result(complete=False)
            phase = self.state["phase"]
            if self.state["step"] >= self.o.max_steps:
                self._unreachable("flash", f"no result within max_steps={self.o.max_steps}")
            if phase == "ram":
                self._ram_step()
            elif phase == "factorize":
                self._factorize_step()
            elif phase == "sparsify":
                self._sparsify_step()
            elif phase == "qat":
                self._qat_step()
        return self._result(complete=True)

    def _start(self) -> None:
        t0 = time.time()
        loss, acc = _evaluate(_clone(self.model), self.val)
        fp = memory.keras_footprint(self.model)
        self.state = {
            "version": STATE_VERSION, "phase": "ram", "step": 0,
            "budget": asdict(self.budget), "options": json.loads(json.dumps(self.o.key())),
            "baseline": {"weight_bytes": fp.weight_bytes,
                         "peak_ram_bytes": fp.arena_bytes + fp.checkpoint_bytes,
                         "fp32_bytes": fp.totals["fp32"], "int8_dense_bytes": fp.totals["int8"],
                         "params": fp.totals["params"], "val_accuracy": acc, "val_loss": loss},
            "reference_accuracy": None, "densities": {}, "fragile": [], "narrow_fragile": [],
            "tried_factorize": [],
            "all_fragile_from_step": None, "qat_rounds": 0, "steps": [], "notes": [],
            "model_file": None}
        self._log(f"SparseComp: {self.model.name}, stored {fp.weight_bytes:,} B, peak RAM "
                  f"{fp.arena_bytes + fp.checkpoint_bytes:,} B, val acc {acc:.4f}; budget "
                  f"{self.budget.flash_bytes or '-'} B stored, {self.budget.ram_bytes or '-'} B RAM"
                  f" ({time.time() - t0:.1f} s)")
        self._save()

    def _set_reference(self) -> None:
        if self.state["reference_accuracy"] is None:
            if self.state["steps"]:
                self.state["reference_accuracy"] = self.state["steps"][-1]["val_accuracy"]
            else:
                self.state["reference_accuracy"] = self.state["baseline"]["val_accuracy"]

    # RAM ------------------------------------------------------------------------------------

    def _ram_step(self) -> None:
        limit = self.budget.ram_bytes
        _, peak = _sizes(self.model)
        if limit is None or peak <= limit:
            self._set_reference()
            self._check_floor()
            self.state["phase"] = "factorize" if self.o.factorize else "sparsify"
            self._save()
            return
        t0 = time.time()
        best = None
        for name in factorize.narrowable_layers(self.model):
            c = _channels(self.model.get_layer(name))
            if c <= self.o.min_channels:
                continue
            low = _sizes(factorize.narrow(self.model, name, self.o.min_channels))[1]
            if low < peak and (best is None or low < best[1]):
                best = (name, low, c)
        if best is None:
            fp = memory.keras_footprint(self.model)
            self._unreachable("ram", f"peak RAM {peak:,} B (activations {fp.arena_bytes:,} B + "
                                     f"checkpoint {fp.checkpoint_bytes:,} B) exceeds the RAM budget "
                                     f"{limit:,} B by {peak - limit:,} B and no layer can be "
                                     f"narrowed further (min_channels={self.o.min_channels})")
        name, low, c = best
        target = max(limit, low)
        lo, hi = self.o.min_channels, c - 1          # largest width whose peak <= target
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _sizes(factorize.narrow(self.model, name, mid))[1] <= target:
                lo = mid
            else:
                hi = mid - 1
        narrowed = factorize.narrow(self.model, name, lo)
        tuned, loss, acc = self.fine_tune(narrowed, self.o.fine_tune_epochs, self._seed())
        self.model = tuned
        self._record({"phase": "ram", "kind": "narrow", "layer": name, "change": f"{c} -> {lo} ch",
                      "channels_before": c, "channels_after": lo, "peak_before": peak,
                      "val_accuracy": acc, "val_loss": loss, "accepted": True}, t0)

    # factorization --------------------------------------------------------------------------

    def _factorize_step(self) -> None:
        wb, _ = _sizes(self.model)
        cand = None
        for r in sorted(_weighted_rows(self.model), key=lambda r: -r.stored_bytes):
            if r.type not in ("Dense", "Conv2D") or r.name in self.state["tried_factorize"]:
                continue
            if r.name.endswith(("_svd1", "_svd2", "_tk_in", "_tk_core", "_tk_out")):
                continue
            if r.stored_bytes < self.o.factorize_min_fraction * wb:
                continue
            if r.type == "Conv2D" and self.model.get_layer(r.name).kernel_size == (1, 1):
                continue
            cand = r
            break
        if cand is None:
            self.state["phase"] = "sparsify"
            self._save()
            return
        t0 = time.time()
        self.state["tried_factorize"].append(cand.name)
        fn = factorize.factorize_dense if cand.type == "Dense" else factorize.factorize_conv2d
        try:
            new = fn(self.model, cand.name)
        except ValueError as e:
            self.state["notes"].append(f"factorize {cand.name}: {e}")
            self._save()
            return
        parts = [l for l in new.layers if l.name.startswith(cand.name + "_")]
        ranks = [int(l.get_weights()[0].shape[-1]) for l in parts[:-1]]
        new_wb, new_ram = _sizes(new)
        rec = {"phase": "factorize", "kind": f"factorize_{cand.type.lower()}", "layer": cand.name,
               "change": f"ranks {ranks}", "ranks": ranks, "bytes_before": wb,
               "bytes_factorized": new_wb}
        ref = self.state["reference_accuracy"]
        if new_wb >= wb:
            rec.update(accepted=False, reason="no size gain",
                       val_accuracy=self.state["steps"][-1]["val_accuracy"] if self.state["steps"]
                       else self.state["baseline"]["val_accuracy"])
        elif self.budget.ram_bytes is not None and new_ram > self.budget.ram_bytes:
            rec.update(accepted=False, reason=f"peak RAM {new_ram:,} B over budget",
                       val_accuracy=ref)
        else:
            tuned, loss, acc = self.fine_tune(new, self.o.fine_tune_epochs, self._seed())
            ok = acc >= ref - self.o.fragile_drop
            rec.update(val_accuracy=acc, val_loss=loss, accepted=ok,
                       reason="" if ok else f"accuracy {acc:.4f} < {ref:.4f} - {self.o.fragile_drop}")
            if ok:
                self.model = tuned
        self._record(rec, t0)

    # sparsity -------------------------------------------------------------------------------

    def _steppable(self) -> list[tuple[memory.LayerFootprint, bool, bool]]:
        """Weighted layers that can still be sparsified or narrowed, largest first."""
        narrowable = set(factorize.narrowable_layers(self.model))
        out = []
        for r in sorted(_weighted_rows(self.model), key=lambda r: -r.stored_bytes):
            layer = self.model.get_layer(r.name)
            k = layer.get_weights()[0]
            can_sparsify = (np.count_nonzero(k) / k.size) * self.o.density_step >= self.o.min_density \
                and pruning.kept_count(k.size, np.count_nonzero(k) / k.size * self.o.density_step) < np.count_nonzero(k)
            can_narrow = r.name in narrowable and \
                math.floor(_channels(layer) * self.o.density_step) >= self.o.min_channels
            if can_sparsify or can_narrow:
                out.append((r, can_sparsify, can_narrow))
        return out

    def _floor_bytes(self) -> int:
        """Stored bytes with every narrowable layer at min_channels and every kernel at
        min_density (no training): no sequence of steps goes below it."""
        m = self.model
        for name in factorize.narrowable_layers(m):
            if _channels(m.get_layer(name)) > self.o.min_channels:
                m = factorize.narrow(m, name, self.o.min_channels)
        if m is self.model:
            m = _clone(m)
        for r in _weighted_rows(m):
            layer = m.get_layer(r.name)
            w = layer.get_weights()
            w[0] = pruning.hard_threshold(w[0], self.o.min_density)
            layer.set_weights(w)
        return _sizes(m)[0]

    def _plan(self, row, can_sparsify: bool, can_narrow: bool, wb: int):
        """The step for one layer: (kind, row, change, model to fine-tune, new density), or
        None when neither lowering its density (by up to ``max_density_jumps`` steps: CSR
        indices make a layer larger until enough weights are zero) nor narrowing it by
        ``density_step`` lowers the stored size. Narrowing is chosen when it saves more than
        ``narrow_gain_ratio`` times what the sparsity step saves."""
        layer = self.model.get_layer(row.name)
        sparse = None
        if can_sparsify:
            k = layer.get_weights()[0]
            density = np.count_nonzero(k) / k.size
            trial = _clone(self.model)
            w = trial.get_layer(row.name).get_weights()
            d = density
            for _ in range(self.o.max_density_jumps):
                d *= self.o.density_step
                if d < self.o.min_density:
                    break
                w2 = list(w)
                w2[0] = pruning.hard_threshold(w[0], d)
                trial.get_layer(row.name).set_weights(w2)
                gain = wb - _sizes(trial)[0]
                if gain > 0:
                    sparse = ("sparsify", row, f"density {density:.3f} -> {d:.3f}", self.model, d, gain)
                    break
        narrow = None
        if can_narrow:
            ch = _channels(layer)
            new_ch = max(self.o.min_channels, min(ch - 1, math.floor(ch * self.o.density_step)))
            narrowed = factorize.narrow(self.model, row.name, new_ch)
            gain = wb - _sizes(narrowed)[0]
            if gain > 0:
                narrow = ("narrow", row, f"{ch} -> {new_ch} ch", narrowed, None, gain)
        if narrow is not None and (sparse is None or narrow[5] > self.o.narrow_gain_ratio * sparse[5]):
            return narrow[:5]
        return sparse[:5] if sparse is not None else None

    def _check_floor(self) -> None:
        """Fails early when even the floor (see ``_floor_bytes``) is over the budget."""
        limit = self.budget.flash_bytes
        if limit is None or self.state.get("floor_checked") or _sizes(self.model)[0] <= limit:
            return
        floor = self._floor_bytes()
        self.state["floor_bytes"] = floor
        self.state["floor_checked"] = True
        if floor > limit:
            self._unreachable("flash", f"the budget of {limit:,} B is below the smallest size "
                                       f"this model can reach ({floor:,} B with every layer at "
                                       f"{self.o.min_channels} channels and density "
                                       f"{self.o.min_density})")

    def _sparsify_step(self) -> None:
        wb, _ = _sizes(self.model)
        limit = self.budget.flash_bytes
        if limit is None or wb <= limit:
            self.state["phase"] = "qat"
            self._save()
            return
        self._check_floor()
        t0 = time.time()
        cands = self._steppable()
        if not cands:
            self._unreachable("flash", "every layer is at min_density/min_channels")
        # A failed sparsity step makes a layer fragile; a failed narrowing only stops further
        # narrowing of it (removing channels is the harsher change).
        fragile = set(self.state["fragile"])
        no_narrow = set(self.state["narrow_fragile"])
        free = [(r, sp, na and r.name not in no_narrow) for r, sp, na in cands
                if r.name not in fragile and (sp or (na and r.name not in no_narrow))]
        by_size = not free
        plan = None
        for row, can_sparsify, can_narrow in free:
            plan = self._plan(row, can_sparsify, can_narrow, wb)
            if plan is not None:
                break
        if plan is None and not by_size:
            by_size = True  # the layers still open cannot lower the size: all are as if fragile
        if by_size and self.state["all_fragile_from_step"] is None:
            self.state["all_fragile_from_step"] = self.state["step"]
            self.state["notes"].append(f"from step {self.state['step']} every layer is fragile (or "
                                       "no step on a non-fragile layer lowers the size): continuing "
                                       "by size alone (steps kept whatever the accuracy)")
            self._log("every layer is fragile: continuing by size alone")
        if plan is None:
            for row, can_sparsify, can_narrow in cands:
                plan = self._plan(row, can_sparsify, can_narrow, wb)
                if plan is not None:
                    break
        if plan is None:
            self._unreachable("flash", "no step on any layer lowers the stored size further")
        kind, row, change, candidate, new_density = plan
        previous = dict(self.state["densities"])
        if kind == "sparsify":
            self.state["densities"][row.name] = float(new_density)
        tuned, loss, acc = self.fine_tune(candidate, self.o.fine_tune_epochs, self._seed())
        ref = self.state["reference_accuracy"]
        is_fragile = acc < ref - self.o.fragile_drop
        rec = {"phase": "sparsify", "kind": kind, "layer": row.name, "change": change,
               "val_accuracy": acc, "val_loss": loss, "bytes_before": wb,
               "fragile": bool(is_fragile and not by_size), "by_size_alone": by_size}
        if is_fragile and not by_size:
            self.state["narrow_fragile" if kind == "narrow" else "fragile"].append(row.name)
            self.state["densities"] = previous
            rec["accepted"] = False
        else:
            rec["accepted"] = True
            self.model = tuned
        self._record(rec, t0)

    # QAT ------------------------------------------------------------------------------------

    def _qat_step(self) -> None:
        t0 = time.time()
        before_wb, _ = _sizes(self.model)
        before_loss, before_acc = _evaluate(self.model, self.val)
        tuned, loss, acc, moved = self.qat(self.model, self._seed())
        self.state["qat_rounds"] += 1
        accepted = acc >= before_acc - self.o.fragile_drop
        if accepted:
            self.model = tuned
        else:
            # QAT on little data can wreck accuracy; the float weights (same zeros) are then kept
            # and the converter's post-training int8 quantization is what the device runs.
            self.state["notes"].append(
                f"int8 QAT lowered validation accuracy from {before_acc:.4f} to {acc:.4f}; kept the "
                "weights before QAT (post-training int8 quantization at conversion)")
            loss, acc = before_loss, before_acc
        wb, _ = _sizes(self.model)
        limit = self.budget.flash_bytes
        fits = limit is None or wb <= limit
        self.state["phase"] = "done" if fits else "sparsify"
        if not fits and self.state["qat_rounds"] >= self.o.max_qat_rounds:
            self.state["phase"] = "done"
            self.state["notes"].append(f"after {self.state['qat_rounds']} QAT rounds the stored "
                                       f"size {wb:,} B is still over the budget")
        self._record({"phase": "qat", "kind": "int8_qat", "layer": "", "change":
                      f"{self.o.qat_epochs} epochs", "val_accuracy": acc, "val_loss": loss,
                      "bytes_before": before_wb, "zeros_restored": moved, "accepted": accepted}, t0)
        if self.state["phase"] == "done" and not fits:
            self._unreachable("flash", f"int8 QAT leaves the model at {wb:,} B")

    # end ------------------------------------------------------------------------------------

    def _current_accuracy(self) -> float:
        if self.state["steps"]:
            for rec in reversed(self.state["steps"]):
                if rec.get("accepted", True):
                    return float(rec["val_accuracy"])
        return float(self.state["baseline"]["val_accuracy"])

    def report(self) -> dict:
        fp = memory.keras_footprint(self.model)
        base = self.state["baseline"]
        acc = self._current_accuracy()
        final = {"weight_bytes": fp.weight_bytes, "peak_ram_bytes": fp.arena_bytes + fp.checkpoint_bytes,
                 "arena_bytes": fp.arena_bytes, "checkpoint_bytes": fp.checkpoint_bytes,
                 "params": fp.totals["params"], "val_accuracy": acc,
                 "layers": {r.name: {"type": r.type, "stored_bytes": r.stored_bytes,
                                     "format": r.stored_format, "density": round(r.density, 4),
                                     "output_shape": list(r.output_shape)}
                            for r in fp.layers if r.params}}
        steps = self.state["steps"]
        return {
            "model": self.model.name, "budget": self.state["budget"],
            "options": self.state["options"], "baseline": base,
            "reference_accuracy": self.state["reference_accuracy"], "final": final,
            "meets_budget": ((self.budget.flash_bytes is None or fp.weight_bytes <= self.budget.flash_bytes)
                             and (self.budget.ram_bytes is None or
                                  final["peak_ram_bytes"] <= self.budget.ram_bytes)),
            "ratio_to_fp32": base["fp32_bytes"] / max(1, fp.weight_bytes),
            "ratio_to_int8_dense": base["int8_dense_bytes"] / max(1, fp.weight_bytes),
            "accuracy_drop": base["val_accuracy"] - acc,
            "ram_reduction": [s for s in steps if s["phase"] == "ram"],
            "factorization": [s for s in steps if s["phase"] == "factorize"],
            "fragile": self.state["fragile"], "narrow_fragile": self.state["narrow_fragile"],
            "all_fragile_from_step": self.state["all_fragile_from_step"],
            "steps": steps, "notes": self.state["notes"], "phase": self.state["phase"],
        }

    def _write_report(self, rep: dict) -> None:
        if self.out is None:
            return
        (self.out / "report.json").write_text(json.dumps(rep, indent=1))
        (self.out / "report.txt").write_text(format_report(rep, memory.keras_footprint(self.model)) + "\n")

    def _result(self, complete: bool) -> CompressionResult:
        rep = self.report()
        rep["complete"] = complete
        if self.out is not None:
            self._write_report(rep)
            if complete:
                self.model.save(self.out / "model.keras")
        return CompressionResult(model=self.model, report=rep, complete=complete,
                                 out_dir=str(self.out) if self.out else None)

    def _unreachable(self, kind: str, why: str):
        wb, ram = _sizes(self.model)
        acc = self._current_accuracy()
        budget = self.budget.flash_bytes if kind == "flash" else self.budget.ram_bytes
        where = ""
        if self.out is not None:
            self.model.save(self.out / "best.keras")
            rep = self.report()
            rep["complete"] = False
            rep["error"] = why
            self._write_report(rep)
            where = f"; the best model so far is in {self.out / 'best.keras'}"
        reached = wb if kind == "flash" else ram
        raise BudgetUnreachable(
            f"{'stored-size' if kind == 'flash' else 'RAM'} budget of {budget:,} B is unreachable: "
            f"{why}. Smallest {'stored size' if kind == 'flash' else 'peak RAM'} reached: "
            f"{reached:,} B ({reached - budget:+,} B over) at validation accuracy {acc:.4f}{where}",
            kind=kind, smallest_bytes=reached, accuracy=acc, budget_bytes=budget,
            out_dir=str(self.out) if self.out else None)


def format_report(rep: dict, footprint: memory.Footprint | None = None) -> str:
    """A readable table of a SparseComp report (and of the final footprint, if given)."""
    b = rep["baseline"]
    f = rep["final"]
    lines = [f"SparseComp report for {rep['model']}",
             f"budget: stored {rep['budget']['flash_bytes'] or '-'} B, RAM {rep['budget']['ram_bytes'] or '-'} B"
             f"{' (device ' + rep['budget']['device'] + ')' if rep['budget'].get('device') else ''}",
             f"baseline: stored {b['weight_bytes']:,} B (fp32 {b['fp32_bytes']:,} B, int8 dense "
             f"{b['int8_dense_bytes']:,} B), peak RAM {b['peak_ram_bytes']:,} B, val acc {b['val_accuracy']:.4f}",
             f"final:    stored {f['weight_bytes']:,} B, peak RAM {f['peak_ram_bytes']:,} B, "
             f"val acc {f['val_accuracy']:.4f} (drop {rep['accuracy_drop'] * 100:+.2f} points), "
             f"{rep['ratio_to_fp32']:.1f}x smaller than fp32, {rep['ratio_to_int8_dense']:.1f}x than int8 dense",
             f"meets budget: {rep['meets_budget']}", ""]
    head = ("step", "phase", "kind", "layer", "change", "stored B", "RAM B", "val acc", "result")
    rows = [head]
    for s in rep["steps"]:
        res = "fragile, undone" if s.get("fragile") else ("kept" if s.get("accepted", True) else
                                                           "not kept " + s.get("reason", ""))
        if s.get("by_size_alone"):
            res += " (by size alone)"
        rows.append((str(s["step"]), s["phase"], s["kind"], s.get("layer", ""), s.get("change", ""),
                     f"{s['weight_bytes_now']:,}", f"{s['peak_ram_bytes_now']:,}",
                     f"{s['val_accuracy']:.4f}", res))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.rjust(w) if j in (0, 5, 6, 7) else c.ljust(w)
                               for j, (c, w) in enumerate(zip(r, widths))).rstrip())
        if i == 0:
            lines.append("-" * sum(widths + [2 * (len(widths) - 1)]))
    if rep.get("fragile"):
        lines.append(f"\nfragile layers: {', '.join(rep['fragile'])}")
    if rep.get("narrow_fragile"):
        lines.append(f"layers not narrowed further (a narrowing failed): {', '.join(rep['narrow_fragile'])}")
    for n in rep.get("notes", []):
        lines.append(f"note: {n}")
    if footprint is not None:
        lines += ["", footprint.table()]
    return "\n".join(lines)


def compress(model: "keras.Model", budget: Any, train_data: Split, val_data: Split, *,
             out_dir: str | Path | None = None, resume: bool = False,
             **options: Any) -> CompressionResult:
    """Compress ``model`` to ``budget`` (bytes of stored parameters, ``(flash, ram)``, a
    :class:`Budget` or a device name); ``model`` itself is never modified.

    ``options`` are the fields of :class:`Options`. With ``out_dir`` the state is saved after
    every step, the final model and ``report.json``/``report.txt`` are written there, and
    ``resume=True`` continues an interrupted run. Raises :class:`BudgetUnreachable` (with the
    smallest size reached and its accuracy, the best model kept in ``out_dir/best.keras``)
    when the budget cannot be met."""
    unknown = set(options) - {f for f in Options.__dataclass_fields__ if not f.startswith("_")}
    if unknown:
        raise ValueError(f"unknown compress option(s): {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(k for k in Options.__dataclass_fields__ if not k.startswith('_'))}")
    opts = Options(**options)
    if not 0.0 < opts.density_step < 1.0:
        raise ValueError(f"density_step must be in (0, 1), got {opts.density_step}")
    b = Budget.of(budget)
    for name, (x, y) in (("train_data", train_data), ("val_data", val_data)):
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"{name}: {len(x)} inputs and {len(y)} labels")
    want = tuple(int(d) for d in model.inputs[0].shape[1:])
    if tuple(train_data[0].shape[1:]) != want:
        raise ValueError(f"train_data examples have shape {tuple(train_data[0].shape[1:])}, "
                         f"the model's input takes {want}")
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ValueError("resume=True needs out_dir")
    comp = _Compressor(None, b, train_data, val_data, opts, out)
    if not (resume and comp.load()):
        if out is not None and out.exists():
            for p in list(out.glob("step-*.keras")) + list(out.glob("state.json")):
                p.unlink()
        comp.model = _clone(model)
    return comp.run()
