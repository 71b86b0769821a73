"""The ``deepreg`` command line.

Sub-commands: ``register``, ``warp``, ``evaluate``, ``demo``, ``batch``, ``models``.  Results go to
stdout (or files); progress and timings go to stderr.  Exit status 2 for bad input.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from typing import List, Optional

_T0 = time.perf_counter()


def _eprint(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def _progress(stage: str, frac: float) -> None:
    _eprint(f"[deepreg] {100 * frac:5.1f}%  {stage}  ({time.perf_counter() - _T0:.2f} s)")


def _notice(line: str) -> None:
    """A pre-flight line (:func:`DeepRegLib.bundles.preflight.preflight`) on stderr."""
    _eprint(f"[deepreg] {line}")


def _check_outputs(outputs: dict, inputs: dict) -> None:
    """Every output location checked before any work: never an input, writable, a known file type."""
    from .safeio import check_distinct_outputs, check_output_path
    for flag, (path, kind) in outputs.items():
        if path:
            check_output_path(path, inputs, flag, kind)
    check_distinct_outputs({flag: path for flag, (path, _) in outputs.items()})


def cmd_register(a: argparse.Namespace) -> int:
    from .bundles import load_bundle, with_task
    from .imageio import as_image, write_image
    from .safeio import StagedOutputs
    if bool(a.moving_labels) != bool(a.output_warped_labels):
        raise_input("--moving-labels and --output-warped-labels must be given together")
    if a.mode != "deformable" and a.refine is not None:
        raise_input(f"--refine and --network-only need --mode deformable, not --mode {a.mode}")
    inputs = {"--fixed image": a.fixed, "--moving image": a.moving, "--moving-labels": a.moving_labels,
              "--fixed-mask": a.fixed_mask, "--moving-mask": a.moving_mask}
    _check_outputs({"--output-transform": (a.output_transform, "transform"),
                    "--output-warped": (a.output_warped, "image"),
                    "--output-warped-labels": (a.output_warped_labels, "image")}, inputs)
    bundle = load_bundle(with_task(a.model, a.task))  # once for the whole run
    bundle.check_weights_file()  # a missing, damaged or malicious weights file: now, not later
    fixed, moving = as_image(a.fixed, "fixed"), as_image(a.moving, "moving")
    labels = as_image(a.moving_labels, "moving labels", pixel_type=None) if a.moving_labels else None
    masks = {k: as_image(p, k.replace("_", " "), pixel_type=None) if p else None
             for k, p in (("fixed_mask", a.fixed_mask), ("moving_mask", a.moving_mask))}
    from .bundles.preflight import preflight
    from .inference import register, resolve_device
    resolve_device(a.device)  # an unavailable CUDA: now
    preflight(bundle.card, fixed, moving, write=_notice)
    res = register(fixed, moving, model=bundle, device=a.device, progress=_progress, mode=a.mode,
                   refine=a.refine, preflight=False, **masks)
    for line in res.log:
        _eprint(f"[deepreg] {line}")
    with StagedOutputs() as out:  # all outputs appear together, each complete, or none
        out.stage(a.output_transform, res.write_transform)
        if a.output_warped:
            out.stage(a.output_warped, lambda p: write_image(res.warp_image(moving), p))
        if labels is not None:
            out.stage(a.output_warped_labels, lambda p: write_image(res.warp_labels(labels), p))
        out.commit()
    _eprint(f"[deepreg] wrote transform (fixed -> moving, ITK/LPS): {a.output_transform}")
    if a.output_warped:
        _eprint(f"[deepreg] wrote warped image: {a.output_warped}")
    if labels is not None:
        _eprint(f"[deepreg] wrote warped labels: {a.output_warped_labels}")
    report_quality(res, fixed, moving)
    timings = {k: round(v, 3) for k, v in res.timings.items()}
    _eprint(f"[deepreg] timings (s): {json.dumps(timings)}; wall {time.perf_counter() - _T0:.2f} s; "
            f"model {res.model} on {res.device}")
    return 0


def report_quality(res, fixed, moving) -> None:
    """The result's :class:`~DeepRegLib.quality.QualityVerdict` on stderr; each flag as a warning."""
    from .quality import assess
    verdict = assess(res, fixed, moving)
    _eprint(f"[deepreg] {verdict.summary().splitlines()[0]}")
    for flag in verdict.flags:
        _eprint(f"deepreg: warning: {flag}")


