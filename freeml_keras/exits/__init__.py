"""Exits for anytime, energy-adaptive inference of a pre-trained model.

- gNet (global_exit): one shared linear exit head over max-pooled features of all exit points.
- Per-exit branches (branches): a separate classifier per exit point, the baseline.
- incremental: the numpy (float and int8) reference of the head's incremental evaluation.
- stop_rule: the exit decision at an exit point (confidence threshold, energy to the next exit),
  the one implementation the policy, the energy simulator and the C runtime's mirror share.
- policy: costs per segment on a device, the calibrated exit policy, threshold calibration.
- footprint: memory of the exit mechanism (gNet, branches, none).

The names below are imported from their modules on first use, so that the numpy-only parts
(``stop_rule``, ``incremental``) load without TensorFlow.
"""

from __future__ import annotations

import importlib

# name -> module of this package that defines it
_NAMES = {
    "layers": ("ChannelMaxPooling", "ExitMask", "ExitScale"),
    "points": ("ExitPointError", "PoolSpec"),
    "incremental": ("HeadQuantization", "incremental_logits", "incremental_logits_int8",
                    "quantize_head"),
    "global_exit": ("ExitModel", "attach_global_exit", "extract", "train_global_exit",
                    "training_model", "GlobalExitValidation"),
    "training": ("exit_loss", "ExitValidation", "pack_targets"),
    "branches": ("ExitBranches", "attach_exit_branches", "train_exit_branches"),
    "stop_rule": ("StopRule",),
    "policy": ("ExitPolicy", "calibrate_thresholds", "evaluate_policy", "segment_costs"),
    "footprint": ("compare_mechanisms", "exit_footprint", "exit_table", "inspect_exit_model"),
}
_MODULE_OF = {name: module for module, names in _NAMES.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"freeml_keras.exits.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module 'freeml_keras.exits' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))
