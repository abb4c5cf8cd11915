"""Standard tinyML architectures, built the way the tests build models (tf_keras, random weights
from a seed) and converted to full int8 with a representative set of random inputs: the zoo
that ``bench/coverage.py`` runs, and the streaming model with resource variables that
``tests/test_variables.py`` runs under power failures. Not part of the package (the reference
architectures are public: MLPerf Tiny's FC autoencoder, DS-CNN keyword spotter, ResNet-8 and
MobileNetV1 0.25)."""

from __future__ import annotations

import numpy as np

from freeml_keras.keras import keras, tf

L = keras.layers


def fc_autoencoder(inputs: int = 640, hidden: int = 128, code: int = 8) -> "keras.Model":
    """640 -> 128 x 4 -> 8 -> 128 x 4 -> 640, ReLU (MLPerf Tiny anomaly detection)."""
    x = inp = keras.Input((inputs,))
    for units in [hidden] * 4 + [code] + [hidden] * 4:
        x = L.ReLU()(L.BatchNormalization()(L.Dense(units)(x)))
    return keras.Model(inp, L.Dense(inputs)(x), name="fc_autoencoder")


def ds_cnn(input_shape=(49, 10, 1), classes: int = 12, filters: int = 64) -> "keras.Model":
    """Conv 10x4 stride 2, four depthwise-separable blocks, average pool, FC (keyword spotting)."""
    x = inp = keras.Input(input_shape)
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(filters, (10, 4), strides=2, padding="same")(x)))
    for _ in range(4):
        x = L.ReLU()(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same")(x)))
        x = L.ReLU()(L.BatchNormalization()(L.Conv2D(filters, 1)(x)))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Softmax()(L.Dense(classes)(x)), name="ds_cnn")


def resnet8(input_shape=(32, 32, 3), classes: int = 10) -> "keras.Model":
    """ResNet-8: 16 / 32 / 64 channels, three residual stacks with ADD (image classification)."""
    x = inp = keras.Input(input_shape)
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(x)))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        y = L.ReLU()(L.BatchNormalization()(L.Conv2D(filters, 3, strides=stride, padding="same")(x)))
        y = L.BatchNormalization()(L.Conv2D(filters, 3, padding="same")(y))
        if stride != 1:
            x = L.Conv2D(filters, 1, strides=stride)(x)
        x = L.ReLU()(L.Add()([x, y]))
    x = L.AveragePooling2D(pool_size=x.shape[1:3])(x)
    return keras.Model(inp, L.Softmax()(L.Dense(classes)(L.Flatten()(x))), name="resnet8")


def mobilenet_v1(input_shape=(96, 96, 3), classes: int = 2, alpha: float = 0.25) -> "keras.Model":
    """MobileNetV1 with width multiplier ``alpha`` (visual wake words: 96x96x3, 0.25)."""
    def ch(n):
        return max(8, int(n * alpha))
    x = inp = keras.Input(input_shape)
    x = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(ch(32), 3, strides=2, padding="same")(x)))
    for filters, stride in ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
                            (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)):
        x = L.ReLU(6.0)(L.BatchNormalization()(L.DepthwiseConv2D(3, strides=stride, padding="same")(x)))
        x = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(ch(filters), 1)(x)))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Softmax()(L.Dense(classes)(x)), name="mobilenet_v1_025")


def lstm_model(steps: int = 8, features: int = 6, units: int = 8, classes: int = 4) -> "keras.Model":
    """One LSTM layer over a short sequence, then a classifier (converts to
    UNIDIRECTIONAL_SEQUENCE_LSTM)."""
    inp = keras.Input((steps, features), batch_size=1)
    x = L.LSTM(units)(inp)
    return keras.Model(inp, L.Dense(classes)(x), name="lstm")


def gru_model(steps: int = 8, features: int = 6, units: int = 8, classes: int = 4) -> "keras.Model":
    """One GRU layer, unrolled (the only form the TFLite converter takes to int8: the WHILE loop
    of a GRU that is not unrolled crashes it), then a classifier."""
    inp = keras.Input((steps, features), batch_size=1)
    x = L.GRU(units, unroll=True)(inp)
    return keras.Model(inp, L.Dense(classes)(x), name="gru")


def randomize(model: "keras.Model", seed: int = 0) -> "keras.Model":
    """Random weights (normal, 0.3) and BatchNormalization statistics from ``seed``: the
    architecture's arithmetic without training."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        if isinstance(layer, L.BatchNormalization):
            g, b, m, v = ws
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, b.shape),
                               rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 1.5, v.shape)])
        else:
            layer.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in ws])
    return model


def _int8(converter, samples) -> bytes:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def convert_int8(model: "keras.Model", seed: int = 0, samples: int = 16) -> bytes:
    """The model as a full-int8 flatbuffer (stock TFLite converter, random calibration inputs)."""
    rng = np.random.default_rng(seed)
    calib = [rng.normal(0, 1, (1,) + tuple(model.input_shape[1:])).astype(np.float32) for _ in range(samples)]
    return _int8(tf.lite.TFLiteConverter.from_keras_model(model), calib)


def streaming_conv(frame: int = 6, window: int = 4, filters: int = 8, classes: int = 4, seed: int = 0,
                   samples: int = 24) -> bytes:
    """A streaming 1-D convolution (keyword-spotting style): each invocation takes one frame of
    ``frame`` features; a ``tf.Variable`` keeps the last ``window - 1`` frames (a ring buffer
    shifted by one frame per call); a ``window``-tall convolution with ReLU over the buffer and
    the new frame, then a classifier. Converted to int8 with its variable quantized
    (VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE and a CALL_ONCE init subgraph)."""
    rng = np.random.default_rng(seed)

    class Stream(tf.Module):
        def __init__(self):
            super().__init__()
            self.state = tf.Variable(tf.zeros([1, window - 1, frame]), trainable=False)
            self.kernel = tf.constant(rng.normal(0, 0.4, (window, 1, frame, filters)).astype(np.float32))
            self.bias = tf.constant(rng.normal(0, 0.2, (filters,)).astype(np.float32))
            self.dense = tf.constant(rng.normal(0, 0.4, (filters, classes)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([1, 1, frame], tf.float32)])
        def __call__(self, x):
            full = tf.concat([self.state, x], axis=1)
            self.state.assign(full[:, 1:, :])
            h = tf.nn.conv2d(tf.reshape(full, [1, window, 1, frame]), self.kernel, 1, "VALID")
            h = tf.nn.relu(h + self.bias)
            return tf.matmul(tf.reshape(h, [1, filters]), self.dense)

    m = Stream()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([m.__call__.get_concrete_function()], m)
    conv._experimental_variable_quantization = True
    calib = [rng.normal(0, 1, (1, 1, frame)).astype(np.float32) for _ in range(samples)]
    return _int8(conv, calib)
