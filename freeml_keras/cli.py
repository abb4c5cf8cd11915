"""The ``freeml`` command line: one subcommand per module listed in ``COMMAND_MODULES``.

Each listed module defines ``register(subparsers)``, which adds its subcommand and sets
``func`` (a callable taking the parsed arguments and returning an exit code).

Quiet by default: TensorFlow's C++ start-up lines (oneDNN, CPU features, CUDA) and Python
warnings are off, and an error is one line naming the file, layer or array (exit code 2 for a
user error, 1 for anything else). ``-v`` (before or after the subcommand) shows them all, with
the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMAND_MODULES = [
    "freeml_keras.commands.inspect",
    "freeml_keras.commands.pretrain",
    "freeml_keras.commands.convert",
    "freeml_keras.commands.demo",
    "freeml_keras.commands.compress",
    "freeml_keras.commands.run",
    "freeml_keras.commands.exits",
]


class CommandError(Exception):
    """A user error: printed as one line and exit code 2, never a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="freeml", description="Compress, convert and run pre-trained Keras models on "
                                   "batteryless microcontrollers.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show TensorFlow's log lines, warnings and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for p in sub.choices.values():
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="show TensorFlow's log lines, warnings and tracebacks")
    return parser


def quiet_tensorflow(verbose: bool) -> None:
    """Sets TensorFlow's logging before it is imported: off (errors only, and the lines its C++
    libraries print while loading go nowhere) unless ``verbose``. Then imports it."""
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        from freeml_keras.keras import tf  # noqa: F401
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import logging
    import warnings
    for module in ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization", "absl",
                   "h5py", "google"):
        warnings.filterwarnings("ignore", module=module)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if "tensorflow" not in sys.modules:
        # Lines written before absl's logging is initialized ignore TF_CPP_MIN_LOG_LEVEL:
        # send the process's stderr to /dev/null while the libraries load.
        sys.stderr.flush()
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
            from freeml_keras.keras import tf  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(null)
    from freeml_keras.keras import tf
    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def silence_native_stderr():
    """Points file descriptor 2 at /dev/null, where TensorFlow's C++ code (the converter's
    "fully_quantize: ..." lines, late absl messages) writes, and Python's ``sys.stderr`` at the
    real stderr, where the command's messages go. Returns the function that undoes it. Does
    nothing when ``sys.stderr`` is not the process's stderr (tests capturing it)."""
    try:
        if sys.stderr is not sys.__stderr__ or sys.stderr.fileno() != 2:
            return lambda: None
    except (AttributeError, ValueError, OSError):
        return lambda: None
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    python_stderr = os.fdopen(os.dup(saved), "w", buffering=1, errors="backslashreplace")
    sys.stderr = python_stderr

    def restore() -> None:
        python_stderr.flush()
        sys.stderr = sys.__stderr__
        os.dup2(saved, 2)
        os.close(saved)
        python_stderr.close()
    return restore


USER_ERRORS = (CommandError, FileNotFoundError, ValueError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    restore = (lambda: None) if verbose else silence_native_stderr()
    try:
        return _run(args, verbose)
    finally:
        restore()


def _run(args: argparse.Namespace, verbose: bool) -> int:
    try:
        quiet_tensorflow(verbose)
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        if verbose:
            import traceback
            traceback.print_exc()
        print(f"freeml {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"freeml {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - anything else: one line, the traceback with -v
        if verbose:
            raise
        print(f"freeml {args.command}: error: {type(e).__name__}: {_one_line(e)} "
              "(-v shows the traceback)", file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) if str(e) else type(e).__name__
    if isinstance(e, KeyError):
        text = f"missing {text}"
    return text if len(text) <= 400 else text[:397] + "..."


if __name__ == "__main__":
    # ``python -m freeml_keras.cli``: run the imported module's main, whose CommandError is the
    # class the commands raise (this file runs as __main__, a second copy of the module).
    from freeml_keras.cli import main as _main
    sys.exit(_main())
