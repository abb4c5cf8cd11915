"""The shared format layer: TFLite flatbuffer access (``tflite``), the ``freeml`` metadata
(``metadata``), the operators' precomputed parameters (``prepared``, the ``freeml_prepare``
entry) and a converted model parsed once (``TFLiteModel``). Every stage reads models
through it; it imports nothing of the package but itself."""

from freeml_keras.format import tflite
from freeml_keras.format.metadata import (FreemlMetadata, MetadataError, read_metadata,
                                          replace_metadata)
from freeml_keras.format.model import ModelLike, TFLiteModel, as_model
from freeml_keras.format.prepared import (PreparedParams, PrepareError, model_id, prepared_blob,
                                          read_prepared, with_prepared)

__all__ = ["tflite", "FreemlMetadata", "MetadataError", "read_metadata", "replace_metadata",
           "TFLiteModel", "ModelLike", "as_model", "PreparedParams", "PrepareError", "model_id",
           "prepared_blob", "read_prepared", "with_prepared"]
