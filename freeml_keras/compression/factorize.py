"""Structural edits of a tf_keras model, each returning a new model (the input is never changed).

- Layer separation: :func:`factorize_dense` (truncated SVD of a Dense kernel into two Dense
  layers) and :func:`factorize_conv2d` (Tucker-2 of a Conv2D kernel into 1x1 -> kxk core -> 1x1
  convolutions, ranks by EVBMF from :mod:`freeml_keras.compression.vbmf` unless given).
- Narrowing: :func:`narrow` removes a layer's output channels (filters or units) of lowest L1
  norm, together with the matching input channels of the layer that consumes them, so that
  the network computes the same thing minus those channels; given example inputs, the
  consumer's kernel and bias are refitted by least squares so that its pre-activation outputs
  on them stay as close as the kept channels allow (:func:`reconstruct_consumer`).

The parts are stock Keras layers (Dense, Conv2D), so the new models serialize, prune with
tfmot, quantize and convert to TFLite like any other; no custom layer class is needed.
Factorized parts are named ``<layer>_svd1``/``<layer>_svd2`` and
``<layer>_tk_in``/``<layer>_tk_core``/``<layer>_tk_out``.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np

from freeml_keras.compression import vbmf
from freeml_keras.keras import keras, tf

__all__ = ["factorize_dense", "factorize_conv2d", "svd_factors", "tucker2_factors",
           "narrow", "narrowable_layers", "consumer_of", "functional", "reconstruct_consumer"]

# Layers that keep channels one-to-one between a narrowed layer and its consumer.
_CHANNELWISE = {"BatchNormalization", "ReLU", "Activation", "LeakyReLU", "MaxPooling1D",
                "MaxPooling2D", "AveragePooling1D", "AveragePooling2D", "Dropout",
                "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "ZeroPadding1D",
                "ZeroPadding2D"}
_WEIGHTED = {"Conv1D", "Conv2D", "Dense"}


# ---------------------------------------------------------------------------------------------
# graph helpers

def functional(model: "keras.Model") -> "keras.Model":
    """A functional view of ``model`` (a Sequential model becomes a Model on the same layers)."""
    if isinstance(model, keras.Sequential):
        return keras.Model(model.inputs, model.outputs, name=model.name)
    return model


def _entries(config: dict) -> dict[str, dict]:
    return {e["config"]["name"]: e for e in config["layers"]}


def _rename_refs(obj, old: str, new: str):
    """Replaces layer-name references ``old`` by ``new`` in inbound nodes / output lists."""
    if isinstance(obj, list):
        if obj and isinstance(obj[0], str) and obj[0] == old and len(obj) >= 3:
            return [new] + [_rename_refs(o, old, new) for o in obj[1:]]
        return [_rename_refs(o, old, new) for o in obj]
    return obj


def _rebuild(model: "keras.Model", config: dict, weights: dict[str, list[np.ndarray]]) -> "keras.Model":
    """Builds ``config`` and sets every layer's weights: from ``weights`` by name, else copied
    from the same-named layer of ``model``."""
    for e in config["layers"]:
        e.pop("build_config", None)
    new = keras.Model.from_config(config)
    old = {l.name: l for l in model.layers}
    for layer in new.layers:
        if layer.name in weights:
            layer.set_weights(weights[layer.name])
        elif layer.name in old and layer.weights:
            layer.set_weights(old[layer.name].get_weights())
    return new


def _consumers(model: "keras.Model", layer) -> list:
    out = []
    for node in layer._outbound_nodes:
        out.append(node.outbound_layer)
    return out


def consumer_of(model: "keras.Model", name: str) -> tuple[list[str], str | None, bool]:
    """The channel-wise layers after ``name`` and the weighted layer that consumes its channels
    (None if there is none, a branch, or a layer that mixes channels otherwise), and whether a
    Flatten lies between them."""
    model = functional(model)
    layer = model.get_layer(name)
    path: list[str] = []
    flatten = False
    current = layer
    while True:
        cons = [c for c in _consumers(model, current) if c.name in {l.name for l in model.layers}]
        if len(cons) != 1:
            return path, None, flatten
        c = cons[0]
        kind = type(c).__name__
        if kind in _WEIGHTED:
            if flatten and kind != "Dense":
                return path, None, flatten
            return path, c.name, flatten
        if kind == "Flatten" and not flatten:
            flatten = True
        elif kind not in _CHANNELWISE:
            return path, None, flatten
        path.append(c.name)
        current = c


def narrowable_layers(model: "keras.Model") -> list[str]:
    """Weighted layers whose output channels can be removed (a single consumer, channel-wise
    layers between)."""
    model = functional(model)
    out = []
    for layer in model.layers:
        if type(layer).__name__ in _WEIGHTED and consumer_of(model, layer.name)[1] is not None:
            if getattr(layer, "groups", 1) == 1:
                out.append(layer.name)
    return out


def _channels(layer) -> int:
    return int(layer.units if type(layer).__name__ == "Dense" else layer.filters)


# ---------------------------------------------------------------------------------------------
# narrowing

def narrow(model: "keras.Model", name: str, channels: int, *,
           keep: Sequence[int] | None = None, data: np.ndarray | None = None) -> "keras.Model":
    """A new model where layer ``name`` keeps ``channels`` output channels: those of largest
    kernel L1 norm (or the indices ``keep``); the consumer loses the matching inputs. With
    ``data`` (example inputs of the model) the consumer's kernel and bias are then refitted by
    least squares to the original consumer's pre-activation outputs on them
    (:func:`reconstruct_consumer`), which keeps far more accuracy than dropping the inputs.

    >>> m = keras.Sequential([keras.layers.Input((6,)), keras.layers.Dense(8, name="a"),
    ...                       keras.layers.Dense(3, name="b")])
    >>> n = narrow(m, "a", 5, data=np.random.default_rng(0).normal(size=(64, 6)).astype("float32"))
    >>> n.get_layer("a").units, n.get_layer("b").get_weights()[0].shape
    (5, (5, 3))
    """
    model = functional(model)
    layer = model.get_layer(name)
    kind = type(layer).__name__
    path, consumer, flatten = consumer_of(model, name)
    if kind not in _WEIGHTED or consumer is None:
        raise ValueError(f"layer {name!r} ({kind}) cannot be narrowed: it needs one weighted "
                         "consumer reached through channel-wise layers only")
    total = _channels(layer)
    if not 1 <= channels <= total:
        raise ValueError(f"layer {name!r} has {total} channels; cannot keep {channels}")
    w = layer.get_weights()
    if keep is None:
        l1 = np.abs(w[0]).reshape(-1, total).sum(axis=0)
        keep = np.sort(np.argsort(-l1, kind="stable")[:channels])
    keep = np.asarray(keep, dtype=np.int64)
    config = copy.deepcopy(model.get_config())
    entries = _entries(config)
    entries[name]["config"]["units" if kind == "Dense" else "filters"] = int(len(keep))
    weights: dict[str, list[np.ndarray]] = {name: [w[0][..., keep]] + [b[keep] for b in w[1:]]}
    for p in path:
        pl = model.get_layer(p)
        if type(pl).__name__ == "BatchNormalization":
            weights[p] = [v[keep] for v in pl.get_weights()]
    cl = model.get_layer(consumer)
    cw = cl.get_weights()
    if flatten:
        flat_in = cw[0].shape[0]
        positions = flat_in // total
        k = cw[0].reshape(positions, total, -1)[:, keep, :].reshape(positions * len(keep), -1)
    else:
        k = cw[0][..., keep, :]
    weights[consumer] = [k] + cw[1:]
    new = _rebuild(model, config, weights)
    if data is not None:
        reconstruct_consumer(model, new, consumer, data)
    return new


# The least-squares refit of a narrowed layer's consumer solves over at most this many rows
# (example inputs times output positions), sampled at random.
_RECONSTRUCT_ROWS = 60_000


def _consumer_rows(model: "keras.Model", consumer: str, data: np.ndarray) -> np.ndarray:
    """The consumer's inputs on ``data`` as rows of its kernel's input (one per output
    position, patches in the kernel's (kh, kw, cin) order)."""
    m = functional(model)
    layer = m.get_layer(consumer)
    x = keras.Model(m.inputs, layer.input).predict(data, batch_size=256, verbose=0)
    kind = type(layer).__name__
    if kind == "Dense":
        return x.reshape(-1, x.shape[-1])
    if kind == "Conv1D":
        x = x[:, :, None, :]
        size, stride = (layer.kernel_size[0], 1), (layer.strides[0], 1)
    else:
        size, stride = tuple(layer.kernel_size), tuple(layer.strides)
    p = tf.image.extract_patches(x, [1, *size, 1], [1, *stride, 1], [1, 1, 1, 1],
                                 layer.padding.upper()).numpy()
    return p.reshape(-1, p.shape[-1])


def reconstruct_consumer(original: "keras.Model", narrowed: "keras.Model", consumer: str,
                         data: np.ndarray, *, target: str | None = None, ridge: float = 1e-5,
                         seed: int = 0) -> bool:
    """Refits ``consumer``'s kernel and bias in ``narrowed`` (in place) by ridge-regularized
    least squares so that its pre-activation outputs on ``data`` match those of layer
    ``target`` (default: the same name) in ``original``; after a narrowing the missing
    channels' contribution is carried by the kept ones as far as it is linear in them, after a
    factorization (``consumer`` the last factor, ``target`` the factorized layer) the factors
    match the layer's outputs rather than its kernel. A pruned kernel keeps its zeros (each
    output is fitted on its nonzero inputs). Returns False (nothing changed) for a
    consumer it cannot refit (dilated or grouped convolution, no bias).

    >>> keras.utils.set_random_seed(0)
    >>> m = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(6, name="a"),
    ...                       keras.layers.Dense(2, name="b")])
    >>> x = np.random.default_rng(0).normal(size=(50, 4)).astype("float32")
    >>> n = narrow(m, "a", 4)      # 4 of 6 linear features still span the 4-d input
    >>> dropped = np.abs(n.predict(x, verbose=0) - m.predict(x, verbose=0)).max()
    >>> reconstruct_consumer(m, n, "b", x)
    True
    >>> refitted = np.abs(n.predict(x, verbose=0) - m.predict(x, verbose=0)).max()
    >>> bool(refitted < 0.01 * dropped)
    True
    """
    layer = narrowed.get_layer(consumer)
    target = consumer if target is None else target
    orig = original.get_layer(target)
    kind = type(layer).__name__
    cfg = layer.get_config()
    if (kind not in _WEIGHTED or not cfg.get("use_bias", True) or cfg.get("groups", 1) != 1
            or any(d != 1 for d in np.atleast_1d(cfg.get("dilation_rate", 1)))):
        return False
    w_old = orig.get_weights()
    rows_old = _consumer_rows(original, target, data)
    rows_new = _consumer_rows(narrowed, consumer, data)
    if len(rows_new) > _RECONSTRUCT_ROWS:
        pick = np.random.default_rng(seed).choice(len(rows_new), _RECONSTRUCT_ROWS, replace=False)
        rows_old, rows_new = rows_old[pick], rows_new[pick]
    target = rows_old @ w_old[0].reshape(-1, w_old[0].shape[-1]) + w_old[1]
    a = np.concatenate([rows_new, np.ones((len(rows_new), 1), rows_new.dtype)], 1).astype(np.float64)
    gram = a.T @ a
    gram += ridge * np.trace(gram) / len(gram) * np.eye(len(gram))
    rhs = a.T @ target.astype(np.float64)
    kernel = layer.get_weights()[0]
    flat = kernel.reshape(-1, kernel.shape[-1])
    if np.count_nonzero(flat) == flat.size:
        sol = np.linalg.solve(gram, rhs)
    else:
        # a pruned kernel keeps its zeros: each output's weights are fitted on its nonzero
        # inputs only (and the bias), so the layer's density does not change
        sol = np.zeros_like(rhs)
        for o in range(flat.shape[1]):
            idx = np.append(np.flatnonzero(flat[:, o]), len(gram) - 1)
            sol[idx, o] = np.linalg.solve(gram[np.ix_(idx, idx)], rhs[idx, o])
    layer.set_weights([sol[:-1].reshape(kernel.shape).astype(np.float32), sol[-1].astype(np.float32)])
    return True


# ---------------------------------------------------------------------------------------------
# layer separation

def svd_factors(kernel: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Kernels (in, rank) and (rank, out) whose product is the rank-``rank`` truncated SVD of
    ``kernel`` (in, out); singular values split evenly between the two."""
    u, s, vt = np.linalg.svd(np.asarray(kernel, dtype=np.float64), full_matrices=False)
    r = int(rank)
    root = np.sqrt(s[:r])
    return (u[:, :r] * root).astype(np.float32), (root[:, None] * vt[:r]).astype(np.float32)


def tucker2_factors(kernel: np.ndarray, ranks: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tucker-2 (HOSVD on the channel modes) of a Conv2D kernel (kh, kw, cin, cout): kernels of
    the 1x1 input projection (1, 1, cin, r1), the core (kh, kw, r1, r2) and the 1x1 output
    projection (1, 1, r2, cout)."""
    k = np.asarray(kernel, dtype=np.float64)
    kh, kw, cin, cout = k.shape
    r1, r2 = int(ranks[0]), int(ranks[1])
    u_in = np.linalg.svd(np.moveaxis(k, 2, 0).reshape(cin, -1), full_matrices=False)[0][:, :r1]
    u_out = np.linalg.svd(np.moveaxis(k, 3, 0).reshape(cout, -1), full_matrices=False)[0][:, :r2]
    core = np.einsum("hwio,ir,os->hwrs", k, u_in, u_out)
    return (u_in[None, None].astype(np.float32), core.astype(np.float32),
            u_out.T[None, None].astype(np.float32))


def _insert_chain(model: "keras.Model", name: str, parts: list[tuple[str, dict]],
                  weights: dict[str, list[np.ndarray]]) -> "keras.Model":
    """Replaces layer ``name`` by the chain ``parts`` ((class_name, layer config) in order);
    consumers of ``name`` read the last part."""
    config = copy.deepcopy(model.get_config())
    idx = next(i for i, e in enumerate(config["layers"]) if e["config"]["name"] == name)
    old = config["layers"][idx]
    names = {e["config"]["name"] for e in config["layers"]}
    new_entries = []
    inbound = old["inbound_nodes"]
    for class_name, cfg in parts:
        if cfg["name"] in names:
            raise ValueError(f"cannot factorize {name!r}: a layer named {cfg['name']!r} exists")
        entry = {"module": "keras.layers", "class_name": class_name, "config": cfg,
                 "registered_name": None, "name": cfg["name"], "inbound_nodes": inbound}
        new_entries.append(entry)
        inbound = [[[cfg["name"], 0, 0, {}]]]
    last = parts[-1][1]["name"]
    rest = [_rename_refs_entry(e, name, last) for e in config["layers"][idx + 1:]]
    config["layers"] = config["layers"][:idx] + new_entries + rest
    config["output_layers"] = _rename_refs(config["output_layers"], name, last)
    return _rebuild(model, config, weights)


def _rename_refs_entry(entry: dict, old: str, new: str) -> dict:
    entry = dict(entry)
    entry["inbound_nodes"] = _rename_refs(entry["inbound_nodes"], old, new)
    return entry


def factorize_dense(model: "keras.Model", name: str, rank: int | None = None) -> "keras.Model":
    """A new model where Dense layer ``name`` (in -> out) becomes Dense(rank, no bias, linear)
    -> Dense(out, the original activation and bias): the rank-``rank`` truncated SVD of its
    kernel (rank from EVBMF when None). At full rank it computes the same function."""
    model = functional(model)
    layer = model.get_layer(name)
    if type(layer).__name__ != "Dense":
        raise ValueError(f"factorize_dense: layer {name!r} is a {type(layer).__name__}, not Dense")
    w = layer.get_weights()
    full = min(w[0].shape)
    r = vbmf.evbmf_rank(w[0]) if rank is None else int(rank)
    if not 1 <= r <= full:
        raise ValueError(f"factorize_dense: rank {r} for layer {name!r} outside 1..{full}")
    a, b = svd_factors(w[0], r)
    cfg = layer.get_config()
    first = {**copy.deepcopy(cfg), "name": f"{name}_svd1", "units": r, "activation": "linear",
             "use_bias": False}
    second = {**copy.deepcopy(cfg), "name": f"{name}_svd2"}
    weights = {first["name"]: [a], second["name"]: [b] + w[1:]}
    return _insert_chain(model, name, [("Dense", first), ("Dense", second)], weights)


def factorize_conv2d(model: "keras.Model", name: str,
                     ranks: tuple[int, int] | None = None) -> "keras.Model":
    """A new model where Conv2D layer ``name`` becomes Tucker-2: Conv2D 1x1 (r1, no bias) ->
    Conv2D kxk core (r2, the original strides, padding and dilation, no bias) -> Conv2D 1x1
    (the original filters, activation and bias). Ranks from EVBMF when None. At full ranks
    (cin, cout) it computes the same function."""
    model = functional(model)
    layer = model.get_layer(name)
    if type(layer).__name__ != "Conv2D" or getattr(layer, "groups", 1) != 1:
        raise ValueError(f"factorize_conv2d: layer {name!r} is a {type(layer).__name__}, "
                         "not an ungrouped Conv2D")
    if layer.data_format != "channels_last":
        raise ValueError(f"factorize_conv2d: layer {name!r} is not channels_last")
    w = layer.get_weights()
    cin, cout = w[0].shape[2], w[0].shape[3]
    r1, r2 = vbmf.tucker2_ranks(w[0]) if ranks is None else (int(ranks[0]), int(ranks[1]))
    if not (1 <= r1 <= cin and 1 <= r2 <= cout):
        raise ValueError(f"factorize_conv2d: ranks {(r1, r2)} for layer {name!r} outside "
                         f"1..{cin} x 1..{cout}")
    k_in, core, k_out = tucker2_factors(w[0], (r1, r2))
    cfg = layer.get_config()
    base = {k: copy.deepcopy(v) for k, v in cfg.items()}
    one = {**base, "kernel_size": [1, 1], "strides": [1, 1], "padding": "valid",
           "dilation_rate": [1, 1]}
    p_in = {**one, "name": f"{name}_tk_in", "filters": r1, "activation": "linear", "use_bias": False}
    p_core = {**base, "name": f"{name}_tk_core", "filters": r2, "activation": "linear",
              "use_bias": False}
    p_out = {**one, "name": f"{name}_tk_out"}
    weights = {p_in["name"]: [k_in], p_core["name"]: [core], p_out["name"]: [k_out] + w[1:]}
    return _insert_chain(model, name, [("Conv2D", p_in), ("Conv2D", p_core), ("Conv2D", p_out)],
                         weights)
