"""Hostile NVM: the code that reads NVM after a power failure, fed damaged NVM under ASan+UBSan.

``tools/fm_hostile.c`` (Makefile target ``hostile``) runs a converted model uninterrupted for two
inputs (references, and an NVM snapshot after every commit), then damages seeded copies of real
mid-inference snapshots: corrupt records in one or both slots, torn commits (a prefix, or any
bytes of one of its three ordered writes), the newest record lost (both slots one commit
behind), the record and arena of another inference, random bytes over the whole checkpoint
region, a prepared image sealed for another model or another step configuration, a torn seal,
bit flips inside the sealed image and its state blocks, random bytes over the whole image. Each
case powers on (fm_power_on) and resumes (fm_resume, the exit head with it) to completion with a
bound on the steps, and must end refused with a status, or with an output (and exit answered)
bit-exact to the reference: the reference of the input whose checkpoint it resumed (a record and
arena of another input resumes to that input's answer). Never a crash (any ASan/UBSan report
aborts the driver), never a hang, never another output.

What the formats can detect decides what is asserted. A record is valid when its tag is ~seq:
random bytes form one with probability 2^-32, a torn commit never (fm_checkpoint.h). The seal
is checked field by field; but without ``verify`` nothing reads the image's bytes at power-on,
so a bit flipped inside a sealed image is not detectable then (fm_persist.h): the image-flip
cases power on with verify=1, where the Fletcher-32 sum must catch them and the image be prepared
afresh, never used. Bit flips in the body of the latest valid record (operator, unit, flags,
accumulator; ``x_body_flip``) are caught by the body's sum in the record's first word: the other
slot's record resumes one step earlier, or the case is refused; asserted, never wrong. Beyond
the formats (counted and printed as ``x_*``, not asserted): records several commits older than
the arena, and another input's record over this input's arena (a record does not identify its
arena; neither is what a power failure leaves). Those end refused or bit-exact in most cases
but can end with another output; the printed counts say how often.
"""

from __future__ import annotations

from conftest import prune_kernels

import subprocess

import numpy as np
import pytest

from freeml_keras import datasets, zoo
from freeml_keras.conversion.converter import convert
from freeml_keras.format import tflite as ts
from freeml_keras.keras import keras
from freeml_keras.runtime.build import make_host
from freeml_keras.runtime.reference import io_quantization, quantize

CASES_PER_RUN = 6000
IN_MODEL_KINDS = ["rec_corrupt", "torn", "stale_prev", "stale_other", "ckpt_random", "img_foreign",
                  "img_config", "seal_torn", "img_flip", "img_random"]
X_KINDS = ["x_body_flip", "x_stale_deep", "x_other_rec"]
IMAGE_KINDS = ["img_foreign", "img_config", "seal_torn", "img_flip", "img_random"]
TOTAL: dict[str, int] = {}


def _cnn(name, width, zero_fraction, tr):
    keras.utils.set_random_seed(0)
    m = zoo.build(name, tr[0].shape[1:], int(tr[1].max()) + 1, width=width)
    if zero_fraction:
        prune_kernels(m, zero_fraction)
    return convert(m, tr[0][:64], sparse=bool(zero_fraction))


def _sparse_weights(b: bytes) -> tuple[int, int]:
    """DENSIFY operators and tensors stored with TFLite's sparsity (CSR) encoding."""
    model = ts.read_model(b)
    sg = model.subgraphs[0]
    densify = sum(ts.op_name(model, op.opcodeIndex) == "DENSIFY" for op in sg.operators)
    return densify, sum(t.sparsity is not None for t in sg.tensors)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from freeml_keras.exits import attach_global_exit
    d = tmp_path_factory.mktemp("hostile")
    tr, va, te = datasets.load("digits")
    out = {"dense": _cnn("cnn_s", 0.5, 0.0, tr), "sparse": _cnn("cnn_s", 0.5, 0.7, tr),
           "other": _cnn("cnn_m", 0.25, 0.0, tr)}
    keras.utils.set_random_seed(0)
    m = zoo.build("cnn_s", (8, 8, 1), 10, width=0.5)
    zoo.train(m, tr, va, zoo.TrainConfig(epochs=3, batch_size=32), verbose=0)
    em = attach_global_exit(m, ["pool1", "conv2", "fc1"], pooled_size=[2, 1, None])
    rng = np.random.default_rng(0)
    em.set_head_weights(rng.normal(0, 0.3, (sum(em.pooled_dims), 10)), rng.normal(0, 0.1, 10))
    out["exit"] = convert(m, tr[0][:100], sparse=False, exit_model=em,
                          policy={"thresholds": [0.9, 0.8, 0.7]})
    assert _sparse_weights(out["dense"]) == (0, 0)
    densify, csr = _sparse_weights(out["sparse"])
    assert densify >= 4 and csr >= 4          # CSR weights, expanded by DENSIFY (an alias)
    paths = {}
    for name, b in out.items():
        paths[name] = d / f"{name}.tflite"
        paths[name].write_bytes(b)
        (iq,), _ = io_quantization(b)
        # two inputs: A (the one damaged) and B (the other inference of the stale cases)
        (d / f"{name}.in").write_bytes(quantize(te[0][:2], *iq).astype(np.int8).tobytes())
    return d, paths


