"""The Python side of the model-file surface under mutated files (hypothesis): truncated,
bit-flipped and overwritten copies of a converted model with ``freeml`` metadata, an exit head
and precomputed parameters, and of the streaming model, mutated anywhere and inside the metadata
buffers in particular. ``read_metadata`` and ``read_prepared`` return or raise one of the
format's errors; ``freeml inspect`` ends with exit 0 or 2 and one line on stderr, never an
unexpected exception (exit 1, a traceback) nor a hang."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

from conftest import fixed_and_fresh
from freeml_keras.format import tflite as ts
from freeml_keras.format.metadata import MetadataError, read_metadata
from freeml_keras.format.prepared import PrepareError, read_prepared

DATA = Path(__file__).resolve().parent / "data"
SEEDS = {"cnn_s_compressed": (DATA / "cnn_s_compressed.tflite").read_bytes(),
         "stream": (DATA / "fuzz_corpus" / "streaming_conv.tflite").read_bytes()}
FORMAT_ERRORS = (MetadataError, PrepareError, ts.TFLiteFormatError)


def _metadata_spans(b: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the model's metadata buffers (where mutations are most telling)."""
    m = ts.read_model(b)
    spans = []
    for md in m.metadata or []:
        data = m.buffers[md.buffer].data
        if data is not None and len(data):
            at = b.find(bytes(np.asarray(data, np.uint8)))
            if at >= 0:
                spans.append((at, at + len(data)))
    return spans


@st.composite
def mutated(draw):
    name = draw(st.sampled_from(sorted(SEEDS)))
    b = bytearray(SEEDS[name])
    spans = _metadata_spans(bytes(b)) or [(0, len(b))]
    for _ in range(draw(st.integers(1, 6))):
        lo, hi = draw(st.sampled_from(spans + [(0, len(b))]))
        at = draw(st.integers(lo, max(lo, hi - 1)))
        kind = draw(st.sampled_from(["flip", "word", "byte"]))
        if kind == "flip":
            b[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "word" and at + 4 <= len(b):
            b[at:at + 4] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "little")
        else:
            b[at] = draw(st.integers(0, 255))
    if draw(st.integers(0, 4)) == 0:
        b = b[:draw(st.integers(0, len(b)))]
    return name, bytes(b)


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


@fixed_and_fresh(mutated(), max_examples=15)
def test_mutated_models_give_one_line_errors(case):
    import tempfile

    from freeml_keras.cli import main
    name, b = case
    try:
        read_metadata(b)
        read_prepared(b)
    except FORMAT_ERRORS:
        pass
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{name}.tflite"
        path.write_bytes(b)
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(60)
        try:
            code = main(["inspect", str(path)])
        except _Hang:
            pytest.fail(f"freeml inspect hangs on a mutated {name}")
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
    assert code in (0, 2), f"freeml inspect exit {code} on a mutated {name} (an unexpected exception)"
