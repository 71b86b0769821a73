"""Choose RefineConfig settings on the 6 validation pairs as a whole (medians over pairs).

Caches, per ordered pair of subjects 17, 18, 19, the affine stage and the network's flow, then runs
the refinement with each candidate setting and reports median subcortical / cortical Dice, % folding
(det J <= 0 on the 2 mm grid inside the fixed brain) and median refinement seconds (2 threads).

    python benchmarks/tune_refine.py [--model M] [--configs NAME ...] [--out JSON] [--update-card NAME]

``--update-card NAME`` writes setting NAME (one of those run) into the model card's ``refinement`` block as
the refinement ``register()`` runs by default, with the medians measured here and this command;
``--update-card-full NAME`` writes it as the card's full refinement (``refine=True``, ``--refine``).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from DeepRegLib import transforms as tr  # noqa: E402
from DeepRegLib.bundles import load_bundle  # noqa: E402
from DeepRegLib.inference import RegistrationResult, _predict  # noqa: E402
from DeepRegLib.metrics import dice_summary  # noqa: E402
from DeepRegLib.pipeline import prepare_pair  # noqa: E402
from DeepRegLib.affine import AffineConfig  # noqa: E402
from DeepRegLib.refine import RefineConfig, refine_flow  # noqa: E402
from DeepRegLib.qa import transform_folding  # noqa: E402
from DeepRegLib.spatial import folding_percent  # noqa: E402

SHARED = REPO.parent / "shared" / "data" / "brain-mindboggle-oasis-trt20"

CONFIGS = {
    "default": RefineConfig(),
    "w14_l1_lr.5_s20_i4": RefineConfig(ncc_window_mm=14, smooth_weight=1, learning_rate=0.5, max_steps=20, integration_steps=4),
    "w10_l1_lr.5_s20_i4": RefineConfig(ncc_window_mm=10, smooth_weight=1, learning_rate=0.5, max_steps=20, integration_steps=4),
    "w18_l1_lr.5_s20_i4": RefineConfig(ncc_window_mm=18, smooth_weight=1, learning_rate=0.5, max_steps=20, integration_steps=4),
    "w14_l.3_lr.5_s20_i4": RefineConfig(ncc_window_mm=14, smooth_weight=0.3, learning_rate=0.5, max_steps=20, integration_steps=4),
    "w14_l3_lr.5_s20_i4": RefineConfig(ncc_window_mm=14, smooth_weight=3, learning_rate=0.5, max_steps=20, integration_steps=4),
    "w14_l1_lr.25_s30_i4": RefineConfig(ncc_window_mm=14, smooth_weight=1, learning_rate=0.25, max_steps=30, integration_steps=4),
    # few-step settings for a refinement inside the ~1 s budget of register()
    "w10_l1_lr.5_s4_i0": RefineConfig(max_steps=4, integration_steps=0, patience=100),
    "w10_l1_lr1_s4_i0": RefineConfig(max_steps=4, learning_rate=1.0, integration_steps=0, patience=100),
    "w10_l1_lr.5_s2_i2": RefineConfig(max_steps=2, integration_steps=2, patience=100),
    "w10_l1_lr.5_s8_i0": RefineConfig(max_steps=8, integration_steps=0, patience=100),
    # full refinements (--refine): the card's exact local NCC, the identity start, then a pyramid of control grids
    # (8, 4, 2 mm; 15 steps each) from the network's flow smoothed by a Gaussian (s<mm>) or as it is
    "full_single": RefineConfig(ncc_eps=1e-12, ncc_min_std=0.03, identity_start=True),
    **{f"pyramid_l{sw:g}_s{sm:g}": RefineConfig(
        ncc_eps=1e-12, ncc_min_std=0.03, identity_start=True, integration_steps=0, patience=100, min_delta=0.0,
        smooth_weight=sw, max_steps=15, learning_rate=0.15, pyramid=((4, 15, 0.5), (2, 15, 0.3)),
        start_smoothing_mm=sm) for sw, sm in ((4, 6), (6, 6), (8, 6), (6, 0))},
}


def config_from_name(name: str) -> RefineConfig:
    """A setting named like the keys of CONFIGS: ``w<window mm>_l<smooth>_lr<lr>_s<steps>_i<squarings>``,
    optionally ``_c<control_factor>`` (velocity on a grid that many times coarser), ``_p<coarse_steps>``
    (steps first on the pair pooled x2), and ``_mind`` or ``_mi`` (MIND-SSC descriptors or mutual information
    instead of local NCC)."""
    if name in CONFIGS:
        return CONFIGS[name]
    keys = {"w": "ncc_window_mm", "l": "smooth_weight", "lr": "learning_rate", "s": "max_steps",
            "i": "integration_steps", "c": "control_factor", "p": "coarse_steps"}
    values = {}
    for part in name.split("_"):
        if part in ("mind", "mi"):
            values["similarity"] = part
            continue
        key = "lr" if part.startswith("lr") else part[0]
        if key not in keys:
            raise SystemExit(f"cannot read setting {name!r}: unknown part {part!r}")
        text = part[len(key):]
        values[keys[key]] = int(text) if key in ("s", "i", "c", "p") else float(text)
    # few steps: keep every step (no plateau stop)
    return RefineConfig(patience=max(6, values.get("max_steps", 20) + values.get("coarse_steps", 0) + 1), **values)


def load_pairs(model=None):
    bundle = load_bundle(model)
    acfg = AffineConfig.from_card(bundle.card.get("affine_stage"))
    out = []
    for fs, ms in itertools.permutations([17, 18, 19], 2):
        F, M = SHARED / f"OASIS-TRT-20-{fs}", SHARED / f"OASIS-TRT-20-{ms}"
        fixed = sitk.ReadImage(str(F / "t1weighted_brain.nii.gz"), sitk.sitkFloat32)
        moving = sitk.ReadImage(str(M / "t1weighted_brain.nii.gz"), sitk.sitkFloat32)
        prep = prepare_pair(fixed, moving, bundle.input_spec, acfg)
        flow, _ = _predict(bundle, prep.fixed, prep.moving, "cpu", False)
        out.append(dict(pair=(fs, ms), fixed=fixed, prep=prep, flow=flow,
                        fl=sitk.ReadImage(str(F / "labels.DKT31.manual+aseg.nii.gz")),
                        ml=sitk.ReadImage(str(M / "labels.DKT31.manual+aseg.nii.gz"))))
    return out


def evaluate(p, flow) -> dict:
    prep = p["prep"]
    disp = tr.taper_border(tr.flow_to_displacement(flow, prep.grid))
    res = RegistrationResult(p["fixed"], prep.affine, disp, prep.grid, "tune", "cpu")
    d = dice_summary(p["fl"], res.warp_labels(p["ml"]))
    mask = torch.from_numpy((prep.fixed > 0.05).astype(np.float32))[None, None]
    one_mm = transform_folding(res.transform(), p["fixed"], 1.0, p["fixed"] > 0)  # as bench_register measures it
    return {**d, "folding_percent": folding_percent(flow.double(), mask),
            "folding_percent_1mm": one_mm["folding_percent"], "sdlogj_1mm": one_mm["sdlogj"]}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", nargs="*", default=None,
                    help="names from CONFIGS or of the form w10_l1_lr.5_s4_i0")
    ap.add_argument("--model", default=None, help="bundle name or folder (default: the default model)")
    ap.add_argument("--update-card", metavar="NAME", default=None,
                    help="make setting NAME the model's default refinement (written into its card)")
    ap.add_argument("--update-card-full", metavar="NAME", default=None,
                    help="make setting NAME the model's full refinement (--refine), written into its card")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "refine_tuning.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(2)
    bundle = load_bundle(a.model)
    names = a.configs if a.configs is not None else list(CONFIGS)
    results = json.loads(a.out.read_text()) if a.out.exists() else {}
    if results and results["network"].get("model", bundle.name) != bundle.name:
        raise SystemExit(f"{a.out} holds results of model {results['network']['model']!r}, not {bundle.name!r}")
    command = "python benchmarks/tune_refine.py " + " ".join(argv if argv is not None else sys.argv[1:])
    pairs = load_pairs(a.model) if names or "network" not in results else []
    if "network" not in results:
        rows = [evaluate(p, p["flow"]) for p in pairs]
        results["network"] = {"config": None, "rows": rows, "model": bundle.name}
    for name in names:
        cfg = config_from_name(name)
        rows = []
        for p in pairs:
            t = lambda x: torch.from_numpy(x)[None, None]
            out = refine_flow(t(p["prep"].fixed), t(p["prep"].moving), p["flow"], 2.0, cfg)
            rows.append({**evaluate(p, out.flow), "seconds": out.seconds, "steps": out.steps})
        results[name] = {"config": cfg.to_dict(), "rows": rows, "command": command}
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(results, indent=1))
        print(line(name, results[name]), flush=True)
    print(line("network", results["network"]))
    md = [f"Refinement settings tried for model `{bundle.name}` on the 6 validation pairs (subjects 17, 18, 19), "
          "medians over pairs, 2 threads (seconds: the refinement alone; only comparable within one table, "
          f"the machine's 1-minute load average was {os.getloadavg()[0]:.1f} at the end). Table written by "
          f"`{command}`; the command "
          f"that measured each setting is stored with it in `{a.out.name}`.", "",
          "| setting | Dice subcortical | Dice cortical | % folding (2 mm grid, median / max) | % folding at 1 mm "
          "(median / max) | SDlogJ 1 mm | seconds | steps |",
          "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        md.append(table_row(name, r))
    a.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    if a.update_card:
        if a.update_card not in results:
            raise SystemExit(f"--update-card {a.update_card}: not among the settings run ({sorted(results)})")
        write_card_refinement(bundle, a.update_card, results, command)
        print(f"[tune_refine] chosen: {a.update_card}")
    if a.update_card_full:
        if a.update_card_full not in results:
            raise SystemExit(f"--update-card-full {a.update_card_full}: not among the settings run ({sorted(results)})")
        write_card_full_refinement(bundle, a.update_card_full, results, command)


def medians(rows) -> dict:
    keys = ("subcortical", "cortical", "folding_percent", "folding_percent_1mm", "sdlogj_1mm", "seconds", "steps")
    return {k: statistics.median(r[k] for r in rows) for k in keys if all(k in r for r in rows)}


def write_card_refinement(bundle, name: str, results: dict, command: str) -> None:
    """The card's ``refinement`` block (``DeepRegLib.bundles.bundle.REFINEMENT_KEY``): the default setting and its measurements."""
    from DeepRegLib.bundles import REFINEMENT_KEY, update_card
    path = update_card(bundle, {REFINEMENT_KEY: {
        "default": results[name]["config"],
        "what": "register() runs this per-pair refinement after the network unless told otherwise "
                "(refine=False / --network-only: the network alone; refine=True / --refine: the full Refine)",
        "measured_by": results[name].get("command"),
        "written_by": command,
        "validation": {"pairs": len(results[name]["rows"]), "subjects": [17, 18, 19], "statistic": "median over pairs",
                       "folding": "folding_percent: % det J <= 0 on the 2 mm network grid inside the fixed brain; folding_percent_1mm: "
                   "of the transform sampled at 1 mm inside the fixed brain (as benchmarks/bench_register.py)",
                       "network": medians(results["network"]["rows"]), "refined": medians(results[name]["rows"]),
                       "settings_tried": {k: medians(v["rows"]) for k, v in results.items() if k != "network"}},
    }})
    print(f"[tune_refine] {bundle.name}: default refinement {name} written to {path}")


