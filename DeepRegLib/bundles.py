"""Model bundles: weights + a JSON model card, found on disk with no network access.

A bundle is a folder ``<models dir>/<name>/`` holding ``card.json`` and the weights
file it names.  Folders searched, in order: each entry of ``$DEEPREG_MODELS_PATH``
(``os.pathsep``-separated), then ``Resources/models`` beside the ``DeepRegLib`` package.
Listing and reading cards needs no torch (the Slicer panel lists models before torch is
installed); torch is imported only to build a network.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional

from .errors import DeepRegError, ModelNotFoundError
from .pipeline import InputSpec

if TYPE_CHECKING:
    from .models import RecursiveCascade

from . import DEFAULT_MODEL  # noqa: F401  (re-exported)
CARD_FILE = "card.json"


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
    def architecture(self) -> str:
        return self.card["architecture"]["name"]

    @property
    def cascades(self) -> int:
        return int(self.card["architecture"]["cascades"])

    @property
    def summary(self) -> str:
        acc = self.card.get("accuracy", {})
        dice = acc.get("dice_deformable", {})
        txt = f"{self.name}: {self.card.get('description', '')}"
        if dice:
            txt += f" (validation Dice subcortical {dice.get('subcortical', float('nan')):.3f}, " \
                   f"cortical {dice.get('cortical', float('nan')):.3f})"
        return txt

    def network(self, device: str = "cpu") -> "RecursiveCascade":
        import torch

        from .models import build_network
        net = build_network(self.architecture, self.cascades, **self.card["architecture"].get("kwargs", {}))
        weights = self.path / self.card["weights"]
        if not weights.exists():
            raise DeepRegError(f"model {self.name}: weights file missing: {weights}")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict({k: v.float() for k, v in state.items()})
        return net.to(device).eval()


def _read_card(folder: Path) -> Optional[dict]:
    card = folder / CARD_FILE
    if not card.is_file():
        return None
    try:
        return json.loads(card.read_text())
    except json.JSONDecodeError as exc:
        raise DeepRegError(f"invalid model card {card}: {exc}") from None


def list_models(problems: Optional[List[str]] = None) -> Dict[str, ModelBundle]:
    """Every bundle found (first folder wins on a name clash), by name.

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
    return found


def load_bundle(name: Optional[str] = None) -> ModelBundle:
    """The bundle called ``name`` (default :data:`DEFAULT_MODEL`), or a bundle folder path."""
    name = name or DEFAULT_MODEL
    p = Path(name)
    if p.is_dir():
        card = _read_card(p)
        if card is None:
            raise ModelNotFoundError(f"{p} has no {CARD_FILE}")
        return ModelBundle(p.name, p, card)
    models = list_models()
    if name not in models:
        avail = ", ".join(sorted(models)) or "none (is Resources/models present?)"
        raise ModelNotFoundError(f"unknown model {name!r}; available models: {avail}")
    return models[name]
