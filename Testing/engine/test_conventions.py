"""Known-answer tests of the fixed -> moving convention, three ways.

For an analytic moving intensity ``g(x)`` (x in LPS mm) and a known mapping ``T``,
the warped image must equal ``g(T(p))`` at every fixed voxel ``p``.  Checked for
the engine's own warp (torch), ``SimpleITK.Resample`` with the written ``.h5``,
and the analytic answer, with translation, rotation, oblique direction matrices
and anisotropic spacing.
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from DeepRegLib.grid import Grid, centred_grid
from DeepRegLib.inference import RegistrationResult
from DeepRegLib import transforms as tr


def g(points: np.ndarray) -> np.ndarray:
    """Smooth analytic intensity in LPS mm (varies on ~20 mm scale, so trilinear error is small)."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return np.sin(x / 9.0) + np.cos(y / 11.0) + np.sin(z / 7.0 + 0.3) + 0.01 * x


def rotation_direction(axis, degrees) -> tuple:
    r = sitk.VersorTransform(tuple(float(a) for a in axis), np.deg2rad(degrees))
    return tuple(np.asarray(r.GetMatrix()))


def make_image(size, spacing, origin, direction=None) -> sitk.Image:
    img = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    pts = physical_points(img)
    arr = g(pts).astype(np.float32)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out


def physical_points(img: sitk.Image) -> np.ndarray:
    m = tr.index_to_physical(img)
    size = img.GetSize()
    kk, jj, ii = np.meshgrid(*[np.arange(n, dtype=float) for n in size[::-1]], indexing="ij")
    ijk = np.stack([ii, jj, kk, np.ones_like(ii)], -1)
    return (ijk @ m.T)[..., :3]


CASES = {
    "translation": dict(
        fixed=dict(size=(40, 44, 36), spacing=(2.0, 2.0, 2.0), origin=(-40.0, -44.0, -36.0)),
        moving=dict(size=(48, 52, 44), spacing=(2.0, 2.0, 2.0), origin=(-48.0, -52.0, -44.0)),
        affine=dict(matrix=np.eye(3), translation=(3.0, -2.5, 1.5)),
        displacement=(1.5, 2.0, -1.0),
    ),
    "rotation": dict(
        fixed=dict(size=(40, 44, 36), spacing=(2.0, 2.0, 2.0), origin=(-40.0, -44.0, -36.0)),
        moving=dict(size=(56, 56, 56), spacing=(2.0, 2.0, 2.0), origin=(-56.0, -56.0, -56.0)),
        affine=dict(matrix=np.asarray(rotation_direction((0.2, 0.3, 1.0), 12.0)).reshape(3, 3),
                    translation=(2.0, 0.0, -3.0)),
        displacement=(0.0, 0.0, 0.0),
    ),
    "oblique": dict(
        fixed=dict(size=(40, 44, 36), spacing=(2.0, 2.0, 2.0), origin=(-30.0, -50.0, -20.0),
                   direction=rotation_direction((1.0, -0.5, 0.3), 25.0)),
        moving=dict(size=(56, 56, 56), spacing=(2.0, 2.0, 2.0), origin=(-40.0, -70.0, -60.0),
                    direction=rotation_direction((-0.3, 1.0, 0.2), -20.0)),
        affine=dict(matrix=np.asarray(rotation_direction((0.0, 1.0, 0.0), 8.0)).reshape(3, 3) * 1.05,
                    translation=(-2.0, 3.0, 1.0)),
        displacement=(1.0, -1.5, 2.0),
    ),
    "anisotropic": dict(
        fixed=dict(size=(64, 40, 20), spacing=(1.2, 1.9, 3.5), origin=(38.0, -38.0, 35.0),
                   direction=(-1.0, 0, 0, 0, 0, 1.0, 0, -1.0, 0)),  # a flipped / permuted direction
        moving=dict(size=(30, 90, 50), spacing=(2.8, 1.0, 1.7), origin=(-42.0, -45.0, -42.0)),
        affine=dict(matrix=np.diag([1.0, 0.95, 1.08]), translation=(1.0, 2.0, -1.5)),
        displacement=(-2.0, 0.5, 1.0),
    ),
}


#: the bump is off the fixed image's centre and the field has a ramp different on each axis, so
#: mirrored axes, swapped components or a field about the wrong centre all change the answer
BUMP_OFFSET = np.array([7.0, -5.0, 4.0])
RAMP = np.array([[0.0, 0.03, 0.0], [0.0, 0.0, -0.02], [0.025, 0.0, 0.0]])  # mm per mm, x <- y, y <- z, z <- x


def field(points, vec, centre):
    """The analytic displacement (LPS mm) at ``points`` ``(..., 3)``: (vec + RAMP (p - c)) * bump(p - c - offset)."""
    q = points - centre
    bump = np.exp(-np.sum((q - BUMP_OFFSET) ** 2, -1) / (2 * 25.0 ** 2))[..., None]
    return (np.asarray(vec) + q @ RAMP.T) * bump


