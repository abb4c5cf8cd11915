"""Power-failure tests on the host: the runtime is killed with SIGKILL at random points (by
time: a high-resolution timer armed at power-on; at a seeded byte of the checkpoint commits,
torn records included; at a byte of the prepared image's seal), resumed from NVM (warm restart
from the sealed image) until it completes, and must give the uninterrupted output bit for bit.
Every failure is classified by where it landed (restart, kernel work, commit, outside the
inference); only failures inside the inference are counted, per case and in total."""

from __future__ import annotations

from conftest import prune_kernels

import numpy as np
import pytest

from freeml_keras import datasets, memory, zoo
from freeml_keras.format import tflite as ts
from freeml_keras.conversion.converter import convert
from freeml_keras.runtime.reference import io_quantization, quantize, run_tflm
from freeml_keras.runtime.intermittent import run_uninterrupted, run_with_power_failures
from freeml_keras.keras import keras

TOTAL = {"failures": 0, "in_commits": 0, "in_work": 0, "in_restart": 0, "outside": 0, "by_time": 0,
         "reexecuted": 0, "ckpt_bytes": 0, "runs": 0, "warm_restarts": 0, "power_ons": 0}
# Per case: failures that landed inside kernel work and inside commits (each case needs its own).
CASE_WORK, CASE_COMMITS = 220, 70


def _model(name, dataset, width, zero_fraction):
    tr, _, te = datasets.load(dataset)
    keras.utils.set_random_seed(0)
    m = zoo.build(name, tr[0].shape[1:], int(tr[1].max()) + 1, width=width)
    if zero_fraction:
        prune_kernels(m, zero_fraction)
    b = convert(m, tr[0][:64], sparse=bool(zero_fraction))
    (iq,), _ = io_quantization(b)
    return b, quantize(te[0][:4], *iq)


CASES = [  # the reference architectures, small, dense and sparse; atomic steps in units mode
    # (granularity) and work mode (step_work; None, None: the runtime's default)
    ("cnn_s", "digits", 0.5, 0.0, 1, None),
    ("cnn_s", "digits", 0.5, 0.7, None, None),
    ("cnn_m", "digits", 0.25, 0.0, 2, None),
    ("cnn_m", "digits", 0.25, 0.0, None, 300),
    ("imu_cnn", "watch_imu", 0.25, 0.6, None, 4096),
]


def _case_id(c) -> str:
    steps = f"g{c[4]}" if c[5] is None and c[4] is not None else f"w{c[5] or 'default'}"
    return f"{c[0]}-{'sparse' if c[3] else 'dense'}-{steps}"


@pytest.mark.parametrize("name,dataset,width,zeros,granularity,step_work", CASES, ids=[_case_id(c) for c in CASES])
def test_output_survives_power_failures_bit_exact(name, dataset, width, zeros, granularity, step_work):
    b, xs = _model(name, dataset, width, zeros)
    refs = [run_uninterrupted(b, x, granularity=granularity, step_work=step_work) for x in xs]
    if not zeros:   # the dense variant also runs in TFLite Micro
        for x, (ref, _) in zip(xs, refs):
            assert np.array_equal(ref, run_tflm(b, [x[None]])[0].ravel())
    in_work = in_commits = 0
    i = 0
    while in_work < CASE_WORK or in_commits < CASE_COMMITS:   # inferences until both are reached
        x, (ref, info) = xs[i % len(xs)], refs[i % len(xs)]
        rep = run_with_power_failures(b, x, granularity=granularity, step_work=step_work, time_fraction=0.75,
                                      seed=100 * i + (granularity or 0) + (step_work or 0), max_failures=90)
        i += 1
        assert np.array_equal(rep.output, ref), f"input {i}: output differs after {rep.failures} failures"
        assert rep.units_run >= rep.units_total == info["units"]
        assert rep.failures == sum(rep.failures_by_phase[k] for k in ("restart", "work", "commit"))
        in_work += rep.failures_by_phase["work"]
        in_commits += rep.failures_in_commits
        for k, v in (("failures", rep.failures), ("in_commits", rep.failures_in_commits),
                     ("in_work", rep.failures_by_phase["work"]), ("in_restart", rep.failures_by_phase["restart"]),
                     ("outside", rep.failures_outside), ("by_time", rep.failures_by_time),
                     ("reexecuted", rep.reexecuted_units), ("ckpt_bytes", rep.checkpoint_bytes_written),
                     ("runs", rep.runs), ("warm_restarts", rep.warm_restarts), ("power_ons", rep.power_ons)):
            TOTAL[k] += v
    print(f"{name}: {in_work} failures inside kernels, {in_commits} inside commits; running totals {TOTAL}")


