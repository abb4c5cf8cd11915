"""Shared test set-up: quiet TensorFlow, a private model cache, small shared fixtures."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests never touch the user's model cache.
os.environ.setdefault("FREEML_CACHE_DIR", tempfile.mkdtemp(prefix="freeml-test-cache-"))


def prune_kernels(model, zero_fraction: float) -> None:
    """Zero the smallest ``zero_fraction`` of every kernel of ``model`` (in place): a model the
    converter writes with CSR weights (tests that need a really sparse model)."""
    from freeml_keras.compression.pruning import hard_threshold
    for layer in model.layers:
        w = layer.get_weights()
        if w and w[0].ndim >= 2:
            w[0] = hard_threshold(w[0], 1.0 - zero_fraction)
            layer.set_weights(w)
