"""Headless stand-ins for what a Slicer application gives ``DeepReg/DeepReg.py`` (tests only).

The ``slicer-core`` wheel has the real MRML classes but no Qt, no ``slicer.ScriptedLoadableModule``,
no ``slicer.parameterNodeWrapper`` and no ``slicer.app``.  :func:`load_deepreg` installs small
stand-ins for them (written here from the documented behaviour, not copied from Slicer), imports a
fresh ``DeepReg`` module and :func:`uninstall` removes them again.

* widgets: each widget of ``DeepReg.ui`` becomes a :class:`FakeWidget` with the properties the
  module uses (``enabled``, ``visible``, ``text``, ``checked``, combo box items, ``currentPath``,
  ...) and signals (``connect``/``emit``), with the values the .ui sets;
* ``parameterNodeWrapper``: fields stored in a real ``vtkMRMLScriptedModuleNode`` (plain values as
  parameters, nodes as node references); ``Choice`` values are validated when read and written (a
  value outside the choices raises ``ValueError``, as the issue reports for Slicer);
  ``connectGui`` binds the widgets that carry ``SlicerParameterName`` in the .ui, both ways;
* ``slicer.app``: ``testingEnabled()`` (settable), a temporary folder and a settings path inside a
  test folder, no layout manager;
* ``slicer.util`` dialogs: recorded in :data:`DIALOGS` and answered by :data:`ANSWERS`.
"""
from __future__ import annotations

import importlib.util
import sys
import types
import typing
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULE_FILE = REPO / "DeepReg" / "DeepReg.py"
UI_FILE = REPO / "DeepReg" / "Resources" / "UI" / "DeepReg.ui"

DIALOGS: list = []          # (kind, text) of every dialog the module opened
ANSWERS: dict = {"confirm": True}
_saved: dict = {}


# ----------------------------------------------------------------------------- Qt
class Signal:
    def __init__(self, owner=None):
        self._slots, self._owner = [], owner

    def connect(self, slot):
        self._slots.append(slot)

    def disconnect(self, slot=None):
        self._slots = [] if slot is None else [s for s in self._slots if s != slot]

    def emit(self, *args):
        if self._owner is not None and self._owner._blocked:
            return
        for slot in list(self._slots):
            slot(*args)


class FakeWidget:
    """A widget of the .ui: the properties and signals DeepReg.py uses."""

    SIGNALS = ("clicked", "toggled", "pressed", "released", "currentIndexChanged", "valueChanged",
               "currentNodeChanged", "currentPathChanged", "contentsCollapsed")

    def __init__(self, name: str, cls: str):
        self._blocked = False
        self.name, self.cls = name, cls
        for s in self.SIGNALS:
            setattr(self, s, Signal(self))
        self.enabled = self.visible = True
        self.checkable = cls == "QCheckBox"
        self._checked = False
        self.text = self.toolTip = ""
        self._value = 0
        self.items: list = []  # combo box: [text, data, tooltip]
        self._index = -1
        self._plain: list = []
        self.currentPath = ""
        self._node = None
        self.collapsed = False
        self.parameter = None  # SlicerParameterName

    def blockSignals(self, block: bool) -> bool:
        was, self._blocked = self._blocked, bool(block)
        return was

    # buttons
    @property
    def checked(self):
        return self._checked

    @checked.setter
    def checked(self, value):
        value = bool(value)
        if value != self._checked:
            self._checked = value
            self.toggled.emit(value)

    def click(self):
        if not self.enabled:
            return
        if self.checkable:
            self.checked = not self.checked
        self.clicked.emit()

    # progress bars, sliders, spin boxes
    def setValue(self, v):
        if v != self._value:
            self._value = v
            self.valueChanged.emit(v)

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, v):
        self.setValue(v)

    # combo boxes
    @property
    def count(self):
        return len(self.items)

    @property
    def currentIndex(self):
        return self._index

    @property
    def currentText(self):
        return self.items[self._index][0] if 0 <= self._index < len(self.items) else ""

    def addItem(self, text, data=None):
        self.items.append([text, data, ""])
        if self._index < 0:
            self.setCurrentIndex(0)

    def clear(self):
        self.items, self._index = [], -1

    def itemText(self, i):
        return self.items[i][0]

    def itemData(self, i, role=None):
        return self.items[i][2] if role == Qt.ToolTipRole else self.items[i][1]

    def setItemData(self, i, value, role=None):
        self.items[i][2 if role == Qt.ToolTipRole else 1] = value

    def findText(self, text):
        return next((i for i, it in enumerate(self.items) if it[0] == text), -1)

    def removeItem(self, i):
        del self.items[i]
        if self._index >= len(self.items):
            self.setCurrentIndex(len(self.items) - 1)

    def setCurrentIndex(self, i):
        if i != self._index:
            self._index = i
            self.currentIndexChanged.emit(i)

    # node selectors
    def currentNode(self):
        return self._node

    def setCurrentNode(self, node):
        if node is not self._node:
            self._node = node
            self.currentNodeChanged.emit(node)

    # text
    def appendPlainText(self, line):
        self._plain.append(line)

    def toPlainText(self):
        return "\n".join(self._plain)

    def setMRMLScene(self, scene):
        self.scene = scene


