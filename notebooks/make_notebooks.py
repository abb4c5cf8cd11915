"""Build the tutorial notebooks from the plain Python cell sources in this file.

    .venv/bin/python notebooks/make_notebooks.py

writes 01_compress.ipynb, 02_exits.ipynb and 03_deploy_and_simulate.ipynb next to this file,
without outputs (they are executed by tests/test_notebooks.py, with FREEML_SMALL=1 for small
settings). Edit the cells here, not in the .ipynb files, and regenerate. Cell ids are fixed so
that regenerating an unchanged notebook gives the same file.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


def md(text: str) -> tuple[str, str]:
    return "markdown", textwrap.dedent(text).strip("\n")


def code(text: str) -> tuple[str, str]:
    return "code", textwrap.dedent(text).strip("\n")


# The settings every tutorial starts with: the same in all three, so that notebooks 02 and 03
# continue from what 01 and 02 saved in the same output directory.
SETTINGS = code('''
    import logging
    import os
    from pathlib import Path

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # quiet TensorFlow's C++ logging
    import numpy as np
    import matplotlib.pyplot as plt
    %matplotlib inline

    from freeml_keras import datasets
    from freeml_keras.keras import tf                    # the package's TensorFlow (tf_keras)

    tf.get_logger().setLevel(logging.ERROR)              # no notices from TensorFlow's Python side
    logging.getLogger("absl").setLevel(logging.ERROR)

    # FREEML_SMALL=1 (the tests): the 8x8 digits, a half-width model and short training, so that
    # the notebook runs in a minute or two. Without it: the embedded default, cnn_s on
    # Fashion-MNIST (MNIST where Fashion-MNIST is not installed); that takes much longer.
    SMALL = os.environ.get("FREEML_SMALL") == "1"
    OUT = Path(os.environ.get("FREEML_NOTEBOOK_OUT", "runs/notebooks"))   # everything we write
    OUT.mkdir(parents=True, exist_ok=True)
    DEVICE = "msp430fr5994"
    if SMALL:
        DATASET, WIDTH, EPOCHS, TRAIN_LIMIT, TEST_LIMIT = "digits", 0.5, 40, None, None
        COMPRESS_OPTIONS = dict(factorize=False, fine_tune_epochs=2, qat_epochs=1, fragile_drop=0.02)
        EXIT_POINTS, PUBLISHED_POOLING = ["pool1", "conv2", "fc1"], [1, 1, None]
    else:
        DATASET = "fashion_mnist" if datasets.available("fashion_mnist") else "mnist"
        WIDTH, EPOCHS = 1.0, None
        TRAIN_LIMIT, TEST_LIMIT = 10_000, 2_000    # examples for fine-tuning / for evaluation
        COMPRESS_OPTIONS = {}
        EXIT_POINTS, PUBLISHED_POOLING = "auto", 1   # after every pooling stage (any number)
    print(f"dataset {DATASET}, model cnn_s (width {WIDTH}), device {DEVICE}, output in {OUT}")
''')

LOAD_DATA = code('''
    from freeml_keras import zoo

    train, val, test = datasets.load(DATASET)
    train, test = datasets.subset(train, TRAIN_LIMIT), datasets.subset(test, TEST_LIMIT)
    model = zoo.pretrained("cnn_s", DATASET, width=WIDTH, epochs=EPOCHS, verbose=0 if SMALL else 2)
''')

# Notebooks 02 and 03 start from the compressed model: the same call as in notebook 01. With
# resume=True it picks up notebook 01's finished run in OUT/compress (instantly), or runs it.
COMPRESSED = code('''
    from freeml_keras.compression import sparsecomp

    result = sparsecomp.compress(model, DEVICE, train, val, out_dir=OUT / "compress", resume=True,
                                 **COMPRESS_OPTIONS)
    backbone = result.model
    print(f"compressed backbone: {result.weight_bytes:,} B stored, "
          f"validation accuracy {result.val_accuracy:.4f}")
''')


NB01 = [
    md('''
        # 1. Compress a pre-trained model for a batteryless device

        A batteryless sensor has a few hundred KB of non-volatile memory (FRAM on the TI
        MSP430FR5994) and a few KB of SRAM. This tutorial takes a pre-trained Keras model, measures
        what it needs against such a device, and compresses it to the device's budget with
        **SparseComp**: it repeatedly takes the largest layer that is not "fragile", makes it
        sparser (or narrower), fine-tunes, and undoes the step if accuracy falls too far, until
        the stored int8 size meets the budget. Your own model is never modified.

        Next: `02_exits.ipynb` adds energy-adaptive exits to the compressed model.
    '''),
    SETTINGS,
    md('''
        ## The data and a pre-trained model

        `datasets.load` returns fixed train / validation / test splits from files installed on
        this machine (nothing is downloaded). `zoo.pretrained` trains the reference `cnn_s`
        (three convolutions, two dense layers) once and caches it; use your own `tf_keras` model
        instead if you have one.
    '''),
    LOAD_DATA,
    code('''
        print(f"train {train[0].shape}, validation {val[0].shape}, test {test[0].shape}")
        model.summary()
        acc_before = zoo.accuracy(model, test)
        print(f"test accuracy of the pre-trained model: {acc_before:.4f}")
    '''),
    md('''
        ## How much memory does it need?

        `memory.keras_footprint` applies the project's footprint rules: every weighted layer is
        stored in int8 (in compressed sparse rows where that is smaller), activations need a
        peak arena, and the runtime keeps a small checkpoint in non-volatile memory. `fits`
        compares this with a device profile from `freeml_keras.devices`.
    '''),
    code('''
        from freeml_keras import devices, memory

        fp_before = memory.keras_footprint(model)
        print(fp_before.table())
    '''),
    code('''
        for name in devices.names():
            dev = devices.get(name)
            fit = fp_before.fits(dev)
            print(f"{name:13s} {dev.core:18s} NVM {dev.nvm_bytes // 1024:5d} KB, SRAM {dev.ram_bytes // 1024:4d} KB, "
                  f"model budget {dev.model_budget_bytes:9,} B -> parameters fit: {fit['flash_ok']} "
                  f"(margin {fit['flash_margin_bytes']:+,} B), runtime memory fits: {fit['ram_ok']}")
        dev = devices.get(DEVICE)
        print(f"\\n{DEVICE}: {dev.clock_hz / 1e6:.0f} MHz, {dev.energy_per_cycle_j * 1e9:.2f} nJ per cycle, "
              f"activations in NVM: {dev.activations_in_nvm}")
    '''),
    md('''
        ## Compress to the device's budget

        `sparsecomp.compress(model, budget, train, val, out_dir=..., resume=True, **options)`
        takes the budget as bytes, `(flash, ram)` or a device name (its `model_budget_bytes` and
        `ram_budget_bytes`). It prints one line per step and saves its state after every step in
        `out_dir`: an interrupted run continues where it stopped, and a finished one is returned
        at once. The options (see `sparsecomp.Options`) trade time for accuracy; the small
        settings skip layer factorization, fine-tune briefly, and let a step lose up to 2
        points of validation accuracy (the digits validation set has only 360 examples).
    '''),
    code('''
        from freeml_keras.compression import sparsecomp

        weights_before = [w.copy() for w in model.get_weights()]
        result = sparsecomp.compress(model, DEVICE, train, val, out_dir=OUT / "compress", resume=True,
                                     **COMPRESS_OPTIONS)
    '''),
    md('''
        The report lists every step (what was changed, the stored size and validation accuracy
        after it, whether it was kept) and the footprint of the final model.
    '''),
    code('''
        print(result.table())
    '''),
    md('''
        Running the same call again resumes from `out_dir`: the finished result comes back
        without any training.
    '''),
    code('''
        import time

        t0 = time.time()
        again = sparsecomp.compress(model, DEVICE, train, val, out_dir=OUT / "compress", resume=True,
                                    **COMPRESS_OPTIONS)
        print(f"second call: {time.time() - t0:.1f} s, same size: {again.weight_bytes == result.weight_bytes}")
    '''),
    md('''
        ## The original model is unchanged

        `compress` works on a copy: the model you passed in keeps its weights and its size.
    '''),
    code('''
        same = all(np.array_equal(a, b) for a, b in zip(weights_before, model.get_weights()))
        print(f"original weights unchanged: {same}; stored size still "
              f"{memory.keras_footprint(model).weight_bytes:,} B")
        assert same
    '''),
    md('''
        ## Accuracy and size, before and after
    '''),
    code('''
        compressed = result.model
        acc_after = zoo.accuracy(compressed, test)
        fp_after = memory.keras_footprint(compressed)
        print(f"test accuracy: {acc_before:.4f} before, {acc_after:.4f} after "
              f"({100 * (acc_after - acc_before):+.2f} points)")
        print(f"stored parameters: {fp_before.weight_bytes:,} B -> {fp_after.weight_bytes:,} B "
              f"({fp_before.totals['fp32'] / fp_after.weight_bytes:.1f}x smaller than float32)")
        print(f"fits {DEVICE}: {fp_after.fits(DEVICE)}")
    '''),
    code('''
        before = {l.name: l.stored_bytes for l in fp_before.layers if l.params}
        after = {l.name: l.stored_bytes for l in fp_after.layers if l.params}
        names = list(before) + [n for n in after if n not in before]
        steps = [s for s in result.report["steps"] if s.get("accepted", True) and not s.get("fragile")]

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
        pos = np.arange(len(names))
        ax1.bar(pos - 0.2, [before.get(n, 0) / 1024 for n in names], 0.4, label="pre-trained")
        ax1.bar(pos + 0.2, [after.get(n, 0) / 1024 for n in names], 0.4, label="compressed")
        ax1.set_xticks(pos, names, rotation=45)
        ax1.set_ylabel("stored KB (int8, CSR where smaller)")
        ax1.set_title("Stored size per layer")
        ax1.legend()
        ax2.plot([result.report["baseline"]["weight_bytes"] / 1024] + [s["weight_bytes_now"] / 1024 for s in steps],
                 [result.report["baseline"]["val_accuracy"]] + [s["val_accuracy"] for s in steps], "o-")
        ax2.axvline(result.report["budget"]["flash_bytes"] / 1024, color="k", ls=":", label="budget")
        ax2.invert_xaxis()
        ax2.set_xlabel("stored KB after each step")
        ax2.set_ylabel("validation accuracy")
        ax2.set_title("SparseComp steps")
        ax2.legend()
        fig.tight_layout()
        plt.show()
    '''),
    md('''
        ## The same steps inside your own `model.fit`, on a Keras 3 model

        `compress` owns the training. To keep your own loop (optimizer, learning-rate schedule,
        augmentation, distribution strategy), use SparseComp's pieces in tfmot's shape:
        `prepare(model, budget)` returns a copy with every Dense and convolution wrapped for
        pruning (a Keras 3 model is bridged to tf_keras, the Keras tfmot trains in), the
        `SparseComp` callback runs the schedule across the epochs of your `fit` (the largest
        non-fragile layer's density step, tfmot's hard threshold after every optimizer step, the
        best epoch by validation loss, the fragile test and undo, a stop once the budget is met),
        and `strip` gives back a plain model in your Keras. `compress` takes its density steps
        through the same callback. Here: a small Keras 3 model of your own, to half its stored
        size, with a learning-rate schedule of our choosing.
    '''),
    code('''
        import keras as keras3                                  # Keras 3: TensorFlow's default
        from freeml_keras.keras import keras as tfk             # the tf_keras the wrapped copy uses
        from freeml_keras.compression.callback import SparseComp, prepare, strip

        keras3.utils.set_random_seed(0)
        mine = keras3.Sequential([keras3.Input(train[0].shape[1:]),
                                  keras3.layers.Conv2D(8, 3, activation="relu", name="conv"),
                                  keras3.layers.MaxPooling2D(2, name="pool"),
                                  keras3.layers.Flatten(name="flat"),
                                  keras3.layers.Dense(32, activation="relu", name="fc1"),
                                  keras3.layers.Dense(10, activation="softmax", name="out")])
        mine.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        mine.fit(*train, epochs=10 if SMALL else 3, batch_size=64, verbose=0)
        budget = memory.keras_footprint(mine).weight_bytes // 2

        pruned = prepare(mine, budget)
        pruned.compile(tfk.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        sc = SparseComp(validation_data=val, epochs_per_step=1, fragile_drop=0.02)
        pruned.fit(*train, epochs=25, batch_size=64, validation_data=val, verbose=0,
                   callbacks=[sc, tfk.callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=3)])
        mine_small = strip(pruned)                              # a Keras 3 model again
        print(f"{type(mine_small).__module__}: budget {budget:,} B met: {sc.budget_met}, "
              f"{sc.weight_bytes:,} B stored, densities {sc.densities}, fragile {sc.fragile}")
        print(f"test accuracy: {zoo.accuracy(mine, test):.4f} -> {zoo.accuracy(mine_small, test):.4f}")
    '''),
    md('''
        ## What you got
    '''),
    code('''
        rep = result.report
        print(f"model: cnn_s on {DATASET}, compressed for {DEVICE} in {len(rep['steps'])} steps")
        print(f"stored parameters: {rep['baseline']['weight_bytes']:,} B -> {rep['final']['weight_bytes']:,} B "
              f"(budget {rep['budget']['flash_bytes']:,} B, met: {rep['meets_budget']}); "
              f"{rep['ratio_to_fp32']:.1f}x smaller than float32")
        print(f"test accuracy: {acc_before:.4f} -> {acc_after:.4f}")
        print(f"compressed model and report: {result.out_dir}/model.keras, report.txt")
    '''),
]


NB02 = [
    md('''
        # 2. Add energy-adaptive exits

        On harvested energy, an inference may not finish before the capacitor is empty. Exits
        give an answer part-way through the network. **gNet** uses one shared exit head for all
        exit points: each exit point's feature map is max-pooled to a small vector, and one
        linear layer reads the concatenation (zeros for exit points not yet reached). Because
        the head is linear, the logits at exit k are `b + sum_{i<=k} W_i . p_i`: the device keeps
        one accumulator per class and adds each exit point's contribution as it passes it.

        This tutorial trains that head on the frozen compressed backbone from notebook 1,
        compares it with per-exit branches (a separate classifier per exit point), measures the
        memory of both, and builds an energy-adaptive exit policy. The backbone is not changed:
        the final answer is exactly the compressed model's.
    '''),
    SETTINGS,
    md('''
        ## The compressed backbone

        The same calls as notebook 1: with `resume=True`, `compress` returns notebook 1's
        finished result from `OUT/compress`, or runs it now if that is not there.
    '''),
    LOAD_DATA,
    COMPRESSED,
    md('''
        ## Attach the shared exit head (gNet)

        `attach_global_exit(model, exit_points)` returns an untrained `ExitModel` (exit points:
        layer names, or `"auto"`: after every pooling stage, however many there are). It chooses,
        per exit point, the pooled map and channel cap that fit a head-memory budget: a quarter
        of what per-exit branches would store, at most a quarter of the backbone's stored bytes
        (`head_budget_bytes=` or `device=` set another). `train_global_exit` trains the head on
        the frozen backbone's pooled features, by default stagewise (exit by exit, each exit
        point's weights trained with the earlier ones fixed, which keeps early exits accurate)
        with a learned per-exit feature scale. For comparison, the published gNet: every exit
        point pooled to 1x1, each example trained at a random exit (`method="random"`).
    '''),
    code('''
        from freeml_keras import exits

        gnet = exits.attach_global_exit(backbone, EXIT_POINTS)     # pooling chosen for the budget
        choice = gnet.info["pooling"]
        print(f"exit points {gnet.exit_points}; head budget {choice['head_budget_bytes']:,} B "
              f"({choice['rule']}); pooled dims {gnet.pooled_dims}")
        record = exits.train_global_exit(gnet, train, val, verbose=0)     # stagewise, scaled
        print(f"allocation {gnet.info['pooling']['allocation']}, head {gnet.info['pooling']['head_bytes']:,} B; "
              "validation accuracy per exit " + " ".join(f"{a:.3f}" for a in record["val_exit_accuracy"]))
        published = exits.attach_global_exit(backbone, EXIT_POINTS, pooled_size=PUBLISHED_POOLING)
        record = exits.train_global_exit(published, train, val, method="random", scale=False, verbose=0)
        print("published gNet: validation accuracy per exit "
              + " ".join(f"{a:.3f}" for a in record["val_exit_accuracy"]))
    '''),
    md('''
        ## The baseline: per-exit branches

        `attach_exit_branches` gives every exit point its own classifier (pooled to 4x4 as SDN
        does), trained for its own exit.
    '''),
    code('''
        branches = exits.attach_exit_branches(backbone, gnet.exit_points)
        record = exits.train_exit_branches(branches, train, val, epochs=30, learning_rate=1e-2, verbose=0)
        print(f"branch sizes {branches.pooled_dims}; validation accuracy per exit "
              + " ".join(f"{a:.3f}" for a in record["val_exit_accuracy"]))
    '''),
    md('''
        ## Accuracy at every exit

        `evaluate` gives the test accuracy at each exit point and of the backbone's own output
        (identical for all three: the backbone is shared and unchanged). The x axis is the share
        of the full inference's MACs spent to reach each exit.
    '''),
    code('''
        results = {"gNet, published (random)": published.evaluate(test),
                   "gNet, stagewise": gnet.evaluate(test),
                   "per-exit branches": branches.evaluate(test)}
        final_acc = results["gNet, stagewise"]["backbone_accuracy"]
        print(f"{'':28s}" + "".join(f"{'exit ' + str(k):>9s}" for k in range(gnet.num_exits)) + f"{'final':>9s}")
        for name, r in results.items():
            print(f"{name:28s}" + "".join(f"{a:9.4f}" for a in r["exit_accuracy"]) + f"{r['backbone_accuracy']:9.4f}")
    '''),
    code('''
        fp_gnet = exits.exit_footprint(gnet)
        fp_branches = exits.exit_footprint(branches)
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        for (name, r), fp in zip(results.items(), (fp_gnet, fp_gnet, fp_branches)):
            share = [100 * m / fp["macs_to_final"] for m in fp["macs_to_exit"]] + [100]
            ax.plot(share, r["exit_accuracy"] + [r["backbone_accuracy"]], "o-", label=name)
        ax.set_xlabel("% of the inference's MACs to reach the exit")
        ax.set_ylabel("test accuracy")
        ax.set_title("Accuracy at each exit")
        ax.legend()
        plt.show()
    '''),
    md('''
        ## Memory of the exit mechanism

        `compare_mechanisms` counts, per mechanism, the stored int8 parameters of the exit
        classifiers, the state kept between exit points (gNet: one int32 accumulator per class)
        and the scratch memory used while an exit is evaluated.
    '''),
    code('''
        from freeml_keras.exits.footprint import exit_table

        mech = exits.compare_mechanisms(gnet, branches)
        print(exit_table(mech))
    '''),
    code('''
        parts = ["head_bytes", "state_bytes", "scratch_bytes"]
        fig, ax = plt.subplots(figsize=(6, 3))
        left = np.zeros(2)
        for part in parts:
            vals = np.array([mech["gnet"][part], mech["branches"][part]])
            ax.barh(["gNet", "branches"], vals, left=left, label=part.replace("_bytes", ""))
            left += vals
        ax.set_xlabel("bytes")
        ax.set_title(f"Exit overhead: branches / gNet = {mech['overhead_ratio']:.2f}x")
        ax.legend()
        plt.show()
    '''),
    md('''
        ## The incremental head equals the Keras head

        `incremental_logits(head_weights, pooled, k)` is the computation the device runs:
        the bias, then one `W_i . p_i` per exit point passed. It gives the same logits as the
        Keras head model fed with the exit-point feature maps (later ones zeroed), and it never
        reads the features of exit points after k.
    '''),
    code('''
        x = test[0][:100]
        maps = gnet.features_model().predict(x, verbose=0)
        pooled = gnet.pooled_features(x)
        weights = gnet.head_weights()
        head = gnet.head_model()
        for k in range(gnet.num_exits):
            masked = [m if i <= k else np.zeros_like(m) for i, m in enumerate(maps)]
            keras_logits = head.predict(masked, verbose=0)
            inc = exits.incremental_logits(weights, pooled, k)
            only_up_to_k = exits.incremental_logits(weights, pooled[:k + 1], k)
            print(f"exit {k}: largest difference to the Keras head {np.abs(inc - keras_logits).max():.2e}, "
                  f"same without later features: {np.array_equal(inc, only_up_to_k)}")
            assert np.allclose(inc, keras_logits, rtol=1e-4, atol=1e-4)
    '''),
    md('''
        ## An energy-adaptive exit policy

        `segment_costs` estimates the cycles and energy of each segment (input to exit 0, exit 0
        to exit 1, ..., last exit to the output) on the device: each TFLite operator a layer
        becomes is priced by the cost model fitted to the operators measured on the device's
        core under its emulator (`freeml_keras.costs`). `calibrate_thresholds` picks one
        confidence threshold on validation data: here the most accurate one whose mean cost stays
        within 60% of a full inference. The resulting `ExitPolicy` stops at an exit when the
        answer is confident enough, or when the energy left cannot pay for the next segment.
    '''),
    code('''
        costs = exits.segment_costs(gnet, DEVICE)
        for c in costs:
            print(f"{c.name:28s} {c.macs:9,} MACs {c.cycles:12,.0f} cycles {c.energy_j * 1e6:8.2f} uJ "
                  f"{c.seconds * 1e3:7.2f} ms")
        policy = exits.calibrate_thresholds(gnet, val, target_cost=0.6, device=DEVICE)
        print(f"thresholds: {policy.thresholds}")
        on_test = exits.evaluate_policy(policy, gnet, test)
        print(f"test: accuracy {on_test['accuracy']:.4f} (final output {final_acc:.4f}), "
              f"answers per exit {on_test['exit_histogram']}, mean cost {100 * on_test['mean_cost_fraction']:.0f}% "
              f"of a full inference")
    '''),
    md('''
        With a limited energy budget per inference the policy answers at the deepest exit it can
        afford, or earlier when confident. Below, accuracy and energy used as a function of the
        energy available, for this policy and for the energy rule alone (no thresholds). An
        inference that cannot even reach exit 0 gives no answer and counts as wrong.
    '''),
    code('''
        z, final = gnet.predict_all(test[0])
        energy_only = exits.ExitPolicy([None] * gnet.num_exits, policy.segment_energy_j, device=DEVICE)
        full = sum(policy.segment_energy_j)
        budgets = np.linspace(0, 1.05, 64) * full
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.5))
        for name, p in (("energy rule only", energy_only), ("energy rule + confidence", policy)):
            runs = [p.run(z, final, energy_j=e) for e in budgets]
            ax1.plot(1e6 * budgets, [np.mean(r["prediction"] == test[1]) for r in runs], label=name)
            ax2.plot(1e6 * budgets, [1e6 * np.mean(r["energy_j"]) for r in runs], label=name)
        ax1.set_ylabel("test accuracy")
        ax2.set_ylabel("energy used per inference (uJ)")
        for ax in (ax1, ax2):
            ax.set_xlabel("energy available per inference (uJ)")
            ax.legend()
        fig.suptitle("gNet with an energy-adaptive policy")
        fig.tight_layout()
        plt.show()
    '''),
    md('''
        ## Save the exit model and the policy

        `ExitModel.save` writes the backbone, the head weights and a JSON description;
        `ExitModel.load` reads them back. Notebook 3 converts and deploys them.
    '''),
    code('''
        gnet.save(OUT / "exit_model")
        (OUT / "exit_policy.json").write_text(policy.to_json())
        back = exits.ExitModel.load(OUT / "exit_model")
        same = np.array_equal(back.predict_exits(test[0][:50]), gnet.predict_exits(test[0][:50]))
        print(f"saved to {OUT / 'exit_model'} and {OUT / 'exit_policy.json'}; reloaded gives the same logits: {same}")
        assert same
    '''),
    md('''
        ## What you got
    '''),
    code('''
        g, b = results["gNet, stagewise"]["exit_accuracy"], results["per-exit branches"]["exit_accuracy"]
        print(f"{gnet.num_exits} exit points {gnet.exit_points} on the compressed cnn_s ({DATASET})")
        print("test accuracy per exit, gNet:     " + " ".join(f"{a:.3f}" for a in g) + f"  final {final_acc:.3f}")
        print("test accuracy per exit, branches: " + " ".join(f"{a:.3f}" for a in b))
        print(f"exit memory: gNet {mech['gnet']['overhead_bytes']:,} B, "
              f"branches {mech['branches']['overhead_bytes']:,} B "
              f"({mech['overhead_ratio']:.2f}x more)")
        print(f"policy: accuracy {on_test['accuracy']:.3f} at {100 * on_test['mean_cost_fraction']:.0f}% of the "
              f"full inference's energy on average")
    '''),
]


NB03 = [
    md('''
        # 3. Convert, deploy and simulate on harvested energy

        The exit model from notebook 2 becomes one int8 TFLite flatbuffer: the backbone, a second
        subgraph for the exit head, and `freeml` metadata (which tensors feed the head, per-op
        costs, the exit thresholds). Stock TFLite Micro runs its dense variant unchanged; the
        project's C runtime (`tflm_port/`) also reads sparse weights in place, checkpoints its progress in
        non-volatile memory, and can stop at any exit. We run it on this computer, under injected
        power failures, build it for a Cortex-M4, and simulate the device on harvested energy.
    '''),
    SETTINGS,
    md('''
        ## The exit model and its policy

        Saved by notebook 2 in `OUT`. If they are not there, the cell below repeats notebook 2's
        steps in short (compressed backbone, gNet head, policy) and saves them.
    '''),
    LOAD_DATA,
    code('''
        from freeml_keras import exits

        if not (OUT / "exit_model" / "exit_model.json").exists():
            from freeml_keras.compression import sparsecomp
            print("no exit model from notebook 2 in", OUT, "- making it now")
            result = sparsecomp.compress(model, DEVICE, train, val, out_dir=OUT / "compress", resume=True,
                                         **COMPRESS_OPTIONS)
            em = exits.attach_global_exit(result.model, EXIT_POINTS)
            exits.train_global_exit(em, train, val, verbose=0)
            em.save(OUT / "exit_model")
            policy = exits.calibrate_thresholds(em, val, target_cost=0.6, device=DEVICE)
            (OUT / "exit_policy.json").write_text(policy.to_json())
        em = exits.ExitModel.load(OUT / "exit_model")
        policy = exits.ExitPolicy.from_json((OUT / "exit_policy.json").read_text())
        exit_acc = em.evaluate(test)
        print(f"exit points {em.exit_points}; test accuracy per exit "
              + " ".join(f"{a:.3f}" for a in exit_acc["exit_accuracy"])
              + f", final {exit_acc['backbone_accuracy']:.3f}")
        print(f"policy thresholds {policy.thresholds}")
    '''),
    md('''
        ## Convert to a full-int8 flatbuffer with the exit head

        `convert(model, representative_x, sparse=True, exit_model=em, policy=policy)`: int8
        inputs and outputs, weights with at least 30% zeros in TFLite's sparse format, the head
        as subgraph 1, the policy's thresholds in the metadata. `target=DEVICE` also writes each
        operator's cost on the device's core into the metadata: predicted by the cost model
        fitted to the operators measured under the core's emulator (`freeml_keras.costs`); the
        runtime's energy rule and the simulation read it. `sparse=False` makes the dense variant
        that stock TFLite Micro can run (it has no DENSIFY op).
    '''),
    code('''
        from freeml_keras import conversion
        from freeml_keras.format import metadata

        backbone = em.backbone
        model_bytes = conversion.convert(backbone, train[0][:200], sparse=True, exit_model=em, policy=policy,
                                        target=DEVICE)
        dense_bytes = conversion.convert(backbone, train[0][:200], sparse=False, exit_model=em, policy=policy)
        (OUT / "model.tflite").write_bytes(model_bytes)
        print(f"sparse flatbuffer {len(model_bytes):,} B, dense {len(dense_bytes):,} B -> {OUT / 'model.tflite'}")

        meta = metadata.read_metadata(model_bytes)
        print(f"metadata v{meta.version}: {meta.num_classes} classes, head subgraph {meta.head_subgraph}, "
              f"{len(meta.ops)} main operators")
        for i, e in enumerate(meta.exits):
            print(f"  exit {i} ({meta.info['exit_points'][i]}): after op {e.after_op}, tensor {e.main_tensor} -> "
                  f"head input {e.head_input_tensor}, threshold {e.threshold:.3f}")
        print(f"per-operator costs ({meta.info['cost']['source']}, {meta.info['cost']['unit']} on "
              f"{meta.info['cost']['target']}): {[o.cost for o in meta.ops]}")
    '''),
    md('''
        `tflite_footprint` reads the flatbuffer itself: what each operator stores and computes,
        for both subgraphs. `flash_bytes` is the whole file (weights plus the graph description);
        `weight_bytes` is the stored parameters. The device budget of notebook 1 applies to the
        backbone's parameters; the file adds the head and the graph description.
    '''),
    code('''
        from freeml_keras import memory

        fp = memory.tflite_footprint(model_bytes)
        print(fp.table())
        print(fp.fits(DEVICE))
        print(f"file {len(model_bytes):,} B = parameters {fp.weight_bytes:,} B (backbone and head) + "
              f"{len(model_bytes) - fp.weight_bytes:,} B of graph description (operators, tensor shapes and names)")
    '''),
    md('''
        ## Export as C

        `export_c` writes the flatbuffer as an aligned `const uint8_t` array, here in the
        `.fram` linker section of the MSP430FR5994.
    '''),
    code('''
        c_dir = OUT / "c"
        c_dir.mkdir(exist_ok=True)
        header, source = conversion.export_c(model_bytes, c_dir / "model_data.h", symbol="fm_model", section=".fram")
        print(header.read_text())
        print("\\n".join(source.read_text().splitlines()[:4]) + "\\n...")
    '''),
    md('''
        ## Run it on the project's C runtime

        `runtime.Interpreter(model_bytes)` loads the flatbuffer into the C runtime (built with
        `make` on first use) with a statically planned arena; `invoke(x)` takes int8 input.
        Inputs are quantized with the scale and zero point of the model's input tensor.
    '''),
    code('''
        from freeml_keras import runtime
        from freeml_keras.runtime import reference

        interp = runtime.Interpreter(model_bytes)
        print(f"operators {interp.op_codes}")
        print(f"arena {interp.arena_bytes:,} B + state {interp.state_bytes:,} B")
        (in_q,), (out_q,) = reference.io_quantization(model_bytes)
        x_int8 = reference.quantize(test[0], *in_q)
        y_ours = np.stack([interp.invoke(x_int8[i:i + 1])[0].ravel() for i in range(len(x_int8))])
        acc_int8 = np.mean(y_ours.argmax(1) == test[1])
        print(f"test accuracy: int8 on the C runtime {acc_int8:.4f}, float Keras {exit_acc['backbone_accuracy']:.4f}")
    '''),
    md('''
        ## Compare with TFLite Micro

        TFLite Micro (the reference) runs the dense variant; the C runtime runs both variants.
        They must agree bit for bit, and the sparse variant, read in place, must give the same
        bytes as the dense one. `smallest_tflm_arena` searches for the smallest arena TFLite
        Micro accepts; TFLite Micro prints a message for every size that fails.
    '''),
    code('''
        n = min(len(x_int8), 200)
        y_tflm = reference.run_tflm(dense_bytes, [x_int8[:n]])[0].reshape(n, -1)
        dense_interp = runtime.Interpreter(dense_bytes)
        y_dense = np.stack([dense_interp.invoke(x_int8[i:i + 1])[0].ravel() for i in range(n)])
        print(f"{n} inputs: C runtime (dense) == TFLite Micro: {np.array_equal(y_dense, y_tflm)}; "
              f"sparse == dense: {np.array_equal(y_ours[:n], y_dense)}")
        tflm_arena = reference.smallest_tflm_arena(dense_bytes)
        print(f"arena: C runtime {dense_interp.arena_bytes:,} B, smallest TFLite Micro arena {tflm_arena:,} B")
        assert np.array_equal(y_dense, y_tflm) and np.array_equal(y_ours[:n], y_dense)
    '''),
    md('''
        ## Survive power failures

        `intermittent.run_with_power_failures` runs the runtime in a child process whose arena
        and checkpoint live in a memory-mapped file, kills it with SIGKILL at random points (by
        time, and in the middle of checkpoint writes) and resumes it from the file until it
        finishes, the way a device resumes from FRAM. The output must equal an uninterrupted run.
    '''),
    code('''
        from freeml_keras.runtime import intermittent

        rows = []
        for i in range(min(40, len(x_int8))):     # inputs until at least 25 failures were injected
            if sum(r[1] for r in rows) >= 25:
                break
            expected, info = intermittent.run_uninterrupted(model_bytes, x_int8[i])
            rep = intermittent.run_with_power_failures(model_bytes, x_int8[i], seed=i, max_failures=30)
            rows.append((i, rep.failures, rep.failures_in_commits, rep.reexecuted_units, rep.units_total,
                         rep.checkpoint_bytes_written, np.array_equal(rep.output, expected)))
        print(f"{'input':>5s} {'failures':>8s} {'in commits':>10s} {'re-run units':>12s} {'units':>6s} "
              f"{'ckpt B':>7s}  same output")
        for r in rows:
            print(f"{r[0]:5d} {r[1]:8d} {r[2]:10d} {r[3]:12d} {r[4]:6d} {r[5]:7,d}  {r[6]}")
        assert all(r[-1] for r in rows)
    '''),
    md('''
        ## Anytime answers

        `exit_options(stop_at_exit=k)` stops the runtime at exit k and returns the head's int8
        logits there (the accumulator after exit points 0 to k); `exit_options(thresholds=True)` lets
        the metadata's confidence thresholds decide. Stopping early also works across power
        failures.
    '''),
    code('''
        _, (head_q,) = reference.io_quantization(model_bytes, subgraph=meta.head_subgraph)


        def stop_at(k):
            return intermittent.exit_options(stop_at_exit=k)

        i = 0
        float_logits = em.predict_exits(test[0][i:i + 1])[:, 0]
        print(f"input {i}, label {test[1][i]}")
        for k in range(em.num_exits):
            q, info = intermittent.run_uninterrupted(model_bytes, x_int8[i], options=stop_at(k))
            z = reference.dequantize(q, *head_q)
            print(f"  exit {k}: class {z.argmax()} (confidence {float(policy.confidence_of(z)):.2f}) "
                  f"after {info['units']} of {rows[0][4]} units; float head says class {float_logits[k].argmax()}")
        _, info = intermittent.run_uninterrupted(model_bytes, x_int8[i],
                                                 options=intermittent.exit_options(thresholds=True))
        print(f"  with the metadata's thresholds it stops at exit {info['exit']} ({em.num_exits} = the final output)")
        rep = intermittent.run_with_power_failures(model_bytes, x_int8[i], seed=7, max_failures=10,
                                                   options=stop_at(0))
        q0, _ = intermittent.run_uninterrupted(model_bytes, x_int8[i], options=stop_at(0))
        print(f"  exit 0 under {rep.failures} power failures: same logits {np.array_equal(rep.output, q0)}")
        assert np.array_equal(rep.output, q0)
    '''),
    md('''
        ## On harvested energy

        `freeml_keras.energy` simulates the device on a harvester: a storage capacitor (the MCU
        is switched on at `v_on`, off at `v_off`), the MCU's power draw from the device profile,
        and the inference as a sequence of atomic steps that commit to NVM; a step cut off by a
        power failure is run again after the capacitor recharges. Three traces are bundled, each
        generated from a documented model.
    '''),
    code('''
        from freeml_keras import energy

        fig, ax = plt.subplots(figsize=(8, 3))
        for name in energy.traces.names():
            trace = energy.traces.load(name)
            keep = trace.times_s <= 120
            ax.step(trace.times_s[keep], 1e6 * trace.power_w[keep], where="post",
                    label=f"{name} (mean {1e6 * trace.mean_power_w:.0f} uW)")
        ax.set_yscale("log")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("harvested power (uW)")
        ax.legend(fontsize=8)
        plt.show()
    '''),
    md('''
        Costs per segment come from `segment_costs`, priced by the per-operator cost model of
        the device's core (each gNet segment
        includes its exit point's accumulation, so running to completion is priced with the
        same segments). Segments are split into atomic steps of about 2% of the inference, each
        committing a 64-byte checkpoint record. Every power-on costs a restart (reset to the first
        resumed unit of work), run before the step that follows it: the warm restart measured on
        the device's emulator, `costs.restart_cycles(DEVICE)` (the simulator's default; pass
        `resume_cycles=0` for free restarts). The capacitor is sized to hold about half an
        inference, so that the inference has to cross power failures. Per test input we know
        whether each exit's answer is right (float model) and its confidence.

        Strategies: **no exit** (run to completion), **branches + energy** (per-exit branches as
        in notebook 2, trained here again, each one run at every exit point passed; stop when
        the stored energy cannot reach the next exit), **gNet + energy** (the same rule with the
        shared head), **gNet anytime** (stop at the first exit whose confidence reaches the
        policy's threshold) and gNet with both rules.
    '''),
    code('''
        from freeml_keras.costs import restart_cycles, restart_source

        seg = exits.segment_costs(em, DEVICE)
        total_cycles = sum(s.cycles for s in seg)
        restart = restart_cycles(DEVICE)                 # charged at every power-on
        print(f"restart: {restart:,} cycles at every power-on ({restart_source(DEVICE)})")
        costs = energy.ExitCosts(segment_cycles=[int(s.cycles) for s in seg], max_step_cycles=int(total_cycles / 50),
                                 commit_bytes=64, resume_cycles=restart)
        e_inference = sum(s.energy_j for s in seg)
        v_on, v_off = 3.3, 1.8
        # E = C (v_on^2 - v_off^2) / 2 = half an inference
        capacitor = energy.Capacitor(capacitance_f=e_inference / (v_on ** 2 - v_off ** 2), v_on=v_on, v_off=v_off)
        print(f"one inference: {total_cycles:,.0f} cycles, {1e6 * e_inference:.1f} uJ; capacitor "
              f"{1e6 * capacitor.capacitance_f:.1f} uF holds {1e6 * capacitor.usable_energy_j:.1f} uJ "
              f"between on and off")

        branches = exits.attach_exit_branches(em.backbone, em.exit_points)
        exits.train_exit_branches(branches, train, val, epochs=30, learning_rate=1e-2, verbose=0)
        costs_b = energy.ExitCosts(segment_cycles=[int(s.cycles) for s in exits.segment_costs(branches, DEVICE)],
                                   max_step_cycles=int(total_cycles / 50), commit_bytes=64, resume_cycles=restart)

        def right_at_each_exit(exit_logits, final_output):
            """(examples, exits + 1): whether each exit's answer, and the final one, is right."""
            return np.concatenate([(exit_logits.argmax(-1) == test[1]).T,
                                   (final_output.argmax(-1) == test[1])[:, None]], axis=1)

        z, final = em.predict_all(test[0])
        right = right_at_each_exit(z, final)
        right_b = right_at_each_exit(branches.predict_all(test[0])[0], final)
        confidence = np.concatenate([policy.confidence_of(z).T, np.ones((len(test[1]), 1))], axis=1)
        thresholds = [t if t is not None else 2.0 for t in policy.thresholds]   # 2.0: never by confidence
        memory_bytes = exits.exit_footprint(em)["overhead_bytes"]
        strategies = [energy.run_to_completion(costs, right),
                      energy.branches_energy(costs_b, right_b,
                                             memory_bytes=exits.exit_footprint(branches)["overhead_bytes"]),
                      energy.gnet_energy(costs, right, memory_bytes=memory_bytes),
                      energy.gnet_anytime(costs, right, confidence, thresholds, memory_bytes=memory_bytes),
                      energy.gnet_anytime(costs, right, confidence, thresholds, memory_bytes=memory_bytes,
                                          energy=True, name="gNet anytime + energy")]
    '''),
    md('''
        `compare` runs every strategy from the same initial state on the same trace and inputs
        (one input every 2 s); the simulation is event-driven, so it takes a fraction of a second.
    '''),
    code('''
        import time

        arrivals = energy.periodic_arrivals(len(test[1]), 2.0)
        reports = {}
        for name in energy.traces.names():
            sim = energy.Simulator(energy.traces.load(name), capacitor, device=DEVICE)
            t0 = time.time()
            reports[name] = energy.compare(strategies, sim, arrivals)
            print(f"{name} ({len(arrivals)} inputs, {time.time() - t0:.2f} s of wall time)")
            for s, r in reports[name].items():
                print(f"  {s:24s} accuracy {r.accuracy:.3f}  latency mean {r.latency_s['mean']:7.3f} s "
                      f"p90 {r.latency_s['p90']:7.3f} s  {1e6 * r.energy_per_inference_j:6.1f} uJ  "
                      f"{r.power_failures_per_inference:4.2f} failures  answers per exit {r.exit_counts}")
    '''),
    code('''
        names = [s.name for s in strategies]
        fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=True)
        for ax, (trace, rep) in zip(axes, reports.items()):
            lat = [rep[s].result.array("latency_s") for s in names]
            lat = [a[np.isfinite(a)] for a in lat]             # inputs never answered have no latency
            ax.boxplot(lat, showfliers=False)
            ax.set_xticks(range(1, len(names) + 1), [f"{s}\\nacc {rep[s].accuracy:.3f}" for s in names],
                          rotation=30, fontsize=7, ha="right")
            ax.set_title(trace)
            ax.set_yscale("log")
        axes[0].set_ylabel("latency from input to answer (s)")
        fig.tight_layout()
        plt.show()
    '''),
    md('''
        The capacitor voltage during the first inputs on the walking RF trace, for gNet with the
        energy rule: `Simulator(record_voltage=True)` keeps the voltage at every event.
    '''),
    code('''
        sim = energy.Simulator(energy.traces.load("rf_walk"), capacitor, device=DEVICE, record_voltage=True)
        gnet_rule = next(s for s in strategies if s.name == "gNet + energy")
        run = sim.run(gnet_rule.program, arrivals[:10], policy=gnet_rule.policy)
        v = run.voltage
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.plot(v[:, 0], v[:, 1], lw=0.8)
        for level in (capacitor.v_on, capacitor.v_off):
            ax.axhline(level, color="k", ls=":", lw=0.8)
        for r in run.inferences:
            ax.axvline(r.end_s, color="tab:green", alpha=0.4, lw=0.8)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("capacitor voltage (V)")
        ax.set_title(f"10 inferences, {sum(r.power_failures for r in run.inferences)} power failures (green: answers)")
        plt.show()
    '''),
    md('''
        ## Build for a microcontroller

        `targets.run_model(target, model_bytes, x, out_dir)` builds the C runtime with the model
        in flash for a Cortex-M4F (`arm-none-eabi-gcc`, run in QEMU's `mps2-an386` with an
        instruction-counting plugin), runs one inference, and returns its output, per-operator
        instruction counts and the program's size. The toolchains are Debian packages
        (`targets.APT_PACKAGES`); a missing one raises an error naming the package.
    '''),
    code('''
        from freeml_keras import targets

        m4 = targets.run_model("cortex_m4", model_bytes, x_int8[0], OUT / "cortex_m4")
        host_out = interp.invoke(x_int8[:1])[0].ravel().tolist()
        print(f"Cortex-M4 output equals the host's: {m4.output == host_out}; "
              f"{m4.invoke_cost:,} instructions per inference; program size {m4.size}")
        op_names = interp.op_codes
        for op, code_, units, cost in m4.ops:
            print(f"  op {op:2d} {op_names[op]:16s} {units:5d} units {cost:9,d} {m4.run.unit}")
        assert m4.output == host_out
    '''),
    md('''
        ## What you got
    '''),
    code('''
        walk = reports["rf_walk"]
        fastest = min(walk.values(), key=lambda r: r.latency_s["mean"])
        print(f"int8 flatbuffer with the exit head: {len(model_bytes):,} B ({fp.weight_bytes:,} B of parameters), "
              f"test accuracy {acc_int8:.3f} on the C runtime, bit-exact with TFLite Micro")
        print(f"RAM on the device: arena {interp.arena_bytes:,} B + state {interp.state_bytes:,} B")
        print(f"power failures: {sum(r[1] for r in rows)} injected over {len(rows)} inferences, every output exact")
        print(f"Cortex-M4: {m4.invoke_cost:,} instructions per inference")
        print(f"rf_walk: no exit {walk['no exit'].latency_s['mean']:.2f} s mean latency at accuracy "
              f"{walk['no exit'].accuracy:.3f}; fastest: {fastest.name} {fastest.latency_s['mean']:.2f} s at "
              f"accuracy {fastest.accuracy:.3f}")
        print(f"files in {OUT}: model.tflite, c/model_data.h, c/model_data.c")
    '''),
]


NOTEBOOKS = {"01_compress.ipynb": NB01, "02_exits.ipynb": NB02, "03_deploy_and_simulate.ipynb": NB03}


def build(name: str, cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A notebook without outputs, with fixed cell ids."""
    nb = new_notebook(metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})
    stem = name.split("_")[0]
    for i, (kind, source) in enumerate(cells):
        cell = new_markdown_cell(source) if kind == "markdown" else new_code_cell(source)
        cell.id = f"nb{stem}-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nbformat.write(build(name, cells), HERE / name)
        print(f"wrote {HERE / name} ({len(cells)} cells)")


if __name__ == "__main__":
    main()
