"""What a model's power-on build needs in each memory of a device, predicted and linked.

The build is ``programs/power_run.c``: the runtime with the model's kernels, checkpointing and
(when the model has one) the exit head, its state, arena and checkpoint slots in the
non-volatile section. ``predict`` says how many bytes each part takes and whether the image
fits the device's memory map (:class:`freeml_keras.devices.MemoryMap`); ``link`` builds it and
reads what the linker placed (or by how much it overflowed). The prediction:

- code, constants and the program's fixed variables: measured by linking the same build with a
  16-byte stand-in for the model and 1,024-byte blocks (``code_image``; it depends on the kernel
  set, their weight layouts and the exit head only, so it is cached by those);
- the model: the flatbuffer as the build holds it (with its ``freeml_prepare`` entry),
  16-byte aligned;
- the arena: the runtime's own plan (the host library plans with the same code);
- the state blocks: the host's, with its tensor and operator tables resized to the target's
  structure sizes (``struct_sizes``: the compiler's ``sizeof`` on each);
- the checkpoint slots and the prepared image: in the stand-in's figure already.

Example::

    from freeml_keras.targets import image
    est = image.predict(open("model.tflite", "rb").read(), "msp430fr5994", "build/image")
    print(est.fits, est.regions["FRAM"])
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from freeml_keras import costs, devices, memory
from freeml_keras.compression.budget import Budget
from freeml_keras.conversion.c_export import export_c
from freeml_keras.conversion.converter import convert, extract_subgraph
from freeml_keras.format import tflite as ts
from freeml_keras.format.model import ModelLike, as_model
from freeml_keras.format.prepared import ensure_prepared
from freeml_keras.runtime.build import build_dir, source_key
from freeml_keras.runtime.interpreter import Interpreter
from freeml_keras.targets import spill
from freeml_keras.targets.codegen import (c_array, kernel_config_source, model_array_bytes, model_has_exits,
                                          write_model_build_files)
from freeml_keras.targets.runs import TARGET_DEFINES, TARGET_OPT, model_sources
from freeml_keras.targets.toolchain import (RUNTIME_DIR, TARGETS_DIR, TargetRunError, build, check_tools,
                                            memory_overflow, section_bytes)

__all__ = ["ImageEstimate", "predict", "link", "code_image", "struct_sizes", "section_bytes", "device_budget"]

_STUB_BLOCK = 1024         # bytes of each block in the code-only build (sizes as large as real ones
                           # make the same code: a 4-byte block lets the compiler fold 128 B away)
_ALIGN = 16
_STUB_MODEL = 2048         # bytes of the stand-in model array (a size like a real one, as the blocks)


def _a16(n: int) -> int:
    return (int(n) + _ALIGN - 1) // _ALIGN * _ALIGN


@dataclass
class ImageEstimate:
    """Bytes per part (``parts``: code, model, arena, state, checkpoint, stack; see
    :data:`freeml_keras.devices.PARTS`) and per region (``regions``: used, length, free) of a
    model's power-on build on ``device``; ``fits`` when no region is over."""
    device: str
    target: str
    parts: dict[str, int]
    regions: dict[str, dict[str, int]]
    blocks: dict[str, int] = field(default_factory=dict)
    build: str = "provisioned"
    by_build: dict[str, dict] = field(default_factory=dict)   # per build of VARIANTS[build]

    @property
    def fits(self) -> bool:
        return all(r["free"] >= 0 for r in self.regions.values())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fits"] = self.fits
        return d

    def table(self) -> str:
        """A few lines a person reads: parts, then regions."""
        lines = [f"{self.device} ({self.target}) power-on build ({self.build}):"]
        lines += [f"  {p:<11}{b:>9,} B" for p, b in self.parts.items()]
        for name, r in self.regions.items():
            state = "fits" if r["free"] >= 0 else "OVER"
            lines.append(f"  {name}: {r['used']:,} of {r['length']:,} B used, {r['free']:+,} B free ({state})")
        if len(self.by_build) > 1:
            lines.append("  code per build: " + ", ".join(f"{v} {b['code']:,} B" for v, b in self.by_build.items()))
        return "\n".join(lines)


