"""Intermittent execution on the host: the tflm_port runtime with its arena, checkpoint and
prepared image in a memory-mapped file, killed with SIGKILL at random points and resumed until it
completes.

A SIGKILL loses everything but the file's contents, the way a power failure loses everything
but FRAM. Two kinds of failure are injected, both from a seeded generator: by time (the harness
arms a high-resolution timer at its power-on, a random delay within the inference's duration:
anywhere, inside kernels, commits and the restart included) and by NVM writes (the harness kills
itself at the N-th byte written: torn checkpoint records and torn seals of the prepared image).
Every failure is classified by where it landed, from the phase the harness records in shared
memory: the restart (power-on check or preparation), inference work, a checkpoint commit, or
outside the inference (harness set-up, writing a new input, after the answer); only the first
three count as failures inside the inference.
"""

from __future__ import annotations

import re
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from freeml_keras import memory
from freeml_keras.format.metadata import read_metadata
from freeml_keras.runtime.build import make_host

__all__ = ["FailureReport", "harness_path", "run_uninterrupted", "run_with_power_failures",
           "exit_options", "energy_units", "ENERGY_UNIT_J", "step_options", "plan", "atomic_steps",
           "DEFAULT_GRANULARITY", "DEFAULT_STEP_WORK", "DEFAULT_STEP_COST", "PHASES", "INSIDE",
           "run_on_periods"]

DEFAULT_GRANULARITY = 8   # units per atomic step in units mode (FM_DEFAULT_GRANULARITY)
DEFAULT_STEP_WORK = 1024  # MAC-equivalents per atomic step in work mode (FM_DEFAULT_STEP_WORK)
DEFAULT_STEP_COST = 50000  # metadata cost units per atomic step in cost mode (FM_DEFAULT_STEP_COST)
_LINE = re.compile(r"units=(\d+) commits=(\d+) ckpt_bytes=(\d+) exit=(-?\d+) warm=(\d) work_ns=(\d+)")
# The harness's phases (tools/fm_intermittent.c, -t): where a failure landed.
PHASES = {0: "setup", 1: "restart", 2: "work", 3: "commit", 4: "done", 5: "input"}
INSIDE = ("restart", "work", "commit")
_SEAL_BYTES = 100        # fm_seal up to and with its tag on x86-64 (fm_persist.h): bytes a preparation seals


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
    """What one inference under injected power failures did. ``failures_by_phase`` counts the
    failures by where they landed (see ``PHASES``); ``failures`` counts those inside the
    inference (restart, work, commit), ``failures_outside`` the others (they tested nothing of
    the runtime's recovery)."""
    output: np.ndarray
    failures: int = 0
    failures_by_time: int = 0
    failures_in_commits: int = 0
    failures_outside: int = 0
    failures_by_phase: dict = field(default_factory=lambda: {k: 0 for k in PHASES.values()})
    restarts_without_progress: int = 0
    warm_restarts: int = 0
    power_ons: int = 0
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


def _parse(stdout: str) -> tuple[int, ...]:
    m = _LINE.search(stdout)
    return tuple(int(g) for g in m.groups()) if m else (0, 0, 0, -1, 0, 0)  # killed before printing


_U32 = 0xFFFFFFFF
ENERGY_UNIT_J = 1e-12           # the host harness's energy unit (fm_intermittent -e, -m, -c)


def energy_units(joules: float) -> int:
    """Joules as the harness's integer energy units (pJ, rounded, clamped to 0 .. 2^32 - 1).

    Example::

        from freeml_keras.runtime.intermittent import energy_units
        print(energy_units(3.5e-10), energy_units(1.0))          # 350 4294967295
    """
    return min(max(int(round(float(joules) / ENERGY_UNIT_J)), 0), _U32)


