"""Same-subject training pairs with an exactly known answer.

A registration tool must not invent change: an image registered to itself must not move, and a
follow-up scan of the same brain must be mapped by the deformation it really underwent. The
inter-subject pairs alone teach a network a prior of inter-subject deformation instead
(``training/RESULTS.md``: it follows ~20 % of a known deformation and moves identical images by up
to 2 mm). This module turns one brain on its network grid into a pair whose fixed -> moving flow is
known exactly:

* ``moving = S`` (the subject's image), ``fixed = S o (id + psi)`` (trilinear, ``spatial.warp``), so the
  fixed -> moving voxel flow is ``psi`` itself, no inversion needed;
* ``psi`` is the residual rigid motion a rigid/affine stage leaves (``residual_rotation_deg``,
  ``residual_shift_mm``) composed with a smooth diffeomorphic deformation: a random velocity on control
  points ``control_mm`` apart (Gaussian, standard deviation ``amplitude_mm`` per axis, drawn uniformly
  in ``[0, max_amplitude_mm]``), integrated by scaling and squaring; with probability ``p_identical`` the
  pair has no motion at all (``psi = 0``), with probability ``p_rigid`` only the residual rigid motion;
* each image then gets its own acquisition changes: a gamma change of contrast, a smooth
  multiplicative bias field, Gaussian noise, and is normalised again as the engine normalises its
  inputs (percentiles of the foreground), so identical anatomy never means identical intensities
  (except for a share ``p_exact`` of the identical pairs, which are bit-identical: the ideal answer is
  the identity, exactly).

All sizes are physical (mm, degrees) and converted through the grid spacing. Shapes: images
``(B, 1, D, H, W)`` in [0, 1]; flows ``(B, 3, D, H, W)`` in voxels, channel k along array axis k.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np
import torch

from DeepRegLib.preprocess import Normalisation
from DeepRegLib.spatial import compose, integrate_velocity, warp

from ..augment import physical_to_theta, random_smooth_field, rotation_matrix


@dataclass(frozen=True)
class SameSubjectConfig:
    """How same-subject pairs are drawn (see the module docstring)."""

    p_identical: float = 0.2          # no motion at all
    p_exact: float = 0.5              # of the identical pairs: bit-identical images (no acquisition change)
    p_rigid: float = 0.2              # residual rigid motion only
    residual_rotation_deg: float = 1.0
    residual_shift_mm: float = 1.0
    max_amplitude_mm: float = 3.0     # velocity std per axis at control points, drawn in [0, max]
    control_mm: Sequence[float] = (24.0, 60.0)  # control-point spacing drawn in this range
    gamma: float = 0.25               # contrast change: intensity ** exp(U(-gamma, gamma))
    bias: float = 0.15                # std of the log bias field (control points 64 mm apart)
    noise: float = 0.03               # Gaussian noise std drawn in [0, noise] (intensities in [0, 1])


def rigid_flow(rng: np.random.Generator, shape: Sequence[int], spacing_zyx: Sequence[float],
               max_rotation_deg: float, max_shift_mm: float) -> torch.Tensor:
    """Voxel flow ``(1, 3, D, H, W)`` of a random rigid motion about the grid's centre:
    ``p -> R p + t`` (rotation ``U(-max, max)`` degrees about each axis, shift ``U(-max, max)`` mm)."""
    d, h, w = (int(s) for s in shape)
    angles = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, 3))
    shift = rng.uniform(-max_shift_mm, max_shift_mm, 3)
    theta = physical_to_theta(rotation_matrix(angles), shift, shape, spacing_zyx)[None]
    grid = torch.nn.functional.affine_grid(theta, [1, 1, d, h, w], align_corners=False)  # normalised (x, y, z)
    ident = torch.nn.functional.affine_grid(torch.eye(3, 4)[None], [1, 1, d, h, w], align_corners=False)
    delta = (grid - ident)[0]  # (D, H, W, 3) in normalised units, components x, y, z
    scale = torch.tensor([w / 2.0, h / 2.0, d / 2.0])  # normalised -> voxels (align_corners=False)
    vox = delta * scale
    return torch.stack([vox[..., 2], vox[..., 1], vox[..., 0]])[None].float()


def smooth_diffeomorphic_flow(rng: np.random.Generator, shape: Sequence[int], spacing_zyx: Sequence[float],
                              amplitude_mm: float, control_mm: float, steps: int = 6) -> torch.Tensor:
    """Voxel flow ``(1, 3, D, H, W)`` of ``exp(v)``, ``v`` a random smooth velocity
    (:func:`training.augment.random_smooth_field`), integrated by scaling and squaring (invertible)."""
    v = random_smooth_field(rng, shape, spacing_zyx, amplitude_mm, control_mm)
    return integrate_velocity(v, steps)


def acquisition_change(image: np.ndarray, rng: np.random.Generator, cfg: SameSubjectConfig,
                       spacing_zyx: Sequence[float], normalisation: Normalisation) -> np.ndarray:
    """``image`` ``(D, H, W)`` in [0, 1] with a gamma change, a smooth bias field and noise, normalised again."""
    out = np.clip(image.astype(np.float32), 0.0, 1.0)
    out = out ** np.float32(math.exp(rng.uniform(-cfg.gamma, cfg.gamma)))
    if cfg.bias > 0:
        log_bias = random_smooth_field(rng, out.shape, spacing_zyx, cfg.bias, 64.0)[0, 0]
        log_bias = log_bias * torch.tensor(float(spacing_zyx[0]))  # the field is divided by the spacing: undo
        out = out * np.exp(log_bias.numpy()).astype(np.float32)
    sigma = rng.uniform(0.0, cfg.noise)
    if sigma > 0:
        foreground = out > 0
        noise = rng.normal(0.0, sigma, out.shape).astype(np.float32)
        out = np.where(foreground | (rng.random() < 0.5), out + noise, out)  # half the time noise everywhere
        out = np.clip(out, 0.0, None)
    if not np.any(out > out.min()):
        return image.astype(np.float32)
    return normalisation.apply(out)


def pair_images(source: torch.Tensor, psi: torch.Tensor, exact: bool, rng: np.random.Generator,
                cfg: SameSubjectConfig, spacing_zyx: Sequence[float], normalisation: Normalisation):
    """``(fixed, moving)`` ``(D, H, W)`` float32 tensors of one known pair made from ``source`` ``(1, 1, D, H, W)``:
    ``fixed = source o (id + psi)``, ``moving = source``; ``exact``: both bit-identical to ``source`` (``psi`` must
    be 0), else each with its own :func:`acquisition_change`."""
    if exact:
        fa = ma = source[0, 0].cpu().numpy()
    else:
        warped = warp(source, psi.to(source.device)) if psi.abs().max() > 0 else source
        fa = acquisition_change(warped[0, 0].cpu().numpy(), rng, cfg, spacing_zyx, normalisation)
        ma = acquisition_change(source[0, 0].cpu().numpy(), rng, cfg, spacing_zyx, normalisation)
    return (torch.from_numpy(np.ascontiguousarray(fa, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(ma, dtype=np.float32)))


def same_subject_batch(batch: Dict[str, torch.Tensor], rng: np.random.Generator, cfg: SameSubjectConfig,
                       normalisation: Normalisation = Normalisation()) -> Dict[str, torch.Tensor]:
    """A batch of same-subject pairs made from ``batch['fixed']`` (each pair's fixed brain on its grid).

    Returns a new dict: ``fixed``, ``moving`` ``(B, 1, D, H, W)``, ``known_flow`` ``(B, 3, D, H, W)``
    (voxels, fixed -> moving, exact), ``spacing``; labels are dropped (the answer is the flow).
    """
    source = batch["fixed"].float()
    spacing = batch["spacing"].tolist()
    b, _, d, h, w = source.shape
    fixed, moving, flows = [], [], []
    for i in range(b):
        s = source[i:i + 1]
        u = rng.random()
        if u < cfg.p_identical:
            psi = torch.zeros(1, 3, d, h, w)
        else:
            psi = rigid_flow(rng, (d, h, w), spacing, cfg.residual_rotation_deg, cfg.residual_shift_mm)
            if u >= cfg.p_identical + cfg.p_rigid:
                amp = rng.uniform(0.0, cfg.max_amplitude_mm)
                ctrl = rng.uniform(*cfg.control_mm)
                psi = compose(psi, smooth_diffeomorphic_flow(rng, (d, h, w), spacing, amp, ctrl))
        # a share of the identical pairs is bit-identical: the answer is exactly the identity
        fa, ma = pair_images(s, psi, u < cfg.p_identical * cfg.p_exact, rng, cfg, spacing, normalisation)
        fixed.append(fa)
        moving.append(ma)
        flows.append(psi[0])
    device = source.device
    out = {k: v for k, v in batch.items() if k not in ("fixed_labels", "moving_labels", "fixed_warp",
                                                        "fixed_unwarped")}
    out["fixed"] = torch.stack(fixed)[:, None].to(device)
    out["moving"] = torch.stack(moving)[:, None].to(device)
    out["known_flow"] = torch.stack(flows).to(device)
    out["augmented"] = torch.tensor(True)
    return out


@dataclass
class KnownPairs:
    """Fixed validation pairs with a known answer: images ``(N, 1, D, H, W)``, flows ``(N, 3, D, H, W)``
    voxels, ``kind`` per pair ('identical' | 'rigid' | 'deformed'), ``spacing`` mm (array order)."""

    fixed: torch.Tensor
    moving: torch.Tensor
    flows: torch.Tensor
    kinds: list
    spacing: tuple


def validation_pairs(sets: Sequence, per_set: int = 4, seed: int = 1234,
                     normalisation: Normalisation = Normalisation()) -> KnownPairs:
    """Known-answer pairs from the distinct fixed brains of validation pair sets (``PairSet``): for each
    of up to ``per_set`` brains per set, an identical pair (bit-identical), a residual rigid motion and
    a smooth deformation (3 mm velocity std, 30 mm control points), with acquisition changes."""
    rng = np.random.default_rng(seed)
    cfg = SameSubjectConfig()
    fixed, moving, flows, kinds = [], [], [], []
    spacing = None
    for data in sets:
        seen, picked = set(), []
        for i, pair in enumerate(data.pairs or [(i, None) for i in range(len(data))]):
            if pair[0] not in seen:
                seen.add(pair[0])
                picked.append(i)
        for i in picked[:per_set]:
            s = torch.from_numpy(data.fixed[i].astype(np.float32))[None, None]
            spacing = tuple(data.grids[i].spacing[::-1])
            shape = s.shape[2:]
            for kind in ("identical", "rigid", "deformed"):
                if kind == "identical":
                    psi = torch.zeros(1, 3, *shape)
                else:
                    psi = rigid_flow(rng, shape, spacing, cfg.residual_rotation_deg, cfg.residual_shift_mm)
                    if kind == "deformed":
                        psi = compose(psi, smooth_diffeomorphic_flow(rng, shape, spacing, 3.0, 30.0))
                fa, ma = pair_images(s, psi, kind == "identical", rng, cfg, spacing, normalisation)
                fixed.append(fa[None])
                moving.append(ma[None])
                flows.append(psi[0])
                kinds.append(kind)
    return KnownPairs(torch.stack(fixed), torch.stack(moving), torch.stack(flows), kinds, spacing)
