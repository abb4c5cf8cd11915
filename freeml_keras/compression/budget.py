"""What SparseComp compresses to: a budget of stored bytes and/or RAM bytes, and the error raised
when it cannot be met."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from freeml_keras import devices

__all__ = ["Budget", "BudgetUnreachable"]


class BudgetUnreachable(ValueError):
    """The budget cannot be met; holds the smallest size reached and its accuracy."""

    def __init__(self, message: str, *, kind: str, smallest_bytes: int, accuracy: float,
                 budget_bytes: int, out_dir: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.smallest_bytes = smallest_bytes
        self.accuracy = accuracy
        self.budget_bytes = budget_bytes
        self.out_dir = out_dir


@dataclass(frozen=True)
class Budget:
    """Bytes for stored parameters and (optionally) for activations + checkpoint state."""
    flash_bytes: int | None
    ram_bytes: int | None = None
    device: str | None = None

    @classmethod
    def of(cls, spec: Any) -> "Budget":
        """From a Budget, a byte count, (flash, ram), a dict, or a device name / profile."""
        if isinstance(spec, Budget):
            return spec
        if isinstance(spec, (str, devices.DeviceProfile)):
            dev = devices.get(spec)
            return cls(dev.model_budget_bytes, dev.ram_budget_bytes, dev.name)
        if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
            return cls(int(spec))
        if isinstance(spec, (tuple, list)) and len(spec) == 2:
            return cls(None if spec[0] is None else int(spec[0]),
                       None if spec[1] is None else int(spec[1]))
        if isinstance(spec, dict):
            return cls(spec.get("flash_bytes"), spec.get("ram_bytes"), spec.get("device"))
        raise ValueError(f"budget must be bytes, (flash_bytes, ram_bytes), a Budget or a device "
                         f"name ({', '.join(devices.names())}), not {spec!r}")

    def __post_init__(self):
        for k in ("flash_bytes", "ram_bytes"):
            v = getattr(self, k)
            if v is not None and v <= 0:
                raise ValueError(f"budget {k} must be positive, got {v}")
        if self.flash_bytes is None and self.ram_bytes is None:
            raise ValueError("budget needs flash_bytes, ram_bytes or both")
