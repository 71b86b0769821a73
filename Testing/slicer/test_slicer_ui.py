"""The Qt Designer file and the signals of the Slicer module, checked without Qt.

Parses ``DeepReg/Resources/UI/DeepReg.ui`` as XML, reads the ``self.ui.<name>`` uses and the
``.<signal>.connect(...)`` calls in ``DeepReg/DeepReg.py``, and checks them against the signals and
properties of each widget class.  No Slicer application can run here, so the tables below were
taken by reading the sources (verified only by reading): Slicer at commit 583e9b37d50e
(``Libs/MRML/Widgets/qMRMLNodeComboBox.h``, ``qMRMLWidget.h``,
``Base/Python/slicer/parameterNodeWrapper/guiConnectors.py``), CTK at commit 868d56c72d28
(``Libs/Widgets/ctkSliderWidget.h``, ``ctkCollapsibleButton.h``), and Qt 5's documented signals
and properties of QAbstractButton, QComboBox, QCheckBox, QLabel, QProgressBar, QPlainTextEdit, QTimer.
"""
from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
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
    # every transform class: a deformable result is a plain vtkMRMLTransformNode (what Slicer reloads it as)
    assert [s.text for s in _prop(t, "nodeTypes").iter("string")] == ["vtkMRMLTransformNode"]
    for name in ("movingLabelsSelector", "fixedMaskSelector", "movingMaskSelector"):
        assert [s.text for s in _prop(widgets[name], "nodeTypes").iter("string")] == [
            "vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode"]
    assert [s.text for s in _prop(widgets["initialTransformSelector"], "nodeTypes").iter("string")] == [
        "vtkMRMLLinearTransformNode"]
    assert _prop(t, "noneEnabled").findtext("bool") == "true"  # "Create new" is the default
    assert "new" in _prop(t, "noneDisplay").findtext("string").lower()
    # every node selector receives the scene
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    selectors = {n for n, w in widgets.items() if w.get("class") == "qMRMLNodeComboBox"}
    assert selectors <= receivers


def _parameter_node_body() -> str:
    return MODULE.read_text().split("class DeepRegParameterNode")[1].split("# Widget")[0]


def test_parameter_bindings_match_parameter_node(ui_widgets):
    widgets, _ = ui_widgets
    bound = {}
    for name, w in widgets.items():
        p = _prop(w, "SlicerParameterName")
        if p is not None:
            bound[name] = p.findtext("string")
    fields = set(re.findall(r"^\s{4}(\w+): ", _parameter_node_body(), re.M))
    assert set(bound.values()) <= fields, f"bindings to unknown parameters: {set(bound.values()) - fields}"
    assert {"fixedVolume", "movingVolume", "outputTransform", "outputVolume", "opacity", "initialTransform",
            "movingLabels", "fixedMask", "movingMask", "skipAffineStage", "saveAffinePart"} <= set(bound.values())
    # device and mode are bound through the parameter node (Choice parameters of constants), not synced by hand;
    # the model list is filled and synced by hand (read lazily; readable names; a dropped model must not raise)
    assert {bound.get("deviceComboBox"), bound.get("modeComboBox")} == {"device", "mode"}
    assert "modelComboBox" not in bound
    code = MODULE.read_text()
    for combo in ("deviceComboBox", "modeComboBox"):
        assert not re.search(rf"ui\.{combo}\.\w+\.connect\(", code), f"{combo} must not be synced by hand"
    body = _parameter_node_body()
    for field in ("device", "mode"):
        assert re.search(rf"^\s+{field}: Annotated\[str, Choice\(", body, re.M), f"{field} needs a Choice annotation"
    assert re.search(r"^\s+model: str = ", body, re.M)
    assert _prop(widgets["showJacobianButton"], "checkable").findtext("bool") == "true"
    assert _prop(widgets["flickerButton"], "checkable") is None  # held to compare: pressed/released
    assert _prop(widgets["registerButton"], "enabled").findtext("bool") == "false"  # until inputs are valid


#: DeepRegLib subpackages that the Slicer extension does not carry (Dask batch, demos)
NOT_IN_SLICER = ("batch", "demos")


