"""Build C programs for the project's microcontroller targets and run them under emulators.

Two targets (see ``tflm_port/targets/README.md``):

- ``"cortex_m4"``: ``arm-none-eabi-gcc`` for the Cortex-M4F, run with ``qemu-system-arm -M
  mps2-an386`` and semihosting; the project's TCG plugin counts executed instructions (total,
  per function symbol, and at every entry of ``fm_target_mark``).
- ``"msp430"``: ``clang --target=msp430`` + ``ld.lld`` for the MSP430FR5994, run with ``mspdebug
  sim``; its tracer reports instructions and MCLK cycles, read at every ``fm_target_mark``.

``build(target, name, sources, out_dir)`` makes an ELF, ``run(target, elf)`` runs it and returns a
``RunResult`` (program output, exit status, counts), ``code_size(target, elf)`` gives text / data /
bss. On top of these: ``run_dot_cases`` (the int8 MAC inner loops), ``run_model`` (one inference
of a .tflite with the tflm_port runtime, per operator) and ``run_checkpointed`` (the same with
checkpoints in non-volatile memory). A missing tool raises ``ToolMissingError`` naming the Debian
package to install.
"""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

__all__ = ["TARGETS", "TARGETS_DIR", "RUNTIME_DIR", "APT_PACKAGES", "ToolMissingError", "TargetRunError",
           "memory_overflow",
           "RunResult", "check_tools", "build", "run", "code_size", "symbol_address", "plugin_path", "c_array",
           "DotRun", "run_dot_cases", "model_op_names", "kernel_registry_source", "kernel_config_source",
           "model_has_exits",
           "ModelRun", "run_model",
           "CheckpointRun", "run_checkpointed", "read_cost_tables", "compressed_cnn_s", "COMPRESSED_CNN_S_BUDGET"]

TARGETS_DIR = Path(__file__).resolve().parents[1] / "tflm_port" / "targets"
RUNTIME_DIR = TARGETS_DIR.parent
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
    out = Path(out_dir) if out_dir else TARGETS_DIR / "build" / "qemu_plugin"
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
    # make tracks sources and headers, not flags: a new configuration starts from clean objects
    stamp = out / f"{name}.flags"
    flags = repr(sorted((k, v) for k, v in variables.items() if k != "SRCS"))
    if not stamp.exists() or stamp.read_text() != flags:
        shutil.rmtree(out / f"{name}.obj", ignore_errors=True)
    _make(TARGETS_DIR / target, variables, what=f"{name} for {target}")
    stamp.write_text(flags)
    return out / f"{name}.elf"


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


