"""The demo model on the MSP430FR5994 as the converter's 30% rule stored it and with dense or
CSR chosen per layer by the MSP430's cost model (``conversion.layouts.relayout``): the
provisioned build from its image under ``mspdebug sim`` (``targets.power.measure_provisioned``),
cycles per inference, answers compared with the host's.

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
    chosen, choices = relayout(b, "msp430")
    res = {"command": "python bench/layout_demo.py " + " ".join(argv), "model": str(args.demo_model),
           "choices": [c.__dict__ for c in choices]}
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in (("converter_30pct_rule", b), ("per_layer_choice_msp430", chosen)):
            res[name] = run(data, Path(tmp) / name)
            print(name, res[name], flush=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
