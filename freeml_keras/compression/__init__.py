"""SparseComp: compress a pre-trained tf_keras model to a byte budget (layer separation by
truncated SVD / Tucker-2, magnitude sparsification with hard thresholds, int8 QAT).

``compress`` is the entry point; ``prepare`` / ``SparseComp`` / ``strip`` (``callback``) are
SparseComp's steps in a user's own ``model.fit``, the pieces ``compress`` takes its steps with
(``sparsecomp``: the loop and the public API). Its phases' steps are in ``ram``, ``separation``, ``sparsify`` and ``qat``, fine-tuning in ``training``,
the resumable state in ``state``, the report in ``report``; ``pruning``, ``factorize`` and
``vbmf`` hold the pieces they are made of."""

from freeml_keras.compression.sparsecomp import Budget, BudgetUnreachable, CompressionResult, Options, compress
from freeml_keras.compression.callback import SparseComp, prepare, strip

__all__ = ["compress", "Budget", "BudgetUnreachable", "CompressionResult", "Options",
           "prepare", "SparseComp", "strip"]
