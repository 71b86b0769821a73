"""Model bundles: weights + a JSON model card, found on disk with no network access.

A bundle is a folder ``<models dir>/<name>/`` holding ``card.json`` and the weights
file it names.  Folders searched, in order: each entry of ``$DEEPREG_MODELS_PATH``
(``os.pathsep``-separated), then ``Resources/models`` beside the ``DeepRegLib`` package.
Listing and reading cards needs no torch (the Slicer panel lists models before torch is
installed); torch is imported only to build a network.

A model made for several tasks (``universal``) has one network and, per task, its own grid,
normalisation, affine stage, refinement and measured accuracy: the card's top level describes its
default task (``card["task"]``), ``card["task_settings"][<task>]`` each other one. A model is named
``NAME`` (its default task) or ``NAME:TASK`` (e.g. ``universal:prostate``) wherever a model name is
taken: :func:`load_bundle`, ``register(model=...)``, the CLI's ``--model`` and the Slicer panel.
"""
from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from .errors import DeepRegError, ModelNotFoundError
from .pipeline import InputSpec
from .taskspec import FIELD_KEY

if TYPE_CHECKING:
    from .models import LowResolution, RecursiveCascade

from . import DEFAULT_MODEL  # noqa: F401  (re-exported)
CARD_FILE = "card.json"
#: the card's block naming the refinement ``register()`` runs by default (read by ``DeepRegLib.refine``)
REFINEMENT_KEY = "refinement"
#: kind of distilled network per architecture (a card's own ``kind`` wins)
KINDS = {"ldr": "light-weight", "lowres_ldr": "low-resolution"}
#: a multi-task card's block of per-task settings, and the keys each task has its own of
TASK_SETTINGS_KEY = "task_settings"
TASK_KEYS = ("task", "input", "affine_stage", FIELD_KEY, REFINEMENT_KEY, "accuracy", "speed")
_TASK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def split_reference(ref: str) -> Tuple[str, Optional[str]]:
    """``'universal:prostate'`` -> ``('universal', 'prostate')``; a plain name or a folder -> ``(ref, None)``."""
    if Path(ref).is_dir():
        return ref, None
    head, sep, tail = ref.rpartition(":")
    if sep and head and _TASK_NAME.fullmatch(tail):
        return head, tail
    return ref, None


