"""Conversion of a (compressed) tf_keras model, with its exit head, to an int8 TFLite
flatbuffer with the ``freeml`` metadata (``converter``), and to C source (``c_export``)."""

from freeml_keras.conversion.c_export import export_c
from freeml_keras.conversion.converter import (HEAD_SUBGRAPH_NAME, ConversionError, convert,
                                               compact, extract_subgraph, strip_names)

__all__ = ["convert", "export_c", "extract_subgraph", "strip_names", "compact", "ConversionError",
           "HEAD_SUBGRAPH_NAME"]
