"""Keras 3 in, Keras 3 out: the one place that moves models between Keras 3 and tf_keras.

The package trains, prunes and quantizes with tf_keras (tfmot works only there, see
:mod:`freeml_keras.keras`). A Keras 3 model (in memory, or a ``.keras`` / ``.h5`` file written
by Keras 3) is rebuilt layer by layer in tf_keras with the same configuration, the same graph
(Sequential or Functional, shared layers, multi-input merges such as a residual ``Add``) and
the same weights; a compressed tf_keras model goes back the same way. Both Keras packages are
loaded in the same process: ``keras`` is Keras 3 whatever ``TF_USE_LEGACY_KERAS`` says, only
``tf.keras`` follows it.

Bridged: the layers in :data:`LAYERS` (the set the converter and the C runtime run, plus their
inference-time no-ops). Refused, naming the layer and its class: any other layer, nested models
used as layers, Lambda and TFOpLambda layers, raw ``keras.ops`` calls in a Functional graph,
custom activations, initializers or regularizers that the other Keras does not have, and options
one Keras has and the other lacks (``quantization_config``, LoRA ranks, ...).

>>> import numpy as np, keras
>>> from freeml_keras import bridge
>>> k3 = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu")])
>>> tfk = bridge.to_tf_keras(k3)                  # a tf_keras model, same weights
>>> x = np.ones((2, 4), "float32")
>>> bool(np.allclose(k3.predict(x, verbose=0), tfk.predict(x, verbose=0), atol=1e-6))
True
>>> bridge.is_keras3(bridge.to_keras3(tfk))
True
"""

from __future__ import annotations

import inspect
import json
import zipfile
from pathlib import Path
from typing import Any

__all__ = ["BridgeError", "LAYERS", "is_keras3", "to_tf_keras", "to_keras3", "load_model",
           "in_users_keras"]

# Layer classes with the same name, arguments and weight order in both Keras.
LAYERS = frozenset({
    "InputLayer", "Dense", "Conv1D", "Conv2D", "DepthwiseConv2D", "SeparableConv2D",
    "BatchNormalization", "Activation", "ReLU", "LeakyReLU", "Softmax", "Add", "Subtract",
    "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Flatten", "Reshape",
    "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "Rescaling",
    "Normalization", "ZeroPadding1D", "ZeroPadding2D"})
# Argument names that differ: (Keras 3 name, tf_keras name) per class.
_RENAMED = {"LeakyReLU": [("negative_slope", "alpha")]}
# Keys whose value is a serialized Keras object (translated by class name).
_OBJECT_KINDS = ("initializer", "regularizer", "constraint")


class BridgeError(ValueError):
    """A model that cannot be moved between Keras 3 and tf_keras; the message names the layer
    and its class."""


def is_keras3(model: Any) -> bool:
    """Whether ``model`` is a Keras 3 object (without importing Keras 3)."""
    return any(c.__module__.split(".")[0] == "keras" for c in type(model).__mro__)


def _keras3():
    import keras
    return keras


def _tf_keras():
    from freeml_keras.keras import keras
    return keras


def to_tf_keras(model: Any) -> Any:
    """The tf_keras copy of a Keras 3 model: same graph, configuration, names and weights.
    A tf_keras model is returned unchanged. Raises :class:`BridgeError` naming the first layer
    that cannot be bridged."""
    if not is_keras3(model):
        return model
    return _rebuild(model, _tf_keras(), to_k3=False)


def to_keras3(model: Any) -> Any:
    """The Keras 3 copy of a tf_keras model (the way back of :func:`to_tf_keras`)."""
    if is_keras3(model):
        return model
    return _rebuild(model, _keras3(), to_k3=True)


def in_users_keras(model: Any, keras3: bool) -> Any:
    """``model`` (tf_keras) in the Keras the user gave: Keras 3 when ``keras3``."""
    return to_keras3(model) if keras3 else model


def file_keras_version(path: str | Path) -> str | None:
    """The Keras version that wrote a ``.keras`` or ``.h5`` file, or None when the file does
    not say (a SavedModel directory, another format)."""
    p = Path(path)
    if p.is_file() and zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as z:
                return str(json.loads(z.read("metadata.json")).get("keras_version"))
        except (KeyError, ValueError):
            return None
    if p.is_file() and p.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n":
        import h5py
        with h5py.File(p, "r") as f:
            v = f.attrs.get("keras_version")
        return v.decode() if isinstance(v, bytes) else (str(v) if v is not None else None)
    return None


