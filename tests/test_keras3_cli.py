"""Keras 3 models through every entry point (API and CLI), on the user's own data (--data
FILE.npz), and the CLI's data errors: one line naming the array and the model input."""

from __future__ import annotations

import json

import numpy as np
import pytest

import keras  # Keras 3
from freeml_keras import bridge, cli, datasets
from freeml_keras.keras import keras as tfk


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


@pytest.fixture(scope="module")
def k3_model(digits):
    """A small Keras 3 CNN trained on digits (what a user brings)."""
    (xtr, ytr), (xva, yva), _ = digits
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((8, 8, 1)),
                          keras.layers.Conv2D(8, 3, name="conv"),
                          keras.layers.BatchNormalization(name="bn"),     # folded into the conv
                          keras.layers.ReLU(name="relu"),
                          keras.layers.MaxPooling2D(2, name="pool"),
                          keras.layers.Flatten(name="flat"),
                          keras.layers.Dense(10, activation="softmax", name="fc")], name="user")
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(xtr, ytr, epochs=6, batch_size=32, verbose=0)
    return m


@pytest.fixture(scope="module")
def npz(digits, tmp_path_factory):
    (xtr, ytr), (xva, yva), (xte, yte) = digits
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x_train=xtr, y_train=ytr, x_val=xva, y_val=yva, x_test=xte, y_test=yte)
    return path


def test_compress_a_keras3_model_returns_keras3_and_the_same_flatbuffer(k3_model, digits, tmp_path):
    from freeml_keras import compress, convert
    (xtr, ytr), va, _ = digits
    res = compress(k3_model, 1200, (xtr[:600], ytr[:600]), va, out_dir=tmp_path / "c",
                   fine_tune_epochs=1, qat_epochs=1, factorize=False, verbose=False)
    assert bridge.is_keras3(res.model) and res.report["meets_budget"]
    assert bridge.file_keras_version(tmp_path / "c" / "model.keras").startswith("3.")
    reloaded = keras.saving.load_model(tmp_path / "c" / "model.keras")
    np.testing.assert_allclose(reloaded.predict(xtr[:8], verbose=0), res.model.predict(xtr[:8], verbose=0),
                               rtol=1e-5, atol=1e-6)
    as_tf = bridge.to_tf_keras(res.model)
    assert convert(res.model, xtr[:100]) == convert(as_tf, xtr[:100])
    assert k3_model.get_layer("conv").get_weights()[0].all()       # the user's model is untouched


