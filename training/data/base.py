"""Pairs on network grids, with their labels and their geometry.

A :class:`PairSet` holds ``N`` prepared pairs: fixed and moving images (float16,
``(N, D, H, W)`` = (z, y, x) array order), optional label maps (int16, same shape)
and, for every pair, the :class:`DeepRegLib.grid.Grid` the arrays live on (LPS mm).
Augmentation is expressed in physical terms (e.g. "flip left-right") and turned into
an array axis through the grid, never through an unstated array-axis fact.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from DeepRegLib.grid import Grid

#: physical LPS axes: 0 = L-R (x), 1 = P-A (y), 2 = S-I (z)
PHYSICAL_AXES = {"LR": 0, "AP": 1, "SI": 2}


@dataclass
class PairSet:
    fixed: np.ndarray  # (N, D, H, W) float16 in [0, 1]
    moving: np.ndarray  # (N, D, H, W) float16, after the affine stage
    grids: List[Grid]  # one per pair
    fixed_labels: Optional[np.ndarray] = None  # (N, D, H, W) int16
    moving_labels: Optional[np.ndarray] = None
    pairs: Optional[List[tuple]] = None  # (fixed id, moving id)
    flows: Optional[np.ndarray] = None  # (N, 3, D, H, W) float16 known fixed -> moving flow (voxels), synthetic tasks

    def __len__(self) -> int:
        return int(self.fixed.shape[0])

    @property
    def has_labels(self) -> bool:
        return self.fixed_labels is not None and self.moving_labels is not None

    def subset(self, index: Sequence[int]) -> "PairSet":
        idx = list(index)
        pick = (lambda a: None if a is None else a[idx])
        return PairSet(self.fixed[idx], self.moving[idx], [self.grids[i] for i in idx],
                       pick(self.fixed_labels), pick(self.moving_labels),
                       None if self.pairs is None else [self.pairs[i] for i in idx], pick(self.flows))


def flip_axis(grid: Grid, physical: str = "LR", direction: Optional[np.ndarray] = None) -> int:
    """Array axis (of a ``(B, C, D, H, W)`` tensor, i.e. 2, 3 or 4) along the physical axis ``physical``.

    ``direction`` is the grid's 3x3 direction matrix (columns = index axes i, j, k in LPS);
    network grids have the identity. Index axis ``a`` is array axis ``4 - a``.
    """
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=float).reshape(3, 3)
    index_axis = int(np.argmax(np.abs(d[PHYSICAL_AXES[physical], :])))
    return 4 - index_axis


def make_batch(data: PairSet, index: Sequence[int], device: torch.device | str = "cpu",
               flips: Optional[Sequence[bool]] = None) -> Dict[str, torch.Tensor]:
    """Stack pairs ``index`` as float32 tensors ``(B, 1, D, H, W)`` (labels int64), flipping left-right where asked.

    Returns ``fixed``, ``moving``, optionally ``fixed_labels``/``moving_labels``, ``index`` and
    ``flipped`` (``(B,)``, on the CPU: which pairs, flipped or not) and ``spacing`` (the grid
    spacing in mm, array order z, y, x; all pairs of a set share it).
    """
    idx = list(index)
    out: Dict[str, torch.Tensor] = {
        "fixed": torch.from_numpy(data.fixed[idx].astype(np.float32))[:, None],
        "moving": torch.from_numpy(data.moving[idx].astype(np.float32))[:, None],
    }
    if data.has_labels:
        out["fixed_labels"] = torch.from_numpy(data.fixed_labels[idx].astype(np.int64))[:, None]
        out["moving_labels"] = torch.from_numpy(data.moving_labels[idx].astype(np.int64))[:, None]
    if flips is not None:
        for b, (i, f) in enumerate(zip(idx, flips)):
            if f:
                ax = flip_axis(data.grids[i], "LR")
                for k in list(out):
                    out[k][b] = out[k][b].flip(ax - 1)  # per-sample tensor (C, D, H, W): axis shifts by one
    out = {k: v.to(device) for k, v in out.items()}
    # which prepared pairs, and whether each was flipped (keys of per-pair caches, e.g. teacher flows)
    out["index"] = torch.tensor(idx, dtype=torch.int64)
    out["flipped"] = torch.tensor([bool(f) for f in flips] if flips is not None else [False] * len(idx))
    out["spacing"] = torch.tensor(data.grids[idx[0]].spacing[::-1], dtype=torch.float32)
    return out
