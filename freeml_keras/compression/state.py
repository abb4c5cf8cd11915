"""The resumable state of a SparseComp run: what ``out_dir/state.json`` holds (with the current
model in ``out_dir/step-N.keras``), written after every step and read back by ``resume=True``.

``STATE_VERSION`` changes when the saved fields change meaning; a state of another version is
refused with the reason. Version 2 (distillation, the paired fragile test, the recovery phase)
holds the reference model's per-example validation results; a version-1 run took its steps
without them and cannot be continued: it is refused, naming the version, and starts over
without ``resume``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from freeml_keras.compression.budget import Budget
from freeml_keras.compression.options import Options
from freeml_keras.keras import keras

__all__ = ["STATE_VERSION", "JobState"]

STATE_VERSION = 2
STATE_FILE = "state.json"


def _as_json(value):
    """``value`` as it comes back from JSON (tuples become lists): what a loaded state holds."""
    return json.loads(json.dumps(value))


@dataclass
class JobState:
    """Where a run is; every field is saved."""
    version: int
    phase: str                          # "ram", "factorize", "sparsify", "recover", "qat", "done"
    step: int                           # steps recorded so far (the next step's number)
    budget: dict                        # the Budget's fields
    options: dict                       # Options.key()
    baseline: dict                      # the given model: sizes, validation loss and accuracy
    reference_accuracy: float | None    # validation accuracy once RAM fits (None before)
    densities: dict[str, float]         # kernel density of each sparsified layer
    fragile: list[str]                  # layers whose sparsity step failed
    narrow_fragile: list[str]           # layers whose narrowing failed
    tried_factorize: list[str]
    all_fragile_from_step: int | None   # from then on steps are kept by size alone
    qat_rounds: int
    steps: list[dict]                   # one record per step: the report's table
    notes: list[str]
    model_file: str | None              # the current model, in the output directory
    floor_bytes: int | None = None      # smallest stored size reachable, once computed
    floor_checked: bool = False
    reference_correct: str | None = None  # reference model: right or not per validation
                                          # example (hex of the packed bits)
    reference_examples: int = 0

    @classmethod
    def new(cls, budget: Budget, options: Options, baseline: dict) -> "JobState":
        """The state at step 0 of a run from the model described by ``baseline``."""
        return cls(version=STATE_VERSION, phase="ram", step=0, budget=asdict(budget),
                   options=_as_json(options.key()), baseline=baseline, reference_accuracy=None,
                   densities={}, fragile=[], narrow_fragile=[], tried_factorize=[],
                   all_fragile_from_step=None, qat_rounds=0, steps=[], notes=[], model_file=None)

    @classmethod
    def load(cls, out: Path, budget: Budget,
             options: Options) -> "tuple[JobState, keras.Model] | None":
        """The state and current model saved in ``out``, or None when there is none. Raises
        ``ValueError`` for another version, or a run started with other options or budget."""
        path = out / STATE_FILE
        if not path.exists():
            return None
        saved = json.loads(path.read_text())
        if saved.get("version") != STATE_VERSION:
            raise ValueError(f"{out}/{STATE_FILE} has state version {saved.get('version')}, this "
                             f"SparseComp writes version {STATE_VERSION} (distillation, paired "
                             "fragile test, recovery fine-tune): the saved run cannot be "
                             "continued; start it again without resume")
        if saved["options"] != _as_json(options.key()) or saved["budget"] != asdict(budget):
            raise ValueError(f"cannot resume from {out}: it was started with other options "
                             f"or budget ({saved['budget']}, {saved['options']})")
        unknown = set(saved) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"{out}/{STATE_FILE} has fields this version does not know: "
                             f"{', '.join(sorted(unknown))}; start without resume")
        state = cls(**saved)
        return state, keras.models.load_model(out / state.model_file)

    def save(self, out: Path, model: "keras.Model") -> None:
        """Writes ``model`` as ``step-<step>.keras`` and the state, each atomically, then removes
        the previous step's model."""
        out.mkdir(parents=True, exist_ok=True)
        name = f"step-{self.step}.keras"
        tmp = out / f"tmp-{name}"
        model.save(tmp)
        tmp.replace(out / name)
        old = self.model_file
        self.model_file = name
        tmp_state = out / f"{STATE_FILE}.tmp"
        tmp_state.write_text(json.dumps(asdict(self), indent=1))
        tmp_state.replace(out / STATE_FILE)
        if old and old != name and (out / old).exists():
            (out / old).unlink()

    @staticmethod
    def clear(out: Path) -> None:
        """Removes a saved state and its step models from ``out`` (a run that starts over)."""
        if out.exists():
            for p in list(out.glob("step-*.keras")) + list(out.glob(STATE_FILE)):
                p.unlink()

    def step_seed(self, seed: int) -> int:
        """The seed of this step's fine-tuning: ``seed + step``, so a resumed run repeats it."""
        return seed + self.step

    def last_accuracy(self) -> float:
        """Validation accuracy of the last step, kept or not (the baseline's before any)."""
        return self.steps[-1]["val_accuracy"] if self.steps else self.baseline["val_accuracy"]

    def current_accuracy(self) -> float:
        """Validation accuracy of the current model: the last kept step's (the baseline's
        before any)."""
        for rec in reversed(self.steps):
            if rec.get("accepted", True):
                return float(rec["val_accuracy"])
        return float(self.baseline["val_accuracy"])

    def set_reference(self, correct: np.ndarray | None = None) -> None:
        """Fixes the reference (steps may lose at most ``fragile_drop`` of its validation
        accuracy) once: the current model, with its per-example results ``correct`` (the last
        step's accuracy without them)."""
        if self.reference_accuracy is None:
            if correct is None:
                self.reference_accuracy = self.last_accuracy()
                return
            correct = np.asarray(correct, bool)
            self.reference_accuracy = float(np.mean(correct))
            self.reference_correct = np.packbits(correct).tobytes().hex()
            self.reference_examples = int(len(correct))

    def reference_results(self) -> np.ndarray | None:
        """Per validation example, whether the reference model gets it right (None before the
        reference is fixed)."""
        if self.reference_correct is None:
            return None
        bits = np.unpackbits(np.frombuffer(bytes.fromhex(self.reference_correct), np.uint8))
        return bits[:self.reference_examples].astype(bool)
