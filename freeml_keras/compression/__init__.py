"""SparseComp: compress a pre-trained tf_keras model to a byte budget (layer separation by
truncated SVD / Tucker-2, magnitude sparsification with hard thresholds, int8 QAT).

``compress`` is the entry point (``sparsecomp``); ``pruning``, ``factorize`` and ``vbmf`` hold
the pieces it is made of."""

from freeml_keras.compression.sparsecomp import Budget, BudgetUnreachable, CompressionResult, Options, compress

__all__ = ["compress", "Budget", "BudgetUnreachable", "CompressionResult", "Options"]