def test_extension_layout_and_cmake_lists():
    """Slicer conventions: one top-level module script, every DeepRegLib file the module needs and every
    bundled model installed; the batch and demo packages not."""
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
        rel = p.relative_to(REPO)
        if rel.parts[1] in NOT_IN_SLICER:
            assert str(rel) not in listed, f"{rel} is copied into Slicer; {NOT_IN_SLICER} run outside it"
        else:
            assert str(rel) in listed, f"{rel} not listed in DeepReg/CMakeLists.txt"
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
            "from DeepRegLib import DEFAULT_MODEL\n"
            "from DeepRegLib.slicer_adapter import mrml\n"
            "cards = mrml.list_model_cards()\n"
            "assert DEFAULT_MODEL in cards and cards[DEFAULT_MODEL]['input']['spacing'] > 0, cards\n"
            "for name, card in sorted(cards.items()):\n"
            "    print('##', name); print(mrml.model_tooltip(card))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    tips = {b.split("\n", 1)[0].strip(): b for b in proc.stdout.split("## ")[1:]}
    from DeepRegLib import DEFAULT_MODEL
    assert "kind: light-weight" in tips[DEFAULT_MODEL] and "input grid: 80x96x80 voxels at 2 mm" in tips[DEFAULT_MODEL]
    assert "validation Dice: subcortical" in tips[DEFAULT_MODEL] and "register() " in tips[DEFAULT_MODEL]
    assert "default refinement: " in tips[DEFAULT_MODEL]  # what "Deformable" runs after the network
    if "crd_lowres_brain" in tips:  # the low-resolution model says so, and where its network runs
        assert "kind: low-resolution" in tips["crd_lowres_brain"]
        assert "network runs at 4 mm on 40x48x40" in tips["crd_lowres_brain"]


# ----------------------------------------------------------------------------- signals and properties (sources)
#: Signals per widget class, as declared in the sources named in the module docstring (Qt: inherited ones too).
SIGNALS = {
    "QPushButton": {"clicked", "toggled", "pressed", "released", "objectNameChanged", "destroyed"},
    "QCheckBox": {"clicked", "toggled", "pressed", "released", "stateChanged"},
    "QComboBox": {"activated", "currentIndexChanged", "currentTextChanged", "editTextChanged", "highlighted",
                  "textActivated", "textHighlighted"},
    "QPlainTextEdit": {"textChanged", "blockCountChanged", "copyAvailable", "cursorPositionChanged",
                       "modificationChanged", "redoAvailable", "selectionChanged", "undoAvailable", "updateRequest"},
    "QProgressBar": {"valueChanged"},
    "QLabel": {"linkActivated", "linkHovered"},
    "ctkSliderWidget": {"valueChanged", "valueIsChanging", "decimalsChanged"},
    "ctkCollapsibleButton": {"contentsCollapsed", "clicked", "toggled", "pressed", "released"},
    "ctkPathLineEdit": {"currentPathChanged", "validInputChanged"},
    "QSpinBox": {"valueChanged", "textChanged", "editingFinished"},
    "qMRMLNodeComboBox": {"currentNodeChanged", "currentNodeIDChanged", "nodeActivated", "nodeAdded",
                          "nodeAddedByUser", "nodeAddedByUserAction", "nodeAboutToBeRemoved", "currentNodeRenamed",
                          "nodeAboutToBeEdited"},
}
#: Properties the .ui file may set, per class (Q_PROPERTY in the sources; Qt: QWidget + the class's own).
_QWIDGET = {"geometry", "toolTip", "enabled", "visible", "sizePolicy", "minimumSize", "maximumSize", "objectName"}
PROPERTIES = {
    "QPushButton": _QWIDGET | {"text", "checkable", "checked", "icon", "flat", "default", "autoDefault"},
    "QCheckBox": _QWIDGET | {"text", "checkable", "checked", "tristate"},
    "QComboBox": _QWIDGET | {"editable", "currentIndex", "currentText", "maxVisibleItems"},
    "QPlainTextEdit": _QWIDGET | {"readOnly", "plainText", "placeholderText", "maximumBlockCount"},
    "QProgressBar": _QWIDGET | {"value", "minimum", "maximum", "textVisible", "format"},
    "QLabel": _QWIDGET | {"text", "wordWrap", "alignment", "textFormat", "openExternalLinks"},
    "QSpinBox": _QWIDGET | {"minimum", "maximum", "value", "singleStep", "suffix", "prefix"},
    "ctkPathLineEdit": _QWIDGET | {"filters", "nameFilters", "currentPath", "label", "showBrowseButton"},
    "ctkSliderWidget": _QWIDGET | {"decimals", "singleStep", "pageStep", "minimum", "maximum", "value", "prefix",
                                   "suffix", "tickInterval", "tracking", "spinBoxVisible", "popupSlider"},
    "ctkCollapsibleButton": _QWIDGET | {"text", "collapsed", "collapsedHeight", "flat", "checked", "checkable"},
    "qMRMLNodeComboBox": _QWIDGET | {"nodeTypes", "showHidden", "showChildNodeTypes", "hideChildNodeTypes",
                                     "baseName", "noneEnabled", "addEnabled", "removeEnabled", "editEnabled",
                                     "renameEnabled", "selectNodeUponCreation", "noneDisplay"},
    "qMRMLWidget": _QWIDGET,
}
#: Dynamic (stdset="0") properties the module relies on: the parameterNodeWrapper binding.
DYNAMIC_PROPERTIES = {"SlicerParameterName"}


