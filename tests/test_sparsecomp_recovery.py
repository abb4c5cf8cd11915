"""SparseComp recovers accuracy at the budget: distillation from the pre-trained model, the
paired fragile test, the allocation by measured accuracy per byte, the recovery fine-tune, and
state files of the earlier version refused with the reason."""

import json

import numpy as np
import pytest

from freeml_keras import datasets
from freeml_keras.compression import factorize
from freeml_keras.compression.budget import Budget
from freeml_keras.compression.job import Job, sizes, weighted_rows
from freeml_keras.compression.options import Options
from freeml_keras.compression.sparsecomp import compress
from freeml_keras.compression.sparsify import _Option, _plans, allocate
from freeml_keras.compression.state import STATE_VERSION
from freeml_keras.compression.training import distillation_loss, pack_targets, significant_drop
from freeml_keras.keras import keras, tf


def test_significant_drop_accounts_for_the_number_of_examples():
    # 1.5 points lost on 400 examples (6 of them): within the noise at 90% for a 1-point limit,
    # but not when the same fractions come from 40,000 examples.
    ref = np.ones(400, bool)
    cand = ref.copy()
    cand[:6] = False
    assert not significant_drop(ref, cand, 0.01, 0.9)
    assert significant_drop(ref, cand, 0.01, 0.0)            # the plain comparison
    assert significant_drop(np.tile(ref, 100), np.tile(cand, 100), 0.01, 0.9)
    # Paired: examples won back count against those lost.
    cand2 = cand.copy()
    ref2 = ref.copy()
    ref2[100:106] = False                                     # only the candidate gets these
    assert not significant_drop(ref2, cand2, 0.0, 0.5)        # 6 lost, 6 won: no drop
    assert significant_drop(ref, cand2, 0.0, 0.5)
    # A sure drop far above the limit is fragile whatever the confidence.
    cand3 = ref.copy()
    cand3[:40] = False
    assert significant_drop(ref, cand3, 0.01, 0.99)


def test_distillation_loss_on_flagged_rows_only():
    y = np.array([0, 1])
    teacher = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], np.float32)
    probs = np.array([[0.6, 0.3, 0.1], [0.3, 0.4, 0.3]], np.float32)
    ce = -np.log(probs[[0, 1], y])
    t = 2.0

    def soft(p):
        z = np.log(p) / t
        return np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    kl = (soft(teacher) * (np.log(soft(teacher)) - np.log(soft(probs)))).sum(-1)
    loss = distillation_loss(False, 0.5, t)
    train = loss(tf.constant(pack_targets(y, teacher, 3)), tf.constant(probs)).numpy()
    np.testing.assert_allclose(train, 0.5 * ce + 0.5 * t * t * kl, rtol=1e-4)
    val = loss(tf.constant(pack_targets(y, None, 3)), tf.constant(probs)).numpy()
    np.testing.assert_allclose(val, ce, rtol=1e-5)
    # On logits the same numbers.
    logits = np.log(probs)
    on_logits = distillation_loss(True, 0.5, t)(tf.constant(pack_targets(y, teacher, 3)),
                                                tf.constant(logits)).numpy()
    np.testing.assert_allclose(on_logits, train, rtol=1e-4)


def test_allocate_spends_the_bytes_where_accuracy_per_byte_is_cheapest():
    opts = [_Option("a", "narrow", 8, "", 100, 0.02, 0.1),     # 2e-4 per byte
            _Option("a", "narrow", 4, "", 300, 0.03, 0.2),     # 1e-4 per byte
            _Option("b", "sparsify", 0.5, "", 200, 0.001, 0.0),  # 5e-6 per byte
            _Option("c", "sparsify", 0.5, "", 400, 0.2, 1.0)]  # 5e-4 per byte
    assert [(o.layer, o.value) for o in allocate(opts, 150)] == [("b", 0.5)]
    got = allocate(opts, 250)                # then a at 4: less per byte than a at 8 or c
    assert {(o.layer, o.value) for o in got} == {("b", 0.5), ("a", 8)}  # ... trimmed to a at 8
    # The trim: the fewest bytes over the need (500 -> 300 B), of two ways to 300 B the one
    # lowering the measured drop most (a 4 -> 8: 0.01; leaving b out: 0.001).
    assert sum(o.gain for o in got) == 300
    # An upgrade is priced by what it adds: from a at 8, a at 4 adds 0.046 for 200 B.
    opts[1] = _Option("a", "narrow", 4, "", 300, 0.066, 0.5)   # 2.2e-4 per byte alone
    got = allocate(opts, 250)                # a at 8 (2e-4) first
    assert {(o.layer, o.value) for o in got} == {("b", 0.5), ("a", 8)}
    got = allocate(opts, 450)                # then a 8 -> 4 (2.3e-4 per byte) before c (5e-4)
    assert {(o.layer, o.value) for o in got} == {("b", 0.5), ("a", 4)}
    assert sum(o.gain for o in allocate(opts, 10_000)) == 300 + 200 + 400  # all it can
    assert allocate(opts, 0) == []


