"""Running converted models on the host: our C runtime through ctypes (``interpreter``), the
reference interpreters tf.lite and TFLite Micro (``reference``), intermittent execution with
injected power failures (``intermittent``), and the runtime's exit decision predicted in Python
(``exit_decision``). The C sources ship inside the package and are built on first use into the
per-user cache (``build``)."""

from freeml_keras.runtime.interpreter import (Interpreter, RuntimeModelError, operator_support,
                                              supported_operators)

__all__ = ["Interpreter", "RuntimeModelError", "operator_support", "supported_operators"]