def model_dirs() -> List[Path]:
    dirs = [Path(p) for p in os.environ.get("DEEPREG_MODELS_PATH", "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parent.parent / "Resources" / "models")
    return dirs


@dataclass
class ModelBundle:
    """A loaded model card; :meth:`network` builds the torch module with its weights."""

    name: str
    path: Path
    card: dict

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_dict(self.card["input"])

    @property
    def task(self):
        """The :class:`DeepRegLib.taskspec.TaskSpec` the card defines (grid, normalisation, affine, modalities)."""
        from .taskspec import TaskSpec
        return TaskSpec.from_card(self.card)

    @property
    def default_task(self) -> str:
        return str(self.card.get("task", "brain"))

    @property
    def tasks(self) -> List[str]:
        """The tasks this network serves: its default task, then the others (``task_settings``) in the
        order of the card's ``tasks``."""
        servable = [t for t in self.card.get(TASK_SETTINGS_KEY) or {} if t != self.default_task]
        order = [t for t in self.card.get("tasks") or [] if t in servable]
        return [self.default_task] + order + [t for t in servable if t not in order]

    def for_task(self, task: Optional[str]) -> "ModelBundle":
        """This model as set up for ``task`` (None: its default task): a bundle whose card has that
        task's grid, normalisation, affine stage, refinement and accuracy, named ``NAME:TASK``."""
        if task is None or task == self.default_task:
            return self
        settings = (self.card.get(TASK_SETTINGS_KEY) or {}).get(task)
        if settings is None:
            raise ModelNotFoundError(f"model {self.name!r} is not made for task {task!r}; its tasks: "
                                     + ", ".join(self.tasks))
        card = {k: v for k, v in self.card.items() if k not in TASK_KEYS}
        card[TASK_SETTINGS_KEY] = {t: v for t, v in card[TASK_SETTINGS_KEY].items() if t != task}
        card[TASK_SETTINGS_KEY][self.default_task] = {k: self.card[k] for k in TASK_KEYS[1:] if k in self.card}
        card.update(copy.deepcopy(settings))
        card["task"] = task
        return ModelBundle(f"{split_reference(self.name)[0]}:{task}", self.path, card)

    @property
    def architecture(self) -> str:
        return self.card["architecture"]["name"]

    @property
    def cascades(self) -> int:
        return int(self.card["architecture"]["cascades"])

    @property
    def kind(self) -> str:
        """``'light-weight'`` or ``'low-resolution'`` (the card's ``kind``, else from the architecture)."""
        return self.card.get("kind") or KINDS.get(self.architecture, "unknown")

    @property
    def network_grid(self) -> Tuple[float, Tuple[int, int, int]]:
        """``(spacing mm, size (x, y, z))`` the network itself runs on: the input grid, or for a
        low-resolution model the input grid average-pooled by its ``factor``."""
        spec = self.input_spec
        factor = int(self.card["architecture"].get("kwargs", {}).get("factor", 1)) if self.kind == "low-resolution" else 1
        return spec.spacing * factor, tuple(-(-s // factor) for s in spec.size)

    @property
    def parameters(self) -> Optional[int]:
        p = self.card["architecture"].get("parameters")
        return None if p is None else int(p)

    def details(self) -> List[str]:
        """Kind, grids, parameters and measured speed (from the card), one short line each."""
        spec = self.input_spec
        size = "x".join(str(s) for s in spec.size)
        lines = [f"kind: {self.kind}"]
        if len(self.tasks) > 1:
            base = split_reference(self.name)[0]
            lines.append(f"task: {self.default_task}, one of the tasks {', '.join(self.tasks)} of one network "
                         f"(choose with the model {base}:TASK)")
        net_spacing, net_size = self.network_grid
        grid = f"input grid: {size} voxels at {spec.spacing:g} mm"
        if (net_spacing, net_size) != (spec.spacing, tuple(spec.size)):
            grid += f"; network runs at {net_spacing:g} mm on {'x'.join(str(s) for s in net_size)}"
        lines.append(grid)
        params = self.parameters
        lines.append(f"parameters: {params:,}" if params is not None else "parameters: not recorded")
        speed = self.card.get("speed", {})
        if speed.get("network_s_median") is not None or speed.get("register_s_median") is not None:
            parts = []
            if speed.get("network_s_median") is not None:
                parts.append(f"network {speed['network_s_median']:.3f} s")
            if speed.get("register_s_median") is not None:
                parts.append(f"register() {speed['register_s_median']:.3f} s")
            thr = speed.get("threads")
            lines.append("speed: " + ", ".join(parts) + (f" (median, {thr} CPU threads)" if thr else " (median)"))
        else:
            lines.append("speed: not measured")
        lines.append(self.refinement_line())
        return lines

    def refinement_line(self) -> str:
        """What ``register()`` runs after the network by default (the card's ``refinement`` block)."""
        default = (self.card.get(REFINEMENT_KEY) or {}).get("default")  # read here without torch (DeepRegLib.refine)
        if not default:
            return "default refinement: none (the network alone; --refine for the full one)"
        coarse = f"{default['coarse_steps']} at half resolution + " if default.get("coarse_steps") else ""
        similarity = {"mind": "MIND-SSC", "mi": "mutual information"}.get(
            default.get("similarity"), f"{default.get('ncc_window_mm')} mm LNCC windows")
        return (f"default refinement: {coarse}{default.get('max_steps')} steps, {similarity} "
                "(--network-only: the network alone; --refine: the full one)")

    @property
    def summary(self) -> str:
        acc = self.card.get("accuracy", {})
        dice = acc.get("dice_deformable", {})
        txt = f"{self.name}: {self.card.get('description', '')}"
        if dice:
            txt += f" (validation Dice subcortical {dice.get('subcortical', float('nan')):.3f}, " \
                   f"cortical {dice.get('cortical', float('nan')):.3f})"
        elif isinstance(acc.get("validation"), dict) and "default" in acc["validation"]:  # a task benchmark's medians
            parts = []
            for split in ("validation", "test"):
                d = (acc.get(split) or {}).get("default") or {}
                if "gland_dice" in d:
                    parts.append(f"{split} gland Dice {d['gland_dice']:.3f}, landmark TRE {d['landmark_tre_mm']:.2f} mm")
                elif "organ_dice" in d:
                    parts.append(f"{split} organ Dice {d['organ_dice']:.3f}, error {d['error_mm']:.2f} mm "
                                 "against the known displacement")
            if parts:
                txt += " (" + "; ".join(parts) + ")"
        return txt

    def network(self, device: str = "cpu") -> "RecursiveCascade | LowResolution":
        import torch

        from .models import build_network
        net = build_network(self.architecture, self.cascades, **self.card["architecture"].get("kwargs", {}))
        weights = self.path / self.card["weights"]
        if not weights.exists():
            raise DeepRegError(f"model {self.name}: weights file missing: {weights}")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict({k: v.float() for k, v in state.items()})
        return net.to(device).eval()


def update_card(bundle: ModelBundle, updates: dict) -> Path:
    """Write ``updates`` (card keys: ``accuracy``, ``speed``, ``refinement``, ...) into ``bundle``'s card
    file: at its top level for the bundle's default task, into ``task_settings[<task>]`` for a task view
    (``NAME:TASK``) of a multi-task bundle. Returns the card's path."""
    path = bundle.path / CARD_FILE
    card = json.loads(path.read_text())
    task = bundle.default_task
    target = card if task == str(card.get("task", "brain")) else card[TASK_SETTINGS_KEY][task]
    target.update(updates)
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


def _read_card(folder: Path) -> Optional[dict]:
    card = folder / CARD_FILE
    if not card.is_file():
        return None
    try:
        return json.loads(card.read_text())
    except json.JSONDecodeError as exc:
        raise DeepRegError(f"invalid model card {card}: {exc}") from None


def list_models(problems: Optional[List[str]] = None, task_views: bool = False) -> Dict[str, ModelBundle]:
    """Every bundle found (first folder wins on a name clash), by name; with ``task_views`` also each
    multi-task bundle's other tasks, as ``NAME:TASK`` (what the Slicer panel lists).

    With ``problems`` (a list), a bad card (invalid JSON, not an object, no ``input`` section) is
    skipped and described there, so that one broken folder in ``$DEEPREG_MODELS_PATH`` does not hide
    every other model; without it the first bad card raises :class:`DeepRegError`.
    """
    found: Dict[str, ModelBundle] = {}
    for d in model_dirs():
        if not d.is_dir():
            continue
        for sub in sorted(d.iterdir()):
            try:
                card = _read_card(sub) if sub.is_dir() else None
                if problems is not None and card is not None and not (isinstance(card, dict) and isinstance(card.get("input"), dict)):
                    raise DeepRegError(f"invalid model card {sub / CARD_FILE}: no 'input' section")
            except DeepRegError as exc:
                if problems is None:
                    raise
                problems.append(f"skipped model {sub.name}: {exc}")
                continue
            if card is not None and sub.name not in found:
                found[sub.name] = ModelBundle(sub.name, sub, card)
    if task_views:
        for name, b in list(found.items()):
            for t in b.tasks[1:]:
                found.setdefault(f"{name}:{t}", b.for_task(t))
    return found


def with_task(model: Optional[str], task: Optional[str]) -> Optional[str]:
    """The model reference ``MODEL:TASK`` (``model`` None: the default model); ``model`` when ``task`` is None."""
    if task is None:
        return model
    name, named = split_reference(model or DEFAULT_MODEL)
    if named is not None and named != task:
        raise ModelNotFoundError(f"model {model} asked for task {task!r}: give the task once")
    return f"{name}:{task}"


def load_bundle(name: Optional[str] = None, task: Optional[str] = None) -> ModelBundle:
    """The bundle called ``name`` (default :data:`DEFAULT_MODEL`), or a bundle folder path, set up for
    ``task`` (None: the task ``NAME:TASK`` names, else the model's default task)."""
    name, task = split_reference(with_task(name, task) or DEFAULT_MODEL)
    p = Path(name)
    if p.is_dir():
        card = _read_card(p)
        if card is None:
            raise ModelNotFoundError(f"{p} has no {CARD_FILE}")
        return ModelBundle(p.name, p, card).for_task(task)
    models = list_models()
    if name not in models:
        avail = ", ".join(sorted(models)) or "none (is Resources/models present?)"
        raise ModelNotFoundError(f"unknown model {name!r}; available models: {avail}")
    return models[name].for_task(task)
