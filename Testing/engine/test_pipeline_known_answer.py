"""register() end to end with a stubbed network whose flow is known, on a permuted-direction,
anisotropic fixed image: the mapping must be ``p + u(p)`` in mm, component by component, through
the engine (``map_points``), the written ``.h5`` (SimpleITK) and the Slicer node (slicer-core), and
zero on all six faces of the field.

The stub's voxel flow is different on each axis and has a ramp, so swapped components, a missing
grid spacing, a mirrored axis or a missing taper each change the answer.
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DeepRegLib import inference

PERMUTED = (0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # Mindboggle-like: i -> S, j -> -L... (a rotation)


def expected_flow(k: np.ndarray, j: np.ndarray, i: np.ndarray):
    """The stub's voxel flow (channels along array axes k, j, i) at grid index (i, j, k)."""
    return (0.3 - 0.015 * j, -0.6 + 0.01 * i, 0.9 + 0.02 * k)


class StubNetwork(torch.nn.Module):
    """Returns :func:`expected_flow` on the input grid; records the input shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def forward(self, fixed, moving):
        self.calls.append((tuple(fixed.shape), tuple(moving.shape)))
        z, y, x = fixed.shape[2:]
        k, j, i = torch.meshgrid(torch.arange(z, dtype=torch.float32), torch.arange(y, dtype=torch.float32),
                                 torch.arange(x, dtype=torch.float32), indexing="ij")
        flow = torch.stack(expected_flow(k, j, i))[None]
        return flow, [flow]


def fixed_image() -> sitk.Image:
    size = (60, 50, 40)
    img = sitk.Image(size, sitk.sitkFloat32)
    img.SetSpacing((2.6, 3.1, 3.7))
    img.SetDirection(PERMUTED)
    img.SetOrigin((-70.0, 80.0, -60.0))
    kk, jj, ii = np.meshgrid(*[np.arange(n, dtype=float) for n in size[::-1]], indexing="ij")
    blob = np.exp(-(((ii - 28) / 14) ** 2 + ((jj - 27) / 12) ** 2 + ((kk - 19) / 9) ** 2))
    arr = (blob * 100 + 1e-3 * ii).astype(np.float32)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out


@pytest.fixture(scope="module")
def result(request):
    stub = StubNetwork()
    mp = pytest.MonkeyPatch()
    mp.setattr(inference, "load_network", lambda bundle, device: stub)
    try:
        fixed = fixed_image()
        # the network alone (refine=False): the default model's card refinement would change the known flow
        res = inference.register(fixed, fixed, device="cpu", initial_affine=sitk.AffineTransform(3), refine=False)
    finally:
        mp.undo()
    assert len(stub.calls) == 1 and stub.calls[0][0] == (1, 1, *res.grid.shape)
    return res


def expected_map(res, pts: np.ndarray) -> np.ndarray:
    """p + u(p) in mm, where the stub's flow is in voxels of the 2 mm LPS network grid (no taper)."""
    g = res.grid
    idx = (pts - np.asarray(g.origin)) / np.asarray(g.spacing)  # (i, j, k)
    fk, fj, fi = expected_flow(idx[:, 2], idx[:, 1], idx[:, 0])
    u = np.stack([fi * g.spacing[0], fj * g.spacing[1], fk * g.spacing[2]], axis=1)
    return pts + u


def interior_points(res, margin: int, n: int = 400, nodes: bool = False) -> np.ndarray:
    g = res.grid
    rng = np.random.default_rng(3)
    idx = rng.uniform(margin, np.asarray(g.size) - 1 - margin, (n, 3))
    if nodes:
        idx = np.round(idx)
    return np.asarray(g.origin) + idx * np.asarray(g.spacing)


def test_result_is_p_plus_u_at_nodes_and_between(result):
    # at grid nodes inside the taper the B-spline passes through the samples exactly
    pts = interior_points(result, 3, nodes=True)
    assert np.abs(result.map_points(pts) - expected_map(result, pts)).max() < 1e-6
    # between nodes, deep inside, the interpolating cubic reproduces the linear ramps
    pts = interior_points(result, 14)
    err = np.abs(result.map_points(pts) - expected_map(result, pts))
    assert err.max() < 1e-3, f"component errors (x, y, z) {err.max(0)}"


def test_written_h5_gives_p_plus_u(result, tmp_path):
    path = tmp_path / "T.h5"
    result.write_transform(str(path))
    t = sitk.ReadTransform(str(path))
    for margin, nodes, tol in ((3, True, 1e-6), (14, False, 1e-3)):
        pts = interior_points(result, margin, nodes=nodes)
        got = np.array([t.TransformPoint(tuple(p)) for p in pts])
        err = np.abs(got - expected_map(result, pts))
        assert err.max() < tol, f"component errors (x, y, z) {err.max(0)}"


def test_field_is_zero_on_all_six_faces_and_outside(result):
    d = result.displacement
    faces = [d[0], d[-1], d[:, 0], d[:, -1], d[:, :, 0], d[:, :, -1]]
    assert all(np.abs(f).max() == 0.0 for f in faces)
    assert np.abs(d).max() > 1.0  # and not zero everywhere
    g = result.grid
    lo, hi = np.asarray(g.origin), np.asarray(g.origin) + (np.asarray(g.size) - 1) * np.asarray(g.spacing)
    centre = (lo + hi) / 2
    outside = []
    for axis in range(3):
        for end, sign in ((lo, -1.0), (hi, 1.0)):
            p = centre.copy()
            p[axis] = end[axis] + sign * 0.5 * g.spacing[axis]
            outside.append(p)
    outside = np.asarray(outside)
    assert np.abs(result.map_points(outside) - outside).max() < 1e-9


def test_slicer_node_gives_p_plus_u(result, tmp_path):
    pytest.importorskip("slicer", reason="the MRML check needs the slicer-core wheel")
    import slicer
    from DeepRegLib.slicer_adapter import mrml
    scene = slicer.vtkMRMLScene()
    node = mrml.result_to_grid_transform_node(result, scene)
    pts = np.concatenate([interior_points(result, 3, nodes=True), interior_points(result, 14)])
    want = expected_map(result, pts)
    assert np.abs(mrml.transform_node_map_points(node, pts) - result.map_points(pts)).max() < 1e-6
    err = np.abs(mrml.transform_node_map_points(node, pts) - want)
    assert err.max() < 1e-3, f"component errors (x, y, z) {err.max(0)}"