def cmd_warp(a: argparse.Namespace) -> int:
    import SimpleITK as sitk
    from .imageio import read_image, write_image
    from .safeio import check_input_file
    from .transforms import read_transform
    inputs = {"--input image": a.input, "--reference image": a.reference, "--transform": a.transform}
    for flag, path in inputs.items():
        check_input_file(path, flag.split()[0])
    _check_outputs({"--output": (a.output, "image")}, inputs)
    t = read_transform(a.transform, "transform")
    ref = read_image(a.reference, None, "reference")
    img = read_image(a.input, None, "input")
    interp = sitk.sitkNearestNeighbor if a.labels else sitk.sitkLinear
    out = sitk.Resample(img, ref, t, interp, 0.0, img.GetPixelID())
    write_image(out, a.output)
    _eprint(f"[deepreg] wrote {a.output}")
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    import numpy as np
    import SimpleITK as sitk
    from .imageio import check_same_grid
    from .metrics import dice_scores, hd95, read_label_map, summarise_dice
    from .safeio import atomic_text
    from .transforms import read_transform
    inputs = {"--fixed-labels": a.fixed_labels, "--warped-labels": a.warped_labels, "--transform": a.transform}
    _check_outputs({"--output": (a.output, None)}, inputs)
    f = read_label_map(a.fixed_labels, "fixed labels")
    w = read_label_map(a.warped_labels, "warped labels")
    check_same_grid(f, w, "the fixed and warped label maps")
    t = read_transform(a.transform, "transform") if a.transform else None
    d = dice_scores(f, w)
    out = {"dice": summarise_dice(d), "dice_per_label": {str(k): round(v, 4) for k, v in d.items()}}
    if a.hd95:
        h = hd95(f, w)
        out["hd95_mm"] = float(np.nanmean(list(h.values()))) if h else float("nan")
    if t is not None:
        from .qa import transform_folding
        out.update(transform_folding(t, f, mask=f))  # inside the labelled brain
    text = json.dumps(out, indent=2)
    if a.output:
        atomic_text(a.output, text)
    print(text)
    return 0


def cmd_models(a: argparse.Namespace) -> int:
    from .bundles import DEFAULT_MODEL, list_models
    models = list_models()
    if a.json:
        print(json.dumps({k: v.card for k, v in models.items()}, indent=2))
        return 0
    if not models:
        print("no model bundles found")
        return 1
    for name, b in models.items():
        mark = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{b.summary}{mark}")
        for line in b.details() + [str(b.path)]:
            print(f"    {line}")
        for t in b.tasks[1:]:  # a model made for several tasks: each one as the CLI names it
            view = b.for_task(t)
            print(f"  {view.summary}")
            for line in view.details()[1:]:
                print(f"      {line}")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from .safeio import check_folder_writable
    check_folder_writable(a.output_dir, "--output-dir")
    if getattr(a, "task", "brain") == "prostate":
        from .demos.prostate import run_prostate_demo
        run_prostate_demo(a.output_dir, model=a.model, device=a.device, progress=_progress, notice=_notice)
        return 0
    from .demos.brain import run_demo
    run_demo(a.output_dir, model=a.model, device=a.device, progress=_progress, notice=_notice)
    return 0


