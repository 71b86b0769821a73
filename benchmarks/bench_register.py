"""Benchmark DeepReg against the affine stage and ANTs SyN on the validation brains.

For every ordered pair of validation subjects (Mindboggle OASIS-TRT-20 17, 18, 19; the
bundled sample pair alone if ../shared/data is absent):

* Dice of warped manual labels: subcortical/aseg (< 1000) and cortical DKT (>= 1000);
* % folding (det J <= 0) of every method (ANTs SyN included) measured as an outside evaluator
  does: the transform as written is sampled at 1 mm on an identity-direction grid over the fixed
  image and the Jacobian taken inside the fixed brain (fixed image > 0), beside the same figure on a
  2 mm grid (the network's resolution); SDlogJ at 1 mm;
* DeepReg with ``refine=True`` (default :class:`RefineConfig`): Dice, folding, seconds per pair;
* fidelity of the written ``.h5``: points mapped by SimpleITK vs Slicer's ``vtkMRMLTransformStorageNode``
  (slicer-core) over the fixed brain voxels (p99, mm), default and refine;
* median seconds of in-process ``register()`` (after one warm-up), CLI wall time
  (``deepreg register`` in a fresh process: imports + file I/O included) and its peak RSS;
* the same accuracy numbers and time for ANTs SyN (``antspyx``, ``[bench]`` extra) run in this
  script, and the speed ratio;
* the Dice of the stored 2 mm field vs. the same mapping densified to the fixed 1 mm grid.

Writes ``benchmarks/results/bench_register.json`` and ``.md`` (and PNG overlays), prints the table.

    python benchmarks/bench_register.py [--ants-pairs N] [--update-card]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
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

from DeepRegLib.bundles import DEFAULT_MODEL, load_bundle, update_card  # noqa: E402
from DeepRegLib.inference import register  # noqa: E402
from DeepRegLib.metrics import dice_summary  # noqa: E402
from DeepRegLib import transforms as tr  # noqa: E402
from DeepRegLib.qa import transform_folding  # noqa: E402
from DeepRegLib.bundles import card_refinement  # noqa: E402
from DeepRegLib.demos.visualize import overlay_panel, write_png  # noqa: E402

SHARED = REPO.parent / "shared" / "data" / "brain-mindboggle-oasis-trt20"
VALIDATION = [17, 18, 19]


def subject(n: int) -> dict:
    base = (SHARED if SHARED.is_dir() else REPO / "Resources" / "SampleData") / f"OASIS-TRT-20-{n}"
    return {"image": base / "t1weighted_brain.nii.gz", "labels": base / "labels.DKT31.manual+aseg.nii.gz"}


def cli_run(fixed: Path, moving: Path, out: Path, model: str) -> dict:
    """Time ``deepreg register`` in a fresh interpreter; its peak RSS (MB) from VmHWM, which, unlike
    ``ru_maxrss``, does not inherit the (large) benchmark parent's high-water mark across fork/exec."""
    cmd = [sys.executable, "-c",
           "import resource,sys; from DeepRegLib.cli import main; rc=main(sys.argv[1:]); "
           "hwm=[l for l in open('/proc/self/status') if l.startswith('VmHWM')]; "
           "print('MAXRSS', hwm[0].split()[1] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
           "from DeepRegLib.cli import finish; finish(sys.argv[1:], rc)",  # as the console script ends
           "register", "--fixed", str(fixed), "--moving", str(moving), "--output-transform", str(out),
           "--model", model, "--device", "cpu"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    rss = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("MAXRSS")][0]
    return {"wall_s": wall, "peak_rss_mb": rss / 1024.0, "h5_mb": out.stat().st_size / 1e6}


