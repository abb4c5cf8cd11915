"""gNet shared exit head and per-exit branches on a small digits backbone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from freeml_keras import datasets, memory, zoo
from freeml_keras.exits import (ExitMask, ExitModel, ExitPointError, ExitScale,
                                attach_exit_branches, attach_global_exit, compare_mechanisms,
                                exit_footprint, incremental_logits, inspect_exit_model,
                                train_exit_branches, train_global_exit)
from freeml_keras.exits import global_exit as ge
from freeml_keras.keras import keras


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


@pytest.fixture(scope="module")
def backbone(digits):
    """cnn_m (width 0.25) on digits: BatchNorm, Dropout and three pooling stages."""
    tr, va, _ = digits
    keras.utils.set_random_seed(0)
    m = zoo.build("cnn_m", (8, 8, 1), 10, width=0.25)
    zoo.train(m, tr, va, zoo.TrainConfig(epochs=12, batch_size=64, learning_rate=3e-3), verbose=0)
    return m


@pytest.fixture(scope="module")
def trained(backbone, digits):
    tr, va, _ = digits
    before = [w.copy() for w in backbone.get_weights()]
    em = attach_global_exit(backbone, "auto", pooled_size=2)
    train_global_exit(em, tr, va, method="stagewise", epochs=25, learning_rate=1e-2, verbose=0)
    return em, before


def test_auto_exit_points_and_pooling(backbone):
    em = attach_global_exit(backbone, "auto", pooled_size=1, max_width=8)
    assert em.exit_points == ["pool1", "pool2", "pool3"]
    # pool1 4x4x8 -> 1x1x8; pool2 2x2x16 -> 1x1x16 -> channel pairs -> 8; pool3 1x1x32 -> 8
    assert [s.feature_shape for s in em.pooling] == [(4, 4, 8), (2, 2, 16), (1, 1, 32)]
    assert [s.channel_group for s in em.pooling] == [1, 2, 4]
    assert em.pooled_dims == [8, 8, 8]
    assert em.head_model().count_params() == (8 + 8 + 8) * 10 + 10
    x = np.random.default_rng(0).uniform(size=(3, 8, 8, 1)).astype(np.float32)
    maps = em.features_model().predict(x, verbose=0)
    pooled = em.pooled_features(x)
    np.testing.assert_array_equal(pooled[0], maps[0].max(axis=(1, 2)))
    np.testing.assert_array_equal(pooled[1], maps[1].max(axis=(1, 2)).reshape(3, 8, 2).max(-1))


def test_deepest_output_is_the_backbone_and_backbone_untouched(trained, backbone, digits):
    em, before = trained
    x = digits[2][0][:64]
    outs = em.keras_model.predict(x, verbose=0)
    assert len(outs) == em.num_exits + 1
    np.testing.assert_array_equal(outs[-1], backbone.predict(x, verbose=0))
    assert em.backbone is backbone
    for a, b in zip(before, backbone.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert all(l.trainable for l in backbone.layers)
    # the exit outputs of keras_model are the head's logits
    np.testing.assert_allclose(np.stack(outs[:-1]), em.predict_exits(x), rtol=1e-4, atol=1e-4)


def test_exit_mask_zeros_later_exits_only_in_training():
    n, dims = 4000, (3, 5, 2)
    xs = [np.random.default_rng(i).uniform(0.5, 2.0, (n, d)).astype(np.float32) for i, d in enumerate(dims)]
    mask = ExitMask(3, seed=1)
    out = [o.numpy() for o in mask(xs, training=True)]
    kept = np.stack([np.all(o == x, axis=1) for o, x in zip(out, xs)], axis=1)
    zeroed = np.stack([np.all(o == 0.0, axis=1) for o in out], axis=1)
    assert np.all(kept ^ zeroed)                       # each exit point all kept or all exactly 0
    exit_of = kept.sum(axis=1) - 1
    assert np.all(kept == (np.arange(3)[None, :] <= exit_of[:, None]))   # a prefix is kept
    counts = np.bincount(exit_of, minlength=3)
    assert np.all(np.abs(counts / n - 1 / 3) < 0.04)   # per example, uniform
    for o, x in zip(mask(xs, training=False), xs):     # identity at inference
        np.testing.assert_array_equal(o.numpy(), x)
    for training in (True, False):                     # a fixed exit index masks in both
        fixed = ExitMask(3, exit_index=1)(xs, training=training)
        np.testing.assert_array_equal(fixed[1].numpy(), xs[1])
        assert np.all(fixed[2].numpy() == 0.0)
    skewed = ExitMask(3, probabilities=[0, 0, 1], seed=2)(xs, training=True)
    np.testing.assert_array_equal(skewed[2].numpy(), xs[2])
    cfg = ExitMask(3, exit_index=2, probabilities=[1, 2, 3]).get_config()
    assert ExitMask.from_config(cfg).get_config() == cfg
    with pytest.raises(ValueError, match="expects 3 inputs"):
        mask(xs[:2], training=True)


def test_exit_scale_folds_into_dense():
    dims = [3, 4]
    scale = ExitScale()
    scale.build([(None, 3), (None, 4)])
    scale.set_weights([np.array([0.5, 2.0, -1.0], np.float32), np.arange(1, 5, dtype=np.float32)])
    dense = keras.layers.Dense(2)
    dense.build((None, 7))
    rng = np.random.default_rng(0)
    dense.set_weights([rng.normal(size=(7, 2)).astype(np.float32), np.array([0.1, -0.2], np.float32)])
    xs = [rng.normal(size=(5, d)).astype(np.float32) for d in dims]
    want = dense(np.concatenate([s.numpy() for s in scale(xs)], axis=1)).numpy()
    kernel, bias = ge._fold(dense, scale, dims)
    np.testing.assert_allclose(np.concatenate(xs, 1) @ kernel + bias, want, rtol=1e-5, atol=1e-6)
    assert ExitScale.from_config(scale.get_config()).per_feature


def test_incremental_logits_equal_the_keras_head_with_masking(trained, digits):
    em, _ = trained
    x = digits[2][0][:50]
    maps = em.features_model().predict(x, verbose=0)
    head = em.head_model()
    assert {type(l).__name__ for l in head.layers} <= {"InputLayer", "MaxPooling2D", "MaxPooling1D",
                                                       "Flatten", "ChannelMaxPooling",
                                                       "Concatenate", "Dense"}
    assert head.layers[-1].get_config()["activation"] == "linear"
    pooled = em.pooled_features(x)
    weights = em.head_weights()
    assert [w.shape for w in weights[0]] == [(d, 10) for d in em.pooled_dims]
    for k in range(em.num_exits):
        masked = [m if i <= k else np.zeros_like(m) for i, m in enumerate(maps)]
        keras_logits = head.predict(masked, verbose=0)
        np.testing.assert_allclose(incremental_logits(weights, pooled, k), keras_logits,
                                   rtol=1e-4, atol=1e-4)
        # only the exit points up to k are read
        np.testing.assert_array_equal(incremental_logits(weights, pooled[:k + 1], k),
                                      incremental_logits(weights, pooled, k))
    np.testing.assert_allclose(em.predict_exits(x)[-1], head.predict(maps, verbose=0), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="outside"):
        incremental_logits(weights, pooled, em.num_exits)


def test_trained_exits_beat_chance_on_digits(trained, digits, backbone):
    em, _ = trained
    res = em.evaluate(digits[2])
    assert all(a > 0.4 for a in res["exit_accuracy"]), res      # chance is 0.1
    assert res["backbone_accuracy"] == pytest.approx(zoo.accuracy(backbone, digits[2]))
    assert em.info["method"] == "stagewise" and len(em.info["val_exit_accuracy"]) == 3


def test_published_random_training_and_branches_beat_chance(backbone, digits):
    tr, va, te = digits
    em = attach_global_exit(backbone, ["pool1", "pool2"], pooled_size=2)
    feats = ge.extract(em, tr[0], va[0], verbose=0)
    rec = train_global_exit(em, tr, va, method="random", epochs=20, learning_rate=1e-2,
                            verbose=0, features=feats)
    assert "val_exit_loss" in rec["history"]
    assert all(a > 0.3 for a in em.evaluate(te)["exit_accuracy"])
    train_global_exit(em, tr, va, method="balanced", distill=0.5, scale=True, epochs=20,
                      learning_rate=1e-2, verbose=0, features=feats)
    assert all(a > 0.3 for a in em.evaluate(te)["exit_accuracy"])
    br = attach_exit_branches(backbone, ["pool1", "pool2"])
    assert br.pooled_dims == [4 * 4 * 8, 2 * 2 * 16]   # 4x4 for 2-D maps (SDN); smaller maps kept
    train_exit_branches(br, tr, va, epochs=20, learning_rate=1e-2, verbose=0)
    acc = br.evaluate(te)["exit_accuracy"]
    assert all(a > 0.3 for a in acc)
    for m, (w, b) in zip(br.branch_models(), br.weights):
        np.testing.assert_allclose(m.predict(np.zeros((1,) + m.input_shape[1:]), verbose=0)[0], b, atol=1e-6)


def test_save_load_round_trip(trained, digits, tmp_path):
    em, _ = trained
    em.save(tmp_path / "em")
    back = ExitModel.load(tmp_path / "em")
    x = digits[2][0][:20]
    assert back.exit_points == em.exit_points and back.pooling == em.pooling
    assert back.num_classes == em.num_classes and back.info == json.loads(json.dumps(em.info))
    np.testing.assert_array_equal(back.predict_exits(x), em.predict_exits(x))
    np.testing.assert_array_equal(back.keras_model.predict(x, verbose=0)[-1],
                                  em.backbone.predict(x, verbose=0))
    d, text = inspect_exit_model(tmp_path / "em")
    assert d["gnet"]["exit_points"] == em.exit_points and "gNet" in text
    with pytest.raises(FileNotFoundError, match="not a saved exit model"):
        ExitModel.load(tmp_path)


def test_footprint_of_the_mechanisms(trained):
    em, _ = trained
    br = attach_exit_branches(em.backbone, em.exit_points)
    cmp = compare_mechanisms(em, br)
    g, b, none = cmp["gnet"], cmp["branches"], cmp["none"]
    assert g["head_bytes"] == memory.keras_footprint(em.head_model()).weight_bytes
    assert b["head_bytes"] == sum(memory.keras_footprint(m).weight_bytes for m in br.branch_models())
    assert g["state_bytes"] == 4 * 10 and none["overhead_bytes"] == 0
    assert g["exit_macs"] == [d * 10 for d in em.pooled_dims]
    assert g["macs_to_exit"] == sorted(g["macs_to_exit"]) and g["macs_to_final"] > g["macs_to_exit"][-1]
    assert cmp["overhead_ratio"] == b["overhead_bytes"] / g["overhead_bytes"] > 1


def test_clear_errors(backbone):
    with pytest.raises(ExitPointError, match="no layer 'conv9'"):
        attach_global_exit(backbone, ["pool1", "conv9"])
    with pytest.raises(ExitPointError, match="out of order.*'pool1'"):
        attach_global_exit(backbone, ["pool2", "pool1"])
    with pytest.raises(ExitPointError, match="'fc1'.*no spatial feature map"):
        attach_global_exit(backbone, ["pool1", "fc1"], pooled_size=1)
    em = attach_global_exit(backbone, ["pool1", "fc1"], pooled_size=[1, None])
    assert em.pooled_dims[-1] == backbone.get_layer("fc1").output.shape[-1]
    # The chosen pooling leaves a flat exit point unpooled (a channel cap at most).
    em = attach_global_exit(backbone, ["pool1", "fc1"])
    assert em.pooling[-1].kind == "flat" and not em.pooling[-1].pool
    with pytest.raises(ExitPointError, match="is the model's output"):
        attach_global_exit(backbone, ["pool1", "logits"])
    inp = keras.Input((6,))
    mlp = keras.Model(inp, keras.layers.Dense(3, name="out")(keras.layers.Dense(4, name="h")(inp)))
    with pytest.raises(ExitPointError, match="no pooling stage"):
        attach_global_exit(mlp, "auto")
    with pytest.raises(ExitPointError, match="'h'.*no spatial feature map"):
        attach_global_exit(mlp, ["h"], pooled_size=2)
    with pytest.raises(ValueError, match="unknown method"):
        train_global_exit(attach_global_exit(backbone), (None, None), (None, None), method="nope")
