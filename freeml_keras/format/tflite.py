"""The one place that reads and writes TFLite flatbuffers: the TFLite schema's object API.

Uses tflite-micro's generated copy of the schema module, which imports without TensorFlow.
"""

from __future__ import annotations

import flatbuffers
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

__all__ = ["schema", "read_model", "write_model", "BuiltinOperator", "TensorType",
           "op_name", "tensor_type_name", "TFLiteFormatError", "FILE_IDENTIFIER"]

FILE_IDENTIFIER = b"TFL3"
BuiltinOperator = schema.BuiltinOperator
TensorType = schema.TensorType

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
TENSOR_TYPE_BYTES = {
    schema.TensorType.FLOAT32: 4, schema.TensorType.INT32: 4, schema.TensorType.INT8: 1,
    schema.TensorType.UINT8: 1, schema.TensorType.INT16: 2, schema.TensorType.INT64: 8,
    schema.TensorType.BOOL: 1, schema.TensorType.FLOAT16: 2,
}


class TFLiteFormatError(ValueError):
    """A file that is not a TFLite flatbuffer we can read; the message says why."""


def op_name(model: "schema.ModelT", opcode_index: int) -> str:
    """Name of the operator with this opcode index (``CONV_2D``, or the custom code)."""
    code = model.operatorCodes[opcode_index]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == schema.BuiltinOperator.CUSTOM:
        cc = code.customCode
        return "CUSTOM:" + (cc.decode() if isinstance(cc, bytes) else str(cc))
    return _OP_NAMES.get(builtin, f"OP_{builtin}")


def tensor_type_name(t: int) -> str:
    return _TYPE_NAMES.get(t, f"TYPE_{t}")


def read_model(data: bytes) -> "schema.ModelT":
    """Unpack a TFLite flatbuffer into the object API, or raise TFLiteFormatError with the reason."""
    data = bytes(data)
    if len(data) < 8:
        raise TFLiteFormatError(f"file is {len(data)} bytes: too short to be a TFLite flatbuffer")
    ident = data[4:8]
    if ident != FILE_IDENTIFIER:
        raise TFLiteFormatError(
            f"bytes 4..8 are {ident!r}, not the TFLite file identifier {FILE_IDENTIFIER!r}")
    root = int.from_bytes(data[0:4], "little")
    if root >= len(data):
        raise TFLiteFormatError(f"root table offset {root} is past the end of the file ({len(data)} bytes)")
    try:
        m = schema.Model.GetRootAsModel(data, 0)
        model = schema.ModelT.InitFromObj(m)
    except Exception as e:  # the generated reader raises anything from struct.error to IndexError
        raise TFLiteFormatError(f"corrupt flatbuffer: {type(e).__name__}: {e}") from None
    if not model.subgraphs:
        raise TFLiteFormatError("the model has no subgraphs")
    return model


def write_model(model: "schema.ModelT") -> bytes:
    """Serialize an object-API model back to flatbuffer bytes with the TFL3 identifier."""
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())
