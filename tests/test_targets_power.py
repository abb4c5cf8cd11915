"""Power-on to progress on the targets (programs/power_run.c, freeml_keras.targets.power):
the prepared image survives power failures and a power-on reuses it; power failures land
anywhere in real inferences and every answer is bit-exact with the host.

MSP430 (mspdebug sim): a seeded number of instructions, then SRAM overwritten with a seeded
pattern and a reset, FRAM kept: failures inside kernels, commits and the restart itself.
Cortex-M4 (QEMU cannot be reset from outside here): the program cuts its own power at a seeded
byte of its NVM writes (torn commits, torn seals)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from freeml_keras import datasets
from freeml_keras.conversion import extract_subgraph
from freeml_keras.format.prepared import read_prepared, with_prepared
from freeml_keras.runtime import Interpreter
from freeml_keras.runtime.reference import io_quantization, quantize
from freeml_keras.targets import power

DATA = Path(__file__).resolve().parent / "data"
TOTALS = {"msp430": {"restart": 0, "work": 0, "commit": 0, "done": 0, "input": 0},
          "cortex_m4": {"restart": 0, "work": 0, "commit": 0, "done": 0, "input": 0}}


@pytest.fixture(scope="module")
def models(digit_models):
    """The MSP430's reference models: the MLP and the small CNN (conftest.digit_models) and the
    pinned compressed cnn_s (its backbone on the MSP430, with its exit head on the M4)."""
    _, _, (xte, _) = datasets.load("digits")
    out = {name: (b, x[0]) for name, (b, x) in digit_models.items()}
    full = (DATA / "cnn_s_compressed.tflite").read_bytes()
    (iq,), _ = io_quantization(full)
    x = quantize(xte[:1], *iq)[0]
    out["cnn_s"] = (with_prepared(extract_subgraph(full, 0)), x)
    out["cnn_s_exits"] = (with_prepared(full), x)
    for b, _ in out.values():
        assert read_prepared(b) is not None           # the targets prepare from precomputed words
    return out


def _host(b: bytes, x: np.ndarray) -> list[int]:
    it = Interpreter(b)
    return it.invoke(x.reshape((1,) + x.shape))[0].ravel().tolist()


@pytest.mark.parametrize("target,name", [("msp430", "mlp"), ("msp430", "cnn"), ("msp430", "cnn_s"),
                                         ("cortex_m4", "mlp"), ("cortex_m4", "cnn_s_exits")])
def test_a_power_on_reuses_the_prepared_image(models, target, name, tmp_path):
    """Cold: fm_power_on prepares (parse, prepare from precomputed words, plan, seal). Warm:
    from reset to the first resumed unit of work reuses the image. (The cycle targets are
    measured and reported by bench/targets.py.)"""
    b, x = models[name]
    r = power.measure_restart(target, b, x, tmp_path)
    print(f"{target} {name}: {r}")
    assert 0 < r["warm_restart"] < r["cold_init"] / 10
    assert r["warm_power_on"] < r["warm_restart"]


@pytest.mark.parametrize("name", ["mlp", "cnn", "cnn_s"])
def test_power_failures_inside_the_msp430_emulator(models, name, tmp_path):
    b, x = models[name]
    ref = _host(b, x)
    reports = [power.run_power_failures("msp430", b, x, tmp_path / "a", failures=110, seed=11),
               # short on-periods: failures in the restart and in the first steps and commits
               power.run_power_failures("msp430", b, x, tmp_path / "b", failures=25, seed=12, inferences=2,
                                        span=3000),
               # inside the NVM writes of commits: torn records
               power.run_power_failures("msp430", b, x, tmp_path / "c", failures=25, seed=13, inferences=10,
                                        in_commits=True)]
    for rep in reports:
        assert rep.outputs, "no inference finished"
        for exit_index, y in rep.outputs:
            assert y == ref, f"{name}: an answer differs from the host's after power failures"
        assert rep.warm_power_ons >= rep.power_ons - 1 - rep.failures_by_phase["restart"]
        for k, v in rep.failures_by_phase.items():
            TOTALS["msp430"][k] += v
    print(f"msp430 {name}: {[r.failures_by_phase for r in reports]}; totals {TOTALS['msp430']}")


@pytest.mark.parametrize("name", ["mlp", "cnn_s_exits"])
def test_power_lost_at_nvm_bytes_on_the_cortex_m4(models, name, tmp_path):
    b, x = models[name]
    rep = power.run_power_failures("cortex_m4", b, x, tmp_path, failures=60, seed=21)
    ref = _host(b, x)
    if name == "cnn_s_exits":
        ref = ref  # the program runs the model to its end: the backbone's output
    assert rep.outputs and all(y == ref for _, y in rep.outputs)
    assert rep.failures_by_phase["commit"] > 0
    for k, v in rep.failures_by_phase.items():
        TOTALS["cortex_m4"][k] += v
    print(f"cortex_m4 {name}: {rep.failures_by_phase}")


def test_failure_totals_on_the_targets():
    """Runs after the cases above in this module (pytest keeps file order within a worker)."""
    t = TOTALS["msp430"]
    if sum(t.values()) == 0:
        pytest.fail("the MSP430 power-failure cases did not run first")
    inside = t["restart"] + t["work"] + t["commit"]
    print(f"power failures on the targets: {TOTALS}")
    assert inside >= 300
    # failures after the answer (its printing) test nothing: at most a few land there
    assert t["done"] <= 0.05 * sum(t.values())
    assert t["restart"] > 0 and t["work"] > 0 and t["commit"] > 0
    assert TOTALS["cortex_m4"]["commit"] > 0


@pytest.mark.parametrize("name", ["mlp", "cnn_s"])
def test_no_livelock_when_a_charge_pays_restart_and_largest_step(models, name, tmp_path):
    """On-periods of exactly 1.2 x (warm restart + largest atomic step with its commit), in
    executed MSP430 instructions: every inference completes, bit-exact. At 0.9 x the largest
    step never completes: no answer at all (the runtime's plan says so beforehand:
    freeml_keras.energy.livelock)."""
    b, x = models[name]
    ref = _host(b, x)
    si = power.msp430_step_instructions(b, x, tmp_path / "steps")
    need = si["restart"] + si["largest_step"]
    ok = power.run_power_failures("msp430", b, x, tmp_path / "ok", failures=40, inferences=2,
                                  on_period=int(1.2 * need), final_run=False)
    assert len(ok.outputs) >= 2 and all(y == ref for _, y in ok.outputs)
    short = power.run_power_failures("msp430", b, x, tmp_path / "short", failures=40, inferences=2,
                                     on_period=int(0.9 * need), final_run=False)
    assert short.outputs == []


@pytest.mark.parametrize("name", ["mlp", "cnn_s_exits"])
def test_a_program_without_preparation_runs_from_a_provisioned_image(models, name, tmp_path):
    """MSP430: the power program built with FM_PREPARE_ON_DEVICE 0 (no parsing, preparation or
    step planning) warm-starts at its first power-on from the image the provisioning build
    (preparation only) sealed in the emulator, and answers bit-exact with the host; without the
    image it refuses to power on (FM_ERR_UNSUPPORTED). The compressed cnn_s with its exit head
    and checkpoints runs on the MSP430 this way (with preparation on the device it does not fit
    its 48 KB of FRAM)."""
    b, x = models[name]
    p = power.provision(b, x, tmp_path)
    print(f"{name}: .text (code and model) {p.size['text']} B without preparation, "
          f"{p.preparing.size['text']} B with")
    assert p.size["text"] < p.preparing.size["text"]
    out = power.run_provisioned(p)
    assert "@boots 1 1" in out, out                              # warm at its first power-on
    done = [line for line in out.splitlines() if line.startswith("@done")]
    assert done and [int(v) for v in done[0].split()[2:]] == _host(b, x), out
    assert "@error power_on 3" in power.run_provisioned(p, with_image=False)
