"""Layer separation (truncated SVD, Tucker-2) and narrowing: new models, same function."""

import numpy as np
import pytest

from freeml_keras import memory
from freeml_keras.compression import factorize
from freeml_keras.keras import keras


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((14, 14, 3), name="input")
    x = keras.layers.Conv2D(12, 3, strides=2, padding="same", activation="relu",
                            name="conv1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(10, 3, padding="valid", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(24, activation="relu", name="fc")(x)
    out = keras.layers.Dense(5, activation="softmax", name="logits")(x)
    m = keras.Model(inp, out, name="small")
    # Non-trivial BN statistics and biases.
    rng = np.random.default_rng(seed)
    m.set_weights([w + 0.1 * rng.normal(size=w.shape).astype("float32") for w in m.get_weights()])
    bn = m.get_layer("bn1")
    g, b, mean, var = bn.get_weights()
    bn.set_weights([g, b, mean, np.abs(var) + 0.5])
    return m


X = np.random.default_rng(7).random((6, 14, 14, 3)).astype("float32")


def _snapshot(m):
    return [w.copy() for w in m.get_weights()]


def test_svd_at_full_rank_reproduces_the_layer():
    m = _model()
    before = _snapshot(m)
    f = factorize.factorize_dense(m, "fc", rank=24)
    assert [l.name for l in f.layers][-4:] == ["flatten", "fc_svd1", "fc_svd2", "logits"]
    np.testing.assert_allclose(f.predict(X, verbose=0), m.predict(X, verbose=0), atol=1e-5)
    # Layer by layer too: the two Dense layers compute the original Dense output.
    sub_m = keras.Model(m.inputs, m.get_layer("fc").output)
    sub_f = keras.Model(f.inputs, f.get_layer("fc_svd2").output)
    np.testing.assert_allclose(sub_f.predict(X, verbose=0), sub_m.predict(X, verbose=0), atol=1e-5)
    assert f.get_layer("fc_svd1").use_bias is False
    assert all(np.array_equal(a, b) for a, b in zip(before, m.get_weights()))


def test_truncated_svd_error_shrinks_with_rank():
    m = _model()
    errs = [np.abs(factorize.factorize_dense(m, "fc", rank=r).predict(X, verbose=0)
                   - m.predict(X, verbose=0)).max() for r in (2, 12, 24)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-5


def test_tucker2_at_full_ranks_reproduces_the_conv_output():
    m = _model()
    before = _snapshot(m)
    for name, ranks in (("conv1", (3, 12)), ("conv2", (12, 10))):
        f = factorize.factorize_conv2d(m, name, ranks=ranks)
        parts = [f.get_layer(f"{name}_tk_{p}") for p in ("in", "core", "out")]
        assert [p.kernel_size for p in parts] == [(1, 1), (3, 3), (1, 1)]
        assert parts[1].strides == m.get_layer(name).strides
        sub_m = keras.Model(m.inputs, m.get_layer(name).output)
        sub_f = keras.Model(f.inputs, parts[2].output)
        np.testing.assert_allclose(sub_f.predict(X, verbose=0), sub_m.predict(X, verbose=0),
                                   atol=1e-5)
        np.testing.assert_allclose(f.predict(X, verbose=0), m.predict(X, verbose=0), atol=1e-5)
    assert all(np.array_equal(a, b) for a, b in zip(before, m.get_weights()))


def test_factorization_with_vbmf_ranks_is_smaller_and_serializable(tmp_path):
    m = _model()
    f = factorize.factorize_conv2d(m, "conv2")
    r1, r2 = (f.get_layer("conv2_tk_in").filters, f.get_layer("conv2_tk_core").filters)
    assert 1 <= r1 <= 12 and 1 <= r2 <= 10
    f.save(tmp_path / "f.keras")
    g = keras.models.load_model(tmp_path / "f.keras")
    np.testing.assert_array_equal(g.predict(X, verbose=0), f.predict(X, verbose=0))
    assert memory.keras_footprint(g).weight_bytes == memory.keras_footprint(f).weight_bytes


def test_factorize_rejects_wrong_layers():
    m = _model()
    with pytest.raises(ValueError, match="'conv1'.*not Dense"):
        factorize.factorize_dense(m, "conv1")
    with pytest.raises(ValueError, match="'fc'.*not an ungrouped Conv2D"):
        factorize.factorize_conv2d(m, "fc")
    with pytest.raises(ValueError, match="rank 99"):
        factorize.factorize_dense(m, "fc", rank=99)


def test_narrow_keeps_highest_l1_channels_and_fixes_the_consumer():
    m = _model()
    assert factorize.narrowable_layers(m) == ["conv1", "conv2", "fc"]
    # Make two filters of conv2 exactly zero (kernel and bias): removing them changes nothing.
    w = m.get_layer("conv2").get_weights()
    w[0][..., [3, 7]] = 0
    w[1][[3, 7]] = 0
    m.get_layer("conv2").set_weights(w)
    before = _snapshot(m)
    n = factorize.narrow(m, "conv2", 8)
    assert n.get_layer("conv2").filters == 8
    assert n.get_layer("fc").get_weights()[0].shape == (2 * 2 * 8, 24)  # 2x2 positions x 8
    np.testing.assert_allclose(n.predict(X, verbose=0), m.predict(X, verbose=0), atol=1e-6)
    # BatchNormalization between conv1 and conv2 loses the same channels.
    n1 = factorize.narrow(m, "conv1", 5)
    assert n1.get_layer("bn1").get_weights()[0].shape == (5,)
    assert n1.get_layer("conv2").get_weights()[0].shape == (3, 3, 5, 10)
    assert all(np.array_equal(a, b) for a, b in zip(before, m.get_weights()))
    with pytest.raises(ValueError, match="'logits'.*cannot be narrowed"):
        factorize.narrow(m, "logits", 3)


@pytest.mark.parametrize("conv", ["Conv2D", "Conv1D"])
def test_narrow_with_data_refits_the_consumer_exactly_when_the_kept_channels_span_the_removed(conv):
    # conv1 is linear and 1x1 from 3 input channels to 8: any 3 of its 8 channels (plus the
    # bias) carry all of them, so a strided 3x3 / 3-tap consumer (no zero padding, which the
    # bias cannot follow) can be refitted exactly; the
    # patches must be in the kernel's order for that.
    keras.utils.set_random_seed(1)
    layer = getattr(keras.layers, conv)
    shape = (9, 9, 3) if conv == "Conv2D" else (15, 3)
    inp = keras.Input(shape)
    x = layer(8, 1, name="conv1")(inp)
    x = layer(6, 3, strides=2, padding="valid", activation="relu", name="conv2")(x)
    x = keras.layers.Flatten()(x)
    m = keras.Model(inp, keras.layers.Dense(4, name="out")(x))
    w = m.get_layer("conv1").get_weights()
    m.get_layer("conv1").set_weights([w[0], np.linspace(-0.5, 0.5, 8).astype("float32")])
    x = np.random.default_rng(2).normal(size=(40,) + shape).astype("float32")
    pre = lambda model: keras.Model(model.inputs, model.get_layer("conv2").output).predict(x, verbose=0)
    dropped = factorize.narrow(m, "conv1", 3)
    refit = factorize.narrow(m, "conv1", 3, data=x)
    assert refit.get_layer("conv2").get_weights()[0].shape[-2] == 3
    err_dropped = np.abs(pre(dropped) - pre(m)).max()
    err_refit = np.abs(pre(refit) - pre(m)).max()
    assert err_dropped > 0.1
    assert err_refit < 1e-3 * err_dropped
    # A nonlinear producer cannot be carried exactly, but the refit is still closer.
    relu = factorize.narrow(_model(), "conv1", 5, data=X)
    plain = factorize.narrow(_model(), "conv1", 5)
    full = _model().predict(X, verbose=0)
    assert np.abs(relu.predict(X, verbose=0) - full).mean() < np.abs(plain.predict(X, verbose=0) - full).mean()


def test_narrow_with_data_keeps_a_pruned_consumer_s_zeros():
    m = _model()
    w = m.get_layer("fc").get_weights()
    mask = np.random.default_rng(3).random(w[0].shape) < 0.3
    m.get_layer("fc").set_weights([w[0] * mask, w[1]])
    x = np.random.default_rng(8).random((200, 14, 14, 3)).astype("float32")
    n = factorize.narrow(m, "conv2", 6, data=x)
    k = n.get_layer("fc").get_weights()[0]
    plain = factorize.narrow(m, "conv2", 6).get_layer("fc").get_weights()[0]
    assert not np.any((k != 0) & (plain == 0))             # no weight where it was pruned
    assert np.count_nonzero(k) > 0                          # (inputs dead on x get 0)
    full = m.predict(x, verbose=0)
    dropped = factorize.narrow(m, "conv2", 6).predict(x, verbose=0)
    assert np.abs(n.predict(x, verbose=0) - full).mean() < np.abs(dropped - full).mean()
