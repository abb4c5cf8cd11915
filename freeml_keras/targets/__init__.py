"""The runtime on the microcontroller targets, under emulators that count what executes:
toolchains and emulators (``toolchain``), per-model C sources (``codegen``) and runs of the
runtime (``runs``: per-operator costs, checkpointed runs, ``measure``)."""

from freeml_keras.targets.codegen import *  # noqa: F401,F403
from freeml_keras.targets.codegen import __all__ as _codegen
from freeml_keras.targets.runs import *  # noqa: F401,F403
from freeml_keras.targets.runs import __all__ as _runs
from freeml_keras.targets.toolchain import *  # noqa: F401,F403
from freeml_keras.targets.toolchain import __all__ as _toolchain

__all__ = _toolchain + _codegen + _runs
