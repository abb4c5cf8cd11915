"""The C runtime under AddressSanitizer + UBSan (a C test driver, not the ctypes library):
converted models give the same bytes as the Python binding, and thousands of seeded truncated,
bit-flipped and overwritten flatbuffers are refused with an error or run, never crash. Warnings
are errors with gcc and clang."""

import shutil
import subprocess

import numpy as np
import pytest

from freeml_keras import zoo
from freeml_keras.conversion.converter import convert
from freeml_keras.keras import keras
from freeml_keras.runtime import Interpreter, RuntimeModelError
from freeml_keras.runtime.build import SOURCE_DIR, make_host

MUTATIONS = 2500


def make(target: str) -> None:
    r = subprocess.run(["make", "-s", "-C", str(SOURCE_DIR), target], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def driver():
    return make_host("asan", "fm_driver_asan")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(5)
    out = {}
    rng = np.random.default_rng(0)
    for name, shape, classes in [("cnn_s", (12, 12, 1), 10), ("imu_cnn", (40, 6), 7)]:
        m = zoo.build(name, shape, classes, width=0.25)
        for layer in m.layers:
            ws = layer.get_weights()
            if ws and ws[0].ndim > 1:
                ws[0][np.abs(ws[0]) < np.quantile(np.abs(ws[0]), 0.6)] = 0.0
                layer.set_weights(ws)
        calib = rng.normal(0.5, 0.3, (32,) + shape).astype(np.float32)
        for sparse in (False, True):
            path = d / f"{name}_{'sparse' if sparse else 'dense'}.tflite"
            path.write_bytes(convert(m, calib, sparse=sparse))
            out[path.stem] = path
    return out


def test_sanitized_driver_matches_the_binding(driver, models, tmp_path):
    for stem, path in models.items():
        it = Interpreter(path.read_bytes())
        shape = it.inputs[0]["shape"]
        x = np.random.default_rng(1).integers(-128, 128, (5,) + shape, dtype=np.int8)
        (tmp_path / "in.bin").write_bytes(x.tobytes())
        expected = b"".join(it.invoke(xi)[0].tobytes() for xi in x)
        for max_units in ("0", "3"):   # one invoke, and resumable steps of 3 units
            r = subprocess.run([str(driver), "run", str(path), str(tmp_path / "in.bin"),
                                str(tmp_path / "out.bin"), max_units], capture_output=True, text=True)
            assert r.returncode == 0, (stem, r.stderr)
            assert (tmp_path / "out.bin").read_bytes() == expected, stem


def test_mutated_flatbuffers_never_crash(driver, models):
    total_ran = total_refused = 0
    for seed, (stem, path) in enumerate(sorted(models.items())):
        r = subprocess.run([str(driver), "mutate", str(path), str(seed + 1), str(MUTATIONS)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, (stem, r.stdout, r.stderr[-3000:])
        fields = r.stdout.split()
        ran, refused = int(fields[3]), int(fields[5])
        assert ran + refused == MUTATIONS
        total_ran += ran
        total_refused += refused
    print(f"{len(models) * MUTATIONS} mutated models: {total_ran} ran, {total_refused} refused")
    assert total_refused > len(models) * MUTATIONS // 4   # most corruptions are detected
    assert total_ran > 0                                  # and harmless ones still run


def test_binding_raises_on_every_truncation(models):
    b = models["cnn_s_sparse"].read_bytes()
    for cut in np.random.default_rng(0).integers(0, len(b), 200):
        with pytest.raises(RuntimeModelError):
            Interpreter(b[:int(cut)])


def test_warning_free_with_gcc_and_clang():
    """-std=c99 -Wall -Wextra -Werror (and more) with both compilers, over the library sources."""
    assert shutil.which("gcc") and shutil.which("clang"), "gcc and clang are needed for tflm_port"
    make("check-compilers")


def test_operator_records_hold_the_parameters_their_kernels_use():
    """An operator's record holds only the parameter member FM_OP_PARAMS maps its code to
    (fm_internal.h) and its kernel's descriptor sizes (fm_kernel.record): a kernel that reads or
    writes another member would reach into the next record. Every kernel file's direct uses of op->p.<member> must be among the members of the
    codes it registers (a file may read another of its codes' records: VAR_HANDLE reads its
    CALL_ONCE's)."""
    import re

    src = SOURCE_DIR / "src"
    header = (SOURCE_DIR / "include" / "freeml" / "fm_internal.h").read_text()
    table = header[header.index("#define FM_OP_PARAMS(X)"):]
    table = table[:table.index("\n\n")]
    mapped = dict(re.findall(r"X\((FM_OP_\w+), (\w+)\)", table))
    assert len(mapped) >= 30 and mapped["FM_OP_CONV_2D"] == "conv"
    checked = records = 0
    for path in sorted((src / "kernels").glob("*.c")):
        text = path.read_text()
        codes = re.findall(r"const fm_kernel fm_kernel_\w+ = \{(FM_OP_\w+),", text)
        used = set(re.findall(r"(?:->|\.)p\.(\w+)", text))
        if not codes:
            continue
        allowed = {mapped[c] for c in codes if c in mapped}
        assert used <= allowed, f"{path.name}: kernels of {codes} use {sorted(used - allowed)}"
        # each kernel's record size (fm_kernel.record) is its code's member of FM_OP_PARAMS
        for code, record in re.findall(r"const fm_kernel fm_kernel_\w+ = \{(FM_OP_\w+),.*?(FM_OP_RECORD\(\w+\)|FM_OP_HEADER_BYTES)\};",
                                       text, flags=re.S):
            want = f"FM_OP_RECORD({mapped[code]})" if code in mapped else "FM_OP_HEADER_BYTES"
            assert record == want, f"{path.name}: {code}'s record is {record}, FM_OP_PARAMS gives {want}"
            records += 1
        checked += bool(used)
    assert checked >= 25 and records == 38