def dense_dice(res, fl, ml) -> dict:
    """Dice when the same mapping is stored as a dense field on the full fixed grid (1 mm)."""
    f = sitk.TransformToDisplacementFieldFilter()
    f.SetReferenceImage(res.fixed)
    f.SetOutputPixelType(sitk.sitkVectorFloat64)
    dense = sitk.DisplacementFieldTransform(f.Execute(res.transform()))
    return dice_summary(fl, sitk.Resample(ml, res.fixed, dense, sitk.sitkNearestNeighbor, 0, ml.GetPixelID()))


def folding(transform: sitk.Transform, fixed: sitk.Image) -> dict:
    """% folding inside the fixed brain at 1 mm (and 2 mm), identity-direction sampling; SDlogJ at 1 mm."""
    brain = fixed > 0
    one = transform_folding(transform, fixed, 1.0, brain)
    two = transform_folding(transform, fixed, 2.0, brain)
    return {"folding_percent_1mm": one["folding_percent"], "sdlogj": one["sdlogj"],
            "folding_percent_2mm": two["folding_percent"]}


def fidelity(transform_path: str, fixed: sitk.Image, step: int = 7) -> dict:
    """Distance (mm) between SimpleITK's and Slicer's reading of one .h5 over fixed brain voxels."""
    try:
        import slicer  # noqa: F401
    except ImportError:
        return {}
    from DeepRegLib.slicer_adapter import mrml
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLTransformNode")
    sn = scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    sn.SetFileName(transform_path)
    node.SetAndObserveStorageNodeID(sn.GetID())
    if not sn.ReadData(node):
        return {"error": "Slicer could not read the file"}
    arr = sitk.GetArrayViewFromImage(fixed)
    kk, jj, ii = np.nonzero(arr > 0)
    sel = slice(None, None, step)
    idx = np.stack([ii[sel], jj[sel], kk[sel], np.ones(len(ii[sel]))], 1)
    pts = (idx @ tr.index_to_physical(fixed).T)[:, :3]
    t = sitk.ReadTransform(transform_path)
    a = np.array([t.TransformPoint(tuple(p)) for p in pts])
    b = mrml.transform_node_map_points(node, pts)
    d = np.linalg.norm(a - b, axis=1)
    return {"points": int(len(d)), "median_mm": float(np.median(d)), "p99_mm": float(np.percentile(d, 99)),
            "max_mm": float(d.max())}


def field_dice(res, fl, ml) -> dict:
    """Dice of the previous file format: the same 2 mm samples as a trilinear displacement field."""
    comp = sitk.CompositeTransform(3)
    comp.AddTransform(sitk.AffineTransform(res.affine))
    comp.AddTransform(tr.displacement_transform(res.displacement, res.grid))
    return dice_summary(fl, sitk.Resample(ml, res.fixed, comp, sitk.sitkNearestNeighbor, 0, ml.GetPixelID()))


