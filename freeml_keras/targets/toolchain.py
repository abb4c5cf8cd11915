"""Build C programs for the project's microcontroller targets and run them under emulators.

Two targets (see ``tflm_port/targets/README.md``):

- ``"cortex_m4"``: ``arm-none-eabi-gcc`` for the Cortex-M4F, run with ``qemu-system-arm -M
  mps2-an386`` and semihosting; the project's TCG plugin counts executed instructions (total,
  per function symbol, and at every entry of ``fm_target_mark``).
- ``"msp430"``: ``clang --target=msp430`` + ``ld.lld`` for the MSP430FR5994, run with ``mspdebug
  sim``; its tracer reports instructions and MCLK cycles, read at every ``fm_target_mark``.

``build(target, name, sources, out_dir)`` makes an ELF, ``run(target, elf)`` runs it and returns a
``RunResult`` (program output, exit status, counts), ``code_size(target, elf)`` gives text / data /
bss. ``freeml_keras.targets.runs`` builds the runtime's programs on top of these. A missing tool
raises ``ToolMissingError`` naming the Debian package to install.
"""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Sequence

from freeml_keras.runtime.build import SOURCE_DIR, TARGETS_DIR, build_dir, source_key

__all__ = ["TARGETS", "TARGETS_DIR", "RUNTIME_DIR", "APT_PACKAGES", "ToolMissingError", "TargetRunError",
           "memory_overflow", "RunResult", "check_tools", "build", "run", "code_size", "symbol_address",
           "plugin_path"]

RUNTIME_DIR = SOURCE_DIR
TARGETS = ("cortex_m4", "msp430")

# tool -> Debian package, per target (what `make` and `run` call)
_TOOLS: dict[str, dict[str, str]] = {
    "cortex_m4": {"make": "make", "gcc": "gcc", "arm-none-eabi-gcc": "gcc-arm-none-eabi",
                  "arm-none-eabi-nm": "binutils-arm-none-eabi",
                  "arm-none-eabi-size": "binutils-arm-none-eabi",
                  "qemu-system-arm": "qemu-system-arm"},
    "msp430": {"make": "make", "clang": "clang", "ld.lld": "lld", "llvm-nm": "llvm",
               "llvm-size": "llvm", "mspdebug": "mspdebug"},
}
# Everything both targets need, for CI's apt-get (newlib has no tool of its own to look for).
APT_PACKAGES = ("gcc-arm-none-eabi", "libnewlib-arm-none-eabi", "qemu-system-arm", "clang", "lld", "llvm",
                "mspdebug")
_NEWLIB_CHECK = Path("/usr/lib/arm-none-eabi/newlib")


class ToolMissingError(RuntimeError):
    """A program a target needs is not installed; the message names the Debian package."""


class TargetRunError(RuntimeError):
    """A build failed, or a program crashed, timed out or did not reach its end."""


_OVERFLOW = re.compile(r"section '(\S+)' will not fit in region '(\w+)': overflowed by (\d+) bytes")


def memory_overflow(message: str) -> dict[str, int] | None:
    """The linker's overflow per memory region (bytes over) in a failed build's message, or
    None when the build did not fail for lack of memory."""
    over: dict[str, int] = {}
    for _, region, n in _OVERFLOW.findall(message):
        over[region] = max(over.get(region, 0), int(n))
    return over or None


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")


def check_tools(target: str) -> None:
    """Raise ``ToolMissingError`` if a program ``target`` needs is missing."""
    _check_target(target)
    missing = {tool: pkg for tool, pkg in _TOOLS[target].items() if shutil.which(tool) is None}
    if target == "cortex_m4" and not _NEWLIB_CHECK.exists():
        missing["newlib (memcpy, memset)"] = "libnewlib-arm-none-eabi"
    if missing:
        pkgs = sorted(set(missing.values()))
        raise ToolMissingError(
            f"target {target}: {', '.join(missing)} not found; install with "
            f"`apt-get install --no-install-recommends {' '.join(pkgs)}` (CI: `make setup` as root)")


