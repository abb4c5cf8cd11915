"""The ``freeml`` metadata entry of a converted flatbuffer (format version 2; version 1 is read).

Stored as the buffer of the model's ``metadata`` entry named ``freeml``; all integers
little-endian. A fixed binary part that the C runtime reads without a parser, then a UTF-8 JSON
object for everything a person or the Python side wants (names, policy, pooling).

======  =====  ==============================================================================
offset  type   field
======  =====  ==============================================================================
0       4 B    magic ``FMLM``
4       u16    version (2; 1 has 16-byte operator records without the cost)
6       u16    header bytes (32)
8       u16    number of exit points E
10      u16    number of classes
12      u16    index of the exit-head subgraph
14      u16    number of operators N of the main subgraph (subgraph 0)
16      u32    offset of the exit records
20      u32    offset of the operator records
24      u32    offset of the JSON object
28      u32    length of the JSON object
======  =====  ==============================================================================

Exit record (16 B, E of them, in exit order): i32 main-subgraph tensor of the exit point,
i32 head-subgraph input tensor it feeds, u32 index of the main-subgraph operator that produces
it, f32 confidence threshold (max softmax; a value above 1 never stops by confidence).

Operator record (20 B, N of them, in operator order of the main subgraph): u32 MACs (dense),
u32 MACs of the stored non-zero weights, u32 weight bytes as stored (values, sparse indices,
bias, quantization), u32 bytes of the operator's output tensor, u32 cost: the operator's cycles
on the core named by the JSON object's ``cost`` entry (``{"target", "unit", "source"}``, source
``measured`` for this model on that core, ``fitted`` for the per-kind cost model of
:mod:`freeml_keras.costs`); 0 when unknown.
"""

from __future__ import annotations

import copy
import json
import struct
from dataclasses import dataclass, field

import numpy as np

from freeml_keras.format import tflite as ts

__all__ = ["FreemlMetadata", "ExitRecord", "OpCost", "MetadataError", "METADATA_NAME",
           "METADATA_VERSION", "read_metadata", "metadata_of_parsed", "replace_metadata"]

METADATA_NAME = "freeml"
METADATA_VERSION = 2
READABLE_VERSIONS = (1, 2)
MAGIC = b"FMLM"
_HEADER = struct.Struct("<4sHHHHHHIIII")
_EXIT = struct.Struct("<iiIf")
_OP = struct.Struct("<IIIII")
_OP_V1 = struct.Struct("<IIII")
NEVER = 2.0  # threshold that max softmax never exceeds


class MetadataError(ValueError):
    """A ``freeml`` metadata buffer that cannot be decoded; the message gives the offset."""


@dataclass
class ExitRecord:
    main_tensor: int
    head_input_tensor: int
    after_op: int
    threshold: float = NEVER


@dataclass
class OpCost:
    macs: int
    sparse_macs: int
    weight_bytes: int
    activation_bytes: int
    cost: int = 0