class FakeUI(FakeWidget):
    def __init__(self, path):
        super().__init__("DeepReg", "qMRMLWidget")
        self.children: dict = {}
        for w in ET.parse(path).getroot().iter("widget"):
            if w.get("name") == "DeepReg":
                continue
            fw = FakeWidget(w.get("name"), w.get("class"))
            for p in w.findall("property"):
                name, val = p.get("name"), p[0] if len(p) else None
                if val is None:
                    continue
                if name == "SlicerParameterName":
                    fw.parameter = val.text
                elif val.tag == "bool":
                    setattr(fw, "_checked" if name == "checked" else name, val.text == "true")
                elif val.tag == "string" and name in ("text", "toolTip"):
                    setattr(fw, name, val.text or "")
                elif val.tag in ("number", "double") and name == "value":
                    fw._value = float(val.text) if val.tag == "double" else int(val.text)
            self.children[fw.name] = fw


class QTimer:
    def __init__(self):
        self.timeout = Signal()
        self.interval, self.active = 0, False

    def setInterval(self, ms):
        self.interval = ms

    def start(self):
        self.active = True

    def stop(self):
        self.active = False

    def isActive(self):
        return self.active


class Qt:
    ToolTipRole = 3
    UserRole = 256


def _qt_module():
    m = types.ModuleType("qt")
    m.QTimer, m.Qt = QTimer, Qt
    m.QMessageBox = type("QMessageBox", (), {"Warning": 2, "Information": 1, "AcceptRole": 0, "Cancel": 0x400000})
    return m


# ----------------------------------------------------------------------------- parameterNodeWrapper
class Choice:
    def __init__(self, choices):
        self.choices = list(choices)

    def validate(self, value):
        if value not in self.choices:
            raise ValueError(f"{value!r} is not one of {self.choices}")


class WithinRange:
    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def validate(self, value):
        if not self.lo <= value <= self.hi:
            raise ValueError(f"{value} is outside [{self.lo}, {self.hi}]")


def _field_kind(hint):
    """(kind, base type, validators): kind "node" for MRML node classes (or a Union of them), else "value"."""
    validators = []
    if typing.get_origin(hint) is typing.Annotated:
        hint, *extra = typing.get_args(hint)
        validators = [e for e in extra if hasattr(e, "validate")]
    args = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) is typing.Union else [hint]
    if all(getattr(a, "__name__", "").startswith("vtkMRML") for a in args):
        return "node", None, validators
    return "value", hint, validators