def run_ants(fixed_path: Path, moving_path: Path, fl: sitk.Image, ml_path: Path) -> dict:
    import ants  # antspyx
    f = ants.image_read(str(fixed_path))
    m = ants.image_read(str(moving_path))
    t = time.perf_counter()
    reg = ants.registration(fixed=f, moving=m, type_of_transform="SyN")
    seconds = time.perf_counter() - t
    ml = ants.image_read(str(ml_path))
    wl = ants.apply_transforms(fixed=f, moving=ml, transformlist=reg["fwdtransforms"], interpolator="nearestNeighbor")
    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "wl.nii.gz")
        ants.image_write(wl, p)
        wl_img = sitk.ReadImage(p)
        # the composite of ANTs' forward transforms (warp then affine), as ITK reads them
        comp = sitk.CompositeTransform(3)
        for tf in reversed(reg["fwdtransforms"]):
            comp.AddTransform(sitk.ReadTransform(tf) if tf.endswith(".mat") else
                              sitk.DisplacementFieldTransform(sitk.Cast(sitk.ReadImage(tf), sitk.sitkVectorFloat64)))
        fold = folding(comp, sitk.ReadImage(str(fixed_path), sitk.sitkFloat32))
    return {"seconds": seconds, "dice": dice_summary(fl, sitk.Cast(wl_img, fl.GetPixelID())), **fold,
            "warped": reg["warpedmovout"]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="in-process timing repeats per pair")
    ap.add_argument("--no-refine", action="store_true", help="skip register(refine=True)")
    ap.add_argument("--max-pairs", type=int, default=None, help="only the first N pairs (smoke runs)")
    ap.add_argument("--ants-pairs", type=int, default=6, help="pairs to run ANTs SyN on (0: skip)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--update-card", action="store_true", help="write accuracy/speed into the model card")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    subjects = VALIDATION if SHARED.is_dir() else [17, 18]
    pairs = list(itertools.permutations(subjects, 2))[:a.max_pairs]
    rows = []
    try:
        import ants  # noqa: F401
        have_ants = a.ants_pairs > 0
    except ImportError:
        have_ants = False
        print("antspyx not installed: ANTs SyN skipped (pip install .[bench])", file=sys.stderr)
    register(subject(pairs[0][0])["image"], subject(pairs[0][1])["image"], model=a.model, device="cpu")  # warm-up
    has_default_refinement = card_refinement(load_bundle(a.model).card) is not None
    for n, (fs, ms) in enumerate(pairs):
        F, M = subject(fs), subject(ms)
        fixed = sitk.ReadImage(str(F["image"]), sitk.sitkFloat32)
        moving = sitk.ReadImage(str(M["image"]), sitk.sitkFloat32)
        fl, ml = sitk.ReadImage(str(F["labels"])), sitk.ReadImage(str(M["labels"]))
        times, res = [], None
        for _ in range(a.repeats):
            t = time.perf_counter()
            res = register(fixed, moving, model=a.model, device="cpu")
            times.append(time.perf_counter() - t)
        row = {"fixed": fs, "moving": ms, "register_s": statistics.median(times), "timings": res.timings,
               "dice_unregistered": dice_summary(fl, sitk.Resample(ml, fl, sitk.Transform(), sitk.sitkNearestNeighbor, 0)),
               "dice_affine": dice_summary(fl, res.warp_labels(ml, affine_only=True)),
               "dice_deepreg": dice_summary(fl, res.warp_labels(ml)),
               "dice_deepreg_dense_1mm": dense_dice(res, fl, ml),
               "dice_deepreg_trilinear_field": field_dice(res, fl, ml),
               **{f"deepreg_{k}": v for k, v in folding(res.transform(), fixed).items()}}
        with tempfile.TemporaryDirectory() as tmp:
            row["cli"] = cli_run(F["image"], M["image"], Path(tmp) / "T.h5", a.model)
            res.write_transform(str(Path(tmp) / "T.h5"))
            row["fidelity"] = fidelity(str(Path(tmp) / "T.h5"), fixed)
        if has_default_refinement:  # the same model's network alone, for comparison with its default call
            t = time.perf_counter()
            nres = register(fixed, moving, model=a.model, device="cpu", refine=False)
            row["network_only"] = {"seconds": time.perf_counter() - t, "dice": dice_summary(fl, nres.warp_labels(ml)),
                                   **folding(nres.transform(), fixed)}
        if not a.no_refine:
            t = time.perf_counter()
            rres = register(fixed, moving, model=a.model, device="cpu", refine=True)
            rsec = time.perf_counter() - t
            row["refine"] = {"seconds": rsec, "refine_s": rres.timings.get("refine"), "log": rres.log,
                             "dice": dice_summary(fl, rres.warp_labels(ml)), **folding(rres.transform(), fixed)}
            with tempfile.TemporaryDirectory() as tmp:
                rres.write_transform(str(Path(tmp) / "R.h5"))
                row["refine"]["h5_mb"] = (Path(tmp) / "R.h5").stat().st_size / 1e6
                row["refine"]["fidelity"] = fidelity(str(Path(tmp) / "R.h5"), fixed)
        overlays = [("affine", res.warp_image(moving, affine_only=True)), ("deepreg", res.warp_image(moving))]
        if "refine" in row:
            overlays.append(("deepreg_refine", rres.warp_image(moving)))
        if have_ants and n < a.ants_pairs:
            ants_res = run_ants(F["image"], M["image"], fl, M["labels"])
            warped = ants_res.pop("warped")
            row["ants"] = ants_res
            with tempfile.TemporaryDirectory() as tmp:
                p = os.path.join(tmp, "w.nii.gz")
                warped.to_file(p)
                overlays.append(("ants_syn", sitk.ReadImage(p, sitk.sitkFloat32)))
        if n == 0:
            write_png(overlay_panel(fixed, overlays, "checkerboard"), str(a.out / "overlay_checkerboard.png"))
            write_png(overlay_panel(fixed, overlays, "difference"), str(a.out / "overlay_difference.png"))
        rows.append(row)
        (a.out / "bench_register.partial.json").write_text(json.dumps({"pairs": rows}, indent=1, default=float))
        print(f"pair {ms}->{fs}: register {row['register_s']:.2f} s, CLI {row['cli']['wall_s']:.2f} s, "
              f"Dice sub/cort affine {row['dice_affine']['subcortical']:.3f}/{row['dice_affine']['cortical']:.3f} "
              f"deepreg {row['dice_deepreg']['subcortical']:.3f}/{row['dice_deepreg']['cortical']:.3f}"
              + (f" refine {row['refine']['dice']['subcortical']:.3f}/{row['refine']['dice']['cortical']:.3f} "
                 f"({row['refine']['seconds']:.1f} s)" if "refine" in row else "")
              + (f" ants {row['ants']['dice']['subcortical']:.3f}/{row['ants']['dice']['cortical']:.3f} "
                 f"({row['ants']['seconds']:.1f} s)" if "ants" in row else ""), flush=True)
    summary = summarise(rows, a)
    (a.out / "bench_register.json").write_text(json.dumps({"summary": summary, "pairs": rows}, indent=2, default=float))
    table = markdown(summary)
    (a.out / "bench_register.md").write_text(table)
    print(table)
    if a.update_card:
        write_card(a.model, summary)
    return summary


