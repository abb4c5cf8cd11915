"""The Keras 3 bridge on the reference models: time to rebuild each way, largest output
difference, and whether the Keras 3 copy converts to the same int8 flatbuffer.

Each zoo model (untrained weights, fixed seed) is moved tf_keras -> Keras 3 -> tf_keras; the
first move of the run includes importing Keras 3 (reported apart).

    .venv/bin/python bench/bridge.py            # writes bench/results/bridge.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from freeml_keras import bridge, zoo
from freeml_keras.conversion import convert
from freeml_keras.keras import keras

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = (("cnn_s", (28, 28, 1), 10), ("cnn_m", (28, 28, 1), 10), ("imu_cnn", (100, 6), 7))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS / "bridge.json")
    ap.add_argument("--quick", action="store_true", help="accepted for make bench; the settings are already small")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    import keras as keras3                       # noqa: F401 - the import, timed apart
    rows = [{"keras3_import_s": round(time.perf_counter() - t0, 3)}]
    for name, shape, classes in MODELS:
        keras.utils.set_random_seed(0)
        m = zoo.build(name, shape, classes)
        x = np.random.default_rng(0).random((64,) + shape).astype("float32")
        t0 = time.perf_counter()
        k3 = bridge.to_keras3(m)
        t1 = time.perf_counter()
        back = bridge.to_tf_keras(k3)
        t2 = time.perf_counter()
        ref = m.predict(x, verbose=0)
        rows.append({"model": name, "params": int(m.count_params()), "layers": len(m.layers),
                     "to_keras3_s": round(t1 - t0, 3), "to_tf_keras_s": round(t2 - t1, 3),
                     "max_abs_diff_keras3": float(np.abs(k3.predict(x, verbose=0) - ref).max()),
                     "max_abs_diff_round_trip": float(np.abs(back.predict(x, verbose=0) - ref).max()),
                     "same_flatbuffer": convert(k3, x[:32], sparse=False) == convert(m, x[:32], sparse=False)})
        print(rows[-1])
    out = {"machine": platform.machine(), "python": platform.python_version(), "rows": rows}
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