def exit_options(*, stop_at_exit: int | None = None, thresholds: bool = False,
                 energy_j: float | None = None, energy_per_mac_j: float = 0.0,
                 energy_per_cycle_j: float = 0.0) -> list[str]:
    """Harness options for the anytime exit: stop at an exit (``fm_exit_now``), stop by the
    metadata's confidence thresholds, or by a (constant) energy reading and the price of the work
    to the next exit: ``energy_per_cycle_j`` (J per unit of the metadata's cost table) when the
    model's metadata (version 2) has a cost for every operator that runs and it is > 0, otherwise
    ``energy_per_mac_j``. The runtime takes them as integer pJ
    (:func:`energy_units`). :func:`freeml_keras.runtime.exit_decision.predicted_exit` takes the
    same settings and predicts the exit with the stop rule of :mod:`freeml_keras.exits`."""
    opts: list[str] = []
    if stop_at_exit is not None:
        opts += ["-x", str(stop_at_exit)]
    if thresholds:
        opts.append("-T")
    if energy_j is not None:
        opts += ["-e", str(energy_units(energy_j)), "-m", str(energy_units(energy_per_mac_j))]
        if energy_units(energy_per_cycle_j):
            opts += ["-c", str(energy_units(energy_per_cycle_j))]
    return opts


def run_uninterrupted(model_bytes: bytes, x_int8: np.ndarray, *, granularity: int | None = None,
                      step_work: int | None = None, options: list[str] | tuple[str, ...] = (),
                      dump_exit_tensor: bool = False,
                      workdir: str | Path | None = None, nvm: str | Path | None = None) -> tuple[np.ndarray, dict]:
    """Output (the model's, or the exit's int8 logits) and counts (units, commits, checkpoint
    bytes, exit, seconds; with ``dump_exit_tensor`` the stopping exit's main tensor) of one run
    without failures. Atomic steps: see :func:`step_options`; ``options``: see
    :func:`exit_options`; ``nvm``: see :func:`run_with_power_failures`."""
    tool = harness_path()
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        d = Path(d)
        (d / "m.tflite").write_bytes(model_bytes)
        (d / "x.bin").write_bytes(np.ascontiguousarray(x_int8, np.int8).tobytes())
        t0 = time.perf_counter()
        dump = ["-X", str(d / "exit.bin")] if dump_exit_tensor else []
        r = subprocess.run([str(tool), str(d / "m.tflite"), str(nvm or d / "nvm"), "new", str(d / "x.bin"),
                            *step_options(granularity, step_work), "-o", str(d / "y.bin"), *options, *dump],
                           capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"harness exit {r.returncode}: {r.stderr.strip()}")
        units, commits, ckpt, exit_index, _warm, work_ns = _parse(r.stdout)
        out = np.frombuffer((d / "y.bin").read_bytes(), np.int8).copy()
        info = {"units": units, "commits": commits, "checkpoint_bytes": ckpt, "exit": exit_index,
                "seconds": seconds, "work_ns": work_ns}
        if dump_exit_tensor and (d / "exit.bin").exists():
            info["exit_tensor"] = np.frombuffer((d / "exit.bin").read_bytes(), np.int8).copy()
    return out, info