def med(rows, *keys):
    vals = []
    for r in rows:
        v = r
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        if v is not None:
            vals.append(float(v))
    return (statistics.median(vals) if vals else None), (float(np.mean(vals)) if vals else None), len(vals)


def summarise(rows, a) -> dict:
    s = {"model": a.model, "pairs": len(rows), "threads": a.threads, "machine": platform.processor() or platform.machine(),
         "torch": torch.__version__, "validation_subjects": sorted({r["fixed"] for r in rows})}
    for name, key in (("unregistered", "dice_unregistered"), ("affine", "dice_affine"), ("deepreg", "dice_deepreg"),
                      ("deepreg_dense_1mm", "dice_deepreg_dense_1mm"),
                      ("deepreg_trilinear_field", "dice_deepreg_trilinear_field")):
        s[name] = {part: med(rows, key, part)[1] for part in ("subcortical", "cortical", "all")}
    s["deepreg"].update({"folding_percent": med(rows, "deepreg_folding_percent_1mm")[0],
                         "folding_percent_1mm": med(rows, "deepreg_folding_percent_1mm")[0],
                         "folding_percent_1mm_max": max(r["deepreg_folding_percent_1mm"] for r in rows),
                         "folding_percent_2mm": med(rows, "deepreg_folding_percent_2mm")[0],
                         "sdlogj": med(rows, "deepreg_sdlogj")[0],
                         "fidelity_p99_mm_max": max((r.get("fidelity", {}).get("p99_mm", float("nan")) for r in rows), default=None),
                         "register_s_median": med(rows, "register_s")[0],
                         "affine_s_median": med(rows, "timings", "affine")[0],
                         "network_s_median": med(rows, "timings", "network")[0],
                         "cli_wall_s_median": med(rows, "cli", "wall_s")[0],
                         "cli_peak_rss_mb_max": max(r["cli"]["peak_rss_mb"] for r in rows),
                         "h5_mb": rows[0]["cli"]["h5_mb"]})
    net_rows = [r for r in rows if "network_only" in r]
    if net_rows:  # register(refine=False): the network alone, beside the default call that includes the card's refinement
        s["network_only"] = {**{part: med(net_rows, "network_only", "dice", part)[1] for part in ("subcortical", "cortical", "all")},
                             "median": {part: med(net_rows, "network_only", "dice", part)[0]
                                        for part in ("subcortical", "cortical", "all")},
                             "folding_percent_1mm": med(net_rows, "network_only", "folding_percent_1mm")[0],
                             "folding_percent_2mm": med(net_rows, "network_only", "folding_percent_2mm")[0],
                             "sdlogj": med(net_rows, "network_only", "sdlogj")[0],
                             "seconds_median": med(net_rows, "network_only", "seconds")[0]}
    ref_rows = [r for r in rows if "refine" in r]
    if ref_rows:
        s["deepreg_refine"] = {"pairs": len(ref_rows),
                               **{part: med(ref_rows, "refine", "dice", part)[0] for part in ("subcortical", "cortical", "all")},
                               "mean": {part: med(ref_rows, "refine", "dice", part)[1] for part in ("subcortical", "cortical", "all")},
                               "folding_percent_1mm": med(ref_rows, "refine", "folding_percent_1mm")[0],
                               "folding_percent_1mm_max": max(r["refine"]["folding_percent_1mm"] for r in ref_rows),
                               "folding_percent_2mm": med(ref_rows, "refine", "folding_percent_2mm")[0],
                               "sdlogj": med(ref_rows, "refine", "sdlogj")[0],
                               "seconds_median": med(ref_rows, "refine", "seconds")[0],
                               "refine_s_median": med(ref_rows, "refine", "refine_s")[0],
                               "h5_mb": ref_rows[0]["refine"]["h5_mb"],
                               "fidelity_p99_mm_max": max((r["refine"].get("fidelity", {}).get("p99_mm", float("nan"))
                                                           for r in ref_rows), default=None)}
        s["deepreg_median"] = {part: med(rows, "dice_deepreg", part)[0] for part in ("subcortical", "cortical", "all")}
    ants_rows = [r for r in rows if "ants" in r]
    if ants_rows:
        s["ants_syn"] = {"pairs": len(ants_rows),
                         **{part: med(ants_rows, "ants", "dice", part)[1] for part in ("subcortical", "cortical", "all")},
                         "median": {part: med(ants_rows, "ants", "dice", part)[0] for part in ("subcortical", "cortical", "all")},
                         "folding_percent": med(ants_rows, "ants", "folding_percent_1mm")[0],
                         "folding_percent_1mm": med(ants_rows, "ants", "folding_percent_1mm")[0],
                         "folding_percent_2mm": med(ants_rows, "ants", "folding_percent_2mm")[0],
                         "sdlogj": med(ants_rows, "ants", "sdlogj")[0],
                         "seconds_median": med(ants_rows, "ants", "seconds")[0],
                         "deepreg_same_pairs": {part: med(ants_rows, "dice_deepreg", part)[1]
                                                for part in ("subcortical", "cortical", "all")}}
        s["speedup_vs_ants"] = s["ants_syn"]["seconds_median"] / s["deepreg"]["register_s_median"]
        if ref_rows:
            s["refine_speedup_vs_ants"] = s["ants_syn"]["seconds_median"] / s["deepreg_refine"]["seconds_median"]
    return s