def test_at_least_1000_failures_were_injected():
    """Runs after the cases above in this module (pytest keeps file order within a worker)."""
    if TOTAL["runs"] == 0:
        pytest.fail("the power-failure cases did not run first")
    print(f"power-failure totals: {TOTAL}")
    assert TOTAL["in_work"] >= 1000 and TOTAL["in_commits"] >= 300
    assert TOTAL["in_restart"] > 0          # torn seals of the prepared image
    # later power-ons reuse the prepared image (cold: the first of each inference, and those
    # after a seal was torn)
    assert TOTAL["warm_restarts"] >= 0.5 * TOTAL["power_ons"]


def test_a_new_input_starts_a_new_inference():
    b, xs = _model("cnn_s", "digits", 0.5, 0.0)
    ya, _ = run_uninterrupted(b, xs[0])
    yb, _ = run_uninterrupted(b, xs[1])
    assert not np.array_equal(ya, yb)
    rep = run_with_power_failures(b, xs[1], seed=7, max_failures=30)
    assert np.array_equal(rep.output, yb)


def test_single_write_commits_survive_failures_inside_them():
    """A platform whose NVM writes store bytes in address order (fm_nvm.in_order, the harness's
    -O) commits with one write instead of three; kills at seeded bytes inside those writes still
    leave the old or the new record, and the output stays bit-exact."""
    b, xs = _model("cnn_s", "digits", 0.5, 0.0)
    refs = [run_uninterrupted(b, x, options=["-O"])[0] for x in xs]
    failures = i = 0
    while failures < 80:
        rep = run_with_power_failures(b, xs[i % len(xs)], seed=1000 + i, max_failures=40, time_fraction=0.0,
                                      options=["-O"])
        assert np.array_equal(rep.output, refs[i % len(xs)])
        # byte kills land in commits, or in the seal of a power-on that prepares (restart)
        assert rep.failures_in_commits + rep.failures_by_phase["restart"] == rep.failures
        failures += rep.failures_in_commits
        i += 1


# ---- anytime exit ------------------------------------------------------------------------------

EXIT_POINTS = ["pool1", "conv2", "fc1"]


@pytest.fixture(scope="module")
def exit_models():
    from freeml_keras.exits import attach_global_exit
    tr, va, te = datasets.load("digits")
    keras.utils.set_random_seed(0)
    m = zoo.build("cnn_s", (8, 8, 1), 10, width=0.5)
    zoo.train(m, tr, va, zoo.TrainConfig(epochs=3, batch_size=32), verbose=0)
    prune_kernels(m, 0.7)
    em = attach_global_exit(m, EXIT_POINTS, pooled_size=[2, 1, None])
    rng = np.random.default_rng(0)
    em.set_head_weights(rng.normal(0, 0.3, (sum(em.pooled_dims), 10)), rng.normal(0, 0.1, 10))
    models = {s: convert(m, tr[0][:100], sparse=s, exit_model=em, policy={"thresholds": [0.9, 0.8, 0.7]})
              for s in (False, True)}
    # what "sparse" means: DENSIFY operators feeding CSR weights, read in place by the runtime
    fp = memory.tflite_footprint(models[True])
    assert sum(1 for layer in fp.layers if layer.stored_format == "int8_csr") >= 2
    assert "DENSIFY" in {ts.op_name(mm, o.opcodeIndex) for mm in [ts.read_model(models[True])]
                         for o in mm.subgraphs[0].operators}
    assert not any(layer.stored_format == "int8_csr" for layer in memory.tflite_footprint(models[False]).layers)
    (iq,), _ = io_quantization(models[False])
    return em, models, quantize(te[0][:4], *iq)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_exit_logits_equal_tflite_micro_running_the_head(exit_models, sparse):
    """At every exit the runtime's int8 logits (incremental accumulator) equal TFLite Micro
    running the head subgraph alone with the features of later exit points at their zero point."""
    from freeml_keras.conversion.converter import extract_subgraph
    from freeml_keras.runtime.intermittent import exit_options
    from freeml_keras.format.metadata import read_metadata
    em, models, xs = exit_models
    b = models[sparse]
    head = extract_subgraph(b, read_metadata(b).head_subgraph)
    in_q, _ = io_quantization(head)
    shapes = [tuple(o.shape[1:]) for o in em.features_model().outputs]
    for x in xs:
        dumps = []
        for k in range(len(EXIT_POINTS)):
            logits, info = run_uninterrupted(b, x, options=exit_options(stop_at_exit=k), dump_exit_tensor=True)
            assert info["exit"] == k
            dumps.append(info["exit_tensor"].reshape((1,) + shapes[k]))
            feats = [dumps[i] if i <= k else np.full((1,) + s, q[1], np.int8)
                     for i, (s, q) in enumerate(zip(shapes, in_q))]
            assert np.array_equal(logits, run_tflm(head, feats)[0][0]), f"exit {k}"
        full, info = run_uninterrupted(b, x)
        assert info["exit"] == len(EXIT_POINTS)
        # TFLite Micro has no DENSIFY: the sparse variant's output against the dense one's
        assert np.array_equal(full, run_tflm(models[False], [x[None]])[0][0])


