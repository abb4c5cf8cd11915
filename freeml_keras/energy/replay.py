"""The real runtime driven by the simulator's power supply: the host harness runs one atomic
step at a time and the supply decides whether each step gets the energy to commit, so the
runtime's power failures and finishing time can be compared with the simulation's."""

from __future__ import annotations

import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from freeml_keras.energy.simulator import NeverCompletes
from freeml_keras.runtime.intermittent import AtomicStep, harness_path, step_options

__all__ = ["run_on_harvested_energy"]


def run_on_harvested_energy(model_bytes: bytes, x_int8: np.ndarray, supply, steps: list[AtomicStep],
                            *, granularity: int | None = None, step_work: int | None = None,
                            max_consecutive_failures: int = 1000,
                            restart_cycles: int | None = None) -> dict:
    """Run one inference of the real runtime step by step, with a power supply from
    :mod:`freeml_keras.energy` deciding whether each step gets the energy to commit: a step that
    does not is executed and killed before its commit completes (its work is lost), the
    capacitor recharges, and the runtime resumes from its checkpoint. Every power-on is charged
    ``restart_cycles`` before the next step, as the simulator does (None: the warm restart measured
    for the supply's device, :func:`freeml_keras.costs.restart_cycles`; 0: free). Returns the
    output and the number of power failures, to compare with the simulator on the same program."""
    if restart_cycles is None:
        from freeml_keras import costs
        restart_cycles = costs.restart_cycles(supply.device)
    seen_power_ons = supply.power_ons
    tool = harness_path()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        model, nvm, x, y = d / "m.tflite", d / "nvm", d / "x.bin", d / "y.bin"
        model.write_bytes(model_bytes)
        x.write_bytes(np.ascontiguousarray(x_int8, np.int8).tobytes())
        base = [str(tool), str(model), str(nvm)]
        opts = [*step_options(granularity, step_work), "-o", str(y)]
        record = steps[0].nvm_bytes if steps else 16
        failures = 0
        started = False
        r = None
        for i, step in enumerate(steps):
            # the first step's run also writes an idle record, the input and the start record
            head = [] if started else ["new", str(x)]
            first_commit_byte = 1 if started else 2 * record + int(np.asarray(x_int8).size) + 1
            in_a_row = 0
            while True:
                restart = restart_cycles if supply.power_ons != seen_power_ons else 0
                seen_power_ons = supply.power_ons
                if supply.run_step(step.cycles + restart, step.nvm_bytes):
                    break
                failures += 1
                in_a_row += 1
                if in_a_row > max_consecutive_failures:
                    raise NeverCompletes(f"step {i} ({step.cycles} cycles) failed {in_a_row} times "
                                         "in a row: one charge of the capacitor cannot pay for it")
                # the step runs, then the supply is cut inside its commit: its work is lost
                r = subprocess.run(base + (head or ["resume"]) + opts + ["-s", "1", "-k", str(first_commit_byte)],
                                   capture_output=True, text=True)
                if r.returncode != -signal.SIGKILL:
                    raise RuntimeError(f"step {i}: expected a kill inside the commit, got exit {r.returncode}")
                supply.charge()
            r = subprocess.run(base + (head or ["resume"]) + opts + ["-s", "1"], capture_output=True, text=True)
            started = True
            if r.returncode not in (0, 4):
                raise RuntimeError(f"step {i}: harness exit {r.returncode}: {r.stderr.strip()}")
        if r is None or r.returncode != 0:
            raise RuntimeError(f"the runtime did not finish after the {len(steps)} planned steps")
        return {"output": np.frombuffer(y.read_bytes(), np.int8).copy(), "failures": failures,
                "time_s": supply.t}
