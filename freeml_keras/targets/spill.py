"""The MSP430 preparing build's code, partly placed where the emulator has memory and the device
build does not use it.

A provisioned device (:func:`freeml_keras.targets.power.provision`) runs a build without
preparation code from an image that the *preparing* build (preparation only) sealed in the
emulator at the same addresses. The preparing build never runs on a device, yet it had to fit the
device's FRAM beside the model and the blocks, and its code (parsing and preparation, about
27 KB with the demo's kernels) is larger than the running build's (about 20 KB): it, not the
device, set the model's budget. ``mspdebug sim`` has RAM at every address of the 16-bit space,
so here the preparing build puts its largest functions in two places the device map leaves
unused: ``LOW`` (0x0200-0x1BFF: peripheral and boot-loader addresses on the chip; the
emulator's console and multiplier sit below 0x0200), ``HOLE`` (0x3C00-0x3FFF, between SRAM
and FRAM) and the SRAM its volatile sections and a 1 KB stack leave. Everything the image points at (the blocks, the model, the volatile head arena) keeps
its device address: the script is the device's with two more regions and two more output
sections.

How: a first link for sizes only (the device's sections, every region at 0x0200 and overlaps
allowed, so that it links whatever the model's size) gives each function's section and size
(the link map: link-time optimization keeps one section per function) and the volatile
sections' sizes; the largest functions are packed first-fit into the regions (:func:`plan`),
and the build is linked again with the generated script (:func:`build_preparing`).

Example::

    from freeml_keras.targets import spill
    elf, moved = spill.build_preparing("power_run", sources, out_dir, include_dirs=[...],
                                       opt="-Oz -flto", defines={...})
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from freeml_keras.targets.toolchain import TARGETS_DIR, build, section_bytes

__all__ = ["SPILL_REGIONS", "sram_room", "functions", "plan", "spilled_bytes", "build_preparing"]

# (name, origin, length): emulator memory that the MSP430FR5994 device map does not use
SPILL_REGIONS = (("LOW", 0x0200, 0x1A00), ("HOLE", 0x3C00, 0x0400))
# and the SRAM the preparing build's volatile sections and stack leave: from the end of .bss to
# STACK_RESERVE below the stack's top (the preparing build's stack reached 432 B on the 28x28
# cnn_s with its exit head: preparation walks the operators, it does not recurse)
SRAM_START, SRAM_END, STACK_RESERVE = 0x1C00, 0x3C00, 1024
_DEVICE_LD = TARGETS_DIR / "msp430" / "msp430fr5994.ld"
_MEASURE_LD = TARGETS_DIR / "msp430" / "msp430fr5994_measure.ld"
_MAP_TEXT = re.compile(r"^\s*[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+\s+\S+:\((\.text\.[^)]+)\)\s*$")


def _functions(map_text: str) -> list[tuple[str, int]]:
    """(input section, bytes) of every function section in an ld.lld link map."""
    out = []
    for line in map_text.splitlines():
        m = _MAP_TEXT.match(line)
        if m and m.group(2) != ".text.crt0":
            out.append((m.group(2), int(m.group(1), 16)))
    return out


def sram_room(volatile_bytes: int) -> int:
    """Bytes of SRAM the preparing build can give to code when its .noinit, .data and .bss take
    ``volatile_bytes``."""
    return max(0, SRAM_END - STACK_RESERVE - SRAM_START - volatile_bytes - 2)


def plan(functions: list[tuple[str, int]], sram_bytes: int) -> dict[str, list[str]]:
    """The function sections (``functions``: section, bytes) to put in each spill region, with
    ``sram_bytes`` of SRAM besides (:func:`sram_room`): largest first, each in the first region
    with room (sizes rounded up to the 2-byte alignment of MSP430 code)."""
    room = {name: length for name, _, length in SPILL_REGIONS}
    room["SRAM"] = sram_bytes
    placed: dict[str, list[str]] = {name: [] for name in room}
    for section, n in sorted(functions, key=lambda f: -f[1]):
        n += n & 1
        region = next((r for r in room if room[r] >= n), None)
        if region is not None:
            room[region] -= n
            placed[region].append(section)
    return placed


def spilled_bytes(functions: list[tuple[str, int]], sram_bytes: int) -> int:
    """Bytes of code :func:`plan` moves out of the device's FRAM."""
    sizes = dict(functions)
    return sum(sizes[s] + (sizes[s] & 1) for sections in plan(functions, sram_bytes).values() for s in sections)


def functions(map_text: str) -> list[tuple[str, int]]:
    """(input section, bytes) of every function section in an ld.lld link map (not the
    start-up code, which stays first in .text)."""
    return _functions(map_text)


