"""Instance optimisation ("Refine"): optimise the network's mapping for one pair.

Starting from the network's voxel flow ``u`` on its 2 mm LPS grid, a stationary velocity
field ``v`` on the same grid is optimised so that the moving image warped by

    total = u o (id + exp(v))        (``spatial.compose(u, exp(v))``)

matches the fixed image under a local normalised cross-correlation (windows of
``ncc_window_mm``, separable box filters) or, for pairs of different modalities, under the mean
absolute difference of MIND-SSC descriptors (``similarity='mind'``, :mod:`DeepRegLib.similarity.mind`) or the
normalised mutual information of the two images (``similarity='mi'``, :mod:`DeepRegLib.similarity.mutualinfo`),
with a diffusion regulariser on ``v`` in
physical units (``|grad v|^2`` with ``v`` in mm and derivatives per mm, i.e. dimensionless).
``exp(v)`` is integrated by scaling and squaring, so the refinement is diffeomorphic by
construction; the network's own field is kept as it is.  Adam, early stop on a loss plateau.
With ``integration_steps=0`` the velocity is used as a displacement (no squaring): ~4x cheaper
per step and no longer diffeomorphic by construction, which is how a model card's few-step
default refinement runs (see :func:`card_refinement`; its folding is measured, not assumed).

With ``fine_steps`` a last level computes the similarity on the pair sampled at half the grid's spacing
(``fine``: a :class:`FinePair`, 1 mm for the 2 mm brain grid, from the images as they are) while its velocity
stays on the grid's own voxels: the grid's 2 mm samples cannot show the sub-voxel misalignment that a 1 mm
image still has, and the result stays a field on the network's grid.

Tensor conventions are those of :mod:`DeepRegLib.spatial`: ``(B, C, z, y, x)``, flows in voxels.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

from .errors import InputError
from .similarity import SIMILARITIES, Similarity
from .models.lowres import downsample, upsample_flow
from .spatial import compose, gaussian_smooth, integrate_velocity, resize_flow, warp
from .names import look_up_option


@dataclass(frozen=True)
class RefineConfig:
    """Settings of the per-pair refinement (lengths in mm, on the network's grid).

    The defaults were chosen on the 6 validation pairs of subjects 17, 18, 19 as a whole, medians
    over pairs (``benchmarks/results/refine_tuning.md``): 20 steps of 0.5 mm with 10 mm windows
    took the network from 0.636 / 0.482 to 0.666 / 0.533 (subcortical / cortical Dice); 14 mm
    windows gave 0.666 / 0.530.  A step (80 x 96 x 80 grid) cost 0.6 s in an isolated profile on 2
    cores and up to 2.8 s on the shared machine of the benchmark (README, *Accuracy and speed*).
    A model card's few-step default (:func:`card_refinement`) uses ``integration_steps=0`` and
    ``control_factor=2`` (one velocity vector per 2 voxels, 4 mm, trilinearly upsampled): with one per
    voxel, Adam's first sign-like steps leave voxel-scale roughness that folds when the field is
    read at 1 mm (``benchmarks/results/refine_quick_ldr_brain_v2.md``).
    """

    max_steps: int = 20              # Adam steps at most
    learning_rate: float = 0.5       # mm of velocity per step (Adam's step size)
    ncc_window_mm: float = 10.0      # local NCC window edge (mm); 5 voxels at 2 mm
    smooth_weight: float = 1.0       # weight of mean |grad v|^2 (dimensionless) against 1 - LNCC
    integration_steps: int = 4       # scaling-and-squaring steps (velocity / 16, then 4 squarings)
    patience: int = 6                # stop when the loss has not improved by min_delta for this many steps
    min_delta: float = 2e-4
    progress_every: int = 2          # call progress every this many steps
    seed: int = 0
    control_factor: int = 1          # velocity on a grid this many times coarser, trilinearly upsampled (1: every voxel)
    coarse_steps: int = 0            # steps first on the pair average-pooled x2 (velocity every coarse voxel), 0: none
    pyramid: Tuple[Tuple[int, int, float], ...] = ()  # coarser levels first, each (control_factor, steps,
    # learning_rate) on the full-resolution pair, composed in turn; then this config's own level. A smooth
    # residual is found on few control points before the fine grid refines it (as ANTs' multi-resolution SyN)
    similarity: str = "ncc"          # 'ncc': local NCC (one modality) | 'mind': MIND-SSC descriptors | 'mi': mutual information
    optimizer: str = "adam"          # 'adam' | 'normalised': gradient steps scaled so the largest moves learning_rate mm
    adam_eps_relative: float = 0.0   # > 0: Adam's eps is this fraction of the first step's largest gradient component
    # (0: torch's 1e-8). Adam's first steps are sign-like: with eps far below the gradients (a mean over ~600k voxels
    # gives components of 1e-9..1e-4), a control point with almost no signal moves a full learning_rate; a suspect,
    # not an established cause, for the default refinement's CPU/CUDA difference (up to 2.8 mm inside the brain)
    ncc_eps: float = 1e-5            # local NCC: cov^2 / (var_f * var_m + ncc_eps); window means of [0, 1] images, so
    # a flat region's var_f * var_m (~1e-8) is far below 1e-5, and a warp that adds variance there raises the NCC
    ncc_min_std: float = 0.0         # > 0: only windows whose fixed standard deviation exceeds this count; with a tiny
    # ncc_eps the NCC is then at most 1 and highest for identical images (0: every window, the older measure)
    identity_start: bool = False     # start from no deformation when that scores better than the network's flow
    # (similarity, plus smooth_weight x the diffusion of the network's whole deformation)
    identity_optimizer: str = "normalised"  # the optimizer of a refinement started from no deformation (an
    # unchanged anatomy: only what the images ask for may move; see NormalisedDescent)
    identity_smoothing_mm: float = 0.0  # > 0: identity_start compares the two starts on both images smoothed by a
    # Gaussian of this standard deviation (mm), and a refinement that starts from no deformation runs on them.
    # Warping resamples: a fractional displacement blurs the moving image by trilinear interpolation, which scores
    # better against a blurrier fixed image whatever the displacement (on a 2 mm same-subject pair, interpolation
    # blur alone lowered 1 - LNCC from 0.061 to 0.045, more than the network's deformation did)
    identity_refines: bool = True    # False: when no deformation matches better than the network's flow, it is the
    # result (the affine stage alone, no step taken). A few steps on a 2 mm grid cannot resolve the ~0.1 mm a
    # rigid stage leaves, and they fit resampling differences as readily as anatomy (a same-subject rigid pair:
    # 4 steps lowered the loss 0.0053 -> 0.0019 and raised the error 0.098 -> 0.143 mm)
    fine_steps: int = 0              # > 0: a last level of this many steps whose similarity is computed at half the
    # grid's spacing (FinePair: e.g. 1 mm images for the 2 mm grid), a velocity per grid voxel (see refine_flow)
    fine_learning_rate: float = 0.1  # mm per step of that level
    start_smoothing_mm: float = 0.0  # > 0: the network's flow smoothed by a Gaussian of this standard deviation (mm)
    # before refining: the network's voxel-scale noise (sub-millimetre, asked for by no image) is not carried on

    def __post_init__(self) -> None:
        look_up_option(self.similarity, SIMILARITIES, "refinement similarity", InputError)
        look_up_option(self.optimizer, OPTIMIZERS, "refinement optimizer", InputError)
        look_up_option(self.identity_optimizer, OPTIMIZERS, "refinement optimizer", InputError)
        object.__setattr__(self, "pyramid", tuple((int(c), int(n), float(lr)) for c, n, lr in self.pyramid))
        if any(c < 1 or n < 1 or lr <= 0 for c, n, lr in self.pyramid):
            raise InputError(f"refinement pyramid levels must be (control_factor >= 1, steps >= 1, learning_rate > 0), "
                             f"got {self.pyramid}")
        for name in ("start_smoothing_mm", "identity_smoothing_mm", "adam_eps_relative"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if (self.max_steps < 1 or self.control_factor < 1 or self.integration_steps < 0 or self.ncc_window_mm <= 0
                or self.coarse_steps < 0 or self.fine_steps < 0 or self.fine_learning_rate <= 0):
            raise InputError(f"refinement settings out of range: max_steps {self.max_steps} and control_factor "
                             f"{self.control_factor} must be >= 1, integration_steps {self.integration_steps} and "
                             f"coarse_steps {self.coarse_steps} and fine_steps {self.fine_steps} >= 0, ncc_window_mm "
                             f"{self.ncc_window_mm} and fine_learning_rate {self.fine_learning_rate} > 0")

    def to_dict(self) -> dict:
        return asdict(self)

    def measure(self, spacing: float) -> Similarity:
        """The similarity this refinement optimises on a grid of ``spacing`` mm (the NCC window in voxels:
        ``ncc_window_mm / spacing``, odd, at least 3)."""
        return Similarity(self.similarity, window=max(3, int(round(self.ncc_window_mm / spacing)) | 1),
                          eps=self.ncc_eps if self.similarity == "ncc" else None, min_std=self.ncc_min_std)

    @classmethod
    def from_dict(cls, values: dict) -> "RefineConfig":
        """The config with ``values`` replacing defaults; unknown keys are an :class:`InputError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown refinement setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


@dataclass
class RefineOutcome:
    """Result of :func:`refine_flow`: the refined total voxel flow (or the input when cancelled)."""

    flow: torch.Tensor               # (1, 3, z, y, x) voxels, fixed -> moving
    steps: int
    losses: List[float]
    cancelled: bool
    seconds: float
    started_from_identity: bool = False  # the affine stage alone matched better than the network's flow
    stalled: bool = False            # no step lowered the loss below its start: the start is the result
    start_note: str = ""             # a line for the log when the start was not the network's flow


@dataclass
class FinePair:
    """The pair for a refinement's fine level: ``(1, 1, 2z - 1, 2y - 1, 2x - 1)`` tensors on the network grid's
    lattice refined twice (the same origin, half the spacing: voxel ``2i`` of the fine grid is voxel ``i`` of
    the grid), normalised as the grid's; ``moving`` (and ``moving_mask``) already through the affine stage.
    :func:`DeepRegLib.pipeline.prepare_fine` samples it from the images."""

    fixed: torch.Tensor
    moving: torch.Tensor
    mask: Optional[torch.Tensor] = None
    moving_mask: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        shape = tuple(self.fixed.shape)
        for name in ("moving", "mask", "moving_mask"):
            other = getattr(self, name)
            if other is not None and tuple(other.shape) != shape:
                raise InputError(f"fine pair: expected {name} of shape {shape} (as fixed), got {tuple(other.shape)}")

    def matches(self, flow: torch.Tensor) -> bool:
        """Whether this pair is on ``flow``'s grid refined twice (``2n - 1`` voxels per axis)."""
        return tuple(self.fixed.shape[2:]) == tuple(2 * n - 1 for n in flow.shape[2:])

    def to(self, device) -> "FinePair":
        return FinePair(*(None if t is None else t.to(device)
                          for t in (self.fixed, self.moving, self.mask, self.moving_mask)))


OPTIMIZERS = ("adam", "normalised")
#: loss changes below this are float32 rounding, not a better match (MIND's real gains are ~1e-4 per step)
LOSS_TOLERANCE = 1e-6


class NormalisedDescent:
    """Gradient descent whose step is scaled so that the largest update vector is ``lr`` long (as ANTs
    normalises its SyN updates): voxels move in proportion to their gradient, so flat or noisy regions,
    whose gradients are small, stay where they are (Adam's first steps move every voxel by ``lr``,
    whatever the size of its gradient, which invents sub-millimetre deformation on same-subject pairs).
    ``param`` ``(1, 3, ...)`` holds vectors along dimension 1."""

    def __init__(self, param: torch.Tensor, lr: float) -> None:
        self.param, self.lr = param, lr

    @torch.no_grad()
    def step(self) -> None:
        g = self.param.grad
        largest = float(g.norm(dim=1).max())
        if largest > 0:
            self.param.add_(g, alpha=-self.lr / largest)


class Adam:
    """Adam on one tensor, the update of ``torch.optim.Adam`` (default betas and eps, no weight decay).

    Written out because constructing ``torch.optim.Adam`` the first time in a process imports
    ``torch._dynamo`` (~1 s on 2 cores), which would double a first few-step refinement (the CLI's).
    """

    def __init__(self, param: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 eps_relative: float = 0.0) -> None:
        self.param, self.lr, (self.beta1, self.beta2), self.eps = param, lr, betas, eps
        self.eps_relative = eps_relative  # > 0: eps = max(eps, eps_relative x the first gradient's largest |component|)
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        g = self.param.grad
        if self.t == 0 and self.eps_relative > 0:
            self.eps = max(self.eps, self.eps_relative * float(g.abs().max()))
        self.t += 1
        self.exp_avg.lerp_(g, 1 - self.beta1)
        self.exp_avg_sq.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
        step_size = self.lr / (1 - self.beta1 ** self.t)
        denom = (self.exp_avg_sq.sqrt() / (1 - self.beta2 ** self.t) ** 0.5).add_(self.eps)
        self.param.addcdiv_(self.exp_avg, denom, value=-step_size)


def diffusion(v_mm: torch.Tensor, spacing: float) -> torch.Tensor:
    """Mean ``|grad v|^2`` of a mm-valued field on an isotropic grid of ``spacing`` mm (per mm)."""
    dz = (v_mm[:, :, 1:] - v_mm[:, :, :-1]) / spacing
    dy = (v_mm[:, :, :, 1:] - v_mm[:, :, :, :-1]) / spacing
    dx = (v_mm[..., 1:] - v_mm[..., :-1]) / spacing
    return (dz.pow(2).mean() + dy.pow(2).mean() + dx.pow(2).mean())


class _Bindings:
    """The similarity bound to a fixed image, once per (measure, fixed, weight) within one refinement: the
    fixed image's statistics (local means and variances, descriptors) do not change between the start's
    losses and the levels on the same grid. Holds its tensors, so the ids in its keys stay theirs."""

    def __init__(self) -> None:
        self._bound: dict = {}

    def __call__(self, measure: Similarity, fixed: torch.Tensor, weight: Optional[torch.Tensor]):
        key = (measure, id(fixed), None if weight is None else id(weight))
        if key not in self._bound:
            self._bound[key] = (measure.bind(fixed, weight), fixed, weight)
        return self._bound[key][0]


def refine_flow(fixed: torch.Tensor, moving: torch.Tensor, flow: torch.Tensor, spacing: float,
                config: RefineConfig = RefineConfig(), mask: Optional[torch.Tensor] = None,
                moving_mask: Optional[torch.Tensor] = None,
                progress: Optional[Callable[[float], None]] = None,
                cancel: Optional[Callable[[], bool]] = None,
                similarity: Optional[Similarity] = None, fine: Optional[FinePair] = None) -> RefineOutcome:
    """Refine the voxel ``flow`` ``(1, 3, z, y, x)`` of one pair on an isotropic grid of ``spacing`` mm.

    ``similarity``: the measure to optimise, the same object training's composite loss takes
    (:class:`~DeepRegLib.similarity.Similarity`); None: the config's (:meth:`RefineConfig.measure`, its
    NCC window in millimetres, so in voxels per level).

    ``fixed`` and ``moving`` are ``(1, 1, z, y, x)`` normalised intensities on that grid (``moving``
    already through the affine stage); ``mask`` restricts the similarity (fixed grid), ``moving_mask``
    (on the same grid as ``moving``) is warped with it.  ``progress(fraction)`` every
    ``config.progress_every`` steps; ``cancel()`` polled every step: when it returns True the input
    ``flow`` is returned with ``cancelled=True``. With ``config.start_smoothing_mm`` the refinement starts
    from ``flow`` smoothed by that Gaussian (standard deviation in mm), and the result builds on it. With
    ``config.identity_start`` it starts from no deformation when that scores better than the network's flow (by
    the similarity plus the regulariser on the flow; with ``config.identity_smoothing_mm`` both compared, and
    such a refinement run, on the images smoothed by that Gaussian).  Deterministic for a given device and thread count.

    With ``config.coarse_steps`` the first steps run on the pair average-pooled x2 (``2 * spacing`` mm,
    a velocity per coarse voxel, the moving image warped by ``flow`` at full resolution first); their
    displacement is upsampled cell-centred (:func:`~DeepRegLib.models.lowres.upsample_flow`) and
    composed after ``flow`` before the full-resolution steps.  With ``config.pyramid`` each of its levels
    ``(control_factor, steps, learning_rate)`` runs next on the full-resolution pair, its displacement composed
    after the flow so far.  Steps and losses count every level.

    With ``config.fine_steps`` and a ``fine`` pair (:class:`FinePair`, half the spacing), a last level of that
    many steps (``config.fine_learning_rate`` mm each) runs after the others: the moving image at half the spacing
    warped by the flow so far (upsampled, corner-aligned) against the fixed image at half the spacing, with a
    velocity per grid voxel trilinearly upsampled; its displacement read at every 2nd fine voxel composes on the grid
    (exactly the optimised one with ``integration_steps=0``, as the cards' refinements run; with scaling and
    squaring at half the spacing, its samples there). Without a ``fine`` pair the level is skipped (the images are no
    finer than the grid).  The fine pair of a refinement that starts from no deformation is smoothed as the
    grid's pair (``identity_smoothing_mm``).
    """
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    bindings = _Bindings()
    flow = network_flow = flow.detach()
    if config.start_smoothing_mm:
        flow = gaussian_smooth(flow, config.start_smoothing_mm / spacing)
    from_identity, start_note = False, ""
    first_start = None  # the moving image warped by the first level's start flow, when already computed
    if config.identity_start:
        with torch.no_grad():
            zero = torch.zeros_like(flow)
            first_start = warp(moving, flow)
            compared = (fixed, moving, first_start)
            if config.identity_smoothing_mm:  # the interpolation blur of a warp is no better match
                compared = tuple(gaussian_smooth(x, config.identity_smoothing_mm / spacing) for x in compared)
            at_network, at_identity = _start_losses(*compared, flow, spacing, config, mask, moving_mask, similarity,
                                                    bindings)
        if at_identity < at_network:  # strictly: a zero network flow (affine only) is not a new start
            flow, from_identity = zero, True
            why = f"it matches better than the network's deformation (loss {at_identity:.4f} vs {at_network:.4f})"
            if not config.identity_refines:
                start_note = f"refinement starts from the affine stage alone and keeps it: {why}; no refinement step"
                return RefineOutcome(flow, 0, [at_identity], False, time.perf_counter() - t0, True, False, start_note)
            fixed, moving = compared[:2]  # an unchanged anatomy: refined on the images it was chosen on
            first_start = moving
            config = replace(config, optimizer=config.identity_optimizer)
            start_note = f"refinement starts from the affine stage alone: {why}; {config.optimizer} steps"
    if fine is not None and not fine.matches(flow):
        raise InputError(f"fine pair: expected shape {tuple(2 * n - 1 for n in flow.shape[2:])} (twice the grid's "
                         f"{tuple(flow.shape[2:])}, corner-aligned), got {tuple(fine.fixed.shape[2:])}")
    if fine is not None and from_identity and config.identity_smoothing_mm:
        fine = FinePair(*(gaussian_smooth(x, 2 * config.identity_smoothing_mm / spacing) for x in (fine.fixed, fine.moving)),
                        fine.mask, fine.moving_mask)
    fine_steps = config.fine_steps if fine is not None else 0
    total_steps = config.coarse_steps + sum(n for _, n, _ in config.pyramid) + config.max_steps + fine_steps
    losses: List[float] = []
    report = None if progress is None else (lambda done: progress(done / total_steps))
    levels = [(2, replace(config, max_steps=config.coarse_steps, control_factor=1))] if config.coarse_steps else []
    levels += [(1, replace(config, control_factor=c, max_steps=n, learning_rate=lr)) for c, n, lr in config.pyramid]
    improved = False  # did any level lower its loss below its own start?
    for factor, level in levels + [(1, config)]:
        first = len(losses)
        with torch.no_grad():
            # moving o A o (id + u), resampled once per level (the first level's may be computed already)
            start = first_start if first == 0 and first_start is not None else warp(moving, flow)
            weight = _weight(mask, moving_mask, flow)
        small = (lambda x: x) if factor == 1 else (lambda x: None if x is None else downsample(x, factor))
        phi, cancelled = _optimise(small(fixed), small(start), factor * spacing, level, small(weight), losses,
                                   report, cancel, similarity, bindings if factor == 1 else None)
        if cancelled:
            return RefineOutcome(network_flow, len(losses), losses, True, time.perf_counter() - t0,
                                 from_identity, False, start_note)
        improved = improved or (len(losses) > first and min(losses[first:]) < losses[first])
        if phi is not None:  # None: no finite loss (NaN), the flow is kept
            with torch.no_grad():
                flow = compose(flow, phi if factor == 1 else upsample_flow(phi, factor, flow.shape[2:]))
    if fine_steps:
        first = len(losses)
        phi, cancelled = _fine_level(fine, flow, spacing, config, losses, report, cancel)
        if cancelled:
            return RefineOutcome(network_flow, len(losses), losses, True, time.perf_counter() - t0,
                                 from_identity, False, start_note)
        improved = improved or (len(losses) > first and min(losses[first:]) < losses[first])
        if phi is not None:
            with torch.no_grad():
                flow = compose(flow, phi)
    stalled = bool(losses) and not improved
    return RefineOutcome(flow, len(losses), losses, False, time.perf_counter() - t0, from_identity, stalled,
                         start_note)


def _fine_level(fine: FinePair, flow: torch.Tensor, spacing: float, config: RefineConfig, losses: List[float],
                report, cancel):
    """The fine level of :func:`refine_flow`: ``(phi, cancelled)`` with ``phi`` the best step's displacement on
    the grid of ``flow`` (voxels of ``spacing`` mm), or None."""
    with torch.no_grad():
        up = resize_flow(flow, fine.fixed.shape[2:])  # voxels of spacing / 2
        start = warp(fine.moving, up)
        weight = _weight(fine.mask, fine.moving_mask, up)
    level = replace(config, control_factor=2, max_steps=config.fine_steps, learning_rate=config.fine_learning_rate)
    phi, cancelled = _optimise(fine.fixed, start, spacing / 2.0, level, weight, losses, report, cancel)
    if phi is None:
        return None, cancelled
    return phi[:, :, ::2, ::2, ::2] / 2.0, False  # the velocity's own grid points, in voxels of ``spacing``


def _start_losses(fixed: torch.Tensor, moving: torch.Tensor, warped: torch.Tensor, flow: torch.Tensor,
                  spacing: float, config: RefineConfig, mask: Optional[torch.Tensor],
                  moving_mask: Optional[torch.Tensor], similarity: Optional[Similarity],
                  bindings: _Bindings) -> Tuple[float, float]:
    """``(at_network, at_identity)``: the losses identity_start compares. ``warped`` is ``moving`` warped by
    the network's voxel ``flow``. The network's start pays the refinement's regulariser on its whole
    deformation (mm, per mm): a deformation that only fits noise or a bias field does not beat no deformation."""
    at_network = (_loss_of(fixed, warped, flow, spacing, config, mask, moving_mask, similarity, bindings)
                  + config.smooth_weight * float(diffusion(flow * spacing, spacing)))
    at_identity = _loss_of(fixed, moving, torch.zeros_like(flow), spacing, config, mask, moving_mask,
                           similarity, bindings)  # warped by 0: itself
    return at_network, at_identity


def similarity_loss(fixed: torch.Tensor, moving: torch.Tensor, flow: torch.Tensor, spacing: float,
                    config: RefineConfig, mask: Optional[torch.Tensor] = None,
                    moving_mask: Optional[torch.Tensor] = None) -> float:
    """``1 - similarity`` of ``fixed`` and ``moving`` warped by the voxel ``flow`` ``(1, 3, z, y, x)``: the
    refinement's loss at a zero velocity (its first step's loss), on a grid of ``spacing`` mm."""
    with torch.no_grad():
        return _loss_of(fixed, warp(moving, flow), flow, spacing, config, mask, moving_mask)


def _loss_of(fixed: torch.Tensor, warped: torch.Tensor, flow: torch.Tensor, spacing: float, config: RefineConfig,
             mask: Optional[torch.Tensor], moving_mask: Optional[torch.Tensor],
             similarity: Optional[Similarity] = None, bindings: Optional[_Bindings] = None) -> float:
    """``1 - similarity`` of ``fixed`` and ``warped`` (the moving image already warped by ``flow``)."""
    weight = _weight(mask, moving_mask, flow)
    sim = (bindings or _Bindings())(similarity or config.measure(spacing), fixed, weight)
    return float(1.0 - sim(sim.prepare(warped)))


def _weight(mask: Optional[torch.Tensor], moving_mask: Optional[torch.Tensor], flow: torch.Tensor):
    """The similarity's weight on the fixed grid: ``mask`` times ``moving_mask`` warped by ``flow`` (or None)."""
    m_mask = None if moving_mask is None else (warp(moving_mask, flow) > 0.5).float()
    if m_mask is None:
        return mask
    return m_mask if mask is None else mask * m_mask


def _optimise(fixed: torch.Tensor, start: torch.Tensor, spacing: float, config: RefineConfig,
              weight: Optional[torch.Tensor], losses: List[float],
              progress: Optional[Callable[[int], None]], cancel: Optional[Callable[[], bool]],
              measure: Optional[Similarity] = None, bindings: Optional[_Bindings] = None):
    """Adam on a velocity so that ``start`` warped by its displacement matches ``fixed`` (one level;
    with MIND, the descriptors of the two are compared; with MI, their joint histogram).

    Returns ``(phi, cancelled)``: ``phi`` the best step's voxel displacement ``(1, 3, z, y, x)`` (None when
    no loss was finite or when cancelled). Each step's loss is appended to ``losses``, which may hold an
    earlier level's: ``progress(steps done)`` counts them all.
    """
    similarity = (bindings or _Bindings())(measure or config.measure(spacing), fixed, weight)
    start = similarity.prepare(start)
    shape = tuple(start.shape[2:])
    control = tuple(-(-n // config.control_factor) for n in shape)
    v_param = torch.zeros((1, 3) + control, dtype=start.dtype, device=start.device, requires_grad=True)
    opt = (Adam(v_param, lr=config.learning_rate, eps_relative=config.adam_eps_relative) if config.optimizer == "adam"
           else NormalisedDescent(v_param, lr=config.learning_rate))
    velocity = (lambda p: p) if control == shape else (
        lambda p: F.interpolate(p, size=shape, mode="trilinear", align_corners=True))
    best, best_v, since = float("inf"), None, 0
    plateau = float("inf")  # the loss the plateau rule compares with: improved by min_delta or not
    for step in range(config.max_steps):
        if cancel is not None and cancel():
            return None, True
        last = step == config.max_steps - 1  # its update would never be evaluated: the loss alone
        v_param.grad = None
        with torch.set_grad_enabled(not last):
            v_mm = velocity(v_param)
            phi = integrate_velocity(v_mm / spacing, config.integration_steps)
            sim = similarity(warp(start, phi))
            loss = (1.0 - sim) + config.smooth_weight * diffusion(v_mm, spacing)
        if not last:
            loss.backward()
        value = float(loss.detach())
        losses.append(value)
        # the lowest loss is kept, however small the gain, once it is above float32 rounding (LOSS_TOLERANCE):
        # a gain of rounding noise must not move an image that matches already
        if best_v is None or value < best - LOSS_TOLERANCE:
            best, best_v = value, v_mm.detach().clone()
        if value < plateau - config.min_delta:
            plateau, since = value, 0
        else:
            since += 1
        if since >= config.patience or last:
            break
        opt.step()
        if progress is not None and len(losses) % config.progress_every == 0:
            progress(len(losses))
    if best_v is None:
        return None, False
    with torch.no_grad():
        return integrate_velocity(best_v / spacing, config.integration_steps), False
