"""Dice with known answers, from numpy arrays and from SimpleITK images alike."""
import numpy as np
import pytest
import SimpleITK as sitk

from DeepRegLib.metrics import dice_scores, dice_summary


def _maps():
    a = np.zeros((4, 5, 6), np.int32)
    b = np.zeros_like(a)
    a[0, :, :3] = 10  # 15 voxels
    b[0, :, :2] = 10  # 10 voxels, all inside a's label 10
    a[2] = 1002  # 30 voxels
    b[2:4] = 1002  # 60 voxels, 30 shared
    return a, b


def test_dice_known_answer_arrays_and_images():
    a, b = _maps()
    want = {10: 2 * 10 / 25, 1002: 2 * 30 / 90}
    assert dice_scores(a, b) == pytest.approx(want)
    assert dice_scores(sitk.GetImageFromArray(a), sitk.GetImageFromArray(b)) == pytest.approx(want)
    s = dice_summary(sitk.GetImageFromArray(a), b)
    assert s["subcortical"] == pytest.approx(want[10]) and s["cortical"] == pytest.approx(want[1002])
    assert s["all"] == pytest.approx((want[10] + want[1002]) / 2)