def run_with_power_failures(model_bytes: bytes, x_int8: np.ndarray, *, granularity: int | None = None,
                            step_work: int | None = None, seed: int = 0, max_failures: int = 20,
                            time_fraction: float = 0.3, options: list[str] | tuple[str, ...] = (),
                            workdir: str | Path | None = None, harness: Path | None = None,
                            nvm: str | Path | None = None) -> FailureReport:
    """Run one inference, killing it up to ``max_failures`` times (failures inside the inference;
    ones that land outside it are injected again) and resuming after every kill, until it
    completes. Returns the output and counts. A fraction ``time_fraction`` of the failures are
    timed (a delay drawn within the inference's measured duration), the others land at a byte
    of the NVM writes (checkpoint commits, and the prepared image's seal when a power-on
    prepares). Atomic steps: see :func:`step_options`. ``harness``: another build of it (the
    sanitized one, ``make_host("intermittent_asan", ...)``). ``nvm``: the device's NVM file, kept
    from call to call (a stream of inferences of a model with state: its resource variables
    live there with the arena); by default a fresh one per call."""
    tool = harness or harness_path()
    rng = np.random.default_rng(seed)
    _, ref = run_uninterrupted(model_bytes, x_int8, granularity=granularity, step_work=step_work,
                               options=options, workdir=workdir)
    record_bytes = ref["checkpoint_bytes"] // max(ref["commits"], 1)
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        d = Path(d)
        model, x, y, stats = d / "m.tflite", d / "x.bin", d / "y.bin", d / "stats"
        nvm = Path(nvm) if nvm is not None else d / "nvm"
        model.write_bytes(model_bytes)
        x.write_bytes(np.ascontiguousarray(x_int8, np.int8).tobytes())
        rep = FailureReport(output=np.zeros(0, np.int8), units_total=ref["units"])
        # How long a warm power-on takes to finish the inference: the range of the timed kills
        # (the reference run above prepared from scratch, which later power-ons do not).
        base = [str(tool), str(model), str(d / "warm"), "new", str(x), *step_options(granularity, step_work),
                *options]
        subprocess.run(base, capture_output=True, text=True)
        warm_ns = _parse(subprocess.run(base, capture_output=True, text=True).stdout)[5] or ref["work_ns"]
        started = False
        running = False        # this inference's start is committed (a run got past it)
        attempts = 0
        while True:
            inject = rep.failures < max_failures and attempts < 20 * max_failures
            cmd = [str(tool), str(model), str(nvm)] + (["resume"] if started else ["new", str(x)])
            cmd += [*step_options(granularity, step_work), "-o", str(y), "-t", str(stats), *options]
            by_time = inject and rng.random() < time_fraction
            if by_time:
                span = ref["work_ns"] if not started else warm_ns
                cmd += ["-K", str(int(rng.integers(1, max(span, 2))))]
            elif inject and rng.random() < 0.2:
                # a byte of the prepared image's seal (effective when this power-on prepares:
                # the first one, or after a seal torn before)
                cmd += ["-j", str(int(rng.integers(1, _SEAL_BYTES + 5)))]
            elif inject:
                # a byte within the next few commits (a new run first writes an idle record,
                # the input and the start record)
                setup = 0 if started else np.asarray(x_int8).size + 2 * record_bytes
                cmd += ["-k", str(int(rng.integers(1, setup + 4 * record_bytes + 1)))]
            attempts += inject
            proc = subprocess.run(cmd, capture_output=True, text=True)
            rep.runs += 1
            rep.exit = _parse(proc.stdout)[3] if proc.stdout else rep.exit
            phase = None
            units = 0
            if stats.exists() and stats.stat().st_size >= 56:
                units, commits, ckpt, phase, warm, power_ons, began = \
                    np.frombuffer(stats.read_bytes()[:56], np.uint64).tolist()
                running = running or bool(began)
                units = int(units)
                rep.units_run += units
                rep.commits += int(commits)
                rep.checkpoint_bytes_written += int(ckpt)
                rep.warm_restarts += int(warm)
                rep.power_ons += int(power_ons)
                stats.unlink()
            if proc.returncode == -signal.SIGKILL:
                where = PHASES.get(int(phase), "setup") if phase is not None else "setup"
                rep.failures_by_phase[where] += 1
                if where in INSIDE:
                    rep.failures += 1
                    rep.failures_by_time += by_time
                    rep.failures_in_commits += where == "commit"
                else:
                    rep.failures_outside += 1
                # killed before the power-on of a new run: nothing of it reached NVM; otherwise
                # resume (exit 3 below when no inference was committed yet)
                started = started or where != "setup"
                continue
            if proc.returncode == 3:       # killed before the start was committed: new input
                started = False
                rep.restarts_without_progress += 1
                continue
            if proc.returncode != 0:
                raise RuntimeError(f"harness exit {proc.returncode}: {proc.stderr.strip()}")
            if not running and units == 0:
                # "done" with nothing run, and this inference never seen running: the answer of
                # the previous inference in this NVM (this one's start was not committed)
                started = False
                rep.restarts_without_progress += 1
                continue
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


