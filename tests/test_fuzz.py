"""The libFuzzer target (``tflm_port/fuzz/fuzz_model.c``: any byte string as a model is refused
or runs to its end) built with clang's libFuzzer, AddressSanitizer and UBSan, run for a bounded
number of inputs (fixed seed) from the corpus kept in ``tests/data/fuzz_corpus`` (one small model of each operator kind,
the streaming model with resource variables, dense and CSR convolutions). ``make fuzz`` runs it
longer."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from freeml_keras.runtime.build import make_host

CORPUS = Path(__file__).resolve().parent / "data" / "fuzz_corpus"
RUNS = 200_000            # about 2 s here


def test_corpus_models_are_accepted():
    """The corpus seeds the fuzzer with models the runtime runs (not only refusals)."""
    from freeml_keras.runtime import Interpreter
    files = sorted(CORPUS.glob("*.tflite"))
    assert len(files) >= 15
    for f in files:
        Interpreter(f.read_bytes())


def test_libfuzzer_bounded_run(tmp_path):
    fuzz = make_host("fuzz", "fm_fuzz")
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)             # libFuzzer adds what it finds: not to the repository
    # a fixed seed and number of runs: the same inputs on every machine, so that CI does not
    # find today what it missed yesterday by chance (`make fuzz` explores with fresh seeds; what
    # it finds goes into the corpus as a regression input, like regression-activation-bound-overflow)
    # no RSS limit: a clean-clone CI run stopped at 2,156 MB of RSS (live heap 25 MB, ASan's
    # quarantine 131 MB: the rest the sanitizer's own pages) where the same run alone peaks at
    # about 400 MB; the runtime never allocates, and a single allocation over 2 GB still fails
    r = subprocess.run([str(fuzz), f"-runs={RUNS}", "-seed=1", "-timeout=10", "-rss_limit_mb=0",
                        "-malloc_limit_mb=2048", f"-artifact_prefix={tmp_path}/",
                        "-print_final_stats=1", str(corpus)], capture_output=True, text=True,
                       timeout=600)
    seed = re.search(r"Seed: (\d+)", r.stderr)
    rss = re.search(r"peak_rss_mb:\s+(\d+)", r.stderr)
    print(f"libFuzzer seed {seed.group(1) if seed else '?'} (-seed=N repeats it), "
          f"peak RSS {rss.group(1) if rss else '?'} MB")
    assert r.returncode == 0, r.stderr[-4000:]
    runs = re.search(r"Done (\d+) runs", r.stderr)
    assert runs and int(runs.group(1)) >= RUNS, r.stderr[-2000:]
