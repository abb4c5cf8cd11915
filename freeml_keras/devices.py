"""Device profiles: memories, clock and energy figures of the target microcontrollers.

Figures are the datasheet's nominal values. ``memory`` is the memory map a build can use: its
regions and what the runtime's build places in each (code, model, arena, state, checkpoint,
stack); budgets for a device come from it (:mod:`freeml_keras.image`). ``model_budget_bytes``
and ``ram_budget_bytes`` are the older fixed split, kept for profiles without a memory map.

On the MSP430FR5994 the activations and the checkpoint state live in FRAM (SRAM is lost at every
power failure), and clang (no large memory model) reaches only the FRAM below 64 KB:
0x4000-0xFF7F, 49,024 bytes, shared by code, weights, activations and state. The profile
``msp430fr5994_256k`` describes the whole 256 KB of FRAM that a large-memory-model toolchain
(TI's msp430-gcc, not in Debian) reaches; nothing here can build or emulate it (Debian's
mspdebug 0.22 simulates 64 KB), so its figures are predictions only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["DeviceProfile", "MemoryRegion", "MemoryMap", "PARTS", "get", "register", "names"]

# What a runtime build places in memory: code (runtime, kernels, start-up), the model's
# flatbuffer, the activation arena, the interpreter state (tensors, operators, prepared
# parameters), the checkpoint slots, and the stack with the volatile variables.
PARTS = ("code", "model", "arena", "state", "checkpoint", "stack")


@dataclass(frozen=True)
class MemoryRegion:
    """One contiguous memory a build can use."""
    name: str
    origin: int
    length: int
    nonvolatile: bool


@dataclass(frozen=True)
class MemoryMap:
    """The regions a build can use and which region holds each of :data:`PARTS`.
    ``stack_bytes``: what the build keeps free in the stack's region. ``runnable``: whether
    this project's toolchain can link and emulate builds for it (else predictions only)."""
    regions: tuple[MemoryRegion, ...]
    placement: dict = field(default_factory=dict)
    stack_bytes: int = 0
    runnable: bool = True
    note: str = ""

    def region(self, part: str) -> MemoryRegion:
        """The region that holds ``part`` (one of :data:`PARTS`)."""
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}; parts: {', '.join(PARTS)}")
        name = self.placement.get(part)
        if name is None:
            raise ValueError(f"the memory map places no {part!r}: every one of {', '.join(PARTS)} needs a region")
        for r in self.regions:
            if r.name == name:
                return r
        raise ValueError(f"part {part!r} is placed in {name!r}, which is not a region of this map")


@dataclass(frozen=True)
class DeviceProfile:
    """A target microcontroller: memories, clock, power draw and NVM write cost."""
    name: str
    core: str
    clock_hz: int
    nvm_bytes: int                  # non-volatile memory: FRAM, flash or MRAM
    ram_bytes: int                  # volatile SRAM
    model_budget_bytes: int         # default budget for stored parameters
    ram_budget_bytes: int           # default budget for activations + checkpoint state
    activations_in_nvm: bool        # activations kept in NVM (survive power failures)
    voltage_v: float
    active_ua_per_mhz: float        # active current per MHz at voltage_v
    sleep_ua: float                 # low-power mode current
    nvm_write_ns_per_word: float    # extra time to write one 16/32-bit word of NVM
    word_bytes: int
    memory: MemoryMap | None = None # regions and placement; None: the fixed budgets only

    @property
    def energy_per_cycle_j(self) -> float:
        """Energy of one active CPU cycle: I/f * V."""
        return self.active_ua_per_mhz * 1e-6 / 1e6 * self.voltage_v

    @property
    def active_power_w(self) -> float:
        return self.active_ua_per_mhz * 1e-6 * (self.clock_hz / 1e6) * self.voltage_v

    @property
    def sleep_power_w(self) -> float:
        return self.sleep_ua * 1e-6 * self.voltage_v

    def to_dict(self) -> dict:
        return asdict(self)


_PROFILES: dict[str, DeviceProfile] = {}


def register(profile: DeviceProfile, *, replace: bool = False) -> DeviceProfile:
    """Add a user-defined profile (``replace=True`` to redefine an existing name)."""
    if profile.name in _PROFILES and not replace:
        raise ValueError(f"device {profile.name!r} already exists; pass replace=True to redefine it")
    if profile.memory is not None:
        for part in PARTS:
            profile.memory.region(part)       # every part placed in a region of the map
    if profile.model_budget_bytes > profile.nvm_bytes:
        raise ValueError(f"device {profile.name!r}: model budget {profile.model_budget_bytes} B "
                         f"exceeds its NVM of {profile.nvm_bytes} B")
    _PROFILES[profile.name] = profile
    return profile


