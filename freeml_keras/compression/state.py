"""The resumable state of a SparseComp run: what ``out_dir/state.json`` holds (with the current
model in ``out_dir/step-N.keras``), written after every step and read back by ``resume=True``.

``STATE_VERSION`` changes when the saved fields change meaning; a state of another version is
refused. Files written before the state became a dataclass (version 1, without the floor
fields until the floor was computed) load as they are.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from freeml_keras.compression.budget import Budget
from freeml_keras.compression.options import Options
from freeml_keras.keras import keras

__all__ = ["STATE_VERSION", "JobState"]

STATE_VERSION = 1
STATE_FILE = "state.json"


def _as_json(value):
    """``value`` as it comes back from JSON (tuples become lists): what a loaded state holds."""
    return json.loads(json.dumps(value))


@dataclass
class JobState:
    """Where a run is; every field is saved."""
    version: int
    phase: str                          # "ram", "factorize", "sparsify", "qat", then "done"
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
            raise ValueError(f"{out}/{STATE_FILE} has version {saved.get('version')}, "
                             f"expected {STATE_VERSION}; start without resume")
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

    def set_reference(self) -> None:
        """Fixes the reference accuracy (steps may lose at most ``fragile_drop`` of it) to the
        last step's validation accuracy, once."""
        if self.reference_accuracy is None:
            self.reference_accuracy = self.last_accuracy()