def _f(v, fmt="{:.3f}"):
    return "n/a" if v is None else fmt.format(v)


def markdown(s: dict) -> str:
    lines = [f"Validation pairs: {s['pairs']} (subjects {s['validation_subjects']}), {s['threads']} CPU threads, "
             f"torch {s['torch']}. Dice is the mean over labels (then the mean over pairs, as before; the median over "
             "pairs is in the second table); times are medians. % folding: det J <= 0 of the transform file sampled "
             "on an identity-direction grid over the fixed image, inside the fixed brain, at 1 mm (2 mm in brackets); "
             "SDlogJ at 1 mm.", "",
             "| method | Dice subcortical | Dice cortical | % folding 1 mm (2 mm) | SDlogJ | seconds / pair |",
             "|---|---|---|---|---|---|"]
    lines.append(f"| unregistered | {_f(s['unregistered']['subcortical'])} | {_f(s['unregistered']['cortical'])} | | | |")
    lines.append(f"| affine stage | {_f(s['affine']['subcortical'])} | {_f(s['affine']['cortical'])} | 0 | 0 | "
                 f"{_f(s['deepreg']['affine_s_median'], '{:.2f}')} |")
    d = s["deepreg"]
    lines.append(f"| DeepReg {s['model']} | {_f(d['subcortical'])} | {_f(d['cortical'])} | "
                 f"{_f(d['folding_percent_1mm'], '{:.4f}')} ({_f(d['folding_percent_2mm'], '{:.4f}')}) | "
                 f"{_f(d['sdlogj'])} | {_f(d['register_s_median'], '{:.2f}')} (CLI {_f(d['cli_wall_s_median'], '{:.2f}')}) |")
    if "network_only" in s:
        no = s["network_only"]
        lines.append(f"| same model, network alone (`refine=False`) | {_f(no['subcortical'])} | {_f(no['cortical'])} | "
                     f"{_f(no['folding_percent_1mm'], '{:.4f}')} ({_f(no['folding_percent_2mm'], '{:.4f}')}) | "
                     f"{_f(no['sdlogj'])} | {_f(no['seconds_median'], '{:.2f}')} |")
    dd = s["deepreg_dense_1mm"]
    lines.append(f"| same mapping, dense 1 mm field | {_f(dd['subcortical'])} | {_f(dd['cortical'])} | | | |")
    dt = s["deepreg_trilinear_field"]
    lines.append(f"| same 2 mm samples, trilinear field (previous .h5) | {_f(dt['subcortical'])} | {_f(dt['cortical'])} | | | |")
    if "deepreg_refine" in s:
        r = s["deepreg_refine"]
        lines.append(f"| DeepReg {s['model']} + refine | {_f(r['mean']['subcortical'])} | {_f(r['mean']['cortical'])} | "
                     f"{_f(r['folding_percent_1mm'], '{:.4f}')} ({_f(r['folding_percent_2mm'], '{:.4f}')}) | "
                     f"{_f(r['sdlogj'])} | {_f(r['seconds_median'], '{:.1f}')} |")
    if "ants_syn" in s:
        an = s["ants_syn"]
        lines.append(f"| ANTs SyN ({an['pairs']} pairs) | {_f(an['subcortical'])} | {_f(an['cortical'])} | "
                     f"{_f(an['folding_percent_1mm'], '{:.4f}')} ({_f(an['folding_percent_2mm'], '{:.4f}')}) | "
                     f"{_f(an['sdlogj'])} | {_f(an['seconds_median'], '{:.1f}')} |")
        ds = an["deepreg_same_pairs"]
        lines.append(f"| DeepReg on those pairs | {_f(ds['subcortical'])} | {_f(ds['cortical'])} | | | |")
    if "deepreg_refine" in s and "ants_syn" in s:
        r, an = s["deepreg_refine"], s["ants_syn"]
        lines += ["", "Median over pairs (the refine targets):", "",
                  "| method | Dice subcortical | Dice cortical | % folding 1 mm (max over pairs) | seconds / pair |",
                  "|---|---|---|---|---|",
                  f"| DeepReg | {_f(s['deepreg_median']['subcortical'])} | {_f(s['deepreg_median']['cortical'])} | "
                  f"{_f(d['folding_percent_1mm'], '{:.4f}')} ({_f(d['folding_percent_1mm_max'], '{:.4f}')}) | "
                  f"{_f(d['register_s_median'], '{:.2f}')} |",
                  f"| DeepReg + refine | {_f(r['subcortical'])} | {_f(r['cortical'])} | "
                  f"{_f(r['folding_percent_1mm'], '{:.4f}')} ({_f(r['folding_percent_1mm_max'], '{:.4f}')}) | "
                  f"{_f(r['seconds_median'], '{:.1f}')} (refinement {_f(r['refine_s_median'], '{:.1f}')}) |",
                  f"| ANTs SyN | {_f(an['median']['subcortical'])} | {_f(an['median']['cortical'])} | "
                  f"{_f(an['folding_percent_1mm'], '{:.4f}')} | {_f(an['seconds_median'], '{:.1f}')} |"]
    if "ants_syn" in s:
        lines += ["", f"Speed ratio ANTs SyN / DeepReg register(): {s['speedup_vs_ants']:.0f}x"]
        if "refine_speedup_vs_ants" in s:
            lines += [f"Speed ratio ANTs SyN / DeepReg register(refine=True): {s['refine_speedup_vs_ants']:.1f}x"]
    lines += ["", f"CLI peak RSS {d['cli_peak_rss_mb_max']:.0f} MB; transform file {d['h5_mb']:.1f} MB"
              + (f" (refine {s['deepreg_refine']['h5_mb']:.1f} MB)" if "deepreg_refine" in s else "") + "."]
    if d.get("fidelity_p99_mm_max") is not None:
        lines += [f"Same .h5 read by SimpleITK and by Slicer's vtkMRMLTransformStorageNode, fixed brain voxels: "
                  f"p99 distance {d['fidelity_p99_mm_max']:.2e} mm (worst pair)"
                  + (f", refine {s['deepreg_refine']['fidelity_p99_mm_max']:.2e} mm" if "deepreg_refine" in s else "") + "."]
    lines.append("")
    return "\n".join(lines)