def test_cli_takes_keras3_files_and_npz_data_everywhere(k3_model, npz, tmp_path, capsys):
    for name in ("user.keras", "user.h5"):
        k3_model.save(tmp_path / name)
        assert cli.main(["inspect", str(tmp_path / name), "--json"]) == 0
        d = json.loads(capsys.readouterr().out)
        assert [l["name"] for l in d["layers"]][-1] == "fc"
    src = tmp_path / "user.h5"
    code = cli.main(["compress", str(src), "--data", str(npz), "--flash-kb", "1.2", "--out",
                     str(tmp_path / "c"), "--epochs", "1", "--qat-epochs", "1", "--no-factorize",
                     "--train-limit", "600"])
    out = capsys.readouterr().out
    assert code == 0, out
    small = tmp_path / "c" / "model.keras"
    assert bridge.file_keras_version(small).startswith("3.")
    assert cli.main(["exits", str(small), "--data", str(npz), "--out", str(tmp_path / "e"),
                     "--exit-points", "pool", "--epochs", "2", "--target-accuracy", "0.8"]) == 0
    assert "exit points pool" in capsys.readouterr().out
    assert cli.main(["convert", str(small), "--data", str(npz), "--exit-model", str(tmp_path / "e"),
                     "--out", str(tmp_path / "m.tflite"), "--json", "--eval-limit", "200"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["int8_accuracy"] > 0.4 and abs(s["int8_accuracy"] - s["keras_accuracy"]) < 0.1
    assert s["exit_points"] == ["pool"]
    assert cli.main(["run", str(tmp_path / "m.tflite"), "--data", str(npz), "--limit", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 20


def test_val_split_and_a_file_without_test_arrays(k3_model, digits, tmp_path, capsys):
    (xtr, ytr), _, _ = digits
    path = tmp_path / "train_only.npz"
    np.savez(path, x_train=xtr[:300], y_train=ytr[:300])
    k3_model.save(tmp_path / "m.keras")
    args = ["convert", str(tmp_path / "m.keras"), "--data", str(path), "--out",
            str(tmp_path / "m.tflite"), "--json", "--dense"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no array 'x_val'" in err[0] and "--val-split" in err[0]
    assert cli.main(args + ["--val-split", "0.2"]) == 0
    assert json.loads(capsys.readouterr().out)["eval_examples"] == 60     # the validation split


@pytest.mark.parametrize("arrays,message", [
    (lambda d: {k: v for k, v in d.items() if k != "y_train"}, "no array 'y_train'"),
    (lambda d: {**d, **{f"x_{s}": d[f"x_{s}"][:, :, :4] for s in ("train", "val", "test")}},
     "x_train has examples of shape (8, 4, 1), but the model input 'input_layer"),
    (lambda d: {**d, "y_val": d["y_val"] + 5}, "y_val has labels up to 14, but the model's output has 10 classes"),
    (lambda d: {**d, "y_train": d["y_train"][:-1]}, "x_train has 1077 examples but y_train has 1076 labels"),
    (lambda d: {**d, "x_val": d["x_val"].astype(str)}, "x_val has dtype <U"),
    (lambda d: {**d, "y_test": np.eye(10)[d["y_test"]]}, "y_test has shape (360, 10)"),
])
def test_data_errors_are_one_line_naming_the_array(k3_model, digits, tmp_path, capsys, arrays, message):
    (xtr, ytr), (xva, yva), (xte, yte) = digits
    d = arrays(dict(x_train=xtr, y_train=ytr, x_val=xva, y_val=yva, x_test=xte, y_test=yte))
    np.savez(tmp_path / "bad.npz", **d)
    k3_model.save(tmp_path / "m.keras")
    for cmd in (["compress", str(tmp_path / "m.keras"), "--flash-kb", "1", "--out", str(tmp_path / "c")],
                ["exits", str(tmp_path / "m.keras"), "--out", str(tmp_path / "e")],
                ["convert", str(tmp_path / "m.keras"), "--out", str(tmp_path / "m.tflite")]):
        assert cli.main(cmd + ["--data", str(tmp_path / "bad.npz")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in err[0], err
        assert str(tmp_path / "bad.npz") in err[0] and message in err[0], err[0]


def test_unbridged_keras3_file_is_one_line_naming_the_layer(tmp_path, capsys):
    m = keras.Sequential([keras.Input((4, 3)), keras.layers.GRU(2, name="gru")])
    m.save(tmp_path / "rnn.keras")
    assert cli.main(["inspect", str(tmp_path / "rnn.keras")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layer 'gru' (GRU) is not bridged" in err[0] and "rnn.keras" in err[0]


def test_demo_on_the_users_data_trains_its_model_once(npz, tmp_path, capsys):
    from freeml_keras.demo import DemoConfig, _Data, _pretrained_model
    cfg = DemoConfig(out_dir=str(tmp_path), data=str(npz), quick=True).resolved()
    assert cfg.dataset == "digits.npz"
    data = _Data.load(cfg)
    assert data.train[0].shape[1:] == (8, 8, 1) and len(data.test[0]) == 360
    model = _pretrained_model(cfg, data, tmp_path)
    assert (tmp_path / "pretrained.keras").exists()
    again = _pretrained_model(cfg, data, tmp_path)           # from out_dir, not trained again
    np.testing.assert_allclose(again.predict(data.test[0][:5], verbose=0),
                               model.predict(data.test[0][:5], verbose=0), rtol=1e-6)
    from freeml_keras import zoo
    assert zoo.accuracy(model, data.test) > 0.5
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=data.train[0])
    assert cli.main(["demo", "--data", str(bad), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no array 'y_train'" in err[0]
    assert cli.main(["demo", "--dataset", "digits", "--val-split", "0.1", "--out", str(tmp_path / "d")]) == 2
    assert "--val-split goes with --data" in capsys.readouterr().err


def test_exit_heads_and_footprints_take_keras3_models(k3_model, digits):
    from freeml_keras import memory
    from freeml_keras.exits import attach_exit_branches, attach_global_exit
    em = attach_global_exit(k3_model, ["pool"])
    br = attach_exit_branches(k3_model, ["pool"])
    assert not bridge.is_keras3(em.backbone) and not bridge.is_keras3(br.backbone)
    x = digits[2][0][:4]
    np.testing.assert_allclose(em.backbone.predict(x, verbose=0), k3_model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    assert memory.keras_footprint(k3_model).weight_bytes == memory.keras_footprint(em.backbone).weight_bytes


def _tiny_tf_cnn():
    """A tf_keras CNN with layers SparseComp factorizes and narrows (bridge tests)."""
    tfk.utils.set_random_seed(1)
    i = tfk.Input((12, 12, 1))
    x = tfk.layers.Conv2D(6, 3, activation="relu", name="conv1")(i)
    x = tfk.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = tfk.layers.MaxPooling2D(2, name="pool")(x)
    x = tfk.layers.Flatten(name="flat")(x)
    x = tfk.layers.Dense(16, activation="relu", name="fc1")(x)
    return tfk.Model(i, tfk.layers.Dense(10, activation="softmax", name="fc2")(x))


def test_pretrain_on_the_users_data(npz, tmp_path, capsys):
    assert cli.main(["pretrain", "cnn_s", "--data", str(npz), "--epochs", "1",
                     "--out", str(tmp_path / "m.keras")]) == 0
    out = capsys.readouterr().out
    assert "cnn_s on" in out and "test accuracy" in out
    model = tfk.models.load_model(tmp_path / "m.keras")
    assert tuple(model.inputs[0].shape[1:]) == (8, 8, 1) and model.outputs[0].shape[-1] == 10
    assert cli.main(["pretrain", "cnn_s", "--data", str(npz)]) == 2
    assert "--data needs --out" in capsys.readouterr().err
    assert cli.main(["pretrain", "cnn_s"]) == 2
    assert "give a DATASET or --data" in capsys.readouterr().err
