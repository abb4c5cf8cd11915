"""SparseComp on digits: hard threshold, the loop to a budget, fragile layers, errors."""

import json

import numpy as np
import pytest

from freeml_keras import datasets, memory
from freeml_keras.compression import pruning
from freeml_keras.keras import keras
from freeml_keras.compression.sparsecomp import Budget, BudgetUnreachable, CompressionResult, compress

FAST = dict(fine_tune_epochs=1, qat_epochs=1, batch_size=64, verbose=False)


@pytest.fixture(scope="module")
def digits():
    tr, va, _ = datasets.load("digits")
    return tr, va


@pytest.fixture(scope="module")
def trained(digits):
    tr, va = digits
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1), name="input")
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv")(inp)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(32, activation="relu", name="fc")(x)
    out = keras.layers.Dense(10, activation="softmax", name="logits")(x)
    m = keras.Model(inp, out, name="tiny")
    m.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(*tr, epochs=25, batch_size=64, verbose=0)
    return m


def test_hard_threshold_gives_exactly_the_density_per_layer(trained, digits):
    tr, _ = digits
    densities = {"conv": 0.5, "fc": 0.137, "logits": 0.3}
    pruned = pruning.prune_layers(trained, densities)
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(tr[0][:64], tr[1][:64], epochs=1, batch_size=64, verbose=0,
               callbacks=pruning.pruning_callbacks())          # exactly one optimizer step
    plain = pruning.strip(pruned, densities)
    for name, d in densities.items():
        k = plain.get_layer(name).get_weights()[0]
        assert np.count_nonzero(k) == round(k.size * d), name
    # tfmot alone (no tie cutting) already gives the density here: weights are distinct.
    raw = pruning.strip(pruned)
    for name, d in densities.items():
        k = raw.get_layer(name).get_weights()[0]
        assert np.count_nonzero(k) == round(k.size * d), name
    # The numpy threshold keeps the largest magnitudes and cuts ties by position.
    t = pruning.hard_threshold(np.array([3.0, -1.0, 1.0, 1.0, 0.5]), 0.6)
    np.testing.assert_array_equal(t, [3.0, -1.0, 1.0, 0.0, 0.0])


def test_qat_keeps_sparsity_and_returns_a_plain_model(trained, digits):
    tr, va = digits
    m = keras.models.clone_model(trained)
    m.set_weights(trained.get_weights())
    w = m.get_layer("fc").get_weights()
    w[0] = pruning.hard_threshold(w[0], 0.2)
    m.get_layer("fc").set_weights(w)
    q = pruning.quantize_aware(m)
    q.compile("adam", "sparse_categorical_crossentropy")
    q.fit(*tr, epochs=1, batch_size=128, verbose=0)
    plain = pruning.strip_quantization(q, m)
    assert [type(l).__name__ for l in plain.layers] == [type(l).__name__ for l in m.layers]
    k = plain.get_layer("fc").get_weights()[0]
    assert np.array_equal(k == 0, w[0] == 0)
    assert not np.array_equal(k, w[0])                      # it did train


def test_loop_meets_a_budget_and_leaves_the_model_alone(trained, digits, tmp_path):
    tr, va = digits
    before = [w.copy() for w in trained.get_weights()]
    fp0 = memory.keras_footprint(trained)
    budget = Budget(flash_bytes=3200, ram_bytes=700)
    lines = []
    res = compress(trained, budget, tr, va, out_dir=tmp_path, progress=lines.append, **FAST)
    assert isinstance(res, CompressionResult) and res.complete
    fp = memory.keras_footprint(res.model)
    assert fp.weight_bytes == res.weight_bytes <= 3200 < fp0.weight_bytes
    assert fp.arena_bytes + fp.checkpoint_bytes == res.peak_ram_bytes <= 700
    assert res.report["meets_budget"]
    assert res.val_accuracy > 0.85
    # One progress record per step, ending with int8 QAT; a RAM step narrowed the conv.
    assert len(lines) == len(res.report["steps"]) and lines[-1]["kind"] == "int8_qat"
    assert res.report["ram_reduction"][0]["layer"] == "conv"
    assert any(s["phase"] == "sparsify" and s["accepted"] for s in res.report["steps"])
    # Files: final model, JSON report, readable table.
    saved = keras.models.load_model(tmp_path / "model.keras")
    assert memory.keras_footprint(saved).weight_bytes == res.weight_bytes
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["final"]["weight_bytes"] == res.weight_bytes
    assert "int8_qat" in (tmp_path / "report.txt").read_text()
    # The user's model is unchanged.
    assert all(np.array_equal(a, b) for a, b in zip(before, trained.get_weights()))
    assert trained.get_layer("conv").filters == 16


