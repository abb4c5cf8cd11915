"""Warm restart on the host harness: a power-on reuses the prepared image sealed in NVM (the
model parsed and prepared once), and an image that does not belong to what runs now is detected
and prepared afresh, never used: another model flashed (same architecture, other weights),
another converter version (same graph, other metadata), a torn seal, an image changed after it
was sealed (with verification), a model without a model id (fingerprint); and a build that
cannot prepare (FM_PREPARE_ON_DEVICE 0) runs from the image a preparing build sealed."""

from __future__ import annotations

import ctypes
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


class _Blocks(ctypes.Structure):
    """fm_blocks (fm_persist.h)."""
    _fields_ = [("model", ctypes.c_void_p), ("model_len", ctypes.c_uint32), ("state", ctypes.c_void_p),
                ("state_len", ctypes.c_uint32), ("arena", ctypes.c_void_p), ("arena_len", ctypes.c_uint32),
                ("head_state", ctypes.c_void_p), ("head_state_len", ctypes.c_uint32),
                ("head_arena", ctypes.c_void_p), ("head_arena_len", ctypes.c_uint32)]


def test_a_build_without_preparation_runs_from_a_sealed_image(models):
    """FM_PREPARE_ON_DEVICE 0 (fm_internal.h: a device build without parsing, preparation and
    step planning, the image provisioned by a build that prepares): without an image it refuses
    to power on and writes nothing; from the image a preparing build sealed in the same blocks it
    warm-starts and answers bit for bit as that build and the runtime's interpreter do."""
    c = ctypes
    from freeml_keras.runtime.build import library_path, make_host
    from freeml_keras.runtime.interpreter import Interpreter
    (b0, _), xs = models
    host = Interpreter(b0)
    ref = host.invoke(xs[0])[0].reshape(-1)
    write_t = c.CFUNCTYPE(None, c.c_void_p, c.c_uint32, c.c_void_p, c.c_uint32)

    class Nvm(c.Structure):
        _fields_ = [("mem", c.c_void_p), ("len", c.c_uint32), ("write", write_t), ("ctx", c.c_void_p),
                    ("in_order", c.c_uint8)]

    size = 1 << 20
    nvm_buf = c.create_string_buffer(size + 16)
    base = (c.addressof(nvm_buf) + 15) & ~15
    writes = []

    @write_t
    def write(_nvm, offset, src, n):
        writes.append(n)
        c.memmove(base + offset, src, n)

    model = c.create_string_buffer(b0, len(b0))
    blocks = _Blocks(c.addressof(model), len(b0), base + (size // 2), (host.state_bytes + 15) & ~15,
                     base + 3 * (size // 4), (host.arena_bytes + 15) & ~15, None, 0, None, 0)
    cfg = (c.c_uint32 * 3)(0xFFFFFFFF, 1024, 50000)            # work mode, as the harness's default
    nvm = Nvm(base, size, write, None, 1)
    image = base + 256                                          # after the checkpoint slots (no exit head)

    def infer(lib):
        """Power on, a new inference, its output (None when the power-on failed: its status)."""
        for name in ("fm_power_on", "fm_prepare_input", "fm_start", "fm_resume"):
            getattr(lib, name).restype = c.c_int
        lib.fm_tensor_data.restype = c.c_void_p
        lib.fm_tensor_data.argtypes = [c.c_void_p, c.c_int16]
        lib.fm_tensor_bytes.restype = c.c_uint32
        lib.fm_tensor_bytes.argtypes = [c.c_void_p, c.c_int16]
        lib.fm_input.restype = lib.fm_output.restype = c.c_int16
        lib.fm_input.argtypes = lib.fm_output.argtypes = [c.c_void_p, c.c_uint8]
        r = c.create_string_buffer(8192)
        warm, done = c.c_uint8(9), c.c_uint8(0)
        s = lib.fm_power_on(c.c_void_p(image), c.byref(nvm), c.byref(blocks), cfg, c.c_uint32(0),
                            c.c_uint8(0), r, c.byref(warm))
        if s:
            return s, None
        it = c.c_void_p.from_buffer(r).value                    # fm_intermittent.it
        assert lib.fm_prepare_input(r) == 0
        x = np.ascontiguousarray(xs[0], np.int8).tobytes()
        t = lib.fm_input(it, 0)
        assert lib.fm_tensor_bytes(it, t) == len(x)
        c.memmove(lib.fm_tensor_data(it, t), x, len(x))
        assert lib.fm_start(r) == 0
        assert lib.fm_resume(r, c.c_uint32(0), c.byref(done)) == 0 and done.value == 1
        t = lib.fm_output(it, 0)
        y = c.string_at(lib.fm_tensor_data(it, t), lib.fm_tensor_bytes(it, t))
        return warm.value, np.frombuffer(y, np.int8).copy()

    noprep = c.CDLL(str(make_host("lib_noprep", "libfreeml_noprep.so")))
    prep = c.CDLL(str(library_path()))
    assert infer(noprep) == (3, None)                           # FM_ERR_UNSUPPORTED
    assert writes == [] and not any(c.string_at(base, size))    # nothing written
    warm, y = infer(prep)
    assert warm == 0 and np.array_equal(y, ref)
    writes.clear()
    warm, y = infer(noprep)
    assert warm == 1 and np.array_equal(y, ref)
    assert writes                                               # its checkpoints
