"""Known-answer precision benchmark: DeepReg's modes against ANTs SyN on pairs whose mapping is known.

From validation brains (Mindboggle OASIS-TRT-20 17, 18, 19 at 1 mm and IXI validation brains at
2 mm, skull-stripped; the bundled sample brains if ../shared/data is absent), pairs are made with
:mod:`DeepRegLib.known_motion`: ``fixed(p) = moving(T(p))`` plus 2 % noise, a x1.3 intensity change and a
smooth bias field on the fixed image, so the true fixed -> moving mapping ``T`` is known exactly:

* ``identical``: fixed = moving, bit for bit (the answer is the identity);
* ``rigid``: a rigid motion (angles up to 10 degrees, shifts up to 10 mm);
* ``deformed-2`` / ``-5`` / ``-8``: the rigid motion after a smooth diffeomorphic deformation whose mean
  displacement over the brain is about 2, 5 and 8 mm.

Error = ``|R(p) - T(p)|`` (mm) over the fixed brain's voxels (every 2nd voxel per axis): mean, p95 and
max, plus seconds, for each mode of each model (``rigid``, ``affine``, ``network`` = ``--network-only``,
``default``, ``refine``) and for ANTs SyN (antspyx, ``[bench]`` extra) in the same run. Every pair's
rows are kept in ``<out>.partial.json`` as they come, so an interrupted run resumes where it stopped.

Writes ``benchmarks/results/bench_precision.json`` / ``.md`` and a plot of the error against the
displacement amplitude (one line per method).

    python benchmarks/bench_precision.py [--models ldr_brain_v2 ...] [--syn-pairs N] [--refine-pairs N]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from DeepRegLib import known_motion as km  # noqa: E402
from DeepRegLib.bundles import DEFAULT_MODEL  # noqa: E402
from DeepRegLib.inference import register  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
MINDBOGGLE = SHARED / "brain-mindboggle-oasis-trt20"
RESULTS = REPO / "benchmarks" / "results"
#: pair kinds: (name, target mean displacement of the deformation in mm, or None: no deformation)
KINDS = [("identical", None), ("rigid", None), ("deformed-2", 2.0), ("deformed-5", 5.0), ("deformed-8", 8.0)]
MODES = ["rigid", "affine", "network", "default", "refine"]


def subjects(n_ixi: int) -> list:
    """``[(name, image)]``: Mindboggle validation brains and the first ``n_ixi`` IXI validation brains."""
    out = []
    if MINDBOGGLE.is_dir():
        for s in (17, 18, 19):
            out.append((f"oasis-{s}", sitk.ReadImage(str(MINDBOGGLE / f"OASIS-TRT-20-{s}" / "t1weighted_brain.nii.gz"),
                                                     sitk.sitkFloat32)))
        from training.data import ixi
        for sid in ixi.split("val")[:n_ixi]:
            out.append((sid, ixi.load_brain(sid)))
    else:
        base = REPO / "Resources" / "SampleData"
        for s in (17, 18):
            out.append((f"oasis-{s}", sitk.ReadImage(str(base / f"OASIS-TRT-20-{s}" / "t1weighted_brain.nii.gz"),
                                                     sitk.sitkFloat32)))
    return out


#: control-point spacing (mm) of the benchmark's deformations: smooth, brain-scale
CONTROL_MM = 60.0


def deformation(image: sitk.Image, target_mm: float, points: np.ndarray, seed: int) -> sitk.Transform:
    """A smooth deformation whose mean displacement over ``points`` is close to ``target_mm``
    (the velocity amplitude scaled once from a trial at 3 mm)."""
    trial = km.smooth_deformation(image, 3.0, CONTROL_MM, seed=seed)
    amp = 3.0 * target_mm / max(km.mean_displacement(trial, points), 1e-3)
    return km.smooth_deformation(image, amp, CONTROL_MM, seed=seed)


def make_pairs(image: sitk.Image, name: str, seed: int) -> list:
    """The known-answer pairs of one brain (see the module docstring)."""
    rng = np.random.default_rng(seed)
    centre = km.centre_of(image)
    points = km.brain_points(image, step=4)
    rigid = km.rigid_motion(rng.uniform(-10, 10, 3), rng.uniform(-10, 10, 3), centre)
    pairs = []
    for kind, target in KINDS:
        if kind == "identical":
            pairs.append(km.KnownPair(image, image, sitk.Euler3DTransform(), f"{name}/{kind}"))
            continue
        deform = None if target is None else deformation(image, target, points, seed + len(pairs))
        truth = rigid if deform is None else km.compose(deform, rigid)
        pair = km.make_pair(image, truth, seed=seed + 10 * len(pairs), noise=0.02, intensity_scale=1.3,
                            bias=0.1, name=f"{name}/{kind}")
        pair.deformation_mm = 0.0 if deform is None else km.mean_displacement(deform, points)
        pairs.append(pair)
    return pairs


def deepreg_row(pair: km.KnownPair, model: str, mode: str, points: np.ndarray) -> dict:
    kw = {"rigid": dict(mode="rigid"), "affine": dict(mode="affine"), "network": dict(refine=False),
          "default": dict(), "refine": dict(refine=True)}[mode]
    t = time.perf_counter()
    res = register(pair.fixed, pair.moving, model=model, device="cpu", **kw)
    seconds = time.perf_counter() - t
    mapped = res.map_points(points)
    row = {"seconds": seconds, **km.mapping_error(mapped, pair.truth, points)}
    row["identity_start"] = any("starts from the affine stage alone" in line for line in res.log)
    row["stalled"] = any("no step improved" in line for line in res.log)
    return row


def syn_transform(fixed: sitk.Image, moving: sitk.Image) -> tuple:
    """ANTs SyN (antspyx defaults) as a SimpleITK transform mapping fixed to moving points, and seconds."""
    import ants
    with tempfile.TemporaryDirectory() as tmp:
        fp, mp = os.path.join(tmp, "f.nii.gz"), os.path.join(tmp, "m.nii.gz")
        sitk.WriteImage(fixed, fp)
        sitk.WriteImage(moving, mp)
        t = time.perf_counter()
        reg = ants.registration(fixed=ants.image_read(fp), moving=ants.image_read(mp), type_of_transform="SyN")
        seconds = time.perf_counter() - t
        warp_file, affine_file = reg["fwdtransforms"]
        field = sitk.ReadImage(warp_file, sitk.sitkVectorFloat64)
        affine = sitk.ReadTransform(affine_file)
    # antsApplyTransforms -t warp -t affine: a fixed point goes through the warp, then the affine
    return km.compose(sitk.DisplacementFieldTransform(field), affine), seconds


def summarise(rows: list) -> dict:
    """Median over pairs of each method's mean / p95 / max error and seconds, per kind."""
    out: dict = {}
    for kind, _ in KINDS:
        kr = [r for r in rows if r["kind"] == kind]
        if not kr:
            continue
        out[kind] = {"pairs": len(kr), "mean_displacement_mm": statistics.median(r["displacement_mm"] for r in kr),
                     "deformation_mm": statistics.median(r.get("deformation_mm", 0.0) for r in kr)}
        methods = sorted({m for r in kr for m in r["methods"]})
        for m in methods:
            vals = [r["methods"][m] for r in kr if m in r["methods"]]
            out[kind][m] = {k: statistics.median(v[k] for v in vals) for k in ("mean", "p95", "max", "seconds")}
            out[kind][m]["pairs"] = len(vals)
            if "identity_start" in vals[0]:
                out[kind][m]["identity_start_pairs"] = sum(bool(v.get("identity_start")) for v in vals)
                out[kind][m]["stalled_pairs"] = sum(bool(v.get("stalled")) for v in vals)
    return out