def struct_sizes(target: str) -> dict:
    """``sizeof`` of the runtime's state tables on ``target`` (``host``: the machine's own
    compiler, as the Python binding builds the runtime), read from the compiler's assembly
    output: ``tensor`` (a tensor's record), ``pointer`` (an entry of the operators' pointer
    table), ``op_header`` (the record of an operator without parameters) and ``op_records``
    (builtin code, as text -> its operator's record, ``FM_OP_PARAMS`` in fm_internal.h)."""
    cache = build_dir("struct_sizes", source_key(RUNTIME_DIR / "include") + target) / "sizes.json"
    if cache.exists():
        return json.loads(cache.read_text())
    # (codes + 1: a zero in the array may be emitted as .zero rather than as a number)
    src = ('#include "freeml/fm_internal.h"\n'
           "#define FM_PROBE_RECORD(c, m) (unsigned long)(c) + 1u, FM_OP_RECORD(m),\n"
           "const unsigned long fm_struct_sizes[] = {sizeof(fm_tensor), sizeof(fm_op *), FM_OP_HEADER_BYTES,\n"
           "    FM_OP_PARAMS(FM_PROBE_RECORD)};\n")
    cc = {"host": ["gcc"], "msp430": ["clang", "--target=msp430"],
          "cortex_m4": ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb"]}[target]
    if target != "host":
        check_tools(target)
    defs = [f"-D{k}={v}" for k, v in TARGET_DEFINES.get(target, {}).items() if k != "FM_KERNEL_CONFIG"]
    r = subprocess.run(cc + ["-std=c99", "-S", "-O1", "-x", "c", "-", "-o", "-", f"-I{RUNTIME_DIR / 'include'}"]
                       + defs, input=src, capture_output=True, text=True)
    if r.returncode != 0:
        raise TargetRunError(f"sizes of the runtime's tables on {target}: {r.stderr[-800:]}")
    values = [int(v, 0) for v in re.findall(r"\.(?:long|quad|word|4byte|8byte)\s+(\S+)", r.stdout)]
    if len(values) < 5 or len(values) % 2 == 0:
        raise TargetRunError(f"sizes of the runtime's tables on {target}: unexpected assembly:\n{r.stdout[-800:]}")
    out = {"tensor": values[0], "pointer": values[1], "op_header": values[2],
           "op_records": {str(values[i] - 1): values[i + 1] for i in range(3, len(values), 2)}}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out))
    return out


def _state_on(target: str, host_state: int, num_tensors: int, op_codes: list[int]) -> int:
    """The host's state block resized to ``target``'s tables: tensor records, the operators'
    pointer table and the operators' records (prepare.c's fm_init allocates them as one
    block; the rest, per-channel multipliers and shifts, are the same
    bytes everywhere)."""
    a4 = lambda n: (n + 3) // 4 * 4    # noqa: E731

    def tables(s: dict) -> int:
        return (a4(num_tensors * s["tensor"]) + a4(len(op_codes) * s["pointer"])
                + a4(sum(s["op_records"].get(str(c), s["op_header"]) for c in op_codes)))

    return host_state - tables(struct_sizes("host")) + tables(struct_sizes(target))


def _interp_blocks(data: bytes, target: str) -> tuple[int, int]:
    """(state on ``target``, arena) of the single-subgraph model ``data``."""
    it = Interpreter(data)
    m = as_model(data)
    sg = m.parsed.subgraphs[0]
    codes = [ts.builtin_code(m.parsed, op.opcodeIndex) for op in sg.operators or []]
    return _state_on(target, it.state_bytes, len(sg.tensors or []), codes), it.arena_bytes


# The targets' linker scripts: the sections in each region, in address order (.data is loaded
# from the non-volatile region and copied to RAM, so it takes room in both), and the linker
# script's names of the device's regions.
_SECTIONS = {"msp430": {"FRAM": (".persistent", ".fram", ".fram_arena", ".text", ".rodata"),
                        "SRAM": (".noinit", ".data", ".bss")}}