def plugin_path(out_dir: Path | None = None) -> Path:
    """The instruction-counting QEMU plugin, built with gcc when missing or out of date."""
    out = Path(out_dir) if out_dir else build_dir("qemu_plugin", source_key(TARGETS_DIR / "qemu_plugin"))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".build.lock", "w") as lock:       # parallel test workers build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        _make(TARGETS_DIR / "qemu_plugin", {"OUT": str(out)}, what="the QEMU plugin")
    return out / "libinsn_count.so"


def _make(directory: Path, variables: Mapping[str, str], what: str) -> None:
    args = ["make", "-s", "-C", str(directory)] + [f"{k}={v}" for k, v in variables.items()]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise TargetRunError(f"building {what} failed ({' '.join(args)}):\n{r.stdout}{r.stderr}")


def build(target: str, name: str, sources: Sequence[str | Path], out_dir: str | Path, *,
          include_dirs: Iterable[str | Path] = (), defines: Mapping[str, object] | None = None,
          opt: str = "-O2", options: Mapping[str, object] | None = None) -> Path:
    """Compile and link ``sources`` with the target's start-up code and helpers into
    ``out_dir/name.elf``. ``options`` are the target Makefile's switches (cortex_m4: ``DSP``;
    msp430: ``HWMULT``, ``SIM``); ``defines`` become ``-D`` flags."""
    check_tools(target)
    out = Path(out_dir).resolve()
    if re.search(r"[\s:#%$'\"{}]", str(out)):
        raise ValueError(f"build directory {out} has a character make cannot take (space : # % $ quotes braces)")
    out.mkdir(parents=True, exist_ok=True)
    variables = {
        "OUT": str(out), "NAME": name, "OPT": opt,
        "SRCS": " ".join(str(Path(s).resolve()) for s in sources),
        "INCS": " ".join(f"-I{Path(d).resolve()}" for d in include_dirs),
        "DEFS": " ".join(f"-D{k}" if v is None else f"-D{k}={v}" for k, v in (defines or {}).items()),
    }
    variables.update({k: str(v) for k, v in (options or {}).items()})
    # make tracks sources and headers, not flags: a new configuration starts from clean objects;
    # another linker script only links again (the same objects)
    stamp, ld_stamp = out / f"{name}.flags", out / f"{name}.ldscript"
    link = ("LDSCRIPT", "LDFLAGS")
    flags = repr(sorted((k, v) for k, v in variables.items() if k != "SRCS" and k not in link))
    ld_flags = repr([variables.get(k, "") for k in link])
    if not stamp.exists() or stamp.read_text() != flags:
        shutil.rmtree(out / f"{name}.obj", ignore_errors=True)
    if not ld_stamp.exists() or ld_stamp.read_text() != ld_flags:
        (out / f"{name}.elf").unlink(missing_ok=True)
    _make(TARGETS_DIR / target, variables, what=f"{name} for {target}")
    stamp.write_text(flags)
    ld_stamp.write_text(ld_flags)
    return out / f"{name}.elf"