@pytest.mark.parametrize("in_order", [False, True], ids=["three-writes", "one-write"])
def test_exit_state_survives_power_failures(exit_models, in_order):
    """The accumulator (written only when it changed since the slot's last record) survives
    failures with commits of three writes and of one write (fm_nvm.in_order)."""
    from freeml_keras.runtime.intermittent import exit_options
    _, models, xs = exit_models
    opts = exit_options(stop_at_exit=2) + (["-O"] if in_order else [])
    refs = [run_uninterrupted(models[True], x, options=opts)[0] for x in xs]
    failures = i = 0
    while failures < 60:
        rep = run_with_power_failures(models[True], xs[i % len(xs)], options=opts, seed=i, max_failures=60)
        assert rep.exit == 2 and np.array_equal(rep.output, refs[i % len(xs)])
        failures += rep.failures
        i += 1


def test_energy_rule_stops_where_the_next_segment_is_unaffordable(exit_models):
    from freeml_keras.runtime.intermittent import exit_options
    from freeml_keras.format.metadata import read_metadata
    _, models, xs = exit_models
    md = read_metadata(models[False])
    macs_to = [sum(o.macs for o in md.ops[:e.after_op + 1]) for e in md.exits]
    segments = [b - a for a, b in zip(macs_to, macs_to[1:] + [sum(o.macs for o in md.ops)])]
    per_mac = 1e-9
    for budget_macs in (0, min(segments) + 1, max(segments) + 1):
        energy = budget_macs * per_mac
        expect = next((e for e, s in enumerate(segments) if s * per_mac > energy), len(segments))
        _, info = run_uninterrupted(models[False], xs[0],
                                    options=exit_options(energy_j=energy, energy_per_mac_j=per_mac))
        assert info["exit"] == expect, (budget_macs, segments)


def _with_metadata(model_bytes: bytes, md_bytes: bytes) -> bytes:
    """The model with ``md_bytes`` as its freeml metadata, byte for byte (even malformed)."""
    from freeml_keras.format import tflite as ts
    from freeml_keras.format.metadata import replace_metadata

    class Raw:
        def encode(self) -> bytes:
            return md_bytes
    return replace_metadata(ts.read_model(model_bytes), Raw())


def _exit_for(segments: list[int], price: float, energy: float) -> int:
    """The exit the energy rule stops at: the first whose next segment costs more than ``energy``."""
    return next((e for e, s in enumerate(segments) if s * price > energy), len(segments))


