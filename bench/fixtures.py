"""Models the benchmarks make for themselves (not part of the library): the compressed cnn_s
that fits the MSP430FR5994 with the runtime."""

from __future__ import annotations

import json
import time

import numpy as np

from freeml_keras import datasets, memory, zoo
from freeml_keras.compression import compress
from freeml_keras.conversion import convert, extract_subgraph
from freeml_keras.exits import attach_global_exit, train_global_exit
from freeml_keras.runtime.reference import io_quantization, quantize

# The compressed cnn_s that fits the MSP430FR5994 together with the runtime (see
# tflm_port/targets/README.md for the byte budget): the zoo's cnn_s at width 0.25 on the digits,
# SparseComp to this many bytes of stored parameters, a gNet exit head, names stripped.
COMPRESSED_CNN_S_BUDGET = 4000
CNN_S_DIGITS_EPOCHS = 30            # pre-training of the zoo's cnn_s (width 0.25) on the digits
_COMPRESSED_CNN_S_VERSION = 2


def compressed_cnn_s(budget_bytes: int = COMPRESSED_CNN_S_BUDGET, num_inputs: int = 3,
                     verbose: bool = False, exit_head: bool = True) -> tuple[bytes, np.ndarray, dict]:
    """The zoo's ``cnn_s`` (width 0.25, trained on the digits) compressed with SparseComp to
    ``budget_bytes`` of stored parameters, with a gNet exit head after its first pooling stage,
    converted to a sparse int8 flatbuffer with names stripped: the cnn_s that fits the
    MSP430FR5994's lower FRAM with the runtime. Returns the flatbuffer, ``num_inputs`` quantized
    digits test inputs (int8, batch first) and a description (accuracies, sizes, seconds).
    Cached in the zoo's cache directory (about a minute to make). ``exit_head=False``: the same
    model's backbone alone, its main subgraph bit for bit without the head subgraph and the
    ``freeml`` metadata (no exit points: a checkpointed build leaves out the exit head's code,
    which is what lets it fit the MSP430); its outputs are the full model's
    (``meta["exit_head"]`` is False and ``meta["flatbuffer_bytes"]`` its size)."""
    d = zoo.cache_dir() / "models" / f"cnn_s-digits-w0.25-sparsecomp{int(budget_bytes)}"
    meta_path, model_path = d / "meta.json", d / "model.tflite"
    key = {"version": _COMPRESSED_CNN_S_VERSION, "budget_bytes": int(budget_bytes),
           "pretrain_epochs": CNN_S_DIGITS_EPOCHS}
    tr, va, te = datasets.load("digits")
    if meta_path.exists() and model_path.exists() and json.loads(meta_path.read_text()).get("key") == key:
        b = model_path.read_bytes()
        meta = json.loads(meta_path.read_text())
    else:
        t0 = time.time()
        base = zoo.pretrained("cnn_s", "digits", width=0.25, epochs=CNN_S_DIGITS_EPOCHS, verbose=0)
        res = compress(base, (int(budget_bytes), None), tr, va, fine_tune_epochs=4, qat_epochs=1,
                       factorize=False, seed=0, verbose=verbose)
        em = attach_global_exit(res.model, "auto")
        train_global_exit(em, tr, va, method="stagewise", epochs=10, verbose=0, seed=0)
        b = convert(res.model, tr[0][:100], sparse=True, exit_model=em, strip=True)
        fp = memory.tflite_footprint(b)
        meta = {"key": key, "pretrained_accuracy": zoo.accuracy(base, te),
                "compressed_accuracy": zoo.accuracy(res.model, te),
                "exit_accuracy": [float(a) for a in em.evaluate(te)["exit_accuracy"]],
                "weight_bytes": fp.weight_bytes, "flatbuffer_bytes": len(b),
                "sparse_layers": sum(1 for layer in fp.layers if layer.stored_format == "int8_csr"),
                "seconds": round(time.time() - t0, 1)}
        d.mkdir(parents=True, exist_ok=True)
        model_path.write_bytes(b)
        meta_path.write_text(json.dumps(meta, indent=1))
    (scale, zp), = io_quantization(b)[0]
    if not exit_head:
        b = extract_subgraph(b, 0)
        meta = {**meta, "exit_head": False, "flatbuffer_bytes": len(b)}
    return b, quantize(te[0][:num_inputs], scale, zp), meta



# Models compressed to the budget the MSP430FR5994's memory map leaves for them
# (targets.image.device_budget, issue 14): the zoo's cnn_s at a small width, SparseComp, an
# optional gNet exit head, converted in the device form.
DEVICE_CNN_S = {"fashion_mnist": {"width": 0.125, "pretrain": {"epochs": 3, "train_limit": 12000}},
                "digits": {"width": 0.25, "pretrain": {"epochs": CNN_S_DIGITS_EPOCHS}}}