def test_qat_epochs_zero_skips_qat(trained, digits):
    tr, va = digits
    opts = {**FAST, "qat_epochs": 0, "recovery_epochs": 1}
    res = compress(trained, 5000, tr, va, factorize=False, **opts)
    kinds = [s["kind"] for s in res.report["steps"]]
    assert res.complete and res.weight_bytes <= 5000
    assert "int8_qat" not in kinds and kinds[-1] == "recovery_fine_tune"
    assert any("qat_epochs=0" in n for n in res.report["notes"])


def test_fragile_layers_are_undone_then_size_alone(trained, digits):
    tr, va = digits
    # A negative allowed drop makes every step fail the accuracy test.
    res = compress(trained, 5000, tr, va, fragile_drop=-1.0, factorize=False, **FAST)
    steps = [s for s in res.report["steps"] if s["phase"] == "sparsify"]
    fragile = [s for s in steps if s["fragile"]]
    assert fragile and all(not s["accepted"] for s in fragile)
    start = res.report["all_fragile_from_step"]
    assert start is not None and any("accuracy per byte" in n for n in res.report["notes"])
    # The conv layer is too small for a sparsity step to save bytes: it can only be narrowed.
    assert {"fc", "logits"} <= set(res.report["fragile"])
    assert set(res.report["fragile"]) | set(res.report["narrow_fragile"]) == \
        {s["layer"] for s in fragile}
    # A failed narrowing leaves the layer open to sparsity steps; a failed one closes it.
    both = set(res.report["narrow_fragile"]) & set(res.report["fragile"])
    assert both
    for name in both:
        first = {s["kind"]: s["step"] for s in reversed(fragile) if s["layer"] == name}
        assert first["narrow"] < first["sparsify"]
        assert not any(s["layer"] == name and s["step"] > first["sparsify"]
                       for s in steps if s["step"] < start)
    later = [s for s in steps if s["step"] >= start]
    assert later and all(s["by_size_alone"] and s["accepted"] for s in later)
    # From then on each step allocates the bytes still over the budget across layers by the
    # measured accuracy per byte: the chosen changes are among the measured ones.
    for s in later:
        assert s["kind"] == "allocate" and s["search"]
        chosen = [m for m in s["search"] if m["chosen"]]
        assert chosen and {m["layer"] for m in chosen} == set(s["layer"].split(","))
        assert len({m["layer"] for m in chosen}) == len(chosen)     # one change per layer
    assert res.weight_bytes <= 5000
    # An undone step leaves the size where it was.
    for s in fragile:
        assert s["weight_bytes_now"] == s["bytes_before"]


def test_no_fragile_layer_with_a_generous_threshold(trained, digits):
    tr, va = digits
    res = compress(trained, 5000, tr, va, fragile_drop=1.0, factorize=False, **FAST)
    assert res.report["fragile"] == [] and res.report["all_fragile_from_step"] is None


