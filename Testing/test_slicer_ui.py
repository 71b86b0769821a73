"""The Qt Designer file of the Slicer module: every widget the Widget code uses exists with the expected class.

Parses ``DeepReg/Resources/UI/DeepReg.ui`` as XML (no Qt needed), reads the ``self.ui.<name>`` uses
in ``DeepReg/DeepReg.py`` and the ``UI_WIDGETS`` table there, and checks the parameter-node bindings.
"""
from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UI = REPO / "DeepReg" / "Resources" / "UI" / "DeepReg.ui"
MODULE = REPO / "DeepReg" / "DeepReg.py"


@pytest.fixture(scope="module")
def ui_widgets():
    root = ET.parse(UI).getroot()
    assert root.tag == "ui"
    return {w.get("name"): w for w in root.iter("widget")}, root


def _ui_widgets_table() -> dict:
    tree = ast.parse(MODULE.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "UI_WIDGETS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("UI_WIDGETS not found in DeepReg.py")


def test_every_used_widget_exists_with_expected_class(ui_widgets):
    widgets, _ = ui_widgets
    table = _ui_widgets_table()
    used = set(re.findall(r"\bui\.([A-Za-z_]\w*)", MODULE.read_text()))
    assert used, "no ui.<widget> uses found"
    missing_from_table = used - set(table)
    assert not missing_from_table, f"widgets used in DeepReg.py but not in UI_WIDGETS: {missing_from_table}"
    for name, cls in table.items():
        assert name in widgets, f"{name} missing from {UI.name}"
        assert widgets[name].get("class") == cls, f"{name}: {widgets[name].get('class')} != {cls}"


def test_top_level_and_custom_widgets_declared(ui_widgets):
    widgets, root = ui_widgets
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "DeepReg"
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in widgets.values()}
    custom = {c for c in used if c.startswith(("ctk", "qMRML", "qSlicer"))}
    assert custom <= declared, f"custom widgets without a <customwidget> entry: {custom - declared}"


def _prop(widget, name):
    for p in widget.findall("property"):
        if p.get("name") == name:
            return p
    return None


def test_node_selectors(ui_widgets):
    widgets, root = ui_widgets
    for name in ("fixedVolumeSelector", "movingVolumeSelector"):
        w = widgets[name]
        assert [s.text for s in _prop(w, "nodeTypes").iter("string")] == ["vtkMRMLScalarVolumeNode"]
        hidden = {s.text for s in _prop(w, "hideChildNodeTypes").iter("string")}
        assert {"vtkMRMLLabelMapVolumeNode", "vtkMRMLVectorVolumeNode"} <= hidden  # scalar volumes only
    t = widgets["outputTransformSelector"]
    assert [s.text for s in _prop(t, "nodeTypes").iter("string")] == ["vtkMRMLGridTransformNode"]
    assert _prop(t, "noneEnabled").findtext("bool") == "true"  # "Create new" is the default
    assert "new" in _prop(t, "noneDisplay").findtext("string").lower()
    # every node selector receives the scene
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    selectors = {n for n, w in widgets.items() if w.get("class") == "qMRMLNodeComboBox"}
    assert selectors <= receivers


def test_parameter_bindings_match_parameter_node(ui_widgets):
    widgets, _ = ui_widgets
    bound = {}
    for name, w in widgets.items():
        p = _prop(w, "SlicerParameterName")
        if p is not None:
            bound[name] = p.findtext("string")
    fields = set(re.findall(r"^\s{8}(\w+): ", MODULE.read_text().split("class DeepRegParameterNode")[1].split('else:')[0],
                            re.M))
    assert set(bound.values()) <= fields, f"bindings to unknown parameters: {set(bound.values()) - fields}"
    assert {"fixedVolume", "movingVolume", "outputTransform", "outputVolume", "opacity"} <= set(bound.values())
    for checkable in ("flickerButton", "showJacobianButton"):
        assert _prop(widgets[checkable], "checkable").findtext("bool") == "true"
    assert _prop(widgets["registerButton"], "enabled").findtext("bool") == "false"  # until inputs are valid


def test_extension_layout_and_cmake_lists():
    """Slicer conventions: one top-level module script, every DeepRegLib file and bundled model installed."""
    top = (REPO / "CMakeLists.txt").read_text()
    for needle in ("project(DeepReg)", "EXTENSION_HOMEPAGE", 'EXTENSION_CATEGORY "Registration"',
                   "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                   "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS", "find_package(Slicer",
                   "include(${Slicer_USE_FILE})", "add_subdirectory(DeepReg)",
                   "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert needle in top, needle
    assert [p.name for p in (REPO / "DeepReg").glob("*.py")] == ["DeepReg.py"]
    mod = (REPO / "DeepReg" / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule" in mod and "slicer_add_python_unittest" in mod
    listed = set(re.findall(r"^\s+(\S+)$", mod, re.M))
    for p in sorted((REPO / "DeepRegLib").rglob("*.py")):
        assert str(p.relative_to(REPO)) in listed, f"{p.relative_to(REPO)} not listed in DeepReg/CMakeLists.txt"
    for p in sorted((REPO / "Resources" / "models").rglob("*")):
        if p.is_file():
            assert str(p.relative_to(REPO)) in listed, f"{p.relative_to(REPO)} not listed"
    for rel in ("Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui"):
        assert rel in mod
    assert (REPO / "DeepReg" / "Resources" / "Icons" / "DeepReg.png").is_file()
    for p in re.findall(r"^\s+(Resources/\S+)$", mod, re.M):
        if "${" not in p:
            assert (REPO / p).is_file(), p


def test_model_cards_listed_without_torch():
    """The panel fills its model list before torch is installed: listing cards must not import torch."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['torch'] = None\n"
            "from DeepRegLib import DEFAULT_MODEL, mrml\n"
            "cards = mrml.list_model_cards()\n"
            "assert DEFAULT_MODEL in cards and cards[DEFAULT_MODEL]['input']['spacing'] > 0, cards\n"
            "print(mrml.model_tooltip(cards[DEFAULT_MODEL]))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "grid [80, 96, 80]" in proc.stdout
