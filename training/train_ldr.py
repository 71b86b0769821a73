"""Train an LDR student (recursive cascades) unsupervised on cached Mindboggle pairs.

Loss: ``1 - CorrCoef(fixed, warped) + lambda * smoothness`` (the seed's reconstruction
loss plus a diffusion regulariser on every cascade's flow).  Checkpoints every
``--val-every`` steps to ``<run>/last.pt`` and keeps the best validation-Dice model
in ``<run>/best.pt``; rerunning the same command resumes.

Example::

    python -m training.train_ldr --run training/runs/ldr_brain_v1 --cascades 2 --minutes 60
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from DeepRegLib.metrics import dice_scores
from DeepRegLib.models import build_network, count_parameters
from DeepRegLib.pipeline import InputSpec
from DeepRegLib.spatial import folding_percent, warp
from training.data import REPO, TRAIN_SUBJECTS, VALIDATION_SUBJECTS, get_cache
from training.losses import correlation_coefficient_loss, local_ncc_loss, smoothness_loss


@dataclass
class TrainConfig:
    run: str = "training/runs/ldr_brain_v1"
    architecture: str = "ldr"
    cascades: int = 2
    spacing: float = 2.0
    size: tuple = (80, 96, 80)
    similarity: str = "cc"  # 'cc' (seed) or 'lncc'
    ncc_window: int = 9  # voxels of the network grid, for 'lncc'
    init: str = ""  # checkpoint whose weights start a fresh run (fine-tuning); ignored on resume
    smooth_weight: float = 0.5
    lr: float = 1e-4
    steps: int = 100000
    minutes: float = 60.0
    val_every: int = 200
    seed: int = 0
    threads: int = 2


def validate(net: torch.nn.Module, val, device: str = "cpu") -> dict:
    """Mean Dice over labels present in both (network grid, nearest), and % folding, on validation pairs."""
    net.eval()
    dices, folds = [], []
    with torch.no_grad():
        for i in range(len(val.pairs)):
            f = torch.from_numpy(val.fixed[i].astype(np.float32))[None, None]
            m = torch.from_numpy(val.moving[i].astype(np.float32))[None, None]
            flow, _ = net(f, m)
            ml = torch.from_numpy(val.moving_labels[i].astype(np.float32))[None, None]
            wl = warp(ml, flow, mode="nearest").numpy()[0, 0].astype(np.int32)
            fl = val.fixed_labels[i].astype(np.int32)
            d = dice_scores(fl, wl)
            dices.append(float(np.mean(list(d.values()))))
            folds.append(folding_percent(flow))
    net.train()
    return {"dice": float(np.mean(dices)), "folding_percent": float(np.mean(folds))}


def affine_only_dice(val) -> float:
    return float(np.mean([np.mean(list(dice_scores(val.fixed_labels[i].astype(np.int32),
                                                    val.moving_labels[i].astype(np.int32)).values()))
                          for i in range(len(val.pairs))]))


def train(cfg: TrainConfig) -> Path:
    torch.set_num_threads(cfg.threads)
    run = Path(cfg.run)
    if not run.is_absolute():
        run = REPO / run
    run.mkdir(parents=True, exist_ok=True)
    spec = InputSpec(spacing=cfg.spacing, size=tuple(cfg.size))
    cache_dir = REPO / "training" / "cache"
    train_set = get_cache("train", spec, cache_dir)
    val_set = get_cache("val", spec, cache_dir)
    net = build_network(cfg.architecture, cfg.cascades)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    state = {"step": 0, "best_dice": -1.0, "history": []}
    last = run / "last.pt"
    if last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state = ck["state"]
        print(f"resumed at step {state['step']} (best val Dice {state['best_dice']:.4f})", flush=True)
    else:
        if cfg.init:
            ck = torch.load(REPO / cfg.init if not Path(cfg.init).is_absolute() else cfg.init,
                            map_location="cpu", weights_only=False)
            net.load_state_dict(ck["model"])
            state["init"] = {"checkpoint": cfg.init, "step": ck["state"]["step"],
                             "best_dice": ck["state"]["best_dice"]}
            state["init"]["validation"] = validate(net, val_set)
            print(f"initialised from {cfg.init} (step {ck['state']['step']}): {state['init']['validation']}",
                  flush=True)
        state["affine_only_dice"] = affine_only_dice(val_set)
        print(f"affine-only validation Dice (grid): {state['affine_only_dice']:.4f}", flush=True)
    (run / "config.json").write_text(json.dumps({**asdict(cfg), "size": list(cfg.size),
                                                 "train_subjects": TRAIN_SUBJECTS,
                                                 "validation_subjects": VALIDATION_SUBJECTS,
                                                 "parameters": count_parameters(net)}, indent=2))
    if cfg.similarity == "cc":
        sim = correlation_coefficient_loss
    elif cfg.similarity == "lncc":
        sim = lambda a, b: local_ncc_loss(a, b, window=cfg.ncc_window)  # noqa: E731
    else:
        raise ValueError(f"unknown similarity {cfg.similarity!r}")
    rng = np.random.default_rng(cfg.seed + state["step"])
    t_start = time.time()
    running = []
    net.train()
    while state["step"] < cfg.steps and (time.time() - t_start) < cfg.minutes * 60:
        i = int(rng.integers(len(train_set.pairs)))
        f = torch.from_numpy(train_set.fixed[i].astype(np.float32))[None, None]
        m = torch.from_numpy(train_set.moving[i].astype(np.float32))[None, None]
        if rng.random() < 0.5:  # left-right flip of both images (array axis 2 is L-R on the LPS grid)
            f, m = f.flip(4), m.flip(4)
        flow, flows = net(f, m)
        warped = warp(m, flow)
        loss_sim = sim(f, warped)
        loss_reg = sum(smoothness_loss(fl) for fl in flows)
        loss = loss_sim + cfg.smooth_weight * loss_reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["step"] += 1
        running.append([float(loss_sim.detach()), float(loss_reg.detach())])
        if state["step"] % cfg.val_every == 0:
            v = validate(net, val_set)
            rec = {"step": state["step"], "sim": float(np.mean([r[0] for r in running])),
                   "reg": float(np.mean([r[1] for r in running])), **v,
                   "elapsed_min": (time.time() - t_start) / 60}
            running = []
            state["history"].append(rec)
            print(json.dumps(rec), flush=True)
            ck = {"model": net.state_dict(), "optimizer": opt.state_dict(), "state": state, "config": asdict(cfg)}
            if v["dice"] > state["best_dice"]:
                state["best_dice"] = v["dice"]
                torch.save({**ck, "state": state}, run / "best.pt.tmp")
                os.replace(run / "best.pt.tmp", run / "best.pt")
            torch.save(ck, run / "last.pt.tmp")
            os.replace(run / "last.pt.tmp", last)
            (run / "history.json").write_text(json.dumps(state, indent=1))
    return run


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = TrainConfig()
    for k, v in asdict(d).items():
        if isinstance(v, tuple):
            p.add_argument(f"--{k.replace('_', '-')}", type=int, nargs=3, default=list(v))
        else:
            p.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v)
    a = vars(p.parse_args(argv))
    a["size"] = tuple(a["size"])
    train(TrainConfig(**a))


if __name__ == "__main__":
    main()