def write_card(model: str, s: dict) -> None:
    card = {}
    card["accuracy"] = {"benchmark": "benchmarks/bench_register.py", "pairs": s["pairs"],
                        "validation_subjects": s["validation_subjects"],
                        "dice_affine": s["affine"], "dice_deformable": {k: s["deepreg"][k] for k in ("subcortical", "cortical", "all")},
                        "folding_percent": s["deepreg"]["folding_percent"], "sdlogj": s["deepreg"]["sdlogj"],
                        "what": "register()'s default call" + (" (the network, then the card's default refinement)"
                                                                 if "network_only" in s else " (the network alone)")}
    if "network_only" in s:
        card["accuracy"]["network_only"] = {k: s["network_only"][k] for k in
                                            ("subcortical", "cortical", "all", "folding_percent_1mm", "sdlogj")}
    if "ants_syn" in s:
        card["accuracy"]["ants_syn"] = {k: s["ants_syn"][k] for k in ("pairs", "subcortical", "cortical", "all", "folding_percent")}
    card["speed"] = {"threads": s["threads"], "register_s_median": s["deepreg"]["register_s_median"],
                     "affine_s_median": s["deepreg"]["affine_s_median"], "network_s_median": s["deepreg"]["network_s_median"],
                     "cli_wall_s_median": s["deepreg"]["cli_wall_s_median"],
                     "cli_peak_rss_mb": s["deepreg"]["cli_peak_rss_mb_max"],
                     "ants_syn_s_median": s.get("ants_syn", {}).get("seconds_median"),
                     "speedup_vs_ants": s.get("speedup_vs_ants")}
    update_card(load_bundle(model), card)


if __name__ == "__main__":
    main()
