"""Keras 3 in, Keras 3 out: the bridge rebuilds Keras 3 models in tf_keras with the same
outputs, refuses what it cannot bridge by name, and every entry point takes Keras 3 models."""

from __future__ import annotations

import json

import numpy as np
import pytest

import keras  # Keras 3: the package selects tf_keras only for tf.keras
from freeml_keras import bridge, memory
from freeml_keras.keras import keras as tfk

RNG = np.random.default_rng(0)


def _perturb(model):
    """Non-trivial weights (BatchNormalization statistics included), except Normalization's,
    whose statistics come from adapt()."""
    for layer in model.layers:
        if type(layer).__name__ == "Normalization":
            continue
        layer.set_weights([w + 0.1 * RNG.normal(size=w.shape).astype(w.dtype) if w.ndim else w
                           for w in layer.get_weights()])
    return model


def functional_k3():
    i = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0, offset=-0.5, name="scale")(i)
    y = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv")(x)
    x = keras.layers.Add(name="residual")([x, y])
    norm = keras.layers.Normalization(axis=-1, name="norm")
    norm.adapt(RNG.random((16, 8, 8, 3)).astype("float32"))
    x = norm(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.SeparableConv2D(4, 3, activation="relu", name="sep")(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = keras.layers.LeakyReLU(0.2, name="leaky")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dropout(0.3, name="drop")(x)
    return _perturb(keras.Model(i, keras.layers.Dense(5, activation="softmax", name="fc")(x)))


def sequential_k3():
    return _perturb(keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Normalization(mean=0.5, variance=0.08, name="norm"),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.DepthwiseConv2D(3, padding="same", name="dw"),
        keras.layers.ReLU(name="relu"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(10, activation="softmax", name="fc")], name="seq"))


@pytest.mark.parametrize("make", [functional_k3, sequential_k3])
def test_bridged_model_computes_what_the_keras3_model_computes(make):
    k3 = make()
    x = (RNG.random((6,) + tuple(k3.inputs[0].shape[1:])) * (255 if make is functional_k3 else 1)).astype("float32")
    want = k3.predict(x, verbose=0)
    tf_model = bridge.to_tf_keras(k3)
    assert isinstance(tf_model, tfk.Model) and not bridge.is_keras3(tf_model)
    assert type(tf_model).__name__ == type(k3).__name__
    assert [l.name for l in tf_model.layers if type(l).__name__ != "InputLayer"] == \
        [l.name for l in k3.layers if type(l).__name__ != "InputLayer"]
    np.testing.assert_allclose(tf_model.predict(x, verbose=0), want, rtol=1e-5, atol=1e-6)
    back = bridge.to_keras3(tf_model)
    assert bridge.is_keras3(back)
    np.testing.assert_allclose(back.predict(x, verbose=0), want, rtol=1e-5, atol=1e-6)
    # the rebuilt model is a real, trainable model of its Keras
    tf_model.compile("adam", "sparse_categorical_crossentropy")
    tf_model.fit(x, np.zeros(len(x), "int64"), epochs=1, verbose=0)


def test_keras3_files_load_as_tf_keras(tmp_path):
    k3 = functional_k3()
    x = RNG.random((3, 8, 8, 3)).astype("float32") * 255
    for name in ("m.keras", "m.h5"):
        k3.save(tmp_path / name)
        assert bridge.file_keras_version(tmp_path / name).startswith("3.")
        model, was_k3 = bridge.load_model(tmp_path / name)
        assert was_k3 and isinstance(model, tfk.Model)
        np.testing.assert_allclose(model.predict(x, verbose=0), k3.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    tfk.Sequential([tfk.Input((3,)), tfk.layers.Dense(2)]).save(tmp_path / "t.keras")
    model, was_k3 = bridge.load_model(tmp_path / "t.keras")
    assert not was_k3 and isinstance(model, tfk.Model)


@pytest.mark.parametrize("layer,cls", [
    (lambda: keras.layers.LSTM(3, name="rnn"), "LSTM"),
    (lambda: keras.layers.Lambda(lambda t: t * 2, name="double"), "Lambda"),
    (lambda: keras.layers.Dense(3, lora_rank=2, name="lora"), None),
])
def test_a_layer_that_is_not_bridged_is_refused_by_name_and_class(layer, cls):
    shape = (4, 3) if cls == "LSTM" else (3,)
    m = keras.Sequential([keras.Input(shape), layer()])
    with pytest.raises(bridge.BridgeError) as e:
        bridge.to_tf_keras(m)
    name = m.layers[0].name
    assert f"layer {name!r}" in str(e.value)
    assert f"({cls or 'Dense'})" in str(e.value)
    if cls is None:
        assert "lora_rank=2" in str(e.value)


def test_a_nested_model_is_refused_by_name():
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)], name="backbone")
    outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(2)])
    with pytest.raises(bridge.BridgeError, match=r"layer 'backbone' \(Sequential\) is not bridged"):
        bridge.to_tf_keras(outer)


def test_footprint_of_a_keras3_model_is_that_of_its_tf_keras_copy():
    k3 = sequential_k3()
    assert memory.keras_footprint(k3).to_dict() == memory.keras_footprint(bridge.to_tf_keras(k3)).to_dict()


def test_compressed_shapes_go_back_to_keras3_unchanged():
    """What SparseComp makes of a model (Tucker-2 and SVD chains, narrowed layers, zeros)
    comes back to Keras 3 computing the same outputs."""
    from freeml_keras.compression import factorize
    from test_keras3_cli import _tiny_tf_cnn
    m = _tiny_tf_cnn()
    m = factorize.factorize_conv2d(m, "conv2")
    m = factorize.factorize_dense(m, "fc1", rank=4)
    m = factorize.narrow(m, "conv1", 3)
    k3 = bridge.to_keras3(m)
    x = RNG.random((4, 12, 12, 1)).astype("float32")
    np.testing.assert_allclose(k3.predict(x, verbose=0), m.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    def names(model):
        return [l.name for l in model.layers if type(l).__name__ != "InputLayer"]
    assert names(k3) == names(m) and "conv2" not in names(m)      # the chain replaced conv2


def test_a_model_without_an_input_shape_is_refused_by_name():
    with pytest.raises(bridge.BridgeError, match=r"model 'unbuilt' \(Sequential\) has no input shape"):
        bridge.to_tf_keras(keras.Sequential([keras.layers.Dense(2)], name="unbuilt"))
