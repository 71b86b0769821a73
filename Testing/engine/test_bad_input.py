"""Bad input gives a clear DeepRegError (and exit status 2 from the CLI), not a traceback."""
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from DeepRegLib.errors import InputError, ModelNotFoundError
from DeepRegLib.inference import register


def vol(arr, spacing=(1.0, 1.0, 1.0)):
    img = sitk.GetImageFromArray(np.asarray(arr, dtype=np.float32))
    img.SetSpacing(spacing[: img.GetDimension()])
    return img


@pytest.fixture(scope="module")
def good():
    rng = np.random.default_rng(0)
    return vol(rng.random((32, 32, 32)))


def test_2d_image(good):
    with pytest.raises(InputError, match="3D"):
        register(vol(np.ones((32, 32))), good)


def test_single_slice_volume(good):
    with pytest.raises(InputError, match="2D slice"):
        register(good, vol(np.random.rand(1, 32, 32)))


def test_empty_image(good):
    with pytest.raises(InputError, match="empty"):
        register(vol(np.zeros((32, 32, 32))), good)


def test_nan_image(good):
    a = np.random.rand(32, 32, 32)
    a[3, 4, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        register(good, vol(a))


def test_missing_path(good, tmp_path):
    with pytest.raises(InputError, match="not found"):
        register(str(tmp_path / "nope.nii.gz"), good)


def test_unknown_model(good):
    with pytest.raises(ModelNotFoundError, match="available models"):
        register(good, good, model="no_such_model")


def test_mismatched_dimensionality(good):
    img4 = sitk.Image([8, 8, 8, 3], sitk.sitkFloat32)
    with pytest.raises(InputError, match="3D"):
        register(good, img4)


def test_vector_image(good):
    vec = sitk.Image([16, 16, 16], sitk.sitkVectorFloat32, 3)
    with pytest.raises(InputError, match="scalar"):
        register(vec, good)


def test_unavailable_cuda(good):
    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(InputError, match="cuda"):
        register(good, good, device="cuda")


def test_cli_reports_clean_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "DeepRegLib.cli", "register", "--fixed", str(tmp_path / "a.nii.gz"),
                           "--moving", str(tmp_path / "b.nii.gz"), "--output-transform", str(tmp_path / "t.h5")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error: image file not found" in proc.stderr
    assert "Traceback" not in proc.stderr