def parameterNodeWrapper(cls):
    hints = typing.get_type_hints(cls, globalns=vars(sys.modules[cls.__module__]), include_extras=True)
    fields = {}
    for name, hint in hints.items():
        kind, base, validators = _field_kind(hint)
        fields[name] = (kind, base, validators, cls.__dict__.get(name))

    def read(self, name):
        kind, base, validators, default = fields[name]
        node = self.parameterNode
        if kind == "node":
            return node.GetNodeReference(name)
        raw = node.GetParameter(name)
        if name not in node.GetParameterNames():
            value = default
        elif base is bool:
            value = raw == "True"
        elif base is float:
            value = float(raw)
        else:
            value = raw
        for v in validators:
            v.validate(value)
        return value

    def write(self, name, value):
        kind, base, validators, _ = fields[name]
        node = self.parameterNode
        if kind == "node":
            node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
            node.Modified()  # (MRML does not signal a reference change as a Modified event by itself)
            return
        for v in validators:
            v.validate(value)
        node.SetParameter(name, str(value))

    def init(self, parameterNode):
        self.parameterNode = parameterNode
        self._guis = {}

    def connectGui(self, ui):
        tag = len(self._guis) + 1
        bound = [w for w in vars(ui).values() if isinstance(w, FakeWidget) and w.parameter in fields]
        updating = {"now": False}

        def to_gui(*_):
            updating["now"] = True
            try:
                for w in bound:
                    value = getattr(self, w.parameter)
                    if w.cls == "QComboBox":
                        i = w.findText(value)
                        if i >= 0:
                            w.setCurrentIndex(i)
                    elif w.cls == "QCheckBox":
                        w.checked = value
                    elif w.cls == "qMRMLNodeComboBox":
                        w.setCurrentNode(value)
                    else:
                        w.setValue(value)
            finally:
                updating["now"] = False

        def from_gui(w, value):
            if not updating["now"]:
                setattr(self, w.parameter, value)

        for w in bound:
            if w.cls == "QComboBox":
                w.clear()
                for c in next(v for v in fields[w.parameter][2] if isinstance(v, Choice)).choices:
                    w.addItem(c)
                w.currentIndexChanged.connect(lambda i, w=w: from_gui(w, w.itemText(i)))
            elif w.cls == "QCheckBox":
                w.toggled.connect(lambda v, w=w: from_gui(w, v))
            elif w.cls == "qMRMLNodeComboBox":
                w.currentNodeChanged.connect(lambda n, w=w: from_gui(w, n))
            else:
                w.valueChanged.connect(lambda v, w=w: from_gui(w, float(v)))
        obs = self.parameterNode.AddObserver("ModifiedEvent", to_gui)
        self._guis[tag] = (bound, obs)
        to_gui()
        return tag

    def disconnectGui(self, tag):
        bound, obs = self._guis.pop(tag, ([], None))
        if obs is not None:
            self.parameterNode.RemoveObserver(obs)
        for w in bound:
            for s in FakeWidget.SIGNALS:
                getattr(w, s)._slots.clear()

    ns = {"__init__": init, "connectGui": connectGui, "disconnectGui": disconnectGui, "__doc__": cls.__doc__,
          "_fields": fields}
    for method in ("AddObserver", "RemoveObserver", "HasObserver", "Modified", "GetID"):  # as the real wrapper
        ns[method] = lambda self, *a, m=method: getattr(self.parameterNode, m)(*a)
    for name in fields:
        ns[name] = property(lambda self, n=name: read(self, n), lambda self, v, n=name: write(self, n, v))
    return type(cls.__name__, (), ns)


# ----------------------------------------------------------------------------- ScriptedLoadableModule
class ScriptedLoadableModule:
    def __init__(self, parent=None):
        self.parent = parent


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        self.moduleName = "DeepReg"

    def getParameterNode(self):
        import slicer
        scene = slicer.mrmlScene
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
            n = scene.GetNthNodeByClass(i, "vtkMRMLScriptedModuleNode")
            if n.GetAttribute("ModuleName") == self.moduleName:
                return n
        n = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", self.moduleName)
        n.SetAttribute("ModuleName", self.moduleName)
        return n


class ScriptedLoadableModuleWidget:
    reloaded = 0

    def __init__(self, parent=None):
        self.parent = parent or types.SimpleNamespace(isEntered=True)
        self.layout = types.SimpleNamespace(addWidget=lambda w: None)
        self.moduleName = "DeepReg"

    def setup(self):
        pass

    def resourcePath(self, rel):
        return str(REPO / "DeepReg" / "Resources" / rel)

    def onReload(self):
        ScriptedLoadableModuleWidget.reloaded += 1


class ScriptedLoadableModuleTest:
    def delayDisplay(self, message, msec=0):
        pass


# ----------------------------------------------------------------------------- slicer.app, slicer.util
class FakeApp:
    def __init__(self, folder: Path):
        self.testing = True
        self.temporaryPath = str(folder / "tmp")
        self.slicerUserSettingsFilePath = str(folder / "settings" / "Slicer.ini")

    def testingEnabled(self):
        return self.testing

    def connect(self, *args):
        pass

    def layoutManager(self):
        return None

    def processEvents(self):
        pass


