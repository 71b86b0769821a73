"""The CRD seed's speed/memory claim: low-resolution (4 mm) vs high-resolution (2 mm) network.

Measured in one script run, on the bundled sample pair (fixed OASIS-TRT-20-17, moving -18), CPU:

* **network alone**: forward time of each network on the same prepared 2 mm network inputs
  (80 x 96 x 80), median of ``--repeats`` runs, the two models interleaved run by run in this
  process (``torch.inference_mode``, ``--threads`` threads);
* **end to end**: in-process ``register()`` (affine stage, resampling, network, field), median,
  interleaved, after one warm-up each;
* **peak memory**: for each model, a fresh subprocess (run ``--memory-runs`` times, median)
  warms up once, resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), runs the
  network (or ``register()``) again and reports ``VmHWM - VmRSS before``: the extra resident
  memory the call needs on top of the loaded model and inputs. glibc's mmap threshold is
  fixed at 128 KiB (``MALLOC_MMAP_THRESHOLD_``) so that large tensors are returned to the
  system when freed and the mark is not hidden by memory kept from the warm-up.

The high-resolution model is ``--highres``, by default the default bundle (``ldr_brain_v2`` since it
replaced ``ldr_brain_v1``, the model of the stored results; same network, so the network figures
carry over, but its ``register()`` includes its card's few-step refinement; ``--highres
ldr_brain_v1`` repeats the stored comparison). The low-resolution model is
``--lowres`` if that bundle exists; otherwise an *untrained* ``lowres_ldr`` bundle (same
architecture and cascades, random initialisation, written to a temporary models folder found
through ``DEEPREG_MODELS_PATH``): speed and memory do not depend on the weights' values.

Writes ``benchmarks/results/bench_crd.json`` and ``bench_crd.md``.

    nice -n 10 python benchmarks/bench_crd.py [--repeats 20] [--lowres crd_lowres_brain]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from DeepRegLib.bundles import DEFAULT_MODEL, ModelBundle, load_bundle  # noqa: E402
from DeepRegLib.errors import ModelNotFoundError  # noqa: E402
from DeepRegLib.models import build_network, count_parameters  # noqa: E402
from DeepRegLib.pipeline import prepare_pair  # noqa: E402

SAMPLE = REPO / "Resources" / "SampleData"
FIXED = SAMPLE / "OASIS-TRT-20-17" / "t1weighted_brain.nii.gz"
MOVING = SAMPLE / "OASIS-TRT-20-18" / "t1weighted_brain.nii.gz"

def _niceness() -> str:
    """``"nice -n N "`` when this process runs niced (so the recorded command is the one that ran), else ``""``."""
    n = os.nice(0)
    return f"nice -n {n} " if n > 0 else ""


#: run in a fresh interpreter: argv = mode (network|register), model, inputs .npz, threads
MEMORY_PROBE = r"""
import sys, numpy as np, torch, SimpleITK as sitk
mode, model, npz, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.set_num_threads(threads); sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(threads)
def kb(key):
    return int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1])
if mode == 'network':
    from DeepRegLib.bundles import load_bundle
    net = load_bundle(model).network('cpu')
    d = np.load(npz)
    f, m = torch.from_numpy(d['fixed'])[None, None], torch.from_numpy(d['moving'])[None, None]
    call = lambda: net(f, m)
else:
    from DeepRegLib.inference import register
    fixed, moving = sitk.ReadImage(sys.argv[5], sitk.sitkFloat32), sitk.ReadImage(sys.argv[6], sitk.sitkFloat32)
    call = lambda: register(fixed, moving, model=model, device='cpu')
with torch.inference_mode():
    call()  # warm-up (thread pools, kernels, the engine's network cache)
    base = kb('VmRSS')
    open('/proc/self/clear_refs', 'w').write('5')  # reset VmHWM to the current RSS
    out = call()
    peak = kb('VmHWM')
print('MEM', base, peak)
"""


def untrained_lowres_bundle(folder: Path, like: ModelBundle, cascades: int, factor: int) -> ModelBundle:
    """A ``lowres_ldr`` bundle with random weights and ``like``'s input spec (timing/memory only)."""
    torch.manual_seed(0)
    net = build_network("lowres_ldr", cascades, factor=factor)
    out = folder / "crd_lowres_untrained"
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() for k, v in net.state_dict().items()}, out / "weights.pt")
    card = {k: like.card[k] for k in ("input", "output", "affine_stage") if k in like.card}
    card.update({"name": out.name, "kind": "low-resolution",
                 "description": "UNTRAINED low-resolution LDR (random weights): speed/memory measurements only",
                 "weights": "weights.pt", "weights_dtype": "float16 (cast to float32 on load)",
                 "architecture": {"name": "lowres_ldr", "cascades": cascades, "kwargs": {"factor": factor},
                                  "parameters": count_parameters(net)}})
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return load_bundle(str(out))