def test_energy_rule_prices_the_metadata_costs(exit_models):
    """With version 2 metadata whose cost table is complete, the energy rule stops where the
    summed per-operator costs x J/cycle say the next segment is unaffordable; a table with an
    unknown (0) cost for an operator that runs, and version 1 metadata (16-byte operator
    records), keep the MAC rule; record tables past the end of the buffer are refused."""
    import struct
    from freeml_keras.runtime.intermittent import exit_options, plan
    from freeml_keras.format.metadata import read_metadata
    _, models, xs = exit_models
    b = models[False]
    md = read_metadata(b)
    units = [o["units"] for o in plan(b)["ops"]]
    # costs unrelated to MACs (the last operators dearest), 0 for alias operators (no units)
    costs = [0 if u == 0 else 500 * (k + 1) ** 2 for k, u in enumerate(units)]
    for rec, c in zip(md.ops, costs):
        rec.cost = c
    with_costs = _with_metadata(b, md.encode())
    ends = [e.after_op for e in md.exits] + [len(md.ops) - 1]
    cum = lambda vals, k: sum(vals[:k + 1])  # noqa: E731
    cost_seg = [cum(costs, b_) - cum(costs, a) for a, b_ in zip(ends, ends[1:])]
    macs = [o.macs for o in md.ops]
    mac_seg = [cum(macs, b_) - cum(macs, a) for a, b_ in zip(ends, ends[1:])]
    per_cycle, per_mac = 1e-9, 1e-9
    budgets = sorted({s + d for s in cost_seg + mac_seg for d in (-1, 1)} | {0})
    differs = 0
    for budget in budgets:
        energy = budget * per_cycle
        expect = _exit_for(cost_seg, per_cycle, energy)
        _, info = run_uninterrupted(with_costs, xs[0], options=exit_options(
            energy_j=energy, energy_per_mac_j=per_mac, energy_per_cycle_j=per_cycle))
        assert info["exit"] == expect, (budget, cost_seg)
        differs += expect != _exit_for(mac_seg, per_mac, energy)
    assert differs > 0, "costs and MACs give the same exits: the test cannot tell the rules apart"

    # an operator that runs with cost 0 (unknown): the MAC rule
    running = next(k for k, u in enumerate(units) if u > 0)
    md.ops[running].cost = 0
    incomplete = _with_metadata(b, md.encode())
    # version 1: the same header, 16-byte operator records without the cost
    raw = bytearray(md.encode())
    n_ops, ops_at = len(md.ops), struct.unpack_from("<I", raw, 20)[0]
    v1_ops = b"".join(raw[ops_at + 20 * k: ops_at + 20 * k + 16] for k in range(n_ops))
    v1 = raw[:ops_at] + v1_ops + raw[ops_at + 20 * n_ops:]
    struct.pack_into("<H", v1, 4, 1)
    struct.pack_into("<II", v1, 24, struct.unpack_from("<I", raw, 24)[0] - 4 * n_ops,
                     struct.unpack_from("<I", raw, 28)[0])
    assert read_metadata(_with_metadata(b, bytes(v1))).version == 1
    for model in (incomplete, _with_metadata(b, bytes(v1))):
        for budget in budgets:
            energy = budget * per_mac
            _, info = run_uninterrupted(model, xs[0], options=exit_options(
                energy_j=energy, energy_per_mac_j=per_mac, energy_per_cycle_j=per_cycle))
            assert info["exit"] == _exit_for(mac_seg, per_mac, energy), budget

    # operator records running past the end of the metadata buffer: an error, not a read past it
    short = bytearray(md.encode())
    struct.pack_into("<I", short, 20, len(short) - 20 * n_ops + 1)
    with pytest.raises(RuntimeError, match="malformed"):
        run_uninterrupted(_with_metadata(b, bytes(short)), xs[0])


def test_confidence_thresholds_from_the_metadata(exit_models):
    from freeml_keras.runtime.intermittent import exit_options
    from freeml_keras.runtime.reference import dequantize
    em, models, xs = exit_models
    b = models[False]
    from freeml_keras.conversion.converter import extract_subgraph
    _, out_q = io_quantization(extract_subgraph(b, 1))
    thresholds = [0.9, 0.8, 0.7]
    chosen = []
    for x in xs:
        expect = len(EXIT_POINTS)
        for k in range(len(EXIT_POINTS)):
            logits, _ = run_uninterrupted(b, x, options=exit_options(stop_at_exit=k))
            z = dequantize(logits, *out_q[0]).astype(np.float64)
            conf = np.exp(z - z.max()).max() / np.exp(z - z.max()).sum()
            if conf >= thresholds[k] + 1e-4:      # clear of the C exp approximation's error
                expect = k
                break
            assert conf < thresholds[k] - 1e-4   # not within the C exp approximation's error
        _, info = run_uninterrupted(b, x, options=exit_options(thresholds=True))
        assert info["exit"] == expect
        chosen.append(expect)
    print(f"exits chosen by the thresholds: {chosen}")
    assert min(chosen) < len(EXIT_POINTS)   # at least one input stopped early


# ---- cross-check with the energy simulator -------------------------------------------------------

