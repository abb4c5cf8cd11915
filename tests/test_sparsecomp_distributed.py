"""SparseComp fine-tunes under a tf.distribute strategy: MirroredStrategy on two logical CPUs.

Logical devices must be configured before TensorFlow runs any op, so the run happens in a
fresh Python process."""

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, sys
    from freeml_keras.keras import keras, tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    from freeml_keras import datasets, memory
    from freeml_keras.compression.sparsecomp import compress

    tr, va, _ = datasets.load("digits")
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inp)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(24, activation="relu", name="fc")(x)
    out = keras.layers.Dense(10, activation="softmax", name="logits")(x)
    m = keras.Model(inp, out)
    m.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    m.fit(*tr, epochs=15, batch_size=64, verbose=0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    res = compress(m, 4000, tr, va, strategy=strategy, factorize=False, fine_tune_epochs=1, narrow_gain_ratio=1e9,
                   qat_epochs=1, verbose=False)
    print("RESULT " + json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "weight_bytes": res.weight_bytes,
        "check_bytes": memory.keras_footprint(res.model).weight_bytes,
        "meets": res.report["meets_budget"],
        "kinds": [s["kind"] for s in res.report["steps"]],
        "val_accuracy": res.val_accuracy}))
""")


def test_compress_under_mirrored_strategy_on_two_logical_cpus():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    assert out["replicas"] == 2
    assert out["meets"] and out["weight_bytes"] == out["check_bytes"] <= 4000
    assert "sparsify" in out["kinds"], out["kinds"]
    assert out["kinds"][-1] == "int8_qat"
    assert out["val_accuracy"] > 0.8, out