def same_pairs(rows: list, reference: str = "ants_syn") -> dict:
    """Mean over the pairs that ``reference`` ran on (its subset) of each method's mean error and seconds, per
    kind: every method on exactly the same pairs."""
    out: dict = {}
    for kind, _ in KINDS:
        kr = [r for r in rows if r["kind"] == kind and reference in r["methods"]]
        methods = sorted({m for r in kr for m in r["methods"]})
        if kr:
            out[kind] = {m: {k: statistics.mean(r["methods"][m][k] for r in kr if m in r["methods"])
                             for k in ("mean", "seconds")} for m in methods}
            out[kind]["pairs"] = len(kr)
    return out


def markdown(summary: dict, meta: dict) -> str:
    methods = []
    for kind in summary.values():
        methods += [m for m in kind if isinstance(kind[m], dict) and m not in methods]
    lines = ["# Known-answer precision (medians over pairs)", "",
             f"{meta['pairs']} pairs from {meta['subjects']} validation brains; threads {meta['threads']}; "
             f"noise 2 %, intensity x1.3, bias field on the fixed image. Error |R(p) - T(p)| in mm over the "
             "fixed brain; `identical` is the displacement of an image registered to itself.", "",
             "| pair | deformation (mm) | " + " | ".join(methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for kind, s in summary.items():
        cells = []
        for m in methods:
            v = s.get(m)
            cells.append("" if v is None else f"{v['mean']:.3f} / {v['p95']:.2f} / {v['max']:.2f} ({v['seconds']:.1f} s)")
        lines.append(f"| {kind} | {s['deformation_mm']:.1f} | " + " | ".join(cells) + " |")
    same = meta.get("same_pairs") or {}
    if same:
        names = [m for m in next(iter(same.values())) if m != "pairs"]
        lines += ["", "The pairs ANTs SyN ran on, every method on exactly those pairs (mean over pairs of the mean "
                  "error in mm; seconds):", "", "| pair | pairs | " + " | ".join(names) + " |",
                  "|---|---|" + "---|" * len(names)]
        for kind, s_ in same.items():
            lines.append(f"| {kind} | {s_['pairs']} | " + " | ".join(
                f"{s_[m]['mean']:.3f} ({s_[m]['seconds']:.1f} s)" if m in s_ else "" for m in names) + " |")
    lines += ["", "Deformation: mean displacement of the non-rigid part over the brain (the rigid motion adds "
              "up to 10 degrees and 10 mm). Cells: mean / p95 / max error (mm), median seconds per pair. `MODEL:mode`: DeepReg "
              "(`network` = `--network-only`, `default` = the card's few-step refinement, `refine` = `--refine`)."]
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kinds = list(summary)
    methods = []
    for s in summary.values():
        methods += [m for m in s if isinstance(s[m], dict) and m not in methods]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    x = np.arange(len(kinds))
    floor = 0.005  # mm: smaller errors (an identical pair left exactly in place) are drawn on this line
    # one colour per mode, one line style per model (solid: the first), ANTs SyN black: every line tells apart
    colours = {mode: plt.get_cmap("tab10")(i) for i, mode in enumerate(MODES)}
    models = [m.split(":")[0] for m in methods if ":" in m]
    models = list(dict.fromkeys(models))
    styles = ["-", "--", ":", "-."]
    for m in methods:
        if m == "identity":
            continue  # the unregistered error (~10 mm) would squash the scale
        y = [max(summary[k][m]["mean"], floor) if m in summary[k] else np.nan for k in kinds]
        if ":" in m:
            model, mode = m.split(":", 1)
            look = dict(color=colours.get(mode, "grey"), ls=styles[models.index(model) % len(styles)])
        else:
            look = dict(color="black", lw=2.2)
        ax.plot(x, y, marker="o", label=m.replace("ants_syn", "ANTs SyN"), **look)
    ax.axhline(floor, color="grey", lw=0.8, ls=":")
    ax.text(x[-1], floor * 1.15, f"<= {floor} mm", ha="right", va="bottom", fontsize=7, color="grey")
    ax.set_ylim(floor * 0.7, None)
    ax.set_xticks(x, [f"{k}\n({summary[k]['deformation_mm']:.1f} mm)" for k in kinds])
    ax.set_yscale("log")
    ax.set_ylabel("mean error over the brain (mm, log scale)")
    ax.set_xlabel("pair (mean displacement of the deformation)")
    ax.set_title("Known-answer precision: error against displacement amplitude")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), title="model:mode", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=[DEFAULT_MODEL], help="models (none: only SyN and the identity)")
    ap.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    ap.add_argument("--ixi", type=int, default=2, help="IXI validation brains to add (default 2)")
    ap.add_argument("--syn-pairs", type=int, default=10, help="pairs to run ANTs SyN on (0: none); one per kind first")
    ap.add_argument("--refine-pairs", type=int, default=100, help="pairs to run --refine on")
    ap.add_argument("--brains", type=int, default=0, help="use only the first N brains (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "bench_precision"))
    ap.add_argument("--update-card", action="store_true", help="write the first model's precision into its card")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(a.threads)
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", str(a.threads))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial.json")
    done = json.loads(partial.read_text()) if partial.exists() else {}
    try:
        import ants  # noqa: F401
        have_syn = a.syn_pairs > 0
    except ImportError:
        have_syn = False
        print("antspyx not installed: ANTs SyN skipped (pip install .[bench])", file=sys.stderr)
    brains = subjects(a.ixi)[:a.brains or None]
    pairs = []
    for n, (name, image) in enumerate(brains):
        pairs += make_pairs(image, name, seed=100 * (n + 1))
    # SyN on one pair of each kind first, then the next brain's
    syn_order = [p.name for k in range(len(brains)) for p in pairs[k * len(KINDS):(k + 1) * len(KINDS)]]
    syn_names = set(syn_order[:a.syn_pairs]) if have_syn else set()
    for i, pair in enumerate(pairs):
        points = km.brain_points(pair.fixed, step=2, threshold=0.0)
        rec = done.get(pair.name, {"kind": pair.name.split("/")[1], "methods": {}})
        rec["displacement_mm"] = km.mean_displacement(pair.truth, points)
        rec["deformation_mm"] = pair.deformation_mm
        for model in a.models:
            for mode in a.modes:
                key = f"{model}:{mode}"
                if key in rec["methods"] or (mode == "refine" and i >= a.refine_pairs):
                    continue
                rec["methods"][key] = deepreg_row(pair, model, mode, points)
        if pair.name in syn_names and "ants_syn" not in rec["methods"]:
            t, seconds = syn_transform(pair.fixed, pair.moving)
            rec["methods"]["ants_syn"] = {"seconds": seconds, **km.mapping_error(km.map_points(t, points), pair.truth, points)}
        if "identity" not in rec["methods"]:
            rec["methods"]["identity"] = {"seconds": 0.0, **km.mapping_error(points, pair.truth, points)}
        done[pair.name] = rec
        tmp = partial.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(done, indent=1))
        os.replace(tmp, partial)
        print(pair.name, {k: round(v["mean"], 3) for k, v in rec["methods"].items()}, flush=True)
    rows = [done[p.name] for p in pairs]
    summary = summarise(rows)
    meta = {"pairs": len(pairs), "subjects": len(brains), "threads": a.threads, "models": a.models,
            "command": "python benchmarks/bench_precision.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    meta["same_pairs"] = same_pairs(rows)
    result = {"meta": meta, "summary": summary, "pairs": {p.name: done[p.name] for p in pairs}}
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out.with_suffix(".json"))
    out.with_suffix(".md").write_text(markdown(summary, meta))
    plot(summary, out.with_suffix(".png"))
    print(markdown(summary, meta))
    if a.update_card and a.models:
        write_card(a.models[0], summary, meta)
    return 0


def write_card(model: str, summary: dict, meta: dict) -> None:
    """The card's ``precision`` block: median mean error (mm) per kind of pair for each mode, and SyN's."""
    from DeepRegLib.bundles import load_bundle, update_card
    bundle = load_bundle(model)
    block = {"benchmark": "benchmarks/bench_precision.py", "command": meta["command"], "pairs": meta["pairs"],
             "brains": meta["subjects"],
             "what": "pairs with a known fixed -> moving mapping made from validation brains (noise 2 %, intensity "
                     "x1.3, bias field); median over pairs of the mean error over the fixed brain, mm"}
    for mode in MODES:
        key = f"{model}:{mode}"
        block[f"{mode}_mean_error_mm"] = {k: round(v[key]["mean"], 4) for k, v in summary.items() if key in v}
    block["ants_syn_mean_error_mm"] = {k: round(v["ants_syn"]["mean"], 4) for k, v in summary.items() if "ants_syn" in v}
    update_card(bundle, {"precision": block})


if __name__ == "__main__":
    sys.exit(main())
