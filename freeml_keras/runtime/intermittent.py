"""Intermittent execution on the host: the tflm_port runtime with its arena and checkpoint in a
memory-mapped file, killed with SIGKILL at random points and resumed until it completes.

A SIGKILL loses everything but the file's contents, the way a power failure loses everything
but FRAM. Two kinds of failure are injected, both from a seeded generator: by time (the parent
kills the child after a random delay: anywhere, inside kernels included) and by NVM writes (the
child kills itself at the N-th byte a checkpoint commit writes: torn records included).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from freeml_keras.runtime.build import make_host

__all__ = ["FailureReport", "harness_path", "run_uninterrupted", "run_with_power_failures",
           "exit_options", "step_options", "plan", "atomic_steps",
           "DEFAULT_GRANULARITY", "DEFAULT_STEP_WORK"]

DEFAULT_GRANULARITY = 8   # units per atomic step in units mode (FM_DEFAULT_GRANULARITY)
DEFAULT_STEP_WORK = 1024  # MAC-equivalents per atomic step, the runtime's default (FM_DEFAULT_STEP_WORK)
_LINE = re.compile(r"units=(\d+) commits=(\d+) ckpt_bytes=(\d+) exit=(-?\d+)")


def step_options(granularity: int | None = None, step_work: int | None = None) -> list[str]:
    """Harness options for the atomic steps (units of one operator between two commits).
    Neither: the runtime's default (work mode, at most ``DEFAULT_STEP_WORK`` MAC-equivalents per
    step, at least one unit). ``granularity`` alone: units mode, at most that many units per
    step. ``step_work``: work mode with that budget (and ``granularity`` as a cap on units)."""
    opts: list[str] = []
    if step_work is not None:
        if step_work < 1:
            raise ValueError(f"step_work must be at least 1, not {step_work}")
        opts += ["-w", str(int(step_work))]
    if granularity is not None:
        if granularity < 1:
            raise ValueError(f"granularity must be at least 1 unit, not {granularity}")
        opts += ["-g", str(int(granularity))]
    return opts


def harness_path() -> Path:
    """The host harness (``tools/fm_intermittent.c``), built into the cache on first use."""
    return make_host("intermittent", "fm_intermittent")


@dataclass
class FailureReport:
    """What one inference under injected power failures did."""
    output: np.ndarray
    failures: int = 0
    failures_by_time: int = 0
    failures_in_commits: int = 0
    restarts_without_progress: int = 0
    units_total: int = 0
    units_run: int = 0
    commits: int = 0
    checkpoint_bytes_written: int = 0
    runs: int = 0
    exit: int = -1

    @property
    def reexecuted_units(self) -> int:
        return self.units_run - self.units_total

    def to_dict(self) -> dict:
        d = asdict(self)
        d["output"] = self.output.tolist()
        d["reexecuted_units"] = self.reexecuted_units
        return d


def _parse(stdout: str) -> tuple[int, int, int, int]:
    m = _LINE.search(stdout)
    return tuple(int(g) for g in m.groups()) if m else (0, 0, 0, -1)  # killed before printing


def exit_options(*, stop_at_exit: int | None = None, thresholds: bool = False,
                 energy_j: float | None = None, energy_per_mac_j: float = 0.0,
                 energy_per_cycle_j: float = 0.0) -> list[str]:
    """Harness options for the anytime exit: stop at an exit (``fm_exit_now``), stop by the
    metadata's confidence thresholds, or by a (constant) energy reading and the price of the work
    to the next exit: ``energy_per_cycle_j`` (J per unit of the metadata's cost table) when the
    model's metadata (version 2) has a cost for every operator that runs and it is > 0, otherwise
    ``energy_per_mac_j``. :func:`freeml_keras.runtime.exit_decision.predicted_exit` takes the
    same settings and predicts the exit with the stop rule of :mod:`freeml_keras.exits`."""
    opts: list[str] = []
    if stop_at_exit is not None:
        opts += ["-x", str(stop_at_exit)]
    if thresholds:
        opts.append("-T")
    if energy_j is not None:
        opts += ["-e", repr(float(energy_j)), "-m", repr(float(energy_per_mac_j))]
        if energy_per_cycle_j:
            opts += ["-c", repr(float(energy_per_cycle_j))]
    return opts


def run_uninterrupted(model_bytes: bytes, x_int8: np.ndarray, *, granularity: int | None = None,
                      step_work: int | None = None, options: list[str] | tuple[str, ...] = (),
                      dump_exit_tensor: bool = False,
                      workdir: str | Path | None = None) -> tuple[np.ndarray, dict]:
    """Output (the model's, or the exit's int8 logits) and counts (units, commits, checkpoint
    bytes, exit, seconds; with ``dump_exit_tensor`` the stopping exit's main tensor) of one run
    without failures. Atomic steps: see :func:`step_options`; ``options``: see
    :func:`exit_options`."""
    tool = harness_path()
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        d = Path(d)
        (d / "m.tflite").write_bytes(model_bytes)
        (d / "x.bin").write_bytes(np.ascontiguousarray(x_int8, np.int8).tobytes())
        t0 = time.perf_counter()
        dump = ["-X", str(d / "exit.bin")] if dump_exit_tensor else []
        r = subprocess.run([str(tool), str(d / "m.tflite"), str(d / "nvm"), "new", str(d / "x.bin"),
                            *step_options(granularity, step_work), "-o", str(d / "y.bin"), *options, *dump],
                           capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"harness exit {r.returncode}: {r.stderr.strip()}")
        units, commits, ckpt, exit_index = _parse(r.stdout)
        out = np.frombuffer((d / "y.bin").read_bytes(), np.int8).copy()
        info = {"units": units, "commits": commits, "checkpoint_bytes": ckpt, "exit": exit_index,
                "seconds": seconds}
        if dump_exit_tensor and (d / "exit.bin").exists():
            info["exit_tensor"] = np.frombuffer((d / "exit.bin").read_bytes(), np.int8).copy()
    return out, info


def run_with_power_failures(model_bytes: bytes, x_int8: np.ndarray, *, granularity: int | None = None,
                            step_work: int | None = None, seed: int = 0, max_failures: int = 20,
                            time_fraction: float = 0.3, options: list[str] | tuple[str, ...] = (),
                            workdir: str | Path | None = None) -> FailureReport:
    """Run one inference, killing it up to ``max_failures`` times at random points and resuming
    from the checkpoint after every kill, until it completes. Returns the output and counts.
    Atomic steps: see :func:`step_options`."""
    tool = harness_path()
    rng = np.random.default_rng(seed)
    _, ref = run_uninterrupted(model_bytes, x_int8, granularity=granularity, step_work=step_work,
                               options=options, workdir=workdir)
    record_bytes = ref["checkpoint_bytes"] // max(ref["commits"], 1)
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        d = Path(d)
        model, nvm, x, y, stats = d / "m.tflite", d / "nvm", d / "x.bin", d / "y.bin", d / "stats"
        model.write_bytes(model_bytes)
        x.write_bytes(np.ascontiguousarray(x_int8, np.int8).tobytes())
        rep = FailureReport(output=np.zeros(0, np.int8), units_total=ref["units"])
        started = False
        while True:
            inject = rep.failures < max_failures
            cmd = [str(tool), str(model), str(nvm)] + (["resume"] if started else ["new", str(x)])
            cmd += [*step_options(granularity, step_work), "-o", str(y), "-t", str(stats), *options]
            by_time = inject and rng.random() < time_fraction
            if inject and not by_time:
                # a byte within the next few commits (a new run first writes an idle record,
                # the input and the start record)
                setup = 0 if started else np.asarray(x_int8).size + 2 * record_bytes
                cmd += ["-k", str(int(rng.integers(1, setup + 4 * record_bytes + 1)))]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if by_time:
                time.sleep(float(rng.uniform(0.0, max(ref["seconds"], 1e-3))))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
            out_text, err = proc.communicate()
            rep.runs += 1
            rep.exit = _parse(out_text)[3] if out_text else rep.exit
            if stats.exists() and stats.stat().st_size >= 24:
                units, commits, ckpt = np.frombuffer(stats.read_bytes()[:24], np.uint64).tolist()
                rep.units_run += int(units)
                rep.commits += int(commits)
                rep.checkpoint_bytes_written += int(ckpt)
                stats.unlink()
            if proc.returncode == -signal.SIGKILL:
                rep.failures += 1
                rep.failures_by_time += by_time
                rep.failures_in_commits += not by_time
                started = True
                continue
            if proc.returncode == 3:       # killed before the start was committed: new input
                started = False
                rep.restarts_without_progress += 1
                continue
            if proc.returncode != 0:
                raise RuntimeError(f"harness exit {proc.returncode}: {err.strip()}")
            rep.output = np.frombuffer(y.read_bytes(), np.int8).copy()
            return rep


# ---- the runtime's atomic steps, priced, and run on harvested energy ----------------------------

@dataclass
class AtomicStep:
    """One atomic step of the runtime: ``units`` of operator ``op``, then a commit."""
    op: int
    units: int
    macs: int
    cycles: int
    nvm_bytes: int
    exit_index: int | None = None


def plan(model_bytes: bytes, *, granularity: int | None = None, step_work: int | None = None) -> dict:
    """The runtime's operators (code, units), its atomic steps for one inference (``op``, ``unit``
    where the step starts, ``units``, ``work`` in MAC-equivalents; a step of 0 units only passes
    alias operators), its largest atomic step (in units and in work) and the checkpoint record
    size. Atomic steps: see :func:`step_options`."""
    tool = harness_path()
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "m.tflite").write_bytes(model_bytes)
        r = subprocess.run([str(tool), str(Path(d) / "m.tflite"), str(Path(d) / "nvm"), "plan",
                            *step_options(granularity, step_work)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"harness exit {r.returncode}: {r.stderr.strip()}")
    ops = [dict(zip(("op", "code", "units"), map(int, m)))
           for m in re.findall(r"^op=(\d+) code=(-?\d+) units=(\d+)$", r.stdout, re.M)]
    steps = [dict(zip(("op", "unit", "units", "work"), map(int, m)))
             for m in re.findall(r"^step=\d+ op=(\d+) unit=(\d+) units=(\d+) work=(\d+)$", r.stdout, re.M)]
    m = re.search(r"largest_step=(\d+) op=(\d+) record_bytes=(\d+) largest_step_work=(\d+) "
                  r"largest_step_op=(\d+) steps=(\d+)", r.stdout)
    big, big_op, rec, big_work, big_work_op, n = map(int, m.groups())
    return {"ops": ops, "steps": steps, "largest_step_units": big, "largest_step_op": big_op,
            "largest_step_work": big_work, "largest_step_work_op": big_work_op, "record_bytes": rec}


def atomic_steps(model_bytes: bytes, *, granularity: int | None = None, step_work: int | None = None,
                 cycles_per_mac: float = 30.0, cycles_per_unit: float = 200.0,
                 cost_table: dict[int, float] | None = None) -> list[AtomicStep]:
    """The steps the runtime runs for one inference (:func:`plan`), with cycle costs:
    ``cost_table`` (cycles per unit of each operator index), else the per-operator costs in the
    model's freeml metadata (version 2, converted with a target: see :mod:`freeml_keras.costs`),
    else the analytical model ``MACs x cycles_per_mac + units x cycles_per_unit`` (MACs of the
    stored non-zero weights). Exit points are marked from the metadata (the exit a step
    completes, alias operators passed after it included)."""
    from freeml_keras import memory
    from freeml_keras.format.metadata import read_metadata
    p = plan(model_bytes, granularity=granularity, step_work=step_work)
    units_of = [o["units"] for o in p["ops"]]
    fp = memory.tflite_footprint(model_bytes)
    macs = {l.op_index: l.sparse_macs for l in fp.layers if l.subgraph == 0}
    md = read_metadata(model_bytes)
    if cost_table is None and md is not None and md.ops and any(o.cost for o in md.ops):
        cost_table = {i: o.cost / units_of[i] for i, o in enumerate(md.ops)
                      if i < len(units_of) and units_of[i] > 0}
    exit_after = {e.after_op: i for i, e in enumerate(md.exits)} if md else {}
    steps: list[AtomicStep] = []
    for st in p["steps"]:
        op, unit, left = st["op"], st["unit"], st["units"]
        m = cycles = 0.0
        ex: int | None = None
        while op < len(units_of):
            u = units_of[op]
            n = min(left, u - unit)
            if n > 0:
                m += macs.get(op, 0) * n / u
                per_unit = cost_table.get(op) if cost_table else None
                cycles += per_unit * n if per_unit is not None else macs.get(op, 0) * n / u * cycles_per_mac \
                    + n * cycles_per_unit
            left -= n
            unit += n
            if unit < u:
                break
            if ex is None and op in exit_after:
                ex = exit_after[op]
            op, unit = op + 1, 0
            if left == 0 and (op >= len(units_of) or units_of[op] > 0):
                break
        steps.append(AtomicStep(st["op"], st["units"], int(m), int(round(cycles)), p["record_bytes"], ex))
    return steps
