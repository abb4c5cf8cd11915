"""``freeml inspect PATH``: memory, MACs and device fit of a Keras model or a .tflite file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from freeml_keras.cli import CommandError


def register(sub) -> None:
    p = sub.add_parser("inspect", help="per-layer memory and MACs of a model, and device fit",
                       description="Per-layer table (type, output shape, params, bytes by format, "
                                   "activation bytes, MACs), totals, and whether it fits a device.")
    p.add_argument("path", help="a Keras model (.keras, .h5; Keras 3 or tf_keras), a .tflite file or a "
                                "saved exit model directory")
    p.add_argument("--device", default="msp430fr5994", help="device profile (default msp430fr5994)")
    p.add_argument("--capacitor-uf", type=float, default=None,
                   help="storage capacitor (uF, charged 3.3 V -> 1.8 V): can one charge pay a restart and "
                        "the largest atomic step (.tflite only)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def footprint_of(path: Path):
    """The footprint of a model file: .tflite by its content, anything else loaded by Keras."""
    from freeml_keras import memory
    if not path.exists():
        raise CommandError(f"{path}: no such file or directory")
    if path.is_file() and (path.suffix == ".tflite" or path.read_bytes()[4:8] == b"TFL3"):
        from freeml_keras.format.tflite import TFLiteFormatError
        try:
            return memory.tflite_footprint(path.read_bytes())
        except TFLiteFormatError as e:
            raise CommandError(f"{path}: not a usable TFLite file: {e}") from None
    from freeml_keras.bridge import load_model
    model, _ = load_model(path)                  # Keras 3 or tf_keras
    return memory.keras_footprint(model)


def exits_of(path: Path) -> dict | None:
    """The exit points, head size and per-operator costs from a .tflite's freeml metadata."""
    if not (path.is_file() and path.read_bytes()[4:8] == b"TFL3"):
        return None
    from freeml_keras.format.metadata import MetadataError, read_metadata
    try:
        md = read_metadata(path.read_bytes())
    except MetadataError as e:
        raise CommandError(f"{path}: {e}") from None
    if md is None:
        return None
    names = md.info.get("exit_points")
    if not isinstance(names, list) or len(names) != len(md.exits):     # (a damaged file's JSON)
        names = [f"exit{i}" for i in range(len(md.exits))]
    names = [str(n) for n in names]
    return {"version": md.version, "num_classes": md.num_classes, "head_subgraph": md.head_subgraph,
            "head_weight_bytes": md.info.get("head_weight_bytes"),
            "exits": [{"name": n, "main_tensor": e.main_tensor, "after_op": e.after_op,
                       "head_input_tensor": e.head_input_tensor, "threshold": e.threshold,
                       "macs_to_here": sum(o.sparse_macs for o in md.ops[:e.after_op + 1])}
                      for n, e in zip(names, md.exits)],
            "op_costs": [vars(o) for o in md.ops], "policy": md.info.get("policy", {}),
            "cost": md.info.get("cost"),
            "cost_to_here": [sum(o.cost for o in md.ops[:e.after_op + 1]) for e in md.exits],
            "cost_total": sum(o.cost for o in md.ops)}


def prepared_of(path: Path) -> dict | None:
    """Whether a .tflite carries its operators' precomputed parameters (the ``freeml_prepare``
    entry), its model id and whether the id matches the file's bytes and the words the model's
    scales give now."""
    if not (path.is_file() and path.read_bytes()[4:8] == b"TFL3"):
        return None
    from freeml_keras.format.model import TFLiteModel
    from freeml_keras.format.prepared import PrepareError, model_id, operator_words, read_prepared
    from freeml_keras.format.tflite import TFLiteFormatError
    m = TFLiteModel(path.read_bytes())
    try:
        p = read_prepared(m)
        if p is None:
            return {"present": False}
        of_bytes = model_id(m.data)
    except (PrepareError, TFLiteFormatError) as e:
        return {"present": True, "error": str(e)}
    d = {"present": True, "version": p.version, "model_id": p.model_id,
         "model_id_of_bytes": of_bytes, "id_matches": p.model_id == of_bytes,
         "subgraphs": len(p.subgraphs),
         "words": sum(len(w) for ops in p.subgraphs.values() for w in ops)}
    try:
        now = operator_words(m)
        d["words_match"] = all(p.subgraphs.get(i) == ops for i, ops in enumerate(now)) and \
            len(p.subgraphs) == len(now)
    except PrepareError as e:
        d["words_match"], d["error"] = False, str(e)
    return d


