"""Before any work: the model's licence notice and warnings about inputs unlike its training data.

Written once here and run by every entry point: the command line (``register``, ``demo``,
``batch``), Python's :func:`DeepRegLib.inference.register`, ``register_nodes`` and the Slicer panel.
The non-interactive ones call :func:`preflight` (the notice printed once per user and licence,
warnings written, work goes on); the panel asks with :func:`ask_licence` and shows
:func:`domain_warnings` in a dialog.
"""
from __future__ import annotations

import logging
import warnings
from typing import Callable, List, Optional

import SimpleITK as sitk

from ..errors import InputWarning, ModelWarning
from .domain import check_pair
from .licence import LicenceStore, licence_notice

#: the line that introduces a licence notice written by :func:`preflight`
NOTICE_HEADER = "licence notice (shown once):"
WARNING_PREFIX = "warning: "
log = logging.getLogger("DeepRegLib")


def domain_warnings(card: dict, fixed: sitk.Image, moving: sitk.Image) -> List[str]:
    """Sentences for the user about a fixed/moving pair unlike the card's training data (empty: none).

    Args:
        card: the model card (its ``input.expects`` and optional ``domain`` block).
        fixed, moving: the images as given (any grid); subsampled to at most 300,000 voxels (~10 ms).
    """
    return check_pair(fixed, moving, card)


def ask_licence(card: dict, ask: Callable[[str], bool], store: Optional[LicenceStore] = None,
                log: Optional[Callable[[str], None]] = None) -> bool:
    """The panel's form: a non-commercial model's notice is shown by ``ask(text)`` until accepted once.

    Returns:
        True when the licence needs no acceptance, was accepted before, or ``ask`` accepts it (recorded).
    """
    store = store or LicenceStore()
    if store.accepted(card):
        return True
    if not ask(licence_notice(card)):
        return False
    store.accept(card)
    if log is not None:
        log(f"licence of model '{card.get('name', '?')}' accepted")
    return True


def preflight(card: dict, fixed: Optional[sitk.Image] = None, moving: Optional[sitk.Image] = None, *,
              write: Callable[[str], None], store: Optional[LicenceStore] = None) -> List[str]:
    """The non-interactive form: the licence notice written the first time this user runs the model, then one
    ``warning: ...`` line per domain warning (when both images are given); nothing stops the work.

    Args:
        card: the model card.
        fixed, moving: the pair to check, or None (the licence notice only, e.g. before a batch).
        write: where lines go (stderr for the command line, :mod:`warnings` for Python).
        store: where shown notices are recorded (default: the user's ``licences.json``).

    Returns:
        The domain warnings (sentences without the ``warning:`` prefix).
    """
    (store or LicenceStore()).print_once(card, lambda text: write(f"{NOTICE_HEADER}\n{text}"))
    found = domain_warnings(card, fixed, moving) if fixed is not None and moving is not None else []
    for w in found:
        write(WARNING_PREFIX + w)
    return found


def as_warning(line: str) -> None:
    """A :func:`preflight` line for Python callers: the licence notice as a :class:`ModelWarning`, a domain
    warning as an :class:`InputWarning` (and both in the ``DeepRegLib`` log)."""
    log.warning(line)
    if line.startswith(NOTICE_HEADER):
        warnings.warn(line, ModelWarning, stacklevel=4)
    else:
        warnings.warn(line[len(WARNING_PREFIX):] if line.startswith(WARNING_PREFIX) else line, InputWarning,
                      stacklevel=4)  # the caller of register()
