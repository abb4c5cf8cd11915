"""Will a device finish? Every power-on pays the restart (measured on the core's emulator) and
then needs one atomic step to complete before the power fails again: one charge of the storage
capacitor must pay for the restart plus the largest atomic step, or the device restarts forever
(a livelock). This module prices both for a converted model and a device and says, before
anything runs, whether a capacitor can finish the model and by how much it falls short.

Example::

    from freeml_keras.energy.livelock import power_on_budget
    b = power_on_budget(open("model.tflite", "rb").read(), "msp430fr5994")
    print(b["needed_cycles"], b["min_capacitance_f"])
"""

from __future__ import annotations

from freeml_keras import costs, devices
from freeml_keras.energy.capacitor import Capacitor
from freeml_keras.format.model import ModelLike, as_model
from freeml_keras.runtime.intermittent import atomic_steps, plan

__all__ = ["power_on_budget"]


def power_on_budget(model: ModelLike, device: str | devices.DeviceProfile,
                    capacitor: Capacitor | None = None) -> dict:
    """What one on-period must pay for the runtime to progress on ``device``: ``restart`` (the
    measured warm restart of the device's core, ``costs.restart_cost``) plus the largest atomic
    step of the runtime's plan (``largest_step``: the metadata's per-operator costs in cost mode,
    else the steps priced by :func:`atomic_steps`), in the core's cost unit; the energy at the
    device's energy per cycle, and the smallest capacitance whose charge between v_on and v_off
    (``capacitor``'s, default 3.3 V and 1.8 V) pays it. With a ``capacitor``: ``finishes`` and
    ``shortfall_j`` (0 when it finishes). Raises ``CostTableError`` when the model's metadata
    has no per-operator costs for the device's core (the steps cannot be priced)."""
    m = as_model(model)
    dev = devices.get(device)
    md = m.metadata
    cost = md.info.get("cost") if md is not None else None
    if not cost or cost.get("target") != costs.target_of(dev):
        raise costs.CostTableError(
            f"the model's metadata has no per-operator costs for {dev.name}'s core "
            f"({costs.target_of(dev)}): convert it with target={dev.name!r} to price its steps")
    p = plan(m.data)
    largest = int(p["largest_step_cost"]) if p["mode"] == "cost" else \
        max((s.cycles for s in atomic_steps(m.data)), default=0)
    restart = costs.restart_cost(dev)
    needed = restart + largest
    energy = needed * dev.energy_per_cycle_j
    ref = capacitor or Capacitor()
    d = {"device": dev.name, "unit": "cycles" if costs.target_of(dev) == "msp430" else "instructions",
         "restart": restart, "largest_step": largest, "step_mode": p["mode"], "needed_cycles": needed,
         "needed_j": energy, "min_capacitance_f": 2 * energy / (ref.v_on ** 2 - ref.v_off ** 2)}
    if capacitor is not None:
        charge = capacitor.energy(capacitor.v_on) - capacitor.energy(capacitor.v_off)
        d.update(charge_j=charge, finishes=charge >= energy, shortfall_j=max(0.0, energy - charge))
    return d
