"""The evaluation table, in the shape of the FreeML paper's claims, built from the benchmark
JSON in bench/results/ (run the benchmarks first: ``make bench``). Writes
bench/results/paper_table.md and prints it.

    .venv/bin/python bench/paper_table.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from freeml_keras.runtime.intermittent import DEFAULT_STEP_WORK

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def rows() -> tuple[list[tuple[str, str, str, str]], list[str]]:
    out: list[tuple[str, str, str, str]] = []
    missing: list[str] = []
    comps = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("compression*.json"))]
    for comp in comps:
        for e in comp["pairs"]:
            for p in e["points"]:
                sc, tm = p.get("sparsecomp", {}), p.get("tfmot", {})
                if "weight_bytes" not in sc:
                    continue
                tf_txt = (f"tfmot at {tm['weight_bytes']:,} B: {tm['int8_test_accuracy']:.4f}"
                          if tm.get("weight_bytes") else "tfmot: not run")
                out.append(("size reduction (SparseComp)", f"{e['model']} / {e['dataset']} @ {p['budget']}",
                            f"{sc['ratio_to_fp32']:.1f}x vs fp32 ({sc['weight_bytes']:,} B), "
                            f"accuracy {sc['int8_test_accuracy']:.4f} (int8 baseline {e['int8_test_accuracy']:.4f}); {tf_txt}",
                            comp["command"]))
    if not comps:
        missing.append("compression")
    ex = load("exits")
    if ex:
        for r in ex["results"]:
            g, b = r["chosen_gnet"], r["branches"]
            out.append(("exit memory overhead, branches / gNet", f"{r['model']} / {r['dataset']}",
                        f"{b['overhead_bytes'] / g['overhead_bytes']:.2f}x ({b['overhead_bytes']:,} B vs "
                        f"{g['overhead_bytes']:,} B)", ex["command"]))
            out.append(("accuracy per exit: gNet; branches", f"{r['model']} / {r['dataset']}",
                        " ".join(f"{a:.3f}" for a in g["test_exit_accuracy"]) + "; " +
                        " ".join(f"{a:.3f}" for a in b["test_exit_accuracy"]), ex["command"]))
    else:
        missing.append("exits")
    st = load("strategies")
    if st:
        for r in st["rows"]:
            if r["name"] == "no exit":
                continue
            out.append(("energy-adaptive exits vs no exit", f"{r['trace']}: {r['name']}",
                        f"latency {r['latency_speedup_vs_no_exit']:.1f}x lower ({r['latency_mean_s']:.2f} s), "
                        f"energy {-100 * r['energy_saving_vs_no_exit']:+.0f}%, accuracy {r['accuracy']:.3f}",
                        st["command"]))
    else:
        missing.append("strategies")
    ck = load("checkpoint")
    if ck:
        for m in ck["models"]:
            row = next(r for r in m["rows"] if r.get("step_work") == DEFAULT_STEP_WORK)
            out.append((f"checkpoint overhead (host, default: {DEFAULT_STEP_WORK} MAC-equivalents per step)", m["model"],
                        f"{row['overhead_percent']:.2f}% instructions, {row['commits']} commits of "
                        f"{m['record_bytes']} B", ck["command"]))
    else:
        missing.append("checkpoint")
    tg = load("targets")
    if tg:
        for k, v in tg.get("best_per_mac", {}).items():
            unit = "instructions" if k == "cortex_m4" else "cycles"
            out.append(("int8 MAC on the target", k, f"{v:g} {unit} per MAC", "bench/targets.py"))
        for c in tg.get("checkpointing", []):
            if c.get("default"):
                out.append((f"checkpoint overhead on the target (default: {c['step_work']} MAC-equivalents per step)",
                            f"{c['target']}: {c['model']}",
                            f"{c['overhead_pct']:.1f}% {c['unit']} over {c['continuous']:,}, "
                            f"{c['commits']} commits, {c['nvm_commit_bytes']} B to NVM, resume exact: "
                            f"{c['resume_ok']}", "bench/targets.py"))
            elif "error" in c:
                out.append(("checkpointed run on the target", f"{c['target']}: {c['model']}",
                            f"{c['error']} ({c.get('overflow_bytes')})", "bench/targets.py"))
    else:
        missing.append("targets")
    return out, missing


def main() -> int:
    table, missing = rows()
    lines = ["| claim | setting | measured | command |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | `{d}` |" for a, b, c, d in table]
    if missing:
        lines += ["", "Not measured yet (run their benchmarks): " + ", ".join(missing)]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "paper_table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
