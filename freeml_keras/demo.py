"""The main job, stage by stage, each stage cached in the output directory:

pre-trained ``cnn_s`` -> SparseComp to the device budget -> gNet (and the per-exit branches
baseline) -> int8 flatbuffer with the exit head -> the C runtime under injected power failures
(bit-exact check) -> energy-harvesting simulation on the bundled traces -> a Markdown report
with PNG plots.

A stage whose ``stage-<name>.json`` exists in the output directory is loaded, not rerun (delete
the file, or the directory, to rerun it). ``quick=True`` trains on subsets (for tests and
tutorials); the report says which.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from matplotlib.figure import Figure

from freeml_keras import costs as op_costs
from freeml_keras import datasets, devices, memory, zoo
from freeml_keras.bridge import load_model
from freeml_keras.compression import Budget, compress
from freeml_keras.conversion import convert, export_c
from freeml_keras.energy import (Capacitor, ExitCosts, Simulator, branches_energy, compare, gnet_anytime,
                                 gnet_energy, periodic_arrivals, run_to_completion, traces)
from freeml_keras.exits import (ExitModel, attach_exit_branches, attach_global_exit, calibrate_thresholds,
                                compare_mechanisms, exit_footprint, segment_costs, train_exit_branches,
                                train_global_exit)
from freeml_keras.keras import keras
from freeml_keras.runtime.intermittent import plan, run_uninterrupted, run_with_power_failures
from freeml_keras.format.model import as_model
from freeml_keras.runtime.interpreter import Interpreter
from freeml_keras.runtime.reference import io_quantization, quantize, run_tflm
from freeml_keras.targets import image
from freeml_keras.targets.image import device_budget
from freeml_keras.targets.power import measure_provisioned, provision, run_power_failures
from freeml_keras.targets.toolchain import TargetRunError, ToolMissingError

__all__ = ["DemoConfig", "run_demo"]

ARRIVAL_PERIOD_S = 30.0   # inputs at most this often in the simulation
ARRIVAL_LOAD = 0.5        # and no more often than half of what the harvest pays for without exits
N_STAGES = 8


@dataclass
class DemoConfig:
    """What the demo runs on, and how much of it."""
    out_dir: str = "runs/demo"
    dataset: str | None = None          # None: fashion_mnist when installed, else mnist
    model: str = "cnn_s"
    device: str = "msp430fr5994"
    quick: bool = False                 # small subsets and short training (minutes)
    train_limit: int | None = 20000     # examples for compression and exit training (None: all)
    eval_limit: int = 2000              # test examples for accuracy and simulation
    power_failure_inputs: int = 10
    failures_per_input: int = 40
    seed: int = 0
    restart_cycles: int | None = None   # charged at every power-on in the simulation; None: the
                                        # warm restart measured for the device (costs.restart_cycles)
    budget: str = "memory_map"          # "memory_map": what the device's linked image leaves
                                        # (targets.image.device_budget); "fixed": the profile's
                                        # 20 KB parameters + 16 KB activations split
    on_device: bool = True              # run the result on the device's emulator (when it has one)
    full_fram: bool = True              # also compress to the 256 KB FRAM budget (host only)
    data: str | None = None             # the user's .npz (datasets.load_npz) instead of a dataset:
                                        # the model is trained on it and kept in out_dir
    val_split: float | None = None      # with data: the validation fraction of x_train
    verbose: int = 0                    # 1: Keras progress bars while the model is pre-trained

    def resolved(self) -> "DemoConfig":
        """A copy with the dataset chosen (when None) and the ``quick`` limits applied."""
        c = DemoConfig(**asdict(self))
        if c.data is not None:
            c.dataset = Path(c.data).name
        if c.dataset is None:
            c.dataset = "fashion_mnist" if datasets.available("fashion_mnist") else "mnist"
        if c.quick:
            c.train_limit = min(c.train_limit or 6000, 6000)
        if c.quick:
            c.eval_limit = min(c.eval_limit, 500)
            c.power_failure_inputs = min(c.power_failure_inputs, 3)
        return c


@dataclass(frozen=True)
class _Data:
    """The dataset's splits the stages use: the full training and test sets, and the subsets
    that compression and exits train on and that accuracy, power failures are measured on."""
    train: datasets.Split
    test: datasets.Split
    train_s: datasets.Split
    val_s: datasets.Split
    test_s: datasets.Split

    @classmethod
    def load(cls, cfg: DemoConfig) -> "_Data":
        """The splits of ``cfg.dataset`` and their subsets by ``cfg``'s limits and seed."""
        if cfg.data is not None:
            tr, va, te = datasets.load_npz(cfg.data, val_split=cfg.val_split)
            te = va if te is None else te
        else:
            tr, va, te = datasets.load(cfg.dataset)
        return cls(train=tr, test=te,
                   train_s=datasets.subset(tr, cfg.train_limit, seed=cfg.seed),
                   val_s=datasets.subset(va, None if cfg.train_limit is None
                                         else max(cfg.train_limit // 5, 500), seed=cfg.seed),
                   test_s=datasets.subset(te, cfg.eval_limit, seed=cfg.seed + 1))


def _stage(out: Path, name: str, fn: Callable[[], dict], log: Callable[[str], None],
           valid: Callable[[dict], bool] | None = None) -> dict:
    """``fn()``'s result, saved as ``stage-<name>.json``, or that file's when it exists (and
    ``valid`` accepts it: a stage cached with other settings is run again)."""
    path = out / f"stage-{name}.json"
    if path.exists():
        cached = json.loads(path.read_text())
        if valid is None or valid(cached):
            log(f"      cached ({path.name})")
            return cached
        log(f"      {path.name} was made with other settings: running it again")
    t0 = time.time()
    result = fn()
    result["seconds"] = round(time.time() - t0, 1)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=_jsonable))
    tmp.replace(path)
    return json.loads(path.read_text())


def _jsonable(v: Any):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(type(v).__name__)