@pytest.fixture(scope="module")
def mlp():
    tr, va, te = datasets.load("digits")
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(),
                          keras.layers.Dense(64, activation="relu", name="h1"),
                          keras.layers.Dense(32, activation="relu", name="h2"),
                          keras.layers.Dense(10, activation="softmax", name="out")], name="mlp")
    m.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    m.fit(*tr, epochs=30, batch_size=64, verbose=0)
    return m, tr, va, te


def test_defaults_recover_at_a_tight_budget_and_old_state_is_refused(mlp, tmp_path):
    m, tr, va, te = mlp
    base = float(np.mean(np.argmax(m.predict(te[0], verbose=0), -1) == te[1]))
    # 5,950 B of int8 parameters down to 2,000 B: layers turn fragile, the rest is allocated.
    res = compress(m, 2000, tr, va, out_dir=tmp_path / "run", verbose=False, factorize=False)
    rep = res.report
    assert res.weight_bytes <= 2000 and rep["meets_budget"]
    kinds = [s["kind"] for s in rep["steps"]]
    assert kinds[-2:] == ["recovery_fine_tune", "int8_qat"]
    rec = rep["steps"][-2]
    assert rec["accepted"] and rec["val_accuracy"] >= rec["val_accuracy_before"]
    assert rep["options"]["distill"] == 0.5 and rep["options"]["fragile_confidence"] == 0.9
    test = float(np.mean(np.argmax(res.model.predict(te[0], verbose=0), -1) == te[1]))
    assert test >= base - 0.05, (base, test, rep["steps"])
    # A state file of the earlier version is refused with the reason, not half-continued.
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    state["version"] = 1
    (tmp_path / "run" / "state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match=f"state version 1, this SparseComp writes version "
                                         f"{STATE_VERSION}.*start it again without resume"):
        compress(m, 2000, tr, va, out_dir=tmp_path / "run", resume=True, verbose=False,
                 factorize=False)



def test_a_step_that_would_pass_the_budget_is_made_milder(mlp):
    # The last step leaves as few of the budget's bytes unused as it can: a density step or a
    # narrowing that would save more than the bytes still over the budget is made milder.
    m, tr, va, _ = mlp
    wb = sizes(m)[0]
    row = next(r for r in weighted_rows(m) if r.name == "h1")
    free_sparse, free_narrow = _plans(Job(Budget(None, 10**6), Options(), tr, va), m, row,
                                      True, True, wb)
    # the fixed steps: x0.7 three times (CSR indices make the layer larger until then), 64 -> 44
    assert free_sparse.density == pytest.approx(0.343) and free_narrow.width == 44
    over = 300
    sparse, narrow = _plans(Job(Budget(wb - over), Options(), tr, va), m, row, True, True, wb)
    assert over <= sparse.gain < 0.5 * free_sparse.gain and 0.343 < sparse.density < 1.0
    assert over <= narrow.gain < free_narrow.gain and 44 < narrow.width < 64
    # one channel more would not save the bytes
    assert wb - sizes(factorize.narrow(m, "h1", narrow.width + 1))[0] < over


def test_reconstruction_inputs_by_phase(mlp):
    m, tr, va, _ = mlp
    assert Job(Budget(2000), Options(), tr, va).reconstruction_inputs("ram") is None  # default
    ram = Job(Budget(2000), Options(reconstruct="ram"), tr, va)
    assert len(ram.reconstruction_inputs("ram")) == 1000
    assert ram.reconstruction_inputs("sparsify") is None
    assert ram.reconstruction_inputs("factorize") is None
    every = Job(Budget(2000), Options(reconstruct="all", reconstruct_examples=50), tr, va)
    x = every.reconstruction_inputs("sparsify")
    assert len(x) == 50 and np.array_equal(x, every.reconstruction_inputs("factorize"))
    with pytest.raises(ValueError, match="reconstruct must be"):
        Options.parse({"reconstruct": "some"})


def test_allocate_docstring_examples_run():
    """allocate's trim examples (greedy overshoot cut back; a change made unnecessary left out)."""
    import doctest
    from freeml_keras.compression import sparsify
    res = doctest.testmod(sparsify)
    assert res.attempted >= 4 and res.failed == 0
