"""FreeML-Keras: run pre-trained Keras models on batteryless, energy-harvesting microcontrollers.

``freeml_keras.compress`` (SparseComp), ``freeml_keras.convert`` / ``freeml_keras.export_c``
(int8 TFLite with the exit head, C source) and the subpackages are imported on first use, so
``import freeml_keras`` is fast and does not load TensorFlow until a part that needs it is used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Stages, in the order data flows through them (each imports only what stands before it):
# the base modules and ``format``, then compression -> exits -> conversion -> runtime ->
# targets -> energy -> demo -> cli.
_SUBMODULES = ("datasets", "devices", "memory", "zoo", "keras", "costs", "cache", "format",
               "compression", "exits", "conversion", "runtime", "targets", "energy", "demo")
_FUNCTIONS = {"compress": "compression", "CompressionResult": "compression", "Budget": "compression",
              "BudgetUnreachable": "compression",
              "convert": "conversion", "export_c": "conversion", "TFLiteModel": "format"}


def __getattr__(name: str):
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(f"freeml_keras.{_FUNCTIONS[name]}"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"freeml_keras.{name}")
    raise AttributeError(f"module 'freeml_keras' has no attribute {name!r}")