def cmd_batch(a: argparse.Namespace) -> int:
    """Register many pairs on Dask; exit status 1 when any pair failed."""
    from .batch.runner import BatchConfig, atlas_pairs, check_config, read_pairs_csv, run_batch
    from .bundles import with_task
    if bool(a.pairs) == bool(a.moving_list):
        raise_input("give either --pairs pairs.csv or --fixed ATLAS --moving-list subjects.txt")
    if a.moving_list and not a.fixed:
        raise_input("--moving-list needs --fixed ATLAS")
    if a.pairs and (a.fixed or a.fixed_labels):
        raise_input("--fixed/--fixed-labels go with --moving-list; with --pairs, put them in the CSV")
    from .safeio import check_folder_writable
    check_folder_writable(a.output_dir, "--output-dir")
    pairs = read_pairs_csv(a.pairs) if a.pairs else atlas_pairs(a.fixed, a.moving_list, a.fixed_labels)
    cfg = BatchConfig(model=with_task(a.model, a.task), device=a.device, refine=a.refine, write_warped=a.warped,
                      write_warped_labels=a.warped_labels, workers=a.workers,
                      threads_per_worker=a.threads_per_worker, scheduler=a.scheduler,
                      folding_spacing_mm=a.folding_spacing)
    check_config(cfg)  # e.g. --folding-spacing 0: before any pair is registered
    try:
        rep = run_batch(pairs, a.output_dir, cfg, progress=not a.no_progress, notice=_notice)
    except KeyboardInterrupt:
        _eprint(f"\n[deepreg] batch interrupted: finished pairs are kept in {a.output_dir}/pairs; "
                "run the same command again to do the rest")
        return 130
    c, run = rep.summary["counts"], rep.summary["run"]
    rate = f", {run['pairs_per_min']} pairs/min on {run['workers']} workers" if "pairs_per_min" in run else ""
    _eprint(f"[deepreg] batch: {c['ok']} ok, {c['failed']} failed, {c['skipped']} skipped "
            f"in {run['wall_s']:.1f} s{rate}")
    for f in rep.summary["failures"]:
        _eprint(f"[deepreg]   failed {f['id']}: {f['message']}")
    _eprint(f"[deepreg] summary: {rep.output_dir / 'summary.csv'}, {rep.output_dir / 'summary.json'}")
    return 1 if c["failed"] else 0


def raise_input(msg: str):
    from .errors import InputError
    raise InputError(msg)


