"""Licence notices for non-commercial model weights and sample data: accepted once, printed once.

The code is Apache-2.0 (``LICENSE.txt``).  The bundled model and the sample brains derive from
Mindboggle-101 (CC BY-NC-SA 3.0): before the first registration with such a model the Slicer
panel shows its licence and asks the user to accept it (once per model and licence text); the
CLI prints it once.  The state is a small JSON file, by default
``$DEEPREG_CONFIG_DIR/licences.json`` or ``~/.config/deepreg/licences.json`` (the Slicer module
passes a path beside Slicer's own settings).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Optional

_NC = re.compile(r"\bBY-NC\b|\bBY-NC-SA\b|\bBY-NC-ND\b|non-?commercial", re.I)


def is_non_commercial(card: dict) -> bool:
    """Whether the card's licence restricts use to non-commercial purposes (e.g. CC BY-NC-SA)."""
    text = " ".join(str(card.get(k, "")) for k in ("licence", "license"))
    text += " " + str(card.get("training", {}).get("licence", ""))
    return bool(_NC.search(text))


def licence_key(card: dict) -> str:
    """Identifies (model, licence text): a changed licence is asked again."""
    text = str(card.get("licence", card.get("license", "")))
    return f"{card.get('name', '?')}:{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def licence_notice(card: dict) -> str:
    """The text shown to the user (plain text; several sentences)."""
    lic = card.get("licence", card.get("license", "unknown"))
    return (f"The model '{card.get('name', '?')}' and the DeepReg sample brains were made from data licensed "
            f"{lic}\n\nThey may be used for non-commercial purposes only (research, teaching), with attribution; "
            "derived works must carry the same licence. The DeepReg code itself is Apache-2.0 (LICENSE.txt).")


def default_store_path() -> Path:
    base = os.environ.get("DEEPREG_CONFIG_DIR")
    if base:
        return Path(base) / "licences.json"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return Path(xdg or Path.home() / ".config") / "deepreg" / "licences.json"


class LicenceStore:
    """Which licence notices were accepted (panel) or printed (CLI); a JSON file, written atomically."""

    def __init__(self, path: Optional[os.PathLike] = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()

    def _load(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save(self, data: dict) -> None:
        from ..safeio import atomic_text
        try:  # a unique temporary name: two processes saving at once do not collide
            atomic_text(self.path, json.dumps(data, indent=1, sort_keys=True))
        except OSError:  # a read-only home: ask/print again next time rather than fail
            pass

    def _has(self, kind: str, key: str) -> bool:
        return key in self._load().get(kind, [])

    def _add(self, kind: str, key: str) -> None:
        data = self._load()
        keys = set(data.get(kind, []))
        keys.add(key)
        data[kind] = sorted(keys)
        self._save(data)

    def accepted(self, card: dict) -> bool:
        return not is_non_commercial(card) or self._has("accepted", licence_key(card))

    def accept(self, card: dict) -> None:
        self._add("accepted", licence_key(card))

    def print_once(self, card: dict, write) -> bool:
        """Call ``write(notice)`` the first time a non-commercial card is used here; True when printed."""
        if not is_non_commercial(card) or self._has("printed", licence_key(card)):
            return False
        write(licence_notice(card))
        self._add("printed", licence_key(card))
        return True