def test_impossible_budgets_say_how_far(trained, digits, tmp_path):
    tr, va = digits
    with pytest.raises(BudgetUnreachable) as e:
        compress(trained, 300, tr, va, out_dir=tmp_path / "flash", **FAST)
    err = e.value
    assert err.kind == "flash" and err.smallest_bytes > 300
    assert f"{err.smallest_bytes:,} B" in str(err) and f"{err.accuracy:.4f}" in str(err)
    assert (tmp_path / "flash" / "best.keras").exists()
    assert json.loads((tmp_path / "flash" / "report.json").read_text())["complete"] is False
    # The input alone (64 B) and the checkpoint state (112 B) exceed a 100 B RAM budget.
    with pytest.raises(BudgetUnreachable, match=r"RAM budget of 100 B is unreachable.*by \d+ B") as e:
        compress(trained, Budget(None, 100), tr, va, **FAST)
    assert e.value.kind == "ram" and e.value.smallest_bytes > 100


def test_budget_forms_and_bad_options(trained, digits):
    assert Budget.of("msp430fr5994") == Budget(20 * 1024, 16 * 1024, "msp430fr5994")
    assert Budget.of(1000) == Budget(1000) and Budget.of((1000, 500)) == Budget(1000, 500)
    with pytest.raises(ValueError, match="unknown device"):
        Budget.of("z80")
    tr, va = digits
    with pytest.raises(ValueError, match="unknown compress option.*epochz"):
        compress(trained, 1000, tr, va, epochz=3)
    with pytest.raises(ValueError, match="train_data examples have shape"):
        compress(trained, 1000, (tr[0][:, :4], tr[1]), va)