def prepared_text(d: dict) -> str:
    if not d["present"]:
        return ("precomputed operator parameters: none (the runtime computes them from float "
                "scales at every power-on)")
    if "version" not in d:
        return f"precomputed operator parameters: present but unreadable ({d['error']})"
    text = (f"precomputed operator parameters: freeml_prepare v{d['version']}, {d['words']:,} words "
            f"for {d['subgraphs']} subgraph(s); model id 0x{d['model_id']:08x} "
            + ("(matches the bytes)" if d["id_matches"] else
               f"(does NOT match the bytes: 0x{d['model_id_of_bytes']:08x})"))
    if not d["words_match"]:
        text += "\n  the words differ from what the model's scales give now: the runtime refuses them" + \
            (f" ({d['error']})" if "error" in d else "")
    return text


def exits_table(d: dict) -> str:
    cost = d.get("cost")
    lines = [f"freeml metadata v{d['version']}: {len(d['exits'])} exit points" +
             (f", head subgraph {d['head_subgraph']} with " +
              (f"{d['head_weight_bytes']:,} B" if isinstance(d["head_weight_bytes"], int) else "an unknown size") +
              " of weights" if d["exits"] else "")]
    if cost:
        lines.append(f"per-operator costs: {cost['unit']} on {cost['target']} ({cost['source']}), "
                     f"{d['cost_total']:,} for the whole main subgraph")
    if d["exits"]:
        lines.append(f"{'exit':<24} {'after op':>8} {'tensor':>6} {'MACs to here':>13} "
                     f"{'cost to here':>13} {'threshold':>9}")
    for e, c in zip(d["exits"], d["cost_to_here"]):
        th = "-" if e["threshold"] > 1 else f"{e['threshold']:.3f}"
        lines.append(f"{e['name']:<24} {e['after_op']:>8} {e['main_tensor']:>6} "
                     f"{e['macs_to_here']:>13,} {(f'{c:,}' if cost else '-'):>13} {th:>9}")
    return "\n".join(lines)


def operators_of(path: Path) -> list[dict] | None:
    """Every operator of a .tflite's main subgraph with whether the C runtime runs it (see
    :func:`freeml_keras.runtime.operator_support`)."""
    if not (path.is_file() and path.read_bytes()[4:8] == b"TFL3"):
        return None
    from freeml_keras.format.tflite import TFLiteFormatError
    from freeml_keras.runtime import operator_support
    try:
        return operator_support(path.read_bytes())
    except TFLiteFormatError as e:
        raise CommandError(f"{path}: not a usable TFLite file: {e}") from None


def operators_text(rows: list[dict]) -> str:
    bad = [r for r in rows if not r["supported"]]
    w = max([24] + [len(r["name"]) for r in rows])       # (UNIDIRECTIONAL_SEQUENCE_LSTM: 28)
    lines = [f"operators: {len(rows)}, " + ("all supported by the C runtime" if not bad else
                                             f"{len(bad)} NOT supported by the C runtime"),
             f"{'#':>4} {'operator':<{w}} {'supported':<9} why not"]
    for r in rows:
        lines.append(f"{r['index']:>4} {r['name']:<{w}} {'yes' if r['supported'] else 'no':<9} {r['reason']}")
    return "\n".join(lines)


def atomic_steps_of(path: Path, device: str, capacitor_uf: float | None = None) -> dict | None:
    """The runtime's atomic steps at its default granularity for a .tflite: how many, the
    largest in MAC-equivalents and, when the metadata has costs for the device's core, in
    cycles, energy and the smallest capacitor whose charge (3.3 V to 1.8 V) pays for it."""
    if not (path.is_file() and path.read_bytes()[4:8] == b"TFL3"):
        return None
    from freeml_keras import costs, devices
    from freeml_keras.energy import Capacitor
    from freeml_keras.runtime.intermittent import DEFAULT_STEP_WORK, atomic_steps, plan
    from freeml_keras.format.metadata import read_metadata
    from freeml_keras.runtime import Interpreter, RuntimeModelError
    b = path.read_bytes()
    try:
        Interpreter(b)                        # the runtime's refusal, in its words
        p = plan(b)
    except (RuntimeError, RuntimeModelError) as e:   # the runtime refuses the model
        return {"error": str(e)}
    d = {"step_work": DEFAULT_STEP_WORK, "steps": len(p["steps"]),
         "largest_step_work": p["largest_step_work"], "largest_step_op": p["largest_step_work_op"]}
    md = read_metadata(b)
    dev = devices.get(device)
    cost = md.info.get("cost") if md else None
    try:
        from freeml_keras.energy.livelock import power_on_budget
        d["power_on"] = power_on_budget(b, dev, Capacitor(capacitance_f=capacitor_uf * 1e-6)
                                        if capacitor_uf else None)
        d["power_on"]["cold_init"] = costs.restart_cost(dev, what="cold_init")
    except costs.CostTableError as e:
        d["power_on"] = {"error": str(e), "restart": costs.restart_cost(dev),
                         "unit": "cycles" if costs.target_of(dev) == "msp430" else "instructions"}
    if cost and cost["target"] == costs.target_of(dev):
        big = max(atomic_steps(b), key=lambda s: s.cycles)
        cap = Capacitor(capacitance_f=1.0)
        energy = big.cycles * dev.energy_per_cycle_j
        d.update(largest_step_cycles=big.cycles, largest_step_cycles_op=big.op,
                 largest_step_energy_j=energy, cost_unit=cost["unit"], cost_source=cost["source"],
                 min_capacitance_f=2 * energy / (cap.v_on ** 2 - cap.v_off ** 2))
    return d


