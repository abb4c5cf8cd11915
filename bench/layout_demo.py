"""The demo model as the converter's 30% rule stored it and with dense or CSR chosen per layer
by each target's cost model (``conversion.layouts.relayout``): on the MSP430FR5994 the
provisioned build from its image under ``mspdebug sim`` (``targets.power.measure_provisioned``,
cycles per inference), on the Cortex-M4 ``targets.run_model`` (instructions per inference);
answers compared with the host's.

    .venv/bin/python bench/layout_demo.py [--demo-model runs/demo/model.tflite]
    # bench/results/layout_demo.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from freeml_keras import memory
from freeml_keras.conversion.layouts import relayout
from freeml_keras.runtime import Interpreter
from freeml_keras.targets import image, power

DEVICE = "msp430fr5994"
RESULTS = Path(__file__).resolve().parent / "results"


def run_m4(b: bytes, work: Path) -> dict:
    from freeml_keras import targets as T

    it = Interpreter(b)
    x = np.random.default_rng(0).integers(-128, 128, size=it.inputs[0]["shape"]).astype(np.int8)
    want = it.invoke(x)[0].ravel().tolist()
    r = T.run_model("cortex_m4", b, x[0], work)
    return {"inference_instructions": r.invoke_cost, "bit_exact": r.output == want and r.output_invoke == want,
            "csr_layers": [(l.op_index, l.type) for l in memory.tflite_footprint(b).layers
                           if l.subgraph == 0 and l.stored_format == "int8_csr"]}


def run(b: bytes, work: Path) -> dict:
    linked = image.link(b, DEVICE, work / "link", build="provisioned")
    if not linked["linked"]:
        return {"fits": False, "overflow": linked["overflow"]}
    blk = linked["estimate"]["blocks"]
    it = Interpreter(b)
    x = np.random.default_rng(0).integers(-128, 128, size=it.inputs[0]["shape"]).astype(np.int8)
    want = it.invoke(x)[0].ravel().tolist()
    p = power.provision(b, x[0], work / "run", sizes=[blk["state"], blk["arena"], blk["head_state"], blk["head_arena"]],
                        inferences=2)
    c = power.measure_provisioned(p)
    return {"fits": True, "inference_cycles": c["inference"], "bit_exact": c["answer"][1] == want,
            "csr_layers": [(l.op_index, l.type) for l in memory.tflite_footprint(b).layers
                           if l.subgraph == 0 and l.stored_format == "int8_csr"]}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-model", type=Path, default=Path("runs/demo/model.tflite"))
    ap.add_argument("--out", type=Path, default=RESULTS / "layout_demo.json")
    args = ap.parse_args(argv)
    b = args.demo_model.read_bytes()
    res = {"command": "python bench/layout_demo.py " + " ".join(argv), "model": str(args.demo_model)}
    with tempfile.TemporaryDirectory() as tmp:
        for target, fn in (("msp430", run), ("cortex_m4", run_m4)):
            chosen, choices = relayout(b, target)
            res[target] = {"choices": [c.__dict__ for c in choices]}
            for name, data in (("converter_30pct_rule", b), ("per_layer_choice", chosen)):
                res[target][name] = fn(data, Path(tmp) / f"{target}-{name}")
                print(target, name, res[target][name], flush=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
