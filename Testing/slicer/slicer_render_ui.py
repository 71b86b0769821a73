"""Render DeepReg/Resources/UI/DeepReg.ui to a PNG without Slicer (docs/screenshot-panel.png).

A mock-up, not a Slicer screenshot: Qt (PySide6, offscreen platform) loads the .ui with CTK and
MRML widgets replaced by plain Qt ones (ctkCollapsibleButton -> QGroupBox, qMRMLNodeComboBox ->
QComboBox with a typical node name, ctkSliderWidget -> QSlider, ctkPathLineEdit -> QLineEdit), and
the labels show what the panel shows after registering the sample brains.  Run with a Python that
has PySide6 (``pip install PySide6-Essentials``)::

    QT_QPA_PLATFORM=offscreen python Testing/slicer/slicer_render_ui.py docs/screenshot-panel.png
"""
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REPLACE = {"ctkCollapsibleButton": "QGroupBox", "qMRMLNodeComboBox": "QComboBox", "ctkSliderWidget": "QSlider",
           "ctkPathLineEdit": "QLineEdit", "qMRMLWidget": "QWidget"}
NODES = {"fixedVolumeSelector": "OASIS-TRT-20-17", "movingVolumeSelector": "OASIS-TRT-20-18",
         "outputTransformSelector": "Create new transform", "outputVolumeSelector": "None (no resampling)",
         "movingLabelsSelector": "None", "fixedMaskSelector": "None", "movingMaskSelector": "None",
         "initialTransformSelector": "Moving volume's parent transform (if any)"}


def plain_ui() -> bytes:
    root = ET.parse(REPO / "DeepReg" / "Resources" / "UI" / "DeepReg.ui").getroot()
    collapsed = set()
    for w in root.iter("widget"):
        cls = w.get("class")
        if cls == "ctkCollapsibleButton":
            for p in list(w.findall("property")):
                if p.get("name") == "text":
                    p.set("name", "title")
                if p.get("name") == "collapsed":
                    if p.findtext("bool") == "true":
                        collapsed.add(w.get("name"))
                    w.remove(p)
        if cls == "ctkSliderWidget":
            for p in list(w.findall("property")):
                if p.get("name") in ("singleStep", "minimum", "maximum", "value"):
                    w.remove(p)
        if cls == "ctkPathLineEdit":
            for p in list(w.findall("property")):
                if p.get("name") in ("filters", "nameFilters"):
                    w.remove(p)
        if cls in REPLACE:
            w.set("class", REPLACE[cls])
        for p in list(w.findall("property")):
            if p.get("stdset") == "0" or p.get("name") in ("nodeTypes", "hideChildNodeTypes", "showChildNodeTypes",
                                                            "noneEnabled", "addEnabled", "removeEnabled",
                                                            "renameEnabled", "noneDisplay", "visible"):
                w.remove(p)
    for tag in ("customwidgets", "connections"):
        for el in root.findall(tag):
            root.remove(el)
    return ET.tostring(root), collapsed


def main(out: str) -> None:
    import tempfile
    from PySide6.QtCore import QFile, QIODevice, Qt
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QApplication, QComboBox, QGroupBox, QLabel, QWidget
    sys.path.insert(0, str(REPO / "DeepReg"))
    app = QApplication.instance() or QApplication([])
    data, collapsed = plain_ui()
    path = Path(tempfile.mkdtemp()) / "DeepReg-plain.ui"
    path.write_bytes(data)
    f = QFile(str(path))
    f.open(QIODevice.ReadOnly)
    loader = QUiLoader()
    panel = loader.load(f)
    f.close()
    assert panel is not None, loader.errorString()
    find = lambda name, cls=QWidget: panel.findChild(cls, name)  # noqa: E731
    for name, text in NODES.items():
        find(name, QComboBox).addItem(text)
    constants = (REPO / "DeepReg" / "DeepReg.py").read_text()
    modes = re.search(r"^MODES = \{(.*?)\}$", constants, re.S | re.M).group(1)
    find("modeComboBox", QComboBox).addItems(re.findall(r'"([^"]+)": \(', modes))
    labels = re.search(r"^MODEL_LABELS = \{(.*?)\}$", constants, re.S | re.M).group(1)
    find("modelComboBox", QComboBox).addItems([f"{v}  [{k}]" for k, v in re.findall(r'"([^"]+)": "([^"]+)"', labels)])
    find("deviceComboBox", QComboBox).addItems(["Auto", "CPU"])
    find("modelExpectsLabel", QLabel).setText("Expects: skull-stripped T1-weighted brain MRI")
    slider = find("opacitySlider")
    slider.setOrientation(Qt.Horizontal)
    slider.setValue(50)
    find("progressBar").hide()
    find("stopRefineButton").hide()
    find("batchProgressBar").hide()
    find("registerButton").setEnabled(True)
    find("flickerButton").setEnabled(True)
    find("statusLabel", QLabel).setText("Done in 1.4 s on cpu: 'OASIS-TRT-20-18 to OASIS-TRT-20-17 (DeepReg)'")
    find("qualityLabel", QLabel).setText("Quality check: no problem found (similarity 0.31 after the affine stage, "
                                         "0.38 final).")
    find("researchNoteLabel", QLabel).setText("For research use only; not for clinical use. Check every result "
                                              "visually.")
    for name in collapsed:
        box = find(name, QGroupBox)
        box.setTitle("\u25b8 " + box.title())
        for child in box.findChildren(QWidget):
            child.hide()
        box.setFixedHeight(24)
    for box in panel.findChildren(QGroupBox):
        if box.objectName() not in collapsed:
            box.setTitle("\u25be " + box.title())
    panel.resize(420, 10)
    panel.adjustSize()
    panel.resize(420, panel.sizeHint().height())
    panel.setAttribute(Qt.WA_DontShowOnScreen)
    panel.show()
    app.processEvents()
    assert panel.grab().save(out), out
    print(out, panel.width(), "x", panel.height())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(REPO / "docs" / "screenshot-panel.png"))