DEVICE_CNN_S_HEAD_RESERVE = 7000     # bytes kept for the exit head: parameters, its state on the target
DEVICE_CNN_S_HEAD_BYTES = 1000       # of which its parameters (gNet's head budget)
DEVICE_CNN_S_EXIT_POINTS = 3         # exit points of the head (the first ones; cnn_s has three)
_DEVICE_CNN_S_VERSION = 5


def device_cnn_s(dataset: str = "fashion_mnist", *, exit_head: bool = True, num_inputs: int = 2,
                 verbose: bool = False, work_dir=None) -> tuple[bytes, np.ndarray, dict]:
    """The zoo's cnn_s on ``dataset`` (28x28 Fashion-MNIST at width 0.125, or the 8x8 digits at
    0.25) compressed to what the MSP430FR5994's 48 KB of lower FRAM leaves after the runtime's
    code (with the exit head's when ``exit_head``), state and checkpoint (the budget from
    :func:`freeml_keras.targets.image.device_budget`), with a gNet exit head when
    ``exit_head``, in the device form (names stripped, compact). Returns the flatbuffer,
    ``num_inputs`` quantized test inputs and a description (accuracies, budget, seconds).
    Cached in the zoo's cache directory, keyed by the runtime's sources too (the budget depends
    on the code size); one to a few minutes to make. Raises ``ValueError`` when the runtime's
    code leaves no room for the model."""
    from freeml_keras.runtime.build import source_key
    from freeml_keras.targets import image

    cfg = DEVICE_CNN_S[dataset]
    tr, va, te = datasets.load(dataset)
    key = {"version": _DEVICE_CNN_S_VERSION, **cfg, "exit_head": exit_head, "head_bytes": DEVICE_CNN_S_HEAD_BYTES,
           "exit_points": DEVICE_CNN_S_EXIT_POINTS,
           "reserve": DEVICE_CNN_S_HEAD_RESERVE if exit_head else 0, "runtime": source_key(image.RUNTIME_DIR)[:16]}
    d = zoo.cache_dir() / "models" / f"cnn_s-{dataset}-w{cfg['width']:g}-msp430{'' if exit_head else '-backbone'}"
    meta_path, model_path = d / "meta.json", d / "model.tflite"
    if meta_path.exists() and model_path.exists() and json.loads(meta_path.read_text()).get("key") == key:
        b = model_path.read_bytes()
        meta = json.loads(meta_path.read_text())
    else:
        t0 = time.time()
        base = zoo.pretrained("cnn_s", dataset, width=cfg["width"], verbose=0, **cfg["pretrain"])
        tr_s, va_s = datasets.subset(tr, 6000, seed=0), datasets.subset(va, 1500, seed=0)
        reserve = DEVICE_CNN_S_HEAD_RESERVE if exit_head else 0
        start, passes = base, []
        for _ in range(5):
            # the budget from the memory map; when the linked image is still over (the file's
            # tables, the exit head's state), compress again from the result with that much less
            budget, how = image.device_budget(start, "msp430fr5994", tr[0][:100], exits=exit_head,
                                              reserve_bytes=reserve, work_dir=work_dir)
            res = compress(start, budget, tr_s, va_s, fine_tune_epochs=2, qat_epochs=1, factorize=False,
                           seed=0, verbose=verbose)
            em = None
            if exit_head:
                # every exit point adds operators to the head's subgraph (their state on the
                # MSP430: 148 B per operator); all three fit since the device keeps the file's
                # data only and the preparing build's code moved to emulator memory
                points = attach_global_exit(res.model).exit_points[:DEVICE_CNN_S_EXIT_POINTS]
                em = attach_global_exit(res.model, points, head_budget_bytes=DEVICE_CNN_S_HEAD_BYTES)
                train_global_exit(em, tr_s, va_s, epochs=4, verbose=0, seed=0)
            b = convert(res.model, tr[0][:100], sparse=True, exit_model=em, device_form=True,
                        target="msp430fr5994")
            fit = image.predict(b, "msp430fr5994", work_dir).regions["FRAM"]["free"]
            passes.append({"flash_bytes": budget.flash_bytes, "ram_bytes": budget.ram_bytes, "free": fit})
            if fit >= 0:
                break
            start, reserve = res.model, reserve - fit + 512
        how["passes"] = passes
        fp = memory.tflite_footprint(b)
        meta = {"key": key, "budget": how, "pretrained_accuracy": zoo.accuracy(base, te),
                "compressed_accuracy": zoo.accuracy(res.model, te),
                "exit_accuracy": [float(a) for a in em.evaluate(te)["exit_accuracy"]] if em else [],
                "weight_bytes": fp.weight_bytes, "flatbuffer_bytes": len(b), "arena_bytes": fp.arena_bytes,
                "seconds": round(time.time() - t0, 1)}
        d.mkdir(parents=True, exist_ok=True)
        model_path.write_bytes(b)
        meta_path.write_text(json.dumps(meta, indent=1))
    (scale, zp), = io_quantization(b)[0]
    return b, quantize(te[0][:num_inputs], scale, zp), meta
