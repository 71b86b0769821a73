"""Summarise ``bench_register.partial.json`` (the pairs a benchmark run has finished) into the usual
``bench_register.json`` / ``.md``, for a run stopped before its last pair.

    python benchmarks/summarise_partial.py
"""
import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import bench_register as b  # noqa: E402

out = REPO / "benchmarks" / "results"
rows = json.loads((out / "bench_register.partial.json").read_text())["pairs"]
a = argparse.Namespace(model=b.DEFAULT_MODEL, threads=2)
s = b.summarise(rows, a)
s["partial_run"] = f"{len(rows)} of 6 pairs finished before the run was stopped"
(out / "bench_register.json").write_text(json.dumps({"summary": s, "pairs": rows}, indent=2, default=float))
table = b.markdown(s)
(out / "bench_register.md").write_text(table)
print(table)
