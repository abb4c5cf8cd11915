"""A converted model as one object: its bytes (what the user saves and flashes), parsed once.

Every stage below conversion (costs, targets, runtime, energy, the CLI) reads the same
flatbuffer; ``TFLiteModel`` parses it on first use and keeps the parsed schema object and the
``freeml`` metadata, so a chain of stages parses a file once instead of once per stage. Stages
accept ``bytes`` or a ``TFLiteModel`` (``ModelLike``) and call :func:`as_model`.

Example::

    from freeml_keras.format import TFLiteModel
    m = TFLiteModel.load("model.tflite")
    print(len(m), len(m.parsed.subgraphs), m.metadata)
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

from freeml_keras.format import tflite as ts
from freeml_keras.format.metadata import FreemlMetadata, metadata_of_parsed

__all__ = ["TFLiteModel", "ModelLike", "as_model"]

_UNSET = object()


class TFLiteModel:
    """The bytes of a TFLite flatbuffer with its parse cached.

    ``parsed`` (the schema's object API) and ``metadata`` are shared by every reader: treat them
    as read-only; to edit, parse a fresh copy with ``ts.read_model(bytes(m))``."""

    __slots__ = ("data", "_parsed", "_metadata")

    def __init__(self, data: bytes | bytearray | memoryview):
        self.data = bytes(data)
        self._parsed = None
        self._metadata = _UNSET

    @classmethod
    def load(cls, path: str | Path) -> "TFLiteModel":
        """Read a ``.tflite`` file."""
        return cls(Path(path).read_bytes())

    @property
    def parsed(self) -> "ts.schema.ModelT":
        """The parsed flatbuffer (parsed on first use; raises ``TFLiteFormatError``)."""
        if self._parsed is None:
            self._parsed = ts.read_model(self.data)
        return self._parsed

    @property
    def metadata(self) -> FreemlMetadata | None:
        """The ``freeml`` metadata, or None when the file has none (raises ``MetadataError``)."""
        if self._metadata is _UNSET:
            self._metadata = metadata_of_parsed(self.parsed)
        return self._metadata

    @property
    def num_ops(self) -> int:
        """Operators of the main subgraph."""
        return len(self.parsed.subgraphs[0].operators or [])

    def __bytes__(self) -> bytes:
        return self.data

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"TFLiteModel({len(self.data):,} bytes)"


ModelLike = Union[bytes, bytearray, TFLiteModel]


def as_model(model: ModelLike) -> TFLiteModel:
    """``model`` itself when it is a ``TFLiteModel``, else its bytes wrapped (parsed lazily)."""
    return model if isinstance(model, TFLiteModel) else TFLiteModel(model)