@dataclass
class FreemlMetadata:
    num_classes: int
    head_subgraph: int
    exits: list[ExitRecord]
    ops: list[OpCost]
    info: dict = field(default_factory=dict)
    version: int = METADATA_VERSION   # as read; encode() always writes METADATA_VERSION

    def encode(self) -> bytes:
        blob = json.dumps(self.info, sort_keys=True).encode()
        exits_at = _HEADER.size
        ops_at = exits_at + _EXIT.size * len(self.exits)
        json_at = ops_at + _OP.size * len(self.ops)
        head = _HEADER.pack(MAGIC, METADATA_VERSION, _HEADER.size, len(self.exits), self.num_classes,
                            self.head_subgraph, len(self.ops), exits_at, ops_at, json_at, len(blob))
        body = b"".join(_EXIT.pack(e.main_tensor, e.head_input_tensor, e.after_op, e.threshold)
                        for e in self.exits)
        body += b"".join(_OP.pack(_u32(o.macs), _u32(o.sparse_macs), _u32(o.weight_bytes),
                                  _u32(o.activation_bytes), _u32(o.cost)) for o in self.ops)
        return head + body + blob

    @classmethod
    def decode(cls, data: bytes) -> "FreemlMetadata":
        data = bytes(data)
        if len(data) < _HEADER.size:
            raise MetadataError(f"freeml metadata is {len(data)} bytes, shorter than its "
                                f"{_HEADER.size}-byte header")
        magic, version, hsize, n_exits, n_classes, head_sg, n_ops, exits_at, ops_at, json_at, json_len = \
            _HEADER.unpack_from(data, 0)
        if magic != MAGIC:
            raise MetadataError(f"bytes 0..4 of the freeml metadata are {magic!r}, not {MAGIC!r}")
        if version not in READABLE_VERSIONS:
            raise MetadataError(f"freeml metadata version {version} at offset 4; this reader "
                                f"knows versions {READABLE_VERSIONS}")
        op_rec = _OP if version >= 2 else _OP_V1
        for name, at, size in (("exit records", exits_at, _EXIT.size * n_exits),
                               ("operator records", ops_at, op_rec.size * n_ops),
                               ("JSON object", json_at, json_len)):
            if at < hsize or at + size > len(data):
                raise MetadataError(f"{name} at offset {at} ({size} B) run past the end of the "
                                    f"{len(data)}-byte metadata")
        exits = [ExitRecord(*_EXIT.unpack_from(data, exits_at + i * _EXIT.size)) for i in range(n_exits)]
        ops = [OpCost(*op_rec.unpack_from(data, ops_at + i * op_rec.size)) for i in range(n_ops)]
        try:
            info = json.loads(data[json_at:json_at + json_len].decode()) if json_len else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise MetadataError(f"the JSON object at offset {json_at} does not parse: {e}") from None
        return cls(num_classes=n_classes, head_subgraph=head_sg, exits=exits, ops=ops, info=info,
                   version=version)


def _u32(v: int) -> int:
    return min(int(v), 0xFFFFFFFF)


def metadata_of_parsed(model: "ts.schema.ModelT") -> FreemlMetadata | None:
    """The ``freeml`` metadata of a parsed flatbuffer, or None when it has none."""
    for md in model.metadata or []:
        name = ts.name_str(md.name)
        if name == METADATA_NAME:
            if not 0 <= md.buffer < len(model.buffers) or model.buffers[md.buffer].data is None:
                raise MetadataError(f"the freeml metadata points at buffer {md.buffer}, which holds no data")
            return FreemlMetadata.decode(bytes(model.buffers[md.buffer].data))
    return None


def read_metadata(model) -> FreemlMetadata | None:
    """The ``freeml`` metadata of a flatbuffer (bytes or ``TFLiteModel``), or None when it has
    none."""
    if hasattr(model, "metadata") and hasattr(model, "parsed"):      # a TFLiteModel: parsed once
        return model.metadata
    return metadata_of_parsed(ts.read_model(model))


def replace_metadata(model: "ts.schema.ModelT", md: FreemlMetadata) -> bytes:
    """The flatbuffer of ``model`` (parsed) with ``md`` as its ``freeml`` metadata (replacing
    any; the old buffer is emptied so that buffer indices stay valid). ``model`` is not
    modified."""
    model = copy.copy(model)
    model.buffers = list(model.buffers)
    kept = []
    for m in model.metadata or []:
        if (ts.name_str(m.name)) == METADATA_NAME:
            if 0 <= m.buffer < len(model.buffers):
                model.buffers[m.buffer] = ts.schema.BufferT()
        else:
            kept.append(m)
    buf = ts.schema.BufferT()
    buf.data = np.frombuffer(md.encode(), dtype=np.uint8)
    model.buffers.append(buf)
    entry = ts.schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = kept + [entry]
    return ts.write_model(model)