def write_card_full_refinement(bundle, name: str, results: dict, command: str) -> None:
    """The card's ``refinement.full`` (what ``register(refine=True)`` runs) and ``full_validation`` (its medians here)."""
    from DeepRegLib.bundles import REFINEMENT_KEY, update_card
    block = dict(bundle.card.get(REFINEMENT_KEY) or {})
    block["full"] = results[name]["config"]
    block["full_validation"] = {
        "setting": name, "pairs": len(results[name]["rows"]), "subjects": [17, 18, 19], "statistic": "median over pairs",
        "network": medians(results["network"]["rows"]), "refined": medians(results[name]["rows"]),
        "settings_tried": {k: medians(v["rows"]) for k, v in results.items() if k != "network"},
        "measured_by": results[name].get("command"), "written_by": command}
    path = update_card(bundle, {REFINEMENT_KEY: block})
    print(f"[tune_refine] {bundle.name}: full refinement {name} written to {path}")


def _median_of(rows):
    """``k -> median over pairs`` of :func:`medians`, NaN for a key some row lacks."""
    values = medians(rows)
    return lambda k: values.get(k, float("nan"))


def table_row(name, r) -> str:
    rows = r["rows"]
    m = _median_of(rows)
    cfg = r.get("config") or {}
    desc = name if not cfg else (f"window {cfg['ncc_window_mm']:g} mm, smooth {cfg['smooth_weight']:g}, lr {cfg['learning_rate']:g}, "
                                 f"max {cfg['max_steps']} steps, {cfg['integration_steps']} squarings"
                                 + (f", velocity every {cfg['control_factor']} voxels" if cfg.get("control_factor", 1) > 1 else "")
                                 + (f", {cfg['coarse_steps']} steps at 4 mm first" if cfg.get("coarse_steps", 0) else "")
                                 + (f", pyramid {cfg['pyramid']}" if cfg.get("pyramid") else "")
                                 + (f", start smoothed {cfg['start_smoothing_mm']:g} mm" if cfg.get("start_smoothing_mm") else "")
                                 + (", MIND-SSC" if cfg.get("similarity") == "mind" else ""))
    one = (f"{m('folding_percent_1mm'):.4f} / {max(x['folding_percent_1mm'] for x in rows):.4f} | {m('sdlogj_1mm'):.2f}"
           if all("folding_percent_1mm" in x for x in rows) else "n/a | n/a")
    return (f"| {desc} | {m('subcortical'):.4f} | {m('cortical'):.4f} | {m('folding_percent'):.4f} / "
            f"{max(x['folding_percent'] for x in rows):.4f} | {one} | {m('seconds'):.1f} | {m('steps'):g} |")


def line(name, r) -> str:
    rows = r["rows"]
    m = _median_of(rows)
    return (f"{name:>14}: sub {m('subcortical'):.4f} cort {m('cortical'):.4f} fold% {m('folding_percent'):.4f} "
            f"max fold% {max(x['folding_percent'] for x in rows):.4f} fold% 1mm {m('folding_percent_1mm'):.4f} "
            f"sdlogj {m('sdlogj_1mm'):.2f} s {m('seconds'):.1f} steps {m('steps')}")


if __name__ == "__main__":
    main()