def run_demo(config: DemoConfig | None = None, *, log: Callable[[str], None] = print) -> dict:
    """Run (or load from the cache) every stage; returns the summary written to
    ``summary.json`` next to ``report.md``."""
    cfg = (config or DemoConfig()).resolved()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cdir, edir = out / "compress", out / "exits"
    dev = devices.get(cfg.device)
    data = _Data.load(cfg)
    t_start = time.time()

    log(f"[1/{N_STAGES}] pre-trained {cfg.model} on {cfg.dataset}")
    model = _pretrained_model(cfg, data, out)
    s_pre = _stage(out, "pretrained", lambda: _pretrained(cfg, data, model), log)
    log(f"      test accuracy {s_pre['test_accuracy']:.4f}; {s_pre['fp32_bytes']:,} B fp32")

    log(f"[2/{N_STAGES}] SparseComp to the {dev.name} budget")
    s_comp = _stage(out, "compress", lambda: _compress(cfg, data, model, s_pre, cdir), log,
                    valid=lambda c: c.get("budget", {}).get("requested") == cfg.budget)
    b = s_comp["budget"]
    if b.get("note"):
        log(f"      {b['note']}")
    log(f"      budget ({b['kind']}): {b['flash_bytes']:,} B parameters, {b['ram_bytes']:,} B activations + "
        f"checkpoint" + (f" (code {b['fixed']['code']:,} B, state {b['fixed']['state']:,} B, exit head reserve "
                         f"{b['fixed']['reserve']:,} B of {b['region_bytes']:,} B)" if "fixed" in b else ""))
    small = load_model(cdir / "model.keras")[0]
    log(f"      {s_comp['weight_bytes']:,} B stored ({s_comp['ratio_vs_fp32']:.1f}x smaller than fp32), "
        f"test accuracy {s_comp['test_accuracy']:.4f}")

    log(f"[3/{N_STAGES}] gNet shared exit head and per-exit branches")
    s_exit = _stage(out, "exits", lambda: _exits(cfg, data, small, s_comp, edir), log)
    log("      per-exit accuracy gNet " + " ".join(f"{a:.3f}" for a in s_exit["gnet_accuracy"]) +
        " | branches " + " ".join(f"{a:.3f}" for a in s_exit["branches_accuracy"]) +
        f"; head {s_exit['head_ratio']:.1f}x smaller than the branches")

    log(f"[4/{N_STAGES}] int8 flatbuffer with the exit head and the freeml metadata; C source")
    s_conv = _stage(out, "convert", lambda: _convert(cfg, data, edir, s_exit, out), log)
    log(f"      {s_conv['tflite_bytes']:,} B flatbuffer; int8 accuracy {s_conv['int8_accuracy']:.4f} "
        f"(Keras {s_conv['keras_accuracy']:.4f})")

    log(f"[5/{N_STAGES}] C runtime with injected power failures ({cfg.power_failure_inputs} inputs)")
    s_pf = _stage(out, "power_failures", lambda: _power_failures(cfg, data, out), log)
    log(f"      {s_pf['failures']} power failures survived, output bit-exact: {s_pf['bit_exact']}, "
        f"equal to TFLite Micro (dense variant): {s_pf['equals_tflite_micro']}")
    if not s_pf["bit_exact"]:
        raise RuntimeError("the output after power failures differs from the uninterrupted output")

    log(f"[6/{N_STAGES}] the model on the {dev.name}: linked image, cycles, restarts, power failures")
    s_dev = _stage(out, "device", lambda: _device(cfg, data, model, out), log)
    for line in s_dev.get("log", []):
        log("      " + line)

    measured = s_dev.get("msp430")          # the device stage's figures for this model, when it ran it
    restart = _restart(cfg, measured)
    log(f"[7/{N_STAGES}] energy-harvesting simulation on the bundled traces, every power-on "
        f"charged a restart of {restart['cycles']:,} cycles ({restart['energy_uj']:.3g} uJ)"
        + (", costs scaled to the cycles measured on the device" if measured else ""))
    s_sim = _stage(out, "simulate", lambda: _simulate(cfg, edir, s_exit, out, measured), log,
                   valid=lambda c: c.get("restart", {}).get("cycles") == restart["cycles"]
                   and (c.get("costs") or {}).get("measured_cycles") == (measured or {}).get("inference"))
    for trace, rows in s_sim["traces"].items():
        best = min(rows, key=lambda r: r["latency_mean_s"])
        log(f"      {trace}: fastest {best['name']} ({best['latency_mean_s']:.2f} s mean latency, "
            f"accuracy {best['accuracy']:.3f})")

    log(f"[8/{N_STAGES}] report")
    summary = {"config": asdict(cfg), "pretrained": s_pre, "compress": s_comp, "exits": s_exit,
               "convert": s_conv, "power_failures": s_pf, "device": s_dev, "simulate": s_sim,
               "seconds_this_run": round(time.time() - t_start, 1)}
    _report(out, summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_jsonable))
    log(f"\nreport: {out / 'report.md'} ({time.time() - t_start:.0f} s)")
    return summary


# ---------------------------------------------------------------------------------------------
# The stages, in order. Each returns what its ``stage-<name>.json`` holds.

def _pretrained_model(cfg: DemoConfig, data: _Data, out: Path) -> "keras.Model":
    """The model the job starts from: the cached reference model of a built-in dataset, or
    ``cfg.model`` trained on the user's data (once; kept as ``out/pretrained.keras``)."""
    if cfg.data is None:
        return zoo.pretrained(cfg.model, cfg.dataset, verbose=cfg.verbose)
    path = out / "pretrained.keras"
    if path.exists():
        return load_model(path)[0]
    classes = int(max(data.train[1].max(), data.test[1].max())) + 1
    keras.utils.set_random_seed(cfg.seed)
    model = zoo.build(cfg.model, data.train[0].shape[1:], classes)
    zoo.train(model, data.train, data.val_s, zoo.TRAIN_CONFIGS[cfg.model], verbose=cfg.verbose)
    model.save(path)
    return model


