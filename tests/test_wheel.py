"""The package works when installed from a wheel, away from the checkout (issue 12, item 5).

Builds a wheel of the checkout (no network, no build isolation), installs it into a fresh
virtualenv that reuses the pinned dependencies of the venv running the tests (a ``.pth`` line
adding its site-packages, so nothing is downloaded) and, from a directory outside the
checkout with an empty ``FREEML_CACHE_DIR``, runs the installed ``freeml`` console script:
``convert`` (plain and cost-aware with the shipped cost tables), ``run`` (the C runtime built
from the wheel's own sources into that cache) and ``inspect``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from freeml_keras.runtime import build

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["freeml_keras/tflm_port/src/interpreter.c", "freeml_keras/tflm_port/targets/msp430/Makefile",
           "freeml_keras/data/cost_tables.json", "freeml_keras/energy/traces/rf_static.csv"]


def _clean_env(cache: Path) -> dict:
    """The environment of the installed program: no path into the checkout, a fresh cache."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "FREEML_CACHE_DIR")}
    env.update(FREEML_CACHE_DIR=str(cache), TF_CPP_MIN_LOG_LEVEL="2", PYTHONNOUSERSITE="1")
    return env


def _run(args, cwd: Path, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def _copy_sources(dest: Path) -> Path:
    """What a wheel is built from, copied so the build writes nothing into the checkout."""
    ignore = shutil.ignore_patterns("build", "__pycache__", "*.egg-info", "*.pyc", "*.so", "*.o")
    for name in ("pyproject.toml", "setup.cfg", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "freeml_keras", dest / "freeml_keras", ignore=ignore)
    return dest


def _tiny_model(path: Path) -> None:
    """A small CNN for 8x8 digits, trained a few steps: what a user would bring."""
    from freeml_keras import datasets
    from freeml_keras.keras import keras
    keras.utils.set_random_seed(0)
    (x, y), _, _ = datasets.load("digits")
    inp = keras.Input(shape=(8, 8, 1), name="input")
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inp)
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    out = keras.layers.Dense(10, activation="softmax", name="logits")(h)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    model.save(path)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel, python and freeml of a fresh venv with the wheel installed, a work dir, env)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = _copy_sources(tmp_path_factory.mktemp("src"))
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", dist, src], cwd=tmp, env=_clean_env(tmp / "unused"))
    (wheel,) = dist.glob("freeml_keras-*.whl")

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp, env=_clean_env(tmp / "unused"))
    py = venv / "bin" / "python"
    work = tmp / "work"            # outside the checkout: nothing there to import by accident
    work.mkdir()
    env = _clean_env(tmp / "cache")
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], cwd=work, env=env)
    # Reuse the pinned dependencies of the venv running the tests: a plain path line. Its
    # site-packages' own .pth files (the editable install of the checkout) are not processed.
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=work, env=env).stdout.strip())
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "zz_project_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    return wheel, py, venv / "bin" / "freeml", site, work, env


def test_wheel_carries_the_runtime_sources_and_the_cost_tables(installed):
    wheel = installed[0]
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in SHIPPED if n not in names]
    assert not missing, f"not in the wheel: {missing}"
    # every file the runtime builds from (and hashes into its cache key) ships
    sources = {f"freeml_keras/tflm_port/{p.relative_to(build.SOURCE_DIR).as_posix()}"
               for p in build._source_files(build.SOURCE_DIR)}
    assert not sources - names, f"C runtime files not in the wheel: {sorted(sources - names)}"
    assert not any(n.startswith(("tests/", "bench/", "tflm_port/")) for n in names)


def test_installed_package_is_the_wheel_not_the_checkout(installed):
    _, py, _, site, work, env = installed
    r = _run([py, "-c", "import sys, freeml_keras, freeml_keras.runtime.build as b, freeml_keras.costs as c; "
                        "print(freeml_keras.__file__); print(b.SOURCE_DIR); "
                        "print(any('editable' in m for m in sys.modules)); "
                        "print(sorted(c.read_cost_tables()))"], cwd=work, env=env)
    init, source_dir, editable, tables = r.stdout.strip().splitlines()[-4:]
    assert Path(init) == site / "freeml_keras" / "__init__.py"
    assert Path(source_dir) == site / "freeml_keras" / "tflm_port"
    assert editable == "False"
    assert "msp430" in tables and "cortex_m4" in tables


def test_convert_run_inspect_from_the_installed_wheel(installed):
    _, _, freeml, _, work, env = installed
    cache = Path(env["FREEML_CACHE_DIR"])
    _tiny_model(work / "model.keras")

    r = _run([freeml, "convert", "model.keras", "--dataset", "digits", "--out", "model.tflite",
              "--calibration", "100", "--eval-limit", "100"], cwd=work, env=env)
    assert "wrote model.tflite" in r.stdout and "int8" in r.stdout
    assert (work / "model.tflite").read_bytes()[4:8] == b"TFL3"

    r = _run([freeml, "run", "model.tflite", "--dataset", "digits", "--limit", "20"], cwd=work, env=env)
    assert "20 examples of digits" in r.stdout
    assert "same int8 outputs as TFLite Micro: 1.0000" in r.stdout
    assert "arena" in r.stdout and "ms per inference" in r.stdout
    # the C runtime was built from the wheel's sources into the fresh cache
    libs = list((cache / "build").glob("host-lib-*/libfreeml.so"))
    assert len(libs) == 1, sorted(p.name for p in (cache / "build").iterdir())
    # keyed by the source hash: the wheel's copy hashes like the checkout's sources
    key = build.source_key(build.SOURCE_DIR, extra=repr(("lib", [], os.environ.get("CC", ""))))
    assert libs[0].parent.name == f"host-lib-{key}"

    r = _run([freeml, "inspect", "model.tflite"], cwd=work, env=env)
    assert "model.tflite" in r.stdout and "CONV_2D" in r.stdout and "FULLY_CONNECTED" in r.stdout
    assert "atomic steps" in r.stdout and "msp430fr5994: parameters" in r.stdout

    # cost-aware conversion reads the cost tables shipped in the package
    r = _run([freeml, "convert", "model.keras", "--dataset", "digits", "--out", "costed.tflite",
              "--target", "msp430fr5994", "--calibration", "100", "--eval-limit", "100"],
             cwd=work, env=env)
    assert "per-operator costs (fitted) for msp430:" in r.stdout and "cycles per inference" in r.stdout
    r = _run([freeml, "inspect", "costed.tflite"], cwd=work, env=env)
    assert "per-operator costs: cycles on msp430 (fitted)" in r.stdout
    assert "priced by the metadata" in r.stdout
