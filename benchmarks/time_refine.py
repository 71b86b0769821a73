"""Wall and CPU seconds of register() and register(refine=True) on one pair (2 threads).

On a shared machine the wall time is inflated by other processes; the process CPU time
(``time.process_time``, summed over threads) bounds what the run costs on 2 free cores:
wall >= CPU / 2.  Writes ``benchmarks/results/time_refine.json``.

    python benchmarks/time_refine.py [--fixed N --moving M]
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_register import subject  # noqa: E402
from DeepRegLib.inference import register  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--fixed", type=int, default=17)
ap.add_argument("--moving", type=int, default=18)
a = ap.parse_args()
torch.set_num_threads(2)
sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(2)
fixed = sitk.ReadImage(str(subject(a.fixed)["image"]), sitk.sitkFloat32)
moving = sitk.ReadImage(str(subject(a.moving)["image"]), sitk.sitkFloat32)
register(fixed, moving, device="cpu")  # warm-up
out = {"pair": [a.fixed, a.moving], "loadavg_before": os.getloadavg()}
for name, refine in (("register", False), ("register_refine", True)):
    w, c = time.perf_counter(), time.process_time()
    res = register(fixed, moving, device="cpu", refine=refine)
    out[name] = {"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c, "timings": res.timings}
out["loadavg_after"] = os.getloadavg()
(REPO / "benchmarks" / "results" / "time_refine.json").write_text(json.dumps(out, indent=1))
print(json.dumps(out, indent=1))
