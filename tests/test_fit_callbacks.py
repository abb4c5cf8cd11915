"""SparseComp and gNet inside a user's own ``model.fit``: prepare / SparseComp / strip, the exit
training model with exit_loss and GlobalExitValidation, densities vs tfmot's sparsities, the
docstring examples, and the callback path under a tf.distribute strategy."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from freeml_keras import datasets, memory
from freeml_keras.compression import callback as cbm
from freeml_keras.compression.callback import SparseComp, densities_of, prepare, strip
from freeml_keras.keras import keras


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


@pytest.fixture(scope="module")
def trained(digits):
    (x, y), _, _ = digits
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(name="flat"),
                          keras.layers.Dense(32, activation="relu", name="fc"),
                          keras.layers.Dense(16, activation="relu", name="fc2"),
                          keras.layers.Dense(10, name="logits")])
    m.compile(keras.optimizers.Adam(3e-3),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    m.fit(x, y, epochs=20, batch_size=64, verbose=0)
    return m


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_targets_by_name_density_or_sparsity_never_both(trained):
    assert densities_of(prepare(trained, target_sparsity=0.75)) == {"fc": 0.25, "fc2": 0.25,
                                                                   "logits": 0.25}
    assert densities_of(prepare(trained, densities={"fc": 0.5}))["fc"] == 0.5
    assert densities_of(prepare(trained)) == {"fc": 1.0, "fc2": 1.0, "logits": 1.0}
    with pytest.raises(ValueError, match="not both"):
        prepare(trained, densities=0.5, target_sparsity=0.5)
    with pytest.raises(ValueError, match="density must be in"):
        prepare(trained, target_sparsity=1.0)
    with pytest.raises(ValueError, match="no prunable layer named flat"):
        prepare(trained, densities={"flat": 0.5})
    # strip gives exactly the density asked for, and prepare does not touch the model
    before = [w.copy() for w in trained.get_weights()]
    plain = strip(prepare(trained, target_sparsity={"fc": 0.9}))
    k = plain.get_layer("fc").get_weights()[0]
    assert np.count_nonzero(k) == round(0.1 * k.size)
    assert all(np.array_equal(a, b) for a, b in zip(before, trained.get_weights()))


def test_callback_takes_largest_layer_first_and_stops_at_the_budget(trained, digits):
    (x, y), (xv, yv), _ = digits
    start = memory.keras_footprint(trained).weight_bytes
    budget = start - 900
    pruned = prepare(trained, budget=budget)
    pruned.compile(keras.optimizers.Adam(1e-3), _loss())
    sc = SparseComp(validation_data=(xv, yv), epochs_per_step=1, fragile_drop=0.05, verbose=0)
    hist = pruned.fit(x, y, epochs=30, batch_size=64, validation_data=(xv, yv), verbose=0,
                      callbacks=[sc])
    assert sc.budget_met and sc.weight_bytes <= budget
    assert len(hist.history["loss"]) == len(sc.steps) < 30          # stopped when met
    assert sc.steps[0]["layer"] == "fc"                             # the largest layer first
    assert sc.steps[0]["change"] == "density 1.000 -> 0.343"        # 0.7 steps until bytes drop
    small = strip(pruned)
    assert memory.keras_footprint(small).weight_bytes == sc.weight_bytes
    for name, d in sc.densities.items():
        k = small.get_layer(name).get_weights()[0]
        assert np.count_nonzero(k) == (k.size if d == 1.0 else max(1, round(d * k.size)))
    acc = float(np.mean(np.argmax(small.predict(xv, verbose=0), -1) == yv))
    assert acc == pytest.approx(sc.evaluation.accuracy) and acc > sc.reference_accuracy - 0.08


def test_a_fragile_step_is_undone_and_the_next_layer_tried(trained, digits):
    (x, y), (xv, yv), _ = digits
    pruned = prepare(trained, budget=500)
    pruned.compile(keras.optimizers.Adam(1e-3), _loss())
    before = [w.get_weights() for w in (pruned.get_layer(index=i) for i in range(1, 4))]
    # any drop counts (allowed -1): every step is fragile, undone, its layer marked
    sc = SparseComp(validation_data=(xv, yv), epochs_per_step=1, fragile_drop=-1.0,
                    fragile_confidence=0.5, verbose=0)
    pruned.fit(x, y, epochs=3, batch_size=64, validation_data=(xv, yv), verbose=0,
               callbacks=[sc])
    assert [s["layer"] for s in sc.steps] == ["fc", "fc2", "logits"]
    assert all(s["fragile"] and not s["accepted"] for s in sc.steps)
    assert sc.fragile == ["fc", "fc2", "logits"] and not sc.budget_met
    assert densities_of(pruned) == {"fc": 1.0, "fc2": 1.0, "logits": 1.0}
    after = [w.get_weights() for w in (pruned.get_layer(index=i) for i in range(1, 4))]
    for a, b in zip(before, after):                # the weights of before the steps, exactly
        assert all(np.array_equal(u, v) for u, v in zip(a, b))


def test_stop_when_met_false_keeps_training_at_the_final_densities(trained, digits):
    (x, y), (xv, yv), _ = digits
    pruned = prepare(trained, densities={"fc": 0.3})
    pruned.compile(keras.optimizers.Adam(1e-3), _loss())
    budget = memory.keras_footprint(strip(pruned)).weight_bytes     # met from the start
    sc = SparseComp(budget, (xv, yv), stop_when_met=False, verbose=0)
    hist = pruned.fit(x, y, epochs=3, batch_size=64, validation_data=(xv, yv), verbose=0,
                      callbacks=[sc])
    assert len(hist.history["loss"]) == 3 and sc.steps == [] and sc.budget_met
    assert densities_of(pruned)["fc"] == 0.3
    # the best epoch by validation loss is what the model holds after fit
    out = pruned.predict(xv, verbose=0)
    z = out - out.max(-1, keepdims=True)
    loss = float(np.mean(np.log(np.exp(z).sum(-1)) - z[np.arange(len(yv)), yv]))
    assert loss == pytest.approx(min(hist.history["val_loss"]), rel=1e-4)


def test_docstring_examples_run():
    """The ``model.fit(..., callbacks=[...])`` examples of the public pieces, as written."""
    from freeml_keras.exits import global_exit, training
    for mod in (cbm, global_exit, training):
        res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
        assert res.attempted > 0 and res.failed == 0, mod.__name__


def test_exit_head_in_users_fit_matches_what_the_exit_model_predicts(digits):
    from freeml_keras.exits import (GlobalExitValidation, attach_global_exit, exit_loss,
                                    training_model)
    (x, y), (xv, yv), _ = digits
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(inp)
    h2 = keras.layers.Conv2D(8, 3, activation="relu", name="c2")(h)
    out = keras.layers.Dense(10, activation="softmax", name="out")(keras.layers.Flatten()(h2))
    backbone = keras.Model(inp, out)
    backbone.compile("adam", "sparse_categorical_crossentropy")
    backbone.fit(x, y, epochs=3, verbose=0)
    frozen_before = [w.copy() for w in backbone.get_weights()]
    em = attach_global_exit(backbone, ["c1", "c2"], pooled_size=2)
    tm = training_model(em, "balanced")
    assert tm.output_names == ["exit_0", "exit_1"]
    tm.compile(keras.optimizers.Adam(1e-2), loss=exit_loss())
    val = GlobalExitValidation(em, (xv, yv), verbose=0)
    stop = keras.callbacks.EarlyStopping("val_exit_loss", patience=2)
    hist = tm.fit(x, [y, y], epochs=6, batch_size=64, verbose=0, callbacks=[val, stop])
    assert "val_exit_loss" in hist.history and "val_exit_acc_1" in hist.history
    # the exit model holds the best epoch's head; its predictions are the training model's
    best = int(np.argmin(hist.history["val_exit_loss"]))
    acc = em.evaluate((xv, yv))["exit_accuracy"]
    assert acc == pytest.approx([hist.history[f"val_exit_acc_{k}"][best] for k in range(2)])
    z = em.predict_exits(xv[:50])
    zt = tm.predict(xv[:50], verbose=0)
    assert np.allclose(z, np.stack(zt), atol=1e-4)
    # the backbone is frozen and the user's model untouched
    assert all(np.array_equal(a, b) for a, b in zip(frozen_before, backbone.get_weights()))
    assert all(l.trainable for l in backbone.layers)


DISTRIBUTED = textwrap.dedent("""
    import json
    from freeml_keras.keras import keras, tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    from freeml_keras import datasets, memory
    from freeml_keras.compression.callback import SparseComp, prepare, strip
    (x, y), (xv, yv), _ = datasets.load("digits")
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                          keras.layers.Dense(32, activation="relu", name="fc"),
                          keras.layers.Dense(10, activation="softmax", name="out")])
    m.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    m.fit(x, y, epochs=15, batch_size=64, verbose=0)
    budget = memory.keras_footprint(m).weight_bytes - 700
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        pruned = prepare(m, budget)
        pruned.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    sc = SparseComp(validation_data=(xv, yv), epochs_per_step=1, fragile_drop=0.05, verbose=0)
    pruned.fit(x, y, epochs=12, batch_size=64, validation_data=(xv, yv), verbose=0,
               callbacks=[sc])
    small = strip(pruned)
    k = small.get_layer("fc").get_weights()[0]
    print("RESULT " + json.dumps({
        "replicas": strategy.num_replicas_in_sync, "met": sc.budget_met, "budget": budget,
        "bytes": memory.keras_footprint(small).weight_bytes, "density": sc.densities["fc"],
        "fc_nonzero": int((k != 0).sum()), "fc_size": int(k.size),
        "mirrored": type(pruned.get_layer(index=1).pruning_schedule.density).__name__,
        "accepted": [s["accepted"] for s in sc.steps], "acc": sc.evaluation.accuracy}))
""")


def test_callback_path_under_mirrored_strategy_on_two_logical_cpus():
    """MirroredStrategy on two logical CPUs, not OneDeviceStrategy: with two replicas the
    density variables are mirrored and assigned from the callback (cross-replica), and tfmot
    updates the masks through merge_call, which one device would not exercise. Logical devices
    must be set before TensorFlow runs an op: a fresh process."""
    proc = subprocess.run([sys.executable, "-c", DISTRIBUTED], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    assert out["replicas"] == 2 and out["mirrored"] == "MirroredVariable", out
    assert out["met"] and out["bytes"] <= out["budget"], out
    assert out["fc_nonzero"] == max(1, round(out["density"] * out["fc_size"])) < out["fc_size"]
    assert any(out["accepted"]) and out["acc"] > 0.8, out
