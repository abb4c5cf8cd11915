"""gNet's choice of pooling: per exit point, the pooled map size and channel cap that fit a
head-memory budget.

The head is one Dense layer over the concatenated pooled vectors, so its stored bytes grow with
the total pooled dimension. Each exit point's options (pooled spatial size x channel cap) are
ordered by pooled dimension, the larger spatial map first among equal dimensions (early exit
points need where a feature fired more than how many channels there are). Two allocations of
the budget:

- "early_first": from the first exit point to the last, each takes its largest option that
  leaves every later exit point its smallest. Early exit points are the ones 1x1 pooling
  starves, and the head is trained stagewise: every later exit adds to the logits of the
  earlier ones. On the digits CNN of issue 18 it beats "even" by 9 points at the first exit.
- "even": water-filling, the exit point with the fewest pooled features grows first. With
  three exit points (cnn_s) "early_first" starves the last ones.

``attach_global_exit`` plans with "early_first"; ``train_global_exit`` (with data) trains the
head under each allocation and keeps the one with the best mean validation accuracy over the
exits (``choose_pooling=True``, the default when the pooling was chosen automatically).

The default budget (:func:`default_head_budget`): a quarter of the per-exit branches' head
(SDN pooling, the baseline gNet is measured against) and at most a quarter of the backbone's
stored bytes; with a device, what the device's model budget leaves after the backbone.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

from freeml_keras import devices, memory
from freeml_keras.exits import points as pts
from freeml_keras.exits.branches import attach_exit_branches
from freeml_keras.keras import keras

__all__ = ["head_bytes", "pooling_options", "choose_pooling", "default_head_budget", "RULES",
           "HEAD_BUDGET_FRACTION", "BRANCH_HEAD_RATIO"]

HEAD_BUDGET_FRACTION = 0.25     # of the backbone's stored bytes, at most
BRANCH_HEAD_RATIO = 4.0         # the default head is this many times smaller than branches'


@lru_cache(maxsize=None)
def head_bytes(dim: int, num_classes: int) -> int:
    """Stored bytes (runtime int8 format, ``memory.keras_footprint``) of a Dense head from
    ``dim`` pooled features to ``num_classes`` logits, as trained (no zero weights nor bias:
    an all-zero bias would be stored smaller)."""
    inp = keras.Input((int(dim),))
    dense = keras.layers.Dense(int(num_classes), bias_initializer="ones")
    m = keras.Model(inp, dense(inp))
    return int(memory.keras_footprint(m).weight_bytes)


def pooling_options(feature_shape: Sequence[int]) -> list[tuple[int | None, int | None, int]]:
    """(pooled_size, max_width, pooled_dim) of one exit point's options, by pooled dimension
    (larger spatial maps first among equal dimensions; one option per dimension)."""
    shape = tuple(int(d) for d in feature_shape)
    ch = shape[-1]
    spatial = shape[:-1]
    widths = sorted({ch // g for g in range(1, ch + 1) if ch % g == 0 and ch // g >= min(4, ch)})
    sizes: list[int | None] = [None] if not spatial else list(range(1, max(spatial) + 1))
    seen = {}
    for s in sizes:
        if s is None:
            positions = 1
        else:
            positions = 1
            for side in spatial:
                window = max(1, math.ceil(side / s))
                positions *= math.ceil(side / window)
        for w in widths:
            dim = positions * (ch // pts._channel_group(ch, w))
            key = dim
            if key not in seen or positions > seen[key][3]:
                seen[key] = (s, None if w >= ch else w, dim, positions)
    return [(s, w, d) for s, w, d, _ in sorted(seen.values(), key=lambda o: o[2])]


def _early_first(options, fits) -> list[int]:
    """From the first exit point to the last, each takes its largest option that leaves every
    later exit point its smallest."""
    level = [0] * len(options)
    for k in range(len(options)):
        for i in range(len(options[k]) - 1, -1, -1):
            trial = level[:k] + [i] + [0] * (len(options) - k - 1)
            if fits(trial):
                level[k] = i
                break
    return level


def _even(options, fits) -> list[int]:
    """Water-filling: the exit point with the fewest pooled features (the earliest among equal
    ones) moves to its next option while the head fits; one whose next option does not fit
    stops there."""
    level = [0] * len(options)
    open_ = [len(o) > 1 for o in options]
    while any(open_):
        k = min((k for k in range(len(options)) if open_[k]),
                key=lambda k: (options[k][level[k]][2], k))
        trial = list(level)
        trial[k] += 1
        if fits(trial):
            level = trial
            open_[k] = level[k] + 1 < len(options[k])
        else:
            open_[k] = False
    return level


RULES = {"early_first": _early_first, "even": _even}


def choose_pooling(model: "keras.Model", exit_points: Sequence[str], budget_bytes: int,
                   rule: str = "early_first") -> tuple[list, list, dict]:
    """Per exit point (pooled_size, max_width) fitting ``budget_bytes`` of head by ``rule``
    ("early_first" or "even", see the module), and the record of the choice."""
    num_classes = int(model.outputs[-1].shape[-1])
    options = [pooling_options(model.get_layer(n).output.shape[1:]) for n in exit_points]

    def total(lv):
        return sum(options[k][i][2] for k, i in enumerate(lv))

    level = RULES[rule](options, lambda lv: head_bytes(total(lv), num_classes) <= budget_bytes)
    chosen = [options[k][i] for k, i in enumerate(level)]
    hb = head_bytes(total(level), num_classes)
    record = {"head_budget_bytes": int(budget_bytes), "head_bytes": hb, "allocation": rule,
              "fits_budget": hb <= budget_bytes,
              "choice": [{"exit_point": n, "pooled_size": s, "max_width": w, "pooled_dim": d}
                         for n, (s, w, d) in zip(exit_points, chosen)]}
    return [c[0] for c in chosen], [c[1] for c in chosen], record


def default_head_budget(model: "keras.Model", exit_points: Sequence[str],
                        device: str | devices.DeviceProfile | None = None) -> tuple[int, str]:
    """The head-memory budget in bytes when none is given, and the rule that set it."""
    backbone = memory.keras_footprint(model).weight_bytes
    if device is not None:
        dev = devices.get(device)
        left = dev.model_budget_bytes - backbone
        if left <= 0:
            raise ValueError(f"the backbone's {backbone:,} B of stored parameters leave nothing "
                             f"of {dev.name}'s {dev.model_budget_bytes:,} B model budget for an "
                             "exit head; compress it first or give head_budget_bytes")
        return int(left), f"{dev.name}: model budget {dev.model_budget_bytes:,} B - backbone {backbone:,} B"
    num_classes = int(model.outputs[-1].shape[-1])
    br = attach_exit_branches(model, exit_points)
    branch = sum(head_bytes(d, num_classes) for d in br.pooled_dims)
    by_branch = int(branch / BRANCH_HEAD_RATIO)
    by_model = int(HEAD_BUDGET_FRACTION * backbone)
    if by_branch <= by_model:
        return by_branch, (f"1/{BRANCH_HEAD_RATIO:g} of the per-exit branches' head "
                           f"({branch:,} B)")
    return by_model, f"{HEAD_BUDGET_FRACTION:g} of the backbone's stored bytes ({backbone:,} B)"
