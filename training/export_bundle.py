"""Export a training checkpoint as a model bundle (float16 weights + JSON model card).

Example::

    python -m training.export_bundle --checkpoint training/runs/ldr_brain_v1/best.pt \
        --name ldr_brain_v1 --out Resources/models

Accuracy and speed fields of the card are filled by ``benchmarks/bench_register.py --update-card``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from DeepRegLib.affine import AffineConfig
from DeepRegLib.models import build_network, count_parameters
from DeepRegLib.pipeline import InputSpec
from training.data import TRAIN_SUBJECTS, VALIDATION_SUBJECTS

LICENCE = ("Creative Commons BY-NC-SA 3.0, (c) 2012 Mindboggle team; OASIS data terms apply. "
           "Cite Klein & Tourville 2012, Front. Neurosci. 6:171, doi:10.3389/fnins.2012.00171.")


def export(checkpoint: Path, name: str, out: Path, command: str, description: str) -> Path:
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    cfg = ck["config"]
    net = build_network(cfg["architecture"], cfg["cascades"])
    net.load_state_dict(ck["model"])
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() for k, v in net.state_dict().items()}, folder / "weights.pt")
    spec = InputSpec(spacing=cfg["spacing"], size=tuple(cfg["size"]))
    card_path = folder / "card.json"
    old = json.loads(card_path.read_text()) if card_path.exists() else {}
    card = {
        "name": name,
        "description": description,
        "weights": "weights.pt",
        "weights_dtype": "float16 (cast to float32 on load)",
        "architecture": {"name": cfg["architecture"], "cascades": cfg["cascades"],
                         "parameters": count_parameters(net),
                         "parameters_per_cascade": count_parameters(net.subnets[0])},
        "input": {**spec.to_dict(),
                  "grid": "LPS-aligned box (identity direction) of size (x, y, z) voxels at `spacing` mm, "
                          "centred on the fixed image's foreground bounding box",
                  "channels": ["fixed (normalised)", "moving after the affine stage (normalised)"],
                  "expects": "skull-stripped T1-weighted brain MRI"},
        "output": "voxel flow on the input grid, fixed -> moving; composed of all cascades",
        "affine_stage": {"method": "SimpleITK moments init + affine, correlation metric (DeepRegLib.affine)",
                         **AffineConfig().to_dict()},
        "training": {
            "data": "Mindboggle-101 OASIS-TRT-20 T1 brains (skull-stripped, 1 mm)",
            "train_subjects": TRAIN_SUBJECTS, "validation_subjects": VALIDATION_SUBJECTS,
            "licence": LICENCE,
            "loss": f"1 - CorrCoef (global) + {cfg['smooth_weight']} x smoothness (per cascade)"
                    if cfg["similarity"] == "cc" else
                    f"1 - local NCC ({cfg.get('ncc_window', 9)}^3 window) + {cfg['smooth_weight']} x smoothness (per cascade)",
            "initialised_from": ck["state"].get("init"),
            "steps": ck["state"]["step"], "optimizer": f"Adam lr {cfg['lr']}", "batch": 1,
            "augmentation": "random left-right flip of both images",
            "selection": "best mean label Dice on the validation pairs (network grid), checked every "
                         f"{cfg['val_every']} steps",
            "validation_dice_grid": ck["state"]["best_dice"],
            "affine_only_validation_dice_grid": ck["state"].get("affine_only_dice"),
            "script": "training/train_ldr.py", "command": command,
            "export": f"python -m training.export_bundle --checkpoint {checkpoint} --name {name}",
        },
        "licence": LICENCE,
        "accuracy": old.get("accuracy", {}),
        "speed": old.get("speed", {}),
    }
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return folder


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "Resources" / "models")
    p.add_argument("--command", default="python -m training.train_ldr --run training/runs/ldr_brain_v1 "
                                        "--cascades 2 --lr 2e-4 --smooth-weight 0.5 --minutes 75")
    p.add_argument("--description", default="LDR student, 2 recursive cascades, unsupervised, T1 brain MRI at 2 mm")
    a = p.parse_args(argv)
    print(export(a.checkpoint, a.name, a.out, a.command, a.description))


if __name__ == "__main__":
    main()