def steps_text(d: dict, device: str) -> str:
    if "error" in d:
        return f"atomic steps: the runtime refuses this model ({d['error']})"
    text = (f"atomic steps (default, at most {d['step_work']:,} MAC-equivalents each): {d['steps']}, "
            f"the largest {d['largest_step_work']:,} MAC-equivalents (operator {d['largest_step_op']})")
    if "largest_step_cycles" in d:
        text += (f"\n  priced by the metadata ({d['cost_source']} {d['cost_unit']}): the largest "
                 f"{d['largest_step_cycles']:,} (operator {d['largest_step_cycles_op']}), "
                 f"{1e6 * d['largest_step_energy_j']:.1f} uJ on {device}: one charge of at least "
                 f"{1e6 * d['min_capacitance_f']:.1f} uF between 3.3 V and 1.8 V")
    po = d.get("power_on")
    if po and "error" not in po:
        u = po["unit"]
        text += (f"\npower-on to progress on {po['device']}: restart {po['restart']:,} {u} (measured, "
                 f"{1e6 * po['restart'] * po['needed_j'] / max(po['needed_cycles'], 1):.2f} uJ; the first "
                 f"power-on prepares, up to {po['cold_init']:,} measured, once) + largest atomic step {po['largest_step']:,} "
                 f"({po['step_mode']} mode) = {po['needed_cycles']:,} {u}, {1e6 * po['needed_j']:.1f} uJ: "
                 f"one charge of at least {1e6 * po['min_capacitance_f']:.2f} uF (3.3 V -> 1.8 V)")
        if "finishes" in po:
            text += ("\n  this capacitor finishes the model" if po["finishes"] else
                     f"\n  this capacitor CANNOT finish the model: one charge gives {1e6 * po['charge_j']:.1f} uJ, "
                     f"short by {1e6 * po['shortfall_j']:.1f} uJ (every power-on would restart and fail)")
    elif po:
        text += (f"\npower-on to progress: restart {po['restart']:,} {po['unit']} (measured); {po['error']}")
    return text


def run(args: argparse.Namespace) -> int:
    from freeml_keras import devices
    path = Path(args.path)
    exit_dir = path.is_dir() and (path / "exit_model.json").exists()
    if exit_dir:
        from freeml_keras.exits import inspect_exit_model
        d, text = inspect_exit_model(path)
        print(json.dumps(d, indent=2) if args.json else text)
        return 0
    fp = footprint_of(path)
    fit = fp.fits(devices.get(args.device))
    exits = exits_of(path)
    prepared = prepared_of(path)
    operators = operators_of(path)
    steps = atomic_steps_of(path, args.device, args.capacitor_uf)
    if args.json:
        print(json.dumps({**fp.to_dict(), "fits": fit, "exits": exits, "prepared": prepared,
                          "operators": operators, "atomic_steps": steps}, indent=2))
        return 0
    print(f"{args.path} ({fp.source})")
    print(fp.table())
    if operators is not None:
        print()
        print(operators_text(operators))
    if exits is not None:
        print()
        print(exits_table(exits))
    if prepared is not None:
        print()
        print(prepared_text(prepared))
    if steps is not None:
        print()
        print(steps_text(steps, args.device))
    dev = devices.get(args.device)
    print(f"\n{dev.name}: parameters {fp.flash_bytes:,} B of {dev.model_budget_bytes:,} B budget "
          f"({'fits' if fit['flash_ok'] else 'does NOT fit'}); activations + checkpoint "
          f"{fp.arena_bytes + fp.checkpoint_bytes:,} B of {dev.ram_budget_bytes:,} B "
          f"({'fits' if fit['ram_ok'] else 'does NOT fit'})")
    return 0
