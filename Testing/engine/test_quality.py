"""Known answers of DeepRegLib.quality.assess: a good mapping is trusted, a bad one flagged (no model needed)."""
import math
import time

import numpy as np
import pytest
import SimpleITK as sitk

from DeepRegLib.grid import Grid
from DeepRegLib.inference import RegistrationResult
from DeepRegLib.quality import QualityVerdict, affine_pose, assess


def blobs(n=32, spacing=2.0, seed=0):
    """A smooth random volume (a few Gaussian blobs on a dark background), LPS identity direction."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:n, :n, :n].astype(np.float32)
    arr = np.zeros((n, n, n), np.float32)
    for _ in range(12):
        c = rng.uniform(n * 0.25, n * 0.75, 3)
        r = rng.uniform(2, 5)
        arr += rng.uniform(0.5, 1.0) * np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / (2 * r * r))
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((spacing,) * 3)
    img.SetOrigin((-n * spacing / 2,) * 3)
    return img


@pytest.fixture(scope="module")
def pair():
    return blobs(), blobs()


def result(fixed, affine=None, displacement=None):
    n = fixed.GetSize()
    grid = Grid(origin=fixed.GetOrigin(), spacing=fixed.GetSpacing(), size=n)
    disp = np.zeros(tuple(n[::-1]) + (3,)) if displacement is None else displacement
    return RegistrationResult(fixed, affine or sitk.AffineTransform(3), disp, grid, "test", "cpu")


def test_identity_on_identical_images_is_trusted(pair):
    f, m = pair
    v = assess(result(f), f, m)
    assert isinstance(v, QualityVerdict)
    assert v.trusted and v.flags == []
    assert v.folding_percent == 0.0 and v.max_displacement_mm == 0.0
    assert v.similarity_after == pytest.approx(v.similarity_before) and v.similarity_after > 0.9
    assert "no problem" in v.summary()


def test_affine_only_identity_is_trusted(pair):
    f, m = pair
    res = RegistrationResult(f, sitk.AffineTransform(3), None, None, "test", "cpu", mode="affine")
    v = assess(res, f, m)
    assert v.trusted and v.folding_percent == 0.0 and v.max_displacement_mm == 0.0


def test_random_large_displacement_is_flagged(pair):
    f, m = pair
    rng = np.random.default_rng(1)
    disp = rng.normal(0.0, 15.0, tuple(f.GetSize()[::-1]) + (3,))
    v = assess(result(f, displacement=disp), f, m)
    assert not v.trusted
    text = " ".join(v.flags)
    assert "folds" in text and "moves points" in text and "worse than the affine stage" in text
    assert v.similarity_after < v.similarity_before
    assert "NOT TRUSTED" in v.summary()


def test_displacement_threshold_is_configurable(pair):
    f, m = pair
    disp = np.zeros(tuple(f.GetSize()[::-1]) + (3,))
    disp[..., 0] = 3.0  # a smooth, non-folding 3 mm shift (interior; the spline is zero at the border)
    v = assess(result(f, displacement=disp), f, m, max_displacement_mm=1.0)
    assert any("moves points by up to 3.0 mm" in s for s in v.flags)
    assert v.folding_percent == 0.0


@pytest.mark.parametrize("matrix, words", [
    (np.diag([2.0, 2.0, 2.0]), "scales"),
    (np.diag([0.4, 1.0, 1.0]), "scales"),
    (np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]]), "rotates by 90"),  # a permuted direction matrix
    (np.diag([-1.0, 1.0, 1.0]), "mirrors"),
    (np.diag([0.8, 1.0, 1.2]), "stretches one axis 1.50 times"),  # within 0.6-1.6, but not a head's shape
])
def test_implausible_affine_says_check_the_header(pair, matrix, words):
    f, m = pair
    a = sitk.AffineTransform(3)
    a.SetMatrix(tuple(float(v) for v in np.asarray(matrix).ravel()))
    v = assess(result(f, affine=a), f, m)
    assert not v.trusted
    flag = next(s for s in v.flags if words in s)
    assert "check the header" in flag


def test_reflection_counts_as_folding_everywhere(pair):
    f, m = pair
    a = sitk.AffineTransform(3)
    a.SetMatrix((-1.0, 0, 0, 0, 1, 0, 0, 0, 1))
    assert assess(result(f, affine=a), f, m).folding_percent == 100.0


def test_affine_pose_known_answers():
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    scales, angle, refl = affine_pose(np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1.1, 1.0, 0.9]))
    assert angle == pytest.approx(30.0, abs=1e-6) and not refl
    assert scales == pytest.approx((0.9, 1.0, 1.1))


def test_assess_is_cheap_on_a_network_sized_grid():
    f = blobs(n=96, spacing=2.0, seed=3)  # 192 mm box, the size of the brain models' 2 mm grid
    rng = np.random.default_rng(0)
    disp = rng.normal(0.0, 0.3, (96, 96, 96, 3))
    res = result(f, displacement=disp)
    res.transform()  # built once by the CLI anyway (written to file before the verdict)
    import torch
    threads = torch.get_num_threads(), sitk.ProcessObject_GetGlobalDefaultNumberOfThreads()
    torch.set_num_threads(1)  # two threads on two cores shared with other jobs were 5-10x slower
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(1)
    try:
        assess(res, f, f)
        t0 = time.perf_counter()
        assess(res, f, f)
        assert time.perf_counter() - t0 < 1.0  # 0.2-0.3 s on one thread here; loose for a loaded machine
    finally:
        torch.set_num_threads(threads[0])
        sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(threads[1])


def test_real_pair_upright_is_trusted_and_a_rotated_header_is_flagged(sample_pair):
    """The sample brains at 2 mm: registered as they are, the verdict finds nothing wrong; with the
    moving image's direction matrix rotated by 90 degrees (a wrong header of a brain that is physically
    upright) the result is flagged and the flag says to check the header."""
    from DeepRegLib.inference import register
    f, m = (sitk.BinShrink(sitk.ReadImage(str(sample_pair[k]["image"]), sitk.sitkFloat32), [2, 2, 2])
            for k in ("fixed", "moving"))
    res = register(f, m, device="cpu", refine=False)
    good = assess(res, f, m)
    assert good.trusted, good.flags
    assert good.similarity_after > good.similarity_before
    bad_header = sitk.Image(m)
    d = np.asarray(m.GetDirection()).reshape(3, 3) @ np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    bad_header.SetDirection(tuple(d.ravel()))
    res = register(f, bad_header, device="cpu", refine=False)
    bad = assess(res, f, bad_header)
    assert not bad.trusted
    assert any("check the header" in s for s in bad.flags), bad.flags
