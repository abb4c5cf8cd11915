"""``freeml demo``: the main job on the embedded default, stage by stage, each stage cached
(see :mod:`freeml_keras.demo`)."""

from __future__ import annotations

import argparse

from freeml_keras.commands.data import add_data_options


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the end-to-end job on the embedded default",
                       description="Pre-trained cnn_s -> SparseComp to the device budget -> gNet "
                                   "-> int8 flatbuffer -> C runtime under power failures -> "
                                   "energy simulation -> report in runs/demo/. Stages are cached. "
                                   "Default data: fashion_mnist where installed, else mnist; with "
                                   "--data the demo's model is first trained on your data.")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--device", default="msp430fr5994")
    add_data_options(p, required=False)
    p.add_argument("--quick", action="store_true", help="6,000 training examples, short training")
    p.add_argument("--full", action="store_true", help="all training examples (default: 20,000)")
    p.add_argument("--restart-cycles", type=int, default=None, metavar="N",
                   help="cycles the simulation charges at every power-on (default: the warm "
                        "restart measured for the device, freeml_keras.costs.restart_cycles; "
                        "0: restarts free)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from freeml_keras.demo import DemoConfig, run_demo
    from freeml_keras import datasets
    if args.val_split is not None and not args.data:
        raise ValueError("--val-split goes with --data")
    if args.data:
        datasets.load_npz(args.data, val_split=args.val_split)      # a bad file fails here, in one line
    cfg = DemoConfig(out_dir=args.out, device=args.device, dataset=args.dataset, quick=args.quick,
                     restart_cycles=args.restart_cycles, data=args.data, val_split=args.val_split,
                     verbose=1)
    if args.full:
        cfg.train_limit = None
    run_demo(cfg, log=lambda s: print(s, flush=True))
    return 0