_LOADED_DATA = {"msp430": ("FRAM", ".data")}
_LINKER_REGION = {"msp430": {"FRAM": "FRAM", "RAM": "SRAM"}}


def _regions_used(target: str, sections: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Bytes of each region from its first section's start to its last section's end (the
    alignment gaps between sections included), plus .data's load image where it is stored."""
    used: dict[str, int] = {}
    for region, names in _SECTIONS[target].items():
        present = [sections[n] for n in names if n in sections and sections[n][0] > 0]
        if present:
            used[region] = max(a + n for n, a in present) - min(a for _, a in present)
    region, sec = _LOADED_DATA[target]
    used[region] = used.get(region, 0) + sections.get(sec, (0, 0))[0]
    return used


# The builds of a model's power-on program (programs/power_run.c, targets.power): "on_device"
# prepares at its first power-on and runs; a provisioned device runs "device" (no preparation
# code, FM_PREPARE_ON_DEVICE 0) from the image "preparing" (preparation only, FM_PREPARE_ONLY,
# no kernel eval code) sealed in the emulator at the same addresses (targets.power.provision).
VARIANTS = {"on_device": ("on_device",), "provisioned": ("preparing", "device")}


def _write_power_sources(m, out: Path, sizes: tuple[int, int, int, int], classes: int, exits: bool,
                         variant: str = "on_device") -> list[Path]:
    (out / "power_cfg.h").write_text("#define FM_STEP_COST 50000ul\n#define FM_STEP_WORK 1024ul\n"
                                     "#define FM_INFERENCES 1u\n"
                                     + ("#define FM_PREPARE_ONLY 1\n" if variant == "preparing" else ""))
    cfg = (out / "fm_kernel_config.h").read_text().replace(
        "#endif", "void power_first_unit(void);\n#define FM_TRACE_FIRST_UNIT() power_first_unit()\n"
        + ("#define FM_EVAL_ON_DEVICE 0\n" if variant == "preparing" else "") + "#endif")
    (out / "fm_kernel_config.h").write_text(cfg)
    (out / "model_io.h").write_text(
        "/* Generated by freeml_keras.targets.image. */\n#include <stdint.h>\n"
        f"#define FM_STATE_BYTES {sizes[0]}u\n#define FM_ARENA_BYTES {sizes[1]}u\n"
        f"#define FM_HEAD_STATE_BYTES {sizes[2]}u\n#define FM_HEAD_ARENA_BYTES {sizes[3]}u\n"
        f"#define FM_CKPT_CLASSES {classes}u\n" + c_array("model_input", "int8_t", [0]))
    return model_sources(exits) + [out / "registry_model.c", out / "model_data.c",
                                   TARGETS_DIR / "programs" / "power_run.c"]


# A fictitious larger 16-bit map with the same sections: a code-only build links even when the
# code alone does not fit the device, so that it can be measured.
_MEASURE_LD = {"msp430": TARGETS_DIR / "msp430" / "msp430fr5994_measure.ld"}


def _build_or_overflow(target: str, sources: list[Path], out: Path, measure: bool = False,
                       variant: str = "on_device") -> tuple[Path | None, dict[str, int] | None]:
    defines = dict(TARGET_DEFINES[target])
    if variant == "device":
        defines["FM_PREPARE_ON_DEVICE"] = 0
    try:
        if variant == "preparing" and target == "msp430":     # part of its code in emulator memory
            elf, _ = spill.build_preparing("power_run", sources, out, measure=measure,
                                           include_dirs=[RUNTIME_DIR / "include", out], opt=TARGET_OPT[target],
                                           defines=defines)
        else:
            elf = build(target, "power_run", sources, out, include_dirs=[RUNTIME_DIR / "include", out],
                        opt=TARGET_OPT[target], defines=defines,
                        options={"LDSCRIPT": _MEASURE_LD[target]} if measure else None)
        return elf, None
    except TargetRunError as e:
        over = memory_overflow(str(e))
        if over is None:
            raise
        return None, over


def code_image(target: str, model: ModelLike, work_dir: str | Path | None = None, *,
               kernel_config: str | None = None, exits: bool | None = None, classes: int | None = None,
               variant: str = "on_device") -> dict:
    """Sections (bytes, address) and bytes used per region (``regions_used``) of the model's
    power-on build with a 16-byte stand-in for the model and
    4-byte blocks: code, constants and the program's fixed variables (cached by the generated
    kernel registry and configuration, which is all it depends on). ``kernel_config``: another
    ``fm_kernel_config.h``; ``exits``: build with the exit head's code (default: when the model
    has one) for ``classes`` classes (default: the model's); ``variant``: which build (see
    :data:`VARIANTS`)."""
    m = ensure_prepared(model)
    if exits is None:
        exits = model_has_exits(m)
    if classes is None:
        classes = m.metadata.num_classes if model_has_exits(m) else int(np.prod(_output_shape(m)))
    tmp = Path(work_dir) if work_dir else build_dir("code_image", "tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    write_model_build_files(m, tmp, exits=exits)
    if kernel_config is not None:
        (tmp / "fm_kernel_config.h").write_text(kernel_config)
    key = (source_key(RUNTIME_DIR) + (tmp / "registry_model.c").read_text() + (tmp / "fm_kernel_config.h").read_text()
           + f"{_STUB_MODEL} {_STUB_BLOCK} {classes if exits else 0} {variant} spill2 {spill.SPILL_REGIONS} "
           f"{spill.SRAM_END - spill.STACK_RESERVE}")
    out = build_dir(f"code_image-{target}", hashlib.sha256(key.encode()).hexdigest()[:16])
    cached = out / "sections.json"
    if cached.exists():
        return json.loads(cached.read_text())
    out.mkdir(parents=True, exist_ok=True)
    write_model_build_files(m, out, exits=exits)
    if kernel_config is not None:
        (out / "fm_kernel_config.h").write_text(kernel_config)
    export_c(bytes(_STUB_MODEL), out / "model_data.h", symbol="fm_model", section=".fram", data_bytes=_STUB_MODEL)
    sources = _write_power_sources(m, out, (_STUB_BLOCK,) * 4 if exits else (_STUB_BLOCK, _STUB_BLOCK, 0, 0),
                                   classes if exits else 0, exits, variant)
    elf, over = _build_or_overflow(target, sources, out, measure=True, variant=variant)
    if elf is None:
        raise TargetRunError(f"the {target} build of this model's kernels does not link even in the "
                             f"measuring map: over by {over}")
    sections = {k: list(v) for k, v in section_bytes(elf, target).items()}
    sections["regions_used"] = _regions_used(target, section_bytes(elf, target))
    if variant == "preparing" and target == "msp430":      # what the real link may put in emulator memory
        sections["functions"] = spill.functions((out / "power_run.map").read_text())
    cached.write_text(json.dumps(sections))
    return sections


def _spilled(sections: dict, extra_volatile: int = 0) -> int:
    """Bytes of the preparing build's code that its real link puts in emulator memory
    (:mod:`freeml_keras.targets.spill`), for a build whose volatile sections are
    ``extra_volatile`` bytes larger than the code-only build's; 0 for the other builds."""
    if "functions" not in sections:
        return 0
    volatile = sum(sections.get(k, [0])[0] for k in (".noinit", ".data", ".bss")) + extra_volatile
    return spill.spilled_bytes([tuple(f) for f in sections["functions"]], spill.sram_room(volatile))


def _output_shape(m) -> list[int]:
    sg = m.parsed.subgraphs[0]
    return [int(d) for d in sg.tensors[int(sg.outputs[0])].shape]


def predict(model: ModelLike, device: str | devices.DeviceProfile, work_dir: str | Path | None = None, *,
            build: str = "provisioned") -> ImageEstimate:
    """The bytes of ``model``'s power-on build on ``device`` per part and per region of its memory
    map (the code measured by a code-only link: the target's toolchain must be installed).
    ``build``: ``"provisioned"`` (the device runs a build without preparation from an image that
    a preparation-only build sealed at the same addresses: both must fit, and each region's
    figure is the larger of the two) or ``"on_device"`` (one build that prepares and runs)."""
    dev = devices.get(device)
    if dev.memory is None:
        raise ValueError(f"device {dev.name!r} has no memory map")
    if build not in VARIANTS:
        raise ValueError(f"build is one of {', '.join(VARIANTS)}, not {build!r}")
    target = costs.target_of(dev)
    if target not in _SECTIONS:
        raise ValueError(f"image prediction is implemented for the msp430 build only, not {target}")
    m = ensure_prepared(model)
    exits = model_has_exits(m)
    state, arena = _interp_blocks(extract_subgraph(m.data, 0) if exits else m.data, target)
    head_state = head_arena = 0
    if exits:
        head_state, head_arena = _interp_blocks(extract_subgraph(m.data, m.metadata.head_subgraph), target)
    stub = _a16(_STUB_BLOCK)
    n_persistent = 2 if exits else 1                  # blocks in .persistent: state (+ head state)
    persistent = _a16(state) + (_a16(head_state) if exits else 0)
    v_blocks = _a16(head_arena) if exits else 0        # the exit head's scratch arena: volatile
    # the arena follows the model's data (.fram_arena); the preparing build has none of its own
    # (the model file's tail lies at its addresses: programs/power_run.c)
    delta = {"nv": persistent - stub * n_persistent, "arena": _a16(arena) - stub,
             "v": v_blocks - (stub if exits else 0)}
    # the build without preparation keeps the file's data only (codegen.model_array_bytes)
    model_by = {v: _a16(model_array_bytes(m, data_only=v == "device")) for v in VARIANTS[build]}
    mm = dev.memory
    by_build, used = {}, {}
    for variant in VARIANTS[build]:
        sections = code_image(target, m, work_dir, variant=variant)
        sec = {k: v[0] for k, v in sections.items() if k.startswith(".")}
        u = dict(sections["regions_used"])
        # the preparing build has no head arena of its own (only the device's address), as no arena
        v_extra = delta["v"] if variant != "preparing" else 0
        moved = _spilled(sections, v_extra)
        sec[".text"] = sec.get(".text", 0) - moved
        u[mm.region("code").name] -= moved
        arena_d = delta["arena"] if variant != "preparing" else 0
        for part, d in (("model", model_by[variant] - _STUB_MODEL), ("arena", delta["nv"] + arena_d)):
            r = mm.region(part).name
            u[r] = u.get(r, 0) + d
        u[mm.region("stack").name] = u.get(mm.region("stack").name, 0) + v_extra + mm.stack_bytes
        by_build[variant] = {"code": sec.get(".text", 0) + sec.get(".rodata", 0) + sec.get(".data", 0),
                             "model": model_by[variant],
                             "fixed_nv": sec.get(".persistent", 0) - stub * n_persistent,    # slots, image, counters
                             "volatile": sec.get(".noinit", 0) + sec.get(".bss", 0), "regions": u}
        for r, n in u.items():
            used[r] = max(used.get(r, 0), n)
    shipped = by_build[VARIANTS[build][-1]]           # what the device runs
    parts = {"code": shipped["code"], "model": shipped["model"], "arena": _a16(arena),
             "state": _a16(state) + (_a16(head_state) if exits else 0), "checkpoint": shipped["fixed_nv"],
             "stack": mm.stack_bytes + shipped["volatile"] + delta["v"]}
    regions = {r.name: {"used": used.get(r.name, 0), "length": r.length, "free": r.length - used.get(r.name, 0)}
               for r in mm.regions}
    return ImageEstimate(dev.name, target, parts, regions,
                         {"state": state, "arena": arena, "head_state": head_state, "head_arena": head_arena},
                         build=build, by_build=by_build)


def link(model: ModelLike, device: str | devices.DeviceProfile, work_dir: str | Path, *,
         build: str = "provisioned") -> dict:
    """Link the model's power-on build(s) for ``device`` (``build``: see :func:`predict`) with
    the predicted block sizes and return what the linker placed: ``regions`` (bytes used per
    region, the larger over the builds), ``by_build`` (each build's), or ``overflow`` (bytes
    over per region, the larger over the builds that did not link)."""
    dev = devices.get(device)
    target = costs.target_of(dev)
    est = predict(model, dev, Path(work_dir) / "code", build=build)
    m = ensure_prepared(model)
    exits = model_has_exits(m)
    names = _LINKER_REGION[target]
    b = est.blocks
    sizes = (b["state"], b["arena"], b["head_state"] if exits else 0, b["head_arena"] if exits else 0)
    by_build, used, over_all = {}, {}, {}
    for variant in VARIANTS[build]:
        out = Path(work_dir) / f"linked-{variant}"
        out.mkdir(parents=True, exist_ok=True)
        write_model_build_files(m, out, exits=exits, data_only=variant == "device")
        sources = _write_power_sources(m, out, sizes, m.metadata.num_classes if exits else 0, exits, variant)
        elf, over = _build_or_overflow(target, sources, out, variant=variant)
        if elf is None:
            over = {names.get(k, k): v for k, v in over.items()}
            by_build[variant] = {"linked": False, "overflow": over}
            for r, n in over.items():
                over_all[r] = max(over_all.get(r, 0), n)
            continue
        u = _regions_used(target, section_bytes(elf, target))
        by_build[variant] = {"linked": True, "regions": u, "elf": str(elf)}
        for r, n in u.items():
            used[r] = max(used.get(r, 0), n)
    linked = not over_all
    out = {"linked": linked, "by_build": by_build, "estimate": est.to_dict()}
    if linked:
        out["regions"] = used
    else:
        out["overflow"] = over_all
    return out


def _csr_widths(flat: bytes) -> set[tuple[str, int]]:
    """(kernel, index bits) of the CSR code paths the model's CONV_2D and FULLY_CONNECTED weights
    may take once pruned: CSR runs along the weights' last dimension (input channels), so the
    column indices take 8 bits up to 256 of them, else 16 (the converter's narrowest type)."""
    m = as_model(flat).parsed
    out = set()
    for sg in m.subgraphs:
        for o in sg.operators or []:
            name = ts.op_name(m, o.opcodeIndex)
            kind = {"CONV_2D": "CONV", "FULLY_CONNECTED": "FC"}.get(name)
            if kind is None:
                continue
            last = int(sg.tensors[int(o.inputs[1])].shape[-1])
            out.add((kind, 8 if last <= 256 else 16 if last <= 65536 else 32))
    return out


def device_budget(model, device: str | devices.DeviceProfile, representative: np.ndarray, *,
                  reserve_bytes: int = 0, ram_share: float = 0.4, exits: bool = True,
                  build: str = "provisioned", work_dir: str | Path | None = None) -> tuple[Budget, dict]:
    """The SparseComp budget (stored parameters, activations + checkpoint) under which
    ``model``'s power-on build fits ``device``'s memory map, and how it was split.

    ``model`` is converted once (int8, sparse, device form) to measure what does not shrink
    with the parameters: the runtime's code for its kernels (a code-only link; CSR kernels of
    both index widths are counted, since compression will make sparse layers), the checkpoint
    slots and prepared image, the interpreter state on the target, and the flatbuffer's bytes
    beyond the stored parameters (``build``: the builds that must fit, see :func:`predict`: for
    a provisioned device the preparing build, with its code and the whole file but no arena, and
    the running one, with its code, the file's data and the arena); with ``exits`` the code of
    the exit head and its accumulator are counted too (it is attached after compression).
    ``reserve_bytes`` is kept free for what comes later (an exit head: its parameters and
    state). Where activations and parameters share a region (the MSP430's FRAM), ``ram_share``
    of what the running build leaves goes to activations and the rest to parameters, as far as
    every build has room for them (what a build without an arena cannot hold goes to the
    activations); the split and each build's room are in the returned details. Raises
    ``ValueError`` when the fixed costs alone leave nothing.

    Example::

        from freeml_keras import zoo, datasets, compress
        from freeml_keras.targets.image import device_budget
        model = zoo.pretrained("cnn_s", "fashion_mnist")
        (x, y), val, _ = datasets.load("fashion_mnist")
        budget, how = device_budget(model, "msp430fr5994", x[:200], reserve_bytes=3000)
        result = compress(model, budget, (x, y), val)
    """
    dev = devices.get(device)
    if dev.memory is None:
        raise ValueError(f"device {dev.name!r} has no memory map")
    mm = dev.memory
    flat = convert(model, representative, sparse=True, device_form=True, num_calibration=min(100, len(representative)))
    est = predict(flat, dev, work_dir, build=build)
    fp = memory.keras_footprint(model)
    target = costs.target_of(dev)
    code_of = lambda s: sum(s.get(k, [0])[0] for k in (".text", ".rodata", ".data")) - _spilled(s)   # noqa: E731
    config = kernel_config_source(flat, exits=exits)
    dense_config = config
    for op, bits in _csr_widths(flat):   # CSR kernels the dense model does not use yet
        config = config.replace(f"#define FM_{op}_SPARSE_{bits} 0", f"#define FM_{op}_SPARSE_{bits} 1")
    stub = _a16(_STUB_BLOCK) * (2 if exits else 1)       # stand-in blocks in .persistent
    code, csr_code, fixed_nv = {}, {}, 0
    for variant in VARIANTS[build]:       # every build must fit
        base = code_image(target, flat, work_dir, kernel_config=dense_config, exits=exits, variant=variant)
        full = code_image(target, flat, work_dir, kernel_config=config, exits=exits, variant=variant)
        code[variant], csr_code[variant] = code_of(full), code_of(full) - code_of(base)
        fixed_nv = max(fixed_nv, full[".persistent"][0] - stub)
    # Each build's own room: code, the part of the model file it holds beyond the parameters (the
    # build without preparation its data, the preparing build all of it), and, in the builds that
    # run, the arena. The parameters must fit every build; the activations the running one.
    overhead = {v: max(0, est.by_build[v]["model"] - fp.weight_bytes) for v in code}
    model_region, arena_region = mm.region("model").name, mm.region("arena").name
    room = {}
    for v in code:
        free = {r.name: r.length for r in mm.regions}
        for part, n in (("code", code[v]), ("model", overhead[v]), ("checkpoint", fixed_nv),
                        ("state", est.parts["state"]), ("model", reserve_bytes)):
            free[mm.region(part).name] -= n
        free[mm.region("stack").name] -= mm.stack_bytes
        room[v] = free
    run = min((v for v in code if v != "preparing"), key=lambda v: room[v][model_region])
    free = room[run]
    params_room = min(room[v][model_region] for v in code)
    if model_region == arena_region:        # parameters and activations share the running build's room
        left = free[model_region]
        flash = min(left - int(left * ram_share), params_room)
        ram = left - flash
    else:
        flash, ram = params_room, free[arena_region]
    binding = min(code, key=lambda v: room[v][model_region]) if flash == params_room else run
    fixed = {"code": code[binding], "checkpoint": fixed_nv, "state": est.parts["state"],
             "model_overhead": overhead[binding], "reserve": reserve_bytes}
    how = {"device": dev.name, "fixed": fixed, "free_after_fixed": free, "ram_share": ram_share,
           "code_by_build": code, "csr_code": csr_code, "build": build, "binding_build": binding, "exits": exits,
           "model_overhead_by_build": overhead, "params_room_by_build": {v: room[v][model_region] for v in code},
           "flash_bytes": flash, "ram_bytes": ram, "converted_bytes": len(flat),
           "weight_bytes": fp.weight_bytes}
    if flash <= 0 or ram <= 0:
        raise ValueError(f"{dev.name}: the fixed costs leave no room for the model "
                         f"(code {fixed['code']:,} B, checkpoint {fixed['checkpoint']:,} B, state "
                         f"{fixed['state']:,} B, flatbuffer overhead {fixed['model_overhead']:,} B, reserve "
                         f"{reserve_bytes:,} B; {free[model_region]:,} B left in {model_region})")
    return Budget(flash, ram, dev.name), how