_PC = re.compile(r"\(\s*PC:\s*([0-9a-fA-F]+)\)")
_R12 = re.compile(r"\(R12:\s*([0-9a-fA-F]+)\)")


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
    stops: list[tuple[int, int, int, int]] = []      # pc, r12, instructions, cycles
    pc = r12 = instr = None
    output_lines = []
    for line in r.stdout.splitlines():
        m = _PC.search(line)
        if m:
            pc, r12 = int(m.group(1), 16), None
            m12 = _R12.search(line)
            if m12:
                r12 = int(m12.group(1), 16)
            continue
        m12 = _R12.search(line)
        if m12 and pc is not None and r12 is None:
            r12 = int(m12.group(1), 16)
        if line.startswith("Instruction count:"):
            instr = int(line.split(":")[1])
        elif line.startswith("MCLK:"):
            if pc is None or instr is None:
                raise TargetRunError(f"{elf.name}: unexpected mspdebug output:\n{r.stdout[-2000:]}")
            stops.append((pc, r12 if r12 is not None else 0, instr, int(line.split(":")[1])))
            if pc == halt:
                break
            pc = instr = None
        elif line.startswith("@"):
            output_lines.append(line)
    if not stops or stops[-1][0] != halt:
        raise TargetRunError(f"{elf.name}: did not reach its exit within {max_marks} marks under mspdebug "
                             f"(exit {r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    marks = [s for s in stops[:-1] if s[0] == mark]
    code = stops[-1][1]
    code = code - 0x10000 if code & 0x8000 else code
    return RunResult("msp430", "\n".join(output_lines), code, "cycles", stops[-1][3], stops[-1][2],
                     [s[3] for s in marks], [s[2] for s in marks])


def c_array(name: str, ctype: str, values: Iterable[int]) -> str:
    """A ``static const`` C array definition (integers, with a suffix that keeps 64-bit and
    unsigned constants typed right on a 16-bit-int target)."""
    suffix = {"uint64_t": "ull", "int64_t": "ll", "uint32_t": "ul", "int32_t": "l"}.get(ctype, "")
    items = []
    for v in values:
        v = int(v)
        # INT32_MIN / INT64_MIN cannot be written as a negated literal of their own type
        if ctype == "int32_t" and v == -2**31:
            items.append("(-2147483647l - 1)")
        elif ctype == "int64_t" and v == -2**63:
            items.append("(-9223372036854775807ll - 1)")
        else:
            items.append(f"{v}{suffix}")
    return f"static const {ctype} {name}[] = {{{', '.join(items) or '0'}}};\n"


@dataclass
class DotRun:
    """Results and costs of ``programs/dot_bench.c``: ``results[impl][case]`` (int32 dot
    products) and ``costs[impl][case]`` (in ``run.unit``)."""

    results: dict[str, list[int]]
    costs: dict[str, list[int]]
    run: RunResult
    elf: Path


def run_dot_cases(target: str, out_dir: str | Path, xs: Sequence[Sequence[int]], ws: Sequence[Sequence[int]],
                  offsets: Sequence[int], biases: Sequence[int],
                  options: Mapping[str, object] | None = None) -> DotRun:
    """Build and run the int8 dot-product program on ``target`` for the cases
    ``bias + sum((x + offset) * w)``, with every inner-loop implementation the build has."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lens = [len(x) for x in xs]
    if any(len(x) != len(w) for x, w in zip(xs, ws)) or not (len(xs) == len(ws) == len(offsets) == len(biases)):
        raise ValueError("xs, ws, offsets and biases must describe the same cases")
    starts = [sum(lens[:i]) for i in range(len(lens))]
    header = ("/* Generated by freeml_keras.targets.run_dot_cases. */\n#include <stdint.h>\n"
              f"#define DOT_NUM_CASES {len(lens)}\n"
              + c_array("dot_x", "int8_t", [v for x in xs for v in x])
              + c_array("dot_w", "int8_t", [v for w in ws for v in w])
              + c_array("dot_start", "uint16_t", starts) + c_array("dot_len", "uint16_t", lens)
              + c_array("dot_offset", "int16_t", offsets) + c_array("dot_bias", "int32_t", biases))
    (out / "dot_cases.h").write_text(header)
    elf = build(target, "dot_bench", [TARGETS_DIR / "programs" / "dot_bench.c"], out, include_dirs=[out],
                options=options)
    r = run(target, elf, max_marks=2 * len(lens) * 4 + 2)
    if r.exit_code != 0:
        raise TargetRunError(f"dot_bench on {target} exited with {r.exit_code}:\n{r.output[-2000:]}")
    results: dict[str, list[int]] = {}
    costs: dict[str, list[int]] = {}
    for (case, impl, value), cost in zip(r.lines("dot"), r.regions()):
        results.setdefault(impl, []).append(int(value))
        costs.setdefault(impl, []).append(cost)
    return DotRun(results, costs, r, elf)


def _runtime_kernels() -> list[str]:
    """Kernel objects the runtime defines (``fm_kernel_*`` names in its registry)."""
    text = (RUNTIME_DIR / "src" / "kernels" / "registry.c").read_text()
    return sorted(set(re.findall(r"&(fm_kernel_\w+)", text)))


def model_op_names(model_bytes: bytes, subgraphs: Iterable[int] | None = None) -> list[str]:
    """Builtin operator names used in the model's ``subgraphs`` (default: all), sorted."""
    from freeml_keras import tflite_schema as ts
    m = ts.read_model(model_bytes)
    picked = range(len(m.subgraphs)) if subgraphs is None else list(subgraphs)
    return sorted({ts.op_name(m, op.opcodeIndex) for i in picked for op in m.subgraphs[i].operators or []})


def kernel_registry_source(op_names: Iterable[str]) -> str:
    """C source of a kernel registry holding only the kernels for ``op_names``, so that the
    linker drops the others (the MSP430 has 48 KB of FRAM for code and model together)."""
    have = set(_runtime_kernels())
    names = []
    for op in sorted(set(op_names)):
        sym = "fm_kernel_" + op.lower()
        if sym not in have:
            raise ValueError(f"the runtime has no kernel for operator {op} (no {sym} in registry.c)")
        names.append(sym)
    return ("/* Generated by freeml_keras.targets: the kernels of one model. */\n"
            '#include "freeml/fm_internal.h"\n\n'
            + "".join(f"extern const fm_kernel {n};\n" for n in names)
            + "\nconst fm_kernel *const fm_kernels[] = {\n"
            + "".join(f"    &{n},\n" for n in names)
            + "};\n\nconst uint16_t fm_num_kernels = (uint16_t)(sizeof fm_kernels / sizeof fm_kernels[0]);\n")


# SparseIndexVector union type -> bytes per index (TFLite schema: Int32Vector, Uint16Vector,
# Uint8Vector)
_INDEX_VECTOR_BYTES = {1: 4, 2: 2, 3: 1}
_CSR_WIDTHS = (8, 16, 32)


def _weight_layouts(model_bytes: bytes, op: str) -> set[tuple[int, int] | None]:
    """Weight layouts of the model's ``op`` operators (all subgraphs): None for dense weights,
    (segment bits, index bits) for CSR weights (read through the DENSIFY that feeds them)."""
    from freeml_keras import tflite_schema as ts
    m = ts.read_model(model_bytes)
    layouts: set[tuple[int, int] | None] = set()
    for sg in m.subgraphs:
        producer = {o.outputs[0]: o for o in sg.operators or [] if o.outputs is not None and len(o.outputs)}
        for o in sg.operators or []:
            if ts.op_name(m, o.opcodeIndex) != op:
                continue
            t = int(o.inputs[1])
            src = producer.get(t)
            if src is not None and ts.op_name(m, src.opcodeIndex) == "DENSIFY":
                t = int(src.inputs[0])
            sp = sg.tensors[t].sparsity
            if sp is None or not sp.dimMetadata:
                layouts.add(None)
                continue
            last = sp.dimMetadata[-1]
            try:
                layouts.add((8 * _INDEX_VECTOR_BYTES[last.arraySegmentsType],
                             8 * _INDEX_VECTOR_BYTES[last.arrayIndicesType]))
            except KeyError as e:
                raise ValueError(f"{op} weight tensor {t}: unknown CSR index vector type {e}") from None
    return layouts


def model_has_exits(model_bytes: bytes) -> bool:
    """Whether the model's ``freeml`` metadata names at least one exit point (an exit head the
    intermittent runtime can accumulate)."""
    from freeml_keras.metadata import read_metadata
    md = read_metadata(model_bytes)
    return md is not None and len(md.exits) > 0


def kernel_config_source(model_bytes: bytes | None = None, *, exits: bool | None = None) -> str:
    """``fm_kernel_config.h`` for a build that runs only ``model_bytes``: the weight layouts
    (dense, CSR index widths) its CONV_2D and FULLY_CONNECTED operators use are 1, the others 0,
    so their code is not compiled (switches in ``fm_internal.h``). For an operator the model
    does not have, and for ``None`` (what a host build has), every layout is 1 (the linker
    drops kernels the registry does not name). ``FM_EXITS`` (anytime exit in the intermittent
    runtime) is ``exits`` when given, else 1 when the model's metadata has exit points (and for
    ``None``), 0 when it has none: such a build leaves out the exit head's code."""
    if exits is None:
        exits = model_bytes is None or model_has_exits(model_bytes)
    conv = _weight_layouts(model_bytes, "CONV_2D") if model_bytes is not None else set()
    fc = _weight_layouts(model_bytes, "FULLY_CONNECTED") if model_bytes is not None else set()
    lines = ["/* Generated by freeml_keras.targets.kernel_config_source: the kernel code paths of one model. */",
             "#ifndef FM_KERNEL_CONFIG_H", "#define FM_KERNEL_CONFIG_H",
             f"#define FM_CONV_DENSE {int(not conv or None in conv)}"]
    conv_index_bits = {lay[1] for lay in conv if lay is not None}
    for ib in _CSR_WIDTHS:
        lines.append(f"#define FM_CONV_SPARSE_{ib} {int(not conv or ib in conv_index_bits)}")
    fc_index_bits = {lay[1] for lay in fc if lay is not None}
    lines.append(f"#define FM_FC_DENSE {int(not fc or None in fc)}")
    for ib in _CSR_WIDTHS:
        lines.append(f"#define FM_FC_SPARSE_{ib} {int(not fc or ib in fc_index_bits)}")
    lines.append(f"#define FM_EXITS {int(bool(exits))}")
    return "\n".join(lines + ["#endif", ""])


# Memory a model array can be placed in, by target: the MSP430FR5994's lower FRAM (its linker
# script's FRAM region). An array larger than that does not even compile there (16-bit sizes).
_MODEL_REGION = {"msp430": ("FRAM", 0xBF80)}


def _check_flatbuffer_fits(target: str, model_bytes: bytes) -> None:
    """Refuse a model whose flatbuffer alone is larger than the target's model memory, in the
    linker's words (see :func:`memory_overflow`)."""
    region = _MODEL_REGION.get(target)
    if region and len(model_bytes) > region[1]:
        raise TargetRunError(f"the {len(model_bytes):,} B flatbuffer alone does not fit the {target}: "
                             f"section '.fram' will not fit in region '{region[0]}': overflowed by "
                             f"{len(model_bytes) - region[1]} bytes")


def _write_model_build_files(model_bytes: bytes, out: Path, subgraphs: Iterable[int] | None = None,
                             exits: bool | None = None) -> None:
    """The per-model sources of a runtime build: the model array, the kernel registry of the
    operators in ``subgraphs`` (default: all) and the kernel configuration (``exits``: see
    ``kernel_config_source``)."""
    from freeml_keras.converter import export_c
    export_c(model_bytes, out / "model_data.h", symbol="fm_model", section=".fram")
    (out / "registry_model.c").write_text(kernel_registry_source(model_op_names(model_bytes, subgraphs)))
    (out / "fm_kernel_config.h").write_text(kernel_config_source(model_bytes, exits=exits))


@dataclass
class ModelRun:
    """One inference of a model on a target (``programs/model_run.c``).

    ``output`` / ``output_invoke``: int8 outputs of the op-by-op run and of ``fm_invoke``;
    ``ops``: per executed operator (index, builtin code, units, cost in ``run.unit``);
    ``init_cost`` / ``invoke_cost``: fm_init and a whole fm_invoke; ``state_used`` /
    ``arena_bytes``: the target's RAM blocks; ``size``: text / data / bss of the ELF."""

    output: list[int]
    output_invoke: list[int]
    ops: list[tuple[int, int, int, int]]
    init_cost: int
    invoke_cost: int
    state_used: int
    arena_bytes: int
    size: dict[str, int]
    run: RunResult
    elf: Path


def _num_main_ops(model_bytes: bytes) -> int:
    from freeml_keras import tflite_schema as ts
    return len(ts.read_model(model_bytes).subgraphs[0].operators or [])


# The runtime's CONV_2D and FULLY_CONNECTED use the target's MAC loop (fm_dot_s8: SMLAD on the
# M4, the hardware multiplier on the MSP430) for their dense inner products; the kernels compile
# only the code paths of the model (fm_kernel_config.h, written next to the model).
RUNTIME_DEFINES = {"FM_TARGET_DOT": 1, "FM_KERNEL_CONFIG": 1}
# The MSP430 build also leaves out the error messages (errors keep status, operator, tensor and
# value): about 3 KB of the 48 KB of FRAM that code and model share; and its requantization
# multiplies 16-bit limbs on the hardware multiplier (fm_mul16x16) instead of 64-bit helpers;
# its MAC loop (MACS/OP2) beats the C loop (a 32x32 multiply helper per MAC) from one MAC on.
TARGET_DEFINES = {"cortex_m4": RUNTIME_DEFINES,
                  "msp430": {**RUNTIME_DEFINES, "FM_ERROR_TEXT": 0, "FM_TARGET_MUL16": 1, "FM_TARGET_DOT_MIN": 1}}
# Optimization of the runtime builds: the MSP430 has 48 KB for code + model, so smallest code
# with link-time optimization (about 1 KB less than -Oz alone).
TARGET_OPT = {"cortex_m4": "-O2", "msp430": "-Oz -flto"}


def _model_sources(exits: bool = True) -> list[Path]:
    """Runtime sources of a per-model build (its own kernel registry instead of registry.c;
    without exit_head.c for a build with FM_EXITS 0)."""
    srcs = sorted((RUNTIME_DIR / "src").glob("*.c")) + sorted((RUNTIME_DIR / "src" / "kernels").glob("*.c"))
    return [s for s in srcs if s.name != "registry.c" and (exits or s.name != "exit_head.c")]


def run_model(target: str, model_bytes: bytes, x: "np.ndarray", out_dir: str | Path, *,
              state_bytes: int | None = None, arena_bytes: int | None = None, opt: str | None = None,
              options: Mapping[str, object] | None = None, timeout: float = 600.0,
              kernel_config: str | None = None) -> ModelRun:
    """Build the runtime with ``model_bytes`` in flash / FRAM (section ``.fram``) and the int8
    input ``x``, run one inference op by op and once with fm_invoke, and return outputs and
    costs. The state and arena blocks default to the host runtime's sizes (the host's state block,
    with 64-bit pointers, is an upper bound); if one is too small the target says how much it
    needs and the program is rebuilt once with that. ``kernel_config``: the text of
    ``fm_kernel_config.h`` to build with instead of the model's own (``kernel_config_source``)."""
    import numpy as np

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_flatbuffer_fits(target, model_bytes)
    _write_model_build_files(model_bytes, out, subgraphs=[0])    # model_run.c runs the main subgraph
    if kernel_config is not None:
        (out / "fm_kernel_config.h").write_text(kernel_config)
    xi = np.ascontiguousarray(x, dtype=np.int8).ravel()
    if opt is None:
        opt = TARGET_OPT[target]
    if state_bytes is None or arena_bytes is None:
        from freeml_keras.runtime import Interpreter
        host = Interpreter(model_bytes)
        state_bytes = host.state_bytes if state_bytes is None else state_bytes
        arena_bytes = host.arena_bytes if arena_bytes is None else arena_bytes
    sources = _model_sources() + [out / "registry_model.c", out / "model_data.c",
                                  TARGETS_DIR / "programs" / "model_run.c"]
    for attempt in range(2):
        (out / "model_io.h").write_text(
            "/* Generated by freeml_keras.targets.run_model. */\n#include <stdint.h>\n"
            f"#define FM_STATE_BYTES {int(state_bytes)}u\n#define FM_ARENA_BYTES {int(arena_bytes)}u\n"
            + c_array("model_input", "int8_t", xi))
        elf = build(target, "model_run", sources, out, include_dirs=[RUNTIME_DIR / "include", out], opt=opt,
                    options=options, defines=TARGET_DEFINES[target])
        r = run(target, elf, max_marks=2 * _num_main_ops(model_bytes) + 8, timeout=timeout)
        need, init = r.lines("need"), r.lines("init")
        if r.exit_code == 2 and need and init and int(init[0][0]) == 4 and attempt == 0:   # FM_ERR_MEMORY
            state_bytes, arena_bytes = (max(int(need[0][0]), 1), max(int(need[0][1]), 1))
            continue
        break
    if r.exit_code != 0:
        raise TargetRunError(f"model_run on {target} exited with {r.exit_code}: "
                             f"{' '.join(' '.join(l) for l in r.lines('error'))}\n{r.output[-2000:]}")
    regions = r.regions()
    op_lines = r.lines("op")
    if len(regions) != len(op_lines) + 2:
        raise TargetRunError(f"model_run: {len(regions)} measured regions for {len(op_lines)} operators")
    init = r.lines("init")[0]
    ops = [(int(a), int(b), int(c), cost) for (a, b, c), cost in zip(op_lines, regions[1:-1])]
    return ModelRun([int(v) for v in r.lines("output")[0]], [int(v) for v in r.lines("output_invoke")[0]],
                    ops, regions[0], regions[-1], int(init[1]), int(init[2]), code_size(target, elf), r, elf)


@dataclass
class CheckpointRun:
    """``programs/ckpt_run.c`` on a target: the continuous run (``plain_*``), one checkpointed
    run per granularity (``runs``: granularity, units run, commits, NVM bytes written by commits,
    cost, output), a run interrupted by an emulated power loss after ``resume_after`` steps
    (``resume_output``, ``resume_units`` before and after) and one run per step work budget in
    work mode, the runtime's default (``work_runs``: step_work, units, commits, nvm_bytes,
    largest_step_work, steps, cost, output). ``exits``: the build had anytime-exit support
    (``FM_EXITS``); without it, ``exits_refused`` holds the statuses fm_start and fm_resume
    returned for an ``fm_intermittent`` with exits set (3, FM_ERR_UNSUPPORTED, when refused)."""

    plain_output: list[int]
    plain_cost: int
    runs: list[dict]
    resume_output: list[int]
    resume_units: tuple[int, int]
    size: dict[str, int]
    run: RunResult
    work_runs: list[dict] = field(default_factory=list)
    exits: bool = True
    exits_refused: tuple[int, int] | None = None


def run_checkpointed(target: str, model_bytes: bytes, x: "np.ndarray", out_dir: str | Path,
                     granularities: Sequence[int] = (1, 4, 16, 1 << 30), resume_after: int = 3,
                     step_works: Sequence[int] | None = None, timeout: float = 600.0,
                     exits: bool | None = None) -> CheckpointRun:
    """Build the runtime with its checkpointing (arena and checkpoint slots in the target's
    non-volatile section) and run one inference per granularity (units per step), the
    continuous one, a resumed one, and one per step work budget (``step_works``; by default the
    runtime's default budget, FM_DEFAULT_STEP_WORK); costs in the target's unit
    (``RunResult.unit``). ``exits``: build with anytime-exit support (``FM_EXITS``, the exit
    head's code); by default when the model's metadata has exit points (``model_has_exits``).
    The program itself runs the model to its end either way."""
    import numpy as np
    from freeml_keras.runtime import Interpreter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if exits is None:
        exits = model_has_exits(model_bytes)
    _check_flatbuffer_fits(target, model_bytes)
    _write_model_build_files(model_bytes, out, exits=exits)
    host = Interpreter(model_bytes)
    xi = np.ascontiguousarray(x, dtype=np.int8).ravel()
    (out / "model_io.h").write_text(
        "/* Generated by freeml_keras.targets.run_checkpointed. */\n#include <stdint.h>\n"
        f"#define FM_STATE_BYTES {host.state_bytes}u\n#define FM_ARENA_BYTES {host.arena_bytes}u\n"
        + c_array("model_input", "int8_t", xi))
    (out / "ckpt_cfg.h").write_text(
        f"#define FM_NUM_GRANULARITIES {len(granularities)}\n"
        f"#define FM_GRANULARITIES {{{', '.join(f'{int(g)}ul' for g in granularities)}}}\n"
        f"#define FM_RESUME_AFTER_STEPS {int(resume_after)}ul\n"
        + (f"#define FM_NUM_STEP_WORKS {len(step_works)}\n"
           f"#define FM_STEP_WORKS {{{', '.join(f'{int(w)}ul' for w in step_works)}}}\n"
           if step_works else ""))
    sources = _model_sources(exits) + [out / "registry_model.c", out / "model_data.c",
                                       TARGETS_DIR / "programs" / "ckpt_run.c"]
    elf = build(target, "ckpt_run", sources, out, include_dirs=[RUNTIME_DIR / "include", out],
                opt=TARGET_OPT[target], defines=TARGET_DEFINES[target])
    n_works = len(step_works) if step_works else 1
    r = run(target, elf, max_marks=2 * (len(granularities) + n_works) + 8, timeout=timeout)
    if r.exit_code != 0:
        raise TargetRunError(f"ckpt_run on {target} exited with {r.exit_code}:\n{r.output[-2000:]}")
    costs = r.regions()
    plain = r.lines("plain")[0]
    runs = [{"granularity": int(f[0]), "units": int(f[1]), "commits": int(f[2]), "nvm_bytes": int(f[3]),
             "cost": cost, "output": [int(v) for v in f[4:]]}
            for f, cost in zip(r.lines("ckpt"), costs[1:])]
    res = r.lines("resume")[0]
    work_lines = r.lines("work")
    work_runs = [dict(zip(("step_work", "units", "commits", "nvm_bytes", "largest_step_work", "steps"),
                          map(int, f[:6])), cost=cost, output=[int(v) for v in f[6:]])
                 for f, cost in zip(work_lines, costs[len(costs) - len(work_lines):])]
    refused = r.lines("noexits")
    return CheckpointRun([int(v) for v in plain], costs[0], runs, [int(v) for v in res[2:]],
                         (int(res[0]), int(res[1])), code_size(target, elf), r, work_runs, exits,
                         (int(refused[0][0]), int(refused[0][1])) if refused else None)


COST_TABLES = Path(__file__).resolve().parents[1] / "bench" / "results" / "targets.json"


def read_cost_tables(path: str | Path = COST_TABLES) -> dict[str, dict[str, dict]]:
    """The per-operator cost tables ``bench/targets.py`` measured:
    ``{target: {model: {"unit": "instructions"|"cycles", "ops": [{"index", "op", "units",
    <unit>, "per_unit", "macs", "sparse_macs", "output_bytes"}, ...]}}}`` (``macs``: dense MACs,
    ``sparse_macs``: MACs over the stored non-zero weights, ``output_bytes``: bytes of the
    operator's output tensor; older tables may lack the last two)."""
    import json
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: run `python bench/targets.py` first")
    return json.loads(p.read_text())["cost_tables"]


# The compressed cnn_s that fits the MSP430FR5994 together with the runtime (see
# tflm_port/targets/README.md for the byte budget): the zoo's cnn_s at width 0.25 on the digits,
# SparseComp to this many bytes of stored parameters, a gNet exit head, names stripped.
COMPRESSED_CNN_S_BUDGET = 4000
CNN_S_DIGITS_EPOCHS = 30            # pre-training of the zoo's cnn_s (width 0.25) on the digits
_COMPRESSED_CNN_S_VERSION = 2


def compressed_cnn_s(budget_bytes: int = COMPRESSED_CNN_S_BUDGET, num_inputs: int = 3,
                     verbose: bool = False, exit_head: bool = True) -> tuple[bytes, "np.ndarray", dict]:
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
    import json
    import time

    import numpy as np

    from freeml_keras import converter, datasets, memory, zoo
    from freeml_keras.exits import attach_global_exit, train_global_exit
    from freeml_keras.interpreters import io_quantization, quantize
    from freeml_keras.sparsecomp import compress

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
        b = converter.convert(res.model, tr[0][:100], sparse=True, exit_model=em, strip=True)
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
        b = converter.extract_subgraph(b, 0)
        meta = {**meta, "exit_head": False, "flatbuffer_bytes": len(b)}
    return b, quantize(te[0][:num_inputs], scale, zp), meta