def build(case: dict):
    fixed = make_image(**case["fixed"])
    moving = make_image(**case["moving"])
    aff = sitk.AffineTransform(3)
    aff.SetMatrix(tuple(np.asarray(case["affine"]["matrix"]).ravel()))
    aff.SetTranslation(case["affine"]["translation"])
    aff.SetCenter((1.0, -2.0, 3.0))
    lo, hi = (np.min(physical_points(fixed).reshape(-1, 3), 0), np.max(physical_points(fixed).reshape(-1, 3), 0))
    grid = centred_grid((lo + hi) / 2, 3.0, [int(n) for n in np.ceil((hi - lo) / 3.0) + 12])
    centre = (lo + hi) / 2
    disp = tr.taper_border(field(grid.physical_points(), case["displacement"], centre))
    result = RegistrationResult(fixed, aff, disp, grid, "test", "cpu")
    return fixed, moving, result, aff, disp, grid, centre


def expected_map(points, aff, vec, centre):
    q = points + field(points, vec, centre)
    return np.array([aff.TransformPoint(tuple(p)) for p in q.reshape(-1, 3)]).reshape(points.shape)


def interior(img: sitk.Image, margin: int = 3):
    arr_shape = img.GetSize()[::-1]
    return tuple(slice(margin, n - margin) for n in arr_shape)


@pytest.mark.parametrize("name", sorted(CASES))
def test_map_points_matches_analytic(name):
    fixed, moving, result, aff, disp, grid, centre = build(CASES[name])
    pts = physical_points(fixed)[interior(fixed)].reshape(-1, 3)[::37]
    want = expected_map(pts, aff, CASES[name]["displacement"], centre)
    got = result.map_points(pts)
    itk = np.array([result.transform().TransformPoint(tuple(p)) for p in pts])
    assert np.abs(got - want).max() < 0.05, "engine map differs from the analytic map"
    assert np.abs(itk - want).max() < 0.05, "ITK composite differs from the analytic map"


@pytest.mark.parametrize("name", sorted(CASES))
def test_warp_three_ways(name, tmp_path):
    fixed, moving, result, aff, disp, grid, centre = build(CASES[name])
    pts = physical_points(fixed)
    want = g(expected_map(pts, aff, CASES[name]["displacement"], centre))
    h5 = tmp_path / "T.h5"
    result.write_transform(str(h5))
    itk_warp = sitk.GetArrayFromImage(sitk.Resample(moving, fixed, sitk.ReadTransform(str(h5)), sitk.sitkLinear, 0.0))
    eng_warp = sitk.GetArrayFromImage(tr.engine_warp(moving, fixed, aff, disp, grid))
    sl = interior(fixed)
    # only where the mapped point is well inside the moving image
    inside = _inside_moving(moving, expected_map(pts, aff, CASES[name]["displacement"], centre))[sl]
    assert inside.mean() > 0.5
    for label, arr in (("SimpleITK.Resample(.h5)", itk_warp), ("engine warp", eng_warp)):
        err = np.abs(arr[sl] - want[sl])[inside]
        assert err.max() < 0.06, f"{label}: max error {err.max():.3f} vs analytic"
    assert np.abs(itk_warp[sl] - eng_warp[sl])[inside].max() < 0.02


def _inside_moving(moving, mapped, margin=1.0):
    inv = np.linalg.inv(tr.index_to_physical(moving))
    idx = mapped @ inv[:3, :3].T + inv[:3, 3]
    size = np.asarray(moving.GetSize())
    return np.all((idx >= margin) & (idx <= size - 1 - margin), axis=-1)


def test_translation_is_the_fixed_to_moving_direction():
    """A moving image whose feature sits at +10 mm in x: T must map the fixed feature's point to +10 mm."""
    fixed = make_image((40, 40, 40), (2.0, 2.0, 2.0), (-40.0, -40.0, -40.0))
    aff = sitk.AffineTransform(3)
    aff.SetTranslation((10.0, 0.0, 0.0))
    result = RegistrationResult(fixed, aff, None, None, "test", "cpu")
    assert np.allclose(result.map_points(np.array([[0.0, 0.0, 0.0]])), [[10.0, 0.0, 0.0]])


def test_round_trip_h5(tmp_path):
    fixed, moving, result, aff, disp, grid, centre = build(CASES["oblique"])
    path = tmp_path / "rt.h5"
    result.write_transform(str(path))
    back = sitk.ReadTransform(str(path))
    pts = physical_points(fixed).reshape(-1, 3)[::101]
    a = np.array([result.transform().TransformPoint(tuple(p)) for p in pts])
    b = np.array([back.TransformPoint(tuple(p)) for p in pts])
    assert np.abs(a - b).max() < 1e-6


def test_displacement_is_zero_outside_grid_and_continuous_at_border():
    fixed, moving, result, aff, disp, grid, centre = build(CASES["translation"])
    far = np.array([[500.0, 500.0, 500.0]])
    assert np.allclose(result.map_points(far), [aff.TransformPoint((500.0, 500.0, 500.0))])
    assert np.abs(disp[0]).max() == 0 and np.abs(disp[:, :, -1]).max() == 0