def test_cli_compress_meets_a_budget_and_reports_an_impossible_one(trained, tmp_path, capsys):
    from freeml_keras import cli

    path = tmp_path / "tiny.keras"
    trained.save(path)
    code = cli.main(["compress", str(path), "--dataset", "digits", "--flash-kb", "5.5",
                     "--out", str(tmp_path / "out"), "--epochs", "1", "--no-factorize"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "[step   0]" in out and "meets budget: True" in out
    saved = keras.models.load_model(tmp_path / "out" / "model.keras")
    assert memory.keras_footprint(saved).weight_bytes <= int(5.5 * 1024)
    assert keras.models.load_model(path).get_layer("conv").filters == 16
    code = cli.main(["compress", str(path), "--dataset", "digits", "--flash-kb", "0.3",
                     "--out", str(tmp_path / "out2"), "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "stored-size budget of 307 B is unreachable" in err[0] and "validation accuracy" in err[0]
    with pytest.raises(SystemExit):
        cli.main(["compress", str(path), "--dataset", "digits", "--out", str(tmp_path / "x")])


def test_qat_leaves_unsupported_conv1d_in_float_and_frozen():
    keras.utils.set_random_seed(0)
    inp = keras.Input((20, 3))
    x = keras.layers.Conv1D(6, 3, activation="relu", name="conv")(inp)
    x = keras.layers.MaxPooling1D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    out = keras.layers.Dense(4, activation="softmax", name="logits")(x)
    m = keras.Model(inp, out)
    w = m.get_layer("conv").get_weights()
    w[0] = pruning.hard_threshold(w[0], 0.4)
    m.get_layer("conv").set_weights(w)
    q = pruning.quantize_aware(m)
    q.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    q.fit(rng.normal(size=(32, 20, 3)), rng.integers(0, 4, 32), epochs=1, verbose=0)
    plain = pruning.strip_quantization(q, m)
    np.testing.assert_array_equal(plain.get_layer("conv").get_weights()[0], w[0])
    assert not np.array_equal(plain.get_layer("logits").get_weights()[0],
                              m.get_layer("logits").get_weights()[0])


def test_best_weights_is_early_stopping_except_when_no_epoch_has_a_finite_loss():
    """BestWeights restores the best epoch at the end of a run that did not stop early, as
    tf_keras 2.21's EarlyStopping(restore_best_weights=True) does; when no val_loss is finite
    it keeps the last epoch's weights where EarlyStopping restores the first's (why it stays)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 1)
    xv = rng.normal(size=(32, 4)).astype("float32")
    yv = rng.integers(0, 3, 32)
    epochs = 5

    def fit(callback, xv):
        keras.utils.set_random_seed(0)
        m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3)])
        m.compile(keras.optimizers.Adam(0.05),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        epoch_weights = []
        snap = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda e, logs: epoch_weights.append(m.get_weights()))
        h = m.fit(x, y, validation_data=(xv, yv), epochs=epochs, batch_size=16, verbose=0,
                  callbacks=[snap, callback])
        return m.get_weights(), h.history["val_loss"], epoch_weights

    def same(a, b):
        return all(np.array_equal(u, v) for u, v in zip(a, b))

    def early_stopping():
        return keras.callbacks.EarlyStopping("val_loss", patience=epochs, restore_best_weights=True)

    w_best, losses, snaps = fit(pruning.BestWeights("val_loss"), xv)
    w_es, losses_es, _ = fit(early_stopping(), xv)
    assert len(losses_es) == epochs and int(np.argmin(losses)) < epochs - 1
    assert same(w_best, snaps[int(np.argmin(losses))]) and same(w_best, w_es)

    overflow = xv.copy()
    overflow[0] = 3e38                       # one example overflows: every val_loss is inf or NaN
    w_best, losses, snaps = fit(pruning.BestWeights("val_loss"), overflow)
    w_es, _, _ = fit(early_stopping(), overflow)
    assert not np.isfinite(losses).any()
    assert same(w_best, snaps[-1]) and same(w_es, snaps[0]) and not same(w_best, w_es)


def test_cli_compress_options_reach_compress_and_resume(trained, tmp_path, capsys):
    """The recovery options of compress() on the command line: they are in the saved state,
    --stop-after leaves a state that --resume finishes, and a resume with other options is
    refused in one line."""
    from freeml_keras import cli

    path = tmp_path / "tiny.keras"
    trained.save(path)
    out = tmp_path / "out"
    common = ["compress", str(path), "--dataset", "digits", "--flash-kb", "5.5", "--out", str(out),
              "--epochs", "1", "--no-factorize", "--train-limit", "600", "--no-distill",
              "--recovery-epochs", "2", "--recovery-patience", "1", "--fragile-confidence", "0.8",
              "--learning-rate", "1e-3", "--seed", "3"]
    assert cli.main(common + ["--stop-after", "1"]) == 0
    assert "add --resume to continue" in capsys.readouterr().out
    opts = json.loads((out / "state.json").read_text())["options"]
    assert (opts["distill"], opts["recovery_epochs"], opts["recovery_patience"]) == (0.0, 2, 1)
    assert (opts["fragile_confidence"], opts["learning_rate"], opts["seed"]) == (0.8, 1e-3, 3)
    assert not (out / "model.keras").exists()
    assert cli.main(common + ["--resume"]) == 0
    text = capsys.readouterr().out
    assert "meets budget: True" in text and (out / "model.keras").exists()
    steps = json.loads((out / "report.json").read_text())["steps"]
    rec = [s for s in steps if s.get("kind") == "recovery_fine_tune"]
    assert len(rec) == 1 and rec[0]["change"] == "up to 2 epochs"
    other = [a if a != "0.8" else "0.95" for a in common]
    assert cli.main(other + ["--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other options" in err[0]
    # --distill W; options not given are compress()'s defaults, which --help shows
    from freeml_keras.compression.options import Options
    p = cli.build_parser()
    base = ["compress", "m", "--dataset", "digits", "--flash-kb", "1", "--out", "o"]
    assert p.parse_args(base + ["--distill", "0.25"]).distill == 0.25
    d = p.parse_args(base)
    assert [str(d.distill), str(d.recovery_epochs), str(d.fragile_drop)] == [
        f"{Options.distill:g}", str(Options.recovery_epochs), f"{Options.fragile_drop * 100:g}"]
    with pytest.raises(SystemExit):
        cli.main(["compress", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default {Options.recovery_epochs}; 0: none)" in text and "--no-distill" in text
