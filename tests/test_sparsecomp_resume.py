"""SparseComp resume: an interrupted run continued from its output directory ends where an
uninterrupted run ends."""

import json

import numpy as np
import pytest

from freeml_keras import datasets
from freeml_keras.keras import keras
from freeml_keras.compression.sparsecomp import compress

OPTS = dict(fine_tune_epochs=1, qat_epochs=1, batch_size=64, factorize=False, verbose=False)


def _model(tr):
    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 1), name="input")
    x = keras.layers.Conv2D(12, 3, activation="relu", name="conv")(inp)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(32, activation="relu", name="fc")(x)
    out = keras.layers.Dense(10, activation="softmax", name="logits")(x)
    m = keras.Model(inp, out, name="tiny")
    m.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    m.fit(*tr, epochs=20, batch_size=64, verbose=0)
    return m


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    tr, va, _ = datasets.load("digits")
    m = _model(tr)
    tr = datasets.subset(tr, 600)          # fine-tune on a subset: the test is about state
    budget = (2600, 700)
    full = compress(m, budget, tr, va, out_dir=tmp_path / "full", **OPTS)
    n_steps = len(full.report["steps"])
    assert n_steps >= 6 and full.complete, [(s["kind"], s["layer"]) for s in full.report["steps"]]

    part = compress(m, budget, tr, va, out_dir=tmp_path / "cut", stop_after=3, **OPTS)
    assert not part.complete and len(part.report["steps"]) == 3
    state = json.loads((tmp_path / "cut" / "state.json").read_text())
    assert state["step"] == 3 and (tmp_path / "cut" / state["model_file"]).exists()
    assert not (tmp_path / "cut" / "model.keras").exists()
    # An interruption from inside a step's progress callback (after its state was saved).
    calls = []

    def interrupt(rec):
        calls.append(rec["step"])
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compress(m, budget, tr, va, out_dir=tmp_path / "cut", resume=True, progress=interrupt,
                 **OPTS)
    assert calls == [3, 4]
    resumed = compress(m, budget, tr, va, out_dir=tmp_path / "cut", resume=True, **OPTS)
    assert resumed.complete

    def strip_time(steps):
        return [{k: v for k, v in s.items() if k != "seconds"} for s in steps]

    a, b = strip_time(full.report["steps"]), strip_time(resumed.report["steps"])
    assert [(s["kind"], s["layer"], s["change"], s["accepted"]) for s in a] == \
           [(s["kind"], s["layer"], s["change"], s["accepted"]) for s in b]
    for sa, sb in zip(a, b):
        assert sa["weight_bytes_now"] == sb["weight_bytes_now"]
        assert sa["val_accuracy"] == pytest.approx(sb["val_accuracy"], abs=1e-6)
    assert resumed.weight_bytes == full.weight_bytes
    for wa, wb in zip(full.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_allclose(wa, wb, atol=1e-5)

    # Other options than the saved state's are refused.
    with pytest.raises(ValueError, match="cannot resume"):
        compress(m, budget, tr, va, out_dir=tmp_path / "cut", resume=True,
                 **{**OPTS, "density_step": 0.5})