def test_connected_signals_exist_on_their_widget_class(ui_widgets):
    widgets, _ = ui_widgets
    code = MODULE.read_text()
    connects = re.findall(r"self\.ui\.(\w+)\.(\w+)\.connect\(", code)
    assert len(connects) >= 6, connects
    for name, signal in connects:
        cls = widgets[name].get("class")
        assert signal in SIGNALS[cls], f"ui.{name} is a {cls}: it has no signal '{signal}'"
    # signals of other Qt objects connected in code
    assert "self._timer.timeout.connect(" in code  # QTimer::timeout


def test_ui_properties_exist_on_their_widget_class(ui_widgets):
    widgets, root = ui_widgets
    for name, w in widgets.items():
        cls = w.get("class")
        for p in w.findall("property"):
            if p.get("stdset") == "0":
                assert p.get("name") in DYNAMIC_PROPERTIES, (name, p.get("name"))
            else:
                assert p.get("name") in PROPERTIES[cls], f"{name} ({cls}) has no property '{p.get('name')}'"
    # the scene is passed with qMRMLWidget::mrmlSceneChanged -> setMRMLScene (qMRMLWidget.h)
    for c in root.iter("connection"):
        assert c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        assert c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"


def test_parameter_node_types_have_gui_connectors(ui_widgets):
    """Each bound widget has a parameterNodeWrapper connector for its parameter's type (guiConnectors.py)."""
    widgets, _ = ui_widgets
    types = dict(re.findall(r"^\s{4}(\w+): ([^=\n]+?)(?: = .*)?$", _parameter_node_body(), re.M))
    for name, w in widgets.items():
        p = _prop(w, "SlicerParameterName")
        if p is None:
            continue
        param, cls = p.findtext("string"), w.get("class")
        t = types[param]
        if cls == "qMRMLNodeComboBox":  # qMRMLNodeComboBoxToNodeConnector: a node class or a Union of them
            assert t.startswith(("vtkMRML", "Union[vtkMRML", "LabelsNode")), (param, t)
        elif cls == "QComboBox":  # QComboBoxToStringableConnector requires a Choice annotation
            assert "Choice(" in t, (param, t)
        elif cls == "QCheckBox":  # QCheckBoxToBoolConnector
            assert t.strip() == "bool", (param, t)
        elif cls == "ctkSliderWidget":  # QDoubleSpinBoxCtkSliderWidgetToFloatIntConnector
            assert "float" in t, (param, t)
        else:
            raise AssertionError(f"no connector known for {cls}")


# ----------------------------------------------------------------------------- metadata (URLs: test_slicer_index.py)
def test_no_reference_to_the_unrelated_tensorflow_project():
    import subprocess
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    needle = "DeepReg" + "Net"  # split so that this test file does not match itself
    bad = [f for f in files if f.endswith((".py", ".txt", ".md", ".ui", ".json", ".toml"))
           and needle.lower() in (REPO / f).read_text(errors="ignore").lower()]
    assert not bad, bad


def test_license_file_is_apache_2():
    text = (REPO / "LICENSE.txt").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
