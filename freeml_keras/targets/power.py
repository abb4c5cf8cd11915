"""Power-on to progress on the targets: the cost of a restart, and power failures that land
anywhere in a real inference (``programs/power_run.c``).

- ``measure_restart``: cycles (MSP430) or instructions (Cortex-M4) of a cold preparation and of
  a warm restart, from reset to the first resumed unit of work.
- ``provision``: the program built without preparation (``FM_PREPARE_ON_DEVICE 0``: no parsing,
  preparation or step planning on the device) and the prepared image it runs from, sealed by
  the preparing build in the emulator (MSP430); ``run_provisioned`` runs it.
- ``run_power_failures``: one inference under a seeded series of power failures.
  MSP430: ``mspdebug sim`` runs a seeded number of instructions, then the power fails: SRAM is
  overwritten with a seeded pattern, the CPU is reset (registers, PC at the reset vector), FRAM
  is kept; until the inference completes. Failures land inside kernels, inside commits (torn
  records), inside the restart itself (crt0, the warm check, a cold preparation and its seal).
  Cortex-M4: QEMU cannot be stopped and reset from outside here, so the program cuts its own
  power: a seeded countdown in its NVM write path (power lost at the k-th byte written: torn
  commits and seals), after which it restarts from main with its volatile state clobbered.

Example::

    from freeml_keras.targets import power
    costs = power.measure_restart("msp430", model_bytes, x_int8, "build/restart")
    print(costs["warm_restart"], costs["cold_init"])
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from freeml_keras.format.model import ModelLike, as_model
from freeml_keras.runtime.interpreter import Interpreter
from freeml_keras.runtime.intermittent import DEFAULT_STEP_COST, DEFAULT_STEP_WORK
from freeml_keras.targets import spill
from freeml_keras.conversion.c_export import export_c
from freeml_keras.format.prepared import ensure_prepared
from freeml_keras.targets.codegen import (c_array, check_flatbuffer_fits, model_array_bytes, model_has_exits,
                                          write_model_build_files)
from freeml_keras.targets.runs import TARGET_DEFINES, TARGET_OPT, model_sources
from freeml_keras.targets.toolchain import (TARGETS_DIR, RUNTIME_DIR, TargetRunError, build, code_size,
                                            MSPDEBUG_PC, mspdebug_stops, run, symbol_address)

__all__ = ["PowerBuild", "build_power_program", "measure_restart", "PowerFailureReport", "run_power_failures",
           "msp430_step_instructions", "PHASES", "Provisioned", "provision", "run_provisioned",
           "measure_provisioned"]

# programs/power_run.c's power_phase values: where a failure landed
PHASES = {0: "restart", 1: "restart", 2: "work", 3: "commit", 4: "done", 5: "input"}
_SRAM = (0x1C00, 0x2000)              # MSP430FR5994 SRAM: clobbered at every power failure


@dataclass
class PowerBuild:
    """A built ``power_run`` program and the sizes of its blocks (from the target itself)."""
    target: str
    elf: Path
    state_bytes: int
    arena_bytes: int
    head_state_bytes: int
    head_arena_bytes: int
    size: dict = field(default_factory=dict)


def _need_line(output: str) -> tuple[int, int, int, int] | None:
    m = re.search(r"@need (\d+) (\d+) (\d+) (\d+)", output)
    return tuple(int(g) for g in m.groups()) if m else None


def build_power_program(target: str, model: ModelLike, x: np.ndarray, out_dir: str | Path, *,
                        countdown: Sequence[int] | None = None, step_cost: int | None = None,
                        step_work: int | None = None, prepare_float: bool = False,
                        inferences: int = 1, sizes: Sequence[int] | None = None,
                        prepare_only: bool = False) -> PowerBuild:
    """Build ``power_run.c`` for ``model`` with input ``x`` on ``target`` (prepared image,
    state, arena and checkpoint in the target's NVM section; FM_PREPARE_FLOAT 0, so the model
    must carry precomputed requantization parameters). The blocks are sized by the target: a
    first build with the host's sizes reports, if they are wrong, what it needs (``@need``) and
    is rebuilt with that. ``countdown``: the Cortex-M4's in-program power failures (bytes).
    ``prepare_float``: compute the requantization parameters in floating point instead (the
    runtime before they were precomputed; for comparison). ``inferences``: how many the
    program runs one after the other (a device answering input after input). ``sizes``: the
    blocks' sizes (state, arena, head state, head arena) when known (``PowerBuild`` of the same
    model); a ``countdown`` build needs them (it cannot report what it needs). ``prepare_only``:
    the provisioning build of :func:`provision` (FM_PREPARE_ONLY, FM_EVAL_ON_DEVICE 0: it
    prepares and seals the image, runs no inference, links no kernel eval code)."""
    m = as_model(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_flatbuffer_fits(target, m)
    exits = model_has_exits(m)
    write_model_build_files(m, out, exits=exits)
    host = Interpreter(m)
    # First guesses from the host's sizes (64-bit pointers: an upper bound, about twice the
    # MSP430's); the target then reports exactly what it used and the program is rebuilt with
    # that (or what it needs when a guess was short).
    frac = 45 if target == "msp430" else 100
    if sizes is not None:
        sizes = [int(v) for v in sizes]
    elif countdown is not None:
        plain = build_power_program(target, m, x, out / "sizes", step_cost=step_cost, step_work=step_work,
                                    prepare_float=prepare_float)
        sizes = [plain.state_bytes, plain.arena_bytes, plain.head_state_bytes, plain.head_arena_bytes]
    else:
        sizes = [max(64, host.state_bytes * frac // 100), host.arena_bytes,
                 max(64, host.state_bytes * frac // 100) if exits else 0, 2048 if exits else 0]
    xi = np.ascontiguousarray(x, dtype=np.int8).ravel()
    classes = m.metadata.num_classes if exits else 0     # the checkpoint's accumulator
    cfg = (f"#define FM_STEP_COST {int(DEFAULT_STEP_COST if step_cost is None else step_cost)}ul\n"
           f"#define FM_STEP_WORK {int(DEFAULT_STEP_WORK if step_work is None else step_work)}ul\n")
    cfg += f"#define FM_INFERENCES {int(inferences)}u\n"
    if prepare_only:
        cfg += "#define FM_PREPARE_ONLY 1\n"
    if countdown is not None:
        cfg += f"#define FM_COUNTDOWN_FAILURES {{{', '.join(f'{int(k)}ul' for k in countdown) or '0ul'}}}\n"
    (out / "power_cfg.h").write_text(cfg)
    # the first unit fm_resume runs marks the end of a restart; prepare without floating point
    config = (out / "fm_kernel_config.h").read_text().replace(
        "#define FM_PREPARE_FLOAT 0", f"#define FM_PREPARE_FLOAT {int(prepare_float)}").replace(
        "#endif", "void power_first_unit(void);\n#define FM_TRACE_FIRST_UNIT() power_first_unit()\n"
        "void power_event(uint16_t code);\n#define FM_TRACE_EVENT(code) power_event(code)\n"
        + ("#define FM_EVAL_ON_DEVICE 0\n" if prepare_only else "") + "#endif")
    (out / "fm_kernel_config.h").write_text(config)
    defines = TARGET_DEFINES[target]
    sources = model_sources(exits) + [out / "registry_model.c", out / "model_data.c",
                                      TARGETS_DIR / "programs" / "power_run.c"]
    for _ in range(6):
        (out / "model_io.h").write_text(
            "/* Generated by freeml_keras.targets.power. */\n#include <stdint.h>\n"
            f"#define FM_STATE_BYTES {sizes[0]}u\n#define FM_ARENA_BYTES {sizes[1]}u\n"
            f"#define FM_HEAD_STATE_BYTES {sizes[2]}u\n#define FM_HEAD_ARENA_BYTES {sizes[3]}u\n"
            f"#define FM_CKPT_CLASSES {classes}u\n"
            + c_array("model_input", "int8_t", xi))
        if prepare_only and target == "msp430":     # part of its code in emulator memory (targets.spill)
            elf, _ = spill.build_preparing("power_run", sources, out, include_dirs=[RUNTIME_DIR / "include", out],
                                           opt=TARGET_OPT[target], defines=defines)
        else:
            elf = build(target, "power_run", sources, out, include_dirs=[RUNTIME_DIR / "include", out],
                        opt=TARGET_OPT[target], defines=defines)
        if countdown is not None:
            return PowerBuild(target, elf, *sizes, code_size(target, elf))
        r = run(target, elf, max_marks=8 + 2 * inferences, timeout=600)
        need = _need_line(r.output)
        used = re.search(r"@sizes (\d+) (\d+) (\d+) (\d+)", r.output)
        if need is None and used is None:
            raise TargetRunError(f"power_run on {target} exited with {r.exit_code}:\n{r.output[-2000:]}")
        if need is not None:       # grow what was short (0: not known yet)
            new = [max(n, s_) if n else s_ for n, s_ in zip(need, sizes)]
            if not exits:
                new[2] = new[3] = 0
            if new == sizes:
                raise TargetRunError(f"power_run on {target}: refused with blocks {sizes}:\n{r.output[-1000:]}")
        else:
            new = [max(int(used.group(k)), 4) for k in (1, 2)] + \
                  ([max(int(used.group(k)), 4) for k in (3, 4)] if exits else [0, 0])
            if new == sizes:
                if r.exit_code != 0:
                    raise TargetRunError(f"power_run on {target} exited with {r.exit_code}:\n{r.output[-2000:]}")
                return PowerBuild(target, elf, *sizes, code_size(target, elf))
        sizes = new
    raise TargetRunError(f"power_run on {target}: block sizes did not settle ({sizes})")


def _mspdebug(elf: Path, commands: list[str], timeout: float = 600.0) -> str:
    cmd = ["mspdebug", "-q", "sim", "simio add console con", "simio add tracer tr", "simio add hwmult hw",
           f"prog {elf}"] + commands
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return r.stdout


def measure_restart(target: str, model: ModelLike, x: np.ndarray, out_dir: str | Path, *,
                    prepare_float: bool = False) -> dict:
    """Costs of power-on on ``target`` (MCLK cycles on the MSP430, instructions on the M4):
    ``cold_init`` (fm_power_on preparing the model: parse, prepare, exit head, step plan, seal),
    ``warm_power_on`` (fm_power_on reusing the sealed image), ``warm_restart`` (from reset to
    the first unit of work of the resumed inference: start-up code, warm power-on, reading the
    checkpoint, planning the step), ``crt0`` (start-up code to main), and the program's
    sizes."""
    m = as_model(model)
    out = Path(out_dir)
    if target == "msp430":
        pb = build_power_program(target, m, x, out / "plain", prepare_float=prepare_float)
        mark = symbol_address(target, pb.elf, "fm_target_mark")
        halt = symbol_address(target, pb.elf, "fm_target_halt")
        info = ["run", "simio info tr"]
        cmds = [f"setbreak {mark:#x}", f"setbreak {halt:#x}"] + info * 3 + \
            [f"fill {_SRAM[0]:#x} {_SRAM[1]:#x} 0xa5 0x5a 0x3c", "reset"] + info * 3 + info * 2
        stops = mspdebug_stops(_mspdebug(pb.elf, cmds))
        if len(stops) < 6 or any(s.pc != mark for s in stops[:6]):
            raise TargetRunError(f"power_run on msp430: unexpected stops {stops[:8]}")
        c = [s.cycles for s in stops]
        return {"target": target, "unit": "cycles", "crt0_first_boot": c[0], "cold_init": c[1] - c[0],
                "crt0": c[3] - c[2], "warm_power_on": c[4] - c[3], "warm_restart": c[5] - c[2],
                "warm_restart_instructions": stops[5].instructions - stops[2].instructions, "size": pb.size,
                "state_bytes": pb.state_bytes, "arena_bytes": pb.arena_bytes,
                "head_state_bytes": pb.head_state_bytes}
    # Cortex-M4: the program cuts its power at the first byte of the first step's commit; the
    # power-on after it is the warm restart (its start-up code measured on a plain run).
    plain = build_power_program(target, m, x, out / "plain", prepare_float=prepare_float)
    r0 = run(target, plain.elf, max_marks=8)
    marks = r0.marks
    first_commit = _first_step_commit_byte(target, m)
    cd = build_power_program(target, m, x, out / "countdown", countdown=[first_commit],
                             prepare_float=prepare_float,
                             sizes=[plain.state_bytes, plain.arena_bytes, plain.head_state_bytes,
                                    plain.head_arena_bytes])
    r1 = run(target, cd.elf, max_marks=16)
    mk = r1.marks
    if len(marks) < 3 or len(mk) < 6:
        raise TargetRunError(f"power_run on cortex_m4: marks {marks} / {mk}")
    crt0 = marks[0]
    return {"target": target, "unit": "instructions", "crt0_first_boot": crt0, "crt0": crt0,
            "cold_init": marks[1] - marks[0], "warm_power_on": mk[4] - mk[3],
            "warm_restart": crt0 + (mk[5] - mk[3]), "size": plain.size, "state_bytes": plain.state_bytes,
            "arena_bytes": plain.arena_bytes, "head_state_bytes": plain.head_state_bytes}


@dataclass
class Provisioned:
    """A program that cannot prepare (``elf``, built with ``FM_PREPARE_ON_DEVICE 0``) and the NVM
    bytes it runs from: ``image`` at ``address`` (power_run.c's ``nvm_mem``: checkpoint slots,
    arena, state blocks and the prepared image, sealed by ``preparing``, the same program built
    to prepare only, in ``prepare_cycles`` MCLK cycles of its power-on). On a device the image
    is written with the firmware; in the emulator, before the first run. ``inferences``: how
    many the program runs one after the other (its FM_INFERENCES)."""
    elf: Path
    address: int
    image: bytes
    preparing: PowerBuild
    size: dict = field(default_factory=dict)
    inferences: int = 1
    prepare_cycles: int = 0


def _symbol(elf: Path, name: str) -> tuple[int, int]:
    r = subprocess.run(["llvm-nm", "-S", str(elf)], capture_output=True, text=True, check=True)
    for parts in (line.split() for line in r.stdout.splitlines()):
        if len(parts) == 4 and parts[3] == name:
            return int(parts[0], 16), int(parts[1], 16)
    raise TargetRunError(f"{elf}: no symbol {name}")


def provision(model: ModelLike, x: np.ndarray, out_dir: str | Path,
              sizes: Sequence[int] | None = None, inferences: int = 1) -> Provisioned:
    """The MSP430 power program of ``model`` without preparation code, and its prepared image:
    the provisioning build (:func:`build_power_program` with ``prepare_only``: preparation
    without the kernels' eval code, so that it fits where preparation and inference together
    would not) runs in the emulator to the end of its ``fm_power_on`` (model parsed and
    prepared, steps planned, image sealed), its NVM block is read out, and the program is built
    again with inference and ``FM_PREPARE_ON_DEVICE 0`` (the linker script places the NVM block
    and the model before the code, so both builds agree on every address the image holds).
    ``sizes``: the blocks' sizes when known (state, arena, head state, head arena; e.g. from
    :func:`freeml_keras.targets.image.predict`), for a model whose first build with the host's
    guesses would not fit. ``inferences``: how many the program runs, one after the other.

    Example::

        from freeml_keras.targets import power
        p = power.provision(model_bytes, x_int8, "build/provisioned", inferences=2)
        print(power.measure_provisioned(p)["inference"])
    """
    out = Path(out_dir)
    prep = build_power_program("msp430", model, x, out / "preparing", prepare_only=True, sizes=sizes,
                               inferences=inferences)
    mark = symbol_address("msp430", prep.elf, "fm_target_mark")
    address, size = _symbol(prep.elf, "nvm_mem")
    # marks: main's entry, after fm_power_on
    halt = symbol_address("msp430", prep.elf, "fm_target_halt")
    # then on to its end: it checks that preparation left the arena's addresses (the file's tail) alone
    text = _mspdebug(prep.elf, [f"setbreak {mark:#x}"] + ["run", "simio info tr"] * 2 + [f"md {address:#x} {size}"]
                     + [f"setbreak {halt:#x}", "run"])
    st = mspdebug_stops(text)
    if len(st) < 2 or any(s_.pc != mark for s_ in st[:2]):
        raise TargetRunError(f"the preparing build stopped at {st[:2]}, not at its two marks")
    errors = [line.strip() for line in text.splitlines() if line.startswith("@error")]
    if errors:
        raise TargetRunError(f"the preparing build failed: {errors[0]}")
    image = bytearray()
    for line in text.splitlines():
        m = re.match(r"\s*([0-9a-fA-F]+):\s+((?:[0-9a-fA-F]{2}\s)+)", line)
        if m and int(m.group(1), 16) == address + len(image):
            image += bytes(int(b, 16) for b in m.group(2).split())
    if len(image) < size:
        raise TargetRunError(f"mspdebug: read {len(image)} of the {size} bytes of the prepared image")
    m = ensure_prepared(model)
    exits = model_has_exits(m)
    for name, line in (("fm_kernel_config.h", "#define FM_EVAL_ON_DEVICE 0\n"),
                       ("power_cfg.h", "#define FM_PREPARE_ONLY 1\n")):
        f = prep.elf.parent / name
        f.write_text(f.read_text().replace(line, ""))
    # the device never parses the model: its build keeps the file's data, not its tables
    stored = model_array_bytes(m, data_only=True)
    export_c(m.data, prep.elf.parent / "model_data.h", symbol="fm_model", section=".fram", stored=stored)
    sources = model_sources(exits) + [prep.elf.parent / "registry_model.c", prep.elf.parent / "model_data.c",
                                      TARGETS_DIR / "programs" / "power_run.c"]
    elf = build("msp430", "power_run_noprep", sources, prep.elf.parent, include_dirs=[RUNTIME_DIR / "include",
                prep.elf.parent], opt=TARGET_OPT["msp430"],
                defines={**TARGET_DEFINES["msp430"], "FM_PREPARE_ON_DEVICE": 0})
    for name in ("nvm_mem", "fm_model"):      # (the model array is shorter in the build without preparation)
        if _symbol(elf, name)[0] != _symbol(prep.elf, name)[0] or (name == "nvm_mem" and _symbol(elf, name) != _symbol(prep.elf, name)):
            raise TargetRunError(f"{name} moved between the preparing build and the one without preparation")
    if exits and _symbol(elf, "head_arena")[0] != symbol_address("msp430", prep.elf, "__noinit_start"):
        raise TargetRunError("the exit head's arena of the build without preparation is not at the start of "
                             ".noinit, the address the preparing build sealed")
    # the arena follows the model's data, where the preparing build had the rest of the file
    if _symbol(elf, "pw_arena")[0] != _symbol(prep.elf, "fm_model")[0] + (stored + 15) // 16 * 16:
        raise TargetRunError("the arena of the build without preparation is not where the preparing build "
                             "left it (right after the model's data)")
    return Provisioned(elf, address, bytes(image[:size]), prep, code_size("msp430", elf), int(inferences),
                       st[1].cycles - st[0].cycles)


def _image_commands(p: Provisioned) -> list[str]:
    """mspdebug commands that write the prepared image into the emulator's FRAM (what the
    firmware image holds on a device): the non-zero 16-byte rows."""
    cmds = []
    for i in range(0, len(p.image), 16):
        chunk = p.image[i:i + 16]
        if any(chunk):
            cmds.append(f"mw {p.address + i:#x} " + " ".join(f"{b:#x}" for b in chunk))
    return cmds


def run_provisioned(p: Provisioned, with_image: bool = True) -> str:
    """Run the program without preparation under the emulator, its NVM block holding the
    prepared image (``with_image``) or nothing; its output lines (``@boots``, ``@done``, or
    ``@error power_on 3`` without an image)."""
    halt = symbol_address("msp430", p.elf, "fm_target_halt")
    text = _mspdebug(p.elf, (_image_commands(p) if with_image else []) + [f"setbreak {halt:#x}", "run"])
    return "\n".join(line for line in text.splitlines() if line.startswith("@"))


def _event_stops(p: Provisioned, after: list[str] | None = None, runs: int = 4000) -> tuple[list, dict, str]:
    """Run the provisioned program from its image, stopping at its marks, commits, exit points,
    answers and exit (``after``: commands at the ``runs``-th stop, e.g. a power failure, after
    which it runs on); the stops, the symbols' addresses and the emulator's output."""
    sym = {k: symbol_address("msp430", p.elf, n) for k, n in (("mark", "fm_target_mark"), ("halt", "fm_target_halt"),
                                                                ("event", "power_event"),
                                                                ("answered", "power_answered"))}
    brk = [f"setbreak {a:#x}" for a in sym.values()]
    cmds = _image_commands(p) + brk + ["run", "simio info tr"] * runs
    if after is not None:
        cmds += after + ["run", "simio info tr"] * 4000
    text = _mspdebug(p.elf, cmds, timeout=1800)
    return mspdebug_stops(text), sym, text


def _inference_costs(stops: list, sym: dict, start: int) -> dict:
    """From stop ``start`` (the end of fm_power_on) to the next answer: its cycles, the commits'
    cycles and count, the largest step (from the end of one commit, or the first unit, to the
    end of the next: what one on-period must hold to make progress), the cycles to each exit
    point (the head's accumulation and decision included), and the stops of the commits' ends."""
    commit, commits, ends, to_exit, end = None, [], [], {}, None
    first = next((i for i in range(start + 1, len(stops)) if stops[i].pc == sym["mark"]), None)
    for i in range(start + 1, len(stops)):
        s_ = stops[i]
        if s_.pc == sym["answered"]:
            end = s_
            break
        if s_.pc == sym["event"]:
            if s_.r12 == 1:
                commit = s_.cycles
            elif s_.r12 == 2 and commit is not None:
                commits.append(s_.cycles - commit)
                commit = None
                if first is not None and i > first:
                    ends.append(i)
            elif s_.r12 >= 0x100:
                to_exit[s_.r12 - 0x100] = s_.cycles - stops[start].cycles
    if end is None or first is None or not ends:
        raise TargetRunError("the provisioned program gave no answer under mspdebug")
    bounds = [stops[first].cycles] + [stops[i].cycles for i in ends]
    return {"inference": end.cycles - stops[start].cycles, "commit_cycles": sum(commits), "commits": len(commits),
            "largest_commit": max(commits, default=0),
            "largest_step": max(b - a for a, b in zip(bounds, bounds[1:])),
            "to_exit": [to_exit[e] for e in sorted(to_exit)], "step_ends": ends}


def measure_provisioned(p: Provisioned) -> dict:
    """MCLK cycles on the MSP430 of the provisioned program (:func:`provision`), running from its
    prepared image under ``mspdebug sim``, as a batteryless device runs it:

    - ``inference``: after power-on, an inference from writing its input to its answer, with
      its checkpoint commits and the exit head's work at each exit point; ``commit_cycles`` and
      ``commits`` of it, and ``checkpoint_overhead`` = commit cycles / the rest; ``steps`` and
      ``largest_step`` (the cycles one on-period must hold, beside the restart, to progress);
    - ``to_exit``: from the same start to each exit point accumulated and decided (the exit
      head's cycles included);
    - ``power_on``: reset to the end of the warm ``fm_power_on`` (start-up code, image check);
      ``warm_restart``: a power failure in the middle of the inference (after a commit, SRAM
      clobbered, reset) to the first resumed unit of work; the inference resumed there ends
      with the same answer (``restart_answer_equal``);
    - ``prepare_cycles``: the preparing build's power-on in the emulator (what the device is
      spared).

    Example::

        from freeml_keras.targets import power
        p = power.provision(model_bytes, x_int8, "build/provisioned")
        c = power.measure_provisioned(p)
        print(c["inference"], c["to_exit"], c["warm_restart"])
    """
    stops, sym, text = _event_stops(p)
    marks = [i for i, s_ in enumerate(stops) if s_.pc == sym["mark"]]
    if len(marks) < 3:
        raise TargetRunError(f"the provisioned program stopped at {len(marks)} marks, not 3")
    costs = _inference_costs(stops, sym, marks[1])
    # a power failure after the middle commit of the same inference
    ends = costs.pop("step_ends")
    cut = ends[len(ends) // 2]
    again, _, text2 = _event_stops(p, [f"fill {_SRAM[0]:#x} {_SRAM[1]:#x} 0xa5 0x5a 0x3c", "reset"], runs=cut + 1)
    marks_after = [s_ for s_ in again[cut + 1:] if s_.pc == sym["mark"]]
    if len(marks_after) < 3:
        raise TargetRunError("the provisioned program did not resume after the power failure")
    answers, resumed = _done_lines(text), _done_lines(text2)
    rest = costs["inference"] - costs["commit_cycles"]
    return {"unit": "cycles", **costs, "checkpoint_overhead": costs["commit_cycles"] / rest if rest else None,
            "power_on": stops[marks[1]].cycles, "warm_restart": marks_after[2].cycles - again[cut].cycles,
            "restarted_after_step": len([e for e in ends if e <= cut]), "steps": len(ends),
            "prepare_cycles": p.prepare_cycles, "code_bytes": p.size, "answer": answers[0] if answers else None,
            "restart_answer_equal": bool(answers) and resumed[:1] == answers[:1]}


def _seal_bytes(target: str) -> int:
    """Bytes of fm_seal (fm_persist.h) up to and with its tag on the target: 13 u32 and 6
    pointers (no padding on either target)."""
    return 13 * 4 + 6 * (2 if target == "msp430" else 4)


def _first_step_commit_byte(target: str, model: ModelLike) -> int:
    """The NVM byte (counted from a cold power-on) at which the first step's commit starts in a
    new inference: the prepared image's seal, the idle record, the input and the start record
    come first."""
    m = as_model(model)
    md = m.metadata
    record = 16 + 4 * (md.num_classes if md is not None and md.exits else 0)
    sg = m.parsed.subgraphs[0]
    return _seal_bytes(target) + 2 * record + int(np.prod(sg.tensors[int(sg.inputs[0])].shape)) + 1


def _crt0_end(elf: Path) -> int:
    """The address after the MSP430 start-up code (the next symbol after ``_start``)."""
    r = subprocess.run(["llvm-nm", "-n", str(elf)], capture_output=True, text=True, check=True)
    addrs = [int(l.split()[0], 16) for l in r.stdout.splitlines() if len(l.split()) == 3]
    start = symbol_address("msp430", elf, "_start")
    later = sorted(a for a in addrs if a > start)
    return later[0] if later else start + 64


@dataclass
class PowerFailureReport:
    """Inferences on a target under power failures: every answer given (``outputs``: exit
    index and int8 values), the failures by where they landed (``restart``, ``work``,
    ``commit``; ``done``/``input`` are outside an inference), the power-ons and how many of
    them reused the prepared image."""
    target: str
    outputs: list
    failures_by_phase: dict
    power_ons: int
    warm_power_ons: int
    method: str

    @property
    def failures(self) -> int:
        return sum(self.failures_by_phase.get(k, 0) for k in ("restart", "work", "commit"))

    def to_dict(self) -> dict:
        return {**asdict(self), "failures": self.failures}


def _boots(output: str) -> tuple[int, int]:
    lines = [l.split() for l in output.splitlines() if l.startswith("@boots")]
    return (int(lines[-1][1]), int(lines[-1][2])) if lines else (0, 0)


def _done_lines(output: str) -> list[tuple[int, list[int]]]:
    out = []
    for line in output.splitlines():
        if line.startswith("@done"):
            f = line.split()[1:]
            out.append((int(f[0]), [int(v) for v in f[1:]]))
    return out


def msp430_step_instructions(model: ModelLike, x: np.ndarray, out_dir: str | Path) -> dict:
    """Executed instructions on the MSP430 of a warm restart (reset to the first resumed unit)
    and of every atomic step of one inference, each with its commit (from one NVM write entry to
    the next): what one on-period must pay to make progress."""
    m = as_model(model)
    pb = build_power_program("msp430", m, x, Path(out_dir) / "n2", inferences=2)
    mark = symbol_address("msp430", pb.elf, "fm_target_mark")
    halt = symbol_address("msp430", pb.elf, "fm_target_halt")
    write = symbol_address("msp430", pb.elf, "nvm_write")
    st = mspdebug_stops(_mspdebug(pb.elf, [f"setbreak {mark:#x}", f"setbreak {halt:#x}", f"setbreak {write:#x}"]
                                  + ["run", "simio info tr"] * 4000))
    firsts = [i for i, s_ in enumerate(st) if s_.pc == mark]
    # the second inference: from its first unit to its answer, commit entries in between
    after = st[firsts[-1]:]
    end = next((i for i, s_ in enumerate(after) if s_.pc == halt), len(after))
    second = [s_ for s_ in after[:end + 1] if s_.pc in (write, halt)]
    starts = [st[firsts[-1]].instructions] + [s_.instructions for s_ in second]
    steps = [b - a for a, b in zip(starts, starts[1:])]
    warm = measure_restart("msp430", m, x, Path(out_dir) / "restart")
    return {"restart": int(warm["warm_restart_instructions"]), "steps": steps, "largest_step": max(steps)}


def run_power_failures(target: str, model: ModelLike, x: np.ndarray, out_dir: str | Path, *,
                       failures: int = 50, seed: int = 0, inferences: int | None = None,
                       span: int | None = None, in_commits: bool = False, on_period: int | None = None,
                       final_run: bool = True, provisioned: Provisioned | None = None) -> PowerFailureReport:
    """``inferences`` inferences of ``model`` (input ``x`` each time, one after the other, as a
    device answering input after input) on ``target``, interrupted by ``failures`` seeded power
    failures and resumed after each (see the module doc for how each target cuts the power).
    MSP430: each on-period runs a number of instructions drawn uniformly from [1, ``span``]
    (default: a third of one inference, so that the failures keep landing in inferences:
    ``inferences`` defaults to one per five failures); SRAM gets a seeded pattern at each
    failure. Cortex-M4: each power-on loses power at a byte drawn from [1, ``span``] of its
    NVM writes (default: twice what a new inference writes before its first step).
    ``in_commits`` (MSP430): each on-period runs to the entry of one of the next few NVM writes
    (the program's write callback, a breakpoint) and then 1 to 80 instructions into it: power
    failures inside commits, torn records. ``on_period`` (MSP430): every on-period runs exactly
    that many instructions (the first one also pays the cold preparation); ``final_run=False``
    leaves out the last, uninterrupted on-period (to see whether the on-periods alone
    progress). ``provisioned`` (MSP430): run that program (:func:`provision`, built for its own
    number of inferences) from its prepared image instead of a program that prepares on the
    device. ``outputs`` holds every answer given."""
    rng = np.random.default_rng(seed)
    if provisioned is not None:
        if target != "msp430" or (inferences is not None and inferences != provisioned.inferences):
            raise ValueError(f"a provisioned program runs on the msp430, {provisioned.inferences} inferences")
        inferences = provisioned.inferences
    if inferences is None:
        inferences = max(2, failures // 5)
    m = as_model(model)
    out = Path(out_dir)
    if target == "msp430":
        if provisioned is None:
            elf = build_power_program(target, m, x, out / f"n{inferences}", inferences=inferences).elf
            load: list[str] = []
        else:
            elf, load = provisioned.elf, _image_commands(provisioned)
        halt = symbol_address(target, elf, "fm_target_halt")
        mark = symbol_address(target, elf, "fm_target_mark")
        phase_at = symbol_address(target, elf, "power_phase")
        crt0 = (symbol_address(target, elf, "_start"), _crt0_end(elf))
        # An uninterrupted run, stopping at every mark: power-on entry, after fm_power_on (the cold
        # preparation), then the first unit of each inference; and at each answer, before it is
        # printed: instructions of the preparation and of one inference's own work.
        answered = symbol_address(target, elf, "power_answered")
        st = mspdebug_stops(_mspdebug(elf, load + [f"setbreak {mark:#x}", f"setbreak {halt:#x}",
                                                   f"setbreak {answered:#x}"]
                                      + ["run", "simio info tr"] * (2 * inferences + 4)))
        firsts = [s_.instructions for s_ in st if s_.pc == mark][2:]
        answers = [s_.instructions for s_ in st if s_.pc == answered]
        if len(firsts) < 2 or not answers:
            raise TargetRunError(f"power_run on msp430: {len(firsts)} first units and {len(answers)} answers "
                                 "in an uninterrupted run")
        prepared = firsts[0]
        if span is None:      # about three failures per inference (its work, not the printing)
            span = max((answers[0] - firsts[0]) // 3, 100)
        # the first on-period pays the cold preparation (a charge that cannot never prepares: see
        # freeml inspect), then it and every later one run a seeded number of instructions
        cmds: list[str] = load + [f"setbreak {halt:#x}"]
        if in_commits:
            cmds += [f"step {prepared}", f"setbreak {symbol_address(target, elf, 'nvm_write'):#x}"]
        for i in range(failures):
            pattern = " ".join(f"{int(b):#04x}" for b in rng.integers(0, 256, 4))
            if in_commits:
                cmds += ["run"] * int(rng.integers(1, 4)) + [f"step {int(rng.integers(1, 81))}"]
            else:
                n = int(on_period) if on_period is not None else int(rng.integers(1, span + 1))
                cmds += [f"step {n + (prepared if i == 0 else 0)}"]
            cmds += [f"md {phase_at:#x} 2", f"fill {_SRAM[0]:#x} {_SRAM[1]:#x} {pattern}", "reset"]
        if in_commits:
            cmds.append("delbreak 1")
        if final_run:
            cmds += ["run", "simio info tr"]
        text = _mspdebug(elf, cmds, timeout=1800)
        # where each failure landed: the PC of the last register dump before each phase read
        md_line = re.compile(rf"^\s*{phase_at:05x}:\s+([0-9a-f]{{2}})")
        landed, pc = [], None
        for line in text.splitlines():
            mm = MSPDEBUG_PC.search(line)
            if mm:
                pc = int(mm.group(1), 16)
            mm = md_line.match(line)
            if mm and pc is not None:
                landed.append((pc, int(mm.group(1), 16)))
        if len(landed) != failures:
            raise TargetRunError(f"mspdebug: {len(landed)} phase reads for {failures} failures")
        by_phase = {k: 0 for k in ("restart", "work", "commit", "done", "input")}
        for pc, ph in landed:
            if pc == halt:
                where = "done"                      # the program had finished
            elif crt0[0] <= pc < crt0[1]:
                where = "restart"
            else:
                where = PHASES.get(ph, "restart")
            by_phase[where] += 1
        ons, warm = _boots(text)
        return PowerFailureReport(target, _done_lines(text), by_phase, ons, warm,
                                  "mspdebug: step N instructions, SRAM filled with a seeded pattern, reset")
    if span is None:
        span = 2 * _first_step_commit_byte(target, m)
    countdown = [int(k) for k in rng.integers(1, span + 1, failures)]
    pb = build_power_program(target, m, x, out / f"countdown-{seed}", countdown=countdown, inferences=inferences)
    r = run(target, pb.elf, max_marks=0)
    f = [l.split() for l in r.output.splitlines() if l.startswith("@failures")]
    if r.exit_code != 0 or not f:
        raise TargetRunError(f"power_run on cortex_m4 exited with {r.exit_code}:\n{r.output[-2000:]}")
    counts = [int(v) for v in f[-1][1:]]
    by_phase = {"restart": counts[1] + counts[2], "work": counts[3], "commit": counts[4],
                "done": counts[5], "input": counts[6]}
    ons, warm = _boots(r.output)
    return PowerFailureReport(target, _done_lines(r.output), by_phase, ons, warm,
                              "in-program countdown: power lost at the k-th NVM byte written after a power-on")
