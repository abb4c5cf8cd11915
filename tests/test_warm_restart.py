"""Warm restart on the host harness: a power-on reuses the prepared image sealed in NVM (the
model parsed and prepared once), and an image that does not belong to what runs now is detected
and prepared afresh, never used: another model flashed (same architecture, other weights),
another converter version (same graph, other metadata), a torn seal, an image changed after it
was sealed (with verification), a model without a model id (fingerprint)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from freeml_keras import datasets, zoo
from freeml_keras.conversion import convert
from freeml_keras.format import tflite as ts
from freeml_keras.format.prepared import read_prepared
from freeml_keras.keras import keras
from freeml_keras.runtime.intermittent import harness_path, run_uninterrupted
from freeml_keras.runtime.reference import io_quantization, quantize

_LINE = re.compile(r"warm=(\d)")


def _models():
    tr, _, te = datasets.load("digits")
    out = []
    for seed in (0, 1):                      # same architecture, other weights
        keras.utils.set_random_seed(seed)
        m = zoo.build("cnn_s", tr[0].shape[1:], 10, width=0.25)
        out.append(convert(m, tr[0][:32], sparse=False))
    (iq,), _ = io_quantization(out[0])
    return out, quantize(te[0][:2], *iq)


@pytest.fixture(scope="module")
def models():
    return _models()


def _power_on(d: Path, model: bytes, x: np.ndarray | None, *opts: str) -> tuple[int, int, np.ndarray | None]:
    """One harness run over the NVM file in d: a new inference (x given) or a resume. Returns
    (exit code, warm, output)."""
    (d / "m.tflite").write_bytes(model)
    cmd = [str(harness_path()), str(d / "m.tflite"), str(d / "nvm")]
    if x is not None:
        (d / "x.bin").write_bytes(np.ascontiguousarray(x, np.int8).tobytes())
        cmd += ["new", str(d / "x.bin")]
    else:
        cmd += ["resume"]
    (d / "y.bin").unlink(missing_ok=True)
    r = subprocess.run(cmd + ["-o", str(d / "y.bin"), *opts], capture_output=True, text=True)
    m = _LINE.search(r.stdout)
    y = np.frombuffer((d / "y.bin").read_bytes(), np.int8).copy() if (d / "y.bin").exists() else None
    return r.returncode, int(m.group(1)) if m else -1, y


def test_the_model_carries_an_id(models):
    (b0, b1), _ = models
    p0, p1 = read_prepared(b0), read_prepared(b1)
    assert p0 is not None and p1 is not None and p0.model_id != p1.model_id


def test_a_power_on_reuses_the_sealed_image(models, tmp_path):
    (b0, _), xs = models
    ref, _ = run_uninterrupted(b0, xs[0])
    assert _power_on(tmp_path, b0, xs[0])[:2] == (0, 0)          # first power-on prepares
    rc, warm, y = _power_on(tmp_path, b0, xs[1])
    assert (rc, warm) == (0, 1)
    rc, warm, y = _power_on(tmp_path, b0, xs[0])
    assert (rc, warm) == (0, 1) and np.array_equal(y, ref)


def test_another_model_flashed_is_prepared_afresh(models, tmp_path):
    (b0, b1), xs = models
    assert len(b0) == len(b1)              # same layout in NVM: only the model id tells them apart
    ref1, _ = run_uninterrupted(b1, xs[0])
    assert _power_on(tmp_path, b0, xs[0])[0] == 0
    rc, warm, y = _power_on(tmp_path, b1, xs[0])
    assert (rc, warm) == (0, 0) and np.array_equal(y, ref1)
    assert _power_on(tmp_path, b1, xs[0])[:2] == (0, 1)


def test_another_converter_version_is_prepared_afresh(models, tmp_path):
    (b0, _), xs = models
    m = ts.read_model(b0)                  # the same graph written by another converter version
    m.description = b"MLIR Converted. (another version)"
    other = ts.write_model(m)
    assert read_prepared(other).model_id != read_prepared(b0).model_id
    assert _power_on(tmp_path, b0, xs[0])[0] == 0
    rc, warm, y = _power_on(tmp_path, other, xs[0])
    assert (rc, warm) == (0, 0) and np.array_equal(y, run_uninterrupted(other, xs[0])[0])


SEAL_BYTES = 100     # sizeof(fm_seal) up to its tag, and the tag, on x86-64 (fm_persist.h)


@pytest.mark.parametrize("byte", [1, 4, 5, 40, 96, 97, 98, 99, 100])
def test_a_torn_seal_is_never_used(models, tmp_path, byte):
    """The power fails at a byte of the seal (written field by field, then its tag: 100 bytes
    on x86-64): the next power-on prepares again and finishes bit-exact."""
    (b0, _), xs = models
    ref, _ = run_uninterrupted(b0, xs[0])
    rc, _, _ = _power_on(tmp_path, b0, xs[0], "-j", str(byte))
    assert rc == -9
    rc, warm, y = _power_on(tmp_path, b0, xs[0])
    assert (rc, warm) == (0, 0) and np.array_equal(y, ref)
    assert _power_on(tmp_path, b0, None)[:2] == (0, 1)


def test_a_changed_image_is_detected_with_verification(models, tmp_path):
    """Bytes of a sealed image changed afterwards: found by the sum (-V) and prepared afresh.
    Without verification the runtime does not look (fm_persist.h: the sum costs about 5
    instructions per 16-bit word at every power-on)."""
    (b0, _), xs = models
    ref, _ = run_uninterrupted(b0, xs[0])
    assert _power_on(tmp_path, b0, xs[0], "-V")[:2] == (0, 0)
    assert _power_on(tmp_path, b0, xs[0], "-V")[:2] == (0, 1)
    nvm = bytearray((tmp_path / "nvm").read_bytes())
    # the prepared image follows the checkpoint slots and the arena; flip a byte of its state
    # block (the last quarter of the file holds state blocks)
    at = len(nvm) - len(nvm) // 5
    nvm[at] ^= 0x40
    (tmp_path / "nvm").write_bytes(bytes(nvm))
    rc, warm, y = _power_on(tmp_path, b0, xs[0], "-V")
    assert (rc, warm) == (0, 0) and np.array_equal(y, ref)


def test_a_model_without_an_id_uses_a_fingerprint(models, tmp_path):
    (b0, b1), xs = models
    m0, m1 = ts.read_model(b0), ts.read_model(b1)
    for m in (m0, m1):
        m.metadata = [e for e in m.metadata or [] if (e.name.decode() if isinstance(e.name, bytes) else e.name)
                      != "freeml_prepare"]
    n0, n1 = ts.write_model(m0), ts.write_model(m1)
    assert read_prepared(n0) is None
    assert _power_on(tmp_path, n0, xs[0])[:2] == (0, 0)
    assert _power_on(tmp_path, n0, xs[0])[:2] == (0, 1)
    rc, warm, y = _power_on(tmp_path, n1, xs[0])
    assert (rc, warm) == (0, 0) and np.array_equal(y, run_uninterrupted(n1, xs[0])[0])


def test_the_seal_is_written_last_and_once(models, tmp_path):
    """A failure one byte after the seal does not hit it: the preparation wrote SEAL_BYTES."""
    (b0, _), xs = models
    rc, _, _ = _power_on(tmp_path, b0, xs[0], "-j", str(SEAL_BYTES + 1))
    assert rc == 0
    assert _power_on(tmp_path, b0, xs[0])[:2] == (0, 1)
