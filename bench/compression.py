"""Benchmark: SparseComp against tfmot's own recipe at the same stored bytes.

For each (model, dataset) pre-trained by ``zoo.pretrained``, compress to a ladder of budgets
and record per point: stored bytes (``memory.keras_footprint(m).weight_bytes``), ratio to the
fp32 dense and int8 dense model, test accuracy of the full-int8 TFLite model (tf.lite
interpreter) and its drop against the int8 baseline, peak RAM (activations + checkpoint
state), wall time. Side by side, at the bytes SparseComp reached: tfmot's recipe -
``prune_low_magnitude`` on every prunable layer with ``PolynomialDecay`` to the uniform
sparsity whose stored size matches, then int8 QAT keeping the sparsity
(``Default8BitPrunePreserveQuantizeScheme``).

Writes ``bench/results/compression.json`` and ``compression.png`` (accuracy vs bytes);
``--tag T`` writes ``compression-T.json`` / ``.png`` instead.

    .venv/bin/python bench/compression.py            # the full benchmark (hours on 2 cores)
    .venv/bin/python bench/compression.py --quick    # cnn_s / fashion_mnist, 3 points, subsets
    .venv/bin/python bench/compression.py --pairs mlp:digits --budgets 4 --no-tfmot --tag digits
                                                     # the digits MLP of issue 18 (a minute)

Budget names: a number is KB of stored parameters (no RAM budget); a device name
(``msp430fr5994``) uses both of the device's budgets; ``FLASH:RAM`` is both in bytes (the demo's
memory-map budget on the MSP430FR5994 is ``11015:7342``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from freeml_keras import datasets, memory, zoo  # noqa: E402
from freeml_keras.compression import pruning  # noqa: E402
from freeml_keras.conversion import converter  # noqa: E402
from freeml_keras.keras import keras, tf  # noqa: E402
from freeml_keras.compression.sparsecomp import Budget, BudgetUnreachable, compress  # noqa: E402

import tensorflow_model_optimization as tfmot  # noqa: E402

FULL_PAIRS = ("cnn_s:fashion_mnist", "cnn_s:mnist", "cnn_m:fashion_mnist", "cnn_m:mnist",
              "imu_cnn:watch_imu")
FULL_BUDGETS = ("64", "32", "16", "8", "msp430fr5994")


def int8_test_accuracy(model: "keras.Model", calibration: np.ndarray, data) -> float:
    """Top-1 accuracy of the full-int8 TFLite model (dense weights: same values) on ``data``."""
    flat = converter.convert(model, calibration, sparse=False)
    it = tf.lite.Interpreter(model_content=flat)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    scale, zero = inp["quantization"]
    x, y = data
    correct = 0
    for start in range(0, len(x), 1000):
        xb = x[start:start + 1000]
        it.resize_tensor_input(inp["index"], (len(xb),) + tuple(xb.shape[1:]))
        it.allocate_tensors()
        it.set_tensor(inp["index"], np.clip(np.round(xb / scale + zero), -128, 127).astype(np.int8))
        it.invoke()
        correct += int(np.sum(np.argmax(it.get_tensor(out["index"]), -1) == y[start:start + 1000]))
    return correct / len(x)


def _clone(model):
    m = keras.models.clone_model(model)
    m.set_weights(model.get_weights())
    return m


def _uniform_bytes(model, sparsity: float) -> int:
    m = _clone(model)
    for layer in m.layers:
        if type(layer).__name__ in pruning.PRUNABLE_TYPES:
            w = layer.get_weights()
            w[0] = pruning.hard_threshold(w[0], 1.0 - sparsity)
            layer.set_weights(w)
    return memory.keras_footprint(m).weight_bytes


def matching_sparsity(model, target_bytes: int, cap: float = 0.995) -> tuple[float, bool]:
    """Smallest uniform sparsity whose stored size is at most ``target_bytes`` (or ``cap``)."""
    if _uniform_bytes(model, cap) > target_bytes:
        return cap, False
    lo, hi = 0.0, cap
    for _ in range(14):
        mid = (lo + hi) / 2
        if _uniform_bytes(model, mid) <= target_bytes:
            hi = mid
        else:
            lo = mid
    return hi, True


def tfmot_recipe(base, target_bytes: int, tr, va, *, epochs: int, qat_epochs: int,
                 batch_size: int, seed: int = 0) -> dict:
    """prune_low_magnitude + PolynomialDecay to the matching sparsity, then int8 QAT."""
    t0 = time.time()
    sparsity, reachable = matching_sparsity(base, target_bytes)
    keras.utils.set_random_seed(seed)
    steps = epochs * math.ceil(len(tr[0]) / batch_size)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0,
        end_step=max(1, int(0.7 * steps)), frequency=max(1, steps // 100))
    pruned = tfmot.sparsity.keras.prune_low_magnitude(_clone(base), pruning_schedule=schedule)
    zoo.compile_for_training(pruned, 5e-4)
    pruned.fit(*tr, validation_data=va, epochs=epochs, batch_size=batch_size, verbose=0,
               callbacks=pruning.pruning_callbacks())
    plain = tfmot.sparsity.keras.strip_pruning(pruned)
    masks = pruning.zero_masks(plain)
    q = pruning.quantize_aware(plain)
    zoo.compile_for_training(q, 2.5e-4)
    q.fit(*tr, validation_data=va, epochs=qat_epochs, batch_size=batch_size, verbose=0)
    final = pruning.strip_quantization(q, plain)
    pruning.apply_zero_masks(final, masks)
    fp = memory.keras_footprint(final)
    return {"model": final, "sparsity": round(sparsity, 4), "sparsity_reaches_bytes": reachable,
            "weight_bytes": fp.weight_bytes, "peak_ram_bytes": fp.arena_bytes + fp.checkpoint_bytes,
            "epochs": epochs, "qat_epochs": qat_epochs, "seconds": round(time.time() - t0, 1)}


def budget_of(name: str) -> Budget:
    if ":" in name:                             # FLASH:RAM in bytes (the demo's memory-map budget)
        flash, ram = name.split(":")
        return Budget(int(flash), int(ram))
    try:
        return Budget(int(float(name) * 1024))
    except ValueError:
        return Budget.of(name)


def digits_mlp() -> "keras.Model":
    """The digits MLP of issue 18 (64-256-128-10), trained once with a fixed seed."""
    tr, va, _ = datasets.load("digits")
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(),
                          keras.layers.Dense(256, activation="relu"),
                          keras.layers.Dense(128, activation="relu"),
                          keras.layers.Dense(10, activation="softmax")], name="digits_mlp")
    zoo.compile_for_training(m, 1e-3)
    m.fit(*tr, validation_data=va, epochs=60, batch_size=32, verbose=0,
          callbacks=[keras.callbacks.EarlyStopping(patience=10, restore_best_weights=True)])
    return m


def run_pair(name: str, dataset: str, budgets, args, runs_dir: Path) -> dict:
    base = digits_mlp() if (name, dataset) == ("mlp", "digits") else zoo.pretrained(name, dataset)
    tr, va, te = datasets.load(dataset)
    tr_sub = datasets.subset(tr, args.train_limit)
    te_sub = datasets.subset(te, args.test_limit)
    calib = tr[0][:200]
    fp = memory.keras_footprint(base)
    base_acc = int8_test_accuracy(base, calib, te_sub)
    entry = {"model": name, "dataset": dataset, "params": fp.totals["params"],
             "fp32_bytes": fp.totals["fp32"], "int8_dense_bytes": fp.totals["int8"],
             "peak_ram_bytes": fp.arena_bytes + fp.checkpoint_bytes,
             "int8_test_accuracy": base_acc, "points": []}
    print(f"== {name} on {dataset}: {fp.totals['params']:,} params, fp32 {fp.totals['fp32']:,} B, "
          f"int8 {fp.totals['int8']:,} B, int8 test acc {base_acc:.4f}", flush=True)
    for bname in budgets:
        budget = budget_of(bname)
        t0 = time.time()
        point = {"budget": bname, "flash_budget_bytes": budget.flash_bytes,
                 "ram_budget_bytes": budget.ram_bytes}
        try:
            res = compress(base, budget, tr_sub, va, out_dir=runs_dir / f"{name}-{dataset}-{bname}",
                           fine_tune_epochs=args.epochs, qat_epochs=args.qat_epochs,
                           batch_size=args.batch_size, verbose=not args.silent)
            model = res.model
            acc = int8_test_accuracy(model, calib, te_sub)
            steps = res.report["steps"]
            point["sparsecomp"] = {
                "weight_bytes": res.weight_bytes, "peak_ram_bytes": res.peak_ram_bytes,
                "ratio_to_fp32": fp.totals["fp32"] / res.weight_bytes,
                "ratio_to_int8_dense": fp.totals["int8"] / res.weight_bytes,
                "int8_test_accuracy": acc, "accuracy_drop": base_acc - acc,
                "val_accuracy": res.val_accuracy, "seconds": round(time.time() - t0, 1),
                "steps": len(steps),
                "fine_tune_epochs_total": args.epochs * sum(1 for s in steps if s["phase"] != "qat"
                                                            and s.get("val_loss") is not None),
                "kinds": {k: sum(1 for s in steps if s["kind"] == k and s.get("accepted", True))
                          for k in sorted({s["kind"] for s in steps})},
                "fragile": res.report["fragile"],
                "all_fragile_from_step": res.report["all_fragile_from_step"]}
            target = res.weight_bytes
        except BudgetUnreachable as e:
            point["sparsecomp"] = {"unreachable": str(e), "smallest_bytes": e.smallest_bytes,
                                   "val_accuracy": e.accuracy,
                                   "seconds": round(time.time() - t0, 1)}
            target = budget.flash_bytes
        sc = point["sparsecomp"]
        print(f"   {bname}: SparseComp {sc.get('weight_bytes', '-')} B, int8 test acc "
              f"{sc.get('int8_test_accuracy', float('nan')):.4f}, {sc['seconds']} s", flush=True)
        if not args.no_tfmot and target:
            rec = tfmot_recipe(base, target, tr_sub, va, epochs=args.tfmot_epochs,
                               qat_epochs=args.qat_epochs, batch_size=args.batch_size)
            m = rec.pop("model")
            rec["int8_test_accuracy"] = int8_test_accuracy(m, calib, te_sub)
            rec["accuracy_drop"] = base_acc - rec["int8_test_accuracy"]
            rec["ratio_to_fp32"] = fp.totals["fp32"] / rec["weight_bytes"]
            point["tfmot"] = rec
            print(f"   {bname}: tfmot recipe sparsity {rec['sparsity']}, {rec['weight_bytes']} B, "
                  f"int8 test acc {rec['int8_test_accuracy']:.4f}, {rec['seconds']} s", flush=True)
        entry["points"].append(point)
    return entry


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = results["pairs"]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4), squeeze=False)
    for ax, e in zip(axes[0], pairs):
        for key, label, marker in (("sparsecomp", "SparseComp", "o"), ("tfmot", "tfmot recipe", "s")):
            pts = sorted({(p[key]["weight_bytes"], p[key]["int8_test_accuracy"]) for p in e["points"]
                          if key in p and "int8_test_accuracy" in p[key]
                          and p[key].get("sparsity_reaches_bytes", True)})
            if pts:
                xs, ys = zip(*pts)
                ax.plot(np.array(xs) / 1024, ys, marker=marker, label=label)
        short = sorted({(p["tfmot"]["weight_bytes"], p["tfmot"]["int8_test_accuracy"])
                        for p in e["points"] if not p.get("tfmot", {}).get("sparsity_reaches_bytes", True)})
        if short:
            xs, ys = zip(*short)
            ax.scatter(np.array(xs) / 1024, ys, marker="x", color="C1",
                       label="tfmot at 99.5% sparsity (cannot reach the bytes)")
        ax.axhline(e["int8_test_accuracy"], color="gray", ls="--", label="int8 dense")
        ax.set_xlabel("stored bytes (KB, int8 sparse)")
        ax.set_ylabel("int8 test accuracy")
        ax.set_title(f"{e['model']} / {e['dataset']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="cnn_s on fashion_mnist, budgets 48, 24 KB and msp430fr5994, "
                         "6,000 training / 2,000 test examples")
    ap.add_argument("--pairs", default=None, help="comma list of model:dataset")
    ap.add_argument("--budgets", default=None, help="comma list of KB or device names")
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--test-limit", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=2, help="SparseComp fine-tune epochs per step")
    ap.add_argument("--qat-epochs", type=int, default=1)
    ap.add_argument("--tfmot-epochs", type=int, default=None,
                    help="epochs of the tfmot recipe's pruning run (default 10, quick 6)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--no-tfmot", action="store_true")
    ap.add_argument("--silent", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--runs-dir", default=None,
                    help="where each point's compress output goes (default: the model cache)")
    ap.add_argument("--tag", default="", help="suffix of the output names (compression-TAG.json)")
    args = ap.parse_args(argv)
    reduced = []
    if args.quick:
        args.pairs = args.pairs or "cnn_s:fashion_mnist"
        args.budgets = args.budgets or "48,24,msp430fr5994"
        args.train_limit = args.train_limit or 6000
        args.test_limit = args.test_limit or 2000
        args.tfmot_epochs = args.tfmot_epochs or 6
        reduced = [f"pairs {args.pairs} (full: {', '.join(FULL_PAIRS)})",
                   f"budgets {args.budgets} (full: {', '.join(FULL_BUDGETS)})",
                   f"fine-tuning on a fixed subset of {args.train_limit} training examples",
                   f"test accuracy on a fixed subset of {args.test_limit} test examples",
                   f"tfmot recipe trained {args.tfmot_epochs} epochs on the same subset"]
    pairs = (args.pairs or ",".join(FULL_PAIRS)).split(",")
    budgets = (args.budgets or ",".join(FULL_BUDGETS)).split(",")
    args.tfmot_epochs = args.tfmot_epochs or 10
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "compression" + (f"-{args.tag}" if args.tag else "")
    # Per-point output directories (state, models, reports) stay out of the repository.
    runs = Path(args.runs_dir) if args.runs_dir else zoo.cache_dir() / "bench" / f"{stem}_runs"
    t0 = time.time()
    results = {"benchmark": "compression", "command": " ".join(["bench/compression.py"] + (argv or sys.argv[1:])),
               "quick": bool(args.quick), "reduced": reduced,
               "settings": {"train_limit": args.train_limit, "test_limit": args.test_limit,
                            "epochs": args.epochs, "qat_epochs": args.qat_epochs,
                            "tfmot_epochs": args.tfmot_epochs, "batch_size": args.batch_size},
               "tensorflow": tf.__version__, "pairs": []}
    for pair in pairs:
        name, dataset = pair.split(":")
        results["pairs"].append(run_pair(name, dataset, budgets, args, runs))
        (out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    results["seconds"] = round(time.time() - t0, 1)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    plot(results, out / f"{stem}.png")
    print(f"wrote {out / stem}.json and {out / stem}.png in {results['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