def add_refine_options(p: argparse.ArgumentParser) -> None:
    """``--refine`` / ``--network-only``; neither: the model card's default refinement (``refine=None``)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--refine", dest="refine", action="store_const", const=True, default=None,
                   help="full per-pair optimisation of the network's mapping (~10 s, most accurate)")
    g.add_argument("--network-only", dest="refine", action="store_const", const=False,
                   help="the network's mapping alone, without the model's default few-step refinement")


def add_task_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default=None, help="for a model made for several tasks (e.g. universal): which one "
                   "(brain, prostate, ct; default: the model's first); the same as --model NAME:TASK")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deepreg", description="DeepReg: fast learned deformable registration. "
                                "Transforms map fixed physical points to moving points (ITK resampling convention, LPS).")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("register", help="register a moving image to a fixed image")
    r.add_argument("--fixed", required=True, help="fixed image (NIfTI, NRRD, MHA, ...)")
    r.add_argument("--moving", required=True, help="moving image")
    r.add_argument("--output-transform", required=True, help="output ITK transform (.h5): fixed -> moving points")
    r.add_argument("--output-warped", help="optional: moving image resampled onto the fixed grid")
    r.add_argument("--moving-labels", help="optional: moving label map to warp (nearest neighbour)")
    r.add_argument("--output-warped-labels", help="output for the warped --moving-labels")
    r.add_argument("--model", default=None, help="model bundle name or folder (see 'deepreg models')")
    add_task_option(r)
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: CUDA if available, CPU fallback on out-of-memory")
    r.add_argument("--mode", default="deformable", choices=["affine", "rigid", "deformable"],
                   help="affine: the affine stage only (a linear transform); rigid: a rotation and a shift only "
                        "(the same subject scanned twice); both end with a 2 mm level")
    add_refine_options(r)
    r.add_argument("--fixed-mask", help="optional mask on the fixed image (non-zero = inside): restricts the similarity")
    r.add_argument("--moving-mask", help="optional mask on the moving image (non-zero = inside)")
    r.set_defaults(func=cmd_register)

    w = sub.add_parser("warp", help="apply a transform file to an image or label map")
    w.add_argument("--input", required=True, help="image to resample (the moving image's space)")
    w.add_argument("--reference", required=True, help="image defining the output grid (the fixed image)")
    w.add_argument("--transform", required=True, help="ITK transform file (fixed -> moving)")
    w.add_argument("--output", required=True)
    w.add_argument("--labels", action="store_true", help="nearest-neighbour interpolation for label maps")
    w.set_defaults(func=cmd_warp)

    e = sub.add_parser("evaluate", help="Dice / HD95 / folding between a fixed and a warped label map")
    e.add_argument("--fixed-labels", required=True)
    e.add_argument("--warped-labels", required=True, help="label map already on the fixed grid")
    e.add_argument("--transform", help="optional transform file: report %% folding and SDlogJ")
    e.add_argument("--hd95", action="store_true", help="also compute mean HD95 (mm; slower)")
    e.add_argument("--output", help="also write the JSON here")
    e.set_defaults(func=cmd_evaluate)

    d = sub.add_parser("demo", help="register the bundled sample brains; print Dice and write files + PNGs")
    d.add_argument("--output-dir", default="deepreg-demo")
    d.add_argument("--model", default=None)
    d.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    d.add_argument("--task", default="brain", choices=["brain", "prostate"],
                   help="brain: the sample T1 brains; prostate: the sample MR -> ultrasound pair")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("batch", help="register many pairs on Dask (local processes or a cluster), resumable",
                       description="Register many pairs on Dask. Outputs go to OUT/pairs/<id>/ (transform.h5, ...) "
                       "and OUT/summary.csv/.json/_dice_time.png. Re-running skips the pairs already done. "
                       "Exit status 1 when any pair failed.")
    b.add_argument("--pairs", help="CSV with columns fixed,moving[,moving_labels,fixed_labels,id] "
                   "(relative paths: relative to the CSV)")
    b.add_argument("--fixed", help="atlas form: the one fixed image")
    b.add_argument("--fixed-labels", help="atlas form: the atlas label map (Dice needs it)")
    b.add_argument("--moving-list", help="atlas form: text file, one moving image per line [,its label map]")
    b.add_argument("--output-dir", required=True, help="output folder (re-use it to resume)")
    b.add_argument("--model", default=None, help="model bundle name or folder (see 'deepreg models')")
    add_task_option(b)
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_refine_options(b)
    b.add_argument("--warped", action="store_true", help="also write each warped moving image")
    b.add_argument("--warped-labels", action="store_true", help="also write each warped moving label map")
    b.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: CPU cores / threads per worker)")
    b.add_argument("--threads-per-worker", type=int, default=1,
                   help="CPU threads of each registration (torch + ITK); each worker registers one pair at a time")
    b.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler (tcp://host:8786) "
                   "instead of a local cluster")
    b.add_argument("--folding-spacing", type=float, default=1.0, metavar="MM",
                   help="grid (mm) of the %% folding / SDlogJ check done when labels are given; 1 = as "
                   "'deepreg evaluate', 2 is ~8x cheaper")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_batch)

    m = sub.add_parser("models", help="list the bundled models")
    m.add_argument("--json", action="store_true", help="print the full model cards")
    m.set_defaults(func=cmd_models)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    from .errors import DeepRegWarning
    if issubclass(category, DeepRegWarning):
        _eprint(f"deepreg: warning: {message}")
    else:
        _eprint(warnings.formatwarning(message, category, filename, lineno, line).rstrip())


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command. Bad input or an unusable file location: ``deepreg: error: ...`` (one line) and
    exit status 2, raised before any long work; the engine's warnings as ``deepreg: warning: ...``."""
    args = build_parser().parse_args(argv)
    from .errors import DeepRegError, DeepRegWarning
    from .safeio import describe_os_error
    with warnings.catch_warnings():
        warnings.simplefilter("always", DeepRegWarning)
        warnings.showwarning = _show_warning
        try:
            return int(args.func(args) or 0)
        except DeepRegError as exc:
            _eprint("deepreg: error: " + " ".join(str(exc).split()))
            return 2
        except OSError as exc:  # a file that cannot be read or written (disk full, permissions, ...)
            _eprint(f"deepreg: error: {describe_os_error(exc)}")
            return 2
        except MemoryError:
            _eprint("deepreg: error: out of memory")
            return 3


#: one-shot commands whose process may end without the interpreter's teardown once their outputs are written
QUICK_EXIT_COMMANDS = ("register", "warp", "evaluate", "models")


def finish(argv: List[str], rc: int) -> None:
    """End the process with status ``rc``. After a one-shot command (outputs written, files closed) the
    streams are flushed and the process exits at once: the interpreter's teardown of torch and ITK took
    0.6-0.7 s of a ~3 s ``deepreg register`` here. Other commands (``batch``: Dask) exit normally."""
    if argv and argv[0] in QUICK_EXIT_COMMANDS:
        import logging
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


def run() -> None:
    """The ``deepreg`` console entry point: :func:`main`, then :func:`finish`."""
    argv = sys.argv[1:]
    finish(argv, main(argv))


if __name__ == "__main__":
    run()