def load_model(path: str | Path, *, bridge: bool = True) -> tuple[Any, bool]:
    """Loads a Keras model file written by either Keras: ``(model, written by Keras 3)``, the
    model in tf_keras (with ``bridge=False``: in the Keras that wrote it, checked to bridge).
    Raises ``FileNotFoundError`` or a one-line ``ValueError`` naming the file (a
    :class:`BridgeError` naming the layer when a Keras 3 model has a layer that is not
    bridged)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    version = file_keras_version(p)
    k3 = version is not None and version.split(".")[0] == "3"
    try:
        if k3:
            model = _keras3().saving.load_model(p, compile=False)
        else:
            model = _tf_keras().models.load_model(p, compile=False)
    except Exception as e:  # noqa: BLE001 - any loader failure is a bad file for the user
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"{p}: cannot be loaded as a Keras model ({type(e).__name__}: "
                         f"{first[:200]})") from None
    if k3:
        try:
            bridged = to_tf_keras(model)
        except BridgeError as e:
            raise BridgeError(f"{p}: {e}") from None
        if bridge:
            model = bridged
    return model, k3


# ----------------------------------------------------------------------------------------------

def _rebuild(model: Any, dst: Any, *, to_k3: bool) -> Any:
    kind = type(model).__name__
    try:
        model.inputs[0]
    except (AttributeError, IndexError, TypeError, ValueError):
        raise BridgeError(f"model {model.name!r} ({kind}) has no input shape yet: start it with "
                          "keras.Input(shape) or build it") from None
    if kind == "Sequential":
        inp = model.inputs[0]
        out = dst.Sequential(name=model.name)
        history = getattr(inp, "_keras_history", None)
        out.add(dst.Input(batch_shape=tuple(inp.shape), dtype=_dtype_name(inp.dtype),
                          name=history[0].name if history else None))
        pairs = []
        for layer in model.layers:
            pairs.append((layer, _layer(layer, dst, to_k3)))
            out.add(pairs[-1][1])
        _copy_weights(pairs)
        return out
    if not hasattr(model, "_nodes_by_depth"):
        raise BridgeError(f"model {model.name!r} ({kind}) is a subclassed model: only Sequential "
                          "and Functional models are bridged")
    tensors: dict[int, Any] = {}
    made: dict[int, Any] = {}
    pairs = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = node.operation if hasattr(node, "operation") else node.layer
            outs = node.outputs if isinstance(node.outputs, (list, tuple)) else [node.outputs]
            if type(layer).__name__ == "InputLayer":
                t = outs[0]
                tensors[id(t)] = dst.Input(batch_shape=tuple(t.shape), dtype=_dtype_name(t.dtype),
                                           name=layer.name)
                continue
            if id(layer) not in made:
                made[id(layer)] = _layer(layer, dst, to_k3)
                pairs.append((layer, made[id(layer)]))
            if hasattr(node, "arguments"):
                args, kwargs = node.arguments.args, node.arguments.kwargs
            else:
                args, kwargs = node.call_args, node.call_kwargs
            args = _map_tensors(args, tensors, layer)
            kwargs = {k: _map_tensors(v, tensors, layer) for k, v in kwargs.items()
                      if v is not None and k != "mask"}
            bad = [k for k in kwargs if k != "training"]
            if bad:
                raise BridgeError(f"layer {layer.name!r} ({type(layer).__name__}) is called with "
                                  f"{', '.join(bad)}: not bridged")
            new_outs = made[id(layer)](*args, **kwargs)
            new_outs = new_outs if isinstance(new_outs, (list, tuple)) else [new_outs]
            for t, n in zip(outs, new_outs):
                tensors[id(t)] = n
    ins = [tensors[id(t)] for t in model.inputs]
    outs = [tensors[id(t)] for t in model.outputs]
    out = dst.Model(ins if len(ins) > 1 else ins[0], outs if len(outs) > 1 else outs[0],
                    name=model.name)
    _copy_weights(pairs)
    return out


def _map_tensors(v: Any, tensors: dict[int, Any], layer: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return type(v)(_map_tensors(a, tensors, layer) for a in v)
    if isinstance(v, dict):
        return {k: _map_tensors(a, tensors, layer) for k, a in v.items()}
    if type(v).__name__ == "KerasTensor":
        if id(v) not in tensors:
            raise BridgeError(f"layer {layer.name!r} ({type(layer).__name__}) takes a tensor that "
                              "no bridged layer makes")
        return tensors[id(v)]
    return v


def _copy_weights(pairs) -> None:
    for src, new in pairs:
        w = src.get_weights()
        shapes = [tuple(a.shape) for a in w]
        want = [tuple(a.shape) for a in new.get_weights()]
        if shapes != want:
            raise BridgeError(f"layer {src.name!r} ({type(src).__name__}): weights of shapes "
                              f"{shapes} where the rebuilt layer has {want}")
        new.set_weights(w)
        if type(new).__name__ == "Normalization" and w:
            new.finalize_state()          # the statistics it normalizes with come from weights


def _dtype_name(d: Any) -> str:
    if isinstance(d, dict):
        return d.get("config", {}).get("name", "float32")
    return getattr(d, "name", None) or str(d)


def _layer(layer: Any, dst: Any, to_k3: bool) -> Any:
    cls = type(layer).__name__
    name = layer.name
    if cls not in LAYERS or not hasattr(dst.layers, cls):
        raise BridgeError(f"layer {name!r} ({cls}) is not bridged between Keras 3 and tf_keras; "
                          f"bridged layers: {', '.join(sorted(LAYERS - {'InputLayer'}))}")
    dst_cls = getattr(dst.layers, cls)
    cfg = {k: _plain(v) for k, v in layer.get_config().items()}
    if cls == "BatchNormalization" and isinstance(cfg.get("axis"), list) and len(cfg["axis"]) == 1:
        cfg["axis"] = cfg["axis"][0]
    for k3_name, tk_name in _RENAMED.get(cls, []):
        a, b = (tk_name, k3_name) if to_k3 else (k3_name, tk_name)
        if a in cfg:
            cfg[b] = cfg.pop(a)
    cfg["dtype"] = _dtype_name(cfg.get("dtype", "float32"))
    accepted = set(_arguments(dst_cls))
    defaults = _arguments(type(layer))
    for key in list(cfg):
        value = cfg[key]
        if key.endswith("initializer") and key not in accepted:   # weights are copied
            del cfg[key]
            continue
        if key.endswith(_OBJECT_KINDS) and isinstance(value, dict):
            cfg[key] = _object(layer, key, value, dst)
            if cfg[key] is None:
                del cfg[key]
                continue
        elif key == "activation" and not isinstance(value, str):
            raise BridgeError(f"layer {name!r} ({cls}) has a custom activation: not bridged")
        if key in ("name", "dtype", "trainable"):
            continue
        if key not in accepted:
            unused = value in (None, False) or (key in defaults and _same(value, defaults[key]))
            if unused or (key == "renorm_momentum" and not cfg.get("renorm")):
                del cfg[key]
            else:
                raise BridgeError(f"layer {name!r} ({cls}) sets {key}={value!r}, which "
                                  f"{'Keras 3' if to_k3 else 'tf_keras'} has no equivalent for")
    for key in ("mean", "variance"):               # Normalization given its statistics
        if isinstance(cfg.get(key), list):
            import numpy as np
            cfg[key] = np.asarray(cfg[key], dtype="float32")
    try:
        return dst_cls.from_config(cfg)
    except (TypeError, ValueError) as e:
        raise BridgeError(f"layer {name!r} ({cls}) cannot be rebuilt: {str(e).splitlines()[0]}") from None


def _plain(v: Any) -> Any:
    """Config values as plain Python (tf_keras hands out ListWrapper and DictWrapper)."""
    if isinstance(v, (list, tuple)) or type(v).__name__ == "ListWrapper":
        return type(v)(_plain(a) for a in v) if isinstance(v, tuple) else [_plain(a) for a in v]
    if isinstance(v, dict) or type(v).__name__ == "_DictWrapper":
        return {k: _plain(a) for k, a in v.items()}
    return v


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - arrays and other values without a plain ==
        return False


def _arguments(cls: Any) -> dict[str, Any]:
    """The constructor arguments of a layer class (through its bases) and their defaults."""
    names: dict[str, Any] = {}
    for c in cls.__mro__:
        init = c.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        for p, v in params.items():
            if v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL) and p not in names:
                names[p] = v.default
        if not any(v.kind == v.VAR_KEYWORD for v in params.values()):
            break
        if c.__name__ in ("Layer", "Operation"):
            break
    names.pop("self", None)
    return names


def _object(layer: Any, key: str, value: dict, dst: Any) -> Any:
    """A serialized initializer, regularizer or constraint in the other Keras, by class name."""
    kind = next(k for k in _OBJECT_KINDS if key.endswith(k))
    module = getattr(dst, kind + "s")
    cls = getattr(module, value.get("class_name", ""), None)
    if cls is None:
        if kind == "initializer":      # weights are copied: the initializer does not matter
            return None
        raise BridgeError(f"layer {layer.name!r} ({type(layer).__name__}) has {key} "
                          f"{value.get('class_name')!r}: not bridged")
    conf = dict(value.get("config") or {})
    accepted = _arguments(cls)
    conf = {k: v for k, v in conf.items() if k in accepted}
    return cls(**conf)