def plan(model_bytes: bytes, *, granularity: int | None = None, step_work: int | None = None,
         step_cost: int | None = None) -> dict:
    """The runtime's plan for one inference, as the device makes it at preparation: operators
    (code, units, ``step_units``: most units per step, ``unit_cost``: the metadata's cost of one
    unit, 0 when unknown), atomic steps (``op``, ``unit`` where the step starts, ``units``,
    ``work`` in MAC-equivalents, ``cost`` in the metadata's unit; a step of 0 units only passes
    alias operators), the largest atomic step (by cost in cost mode, else by work) and the
    checkpoint record size; ``mode``: ``cost`` (the default when the model's metadata has a
    complete per-operator cost table: at most ``step_cost``, default FM_DEFAULT_STEP_COST, per
    step), ``work`` or ``units`` (see :func:`step_options`)."""
    tool = harness_path()
    opts = step_options(granularity, step_work) + (["-S", str(int(step_cost))] if step_cost is not None else [])
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "m.tflite").write_bytes(bytes(model_bytes))
        r = subprocess.run([str(tool), str(Path(d) / "m.tflite"), str(Path(d) / "nvm"), "plan", *opts],
                           capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"harness exit {r.returncode}: {r.stderr.strip()}")
    ops = [dict(zip(("op", "code", "units", "step_units", "unit_cost"), map(int, m)))
           for m in re.findall(r"^op=(\d+) code=(-?\d+) units=(\d+) step_units=(\d+) unit_cost=(\d+)$",
                               r.stdout, re.M)]
    steps = [dict(zip(("op", "unit", "units", "work", "cost"), map(int, m)))
             for m in re.findall(r"^step=\d+ op=(\d+) unit=(\d+) units=(\d+) work=(\d+) cost=(\d+)$",
                                 r.stdout, re.M)]
    m = re.search(r"largest_step=(\d+) op=(\d+) record_bytes=(\d+) largest_step_work=(\d+) "
                  r"largest_step_op=(\d+) steps=(\d+) largest_step_cost=(\d+) mode=(\w+)", r.stdout)
    big, big_op, rec, big_work, big_work_op, n, big_cost = map(int, m.groups()[:7])
    return {"ops": ops, "steps": steps, "largest_step_units": big, "largest_step_op": big_op,
            "largest_step_work": big_work, "largest_step_work_op": big_work_op, "record_bytes": rec,
            "largest_step_cost": big_cost, "mode": m.group(8)}


def atomic_steps(model_bytes: bytes, *, granularity: int | None = None, step_work: int | None = None,
                 cycles_per_mac: float = 30.0, cycles_per_unit: float = 200.0,
                 cost_table: dict[int, float] | None = None) -> list[AtomicStep]:
    """The steps the runtime runs for one inference (:func:`plan`), with cycle costs:
    ``cost_table`` (cycles per unit of each operator index), else the per-operator costs in the
    model's freeml metadata (version 2, converted with a target: see :mod:`freeml_keras.costs`),
    else the analytical model ``MACs x cycles_per_mac + units x cycles_per_unit`` (MACs of the
    stored non-zero weights). Exit points are marked from the metadata (the exit a step
    completes, alias operators passed after it included)."""
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


def run_on_periods(model_bytes: bytes, x_int8: np.ndarray, *, on_period: int, restart: int, commit: int = 0,
                   max_power_ons: int = 1000, workdir: str | Path | None = None) -> dict:
    """Run one inference on fixed on-periods, in the metadata cost table's unit: every power-on
    pays ``restart``, then each atomic step its planned cost plus ``commit`` while the
    on-period lasts; the step it cannot pay runs and loses its power inside its commit. Stops
    when the inference completes or after ``max_power_ons``. Returns ``done``, ``output``,
    ``power_ons`` and ``units_run`` (a livelock: power-ons that never finish)."""
    tool = harness_path()
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        d = Path(d)
        (d / "m.tflite").write_bytes(bytes(model_bytes))
        (d / "x.bin").write_bytes(np.ascontiguousarray(x_int8, np.int8).tobytes())
        budget = ["-W", str(int(on_period)), "-R", str(int(restart)), "-C", str(int(commit))]
        units = 0
        for n in range(1, max_power_ons + 1):
            mode = ["new", str(d / "x.bin")] if n == 1 else ["resume"]
            r = subprocess.run([str(tool), str(d / "m.tflite"), str(d / "nvm"), *mode, "-o", str(d / "y.bin"),
                                *budget], capture_output=True, text=True)
            units += _parse(r.stdout)[0]
            if r.returncode == 0:
                return {"done": True, "output": np.frombuffer((d / "y.bin").read_bytes(), np.int8).copy(),
                        "power_ons": n, "units_run": units}
            if r.returncode not in (-signal.SIGKILL, 4):
                raise RuntimeError(f"harness exit {r.returncode}: {r.stderr.strip()}")
        return {"done": False, "output": None, "power_ons": max_power_ons, "units_run": units}
