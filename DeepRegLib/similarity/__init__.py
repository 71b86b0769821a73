"""Image similarity measures, one registry by name, used by the refinement and by training.

A :class:`Similarity` names a measure and its settings; :meth:`Similarity.bind` fixes the fixed
image (and a weight mask) and returns an object with ``prepare(moving)`` (what is warped each step:
the image, or MIND's descriptors) and ``__call__(warped)`` (the similarity, higher is better);
:meth:`Similarity.loss` is ``1 - similarity`` of one pair, as training uses it.

Names:
    ``ncc``: local normalised cross-correlation (:class:`.ncc.LocalNCC`), one modality;
    ``cc``: global correlation coefficient (:class:`.ncc.GlobalCC`);
    ``mind``: MIND-SSC descriptors (:class:`.mind.MINDSimilarity`), across modalities;
    ``mi``: normalised mutual information (:class:`.mutualinfo.MutualInformation`), across modalities.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..names import look_up_option
from .mind import MINDSimilarity
from .mutualinfo import MutualInformation
from .ncc import GlobalCC, LocalNCC, local_ncc

_BUILDERS = {
    "ncc": lambda s, fixed, mask: LocalNCC(fixed, s.window, mask, s.eps, s.min_std),
    "cc": lambda s, fixed, mask: GlobalCC(fixed, mask, s.eps),
    "mind": lambda s, fixed, mask: MINDSimilarity(fixed, mask),
    "mi": lambda s, fixed, mask: MutualInformation(fixed, mask),
}
#: the names a refinement or a training run may ask for
SIMILARITIES = tuple(_BUILDERS)
#: each measure's own ``eps`` when none is given
_DEFAULT_EPS = {"ncc": 1e-5, "cc": 1e-6}


@dataclass(frozen=True)
class Similarity:
    """A similarity measure by name and its settings (ICON passes ``LNCC(sigma)`` the same way).

    Args:
        name: one of :data:`SIMILARITIES`.
        window: local NCC window edge in voxels (odd; ``ncc`` only).
        eps: the measure's stabiliser (``ncc``: 1e-5, ``cc``: 1e-6 when None).
        min_std: local NCC windows with a flatter fixed image do not count (``ncc`` only; 0: all count).
    """

    name: str = "ncc"
    window: int = 9
    eps: Optional[float] = None
    min_std: float = 0.0

    def __post_init__(self) -> None:
        look_up_option(self.name, SIMILARITIES, "similarity")
        if self.eps is None:
            object.__setattr__(self, "eps", _DEFAULT_EPS.get(self.name, 0.0))

    def bind(self, fixed: torch.Tensor, mask: Optional[torch.Tensor] = None):
        """The measure against ``fixed`` ``(B, C, z, y, x)`` with ``mask`` ``(B, 1, z, y, x)`` weights."""
        return _BUILDERS[self.name](self, fixed, mask)

    def loss(self, fixed: torch.Tensor, warped: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``1 - similarity`` of ``fixed`` and the already warped moving image (a scalar tensor)."""
        bound = self.bind(fixed, mask)
        return 1.0 - bound(bound.prepare(warped))


__all__ = ["SIMILARITIES", "Similarity", "LocalNCC", "GlobalCC", "local_ncc", "MINDSimilarity", "MutualInformation"]
