"""Choose a model's affine stage on validation: known-answer error and inter-subject Dice of the default call.

For each candidate affine stage (the card's, or the card's plus a fine level), on the validation brains:

* the known-answer pairs of ``bench_precision.py`` (identical, rigid, smooth deformations of ~2/5/8 mm; 3
  Mindboggle + 2 IXI brains): median over pairs of the mean mapping error (mm) of ``register()`` (default
  call), and the largest displacement of an identical pair;
* the 6 ordered Mindboggle validation pairs of ``bench_register.py``: mean subcortical / cortical Dice of the
  default call, and the median seconds of the affine stage (``timings['affine']``, noisy under load).

``--update-card NAME`` writes candidate NAME's settings into the model card's ``affine_stage`` together with the
command and these measurements (``affine_stage.tuned``).

    python benchmarks/tune_affine.py --model ldr_brain_v3 --candidates card fine2 --out benchmarks/results/tune_affine
"""
from __future__ import annotations

import argparse
import ast
import itertools
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_precision as bp  # noqa: E402
from bench_register import VALIDATION, subject  # noqa: E402

from DeepRegLib import known_motion as km  # noqa: E402
from DeepRegLib.affine import AffineConfig  # noqa: E402
from DeepRegLib.bundles import DEFAULT_MODEL, load_bundle, update_card  # noqa: E402
from DeepRegLib.inference import register  # noqa: E402
from DeepRegLib.metrics import dice_summary  # noqa: E402

#: candidate name -> changes to the card's affine stage
CANDIDATES = {"card": {}, "fine2": {"fine_spacing": 2.0}, "fine2_s10": {"fine_spacing": 2.0, "fine_sampling_fraction": 0.1}}


def _top_level_parts(text: str) -> list:
    """``text`` split at the commas outside any parentheses or brackets (those inside belong to a value)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch in "([") - (ch in ")]")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


def parse_candidate(name: str, named: Optional[dict] = None) -> dict:
    """A candidate's changes to the card's settings: a name in ``named`` (``'card'`` -> {}), or
    ``'a=1,b=(2, 1)'`` -> {'a': 1, 'b': (2, 1)} (values as Python literals)."""
    named = {"card": {}} if named is None else named
    if name in named:
        return dict(named[name])
    changes = {}
    for part in _top_level_parts(name):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"expected one of {sorted(named)} or KEY=VALUE[,KEY=VALUE...], got {name!r}")
        changes[key.strip()] = ast.literal_eval(value.strip())
    return changes


def known_answer(bundle, acfg: Optional[AffineConfig] = None, n_ixi: int = 2, **call) -> dict:
    """Medians over the known-answer pairs of the default call's mean error (mm), per kind of pair, and the
    largest displacement of an identical pair; ``call``: more ``register()`` arguments (e.g. ``refine=``)."""
    errors: dict = {}
    identical_max = 0.0
    for n, (name, image) in enumerate(bp.subjects(n_ixi)):
        for pair in bp.make_pairs(image, name, seed=100 * (n + 1)):
            pts = km.brain_points(pair.fixed, step=2, threshold=0.0)
            res = register(pair.fixed, pair.moving, model=bundle, device="cpu", affine_config=acfg, **call)
            err = km.mapping_error(res.map_points(pts), pair.truth, pts)
            kind = pair.name.split("/")[1]
            errors.setdefault(kind, []).append(err["mean"])
            if kind == "identical":
                identical_max = max(identical_max, err["max"])
            print(f"[tune] {pair.name}: {err['mean']:.3f} mm", flush=True)
    out = {k: statistics.median(v) for k, v in errors.items()}
    out["identical_max"] = identical_max
    return out


def inter_subject(bundle, acfg: Optional[AffineConfig] = None, **call) -> dict:
    """Mean subcortical / cortical Dice of the default call over the 6 ordered validation pairs and the median
    seconds of its stages (``<stage>_s``: affine, refine, total; noisy under load); ``call`` as
    :func:`known_answer`."""
    dice: dict = {"subcortical": [], "cortical": []}
    seconds: dict = {"affine": [], "refine": [], "total": []}
    for fs, ms in itertools.permutations(VALIDATION, 2):
        F, M = subject(fs), subject(ms)
        fixed = sitk.ReadImage(str(F["image"]), sitk.sitkFloat32)
        moving = sitk.ReadImage(str(M["image"]), sitk.sitkFloat32)
        res = register(fixed, moving, model=bundle, device="cpu", affine_config=acfg, **call)
        d = dice_summary(sitk.ReadImage(str(F["labels"])), res.warp_labels(sitk.ReadImage(str(M["labels"]))))
        for k in dice:
            dice[k].append(d[k])
        for k in seconds:
            seconds[k].append(res.timings.get(k, 0.0))
    return {**{f"dice_{k}": statistics.fmean(v) for k, v in dice.items()},
            **{f"{k}_s": statistics.median(v) for k, v in seconds.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--candidates", nargs="+", default=["card", "fine2"],
                    help=f"names ({', '.join(sorted(CANDIDATES))}) or KEY=VALUE[,KEY=VALUE...] changes to the card's stage")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "tune_affine")
    ap.add_argument("--update-card", metavar="NAME", default=None, help="write this candidate into the card")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(a.threads)
    bundle = load_bundle(a.model)
    card = AffineConfig.from_card(bundle.card.get("affine_stage"))
    command = "python benchmarks/tune_affine.py " + " ".join(argv if argv is not None else sys.argv[1:])
    changes = {name: parse_candidate(name, CANDIDATES) for name in a.candidates}
    if a.update_card and a.update_card not in changes:
        raise SystemExit(f"--update-card: expected one of the candidates {a.candidates}, got {a.update_card!r}")
    results = {}
    for name in a.candidates:
        acfg = replace(card, **changes[name])
        results[name] = {"settings": changes[name], **known_answer(bundle, acfg), **inter_subject(bundle, acfg)}
        print(f"[tune_affine] {name}: {json.dumps({k: round(v, 4) for k, v in results[name].items() if isinstance(v, float)})}",
              flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps({"model": a.model, "command": command, "results": results}, indent=1))
    kinds = ["identical", "rigid", "deformed-2", "deformed-5", "deformed-8"]
    lines = [f"# Affine stage of `{a.model}` on validation (default call)", "", f"`{command}`", "",
             "| candidate | " + " | ".join(f"{k} (mm)" for k in kinds) + " | identical max (mm) | Dice sub / cort | affine s |",
             "|---|" + "---|" * (len(kinds) + 3)]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in kinds) + f" | {r['identical_max']:.3f} | "
                     f"{r['dice_subcortical']:.3f} / {r['dice_cortical']:.3f} | {r['affine_s']:.2f} |")
    lines += ["", "Known-answer columns: median over pairs of the mean error over the fixed brain (the pairs of "
              "`bench_precision.py`); Dice: mean over the 6 ordered validation pairs; affine s: median seconds of the "
              "affine stage (in process, on a loaded machine when marked so in RESULTS)."]
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if a.update_card:
        chosen = results[a.update_card]
        stage = dict(bundle.card.get("affine_stage") or {})
        stage.update(changes[a.update_card])
        stage["tuned"] = {"by": command, "chosen": a.update_card, "measured": results,
                          "what": "known-answer medians (mm) and inter-subject Dice of the default call on validation"}
        update_card(bundle, {"affine_stage": stage})
        print(f"[tune_affine] {a.model}: affine stage {a.update_card} written ({chosen['settings']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
