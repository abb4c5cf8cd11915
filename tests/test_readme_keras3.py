"""The README's "Keras 3 models and your own data" section runs as written: its Python block,
then each line of its shell block through the command line, in a fresh directory."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from freeml_keras import bridge, cli

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Keras 3 models and your own data"


def _blocks() -> tuple[str, list[str]]:
    text = README.read_text()
    part = text[text.index(SECTION):]
    part = part[:part.index("\n## ", len(SECTION))]
    python = re.search(r"```python\n(.*?)```", part, re.S).group(1)
    shell = re.search(r"```sh\n(.*?)```", part, re.S).group(1)
    return python, [l for l in shell.splitlines() if l.strip()]


def test_readme_keras3_tour_runs_as_written(tmp_path, monkeypatch, capsys):
    python, shell = _blocks()
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(python, "README.md (Keras 3 tour)", "exec"), scope)
    assert bridge.is_keras3(scope["small"]) and scope["res"].report["meets_budget"]
    assert bridge.file_keras_version("small.keras").startswith("3.")
    assert bridge.file_keras_version("runs/k3/model.keras").startswith("3.")
    assert scope["tfl"][4:8] == b"TFL3"
    # the callback path: budget met inside the user's fit, a Keras 3 model back, exit head trained
    sc, mine, em = scope["sc"], scope["mine"], scope["gnet"]
    assert sc.budget_met and sc.weight_bytes <= 1200 and sc.steps[0]["layer"] == "fc"
    assert bridge.is_keras3(mine)
    k = mine.get_layer("fc").get_weights()[0]
    assert (k != 0).sum() == max(1, round(sc.densities["fc"] * k.size)) < k.size
    assert em.info["trained"] and em.info["val_exit_accuracy"][0] > 0.6
    for line in shell:
        args = shlex.split(line)
        assert args[0] == "freeml"
        code = cli.main(args[1:])
        out = capsys.readouterr()
        assert code == 0, f"{line}\n{out.out}\n{out.err}"
    assert bridge.file_keras_version("runs/k3-cli/model.keras").startswith("3.")
    assert Path("k3.tflite").read_bytes()[4:8] == b"TFL3"
