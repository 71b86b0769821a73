"""A teacher that is a network followed by per-pair instance optimisation (the engine's Refine).

On the validation brains ``ldr_brain_v1 + refine`` scores 0.666 / 0.553 subcortical / cortical Dice
against the network's 0.634 / 0.491 (benchmarks/results/bench_register.md): a teacher clearly
better than the student, which no trained RCN teacher here was. Its flow costs ~10 s per pair, so
each training pair is refined once and kept:

* on disk, ``<cache>/refined_teacher/<key>/<pair>.pt`` (float16 voxel flow on the
  network grid), where ``key`` (:func:`flows_key`) hashes the teacher's weights file, the Refine
  settings and the training data's configuration: a resumed run, or another student distilled from
  the same refined teacher on the same pairs, reuses them (in memory, the distill strategy's
  per-(pair, flip) teacher cache holds them);
* for the left-right flipped pair, the stored flow is flipped (:func:`flip_flow`), not refined again:
  if ``phi`` registers ``(fixed, moving)``, ``F o phi o F`` registers the flipped pair exactly.

Flows are in voxels on the network grid, channel ``c`` along array axis ``c`` (DeepRegLib.spatial).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import torch

from DeepRegLib.grid import Grid
from DeepRegLib.refine import RefineConfig, refine_flow

from ..data.base import flip_axis
from ..data.cache import cache_key, file_identity


#: data settings that only change what a training step does with a stored pair (flips, augmentation),
#: not the pairs the flows are refined on: left out of :func:`flows_key`
STEP_ONLY_DATA = ("flip_lr", "augment_affine", "warp_fixed")


def flows_key(teacher_files: Sequence[Path], data_config: dict, config: Optional[RefineConfig]) -> str:
    """Content key of a set of refined teacher flows: the teacher's weight files (name, size, mtime),
    the training data's configuration (which pairs, which grid; not :data:`STEP_ONLY_DATA`) and the
    Refine settings (None: the network's own flows, not refined)."""
    data = {k: v for k, v in data_config.items() if k not in STEP_ONLY_DATA}
    return cache_key({"teacher": [file_identity(Path(f)) for f in teacher_files], "data": data,
                      "refine": None if config is None else config.to_dict()})


def flows_folder(teacher: Path, data_config: dict, cache_dir: Path,
                 config: Optional[RefineConfig] = RefineConfig()) -> Path:
    """Where the refined flows of ``teacher`` (a bundle or run folder, or a checkpoint file) on the pairs of
    ``data_config`` (a :class:`training.config.DataConfig` as a dict) are kept: ``<cache_dir>/refined_teacher/<key>``
    (``<cache_dir>/teacher_flows/<key>`` for the network's own flows, ``config=None``)."""
    teacher = Path(teacher)
    files = sorted(teacher.glob("best.pt") if (teacher / "best.pt").exists() else teacher.glob("*.pt")) \
        if teacher.is_dir() else [teacher]
    return Path(cache_dir) / ("refined_teacher" if config is not None else "teacher_flows") / \
        flows_key(files, data_config, config)


def flip_flow(flow: torch.Tensor, axis: int) -> torch.Tensor:
    """The voxel flow ``(3, D, H, W)`` of the pair flipped along array axis ``axis`` (2, 3 or 4 of a
    ``(B, C, D, H, W)`` tensor): ``u'(p) = F(p + u(F p)) - p`` with ``F`` the flip, i.e. the field is
    mirrored and its component along the flipped axis changes sign."""
    a = int(axis) - 2
    out = flow.flip(a + 1).clone()
    out[a] = -out[a]
    return out


class RefinedTeacherFlows:
    """``flow(key, fixed, moving, teacher, spacing)``: the teacher's flow refined, computed once per pair.

    ``key`` is ``(pair index, flipped)``; ``fixed``/``moving`` ``(1, 1, D, H, W)`` are the batch's
    (possibly flipped) images; ``teacher(fixed, moving)`` returns the network's ``(1, 3, D, H, W)``
    flow; ``spacing`` is the grid spacing in mm (array order, isotropic).

    ``config=None`` keeps the network's own flows, not refined (``strategy.teacher_store``: a large
    frozen teacher runs once per pair for every student distilled from it). A network is not
    flip-equivariant, so then each (pair, flip) is computed and stored on its own.
    """

    def __init__(self, folder: Path, grids: Sequence[Grid], config: Optional[RefineConfig] = RefineConfig()) -> None:
        self.folder = Path(folder)
        self.grids = list(grids)
        self.config = config
        self.computed = 0  # pairs refined by this process (the rest came from disk or a flip)

    def _path(self, pair: int) -> Path:
        return self.folder / f"{pair:05d}.pt"

    def _unflipped(self, pair: int) -> torch.Tensor | None:
        path = self._path(pair)
        return torch.load(path, weights_only=True).float() if path.exists() else None

    def _network_flow(self, pair: int, flipped: bool, fixed: torch.Tensor, moving: torch.Tensor,
                      teacher: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The network's own flow of the pair as given (flipped or not), stored once per (pair, flip)."""
        path = self.folder / f"{pair:05d}{'_flipped' if flipped else ''}.pt"
        if path.exists():
            return torch.load(path, weights_only=True).float()
        flow = teacher(fixed, moving)[0].detach().cpu().half()
        self._store(path, flow)
        return flow.float()

    def _store(self, path: Path, flow: torch.Tensor) -> None:
        """Write ``flow`` to ``path`` atomically (another run may read the folder at the same time)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{id(self)}")
        torch.save(flow, tmp)
        tmp.replace(path)
        self.computed += 1

    def flow(self, key: Tuple[int, bool], fixed: torch.Tensor, moving: torch.Tensor,
             teacher: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], spacing: torch.Tensor) -> torch.Tensor:
        pair, flipped = int(key[0]), bool(key[1])
        if self.config is None:
            return self._network_flow(pair, flipped, fixed, moving, teacher)
        axis = flip_axis(self.grids[pair], "LR")
        base = self._unflipped(pair)
        if base is None:
            if flipped:  # refine the pair as it is given, then store it unflipped
                fixed, moving = fixed.flip(axis), moving.flip(axis)
            sp = [float(s) for s in spacing.tolist()]
            if max(sp) - min(sp) > 1e-6:
                raise ValueError(f"refined teacher: the network grid must be isotropic, got spacing {sp} mm")
            with torch.enable_grad():
                out = refine_flow(fixed.float(), moving.float(), teacher(fixed, moving).float(), sp[0], self.config)
            base = out.flow[0].detach().cpu().half()
            self._store(self._path(pair), base)
            base = base.float()
        return flip_flow(base, axis) if flipped else base
