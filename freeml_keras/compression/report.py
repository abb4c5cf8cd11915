"""What SparseComp tells: the report of a run (a dict, ``report.json``), its readable table
(``report.txt``) and the progress lines printed as it goes."""

from __future__ import annotations

import json
from pathlib import Path

from freeml_keras import memory
from freeml_keras.compression.budget import Budget
from freeml_keras.compression.state import JobState
from freeml_keras.keras import keras

__all__ = ["build_report", "format_report", "write_report", "start_line", "step_line"]


def build_report(model: "keras.Model", state: JobState, budget: Budget) -> dict:
    """The report of the run in ``state`` whose current model is ``model``."""
    fp = memory.keras_footprint(model)
    base = state.baseline
    acc = state.current_accuracy()
    final = {"weight_bytes": fp.weight_bytes, "peak_ram_bytes": fp.arena_bytes + fp.checkpoint_bytes,
             "arena_bytes": fp.arena_bytes, "checkpoint_bytes": fp.checkpoint_bytes,
             "params": fp.totals["params"], "val_accuracy": acc,
             "layers": {r.name: {"type": r.type, "stored_bytes": r.stored_bytes,
                                 "format": r.stored_format, "density": round(r.density, 4),
                                 "output_shape": list(r.output_shape)}
                        for r in fp.layers if r.params}}
    steps = state.steps
    return {
        "model": model.name, "budget": state.budget,
        "options": state.options, "baseline": base,
        "reference_accuracy": state.reference_accuracy, "final": final,
        "meets_budget": ((budget.flash_bytes is None or fp.weight_bytes <= budget.flash_bytes)
                         and (budget.ram_bytes is None or
                              final["peak_ram_bytes"] <= budget.ram_bytes)),
        "ratio_to_fp32": base["fp32_bytes"] / max(1, fp.weight_bytes),
        "ratio_to_int8_dense": base["int8_dense_bytes"] / max(1, fp.weight_bytes),
        "accuracy_drop": base["val_accuracy"] - acc,
        "ram_reduction": [s for s in steps if s["phase"] == "ram"],
        "factorization": [s for s in steps if s["phase"] == "factorize"],
        "fragile": state.fragile, "narrow_fragile": state.narrow_fragile,
        "all_fragile_from_step": state.all_fragile_from_step,
        "steps": steps, "notes": state.notes, "phase": state.phase,
    }


def _outcome(rec: dict) -> str:
    """What became of a step: "fragile, undone", "kept" or "not kept"."""
    if rec.get("fragile"):
        return "fragile, undone"
    return "kept" if rec.get("accepted", True) else "not kept"


def format_report(rep: dict, footprint: memory.Footprint | None = None) -> str:
    """A readable table of a SparseComp report (and of the final footprint, if given)."""
    b = rep["baseline"]
    f = rep["final"]
    lines = [f"SparseComp report for {rep['model']}",
             f"budget: stored {rep['budget']['flash_bytes'] or '-'} B, RAM {rep['budget']['ram_bytes'] or '-'} B"
             f"{' (device ' + rep['budget']['device'] + ')' if rep['budget'].get('device') else ''}",
             f"baseline: stored {b['weight_bytes']:,} B (fp32 {b['fp32_bytes']:,} B, int8 dense "
             f"{b['int8_dense_bytes']:,} B), peak RAM {b['peak_ram_bytes']:,} B, val acc {b['val_accuracy']:.4f}",
             f"final:    stored {f['weight_bytes']:,} B, peak RAM {f['peak_ram_bytes']:,} B, "
             f"val acc {f['val_accuracy']:.4f} (drop {rep['accuracy_drop'] * 100:+.2f} points), "
             f"{rep['ratio_to_fp32']:.1f}x smaller than fp32, {rep['ratio_to_int8_dense']:.1f}x than int8 dense",
             f"meets budget: {rep['meets_budget']}", ""]
    head = ("step", "phase", "kind", "layer", "change", "stored B", "RAM B", "val acc", "result")
    rows = [head]
    for s in rep["steps"]:
        res = _outcome(s)
        if res == "not kept":
            res += " " + s.get("reason", "")
        if s.get("by_size_alone"):
            res += " (by size alone)"
        rows.append((str(s["step"]), s["phase"], s["kind"], s.get("layer", ""), s.get("change", ""),
                     f"{s['weight_bytes_now']:,}", f"{s['peak_ram_bytes_now']:,}",
                     f"{s['val_accuracy']:.4f}", res))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.rjust(w) if j in (0, 5, 6, 7) else c.ljust(w)
                               for j, (c, w) in enumerate(zip(r, widths))).rstrip())
        if i == 0:
            lines.append("-" * sum(widths + [2 * (len(widths) - 1)]))
    if rep.get("fragile"):
        lines.append(f"\nfragile layers: {', '.join(rep['fragile'])}")
    if rep.get("narrow_fragile"):
        lines.append(f"layers not narrowed further (a narrowing failed): {', '.join(rep['narrow_fragile'])}")
    for n in rep.get("notes", []):
        lines.append(f"note: {n}")
    if footprint is not None:
        lines += ["", footprint.table()]
    return "\n".join(lines)


def write_report(out: Path, rep: dict, model: "keras.Model") -> None:
    """Writes ``report.json`` and ``report.txt`` (with ``model``'s footprint) to ``out``."""
    (out / "report.json").write_text(json.dumps(rep, indent=1))
    (out / "report.txt").write_text(format_report(rep, memory.keras_footprint(model)) + "\n")


def start_line(model: "keras.Model", state: JobState, budget: Budget, seconds: float) -> str:
    """The progress line that opens a run."""
    b = state.baseline
    return (f"SparseComp: {model.name}, stored {b['weight_bytes']:,} B, peak RAM "
            f"{b['peak_ram_bytes']:,} B, val acc {b['val_accuracy']:.4f}; budget "
            f"{budget.flash_bytes or '-'} B stored, {budget.ram_bytes or '-'} B RAM"
            f" ({seconds:.1f} s)")


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def step_line(rec: dict, budget: Budget, reference_accuracy: float | None) -> str:
    """The progress line of a recorded step."""
    flash = budget.flash_bytes
    tag = _outcome(rec)
    if rec.get("by_size_alone"):
        tag += ", by size alone"
    return (f"[step {rec['step']:3d}] {rec['phase']:<9} {rec['kind']:<16} {rec.get('layer', ''):<14} "
            f"{rec.get('change', ''):<22} stored {rec['weight_bytes_now']:>9,} B"
            f"{f' / {flash:,}' if flash else ''}  RAM {rec['peak_ram_bytes_now']:>8,} B  "
            f"val acc {rec.get('val_accuracy'):.4f} (ref {_fmt(reference_accuracy)})  {tag}"
            f"  {rec['seconds']:.1f} s")