def _pretrained(cfg: DemoConfig, data: _Data, model: "keras.Model") -> dict:
    """1. The user's pre-trained model: test accuracy and sizes."""
    fp = memory.keras_footprint(model)
    return {"dataset": cfg.dataset, "test_accuracy": zoo.accuracy(model, data.test),
            "params": int(model.count_params()), "fp32_bytes": fp.totals["fp32"],
            "int8_bytes": fp.totals["int8"], "arena_bytes": fp.arena_bytes,
            "train": zoo.pretrained_meta(cfg.model, cfg.dataset)}


def _compress(cfg: DemoConfig, data: _Data, model: "keras.Model", s_pre: dict, cdir: Path) -> dict:
    """2. SparseComp to the device budget; the compressed model is ``cdir/model.keras``."""
    opts = {"fine_tune_epochs": 1, "qat_epochs": 1} if cfg.quick else {}
    budget, how = _budget(cfg, data, model, cfg.device, cdir)
    res = compress(model, budget, data.train_s, data.val_s, out_dir=cdir, resume=True,
                   seed=cfg.seed, **opts)
    if how.get("kind") == "memory_map":
        # The budget came from the uncompressed model's file and an estimate of the head; compression
        # changes what is around the weights (factorized layers' tables and state, CSR indices).
        # While the compressed model's image with its exit head is over the map, compress again
        # from it with that much less (and a quarter more: the stored-bytes rules count more per
        # output channel than the device keeps, so a rule byte frees less than a byte).
        how["passes"] = []
        for n in range(1, 5):
            over = _image_over(cfg, data, res.model, how, cdir / f"pass{n}")
            how["passes"].append({"flash_bytes": budget.flash_bytes, "ram_bytes": budget.ram_bytes, "over_bytes": over})
            if over <= 0 or n == 4:
                break
            budget = Budget(max(256, budget.flash_bytes - over - over // 4 - 64), budget.ram_bytes, budget.device)
            res = compress(res.model, budget, data.train_s, data.val_s, out_dir=cdir / f"pass{n}", resume=True,
                           seed=cfg.seed, **opts)
            res.model.save(cdir / "model.keras")
    fp = memory.keras_footprint(res.model)
    return {"budget": how, "weight_bytes": fp.weight_bytes, "peak_ram_bytes": fp.arena_bytes + fp.checkpoint_bytes,
            "test_accuracy": zoo.accuracy(res.model, data.test),
            "ratio_vs_fp32": s_pre["fp32_bytes"] / fp.weight_bytes,
            "ratio_vs_int8": s_pre["int8_bytes"] / fp.weight_bytes,
            "steps": [{k: s.get(k) for k in ("step", "phase", "layer", "weight_bytes", "val_accuracy", "peak_ram_bytes")}
                      for s in res.report.get("steps", [])],
            "report_txt": (cdir / "report.txt").read_text() if (cdir / "report.txt").exists() else ""}


def _image_over(cfg: DemoConfig, data: _Data, model: "keras.Model", how: dict, work: Path) -> int:
    """Bytes by which ``model``'s power-on image with its exit head is over the device's memory
    map, in the region most over (negative: free in every region). The head is gNet's as the
    exits stage attaches it (:func:`_exit_head`), untrained: its layers, and so its bytes, state
    and arena, are the trained head's."""
    dev = devices.get(cfg.device)
    x = datasets.subset(data.train, 200, seed=cfg.seed + 3)[0]
    flat = convert(model, x, sparse=True, device_form=True, num_calibration=100,
                   exit_model=_exit_head(model, how))
    est = image.predict(flat, dev, work / "image")
    return int(max(r["used"] - r["length"] for r in est.regions.values()))


def _exit_head(model: "keras.Model", budget: dict):
    """gNet's head on ``model`` with the demo's settings: its pooling chosen for the head budget
    the memory map's budget kept for it (when it did)."""
    return attach_global_exit(model, head_budget_bytes=budget.get("head_budget_bytes"))


def _head_reserve(model: "keras.Model") -> tuple[int, int]:
    """(bytes to keep free for the exit head attached after compression, the head's own budget):
    gNet's default head on the uncompressed model (its pooling chosen for a head budget of its
    own; compression only narrows what it pools) in the runtime's int8 format with its state,
    plus 1 KB for the head subgraph's tables and interpreter state on the target."""
    em = attach_global_exit(model)
    fp = exit_footprint(em)
    return int(fp["head_bytes"] + fp["state_bytes"]) + 1024, int(fp["head_bytes"])


def _budget(cfg: DemoConfig, data: _Data, model: "keras.Model", device: str, work: Path) -> tuple[Budget, dict]:
    """SparseComp's budget for ``device``: from its memory map (``cfg.budget == "memory_map"``:
    what the linked power-on image leaves for the model, with room for the exit head; needs
    the target's toolchain), or the profile's fixed split."""
    dev = devices.get(device)
    if cfg.budget not in ("memory_map", "fixed"):
        raise ValueError(f"DemoConfig.budget is 'memory_map' or 'fixed', not {cfg.budget!r}")
    note = None
    if cfg.budget == "memory_map":
        try:
            reserve, head_budget = _head_reserve(model)
            b, how = device_budget(model, dev, datasets.subset(data.train, 200, seed=cfg.seed + 3)[0],
                                   reserve_bytes=reserve, work_dir=work / "image")
            return b, {"kind": "memory_map", "requested": cfg.budget, "head_budget_bytes": head_budget,
                       "region_bytes": dev.memory.region("model").length, **how}
        except (ValueError, TargetRunError, ToolMissingError) as e:
            # said in the log and the report, and the device stage shows by how much it misses
            note = f"the memory map gives no budget ({e}); the profile's fixed split is used instead"
    b = Budget.of(dev)
    return b, {"kind": "fixed", "requested": cfg.budget, "note": note,
               "flash_bytes": b.flash_bytes, "ram_bytes": b.ram_bytes}


def _exits(cfg: DemoConfig, data: _Data, small: "keras.Model", s_comp: dict, edir: Path) -> dict:
    """3. gNet and the per-exit branches baseline on the compressed model; the exit model,
    its test-set predictions and its exit policy are saved in ``edir``."""
    # gNet's defaults: pooling chosen per exit point for the head budget (the bytes the memory
    # map's budget kept for it, when it did), stagewise training with per-exit scaling
    em = _exit_head(small, s_comp["budget"])
    train_global_exit(em, data.train_s, data.val_s, epochs=8 if cfg.quick else None, verbose=0, seed=cfg.seed)
    br = attach_exit_branches(small, em.exit_points)
    train_exit_branches(br, data.train_s, data.val_s, epochs=8 if cfg.quick else 30, verbose=0, seed=cfg.seed)
    em.save(edir)
    policy = calibrate_thresholds(em, data.val_s, target_accuracy=s_comp["test_accuracy"] - 0.01,
                                  device=cfg.device)
    mech = compare_mechanisms(em, br)
    g, b = em.evaluate(data.test_s), br.evaluate(data.test_s)
    zg, out_g = em.predict_all(data.test_s[0])
    zb, out_b = br.predict_all(data.test_s[0])
    np.savez(edir / "predictions.npz", gnet=np.asarray(zg), branches=np.asarray(zb),
             final=np.asarray(out_g), labels=data.test_s[1])
    (edir / "policy.json").write_text(json.dumps(policy.to_dict(), indent=1))
    return {"exit_points": list(em.exit_points), "gnet_accuracy": g["exit_accuracy"],
            "branches_accuracy": b["exit_accuracy"], "backbone_accuracy": g["backbone_accuracy"],
            "head_bytes_gnet": mech["gnet"]["head_bytes"], "head_bytes_branches": mech["branches"]["head_bytes"],
            "head_ratio": mech["head_ratio"], "overhead_ratio": mech["overhead_ratio"],
            "policy": policy.to_dict()}


def _convert(cfg: DemoConfig, data: _Data, edir: Path, s_exit: dict, out: Path) -> dict:
    """4. The int8 flatbuffers (sparse for the target, dense for TFLite Micro) with the exit head
    and the exit policy, and the C source, in ``out``."""
    em = ExitModel.load(edir)
    calib = datasets.subset(data.train, 300, seed=cfg.seed + 2)[0]
    sparse = convert(em.backbone, calib, sparse=True, exit_model=em, policy=s_exit["policy"],
                     target=cfg.device, device_form=True)
    dense = convert(em.backbone, calib, sparse=False, exit_model=em, policy=s_exit["policy"])
    (out / "model.tflite").write_bytes(sparse)
    (out / "model_dense.tflite").write_bytes(dense)
    export_c(sparse, out / "model.h", symbol="freeml_model", section=".fram")
    (iq,), _ = io_quantization(sparse)
    it = Interpreter(sparse)     # the device form: TFLite Micro and this runtime run it, TF Lite does not
    pred = np.concatenate([it.invoke(xi[None])[0] for xi in quantize(data.test_s[0], *iq)])
    fp = memory.tflite_footprint(sparse)
    return {"tflite_bytes": len(sparse), "dense_tflite_bytes": len(dense),
            "weight_bytes": fp.weight_bytes, "arena_bytes": fp.arena_bytes,
            "int8_accuracy": float(np.mean(np.argmax(pred, -1) == data.test_s[1])),
            "keras_accuracy": zoo.accuracy(em.backbone, data.test_s)}


def _power_failures(cfg: DemoConfig, data: _Data, out: Path) -> dict:
    """5. The C runtime on ``out/model.tflite`` under injected power failures: totals, and whether
    every output equals the uninterrupted one and TFLite Micro's on the dense variant."""
    b = (out / "model.tflite").read_bytes()
    (iq,), _ = io_quantization(b)
    xs = quantize(data.test_s[0][:cfg.power_failure_inputs], *iq)
    dense_out = run_tflm((out / "model_dense.tflite").read_bytes(), [xs])[0]
    tot = {"failures": 0, "failures_in_commits": 0, "failures_by_time": 0, "reexecuted_units": 0,
           "units": 0, "checkpoint_bytes_written": 0, "bit_exact": True, "equals_tflite_micro": True}
    for i, x in enumerate(xs):
        ref, _ = run_uninterrupted(b, x)
        rep = run_with_power_failures(b, x, seed=cfg.seed + i, max_failures=cfg.failures_per_input)
        tot["bit_exact"] &= bool(np.array_equal(rep.output, ref))
        tot["equals_tflite_micro"] &= bool(np.array_equal(ref, dense_out[i].ravel()))
        for k in ("failures", "failures_in_commits", "failures_by_time", "reexecuted_units",
                  "checkpoint_bytes_written"):
            tot[k] += int(getattr(rep, k))
        tot["units"] += rep.units_total
    p = plan(b)
    tot["largest_step_units"] = p["largest_step_units"]
    tot["checkpoint_record_bytes"] = p["record_bytes"]
    return tot


def _device(cfg: DemoConfig, data: _Data, pretrained: "keras.Model", out: Path) -> dict:
    """6. ``out/model.tflite`` on the device: its power-on image predicted and linked; when it
    fits and the device can be emulated here, the build the device runs (without preparation,
    from the image a preparing build sealed) measured from that image: cycles per inference and
    to each exit point, its steps and checkpoint commits, the warm restart after a power failure
    in the middle of it, then power failures inside the inferences (bit-exact with the host),
    energy from the profile. Beside
    it, with ``cfg.full_fram``, the model SparseComp makes for the 256 KB FRAM budget, run on
    the host (that build cannot be linked or emulated here)."""
    dev = devices.get(cfg.device)
    b = (out / "model.tflite").read_bytes()
    res: dict = {"device": dev.name, "log": []}
    if dev.memory is None:
        res["log"].append(f"{dev.name} has no memory map: nothing to link")
        return res
    work = out / "device"
    try:
        linked = image.link(b, dev, work / "link")
    except (TargetRunError, ToolMissingError) as e:
        res["log"].append(f"not linked: {str(e).splitlines()[0]}")
        return res
    est = linked["estimate"]
    region = dev.memory.region("model").name
    res["image"] = {"predicted": est, "linked": linked.get("regions"), "overflow": linked.get("overflow")}
    used = linked["regions"][region] if linked["linked"] else est["regions"][region]["length"] + linked["overflow"][region]
    res["log"].append(f"image: {used:,} of {est['regions'][region]['length']:,} B of {region} "
                      f"(predicted {est['regions'][region]['used']:,} B): "
                      + ("fits" if linked["linked"] else f"over by {linked['overflow']}")
                      + "; " + ", ".join(f"{k} {v:,} B" for k, v in est["parts"].items()))
    if cfg.full_fram:
        res["full_fram"] = _full_fram(cfg, data, pretrained, out)
        res["log"].append(f"256 KB FRAM budget (host): test accuracy {res['full_fram']['test_accuracy']:.4f}, "
                          f"{res['full_fram']['weight_bytes']:,} B stored")
    if not (linked["linked"] and dev.memory.runnable and cfg.on_device):
        return res
    target = op_costs.target_of(dev)
    (iq,), _ = io_quantization(b)
    x = quantize(data.test_s[0][:1], *iq)[0]
    host_out = Interpreter(b).invoke(x[None])[0].ravel().tolist()
    # What the device runs: the build without preparation, from the image the preparing build
    # sealed in the emulator (both linked above); measured from that image, then interrupted.
    failures = 10 if cfg.quick else 30
    blk = est["blocks"]
    try:
        p = provision(b, x, work / "provisioned", sizes=[blk["state"], blk["arena"], blk["head_state"], blk["head_arena"]],
                      inferences=failures // 3 + 1)
        c = measure_provisioned(p)
        pf = run_power_failures(target, b, x, work / "power", failures=failures, seed=cfg.seed, provisioned=p)
    except TargetRunError as e:
        res["log"].append(f"not run on the emulator: {str(e).splitlines()[0][:200]}")
        return res
    e = dev.energy_per_cycle_j
    answers = [y for _, y in pf.outputs]
    res["msp430"] = {
        **{k: c[k] for k in ("unit", "inference", "to_exit", "commits", "commit_cycles", "checkpoint_overhead",
                             "steps", "largest_step", "largest_commit", "power_on", "warm_restart", "prepare_cycles")},
        "energy_uj_per_inference": 1e6 * c["inference"] * e, "energy_uj_to_exit": [1e6 * v * e for v in c["to_exit"]],
        "bit_exact": c["answer"] is not None and c["answer"][1] == host_out and c["restart_answer_equal"],
        "power_failures": pf.failures, "power_failures_by_phase": pf.failures_by_phase,
        "answers_after_failures": len(answers),
        "power_failures_bit_exact": bool(answers) and all(list(y) == host_out for y in answers),
        "code_bytes": est["by_build"].get("device", {}).get("code"), "size": c["code_bytes"]}
    m = res["msp430"]
    res["log"].append(f"{target} (provisioned image): {m['inference']:,} {m['unit']} per inference "
                      f"({m['energy_uj_per_inference']:.1f} uJ), to the exits " + ", ".join(f"{v:,}" for v in m["to_exit"])
                      + f"; {m['steps']} steps, largest {m['largest_step']:,}; warm restart {m['warm_restart']:,}; "
                      f"checkpoints +{100 * (m['checkpoint_overhead'] or 0):.1f}%; {m['power_failures']} power failures, "
                      f"bit-exact {m['power_failures_bit_exact'] and m['bit_exact']}")
    return res


def _full_fram(cfg: DemoConfig, data: _Data, model: "keras.Model", out: Path) -> dict:
    """The model SparseComp makes for the whole 256 KB of FRAM (``msp430fr5994_256k``, a
    large-memory-model build), and its accuracy on the host."""
    opts = {"fine_tune_epochs": 1, "qat_epochs": 1} if cfg.quick else {}
    budget, how = _budget(cfg, data, model, "msp430fr5994_256k", out / "full_fram")
    res = compress(model, budget, data.train_s, data.val_s, out_dir=out / "full_fram", resume=True,
                   seed=cfg.seed, **opts)
    fp = memory.keras_footprint(res.model)
    return {"budget": how, "weight_bytes": fp.weight_bytes, "peak_ram_bytes": fp.arena_bytes + fp.checkpoint_bytes,
            "test_accuracy": zoo.accuracy(res.model, data.test)}


def _restart(cfg: DemoConfig, measured: dict | None = None) -> dict:
    """What the simulation charges at every power-on: ``cfg.restart_cycles``; else this model's
    warm restart measured on the device's emulator (``measured``: the device stage's figures);
    else the warm restart measured for the device on the cost tables' models
    (:func:`freeml_keras.costs.restart_cycles`); and where it comes from."""
    dev = devices.get(cfg.device)
    if cfg.restart_cycles is not None:
        cycles, source = int(cfg.restart_cycles), "given (DemoConfig.restart_cycles)"
    elif measured and measured.get("warm_restart"):
        cycles = int(measured["warm_restart"])
        source = "warm restart of this model's provisioned image, measured in the device stage above"
    else:
        cycles = op_costs.restart_cycles(dev)
        source = op_costs.restart_source(dev)
    return {"cycles": cycles, "energy_uj": 1e6 * cycles * dev.energy_per_cycle_j, "source": source}


def _segment_factors(backbone: list[int], heads: list[int], measured: dict | None) -> list[float] | None:
    """Per segment of the backbone (up to each exit point, then the rest), the cycles the device
    measured (``measured``: ``to_exit``, each exit's head included, and ``inference``) over the
    cycles the cost model prices (the segment plus its exit's head): the factors that put the
    simulation on the device's measured costs. None without a measurement that matches the
    segments.

    >>> _segment_factors([100, 50], [10], {"to_exit": [220], "inference": 320})
    [2.0, 2.0]
    """
    if not measured or not measured.get("inference") or len(measured.get("to_exit") or []) != len(backbone) - 1:
        return None
    ends = list(measured["to_exit"]) + [measured["inference"]]
    seg = [b - a for a, b in zip([0] + ends[:-1], ends)]
    priced = [c + (heads[k] if k < len(heads) else 0) for k, c in enumerate(backbone)]
    if any(v <= 0 for v in seg) or any(v <= 0 for v in priced):
        return None
    return [m / q for m, q in zip(seg, priced)]


def _simulate(cfg: DemoConfig, edir: Path, s_exit: dict, out_dir: Path, measured: dict | None = None) -> dict:
    """6. The strategies (no exit, branches, gNet, gNet anytime) on every bundled harvesting
    trace, from the exit predictions in ``edir`` and the costs in ``out_dir/model.tflite``;
    with ``measured`` (the device stage's figures for this model) the costs are scaled per
    segment to the cycles the device measured, and its largest step and warm restart are used."""
    em = ExitModel.load(edir)
    pred = np.load(edir / "predictions.npz")
    y = pred["labels"]
    zg, zb, final = pred["gnet"], pred["branches"], pred["final"]
    correct_g = np.concatenate([(np.argmax(zg, -1) == y).T, (np.argmax(final, -1) == y)[:, None]], axis=1)
    correct_b = np.concatenate([(np.argmax(zb, -1) == y).T, (np.argmax(final, -1) == y)[:, None]], axis=1)
    zs = zg - zg.max(-1, keepdims=True)
    conf = (np.exp(zs) / np.exp(zs).sum(-1, keepdims=True)).max(-1).T
    conf = np.concatenate([conf, np.ones((len(y), 1))], axis=1)
    br = attach_exit_branches(em.backbone, em.exit_points)
    # The converted model's per-operator costs (metadata) price the backbone and the gNet head;
    # the branches, never converted, are priced per Keras layer by the same cost model.
    model_bytes = (out_dir / "model.tflite").read_bytes()
    try:
        backbone = op_costs.segment_cycles(model_bytes, include_heads=False)
        gnet_heads = [a - b for a, b in zip(op_costs.segment_cycles(model_bytes), backbone)]
    except op_costs.CostTableError:          # a model converted before costs were recorded
        backbone = [int(c.cycles) for c in segment_costs(em, cfg.device, include_heads=False)]
        gnet_heads = [a - b for a, b in zip([int(c.cycles) for c in segment_costs(em, cfg.device)], backbone)]
    kbackbone = [int(c.cycles) for c in segment_costs(em, cfg.device, include_heads=False)]
    branch_heads = [a - b for a, b in zip([int(c.cycles) for c in segment_costs(br, cfg.device)], kbackbone)]

    restart = _restart(cfg, measured)
    priced = sum(backbone) + sum(gnet_heads[:len(em.exit_points)])
    # The cost model is fitted on small models: on the demo's it has priced an inference at less
    # than half what the device measures. Where the device stage measured this model, every
    # segment (and the heads and branches of its exit point) is scaled to the measured cycles.
    factors = _segment_factors(backbone, gnet_heads[:len(em.exit_points)], measured)
    if factors is not None:
        backbone = [int(round(c * f)) for c, f in zip(backbone, factors)]
        gnet_heads = [int(round(c * f)) for c, f in zip(gnet_heads, factors)]
        branch_heads = [int(round(c * f)) for c, f in zip(branch_heads, factors)]
    max_step = int(measured["largest_step"]) if factors is not None and measured.get("largest_step") else 200_000

    def exit_costs(heads: list[int]) -> ExitCosts:
        return ExitCosts(segment_cycles=backbone, head_cycles=heads[:len(em.exit_points)],
                         max_step_cycles=max_step, commit_bytes=2 * 32,
                         resume_cycles=restart["cycles"])
    costs_g, costs_b = exit_costs(gnet_heads), exit_costs(branch_heads)
    th = [t if t is not None else 2.0 for t in s_exit["policy"]["thresholds"]][:len(em.exit_points)]
    th += [2.0] * (len(em.exit_points) - len(th))
    strategies = [run_to_completion(costs_g, correct_g), branches_energy(costs_b, correct_b),
                  gnet_energy(costs_g, correct_g), gnet_anytime(costs_g, correct_g, conf, th)]
    n = min(len(y), 200 if cfg.quick else 1000)
    out: dict = {"inputs": n, "capacitor_f": 470e-6, "restart": restart, "traces": {},
                 "costs": {"priced_cycles": int(priced), "measured_cycles": (measured or {}).get("inference")
                           if factors is not None else None,
                           "segment_factors": factors, "max_step_cycles": max_step}}
    full_j = sum(backbone) * devices.get(cfg.device).energy_per_cycle_j
    bar = keras.utils.Progbar(len(traces.names()), unit_name="trace") if cfg.verbose else None
    for name in traces.names():
        harvester = traces.generate(name)
        # An input every period: 30 s, or longer where the trace's mean power cannot run the
        # model to completion twice per period (queues would grow without bound).
        period = max(ARRIVAL_PERIOD_S, full_j / (ARRIVAL_LOAD * harvester.mean_power_w))
        sim = Simulator(harvester, Capacitor(capacitance_f=470e-6), device=cfg.device)
        rep = compare(strategies, sim, periodic_arrivals(n, period), examples=list(range(n)))
        out.setdefault("arrival_period_s", {})[name] = period
        out["traces"][name] = [{"name": k, "accuracy": r.accuracy,
                                "latency_mean_s": r.latency_s.get("mean", float("nan")),
                                "latency_p90_s": r.latency_s.get("p90", float("nan")),
                                "energy_mj": 1e3 * r.energy_per_inference_j,
                                "failures": r.power_failures_per_inference,
                                "restart_cycles_per_inference": float(np.mean([x.resume_cycles for x in
                                                                               r.result.inferences if x.completed]))
                                if r.completed else float("nan"),
                                "completed": r.completed, "exit_counts": r.exit_counts,
                                "never_completes": r.never_completes}
                               for k, r in rep.items()]
        if bar is not None:
            bar.add(1)
    return out


def _report(out: Path, s: dict) -> None:
    """7. ``report.md`` and its PNG plots in ``out``, from the summary of every stage."""
    _plots(out, s)
    (out / "report.md").write_text(_markdown(s))


def _plots(out: Path, s: dict) -> None:
    """The size ladder, the accuracy per exit point, and latency against accuracy per trace.
    (Figures without pyplot: no backend is selected, none of the caller's state changes.)"""
    steps = [st for st in s["compress"]["steps"] if st.get("weight_bytes")]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    if steps:
        ax.plot([st["weight_bytes"] / 1024 for st in steps],
                [st.get("val_accuracy") or np.nan for st in steps], "o-", ms=3)
    ax.axvline(s["compress"]["weight_bytes"] / 1024, color="k", ls=":", label="final")
    ax.set_xscale("log")
    ax.set_xlabel("stored parameters (KB, log)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("SparseComp: size ladder")
    ax.legend()
    _save(fig, out / "size_ladder.png")

    e = s["exits"]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    k = np.arange(len(e["exit_points"]))
    ax.bar(k - 0.2, e["gnet_accuracy"], 0.4, label=f"gNet ({e['head_bytes_gnet']:,} B)")
    ax.bar(k + 0.2, e["branches_accuracy"], 0.4, label=f"branches ({e['head_bytes_branches']:,} B)")
    ax.axhline(e["backbone_accuracy"], color="k", ls=":", label="full model")
    ax.set_xticks(k, e["exit_points"])
    ax.set_ylabel("test accuracy")
    ax.set_title("accuracy per exit point")
    ax.legend(fontsize=8)
    _save(fig, out / "exits.png")

    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for trace, rows in s["simulate"]["traces"].items():
        for r, m in zip(rows, "osD^"):
            ax.scatter(r["latency_mean_s"], r["accuracy"], marker=m,
                       label=f"{trace}: {r['name']}")
    ax.set_xscale("log")
    ax.set_xlabel("mean latency (s, log)")
    ax.set_ylabel("accuracy")
    ax.set_title("strategies on the bundled traces")
    ax.legend(fontsize=6, ncol=2)
    _save(fig, out / "latency_accuracy.png")


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _costs_sentence(costs: dict | None) -> str:
    """How the simulation's costs relate to what the device measured, for the report."""
    if not costs or not costs.get("segment_factors"):
        return (". No measurement of this model on the device was used (the device stage did not run it, "
                "or its exit points do not match the model's): these costs are the cost model's alone.")
    f = ", ".join(f"{v:.2f}" for v in costs["segment_factors"])
    return (f", scaled per segment to the cycles the device stage measured on this model: the cost model "
            f"priced {costs['priced_cycles']:,} cycles per inference, the device ran {costs['measured_cycles']:,} "
            f"(factors per segment {f}; the branches' heads scaled by their exit point's factor); each step "
            f"at most {costs['max_step_cycles']:,} cycles, the largest measured.")


def _restart_sentence(restart: dict | None) -> str:
    """What the simulation charged at every power-on, for the report."""
    if not restart:
        return ("Restarts were charged nothing: this simulation stage was cached before restarts "
                "were priced (delete stage-simulate.json to run it again).")
    return (f"Every power-on is charged a restart of {restart['cycles']:,} cycles "
            f"({restart['energy_uj']:.3g} uJ at active power) before the step that follows it: "
            f"the {restart['source']}.")


def _device_lines(s: dict) -> list[str]:
    """The report's section on the device: budget, linked image, measured cycles, 256 KB."""
    d, c, p = s.get("device") or {}, s["compress"], s["pretrained"]
    b = c.get("budget", {})
    lines = [f"## On the {s['config']['device']}", ""]
    if b.get("kind") == "memory_map":
        f = b["fixed"]
        lines.append(f"SparseComp's budget came from the memory map: of {b['region_bytes']:,} B, the runtime's code "
                     f"takes {f['code']:,} B (its kernels, CSR paths, checkpointing, exit head), the checkpoint "
                     f"{f['checkpoint']:,} B, the interpreter state {f['state']:,} B, the exit head's reserve "
                     f"{f['reserve']:,} B; {b['flash_bytes']:,} B were left for parameters and {b['ram_bytes']:,} B "
                     f"for activations.")
    else:
        lines.append(f"SparseComp's budget: the profile's fixed split ({b.get('flash_bytes') or '-'} B parameters, "
                     f"{b.get('ram_bytes') or '-'} B activations)" + (f": {b['note']}." if b.get("note") else "."))
    img = d.get("image")
    if img:
        est = img["predicted"]
        lines += ["", "| part | bytes |", "|---|---|"] + [f"| {k} | {v:,} |" for k, v in est["parts"].items()]
        for name, r in est["regions"].items():
            linked = (img["linked"] or {}).get(name)
            over = (img["overflow"] or {}).get(name)
            lines.append(f"| {name} predicted / linked | {r['used']:,} / "
                         + (f"{linked:,}" if linked is not None else (f"over by {over:,}" if over else "-"))
                         + f" of {r['length']:,} |")
    m = d.get("msp430")
    if m and "inference" in m:
        u = m["unit"]
        lines += ["", f"Measured under `mspdebug sim`, the build the device runs (no preparation code: "
                  f"{m['code_bytes'] or 0:,} B of code) from its prepared image:", "",
                  "| | MSP430 " + u + " | energy |", "|---|---|---|",
                  f"| one inference (input to answer, checkpointed, exit head included) | {m['inference']:,} | "
                  f"{m['energy_uj_per_inference']:.1f} uJ |"]
        lines += [f"| to exit point {i + 1} (its head's answer and decision included) | {v:,} | {w:.1f} uJ |"
                  for i, (v, w) in enumerate(zip(m["to_exit"], m["energy_uj_to_exit"]))]
        lines += [f"| checkpoint commits ({m['commits']}) | {m['commit_cycles']:,} "
                  f"(+{100 * (m['checkpoint_overhead'] or 0):.1f}%) | |",
                  f"| largest step (what one charge must hold beside the restart) | {m['largest_step']:,} of "
                  f"{m['steps']} steps | |",
                  f"| warm restart (reset to the resumed unit of work) | {m['warm_restart']:,} | |",
                  f"| power-on to ready (start-up code, image check) | {m['power_on']:,} | |",
                  f"| preparation, done once by the provisioning build | {m['prepare_cycles']:,} | |", "",
                  f"{m['power_failures']} power failures inside the inferences "
                  + "(" + ", ".join(f"{k} {v}" for k, v in m["power_failures_by_phase"].items() if v) + "), "
                  f"{m['answers_after_failures']} answers, all bit-exact with the host: "
                  f"{m['power_failures_bit_exact'] and m['bit_exact']}."]
    elif img and img.get("overflow"):
        lines += ["", "Not run on the emulator: the linked image is over the memory map by "
                  + ", ".join(f"{v:,} B of {k}" for k, v in img["overflow"].items()) + "."]
    elif img:
        lines += ["", "Not run on the emulator: " + "; ".join(l for l in d.get("log", []) if "emulator" in l)]
    ff = d.get("full_fram")
    if ff:
        lines += ["", f"Accuracy: pre-trained {p['test_accuracy']:.4f}; at this budget {c['test_accuracy']:.4f} "
                  f"({c['test_accuracy'] - p['test_accuracy']:+.4f}); with the whole 256 KB of FRAM (a large-memory-model "
                  f"build, compressed and run on the host: it cannot be linked or emulated here) "
                  f"{ff['test_accuracy']:.4f} at {ff['weight_bytes']:,} B stored."]
    return lines + [""]


def _markdown(s: dict) -> str:
    """The text of ``report.md``."""
    c, p, e, cv, pf = s["compress"], s["pretrained"], s["exits"], s["convert"], s["power_failures"]
    cfg = s["config"]
    lines = [
        "# FreeML-Keras demo report", "",
        f"`{cfg['model']}` on `{cfg['dataset']}` for `{cfg['device']}`"
        + (" (quick run: training subsets)" if cfg["quick"] else "") + ".", "",
        "| stage | result |", "|---|---|",
        f"| pre-trained | test accuracy {p['test_accuracy']:.4f}, {p['fp32_bytes']:,} B fp32, {p['int8_bytes']:,} B int8 |",
        f"| SparseComp | {c['weight_bytes']:,} B stored ({c['ratio_vs_fp32']:.1f}x smaller than fp32, "
        f"{c['ratio_vs_int8']:.1f}x than int8), peak RAM {c['peak_ram_bytes']:,} B, test accuracy {c['test_accuracy']:.4f} |",
        f"| gNet | exits {', '.join(e['exit_points'])}: accuracy {', '.join(f'{a:.3f}' for a in e['gnet_accuracy'])}; "
        f"head {e['head_bytes_gnet']:,} B |",
        f"| branches | accuracy {', '.join(f'{a:.3f}' for a in e['branches_accuracy'])}; heads {e['head_bytes_branches']:,} B "
        f"({e['head_ratio']:.1f}x gNet) |",
        f"| converted | {cv['tflite_bytes']:,} B flatbuffer, int8 accuracy {cv['int8_accuracy']:.4f} (Keras {cv['keras_accuracy']:.4f}) |",
        f"| power failures | {pf['failures']} survived ({pf['failures_in_commits']} inside commits), output bit-exact: "
        f"{pf['bit_exact']}, re-executed units {pf['reexecuted_units']} of {pf['units']} |", "",
        "![size ladder](size_ladder.png) ![exits](exits.png)", ""] + _device_lines(s) + [
        "## Simulation", "",
        f"{s['simulate']['inputs']} inputs per trace, one every "
        + ", ".join(f"{p:.0f} s ({t})" for t, p in s["simulate"].get("arrival_period_s", {}).items())
        + f" (at most every {ARRIVAL_PERIOD_S:g} s, and no more often than the harvest runs the full model "
        f"{1 / ARRIVAL_LOAD:g} times; an input that arrives during an inference waits: latency counts from "
        "arrival), 470 uF capacitor (3.3 V on, 1.8 V off); costs per operator from the converted model's "
        "metadata (the cost model fitted to the operators measured on the target; the branches, never "
        "converted, priced per layer by the same model)" + _costs_sentence(s["simulate"].get("costs")) + " "
        + _restart_sentence(s["simulate"].get("restart")), "",
        "| trace | strategy | accuracy | mean latency (s) | p90 (s) | energy (mJ) | failures/inference |",
        "|---|---|---|---|---|---|---|"]
    for trace, rows in s["simulate"]["traces"].items():
        for r in rows:
            lines.append(f"| {trace} | {r['name']} | {r['accuracy']:.3f} | {r['latency_mean_s']:.3f} | "
                         f"{r['latency_p90_s']:.3f} | {r['energy_mj']:.3f} | {r['failures']:.2f} |")
    lines += ["", "![latency and accuracy](latency_accuracy.png)", "",
              "## SparseComp report", "", "```", c.get("report_txt", "").rstrip(), "```", ""]
    return "\n".join(lines)