def _parse(line: str) -> dict[str, int]:
    return {k: int(v) for k, v in (f.split("=") for f in line.split())}


RUNS = [  # model, the model whose sealed image is offered to it, exit policy
    ("dense", "other", "none"),
    ("sparse", "other", "none"),
    ("exit", "dense", "T"),      # stop at the metadata's confidence thresholds
    ("exit", "dense", "1"),      # stop at exit 1: the answer from the accumulator
    ("exit", "dense", "none"),   # the exit head accumulates, the model runs to its end
]


@pytest.mark.parametrize("model,other,policy", RUNS, ids=[f"{r[0]}-{r[2]}" for r in RUNS])
def test_damaged_nvm_is_refused_or_resumed_bit_exact(models, model, other, policy):
    d, paths = models
    tool = make_host("hostile", "fm_hostile")
    seed = 1 + RUNS.index((model, other, policy))
    r = subprocess.run([str(tool), str(paths[model]), str(paths[other]), str(d / f"{model}.in"),
                        str(CASES_PER_RUN), str(seed), policy], capture_output=True, text=True, timeout=300)
    # 1: an in-model case ended wrong, hung or used a damaged image; anything else: a sanitizer
    # abort or a set-up error
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-4000:])
    c = _parse(r.stdout.strip().splitlines()[-1])
    print(f"{model} ({policy}): {r.stdout.strip()}")
    assert c["cases"] == CASES_PER_RUN
    assert c["wrong"] == c["hang"] == c["misused"] == 0
    assert c["x_hang"] == c["x_misused"] == 0
    for k in IN_MODEL_KINDS + X_KINDS:
        assert c[k] > 0, k                                    # every damage kind occurred
        assert c[f"{k}.hang"] == 0, k
    for k in IN_MODEL_KINDS:
        assert c[f"{k}.wrong"] == 0, k
    assert c["x_body_flip.wrong"] == 0                        # the record body's sum
    # the outcomes each kind can have, and did have
    assert c["refused"] > 0 and c["warm_ok"] > 0 and c["cold_ok"] > 0
    assert c["refused"] == c["refused_STATE"] + c["refused_FORMAT"] + c["refused_ARG"] + \
        c["refused_UNSUPPORTED"] + c["refused_MEMORY"]
    assert c["ckpt_random.refused"] == c["ckpt_random"]     # nothing to resume: FM_ERR_STATE
    assert c["rec_corrupt.refused"] > 0 and c["rec_corrupt.warm_ok"] > 0   # both slots / one slot
    assert c["torn.warm_ok"] > 0 and c["stale_prev.warm_ok"] > 0 and c["stale_other.warm_ok"] > 0
    for k in IMAGE_KINDS:                                     # detected, prepared afresh, never used
        assert c[f"{k}.warm_ok"] == 0 and c[f"{k}.cold_ok"] > 0, k
        assert c[f"{k}.cold_ok"] + c[f"{k}.refused"] == c[k], k
    if policy == "1":
        assert c["exit_a"] == 1 and c["exit_b"] == 1
    for k, v in c.items():
        TOTAL[k] = TOTAL.get(k, 0) + v


def test_at_least_10000_hostile_cases_per_run():
    """Runs after the cases above (file order within a worker)."""
    if not TOTAL:
        pytest.fail("the hostile NVM runs did not run first")
    line = " ".join(f"{k}={TOTAL[k]}" for k in ["cases", "in_model", *IN_MODEL_KINDS, "refused", "warm_ok",
                                                 "cold_ok", "wrong", "hang", "misused", *X_KINDS, "x_refused",
                                                 "x_warm_ok", "x_cold_ok", "x_wrong",
                                                 *(f"{k}.{o}" for k in X_KINDS
                                                   for o in ("refused", "warm_ok", "cold_ok", "wrong"))])
    print(f"hostile NVM totals: {line}")
    assert TOTAL["cases"] >= 10000 and TOTAL["in_model"] >= 10000
    assert TOTAL["wrong"] == TOTAL["hang"] == TOTAL["misused"] == 0
