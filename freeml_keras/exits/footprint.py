"""Memory and work of the exit mechanism: the shared head (gNet), per-exit branches, no exits.

For each mechanism:
- ``head_bytes``: stored parameters of the exit classifiers in the runtime's int8 format, by the
  footprint rules of :mod:`freeml_keras.memory` (``keras_footprint(...).weight_bytes``).
- ``state_bytes``: runtime memory the mechanism keeps from one exit point to the next. gNet
  keeps the int32 accumulator (4 B per class); without incremental evaluation it would keep the
  pooled features of all exit points (``state_bytes_without_incremental``); branches keep
  nothing between exit points.
- ``scratch_bytes``: memory used while an exit is evaluated: the pooled int8 vector of the exit
  point and the int32 logits (branches), or the pooled vector (gNet adds into the accumulator).
- ``overhead_bytes`` = head + state + scratch: what the mechanism adds to the model.
- ``exit_macs``: MACs of the exit classifier at each exit point; ``macs_to_exit``: backbone MACs
  up to the exit point plus every exit evaluated on the way (anytime inference evaluates each).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from freeml_keras import memory
from freeml_keras.costs import keras_layer_ops
from freeml_keras.keras import keras

__all__ = ["exit_footprint", "compare_mechanisms", "exit_table", "inspect_exit_model",
           "is_exit_model_dir", "layer_work"]

ACCUMULATOR_BYTES = 4  # int32 per class


def layer_work(backbone: "keras.Model") -> list[dict]:
    """Per backbone layer (model order): name, MACs, stored weight bytes, int8 activation bytes
    read and written (0 for layers the converter folds away), and the TFLite operators it
    becomes (:func:`freeml_keras.costs.keras_layer_ops`)."""
    fp = memory.keras_footprint(backbone)
    rows = []
    for layer, row in zip(backbone.layers, fp.layers):
        ins = layer.input if isinstance(layer.input, list) else [layer.input]
        active = row.activation_bytes > 0 and row.type != "InputLayer"
        rows.append({"name": row.name, "macs": int(row.macs), "weight_bytes": int(row.stored_bytes),
                     "read_bytes": int(sum(np.prod(t.shape[1:]) for t in ins)) if active else 0,
                     "written_bytes": int(row.activation_bytes) if active else 0,
                     "ops": keras_layer_ops(layer, int(row.macs), int(row.sparse_macs),
                                            int(row.activation_bytes))})
    return rows


def _mechanism(obj) -> str:
    from freeml_keras.exits.branches import ExitBranches
    from freeml_keras.exits.global_exit import ExitModel
    if isinstance(obj, ExitModel):
        return "gnet"
    if isinstance(obj, ExitBranches):
        return "branches"
    if isinstance(obj, keras.Model):
        return "none"
    raise TypeError(f"expected an ExitModel, ExitBranches or keras.Model, got {type(obj).__name__}")


def exit_footprint(obj) -> dict:
    """Memory and MACs of the exit mechanism of an ExitModel (gNet), ExitBranches, or a plain
    Keras model (no exits)."""
    kind = _mechanism(obj)
    backbone = obj if kind == "none" else obj.backbone
    work = layer_work(backbone)
    backbone_macs = sum(w["macs"] for w in work)
    C = int(backbone.outputs[-1].shape[-1])
    d = {"mechanism": kind, "model": backbone.name, "num_classes": C,
         "backbone_macs": backbone_macs,
         "backbone_weight_bytes": memory.keras_footprint(backbone).weight_bytes}
    if kind == "none":
        d.update(exit_points=[], pooled_dims=[], head_params=0, head_bytes=0, state_bytes=0,
                 scratch_bytes=0, overhead_bytes=0, exit_macs=[], macs_to_exit=[],
                 macs_to_final=backbone_macs)
        return d
    names = [w["name"] for w in work]
    dims = obj.pooled_dims
    exit_macs = [int(p * C) for p in dims]
    if kind == "gnet":
        head = memory.keras_footprint(obj.head_model())
        head_bytes, params = head.weight_bytes, int(obj.kernel.size + obj.bias.size)
        state = ACCUMULATOR_BYTES * C
        scratch = max(dims)
        d["state_bytes_without_incremental"] = int(sum(dims))
    else:
        fps = [memory.keras_footprint(m) for m in obj.branch_models()]
        head_bytes = sum(f.weight_bytes for f in fps)
        params = int(sum(w.size + b.size for w, b in obj.weights))
        state = 0
        scratch = max(dims) + ACCUMULATOR_BYTES * C
    macs_to_exit = []
    for k, name in enumerate(obj.exit_points):
        upto = names.index(name)
        macs_to_exit.append(int(sum(w["macs"] for w in work[:upto + 1]) + sum(exit_macs[:k + 1])))
    if kind == "gnet" and "pooling" in obj.info:
        d["pooling_choice"] = obj.info["pooling"]
    d.update(exit_points=list(obj.exit_points), pooled_dims=[int(p) for p in dims],
             head_params=params, head_bytes=int(head_bytes), state_bytes=int(state),
             scratch_bytes=int(scratch), overhead_bytes=int(head_bytes + state + scratch),
             exit_macs=exit_macs, macs_to_exit=macs_to_exit,
             macs_to_final=int(backbone_macs + sum(exit_macs)))
    return d


def compare_mechanisms(gnet, branches=None) -> dict:
    """Footprints of gNet, branches (if given) and no exits, with the branches / gNet ratios
    of head bytes and of total overhead."""
    out = {"gnet": exit_footprint(gnet), "none": exit_footprint(gnet.backbone)}
    if branches is not None:
        out["branches"] = exit_footprint(branches)
        g, b = out["gnet"], out["branches"]
        out["head_ratio"] = b["head_bytes"] / g["head_bytes"]
        out["overhead_ratio"] = b["overhead_bytes"] / g["overhead_bytes"]
    return out


def exit_table(d: dict) -> str:
    """A readable table of :func:`exit_footprint` or :func:`compare_mechanisms` output."""
    fps = [d] if "mechanism" in d else [d[k] for k in ("none", "gnet", "branches") if k in d]
    lines = []
    for f in fps:
        if f["mechanism"] == "none":
            lines.append(f"no exits: backbone {f['backbone_weight_bytes']:,} B weights, "
                         f"{f['backbone_macs']:,} MACs")
            continue
        title = "gNet (shared head)" if f["mechanism"] == "gnet" else "per-exit branches"
        lines += [f"{title}: head {f['head_bytes']:,} B int8 ({f['head_params']:,} params), "
                  f"state {f['state_bytes']:,} B, scratch {f['scratch_bytes']:,} B, "
                  f"overhead {f['overhead_bytes']:,} B"]
        if "pooling_choice" in f:
            pc = f["pooling_choice"]
            lines.append(f"  head budget {pc['head_budget_bytes']:,} B ({pc['rule']}); pooling "
                         "chosen per exit point: " + ", ".join(
                             f"{c['exit_point']} {c['pooled_size'] or '-'}/{c['max_width'] or 'all'}"
                             f" ({c['pooled_dim']})" for c in pc["choice"]))
        if "state_bytes_without_incremental" in f:
            lines.append(f"  (without incremental evaluation the pooled features would need "
                         f"{f['state_bytes_without_incremental']:,} B of state)")
        rows = [("exit", "layer", "pooled", "exit MACs", "MACs to exit", "% of final")]
        for k, name in enumerate(f["exit_points"]):
            rows.append((str(k), name, str(f["pooled_dims"][k]), f"{f['exit_macs'][k]:,}",
                         f"{f['macs_to_exit'][k]:,}",
                         f"{100 * f['macs_to_exit'][k] / f['macs_to_final']:.1f}"))
        rows.append(("final", "(backbone output)", "-", "-", f"{f['macs_to_final']:,}", "100.0"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["  " + "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    if "overhead_ratio" in d:
        lines.append(f"branches / gNet: head {d['head_ratio']:.2f}x, overhead {d['overhead_ratio']:.2f}x")
    return "\n".join(lines)


def is_exit_model_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory written by ExitModel.save."""
    return (Path(path) / "exit_model.json").is_file()


def inspect_exit_model(path: str | Path) -> tuple[dict, str]:
    """For ``freeml inspect`` on a saved exit model: (dict, readable table) of the exit
    mechanism next to the backbone without exits, and the saved training record."""
    from freeml_keras.exits.global_exit import ExitModel
    em = ExitModel.load(path)
    d = compare_mechanisms(em)
    d["info"] = em.info
    text = exit_table(d)
    if em.info.get("val_exit_accuracy"):
        text += "\nvalidation accuracy per exit: " + " ".join(
            f"{a:.3f}" for a in em.info["val_exit_accuracy"])
    return json.loads(json.dumps(d)), text