class _WaitCursor:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _dialog(kind):
    def show(text, *args, **kwargs):
        DIALOGS.append((kind, str(text)))
        return ANSWERS.get("confirm", True) if kind.startswith("confirm") else None
    return show


class _TryWithErrorDisplay:
    """``slicer.util.tryWithErrorDisplay(message, show=True, waitCursor=False)``: an exception inside is shown
    in an error dialog (``message`` then the exception) and not raised further."""

    def __init__(self, message=None, show=True, waitCursor=False):
        self.message, self.show = message, show

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or not isinstance(exc, Exception):
            return False
        if self.show:
            _dialog("errorDisplay")(f"{self.message}\n\n{exc}" if self.message else str(exc))
        return True


def _load_ui(path):
    return FakeUI(path)


def _child_widget_variables(ui):
    return types.SimpleNamespace(**ui.children)


def install(folder: Path) -> None:
    """Install the stand-ins (``folder``: where slicer.app's temporary and settings paths lie)."""
    import slicer
    import slicer.util
    if _saved:
        uninstall()
    _saved["modules"] = {k: sys.modules.get(k) for k in ("qt", "ctk", "slicer.ScriptedLoadableModule",
                                                          "slicer.parameterNodeWrapper", "DeepReg")}
    _saved["slicer"] = {k: getattr(slicer, k, None) for k in ("app", "mrmlScene", "ScriptedLoadableModule",
                                                               "parameterNodeWrapper")}
    util_names = ("loadUI", "childWidgetVariables", "errorDisplay", "infoDisplay", "confirmOkCancelDisplay",
                  "confirmYesNoDisplay", "setSliceViewerLayers", "WaitCursor", "mainWindow", "tryWithErrorDisplay")
    _saved["util"] = {k: getattr(slicer.util, k, None) for k in util_names}
    sys.modules["qt"] = _qt_module()
    sys.modules["ctk"] = types.ModuleType("ctk")
    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    for c in (ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleWidget,
              ScriptedLoadableModuleTest):
        setattr(slm, c.__name__, c)
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper, pnw.Choice, pnw.WithinRange = parameterNodeWrapper, Choice, WithinRange
    sys.modules["slicer.ScriptedLoadableModule"], sys.modules["slicer.parameterNodeWrapper"] = slm, pnw
    slicer.ScriptedLoadableModule, slicer.parameterNodeWrapper = slm, pnw
    slicer.app = FakeApp(folder)
    slicer.mrmlScene = slicer.vtkMRMLScene()
    slicer.util.loadUI, slicer.util.childWidgetVariables = _load_ui, _child_widget_variables
    for k in ("errorDisplay", "infoDisplay", "confirmOkCancelDisplay", "confirmYesNoDisplay"):
        setattr(slicer.util, k, _dialog(k))
    slicer.util.setSliceViewerLayers = lambda *a, **k: None
    slicer.util.WaitCursor = _WaitCursor
    slicer.util.tryWithErrorDisplay = _TryWithErrorDisplay
    slicer.util.mainWindow = lambda: None
    DIALOGS.clear()
    ANSWERS.clear()
    ANSWERS["confirm"] = True


def uninstall() -> None:
    import slicer
    import slicer.util
    if not _saved:
        return
    for k, v in _saved.pop("modules").items():
        if v is None:
            sys.modules.pop(k, None)
        else:
            sys.modules[k] = v
    for k, v in _saved.pop("slicer").items():
        if v is None:
            if hasattr(slicer, k):
                delattr(slicer, k)
        else:
            setattr(slicer, k, v)
    for k, v in _saved.pop("util").items():
        if v is None:
            if hasattr(slicer.util, k):
                delattr(slicer.util, k)
        else:
            setattr(slicer.util, k, v)


def import_deepreg():
    """A fresh import of DeepReg/DeepReg.py (stand-ins installed first)."""
    spec = importlib.util.spec_from_file_location("DeepReg", MODULE_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["DeepReg"] = module
    spec.loader.exec_module(module)
    return module


def load_deepreg(folder: Path):
    install(folder)
    return import_deepreg()


def make_widget(DeepReg):
    """The panel as Slicer builds it (``setup()``; the parameter node of ``slicer.mrmlScene``)."""
    w = DeepReg.DeepRegWidget()
    w.setup()
    return w
