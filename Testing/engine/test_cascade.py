"""Recursive cascades with stub subnets whose flows do not commute (known answer).

Each stub returns a fixed linear voxel flow ``M_k (p - c) + b_k``; linear maps survive trilinear
sampling exactly, so the cascade's total must equal the analytic composition
``phi_1 o phi_2 o phi_3`` (``phi_k = id + flow_k``), and subnet ``k`` must receive the moving image
warped by the running total ``phi_1 o ... o phi_{k-1}`` (a linear intensity ramp, also exact).
"""
from __future__ import annotations

import numpy as np
import torch

from DeepRegLib.models.cascade import RecursiveCascade
from DeepRegLib.spatial import identity_grid

SHAPE = (20, 22, 24)
CENTRE = np.array([(s - 1) / 2 for s in SHAPE])
MATRICES = [np.array([[0.0, 0.12, 0.0], [0.0, 0.0, 0.0], [0.05, 0.0, 0.0]]),
            np.array([[0.0, 0.0, 0.0], [0.1, 0.0, -0.08], [0.0, 0.0, 0.0]]),
            np.array([[0.06, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.1, 0.0]])]
OFFSETS = [np.array([0.5, -0.3, 0.2]), np.array([-0.2, 0.4, 0.0]), np.array([0.1, 0.0, -0.6])]
RAMP = np.array([1.0, -2.0, 3.0])  # moving intensity = RAMP . (k, j, i)


class StubSubnet(torch.nn.Module):
    multiple = 1

    def __init__(self, matrix: np.ndarray, offset: np.ndarray) -> None:
        super().__init__()
        self.matrix, self.offset, self.received = matrix, offset, []

    def forward(self, fixed, moving):
        self.received.append(moving.detach().clone())
        g = identity_grid(fixed.shape[2:], dtype=torch.float64)[0].numpy()
        flow = np.einsum("ab,bzyx->azyx", self.matrix, g - CENTRE[:, None, None, None]) + self.offset[:, None, None, None]
        return torch.from_numpy(flow).float()[None]


def phi(k: int, p: np.ndarray) -> np.ndarray:
    """``p + flow_k(p)`` for points ``(3, ...)`` in voxel coordinates (k, j, i)."""
    q = p - CENTRE.reshape(3, *([1] * (p.ndim - 1)))
    return p + np.einsum("ab,b...->a...", MATRICES[k], q) + OFFSETS[k].reshape(3, *([1] * (p.ndim - 1)))


def test_three_cascades_compose_in_order_and_warp_by_running_total():
    stubs = [StubSubnet(m, b) for m, b in zip(MATRICES, OFFSETS)]
    it = iter(stubs)
    net = RecursiveCascade(lambda: next(it), cascades=3)
    p = identity_grid(SHAPE, dtype=torch.float64)[0].numpy()
    moving = torch.from_numpy(np.einsum("a,a...->...", RAMP, p)).float()[None, None]
    fixed = torch.zeros_like(moving)
    total, flows = net(fixed, moving)
    inner = (slice(None), slice(5, -5), slice(5, -5), slice(5, -5))
    want = phi(0, phi(1, phi(2, p))) - p
    swapped = phi(2, phi(1, phi(0, p))) - p
    got = total[0].double().numpy()
    assert np.abs(got - want)[inner].max() < 1e-3
    assert np.abs(swapped - want)[inner].max() > 0.1  # the order matters for these flows
    assert len(flows) == 3
    # subnet k receives moving o (phi_1 o ... o phi_{k-1})
    running = [p, phi(0, p), phi(0, phi(1, p))]
    for k, stub in enumerate(stubs):
        assert len(stub.received) == 1
        want_img = np.einsum("a,a...->...", RAMP, running[k])
        got_img = stub.received[0][0, 0].double().numpy()
        assert np.abs(got_img - want_img)[inner[1:]].max() < 1e-2, f"subnet {k + 1} got the wrong warped moving image"
    last_flow_only = np.einsum("a,a...->...", RAMP, phi(1, p))  # warped by the last flow, not the total
    assert np.abs(last_flow_only - np.einsum("a,a...->...", RAMP, running[2]))[inner[1:]].max() > 0.1
