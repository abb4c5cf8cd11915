"""The command line is quiet unless -v: no TensorFlow start-up lines, errors in one line with
no traceback; every subcommand that needs examples lists its data options in --help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from freeml_keras import cli

ROOT = Path(__file__).resolve().parents[1]


def _freeml(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "freeml_keras.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=env)


def test_quiet_by_default_and_everything_with_v(tmp_path):
    from freeml_keras.keras import keras
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    m.save(tmp_path / "m.keras")
    quiet = _freeml("inspect", "m.keras", cwd=tmp_path)
    assert quiet.returncode == 0 and "m.keras" in quiet.stdout
    assert quiet.stderr == "", quiet.stderr                      # no oneDNN / CUDA / absl lines
    loud = _freeml("inspect", "m.keras", "-v", cwd=tmp_path)
    assert loud.returncode == 0 and loud.stdout == quiet.stdout
    assert "tensorflow" in loud.stderr.lower() or "I0000" in loud.stderr or "oneDNN" in loud.stderr

    # a Keras 3 model on the user's data: the converter's C++ lines are gone too
    import keras
    import numpy as np
    rng = np.random.default_rng(0)
    k3 = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    k3.save(tmp_path / "k3.h5")
    x, y = rng.random((40, 4)).astype("float32"), rng.integers(0, 3, 40)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_val=x[:10], y_val=y[:10])
    conv = _freeml("convert", "k3.h5", "--data", "d.npz", "--out", "k3.tflite", "--dense",
                   cwd=tmp_path)
    assert conv.returncode == 0 and "wrote k3.tflite" in conv.stdout, conv.stderr
    assert conv.stderr == "", conv.stderr

    (tmp_path / "bad.keras").write_bytes(b"not a model")
    err = _freeml("inspect", "missing.keras", cwd=tmp_path)     # a CommandError, run as __main__
    assert err.returncode == 2 and "Traceback" not in err.stderr
    assert err.stderr == "freeml inspect: error: missing.keras: no such file or directory\n"
    err_v = _freeml("-v", "inspect", "bad.keras", cwd=tmp_path)
    assert err_v.returncode == 2 and "Traceback" in err_v.stderr


@pytest.mark.parametrize("command", ["compress", "convert", "run", "exits", "demo", "pretrain"])
def test_every_command_that_needs_examples_lists_its_data_options(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ("--dataset NAME" if command != "pretrain" else "[dataset]") in text
    assert "--data FILE.npz" in text and "x_train, y_train" in text
    if command != "run":
        assert "--val-split F" in text
    assert "-v, --verbose" in text


def test_an_unexpected_error_is_one_line_and_names_its_kind(monkeypatch, tmp_path, capsys):
    import freeml_keras.commands.inspect as inspect_cmd

    def boom(_):
        raise RuntimeError("the disk\nis on fire")
    monkeypatch.setattr(inspect_cmd, "footprint_of", boom)
    (tmp_path / "m.keras").write_bytes(b"")
    assert cli.main(["inspect", str(tmp_path / "m.keras")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["freeml inspect: error: RuntimeError: the disk is on fire (-v shows the traceback)"]
    with pytest.raises(RuntimeError):
        cli.main(["inspect", str(tmp_path / "m.keras"), "-v"])


def test_compress_progress_callable_drives_a_keras_progress_bar(capsys):
    from freeml_keras.commands.compress import _StepBar
    from freeml_keras.compression import Budget
    bar = _StepBar(Budget(1000))
    for i, wb in enumerate((3000, 2000, 900)):
        bar({"weight_bytes_now": wb, "peak_ram_bytes_now": 500, "val_accuracy": 0.9 - 0.01 * i})
    assert bar.n == 3 and bar.bar._seen_so_far == 3
    assert bar.bar._values["stored_B"][0] == 900         # shown as is, not averaged
