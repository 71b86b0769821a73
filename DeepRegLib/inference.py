"""Registration in one call: :func:`register` -> :class:`RegistrationResult`.

All coordinates are LPS millimetres.  The result maps fixed points to moving points
(``T(p) = A(p + u(p))``, see :mod:`DeepRegLib.transforms`), the convention of
``SimpleITK.Resample(moving, fixed, T)`` and of Slicer's "transform from parent".
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Union

import numpy as np
import SimpleITK as sitk
import torch

from . import transforms as tr
from .affine import LINEAR_KINDS, AffineConfig
from .bundles import ModelBundle, card_full_refinement, card_refinement, load_bundle
from .bundles.preflight import as_warning, preflight as run_preflight
from .errors import Cancelled, InputError
from .grid import Grid
from .imageio import ImageLike, as_image
from .pipeline import finer_than_grid, prepare_fine, prepare_pair
from .refine import FinePair, RefineConfig, refine_flow
from .names import look_up_option

__all__ = ["register", "RegistrationResult", "RefineConfig", "Cancelled", "resolve_device", "MODES", "load_network"]

#: what :func:`register` can return: a linear mapping alone ("affine", "rigid") or a deformable one
MODES = ("affine", "rigid", "deformable")
#: the last level (mm) of the linear stage when its result is the answer (affine-only and rigid modes)
PRECISE_LINEAR_SPACING = 2.0

log = logging.getLogger("DeepRegLib")
Progress = Callable[[str, float], None]

_NETWORK_CACHE: Dict[tuple, torch.nn.Module] = {}


@dataclass
class RegistrationResult:
    """Fixed -> moving mapping: affine ``A`` and displacement ``u`` (LPS mm, ``(z, y, x, 3)`` on ``grid``)."""

    fixed: sitk.Image
    affine: sitk.AffineTransform
    displacement: Optional[np.ndarray]
    grid: Optional[Grid]
    model: str
    device: str
    timings: Dict[str, float] = field(default_factory=dict)
    mode: str = "deformable"          # "affine" / "rigid": displacement and grid are None
    refined: bool = False             # the refinement ran to completion
    refine_cancelled: bool = False    # refinement was cancelled: this is the network's result
    refinement: str = "none"          # which refinement was asked for: "none", "model default", "full", "custom"
    log: List[str] = field(default_factory=list)  # human-readable lines: stages, timings, warnings

    def transform(self) -> sitk.CompositeTransform:
        """The ITK composite transform ``[A, u]`` (fixed -> moving; ``u`` an order-3 ``BSplineTransform``).

        Built once and cached (rebuilt if ``affine`` or ``displacement`` is replaced); do not modify it.
        """
        key = (id(self.displacement), id(self.affine), tuple(tr.affine_matrix(self.affine).ravel()))
        if getattr(self, "_sitk_key", None) != key:
            self._sitk, self._sitk_key = tr.to_sitk(self.affine, self.displacement, self.grid,
                                                    self.coefficients()), key
        return self._sitk

    def affine_transform(self) -> sitk.CompositeTransform:
        """The affine stage alone, as a composite (for comparisons)."""
        return tr.to_sitk(self.affine, None, None)

    def write_transform(self, path: str) -> str:
        """Write the mapping as an ITK transform file (``.h5`` composite), readable by Slicer."""
        return tr.write_transform(self.transform(), path)

    def map_points(self, points: np.ndarray) -> np.ndarray:
        """Moving LPS points of fixed LPS points ``(..., 3)`` (engine evaluation of the same B-spline as ITK's)."""
        return tr.map_points(points, self.affine, self.displacement, self.grid, self.coefficients())

    def coefficients(self) -> Optional[np.ndarray]:
        """Cubic B-spline coefficients ``(z+2, y+2, x+2, 3)`` of ``displacement`` (see :mod:`DeepRegLib.transforms`)."""
        if self.displacement is None:
            return None
        key = id(self.displacement)
        if getattr(self, "_coef_key", None) != key:
            self._coef, self._coef_key = tr.bspline_coefficients(self.displacement), key
        return self._coef

    def warp_image(self, moving: ImageLike, reference: Optional[sitk.Image] = None,
                   default: float = 0.0, affine_only: bool = False) -> sitk.Image:
        """Resample ``moving`` onto the fixed grid (or ``reference``) with ITK, trilinear."""
        m = as_image(moving, "moving")
        t = self.affine_transform() if affine_only else self.transform()
        return sitk.Resample(m, reference or self.fixed, t, sitk.sitkLinear, default, m.GetPixelID())

    def warp_labels(self, labels: ImageLike, reference: Optional[sitk.Image] = None,
                    affine_only: bool = False) -> sitk.Image:
        """Resample a label map onto the fixed grid (or ``reference``), nearest neighbour."""
        lab = labels if isinstance(labels, sitk.Image) else as_image(labels, "labels", pixel_type=None)
        t = self.affine_transform() if affine_only else self.transform()
        return sitk.Resample(lab, reference or self.fixed, t, sitk.sitkNearestNeighbor, 0, lab.GetPixelID())

    def jacobian_determinant(self) -> Optional[np.ndarray]:
        """det of the Jacobian of ``p -> p + u(p)`` on the displacement grid (interior voxels, ``(z-2, y-2, x-2)``).

        ``None`` for an affine-only result (its Jacobian is the constant ``det A``).
        """
        if self.displacement is None:
            return None
        from .spatial import jacobian_determinant
        flow = torch.from_numpy(np.stack([self.displacement[..., 2] / self.grid.spacing[2],
                                          self.displacement[..., 1] / self.grid.spacing[1],
                                          self.displacement[..., 0] / self.grid.spacing[0]])[None])
        return jacobian_determinant(flow)[0].numpy()


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'. An unavailable 'cuda' is an error."""
    device = (device or "auto").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "gpu":
        device = "cuda"
    look_up_option(device, ("auto", "cpu", "cuda"), "device", InputError)
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but torch reports no CUDA device; use --device cpu or auto")
    return device


def load_network(bundle: ModelBundle, device: str) -> torch.nn.Module:
    """The bundle's network on ``device`` in eval mode, built once per (bundle folder, device) and cached, so a
    worker can load the weights ahead of :func:`register` (which then finds them here)."""
    key = (str(bundle.path), device)
    if key not in _NETWORK_CACHE:
        _NETWORK_CACHE[key] = bundle.network(device)
    return _NETWORK_CACHE[key]


def _predict(bundle: ModelBundle, fixed: np.ndarray, moving: np.ndarray, device: str, allow_fallback: bool,
             cancel: Optional[Callable[[], bool]] = None):
    net = load_network(bundle, device)
    f = torch.from_numpy(fixed)[None, None].to(device)
    m = torch.from_numpy(moving)[None, None].to(device)
    hooks = []
    if cancel is not None:  # polled before each cascade's subnet
        for sub in getattr(net, "subnets", []):
            hooks.append(sub.register_forward_pre_hook(lambda *_: _polled(cancel, "during the network")))
    try:
        with torch.inference_mode():
            flow, _ = net(f, m)
        return flow.cpu(), device
    except torch.cuda.OutOfMemoryError:
        if not allow_fallback:
            raise
        torch.cuda.empty_cache()
        warnings.warn("CUDA ran out of memory; falling back to the CPU", RuntimeWarning)
        log.warning("CUDA out of memory; falling back to the CPU")
        return _predict(bundle, fixed, moving, "cpu", False, cancel)
    finally:
        for h in hooks:
            h.remove()


def _polled(cancel: Optional[Callable[[], bool]], where: str) -> None:
    if cancel is not None and cancel():
        raise Cancelled(f"registration cancelled {where}")


def _mask(mask: Optional[ImageLike], reference: sitk.Image, name: str) -> Optional[sitk.Image]:
    """A mask image (non-zero = inside) in ``reference``'s physical space; resampled (nearest) if its grid differs."""
    if mask is None:
        return None
    m = mask if isinstance(mask, sitk.Image) else as_image(mask, name, pixel_type=None)
    if m.GetDimension() != 3 or m.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name} must be a 3D scalar image (label map or binary mask)")
    same = (m.GetSize() == reference.GetSize()
            and np.allclose(m.GetOrigin(), reference.GetOrigin(), atol=1e-3)
            and np.allclose(m.GetSpacing(), reference.GetSpacing(), atol=1e-5)
            and np.allclose(m.GetDirection(), reference.GetDirection(), atol=1e-5))
    if not same:
        m = sitk.Resample(m, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, m.GetPixelID())
    m = sitk.Cast(m != 0, sitk.sitkUInt8)
    if not np.any(sitk.GetArrayViewFromImage(m)):
        raise InputError(f"{name} is empty: no non-zero voxel inside its image")
    return m


