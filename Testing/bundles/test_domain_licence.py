"""Domain check (inputs unlike the model's training data) and licence notices, engine side and CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from DeepRegLib import DEFAULT_MODEL
from DeepRegLib.bundles import load_bundle
from DeepRegLib.bundles.domain import DomainSpec, check_image, check_pair
from DeepRegLib.imageio import read_image
from DeepRegLib.bundles.licence import LicenceStore, is_non_commercial, licence_notice

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "Resources" / "SampleData"


@pytest.fixture(scope="module")
def card():
    return load_bundle(DEFAULT_MODEL).card


@pytest.fixture(scope="module")
def brain():
    return read_image(SAMPLE / "OASIS-TRT-20-17" / "t1weighted_brain.nii.gz")


def test_spec_from_card(card):
    spec = DomainSpec.from_card(card)
    assert spec.modality == "MR" and spec.skull_stripped and "skull-stripped" in spec.expects
    assert not DomainSpec.from_card({"input": {"expects": "CT of the abdomen"}}).skull_stripped


def test_sample_brains_pass(card, brain):
    moving = read_image(SAMPLE / "OASIS-TRT-20-18" / "t1weighted_brain.nii.gz")
    assert check_pair(brain, moving, card) == []


def test_not_skull_stripped_synthetic_scalp(card, brain):
    """The sample brain inside a 4-30 mm shell of bright 'scalp and skull marrow': the foreground of a head."""
    arr = sitk.GetArrayFromImage(brain)
    big = sitk.ConstantPad(brain, [40] * 3, [40] * 3, 0.0)  # room for the head around the brain (1 mm voxels)
    arr = sitk.GetArrayFromImage(big)
    nz = np.nonzero(arr > 0)
    lo, hi = np.array([a.min() for a in nz]), np.array([a.max() for a in nz])
    c, r = (lo + hi) / 2.0, (hi - lo) / 2.0
    zz, yy, xx = np.ogrid[:arr.shape[0], :arr.shape[1], :arr.shape[2]]

    def inside(margin):  # ellipsoid around the brain's bounding box, grown by ``margin`` mm
        return (((zz - c[0]) / (r[0] + margin)) ** 2 + ((yy - c[1]) / (r[1] + margin)) ** 2
                + ((xx - c[2]) / (r[2] + margin)) ** 2) <= 1.0

    shell = inside(25) & ~inside(5)
    brain = big
    head = arr.copy()
    head[shell] = np.percentile(arr[arr > 0], 90)
    img = sitk.GetImageFromArray(head)
    img.CopyInformation(brain)
    w = check_image(img, DomainSpec.from_card(card), "the moving image")
    assert len(w) == 1 and "does not look skull-stripped" in w[0] and "ml" in w[0], w
    assert check_image(big, DomainSpec.from_card(card), "the brain alone") == []


def test_slab_and_thick_slices(card, brain):
    spec = DomainSpec.from_card(card)
    slab = brain[:, :, 70:80]  # 10 slices of 1 mm
    w = check_image(slab, spec, "the fixed image")
    assert any("2D-like slab" in x and "256 x 256 x 10 mm" in x for x in w), w
    thick = sitk.Resample(brain, [256, 256, 32], sitk.Transform(), sitk.sitkLinear, brain.GetOrigin(),
                          (1.0, 1.0, 5.0), brain.GetDirection(), 0.0, sitk.sitkFloat32)
    assert any("thick slices" in x for x in check_image(thick, spec, "x"))


def test_ct_values_warned(card, brain):
    ct = sitk.Cast(brain, sitk.sitkFloat32) - 1024.0  # air at -1024 HU
    ct = sitk.Mask(ct, sitk.BinaryThreshold(brain, 1e-3, 1e9), outsideValue=-1024.0) + 0.0
    ct = ct * 1.0
    arr = sitk.GetArrayFromImage(ct)
    arr[arr > -1000] = 40.0  # soft tissue
    arr[60:62] = 1500.0  # some bone
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(brain)
    w = check_image(img, DomainSpec.from_card(card), "the fixed image")
    assert any("looks like CT" in x for x in w), w
    assert not any("does not look skull-stripped" in x for x in w)  # one clear reason, not two


def test_real_ct_head_and_synthseg_head(card, shared_data_root):
    spec = DomainSpec.from_card(card)
    ct = read_image(shared_data_root / "ct-head" / "cranium_ct.nii.gz")
    assert any("looks like CT" in x for x in check_image(ct, spec, "ct"))
    slab = read_image(shared_data_root / "ct-totalsegmentator" / "example_ct_dicom_20slices.nii.gz")
    assert any("slab" in x for x in check_image(slab, spec, "slab"))
    # a whole-head MR-like image from a real SynthSeg head label map (brain and non-brain tissue)
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data_root / "brain-synthseg-labelmaps" /
                                                    "training_seg_01.nii.gz"))).astype(int)
    img = np.zeros(lab.shape, np.float32)
    img[lab > 0] = 60.0                     # grey matter, CSF and the rest
    img[np.isin(lab, [2, 7, 41, 46])] = 100.0  # white matter
    img[lab >= 500] = 80.0                  # scalp, fat, muscle, skull marrow
    head = sitk.GetImageFromArray(img)
    w = check_image(head, spec, "head")
    assert any("does not look skull-stripped" in x for x in w), w
    brain_only = img * ((lab > 0) & (lab < 500))
    assert check_image(sitk.GetImageFromArray(brain_only.astype(np.float32)), spec, "brain") == []


@pytest.fixture(scope="module")
def shared_data_root():
    root = REPO.parent / "shared" / "data"
    if not (root / "ct-head").is_dir():
        pytest.skip(f"real data not found at {root} (../shared/data is only on CI and developer machines)")
    return root


# ----------------------------------------------------------------------------- licence
def test_licence_store_accept_once(card, tmp_path):
    assert is_non_commercial(card)
    assert not is_non_commercial({"name": "x", "licence": "Apache-2.0"})
    store = LicenceStore(tmp_path / "l.json")
    assert not store.accepted(card)
    store.accept(card)
    assert LicenceStore(tmp_path / "l.json").accepted(card)  # persisted
    changed = dict(card, licence=card["licence"] + " (amended)")
    assert not store.accepted(changed)  # a new licence text is asked again
    assert LicenceStore(tmp_path / "l.json").accepted({"name": "free", "licence": "CC0"})
    printed = []
    assert store.print_once(card, printed.append) and not store.print_once(card, printed.append)
    assert len(printed) == 1 and "non-commercial" in printed[0] and "BY-NC-SA" in printed[0]
    assert ("DeepReg" + "Net") not in licence_notice(card)


def test_cli_prints_licence_once_and_domain_warning(tmp_path, brain):
    """``deepreg register`` prints the licence on first use only, and warns about a slab input."""
    slab = brain[:, :, 60:100]
    sitk.WriteImage(slab, str(tmp_path / "slab.nii.gz"))
    env = {"DEEPREG_CONFIG_DIR": str(tmp_path / "cfg"), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2",
           "PATH": "/usr/bin:/bin"}
    args = [sys.executable, "-m", "DeepRegLib.cli", "register", "--fixed", str(SAMPLE / "OASIS-TRT-20-17" /
            "t1weighted_brain.nii.gz"), "--moving", str(tmp_path / "slab.nii.gz"), "--mode", "affine",
            "--output-transform", str(tmp_path / "T.h5")]
    runs = [subprocess.run(args, capture_output=True, text=True, env=env, timeout=300) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
        assert "warning: the moving image looks like a 2D-like slab" in r.stderr
    assert "licence notice" in runs[0].stderr and "BY-NC-SA" in runs[0].stderr
    assert "licence notice" not in runs[1].stderr
    assert json.loads((tmp_path / "cfg" / "licences.json").read_text())["printed"]