def memory(mode: str, model: str, npz: Path, threads: int, runs: int) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", PYTHONPATH=str(REPO))
    deltas, peaks = [], []
    for _ in range(runs):
        p = subprocess.run([sys.executable, "-c", MEMORY_PROBE, mode, model, str(npz), str(threads), str(FIXED),
                            str(MOVING)], capture_output=True, text=True, env=env, cwd=REPO)
        if p.returncode != 0:
            raise RuntimeError(p.stderr)
        base, peak = (int(x) for x in next(l for l in p.stdout.splitlines() if l.startswith("MEM")).split()[1:])
        deltas.append((peak - base) / 1024.0)
        peaks.append(peak / 1024.0)
    return {"extra_mb_median": statistics.median(deltas), "extra_mb_runs": deltas,
            "process_peak_mb_median": statistics.median(peaks)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--highres", default=DEFAULT_MODEL)
    ap.add_argument("--lowres", default="crd_lowres_brain", help="low-resolution bundle (untrained stand-in if absent)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20, help="network timing repeats (register(): half as many)")
    ap.add_argument("--memory-runs", type=int, default=3, help="fresh subprocesses per memory figure (0: skip)")
    ap.add_argument("--tag", default="", help="suffix of the result files (bench_crd<_tag>.json/.md)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    from DeepRegLib.inference import register

    hr = load_bundle(a.highres)
    tmp = tempfile.TemporaryDirectory()
    try:
        lr = load_bundle(a.lowres)
        lowres_note = f"trained bundle {lr.name}"
    except ModelNotFoundError:
        lr = untrained_lowres_bundle(Path(tmp.name), hr, hr.cascades, 2)
        os.environ["DEEPREG_MODELS_PATH"] = os.pathsep.join(filter(None, [tmp.name, os.environ.get("DEEPREG_MODELS_PATH")]))
        lowres_note = (f"no bundle {a.lowres!r} yet: an untrained lowres_ldr bundle ({hr.cascades} cascades, "
                       "factor 2, random weights) in a temporary DEEPREG_MODELS_PATH folder")
    if lr.input_spec != hr.input_spec:
        raise SystemExit(f"the two bundles have different input grids: {lr.input_spec} vs {hr.input_spec}")
    models = {"high": hr, "low": lr}
    nets = {k: b.network("cpu") for k, b in models.items()}

    fixed = sitk.ReadImage(str(FIXED), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(MOVING), sitk.sitkFloat32)
    prep = prepare_pair(fixed, moving, hr.input_spec)
    npz = Path(tmp.name) / "inputs.npz"
    np.savez(npz, fixed=prep.fixed, moving=prep.moving)
    f = torch.from_numpy(prep.fixed)[None, None]
    m = torch.from_numpy(prep.moving)[None, None]

    # --- network alone: interleaved, median
    times = {k: [] for k in models}
    cpu = {k: [] for k in models}  # CPU seconds of this process (all threads): less sensitive to a busy machine
    with torch.inference_mode():
        for k in models:
            nets[k](f, m)
        for _ in range(a.repeats):
            for k in models:
                t, c = time.perf_counter(), time.process_time()
                nets[k](f, m)
                times[k].append(time.perf_counter() - t)
                cpu[k].append(time.process_time() - c)
    # --- end to end register(): interleaved, median, after a warm-up each
    reg = {k: [] for k in models}
    reg_cpu = {k: [] for k in models}
    stages = {k: [] for k in models}
    for k, b in models.items():
        register(fixed, moving, model=b.name, device="cpu")
    for _ in range(max(3, a.repeats // 2)):
        for k, b in models.items():
            t, c = time.perf_counter(), time.process_time()
            res = register(fixed, moving, model=b.name, device="cpu")
            reg[k].append(time.perf_counter() - t)
            reg_cpu[k].append(time.process_time() - c)
            stages[k].append(res.timings)
    # --- peak memory: fresh subprocess per model and measurement
    skipped = {"extra_mb_median": float("nan"), "extra_mb_runs": [], "process_peak_mb_median": float("nan")}
    mem = {k: {"network": memory("network", str(b.path), npz, a.threads, a.memory_runs) if a.memory_runs else skipped,
               "register": memory("register", str(b.path), npz, a.threads, a.memory_runs) if a.memory_runs else skipped}
           for k, b in models.items()}
    tmp.cleanup()

    def stage_median(k: str, name: str) -> float:
        return statistics.median(s.get(name, float("nan")) for s in stages[k])

    rows = {}
    for k, b in models.items():
        spacing, size = b.network_grid
        rows[k] = {"model": b.name, "kind": b.kind, "network_grid": {"spacing": spacing, "size": list(size)},
                   "parameters": count_parameters(nets[k]),
                   "network_s_median": statistics.median(times[k]), "network_s_runs": times[k],
                   "network_s_min": min(times[k]), "network_cpu_s_median": statistics.median(cpu[k]),
                   "register_s_median": statistics.median(reg[k]), "register_s_runs": reg[k],
                   "register_s_min": min(reg[k]), "register_cpu_s_median": statistics.median(reg_cpu[k]),
                   "register_network_stage_s_median": stage_median(k, "network"),
                   "register_affine_stage_s_median": stage_median(k, "affine"),
                   "memory": mem[k]}
    ratio = {
        "network_time": rows["low"]["network_s_median"] / rows["high"]["network_s_median"],
        "register_time": rows["low"]["register_s_median"] / rows["high"]["register_s_median"],
        "network_time_min": rows["low"]["network_s_min"] / rows["high"]["network_s_min"],
        "register_time_min": rows["low"]["register_s_min"] / rows["high"]["register_s_min"],
        "network_cpu_time": rows["low"]["network_cpu_s_median"] / rows["high"]["network_cpu_s_median"],
        "register_cpu_time": rows["low"]["register_cpu_s_median"] / rows["high"]["register_cpu_s_median"],
        "network_extra_memory": mem["low"]["network"]["extra_mb_median"] / mem["high"]["network"]["extra_mb_median"],
        "register_extra_memory": mem["low"]["register"]["extra_mb_median"] / mem["high"]["register"]["extra_mb_median"],
    }
    # both models return the same 2 mm total flow (3 x float32 per voxel): the share of the peak that is this output
    out_mb = 3 * 4 * int(np.prod(prep.fixed.shape)) / 2 ** 20
    ratio["network_extra_memory_without_output"] = ((mem["low"]["network"]["extra_mb_median"] - out_mb)
                                                    / (mem["high"]["network"]["extra_mb_median"] - out_mb))
    result = {"pair": {"fixed": str(FIXED.relative_to(REPO)), "moving": str(MOVING.relative_to(REPO))},
              "threads": a.threads, "repeats": a.repeats, "memory_runs": a.memory_runs,
              "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "load_average_at_end": os.getloadavg(), "lowres_model": lowres_note,
              "output_flow_mb": out_mb, "models": rows, "ratios_low_over_high": ratio,
              "seed_claim_below_20_percent": {k: v < 0.2 for k, v in ratio.items()},
              "command": _niceness() + "python benchmarks/bench_crd.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    stem = "bench_crd" + (f"_{a.tag}" if a.tag else "")
    (a.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = render(result)
    (a.out / f"{stem}.md").write_text(md)
    print(md)
    return result


def render(r: dict) -> str:
    h, lo, q = r["models"]["high"], r["models"]["low"], r["ratios_low_over_high"]

    def grid(row):
        g = row["network_grid"]
        return f"{'x'.join(map(str, g['size']))} at {g['spacing']:g} mm"
    lines = [
        f"Low- vs high-resolution network, CPU, {r['threads']} threads, torch {r['torch']}; sample pair "
        f"OASIS-TRT-20-17 / -18. Times: medians of {r['repeats']} (network) and {max(3, r['repeats'] // 2)} "
        f"(register()) interleaved runs in one process; memory: extra resident memory of the call over the loaded "
        f"model and inputs, median of {r['memory_runs']} fresh subprocesses. Low-resolution model: {r['lowres_model']}.",
        "",
        "| | model | kind | network grid | parameters | network s (CPU s) | register() s (CPU s) | "
        "network extra MB | register() extra MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in (("high-resolution", h), ("low-resolution", lo)):
        lines.append(f"| {name} | {row['model']} | {row['kind']} | {grid(row)} | {row['parameters']:,} | "
                     f"{row['network_s_median']:.4f} ({row['network_cpu_s_median']:.4f}) | "
                     f"{row['register_s_median']:.3f} ({row['register_cpu_s_median']:.3f}) | "
                     f"{row['memory']['network']['extra_mb_median']:.1f} | {row['memory']['register']['extra_mb_median']:.1f} |")
    lines.append(f"| **low / high** | | | | | **{q['network_time']:.1%}** ({q['network_cpu_time']:.1%}) | "
                 f"**{q['register_time']:.1%}** ({q['register_cpu_time']:.1%}) | "
                 f"**{q['network_extra_memory']:.1%}** | **{q['register_extra_memory']:.1%}** |")
    lines += ["", f"Fastest run (least disturbed by other processes): network {h['network_s_min']:.4f} / "
              f"{lo['network_s_min']:.4f} s (**{q['network_time_min']:.1%}**), register() {h['register_s_min']:.3f} / "
              f"{lo['register_s_min']:.3f} s (**{q['register_time_min']:.1%}**) (high / low).",
              f"Network extra memory without the {r['output_flow_mb']:.1f} MB 2 mm output flow that both return: "
              f"{q['network_extra_memory_without_output']:.1%}.",
              "", f"register() stages (median s): affine {h['register_affine_stage_s_median']:.3f} / "
              f"{lo['register_affine_stage_s_median']:.3f}, network {h['register_network_stage_s_median']:.4f} / "
              f"{lo['register_network_stage_s_median']:.4f} (high / low). Process peak RSS during register(): "
              f"{h['memory']['register']['process_peak_mb_median']:.0f} / {lo['memory']['register']['process_peak_mb_median']:.0f} MB.",
              f"Load average at the end of the run: {', '.join(f'{x:.1f}' for x in r['load_average_at_end'])} (shared 2-core machine).",
              "", f"Command: `{r['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