@pytest.mark.parametrize("trace", ["constant", "rf_static"])
def test_simulator_agrees_with_the_runtime_on_harvested_energy(trace):
    """The same program (the runtime's real atomic steps, priced by the analytical cost model)
    on the same capacitor and harvester: the simulator's power failures and finishing time
    equal those of the real runtime driven step by step by the same supply, whose output stays
    bit-exact."""
    from freeml_keras.energy import Capacitor, Constant, Program, Simulator, Step, traces
    from freeml_keras.energy.replay import run_on_harvested_energy
    from freeml_keras.runtime.intermittent import atomic_steps
    b, xs = _model("cnn_s", "digits", 0.5, 0.0)
    steps = atomic_steps(b, granularity=1)
    program = Program(tuple(Step(s.cycles, s.nvm_bytes) for s in steps[:-1]) +
                      (Step(steps[-1].cycles, steps[-1].nvm_bytes, 0),))
    harvester = Constant(30e-6) if trace == "constant" else traces.generate(trace)
    sim = Simulator(harvester, Capacitor(capacitance_f=68e-6, v_on=3.3, v_off=1.8))
    predicted = sim.run(program, [0.0]).inferences[0]
    ran = run_on_harvested_energy(b, xs[0], sim.supply(), steps, granularity=1)
    ref, _ = run_uninterrupted(b, xs[0], granularity=1)
    print(f"{trace}: simulator {predicted.power_failures} failures, end {predicted.end_s:.4f} s; "
          f"runtime {ran['failures']} failures, end {ran['time_s']:.4f} s")
    assert predicted.power_failures == ran["failures"] >= 2
    assert ran["time_s"] == pytest.approx(predicted.end_s, rel=1e-9)
    assert np.array_equal(ran["output"], ref)


def _body_sum(body: bytes) -> int:
    """fm_checkpoint.h's record body sum: 16-bit words, a sum (from 0x5EA1) and a sum of sums,
    the second byte-swapped into the first."""
    import struct
    a, b = 0x5EA1, 0
    for (w,) in struct.iter_unpack("<H", body):
        a = (a + w) & 0xFFFF
        b = (b + a) & 0xFFFF
    return a ^ (((b << 8) | (b >> 8)) & 0xFFFF)


