"""``make bench``: run every benchmark in bench/ (JSON and plots to bench/results/), then the
paper table. Pass --quick for the reduced settings each benchmark documents."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["compression.py", "exits.py", "runtime.py", "checkpoint.py", "targets.py", "image.py", "costs.py", "energy.py",
         "strategies.py", "bridge.py", "elementwise.py", "coverage.py",
         "paper_table.py"]


def main(argv: list[str]) -> int:
    failed = []
    for name in ORDER:
        script = HERE / name
        if not script.exists():
            continue
        t0 = time.time()
        print(f"== bench/{name} {' '.join(argv)}", flush=True)
        rc = subprocess.call([sys.executable, str(script), *argv])
        print(f"== bench/{name}: exit {rc} in {time.time() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
