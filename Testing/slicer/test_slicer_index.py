"""Readiness for the Slicer Extensions Index, checked the way its scripts check (no network here).

``scripts/check_description_files.py`` of Slicer/ExtensionsIndex (read at commit 07f1d1b2781c)
names the extension after its description file, compares it with ``project()`` of the top-level
CMakeLists.txt, reads ``EXTENSION_ICONURL`` and ``EXTENSION_SCREENSHOTURLS`` with regular
expressions and downloads them (so they must be literal ``http`` strings, not ``${...}``), wants a
licence file at the root and a repository under 100 MB.  Its schema
(``slicer-extension-catalog-entry-schema-v1.0.1``) requires ``$schema``, ``category``, ``scm_url``
and allows no other keys than the ones listed below.  Whether the URLs resolve can only be checked
once the repository is published (``DeepRegLib.project.PUBLISHED``); here each raw URL must name a
file of this repository.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from DeepRegLib import project

REPO = Path(__file__).resolve().parents[2]
CMAKE = (REPO / "CMakeLists.txt").read_text()
DESCRIPTION = REPO / "docs" / "DeepReg.json"
SCHEMA_KEYS = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "dicom_support_rule", "build_subdirectory", "enabled", "tier"}
# the Index's list of accepted categories includes "Registration" (ACCEPTED_EXTENSION_CATEGORIES)
OWNER_NAME = project.REPOSITORY_URL.split("github.com/")[1]


def _cmake(var: str) -> str:
    m = re.findall(rf'set\s*\({var}\s*"([^"]+)"[ ]*\)', CMAKE, re.I | re.M)  # the Index's own patterns
    assert m, f"{var} is not a literal string in CMakeLists.txt"
    return m[0]


def test_description_file_matches_cmake_project():
    meta = json.loads(DESCRIPTION.read_text())
    assert b"\r" not in DESCRIPTION.read_bytes()  # LF only (check_json_file_format)
    name = DESCRIPTION.stem
    project_name = re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", CMAKE, re.I | re.M)[0]
    assert project_name == name == "DeepReg" and not name.lower().startswith("slicer")
    assert {"$schema", "category", "scm_url"} <= set(meta) <= SCHEMA_KEYS
    assert meta["category"] == "Registration" == _cmake("EXTENSION_CATEGORY")
    assert meta["scm_url"].startswith("https://") and meta["scm_url"].removesuffix(".git") == project.REPOSITORY_URL
    repo_name = meta["scm_url"].rstrip("/").split("/")[-1].removesuffix(".git")
    assert repo_name.startswith("Slicer")  # check_git_repository_name
    assert meta["scm_revision"]
    # the PyTorch extension (torch is installed through it, never with pip_install by this module)
    assert meta["build_dependencies"] == ["PyTorch"] and 'set(EXTENSION_DEPENDS "PyTorch")' in CMAKE


def test_cmake_urls_are_literal_and_agree_with_project_py():
    icon = _cmake("EXTENSION_ICONURL")
    shots = _cmake("EXTENSION_SCREENSHOTURLS").split()
    for url in [icon, *shots, _cmake("EXTENSION_HOMEPAGE")]:
        assert url.startswith("https://") and "${" not in url and OWNER_NAME in url, url
    assert icon == project.ICON_URL and tuple(shots) == project.SCREENSHOT_URLS
    assert _cmake("EXTENSION_HOMEPAGE") == project.HOMEPAGE_URL
    for url in (icon, *shots):  # raw URLs of files of this repository (PNG images)
        rel = url.split(f"{OWNER_NAME}/main/")[1]
        assert (REPO / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel
    for url in (project.HOMEPAGE_URL, project.HELP_URL):
        assert (REPO / url.split("/blob/main/")[1].split("#")[0]).is_file(), url


def test_placeholder_urls_are_said_where_a_maintainer_looks():
    """The organisation does not exist yet: CMakeLists.txt and project.py say so (until PUBLISHED)."""
    if project.PUBLISHED:
        return
    assert "DO NOT EXIST YET" in CMAKE and "DO NOT EXIST YET" in (REPO / "DeepRegLib" / "project.py").read_text()
    assert "not published" in (REPO / "docs" / "slicer.md").read_text()


def test_contributors_and_description():
    contributors = _cmake("EXTENSION_CONTRIBUTORS")
    for c in contributors.split(","):
        assert re.fullmatch(r"[^()]+ \([^()]+\)", c.strip()), f"'{c}' is not 'Name (Organisation)'"
    desc = _cmake("EXTENSION_DESCRIPTION")
    assert "prostate" in desc and "CT" in desc and "research use" in desc  # not "brain MRI only"


def test_licences_at_the_root_and_beside_the_weights():
    assert (REPO / "LICENSE.txt").is_file()
    text = (REPO / "Resources" / "models" / "LICENSE.txt").read_text()
    models = sorted(p.parent.name for p in (REPO / "Resources" / "models").glob("*/weights.pt"))
    assert models
    for m in models:
        assert m in text, f"{m} missing from Resources/models/LICENSE.txt"
    assert "NON-COMMERCIAL" in text and "BY-NC-SA 3.0" in text


def test_repository_under_100_mb_with_the_weights():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True).stdout.split("\0")
    total = sum((REPO / f).stat().st_size for f in files if f and (REPO / f).is_file())
    assert total < 100 * 2 ** 20, f"{total / 2 ** 20:.1f} MB"


def test_module_never_pip_installs_torch():
    """torch comes only through the PyTorch extension (PyTorchUtils), never pip_install from the module."""
    code = (REPO / "DeepReg" / "DeepReg.py").read_text()
    assert "PyTorchUtilsLogic().installTorch(" in code
    calls = re.findall(r"pip_install\(([^)]*)\)", code)
    assert all("torch" not in c for c in calls), calls  # (Dask may be suggested in a message; torch never)