def test_checkpoint_records_in_nvm_follow_the_documented_format(tmp_path):
    """Two slots of (u16 seq, u16 sum of the body, u16 op, u16 flags, u32 unit, u32 tag =
    ~first word): after a finished run the newest valid record says done, the slots hold
    consecutive sequence numbers, and each body has the sum its first word carries; a record
    whose body was changed afterwards is not used (the other slot's is)."""
    import struct
    import subprocess
    from freeml_keras.runtime.intermittent import harness_path
    b, xs = _model("cnn_s", "digits", 0.5, 0.0)
    (tmp_path / "m.tflite").write_bytes(b)
    (tmp_path / "x.bin").write_bytes(xs[0].tobytes())
    r = subprocess.run([str(harness_path()), str(tmp_path / "m.tflite"), str(tmp_path / "nvm"), "new",
                        str(tmp_path / "x.bin"), "-g", "4"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    nvm = (tmp_path / "nvm").read_bytes()
    records = []
    for slot in range(2):
        rec = nvm[16 * slot:16 * slot + 16]       # no exit head: 16-byte records
        seq, total, op, flags, unit, tag = struct.unpack("<HHHHII", rec)
        assert tag == ~(seq | total << 16) & 0xFFFFFFFF
        assert total == _body_sum(rec[4:12])
        records.append((seq, op, flags, unit))
    newest = max(records)
    assert abs(records[0][0] - records[1][0]) == 1
    assert newest[2] & 0x2                        # FM_CKPT_DONE
    # flip a bit of the newest record's unit: it is complete but not intact, so the older
    # record (one step earlier, not done) is resumed, and the run finishes again, bit-exact
    at = 16 * records.index(newest) + 8
    damaged = bytearray(nvm)
    damaged[at] ^= 0x01
    (tmp_path / "nvm").write_bytes(bytes(damaged))
    r = subprocess.run([str(harness_path()), str(tmp_path / "m.tflite"), str(tmp_path / "nvm"), "resume",
                        "-g", "4", "-o", str(tmp_path / "y.bin")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert " units=0 " not in f" {r.stdout}"      # the last step ran again
    assert np.array_equal(np.frombuffer((tmp_path / "y.bin").read_bytes(), np.int8),
                          run_uninterrupted(b, xs[0], granularity=4)[0])


def _advance(units: list[int], op: int, unit: int, n: int) -> tuple[int, int, list[int]]:
    """Where a step of n units from (op, unit) leaves the runtime's cursor (past completed and
    alias operators), and the operators it completes."""
    done = []
    unit += n
    while op < len(units) and unit >= units[op]:
        unit -= units[op]
        done.append(op)
        op += 1
    return op, unit, done


def test_work_mode_steps_cover_the_model_within_the_budget():
    """Work mode: the plan's steps run every unit once, in order, each inside one operator and
    within the work budget unless it is a single unit; alias operators take no step."""
    from freeml_keras.runtime.intermittent import plan
    b, _ = _model("cnn_m", "digits", 0.25, 0.0)
    units = [o["units"] for o in plan(b)["ops"]]
    for budget in (300, 1024, 1 << 20):
        p = plan(b, step_work=budget)
        op, unit, _ = _advance(units, 0, 0, 0)
        for st in p["steps"]:
            assert _advance(units, st["op"], st["unit"], 0)[:2] == (op, unit), st
            assert st["units"] > 0 and st["unit"] + st["units"] <= units[op], st
            assert st["work"] <= budget or st["units"] == 1, (budget, st)
            op, unit, _ = _advance(units, st["op"], st["unit"], st["units"])
        assert op == len(units) and sum(s["units"] for s in p["steps"]) == sum(units)
        assert p["largest_step_work"] == max(s["work"] for s in p["steps"])
    whole = plan(b, step_work=1 << 20)
    assert len(whole["steps"]) == sum(1 for u in units if u), "one step per operator with units"
    assert len(plan(b, step_work=300)["steps"]) > len(whole["steps"])


# ---- no livelock: one charge pays the restart plus the largest atomic step ---------------------

def test_on_periods_of_restart_plus_largest_step_finish_and_shorter_ones_never_do(tmp_path):
    """Steps are planned by the metadata's per-operator costs (cost mode). On-periods of 1.2 x
    (measured restart + largest step) in that cost finish every time, bit-exact; at 0.9 x the
    largest step never completes, and power_on_budget says so beforehand, with the shortfall."""
    from freeml_keras.costs import restart_cost
    from freeml_keras.energy import Capacitor
    from freeml_keras.energy.livelock import power_on_budget
    from freeml_keras.runtime.intermittent import plan, run_on_periods
    tr, _, te = datasets.load("digits")
    keras.utils.set_random_seed(0)
    m = zoo.build("cnn_s", tr[0].shape[1:], 10, width=0.5)
    b = convert(m, tr[0][:64], sparse=False, target="msp430fr5994")
    (iq,), _ = io_quantization(b)
    x = quantize(te[0][:1], *iq)[0]
    ref, _ = run_uninterrupted(b, x)
    p = plan(b)
    assert p["mode"] == "cost" and p["largest_step_cost"] > 0
    restart = restart_cost("msp430fr5994")
    need = restart + p["largest_step_cost"]
    ok = run_on_periods(b, x, on_period=int(1.2 * need), restart=restart, max_power_ons=400)
    assert ok["done"] and np.array_equal(ok["output"], ref) and ok["power_ons"] > 1
    short = run_on_periods(b, x, on_period=int(0.9 * need), restart=restart, max_power_ons=3 * len(p["steps"]))
    assert not short["done"]
    budget = power_on_budget(b, "msp430fr5994")
    assert budget["needed_cycles"] == need
    per_cycle = budget["needed_j"] / need
    fits = Capacitor(capacitance_f=1.2 * budget["min_capacitance_f"])
    small = Capacitor(capacitance_f=0.9 * budget["min_capacitance_f"])
    assert power_on_budget(b, "msp430fr5994", fits)["finishes"]
    s = power_on_budget(b, "msp430fr5994", small)
    assert not s["finishes"] and s["shortfall_j"] == pytest.approx(0.1 * need * per_cycle, rel=1e-6)


def test_the_harness_under_sanitizers_survives_power_failures():
    """The harness built with AddressSanitizer + UBSan (the code that reads NVM after every
    failure: records, the prepared image, the exit head's accumulator) under timed, commit and
    seal kills: no sanitizer report (a report aborts with a non-kill status), outputs bit-exact."""
    from freeml_keras.runtime.build import make_host
    asan = make_host("intermittent_asan", "fm_intermittent_asan")
    b, xs = _model("cnn_s", "digits", 0.5, 0.7)
    refs = [run_uninterrupted(b, x)[0] for x in xs]
    failures = i = 0
    while failures < 40 and i < 60:
        rep = run_with_power_failures(b, xs[i % len(xs)], seed=500 + i, max_failures=40, time_fraction=0.5,
                                      harness=asan)
        assert np.array_equal(rep.output, refs[i % len(xs)])
        failures += rep.failures
        i += 1
    assert failures >= 40
