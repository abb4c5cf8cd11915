"""SparseComp: compress a pre-trained tf_keras model to a device budget (stored bytes and RAM).

``compress(model, budget, train_data, val_data, **options)`` works on a clone and runs, with
a line of progress per step and the state saved to ``out_dir`` after every step:

Every fine-tune below is distilled from ``model`` (weight ``distill``, temperature
``temperature``): its probabilities on the training data are the soft targets, next to the
labels; early stopping and the kept epoch go by the validation loss on the labels alone.

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
   the reference with ``fragile_confidence`` (a paired test over the validation examples: on
   a few hundred examples one example is a fraction of a point), undo the step and mark the
   layer fragile (a failed narrowing only stops further narrowing of that layer). When every
   layer is fragile, the remaining bytes go by measured accuracy per byte: the possible steps
   on the largest layers are each probed with a short fine-tune and the one losing least per
   byte saved is kept whatever the accuracy (said in the report), at most ``1 -
   density_step`` of the present bytes per step (the chosen changes cut back to milder ones
   while they still save that much). A step that would save more than the bytes
   still over the budget is made milder (the last step ends close to the budget).
   With ``reconstruct`` ("ram", "all"; default "none") a narrowing (and with "all" a layer
   separation) refits the next layer by least squares to the outputs before the change.
4. Recovery: one longer fine-tune at the budget (up to ``recovery_epochs``, early stopping on
   the validation loss after ``recovery_patience`` epochs, best epoch kept).
5. int8 quantization-aware fine-tuning that keeps the zeros; if the stored size then exceeds
   the budget (int8 rounding moves a few weights), go back to 3. ``qat_epochs=0`` skips it
   (the converter's post-training quantization is then what the device runs).

The stored size is always ``keras_footprint(m).weight_bytes`` (int8, CSR where the converter
uses it); the reference accuracy is the validation accuracy after step 1 (steps 2-3 may lose
at most ``fragile_drop`` of it, at ``fragile_confidence``, until every layer is fragile).

Resume: ``state.json`` and the current model (``step-N.keras``) are written after every step;
``compress(..., out_dir=d, resume=True)`` continues from them and, since every step's
fine-tuning is seeded with ``seed + step``, ends where an uninterrupted run ends.

Every fine-tune is a ``fit`` of a :func:`~freeml_keras.compression.callback.prepare`-d copy
with the :class:`~freeml_keras.compression.callback.SparseComp` callback (the one users put in
their own ``fit``): a density step of phase 3 is that callback's step (threshold, best epoch,
paired fragile test, undo), the other fine-tunes hold the densities.

This module is the loop and the public API. The phases' steps are in ``ram``, ``separation``,
``sparsify``, ``recover`` and ``qat``; fine-tuning, distillation and the fragile test in
``training``; the saved state in ``state``; the report
and progress lines in ``report``; the budget and the options in ``budget`` and ``options``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from freeml_keras import memory
from freeml_keras.bridge import is_keras3, to_keras3, to_tf_keras
from freeml_keras.compression.budget import Budget, BudgetUnreachable
from freeml_keras.compression.job import Job, Split, Step, Unreachable, sizes
from freeml_keras.compression.options import Options
from freeml_keras.compression.qat import qat_step
from freeml_keras.compression.ram import ram_step
from freeml_keras.compression.recover import recover_step
from freeml_keras.compression.report import (build_report, format_report, start_line, step_line,
                                             write_report)
from freeml_keras.compression.separation import factorize_step
from freeml_keras.compression.sparsify import sparsify_step
from freeml_keras.compression.state import JobState
from freeml_keras.compression.training import clone, evaluate, teacher_probs
from freeml_keras.keras import keras

__all__ = ["compress", "CompressionResult", "Budget", "BudgetUnreachable", "Options"]

# The step each phase takes, in the order the phases run ("done" ends the loop).
PHASES = {"ram": ram_step, "factorize": factorize_step, "sparsify": sparsify_step,
          "recover": recover_step, "qat": qat_step}


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


class _Run:
    """One call of ``compress``: the loop over phase steps, saving the state after each."""

    def __init__(self, job: Job, out: Path | None):
        self.job = job
        self.out = out
        self.model: "keras.Model | None" = None
        self.state: JobState | None = None
        self.steps_this_call = 0

    def resume(self) -> bool:
        """Loads the saved state and model from the output directory, if there are any."""
        if self.out is None:
            return False
        loaded = JobState.load(self.out, self.job.budget, self.job.options)
        if loaded is None:
            return False
        self.state, self.model = loaded
        self.job.log(f"resuming from {self.out} at step {self.state.step} (phase {self.state.phase})")
        return True

    def start(self, model: "keras.Model") -> None:
        """A new run from (a copy of) ``model``: measures the baseline, saves step 0."""
        self.model = clone(model)
        t0 = time.time()
        loss, acc, _ = evaluate(clone(self.model), self.job.val)
        fp = memory.keras_footprint(self.model)
        baseline = {"weight_bytes": fp.weight_bytes,
                    "peak_ram_bytes": fp.arena_bytes + fp.checkpoint_bytes,
                    "fp32_bytes": fp.totals["fp32"], "int8_dense_bytes": fp.totals["int8"],
                    "params": fp.totals["params"], "val_accuracy": acc, "val_loss": loss}
        self.state = JobState.new(self.job.budget, self.job.options, baseline)
        self.job.log(start_line(self.model, self.state, self.job.budget, time.time() - t0))
        self._save()

    def run(self) -> CompressionResult:
        """Steps until the phase is "done" (or ``stop_after`` steps were taken this call)."""
        o = self.job.options
        while self.state.phase != "done":
            if o.stop_after is not None and self.steps_this_call >= o.stop_after:
                self.job.log(f"stopped after {self.steps_this_call} steps; state saved in {self.out}")
                return self._result(complete=False)
            if self.state.step >= o.max_steps:
                self._unreachable(Unreachable("flash", f"no result within max_steps={o.max_steps}"))
            try:
                step = PHASES[self.state.phase](self.job, self.model, self.state)
            except Unreachable as u:
                self._unreachable(u)
            self._apply(step)
        return self._result(complete=True)

    def _apply(self, step: Step) -> None:
        """Takes the step's model, records the step (or saves the state), and raises the
        budget failure it found, if any."""
        if step.model is not None:
            self.model = step.model
        if step.record is None:
            self._save()
        else:
            self._record(step.record, step.started)
        if step.unreachable is not None:
            self._unreachable(step.unreachable)

    def _save(self) -> None:
        if self.out is not None:
            self.state.save(self.out, self.model)

    def _record(self, rec: dict, t0: float) -> None:
        wb, ram = sizes(self.model)
        rec.update({"step": self.state.step, "weight_bytes_now": wb, "peak_ram_bytes_now": ram,
                    "seconds": round(time.time() - t0, 2)})
        self.state.steps.append(rec)
        self.state.step += 1
        self._save()
        self.steps_this_call += 1
        self.job.log(step_line(rec, self.job.budget, self.state.reference_accuracy))
        if self.job.options.progress is not None:
            self.job.options.progress(dict(rec))

    def _report(self, complete: bool, error: str | None = None) -> dict:
        rep = build_report(self.model, self.state, self.job.budget)
        rep["complete"] = complete
        if error is not None:
            rep["error"] = error
        if self.out is not None:
            write_report(self.out, rep, self.model)
        return rep

    def _result(self, complete: bool) -> CompressionResult:
        rep = self._report(complete)
        if self.out is not None and complete:
            self.model.save(self.out / "model.keras")
        return CompressionResult(model=self.model, report=rep, complete=complete,
                                 out_dir=str(self.out) if self.out else None)

    def _unreachable(self, u: Unreachable) -> NoReturn:
        """Keeps the best model so far and the report in the output directory and raises
        :class:`BudgetUnreachable`."""
        wb, ram = sizes(self.model)
        acc = self.state.current_accuracy()
        flash = u.kind == "flash"
        budget = self.job.budget.flash_bytes if flash else self.job.budget.ram_bytes
        where = ""
        if self.out is not None:
            self.model.save(self.out / "best.keras")
            self._report(complete=False, error=u.why)
            where = f"; the best model so far is in {self.out / 'best.keras'}"
        reached = wb if flash else ram
        raise BudgetUnreachable(
            f"{'stored-size' if flash else 'RAM'} budget of {budget:,} B is unreachable: "
            f"{u.why}. Smallest {'stored size' if flash else 'peak RAM'} reached: "
            f"{reached:,} B ({reached - budget:+,} B over) at validation accuracy {acc:.4f}{where}",
            kind=u.kind, smallest_bytes=reached, accuracy=acc, budget_bytes=budget,
            out_dir=str(self.out) if self.out else None) from None


def compress(model: "keras.Model", budget: Any, train_data: Split, val_data: Split, *,
             out_dir: str | Path | None = None, resume: bool = False,
             **options: Any) -> CompressionResult:
    """Compress ``model`` to ``budget`` (bytes of stored parameters, ``(flash, ram)``, a
    :class:`Budget` or a device name); ``model`` itself is never modified.

    ``options`` are the fields of :class:`Options`. With ``out_dir`` the state is saved after
    every step, the final model and ``report.json``/``report.txt`` are written there, and
    ``resume=True`` continues an interrupted run. Raises :class:`BudgetUnreachable` (with the
    smallest size reached and its accuracy, the best model kept in ``out_dir/best.keras``)
    when the budget cannot be met.

    A Keras 3 ``model`` is compressed through its tf_keras copy (:mod:`freeml_keras.bridge`)
    and the result comes back as a Keras 3 model (``out_dir/model.keras`` a Keras 3 file)."""
    keras3 = is_keras3(model)
    model = to_tf_keras(model)
    opts = Options.parse(options)
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
    # The pre-trained model's probabilities: every fine-tune distils toward them.
    teacher = teacher_probs(model, train_data[0]) if opts.distill > 0 else None
    run = _Run(Job(b, opts, train_data, val_data, teacher), out)
    if not (resume and run.resume()):
        if out is not None:
            JobState.clear(out)
        run.start(model)
    result = run.run()
    if keras3:
        result.model = to_keras3(result.model)
        if out is not None and result.complete:
            result.model.save(out / "model.keras")
    return result