def get(name: str | DeviceProfile) -> DeviceProfile:
    """The profile of that name (a profile passes through)."""
    if isinstance(name, DeviceProfile):
        return name
    try:
        return _PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown device {name!r}; known: {', '.join(names())}") from None


def names() -> list[str]:
    return sorted(_PROFILES)


KB = 1024
_MSP430_SRAM = MemoryRegion("SRAM", 0x1C00, 8 * KB, nonvolatile=False)
# everything that survives a power failure, and the code, in FRAM; the stack and the volatile
# variables (the exit head's scratch arena, the interpreter handle) in SRAM
_MSP430_PLACEMENT = {"code": "FRAM", "model": "FRAM", "arena": "FRAM", "state": "FRAM",
                     "checkpoint": "FRAM", "stack": "SRAM"}
register(DeviceProfile(
    name="msp430fr5994", core="MSP430X (16-bit)", clock_hz=16_000_000,
    nvm_bytes=256 * KB, ram_bytes=8 * KB,
    model_budget_bytes=20 * KB, ram_budget_bytes=16 * KB, activations_in_nvm=True,
    voltage_v=3.0, active_ua_per_mhz=118.0, sleep_ua=0.5, nvm_write_ns_per_word=125.0,
    word_bytes=2,
    memory=MemoryMap((MemoryRegion("FRAM", 0x4000, 0xBF80, nonvolatile=True), _MSP430_SRAM),
                     _MSP430_PLACEMENT, stack_bytes=2 * KB,
                     note="clang 14 + ld.lld (16-bit pointers): lower FRAM 0x4000-0xFF7F, as "
                          "targets/msp430/msp430fr5994.ld links it")))
register(DeviceProfile(
    name="msp430fr5994_256k", core="MSP430X (16-bit)", clock_hz=16_000_000,
    nvm_bytes=256 * KB, ram_bytes=8 * KB,
    model_budget_bytes=200 * KB, ram_budget_bytes=48 * KB, activations_in_nvm=True,
    voltage_v=3.0, active_ua_per_mhz=118.0, sleep_ua=0.5, nvm_write_ns_per_word=125.0,
    word_bytes=2,
    # 0x4000-0xFF7F and 0x10000-0x43FFF: 256 KB less the interrupt vectors and the 128 B below
    # them; one region here, as a large-memory-model linker script would fill both
    memory=MemoryMap((MemoryRegion("FRAM", 0x4000, 0xBF80 + 0x34000, nonvolatile=True), _MSP430_SRAM),
                     _MSP430_PLACEMENT, stack_bytes=2 * KB, runnable=False,
                     note="the full FRAM with a large-memory-model toolchain (20-bit pointers); "
                          "cannot be linked or emulated here: predictions only, code size "
                          "assumed equal to the 16-bit build's")))
register(DeviceProfile(
    name="apollo3", core="Cortex-M4F", clock_hz=96_000_000,
    nvm_bytes=1024 * KB, ram_bytes=384 * KB,
    model_budget_bytes=960 * KB, ram_budget_bytes=352 * KB, activations_in_nvm=False,
    voltage_v=3.3, active_ua_per_mhz=6.0, sleep_ua=1.0, nvm_write_ns_per_word=0.0,
    word_bytes=4,
    memory=MemoryMap((MemoryRegion("FLASH", 0x0000C000, 1024 * KB - 0xC000, nonvolatile=True),
                      MemoryRegion("SRAM", 0x10000000, 384 * KB, nonvolatile=False)),
                     {"code": "FLASH", "model": "FLASH", "arena": "SRAM", "state": "SRAM",
                      "checkpoint": "SRAM", "stack": "SRAM"}, stack_bytes=8 * KB,
                     note="flash above Ambiq's 48 KB boot loader; the checkpoint in SRAM is written "
                          "to flash by the platform layer at a brown-out warning")))
register(DeviceProfile(
    name="apollo4", core="Cortex-M4F", clock_hz=192_000_000,
    nvm_bytes=2048 * KB, ram_bytes=2816 * KB,
    model_budget_bytes=1984 * KB, ram_budget_bytes=2752 * KB, activations_in_nvm=False,
    voltage_v=3.3, active_ua_per_mhz=4.0, sleep_ua=1.0, nvm_write_ns_per_word=0.0,
    word_bytes=4))
