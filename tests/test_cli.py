import json
import subprocess
import sys

import pytest

from freeml_keras.cli import main
from freeml_keras.conversion.converter import convert
from test_memory import hand_model, sparse_model


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "freeml_keras.cli", "--help"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0
    for cmd in ("inspect", "pretrain", "demo"):
        assert cmd in out.stdout


def test_inspect_keras_model_json(tmp_path, capsys):
    path = tmp_path / "m.keras"
    hand_model().save(path)
    assert main(["inspect", str(path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"flash_bytes", "arena_bytes", "checkpoint_bytes", "macs", "layers"} <= d.keys()
    assert d["flash_bytes"] == 74 + 108 and d["macs"] == 72 + 24
    assert [l["name"] for l in d["layers"]] == ["x", "conv", "flat", "fc"]
    assert d["fits"]["device"] == "msp430fr5994" and d["fits"]["flash_ok"]


def test_inspect_tflite_table(tmp_path, capsys):
    m, x = sparse_model()
    path = tmp_path / "m.tflite"
    path.write_bytes(convert(m, x, sparse=True))
    assert main(["inspect", str(path), "--device", "apollo3"]) == 0
    out = capsys.readouterr().out
    assert "FULLY_CONNECTED" in out and "int8_csr" in out and "apollo3" in out
    assert "DENSIFY" in out  # the note on what stock TFLite expands into RAM


@pytest.mark.parametrize("content,reason", [
    (b"", "too short"),
    (b"\x10\x00\x00\x00NOPE" + b"\x00" * 32, "not the TFLite file identifier"),
    (b"\xff\xff\x00\x00TFL3" + b"\x00" * 32, "past the end"),
])
def test_inspect_bad_tflite_is_a_clear_error(tmp_path, capsys, content, reason):
    path = tmp_path / "bad.tflite"
    path.write_bytes(content)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert reason in err and "Traceback" not in err


def test_inspect_missing_file(capsys):
    assert main(["inspect", "/nonexistent/model.keras"]) == 2
    assert "no such file" in capsys.readouterr().err