def section_bytes(elf: Path, target: str) -> dict[str, tuple[int, int]]:
    """(bytes, address) of each allocated section of ``elf`` (``llvm-size -A``)."""
    tool = "llvm-size" if target == "msp430" else "arm-none-eabi-size"
    out = subprocess.run([tool, "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = (int(parts[1]), int(parts[2]))
    return sizes


def _nm(target: str) -> str:
    return "arm-none-eabi-nm" if target == "cortex_m4" else "llvm-nm"


def symbol_address(target: str, elf: str | Path, symbol: str, required: bool = True) -> int | None:
    """Address of ``symbol`` in ``elf`` (Thumb bit cleared); None if it is absent and not
    ``required`` (e.g. fm_target_mark in a program that never calls it)."""
    r = subprocess.run([_nm(target), str(elf)], capture_output=True, text=True, check=True)
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == symbol:
            return int(parts[0], 16) & ~1
    if required:
        raise TargetRunError(f"{elf}: no symbol {symbol}")
    return None


def code_size(target: str, elf: str | Path) -> dict[str, int]:
    """text / data / bss bytes of ``elf`` (Berkeley format of ``size``: text counts code and
    read-only data, including a model array in flash or FRAM)."""
    _check_target(target)
    tool = "arm-none-eabi-size" if target == "cortex_m4" else "llvm-size"
    r = subprocess.run([tool, "-B", str(elf)], capture_output=True, text=True, check=True)
    values = r.stdout.splitlines()[1].split()
    return {"text": int(values[0]), "data": int(values[1]), "bss": int(values[2])}


@dataclass
class RunResult:
    """What one emulated run produced.

    ``unit`` is what ``total`` and ``marks`` count: ``"instructions"`` (cortex_m4, exact) or
    ``"cycles"`` (msp430, MCLK cycles of mspdebug's simulator). ``marks`` holds the running count
    at each entry of ``fm_target_mark``; ``instructions`` / ``mark_instructions`` count
    instructions on both targets. ``symbols`` (cortex_m4) maps function name to the instructions
    executed inside it."""

    target: str
    output: str
    exit_code: int
    unit: str
    total: int
    instructions: int
    marks: list[int] = field(default_factory=list)
    mark_instructions: list[int] = field(default_factory=list)
    symbols: dict[str, int] = field(default_factory=dict)

    def lines(self, key: str) -> list[list[str]]:
        """Fields of the program's output lines ``@key f1 f2 ...``, in order."""
        out = []
        for line in self.output.splitlines():
            parts = line.strip().split()
            if parts and parts[0] == f"@{key}":
                out.append(parts[1:])
        return out

    def regions(self, instructions: bool = False) -> list[int]:
        """Counts inside each bracketed region: marks (1-0), (3-2), ... (in ``unit``, or in
        instructions with ``instructions=True``)."""
        m = self.mark_instructions if instructions else self.marks
        if len(m) % 2:
            raise TargetRunError(f"odd number of marks ({len(m)}): regions are mark pairs")
        return [m[i + 1] - m[i] for i in range(0, len(m), 2)]

    def steps(self, instructions: bool = False) -> list[int]:
        """Counts between consecutive marks."""
        m = self.mark_instructions if instructions else self.marks
        return [b - a for a, b in zip(m, m[1:])]


def run(target: str, elf: str | Path, *, max_marks: int = 256, timeout: float = 300.0,
        work_dir: str | Path | None = None) -> RunResult:
    """Run ``elf`` under the target's emulator until it exits; raise ``TargetRunError`` if it
    faults, exits non-zero-by-crash, times out, or (msp430) calls ``fm_target_mark`` more than
    ``max_marks`` times."""
    check_tools(target)
    elf = Path(elf).resolve()
    if not elf.exists():
        raise FileNotFoundError(elf)
    if target == "cortex_m4":
        return _run_qemu(elf, timeout, Path(work_dir) if work_dir else elf.parent)
    return _run_mspdebug(elf, max_marks, timeout)


def _run_qemu(elf: Path, timeout: float, work_dir: Path) -> RunResult:
    plugin = plugin_path()
    counts = work_dir / f"{elf.stem}.counts"
    counts.unlink(missing_ok=True)
    mark = symbol_address("cortex_m4", elf, "fm_target_mark", required=False)
    plugin_args = f"{plugin},out={counts}" + (f",mark={mark:#x}" if mark is not None else "")
    cmd = ["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none", "-serial", "none",
           "-semihosting-config", "enable=on,target=native", "-kernel", str(elf), "-plugin", plugin_args]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise TargetRunError(f"{elf.name}: no exit within {timeout:.0f} s under QEMU") from e
    output = r.stderr + r.stdout       # QEMU 7.2 writes semihosting console output to stderr
    if "@fault" in output:
        raise TargetRunError(f"{elf.name}: CPU fault under QEMU; output:\n{output[-2000:]}")
    if not counts.exists():
        raise TargetRunError(f"{elf.name}: QEMU wrote no counts (exit {r.returncode}):\n{r.stderr[-2000:]}")
    total, marks, symbols = 0, [], {}
    for line in counts.read_text().splitlines():
        parts = line.split()
        if parts[0] == "total":
            total = int(parts[1])
        elif parts[0] == "mark":
            marks.append(int(parts[2]))
        elif parts[0] == "symbol":
            symbols[parts[1]] = int(parts[2])
        elif parts[0] == "dropped_marks":
            raise TargetRunError(f"{elf.name}: more marks than the plugin records ({parts[1]} dropped)")
    return RunResult("cortex_m4", output, r.returncode, "instructions", total, total, marks,
                     list(marks), symbols)


MSPDEBUG_PC = re.compile(r"\(\s*PC:\s*([0-9a-fA-F]+)\)")
_R12 = re.compile(r"\(R12:\s*([0-9a-fA-F]+)\)")


class Stop(NamedTuple):
    """One stop of ``mspdebug sim`` at a breakpoint: where (``pc``), ``r12`` (the first argument
    or return value), and the tracer's executed ``instructions`` and MCLK ``cycles`` so far."""
    pc: int
    r12: int
    instructions: int
    cycles: int


def mspdebug_stops(stdout: str, halt: int | None = None) -> list[Stop]:
    """The stops in the output of ``mspdebug sim`` commands that alternate ``run`` and
    ``simio info tr`` (the register dump of each stop, then the tracer's counts), in order; up to
    the first at ``halt`` when given."""
    stops: list[Stop] = []
    pc = r12 = instr = None
    for line in stdout.splitlines():
        m = MSPDEBUG_PC.search(line)
        if m:
            pc, r12 = int(m.group(1), 16), None
        m12 = _R12.search(line)
        if m12 and pc is not None and r12 is None:
            r12 = int(m12.group(1), 16)
        if line.startswith("Instruction count:"):
            instr = int(line.split(":")[1])
        elif line.startswith("MCLK:"):
            if pc is None or instr is None:
                raise TargetRunError(f"unexpected mspdebug output:\n{stdout[-2000:]}")
            stops.append(Stop(pc, r12 if r12 is not None else 0, instr, int(line.split(":")[1])))
            if pc == halt:
                break
            pc = instr = None
    return stops


def _run_mspdebug(elf: Path, max_marks: int, timeout: float) -> RunResult:
    mark = symbol_address("msp430", elf, "fm_target_mark", required=False)
    halt = symbol_address("msp430", elf, "fm_target_halt")
    # Breakpoints at the marker and at the exit spin loop; one run + tracer read per stop. Runs
    # after the exit stop again at once (the exit is a spin loop), so extra ones are harmless.
    cmd = ["mspdebug", "-q", "sim", "simio add console con", "simio add tracer tr",
           "simio add hwmult hw", f"prog {elf}", f"setbreak {halt:#x}"]
    if mark is not None:
        cmd.append(f"setbreak {mark:#x}")
    cmd += ["run", "simio info tr"] * ((max_marks if mark is not None else 0) + 1)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise TargetRunError(f"{elf.name}: no exit within {timeout:.0f} s under mspdebug") from e
    stops = mspdebug_stops(r.stdout, halt)
    output_lines = [line for line in r.stdout.splitlines() if line.startswith("@")]
    if not stops or stops[-1][0] != halt:
        raise TargetRunError(f"{elf.name}: did not reach its exit within {max_marks} marks under mspdebug "
                             f"(exit {r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    marks = [s for s in stops[:-1] if s[0] == mark]
    code = stops[-1][1]
    code = code - 0x10000 if code & 0x8000 else code
    return RunResult("msp430", "\n".join(output_lines), code, "cycles", stops[-1][3], stops[-1][2],
                     [s[3] for s in marks], [s[2] for s in marks])

