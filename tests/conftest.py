"""Shared test set-up: quiet TensorFlow, a private model cache, small shared fixtures."""

from __future__ import annotations

import os
import random
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests never touch the user's model cache.
os.environ.setdefault("FREEML_CACHE_DIR", tempfile.mkdtemp(prefix="freeml-test-cache-"))
# One fresh hypothesis seed per run (the pytest-xdist workers inherit it), printed in the header;
# FREEML_HYPOTHESIS_SEED=N repeats a run.
os.environ.setdefault("FREEML_HYPOTHESIS_SEED", str(random.SystemRandom().randrange(2**32)))
HYPOTHESIS_SEED = int(os.environ["FREEML_HYPOTHESIS_SEED"])


def pytest_report_header(config):
    return f"hypothesis fresh seed: {HYPOTHESIS_SEED} (FREEML_HYPOTHESIS_SEED={HYPOTHESIS_SEED} repeats it)"


def fixed_and_fresh(*strategies, max_examples: int = 8, fresh_examples: int | None = None):
    """A property test run twice (parametrized ``fixed`` / ``fresh``): ``max_examples``
    derandomized examples, the same every run, and ``fresh_examples`` (default the same number)
    drawn from this run's seed (``HYPOTHESIS_SEED``, printed in the header and in a failure)."""
    from hypothesis import HealthCheck, Phase, given, seed, settings

    def deco(f):
        def test(mode):
            s = settings(max_examples=max_examples if mode == "fixed" else (fresh_examples or max_examples),
                         deadline=None, derandomize=mode == "fixed", database=None,
                         phases=[Phase.explicit, Phase.generate],   # no shrinking: conversions are slow
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                HealthCheck.filter_too_much])
            t = s(given(*strategies)(f))
            if mode == "fresh":
                t = seed(HYPOTHESIS_SEED)(t)
            try:
                t()
            except Exception as e:
                if mode == "fresh":
                    e.add_note(f"fresh hypothesis seed {HYPOTHESIS_SEED}: FREEML_HYPOTHESIS_SEED="
                               f"{HYPOTHESIS_SEED} repeats it")
                raise
        test.__name__, test.__doc__ = f.__name__, f.__doc__
        return pytest.mark.parametrize("mode", ["fixed", "fresh"])(test)
    return deco


def prune_kernels(model, zero_fraction: float) -> None:
    """Zero the smallest ``zero_fraction`` of every kernel of ``model`` (in place): a model the
    converter writes with CSR weights (tests that need a really sparse model)."""
    from freeml_keras.compression.pruning import hard_threshold
    for layer in model.layers:
        w = layer.get_weights()
        if w and w[0].ndim >= 2:
            w[0] = hard_threshold(w[0], 1.0 - zero_fraction)
            layer.set_weights(w)


@pytest.fixture(scope="session")
def digit_models():
    """Two small trained int8 models on the digits data: an MLP (FULLY_CONNECTED, SOFTMAX) that
    fits the MSP430's 48 KB with the runtime, and a CNN (CONV_2D, MAX_POOL_2D) for the M4; plus
    real quantized test inputs."""
    from freeml_keras import datasets
    from freeml_keras.conversion import converter
    from freeml_keras.runtime.reference import io_quantization, quantize
    from freeml_keras.keras import keras

    (xtr, ytr), _, (xte, _) = datasets.load("digits")
    keras.utils.set_random_seed(0)
    mlp = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10, activation="softmax")])
    cnn = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                            keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
                            keras.layers.Dense(10, activation="softmax")])
    out = {}
    for name, m in (("mlp", mlp), ("cnn", cnn)):
        m.compile("adam", "sparse_categorical_crossentropy")
        m.fit(xtr[:400], ytr[:400], epochs=2, verbose=0)
        b = converter.convert(m, xtr[:100], sparse=False)
        (scale, zp), = io_quantization(b)[0]
        out[name] = (b, quantize(xte[:2], scale, zp))
    return out