def _sizes_script() -> str:
    """The device's script for a link that only measures: both regions from 0x0200 to the end
    of the 16-bit space, the blocks and the model with the volatile sections and the code alone
    (sections may overlap: the link runs with --no-check-sections), so that it links whatever
    the model's size."""
    text = _DEVICE_LD.read_text()
    lines = [l for l in text.splitlines() if l.strip().startswith(("RAM (rwx)", "FRAM (rwx)"))]
    data = re.compile(r"(    \.(?:persistent|fram) : ALIGN\(16\) \{\n[^}]*\}) > FRAM")
    if len(lines) != 2 or len(data.findall(text)) != 2:
        raise RuntimeError(f"{_DEVICE_LD} changed shape: the sizing script cannot be made from it")
    for l in lines:
        name = l.split()[0]
        text = text.replace(l, f"    {name} (rwx) : ORIGIN = 0x0200, LENGTH = 0xFD00")
    text = data.sub(r"\1 > RAM", text)
    return "/* Generated by freeml_keras.targets.spill: for section sizes only, not an image. */\n" + text


def _script(placed: dict[str, list[str]], sizes: dict[str, int]) -> str:
    text = _DEVICE_LD.read_text()
    # the SRAM part ends where the preparing build's stack reserve begins (a region of its own,
    # listed before .text so that its functions are taken there; .noinit keeps its address)
    sram = sum(sizes[f] + (sizes[f] & 1) for f in placed["SRAM"])
    regions = [(name, origin, length) for name, origin, length in SPILL_REGIONS]
    if sram:
        regions.append(("SRAM", SRAM_END - STACK_RESERVE - sram, sram))
    anchor_bss = "    __stack_top = ORIGIN(RAM) + LENGTH(RAM);"
    if "    .text : {" not in text or "MEMORY\n{\n" not in text or anchor_bss not in text:
        raise RuntimeError(f"{_DEVICE_LD} changed shape: the preparing build's script cannot be made from it")
    text = text.replace("MEMORY\n{\n", "MEMORY\n{\n" + "".join(
        f"    SPILL_{name} (rwx)  : ORIGIN = {origin:#06x}, LENGTH = {length:#06x}\n" for name, origin, length in regions), 1)
    outputs = "".join(f"    .text_{name.lower()} : {{\n" + "".join(f"        *({s})\n" for s in placed[name])
                      + f"    }} > SPILL_{name}\n" for name, _, _ in regions)
    text = text.replace("    .text : {", outputs + "    .text : {", 1)
    if sram:
        text = text.replace(anchor_bss, f"    ASSERT(__bss_end <= ORIGIN(SPILL_SRAM), \"preparing build: its volatile "
                            f"sections reach its code in SRAM\")\n" + anchor_bss, 1)
    header = ("/* Generated by freeml_keras.targets.spill: the device's script with the preparing build's\n"
              " * largest functions in emulator memory that the device map leaves unused. */\n")
    return header + text


def build_preparing(name: str, sources: Sequence[str | Path], out_dir: str | Path, *, measure: bool = False,
                    **build_args) -> tuple[Path, int]:
    """Link the MSP430 preparing build with part of its code in :data:`SPILL_REGIONS`: a first
    link for sizes, then a second with the generated script (``out_dir/NAME.prepare.ld``). Returns the ELF
    and the bytes of code moved out of the device's regions. ``build_args``: as for
    :func:`freeml_keras.targets.toolchain.build` (its ``options`` without ``LDSCRIPT``)."""
    out = Path(out_dir).resolve()          # make runs in the target's directory: absolute paths
    options = dict(build_args.pop("options", None) or {})
    if measure:            # a code-only build (stand-in model and blocks): the measuring map
        elf = build("msp430", name, sources, out, options={**options, "LDSCRIPT": _MEASURE_LD}, **build_args)
    else:
        sizes_ld = out / f"{name}.sizes.ld"
        if not sizes_ld.exists() or sizes_ld.read_text() != _sizes_script():
            sizes_ld.write_text(_sizes_script())
        elf = build("msp430", name, sources, out, options={**options, "LDSCRIPT": sizes_ld,
                                                           "LDFLAGS": "--no-check-sections"}, **build_args)
    funcs = _functions((out / f"{name}.map").read_text())
    sizes = section_bytes(elf, "msp430")
    room = sram_room(sum(sizes.get(k, (0, 0))[0] for k in (".noinit", ".data", ".bss")))
    moved = spilled_bytes(funcs, room)
    if measure:
        return elf, moved
    script = out / f"{name}.prepare.ld"
    text = _script(plan(funcs, room), dict(funcs))
    if not script.exists() or script.read_text() != text:
        script.write_text(text)
    return build("msp430", name, sources, out, options={**options, "LDSCRIPT": script}, **build_args), moved