def register(fixed: ImageLike, moving: ImageLike, model: Union[None, str, ModelBundle] = None, device: str = "auto",
             affine_config: Optional[AffineConfig] = None, initial_affine: Optional[sitk.Transform] = None,
             progress: Optional[Progress] = None, *, mode: str = "deformable",
             refine: Union[None, bool, RefineConfig] = None,
             fixed_mask: Optional[ImageLike] = None, moving_mask: Optional[ImageLike] = None,
             cancel: Optional[Callable[[], bool]] = None, task: Optional[str] = None,
             preflight: bool = True, fallback_to_cpu: Optional[bool] = None) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` (paths or SimpleITK images, any geometry); fixed -> moving map.

    ``model``: a bundle name or folder, optionally ``NAME:TASK``, or an already-loaded
    :class:`~DeepRegLib.bundles.bundle.ModelBundle` (then it is not read again); ``task``: for a model made for several
    tasks (``universal``), which one (None: the one the name gives, else the model's default task):
    its grid, normalisation, affine stage and refinement are used.

    Affine pre-alignment (SimpleITK, ~4 mm, and a last level at 2 mm where the card asks for it;
    ``affine_config=None`` = the model card's settings); ``mode="affine"`` and ``mode="rigid"`` (6
    parameters: the same subject scanned twice) stop there and always finish with that 2 mm level;
    for ``mode="deformable"``, the bundled network on its LPS grid and a per-pair optimisation
    of the network's mapping: ``refine=None`` runs the model card's default refinement (a few cheap
    steps for models whose card has one, none otherwise), ``False`` none (the network alone), ``True``
    the full refinement (the card's ``refinement.full`` where it names one, else :class:`RefineConfig`; the default
    model's: ~15 s for 1 mm brains on 2 cores, with a last level at 1 mm, ~3 s for 2 mm images), or the given
    :class:`RefineConfig`. With ``fine_steps`` in the config and images finer than the grid, the refinement's last
    level compares them at half the grid's spacing (:func:`DeepRegLib.pipeline.prepare_fine`).
    ``fixed_mask``/``moving_mask`` (non-zero = inside) restrict the similarity of the affine stage and
    of the refinement.  ``progress(stage, fraction)``: stages "loading", "affine", "network",
    "refine", "field", "done"; fraction is of the whole run, also reported within long stages.
    The refinement keeps its best step, so its result is never worse than its start by the measure it
    optimises (a refinement where no step helped says so in ``log``). Where the card's refinement asks
    for it (``identity_start``, the default brain model), it starts from the better of the network's
    mapping and no deformation: an image registered to itself is not deformed.
    ``cancel()`` is polled within stages: during refinement it stops the refinement and the
    network's result is returned (``refine_cancelled=True``); elsewhere it raises
    :class:`DeepRegLib.errors.Cancelled`.
    ``preflight``: the model's licence notice (the first time this user runs it, as a
    :class:`~DeepRegLib.errors.ModelWarning`) and warnings about inputs unlike its training data
    (:class:`~DeepRegLib.errors.InputWarning`), see :mod:`DeepRegLib.bundles.preflight`; False where the
    caller ran them already (the command line, the panel, a batch).
    ``fallback_to_cpu``: run the network on the CPU when CUDA runs out of memory (None: when ``device`` is
    "auto"; a caller that resolved "auto" itself passes True).
    """
    lines: List[str] = []

    look_up_option(mode, MODES, "mode", InputError)
    linear = mode in LINEAR_KINDS
    bundle = model.for_task(task) if isinstance(model, ModelBundle) else load_bundle(model, task)
    rcfg, refinement = resolve_refinement(refine, bundle)
    if linear:
        rcfg, refinement = None, "none"
    # overall fractions at which stages start
    marks = {"loading": 0.0, "affine": 0.05}
    if linear:
        marks.update(field=0.95, done=1.0)
    elif rcfg is None:
        marks.update(network=0.55, field=0.9, done=1.0)
    elif refinement == "model default":  # a few steps: about as long as the affine stage
        marks.update(network=0.45, refine=0.6, field=0.95, done=1.0)
    else:
        marks.update(network=0.1, refine=0.15, field=0.95, done=1.0)
    order = [k for k in ("loading", "affine", "network", "refine", "field", "done") if k in marks]

    def report(stage: str, within: float = 0.0) -> None:
        nxt = order[order.index(stage) + 1] if stage != "done" else "done"
        frac = marks[stage] + (marks[nxt] - marks[stage]) * min(max(within, 0.0), 1.0)
        log.debug("%s (%.0f%%)", stage, 100 * frac)
        if progress is not None:
            progress(stage, frac)

    def note(text: str) -> None:
        lines.append(text)
        log.info(text)

    t0 = time.perf_counter()
    report("loading")
    f_img = as_image(fixed, "fixed")
    m_img = as_image(moving, "moving")
    f_mask = _mask(fixed_mask, f_img, "fixed mask")
    m_mask = _mask(moving_mask, m_img, "moving mask")
    dev = resolve_device(device)
    if preflight:
        run_preflight(bundle.card, f_img, m_img, write=as_warning)
    acfg = affine_config if affine_config is not None else AffineConfig.from_card(bundle.card.get("affine_stage"))
    if linear and affine_config is None and not acfg.fine_spacing:  # a linear result is the answer: make it precise
        acfg = replace(acfg, fine_spacing=PRECISE_LINEAR_SPACING)
    note(bundle.task.describe())  # the model card defines the task: grid, normalisation, affine stage, modalities
    timings = {"load": time.perf_counter() - t0}
    note(f"loaded fixed {f_img.GetSize()} and moving {m_img.GetSize()}; model {bundle.name}, device {dev}"
         + (", fixed mask" if f_mask is not None else "") + (", moving mask" if m_mask is not None else ""))
    _polled(cancel, "before the affine stage")
    report("affine")
    kind = "rigid" if mode == "rigid" else "affine"  # of the linear stage
    prep = prepare_pair(f_img, m_img, bundle.input_spec, acfg, initial_affine, f_mask, m_mask,
                        progress=lambda x: report("affine", x), cancel=cancel, kind=kind)
    timings.update(prep.timings)
    note(f"{kind} stage: {timings['affine']:.2f} s"
         + (" (given initial affine)" if initial_affine is not None else ""))
    if linear:
        report("field")
        timings["total"] = time.perf_counter() - t0
        note(f"done ({mode} only): {timings['total']:.2f} s")
        report("done")
        return RegistrationResult(f_img, prep.affine, None, None, bundle.name, dev, timings, mode=mode, log=lines)
    _polled(cancel, "before the network")
    report("network")
    t1 = time.perf_counter()
    flow, used = _predict(bundle, prep.fixed, prep.moving, dev, allow_fallback=(fallback_to_cpu if fallback_to_cpu is not None
                                                              else (device or "auto") == "auto"),
                          cancel=cancel)
    timings["network"] = time.perf_counter() - t1
    note(f"network: {timings['network']:.2f} s on {used}")
    refined = refine_cancelled = False
    if rcfg is not None:
        _polled(cancel, "before refinement")
        report("refine")
        t2 = time.perf_counter()
        fine = None
        if rcfg.fine_steps:
            if finer_than_grid(prep, f_img, m_img):
                fine = _fine_pair(f_img, m_img, prep, bundle.input_spec, f_mask, m_mask)
                note(f"refinement: a last level of {rcfg.fine_steps} steps at {prep.grid.spacing[0] / 2:g} mm")
            else:
                note(f"refinement: no level finer than the grid ({prep.grid.spacing[0]:g} mm): the images' voxels "
                     f"({min(f_img.GetSpacing()):g} / {min(m_img.GetSpacing()):g} mm) are no finer")
        out = _refine(prep, flow, used, rcfg, lambda x: report("refine", x), cancel, fine)
        timings["refine"] = time.perf_counter() - t2
        if out.start_note:
            note(out.start_note)
        if out.cancelled:
            refine_cancelled = True
            note(f"refinement cancelled after {out.steps} steps: the network's result is kept")
        else:
            flow, refined = out.flow, True
            note(f"refinement ({refinement}): {out.steps} steps, loss {out.losses[0]:.4f} -> {min(out.losses):.4f}, "
                 f"{timings['refine']:.2f} s on {used}")
            if out.stalled:
                note(f"refinement: no step improved on its start (loss {out.losses[0]:.4f}); "
                     "its start is the result")
    report("field")
    t3 = time.perf_counter()
    # the field as written: tapered inside the grid, or continued beyond it (the card's task)
    disp, out_grid = tr.border_field(tr.flow_to_displacement(flow, prep.grid), prep.grid, bundle.task.field_margin)
    timings["field"] = time.perf_counter() - t3
    timings["total"] = time.perf_counter() - t0
    note(f"done: {timings['total']:.2f} s")
    report("done")
    return RegistrationResult(f_img, prep.affine, disp, out_grid, bundle.name, used, timings, mode="deformable",
                              refined=refined, refine_cancelled=refine_cancelled, refinement=refinement, log=lines)


def resolve_refinement(refine: Union[None, bool, RefineConfig], bundle: ModelBundle):
    """``(RefineConfig or None, label)`` for :func:`register`'s ``refine`` argument and the model's card.

    ``True`` gives the card's full refinement where it names one (``refinement.full``), else the engine's
    :class:`RefineConfig` with the similarity of the card's default refinement when it names one (a
    multimodal model's mutual information or MIND-SSC, not the NCC meant for one contrast)."""
    if refine is None:
        rcfg = card_refinement(bundle.card)
        return rcfg, ("none" if rcfg is None else "model default")
    if isinstance(refine, bool):
        if not refine:
            return None, "none"
        full = card_full_refinement(bundle.card)
        if full is not None:
            return full, "full"
        default = card_refinement(bundle.card)
        if default is None:
            return RefineConfig(), "full"
        # the card's similarity (a multimodal model's MI or MIND; a brain model's NCC with its own settings)
        return RefineConfig(similarity=default.similarity, ncc_eps=default.ncc_eps, ncc_min_std=default.ncc_min_std,
                            identity_start=default.identity_start,
                            identity_optimizer=default.identity_optimizer), "full"
    if isinstance(refine, RefineConfig):
        return refine, "custom"
    raise InputError(f"refine must be None, True, False or a RefineConfig, not {type(refine).__name__}")


def _tensor(array: Optional[np.ndarray]) -> Optional[torch.Tensor]:
    return None if array is None else torch.from_numpy(array)[None, None]


def _fine_pair(f_img: sitk.Image, m_img: sitk.Image, prep, spec, f_mask, m_mask) -> FinePair:
    _, *arrays = prepare_fine(f_img, m_img, prep, spec, f_mask, m_mask)
    return FinePair(*(_tensor(a) for a in arrays))


def _refine(prep, flow: torch.Tensor, device: str, config: RefineConfig, progress, cancel,
            fine: Optional[FinePair] = None):
    def t(a):
        return None if a is None else _tensor(a).to(device)
    return refine_flow(t(prep.fixed), t(prep.moving), flow.to(device), float(prep.grid.spacing[0]), config,
                       mask=t(prep.fixed_mask), moving_mask=t(prep.moving_mask), progress=progress, cancel=cancel,
                       fine=None if fine is None else fine.to(device))
