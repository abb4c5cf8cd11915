"""Benchmark of the exit mechanisms: gNet (shared head) against per-exit branches.

For cnn_s and cnn_m on fashion_mnist and imu_cnn on watch_imu (pre-trained, cached): accuracy at
every exit point of the published gNet, of our gNet variants (ablation of training methods and of
pooling sizes) and of SDN-style branches; memory of each mechanism and the ratio; cost on the
MSP430FR5994 at calibrated thresholds. Writes bench/results/exits.json and exits.png.

    .venv/bin/python bench/exits.py [--train-limit 10000] [--epochs 30] [--models cnn_s,cnn_m,imu_cnn]

Heads are trained on a subset of the training data (``--train-limit``) to keep machine time
small; the backbones are the full pre-trained models.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path

import numpy as np

from freeml_keras import datasets, zoo
from freeml_keras import exits
from freeml_keras.exits import global_exit as ge

OUT = Path(__file__).resolve().parent / "results"
MODELS = {"cnn_s": "fashion_mnist", "cnn_m": "fashion_mnist", "imu_cnn": "watch_imu",
          "digits_cnn": "digits"}


def digits_cnn():
    """The digits CNN of issue 18 (two pooling stages: p1 4x4x16, p2 2x2x32), trained once with
    a fixed seed."""
    from freeml_keras.keras import keras
    tr, va, _ = datasets.load("digits")
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.MaxPooling2D(2, name="p1")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.MaxPooling2D(2, name="p2")(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(10, activation="softmax")(x)
    m = keras.Model(inp, out, name="digits_cnn")
    zoo.compile_for_training(m, 3e-3)
    m.fit(*tr, validation_data=va, epochs=40, batch_size=64, verbose=0)
    return m


def defaults_run(backbone, tr, va, te, branches: dict) -> dict:
    """gNet as a user gets it: ``attach_global_exit(model)`` and ``train_global_exit`` with
    their defaults; ``meets_targets``: the first exit within 5 points of the branches, every
    later one within 3, at 4x less head memory or better."""
    t0 = time.time()
    em = exits.attach_global_exit(backbone)
    exits.train_global_exit(em, tr, va, verbose=0)
    z = em.predict_exits(te[0])
    fp = exits.exit_footprint(em)
    te_acc = accs(z, te[1])
    gaps = [round(b - g, 4) for g, b in zip(te_acc, branches["test_exit_accuracy"])]
    return {"pooled_dims": em.pooled_dims, "pooling": em.info.get("pooling"),
            "method": em.info["method"], "scale": em.info["scale"],
            "head_bytes": fp["head_bytes"], "overhead_bytes": fp["overhead_bytes"],
            "head_ratio": round(branches["head_bytes"] / fp["head_bytes"], 2),
            "test_exit_accuracy": te_acc,
            "gap_to_branches": gaps,
            "meets_targets": bool(gaps[0] <= FIRST_GAP_TARGET and max(gaps[1:], default=0) <= GAP_TARGET
                                  and branches["head_bytes"] / fp["head_bytes"] >= RATIO_TARGET),
            "seconds": round(time.time() - t0, 1)}
METHODS = [("random", False, 0.0), ("balanced", False, 0.0), ("balanced", True, 0.0),
           ("balanced", False, 0.5), ("stagewise", False, 0.0), ("stagewise", True, 0.0),
           ("stagewise", False, 0.5)]
# (pooled size per spatial side, channel cap), each one value or one per exit point (more
# features early, where the gap to branches is largest)
POOLING = {"2d": [(1, None), (2, None), (2, 32), (3, 32), (4, 16), ((3, 1, 1), (32, None, None)),
                  ((3, 2, 1), (32, 16, None)), ((4, 2, 1), (16, 16, None)), ((3, 2, 1), None)],
           "1d": [(1, None), (2, None), (4, 32), (4, 16), (8, 16), ((8, 4, 2), 32),
                  ((8, 2, 1), (32, None, None)), ((4, 2, 1), None)]}
ABLATION_POOLING = {"2d": (2, None), "1d": (4, 32)}
RATIO_TARGET, GAP_TARGET = 4.0, 0.03
FIRST_GAP_TARGET = 0.05     # issue 18, with defaults: the first exit within 5 points
_DEFAULTS = inspect.signature(ge.train_global_exit).parameters
MIN_UPDATES, PATIENCE = _DEFAULTS["min_updates"].default, _DEFAULTS["patience"].default


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def accs(z: np.ndarray, y: np.ndarray) -> list[float]:
    return [round(float(np.mean(np.argmax(zk, -1) == y)), 4) for zk in z]


def gnet_run(backbone, data, pooling, method, scale, distill, args, feats_cache):
    (tr, va, te) = data
    pooling = tuple(tuple(p) if isinstance(p, (list, tuple)) else p for p in pooling)
    size, width = (list(p) if isinstance(p, tuple) else p for p in pooling)
    em = exits.attach_global_exit(backbone, "auto", pooled_size=size, max_width=width)
    key = pooling
    if key not in feats_cache:
        feats_cache[key] = (ge.extract(em, tr[0], va[0], verbose=0), em._pooled_and_output(te[0]))
    feats, te_out = feats_cache[key]
    t0 = time.time()
    exits.train_global_exit(em, tr, va, method=method, scale=scale, distill=distill,
                            epochs=args.epochs, learning_rate=args.lr, verbose=0, features=feats)
    seconds = time.time() - t0
    z_te = em.exit_logits_from_pooled(te_out[:-1])
    fp = exits.exit_footprint(em)
    return em, {"method": method, "scale": scale, "distill": distill,
                "pooled_size": pooling[0], "max_width": pooling[1], "pooled_dims": em.pooled_dims,
                "head_bytes": fp["head_bytes"], "overhead_bytes": fp["overhead_bytes"],
                "val_exit_accuracy": [round(a, 4) for a in em.info["val_exit_accuracy"]],
                "test_exit_accuracy": accs(z_te, te[1]), "train_seconds": round(seconds, 1)}


def bench_model(name: str, dataset: str, args) -> dict:
    say(f"== {name} on {dataset}")
    backbone = digits_cnn() if name == "digits_cnn" else zoo.pretrained(name, dataset, verbose=0)
    tr, va, te = datasets.load(dataset)
    tr = datasets.subset(tr, args.train_limit, 0)
    va = datasets.subset(va, args.val_limit, 0)
    data = (tr, va, te)
    kind = "1d" if len(backbone.inputs[0].shape) == 3 else "2d"
    backbone_acc = zoo.accuracy(backbone, te)
    feats_cache: dict = {}

    # The baseline: SDN branches trained with gNet's default recipe (no dropout, at least
    # ge's min_updates steps, the same patience), so that neither is under-trained against
    # the other.
    br = exits.attach_exit_branches(backbone, "auto", dropout=0.0)
    t0 = time.time()
    steps = -(-len(tr[1]) // 128)
    exits.train_exit_branches(br, tr, va, epochs=max(args.epochs, -(-MIN_UPDATES // steps)),
                              patience=PATIENCE, learning_rate=args.lr, verbose=0)
    z_br, final = br.predict_all(te[0])
    branches = {"pooled_dims": br.pooled_dims, "val_exit_accuracy": br.info["val_exit_accuracy"],
                "test_exit_accuracy": accs(z_br, te[1]), "train_seconds": round(time.time() - t0, 1),
                **{k: v for k, v in exits.exit_footprint(br).items()
                   if k in ("head_bytes", "head_params", "state_bytes", "scratch_bytes", "overhead_bytes")}}
    say(f"branches {branches['test_exit_accuracy']} overhead {branches['overhead_bytes']} B")
    defaults = defaults_run(backbone, tr, va, te, branches)
    say(f"defaults {defaults['test_exit_accuracy']} head {defaults['head_bytes']} B "
        f"({defaults['head_ratio']}x less than branches)")
    if args.defaults_only:
        return {"model": name, "dataset": dataset, "train_examples": len(tr[1]),
                "backbone_test_accuracy": round(backbone_acc, 4), "branches": branches,
                "defaults": defaults}

    _, published = gnet_run(backbone, data, POOLING[kind][0], "random", False, 0.0, args, feats_cache)
    say(f"published gNet {published['test_exit_accuracy']} overhead {published['overhead_bytes']} B")

    methods = []
    for method, scale, distill in METHODS:
        _, r = gnet_run(backbone, data, ABLATION_POOLING[kind], method, scale, distill, args, feats_cache)
        methods.append(r)
        say(f"method {method} scale={scale} distill={distill}: val {r['val_exit_accuracy']} "
            f"test {r['test_exit_accuracy']}")
    best_m = min(methods, key=lambda r: max(b - g for g, b in zip(r["val_exit_accuracy"],
                                                                  branches["val_exit_accuracy"])))
    best_key = (best_m["method"], best_m["scale"], best_m["distill"])

    pools, models = [], []
    for pooling in POOLING[kind]:
        em, r = gnet_run(backbone, data, pooling, *best_key, args, feats_cache)
        models.append(em)
        r["memory_ratio"] = round(branches["overhead_bytes"] / r["overhead_bytes"], 2)
        pools.append(r)
        say(f"pooling {pooling}: dims {r['pooled_dims']} ratio {r['memory_ratio']} "
            f"val {r['val_exit_accuracy']} test {r['test_exit_accuracy']}")
    # the smallest worst-exit validation gap to the branches among configurations meeting the
    # memory target
    ok = [r for r in pools if r["memory_ratio"] >= RATIO_TARGET] or pools
    chosen_r = min(ok, key=lambda r: max(b - g for g, b in zip(r["val_exit_accuracy"],
                                                               branches["val_exit_accuracy"])))
    em = models[pools.index(chosen_r)]
    cmp = exits.compare_mechanisms(em, br)
    gaps = [round(b - g, 4) for g, b in zip(chosen_r["test_exit_accuracy"], branches["test_exit_accuracy"])]
    chosen = {**chosen_r, "gap_to_branches": gaps, "max_gap": max(gaps),
              "memory_ratio": round(cmp["overhead_ratio"], 2), "head_ratio": round(cmp["head_ratio"], 2),
              "meets_gap_target": max(gaps) <= GAP_TARGET,
              "meets_ratio_target": cmp["overhead_ratio"] >= RATIO_TARGET}
    say(f"chosen {best_key} pooling {chosen['pooled_size']},{chosen['max_width']}: "
        f"{chosen['test_exit_accuracy']} gaps {gaps} ratio {chosen['memory_ratio']}")

    policies = {}
    va_acc = zoo.accuracy(backbone, va)
    for label, mech in (("gnet", em), ("branches", br)):
        for tname, kw in (("accuracy_within_1pt", {"target_accuracy": va_acc - 0.01}),
                          ("cost_half", {"target_cost": 0.5})):
            pol = exits.calibrate_thresholds(mech, va, device="msp430fr5994", **kw)
            res = exits.evaluate_policy(pol, mech, te)
            policies[f"{label}/{tname}"] = {"thresholds": pol.thresholds, **kw, **res,
                                            "full_energy_uj": round(sum(pol.segment_energy_j) * 1e6, 2)}
            say(f"policy {label} {tname}: acc {res['accuracy']:.4f} depth {res['mean_exit_depth']:.2f} "
                f"cost {res['mean_cost_fraction']:.3f}")
    segs = [{"name": s.name, "macs": s.macs, "bytes_moved": s.bytes_moved,
             "cycles": round(s.cycles), "energy_uj": round(s.energy_j * 1e6, 2)}
            for s in exits.segment_costs(em, "msp430fr5994")]
    def effect(r: dict) -> dict:
        te_acc = r["test_exit_accuracy"]
        return {"mean_test_accuracy": round(float(np.mean(te_acc)), 4),
                "worst_gap_to_branches": round(max(b - g for g, b in zip(te_acc, branches["test_exit_accuracy"])), 4)}
    labels = {("random", False, 0.0): "published training (random exit per example)",
              ("balanced", False, 0.0): "exit-balanced loss (all exits per example)",
              ("balanced", True, 0.0): "exit-balanced + per-exit feature scaling",
              ("balanced", False, 0.5): "exit-balanced + distillation from the backbone",
              ("stagewise", False, 0.0): "stagewise (boosted cascade)",
              ("stagewise", True, 0.0): "stagewise + per-exit feature scaling",
              ("stagewise", False, 0.5): "stagewise + distillation from the backbone"}
    ideas = {"published gNet (1x1 max-pool, random exit)": effect(published)}
    ideas.update({f"{labels[(r['method'], r['scale'], r['distill'])]} at pooling "
                  f"{ABLATION_POOLING[kind]}": effect(r) for r in methods})
    ideas[f"chosen pooling {chosen['pooled_size']}, {chosen['max_width']} with the best method"] = effect(chosen)
    return {"model": name, "dataset": dataset, "train_examples": len(tr[1]),
            "val_examples": len(va[1]), "test_examples": len(te[1]),
            "backbone_test_accuracy": round(backbone_acc, 4), "exit_points": em.exit_points,
            "branches": branches, "defaults": defaults, "published_gnet": published, "idea_effects": ideas,
            "ablation_methods_pooling": ABLATION_POOLING[kind], "ablation_methods": methods,
            "best_method": {"method": best_key[0], "scale": best_key[1], "distill": best_key[2]},
            "ablation_pooling": pools, "chosen_gnet": chosen,
            "footprint": {k: v for k, v in cmp.items()}, "msp430fr5994_segments": segs,
            "policies": policies}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, r in zip(axes[0], results):
        x = np.arange(len(r["exit_points"]))
        ax.plot(x, r["branches"]["test_exit_accuracy"], "s-",
                label=f"branches ({r['branches']['overhead_bytes']:,} B)")
        ax.plot(x, r["chosen_gnet"]["test_exit_accuracy"], "o-",
                label=f"gNet, ours ({r['chosen_gnet']['overhead_bytes']:,} B)")
        ax.plot(x, r["published_gnet"]["test_exit_accuracy"], "x--",
                label=f"gNet, published ({r['published_gnet']['overhead_bytes']:,} B)")
        ax.axhline(r["backbone_test_accuracy"], color="gray", ls=":", label="backbone output")
        ax.set_xticks(x, r["exit_points"])
        ax.set_title(f"{r['model']} / {r['dataset']}")
        ax.set_xlabel("exit point")
        ax.set_ylabel("test accuracy")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--train-limit", type=int, default=10000)
    p.add_argument("--val-limit", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--defaults-only", action="store_true",
                   help="only branches and gNet with attach/train defaults (no ablation)")
    p.add_argument("--out", default=str(OUT / "exits.json"))
    args = p.parse_args()
    t0 = time.time()
    results, skipped = [], []
    for name in args.models.split(","):
        dataset = MODELS[name]
        if name != "digits_cnn" and not zoo.pretrained_meta(name, dataset):
            skipped.append(f"{name}: no cached pre-trained model (run `freeml pretrain`)")
            say(skipped[-1])
            continue
        results.append(bench_model(name, dataset, args))
    out = {"command": " ".join(["bench/exits.py"] + sys.argv[1:]),
           "reduced": {"train_limit": args.train_limit, "val_limit": args.val_limit,
                       "epochs": args.epochs,
                       "note": "exit heads trained on a training subset (first --train-limit of a "
                               "fixed permutation); backbones are the full pre-trained models; "
                               "test sets complete"},
           "targets": {"memory_ratio": RATIO_TARGET, "max_gap": GAP_TARGET,
                       "defaults_first_exit_gap": FIRST_GAP_TARGET},
           "branch_baseline": "SDN-style: max-pool to 4x4 (2-D) or 16 positions (1-D), one Dense; "
                              "trained as gNet's defaults (no dropout, >= min_updates steps)",
           "skipped": skipped, "seconds": round(time.time() - t0, 1), "results": results}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    if results and not args.defaults_only:
        plot(results, path.with_suffix(".png"))
    say(f"wrote {path} in {out['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
