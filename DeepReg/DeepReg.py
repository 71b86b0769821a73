"""DeepReg: fast learned registration in 3D Slicer (brain MRI; prostate MR-US and CT with the universal model).

The module is a thin layer over ``DeepRegLib`` (engine on torch, numpy and SimpleITK).  All MRML
work lives in ``DeepRegLib.slicer_adapter.mrml`` and the worker-thread orchestration in ``DeepRegLib.slicer_adapter.worker``
(no Qt); :class:`DeepRegLogic` wraps them and is usable from the Python console::

    logic = slicer.util.getModuleLogic("DeepReg")   # or DeepReg.DeepRegLogic()
    tnode = logic.register(fixedNode, movingNode, device="auto")  # the default model

Importing this file runs nothing: it defines classes and constants only.  ``DeepRegLib`` is
imported on first use (inside functions), the model cards are read when the panel first opens
(:func:`modelCards`, cached), and torch is imported by the worker thread of the first registration.
In an installed extension ``DeepRegLib`` sits beside this file (``qt-scripted-modules``); used from
the source tree (module path ``<repository>/DeepReg``) it is one folder up, which
:func:`addEngineToPath` adds when Slicer creates the module.  The headless tests import this file
with stand-ins for Qt and Slicer's application classes (``Testing/slicer/slicer_standins.py``).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Optional, Union

import ctk  # noqa: F401  (the .ui's CTK widgets)
import qt
import slicer
import vtk
from slicer import (vtkMRMLLabelMapVolumeNode, vtkMRMLLinearTransformNode, vtkMRMLScalarVolumeNode,
                    vtkMRMLSegmentationNode, vtkMRMLTransformNode)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

log = logging.getLogger("DeepReg")

#: Panel mode -> (engine mode, refine).  "Deformable" runs the model card's default refinement (a few
#: steps, for models whose card has one; refine=None); "Deformable + refine" the full one.
MODES = {"Deformable": ("deformable", None), "Deformable + refine": ("deformable", True),
         "Affine only": ("affine", False), "Rigid only": ("rigid", False)}
DEVICES = ("Auto", "CPU", "GPU")  # "GPU" is shown only when torch sees one (see DeepRegWidget._syncDevices)
#: The model used when none is chosen: DeepRegLib.DEFAULT_MODEL (a test keeps the two equal).
DEFAULT_MODEL = "ldr_brain_v4"
#: Names a radiologist reads in the model list (in this order, the default first); other models show their ID.
MODEL_LABELS = {
    "ldr_brain_v4": "Brain MRI (default)",
    "ldr_brain_v3": "Brain MRI, previous version",
    "ldr_brain_v2": "Brain MRI, version 2",
    "crd_lowres_brain": "Brain MRI, low resolution (fastest)",
    "ldr_brain_v1": "Brain MRI, first version",
    "universal": "Universal model: brain MRI",
    "universal:prostate": "Universal model: prostate MR to ultrasound",
    "universal:ct": "Universal model: CT",
    "prostate_mrus": "Prostate MR to ultrasound",
}
RESEARCH_NOTE = "For research use only; not for clinical use. Check every result visually."
DATA_LICENCE = ("The bundled brain models and sample brains derive from Mindboggle-101 OASIS-TRT-20 (Creative Commons "
                "BY-NC-SA 3.0, (c) 2012 Mindboggle team; OASIS data terms apply; non-commercial use only). Cite "
                "Klein A., Tourville J. (2012) 101 labeled brain images and a consistent human cortical labeling "
                "protocol. Front. Neurosci. 6:171, doi:10.3389/fnins.2012.00171.")
#: The panel polls the worker every POLL_MS and then sleeps GIL_YIELD_S (releasing the GIL): PythonQt's
#: thread support is not enabled in Slicer, so the main thread keeps the GIL while the Qt event loop is
#: idle and a Python thread runs only while the main thread sleeps or runs Python.  SimpleITK filters
#: and torch ops release the GIL themselves, so the heavy work runs regardless; the worker needs the GIL
#: between them.  10 ms of every 40 ms: the event loop is free 75 % of the time and never blocked longer
#: than 10 ms at once (Testing/slicer/test_slicer_panel.py measures both).  A cancelled run left draining
#: gets GIL_YIELD_CANCELLED_S only (the panel is idle then).
POLL_MS = 40
GIL_YIELD_S = 0.010
GIL_YIELD_CANCELLED_S = 0.002
BATCH_POLL_MS = 250

#: Widgets of Resources/UI/DeepReg.ui the Widget code uses, with their classes (checked by Testing/slicer/test_slicer_ui.py).
UI_WIDGETS = {
    "inputsCollapsibleButton": "ctkCollapsibleButton",
    "fixedVolumeSelector": "qMRMLNodeComboBox",
    "movingVolumeSelector": "qMRMLNodeComboBox",
    "modeComboBox": "QComboBox",
    "modelComboBox": "QComboBox",
    "modelExpectsLabel": "QLabel",
    "deviceComboBox": "QComboBox",
    "labelsCollapsibleButton": "ctkCollapsibleButton",
    "movingLabelsSelector": "qMRMLNodeComboBox",
    "fixedMaskSelector": "qMRMLNodeComboBox",
    "movingMaskSelector": "qMRMLNodeComboBox",
    "outputsCollapsibleButton": "ctkCollapsibleButton",
    "outputTransformSelector": "qMRMLNodeComboBox",
    "outputVolumeSelector": "qMRMLNodeComboBox",
    "advancedCollapsibleButton": "ctkCollapsibleButton",
    "initialTransformSelector": "qMRMLNodeComboBox",
    "skipAffineCheckBox": "QCheckBox",
    "affinePartCheckBox": "QCheckBox",
    "jacobianCheckBox": "QCheckBox",
    "removeCachedButton": "QPushButton",
    "registerButton": "QPushButton",
    "stopRefineButton": "QPushButton",
    "progressBar": "QProgressBar",
    "statusLabel": "QLabel",
    "qualityLabel": "QLabel",
    "researchNoteLabel": "QLabel",
    "logCollapsibleButton": "ctkCollapsibleButton",
    "logTextEdit": "QPlainTextEdit",
    "displayCollapsibleButton": "ctkCollapsibleButton",
    "opacitySlider": "ctkSliderWidget",
    "flickerButton": "QPushButton",
    "showJacobianButton": "QPushButton",
    "batchCollapsibleButton": "ctkCollapsibleButton",
    "batchPairsPathLineEdit": "ctkPathLineEdit",
    "batchAtlasPathLineEdit": "ctkPathLineEdit",
    "batchMovingDirPathLineEdit": "ctkPathLineEdit",
    "batchOutputDirPathLineEdit": "ctkPathLineEdit",
    "batchWorkersSpinBox": "QSpinBox",
    "batchRunButton": "QPushButton",
    "batchProgressBar": "QProgressBar",
    "batchStatusLabel": "QLabel",
}
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")

# Module-level caches (filled on first use, never at import).
_modelCache: dict = {}


def addEngineToPath() -> None:
    """Source-tree use only: make ``DeepRegLib`` (one folder up) importable.  Called by :class:`DeepReg`
    when Slicer creates the module, never at import; an installed extension needs nothing."""
    if importlib.util.find_spec("DeepRegLib") is not None:
        return
    root = Path(__file__).resolve().parent.parent
    if (root / "DeepRegLib" / "__init__.py").is_file() and str(root) not in sys.path:
        sys.path.append(str(root))


def modelCards(refresh: bool = False):
    """``(cards, problems)``: the bundled model cards by name and the cards skipped (messages).

    Read on first use (the panel's first opening) and cached; ``refresh`` reads them again."""
    if refresh or "cards" not in _modelCache:
        from DeepRegLib.slicer_adapter import mrml
        problems: list = []
        _modelCache["cards"] = mrml.list_model_cards(problems)
        _modelCache["problems"] = problems
    return _modelCache["cards"], _modelCache["problems"]


def modelOrder(names) -> list:
    """The model list as the panel shows it: the default first, then MODEL_LABELS' order, then the rest sorted."""
    known = [n for n in MODEL_LABELS if n in names]
    first = [DEFAULT_MODEL] if DEFAULT_MODEL in names else []
    return first + [n for n in known if n not in first] + sorted(n for n in names if n not in MODEL_LABELS)


def modelLabel(name: str) -> str:
    return f"{MODEL_LABELS[name]}  [{name}]" if name in MODEL_LABELS else name


def modelExpects(card: Optional[dict]) -> str:
    expects = (card or {}).get("input", {}).get("expects")
    return f"Expects: {expects}" if expects else "Expects: see the model card (tooltip)"


def _deepreg_lib_dir() -> Path:
    import DeepRegLib
    return Path(DeepRegLib.__file__).resolve().parent


def sampleDataDir() -> Path:
    """``Resources/SampleData`` beside the DeepRegLib package (source tree and installed extension)."""
    return _deepreg_lib_dir().parent / "Resources" / "SampleData"


def iconPath() -> str:
    return str(Path(__file__).resolve().parent / "Resources" / "Icons" / "DeepReg.png")


def torchAvailable() -> bool:
    """Whether torch is installed (without importing it: the first import takes seconds)."""
    return importlib.util.find_spec("torch") is not None


def torchSeesGpu():
    """True/False once torch is imported in this process; None before (importing it here would block)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken CUDA setup: no GPU
        return False


def settingsDir() -> str:
    """Where DeepReg keeps its small records in Slicer: beside Slicer's settings file."""
    try:
        return os.path.dirname(slicer.app.slicerUserSettingsFilePath)
    except AttributeError:  # headless
        from DeepRegLib.bundles.licence import default_store_path
        return str(default_store_path().parent)


def licenceStorePath() -> str:
    """Where the accepted licences are recorded (``DeepReg-licences.json`` beside Slicer's settings)."""
    return os.path.join(settingsDir(), "DeepReg-licences.json")


def workDir() -> str:
    """DeepReg's own scratch folder (batch lists written by the panel): Slicer's temporary folder/DeepReg."""
    try:
        base = slicer.app.temporaryPath
    except AttributeError:  # headless
        import tempfile
        base = tempfile.gettempdir()
    return os.path.join(base, "DeepReg")


def pythonExecutable() -> str:
    """The Python that runs ``deepreg batch``: Slicer's own (``PythonSlicer``), not this process."""
    return shutil.which("PythonSlicer") or sys.executable


#
# Module
#
class DeepReg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        addEngineToPath()
        self.parent.title = "DeepReg"
        self.parent.categories = ["Registration"]
        self.parent.dependencies = []
        self.parent.contributors = ["DeepReg for Slicer contributors (independent project)"]
        from DeepRegLib import project
        self.parent.helpText = (
            "Fast learned registration. The default model registers skull-stripped T1-weighted brain MRI; the "
            "universal model also registers prostate MR to ultrasound and CT. Pick a fixed and a moving volume and "
            "click <b>Register</b>. The result transform, named '&lt;moving&gt; to &lt;fixed&gt; (DeepReg)', maps the "
            "moving volume onto the fixed one; the moving volume is placed under it (not resampled). After each run "
            "the panel shows a quality verdict; <b>NOT TRUSTED</b> lists the reasons. The <b>Batch</b> section "
            "registers many pairs from a CSV or an atlas and a folder, in a separate process. "
            f"<b>{RESEARCH_NOTE}</b> "
            f'See the <a href="{project.HELP_URL}">DeepReg documentation</a>'
            + ("." if project.PUBLISHED else " (docs/slicer.md of the extension's source; its online address is not "
               "published yet)."))
        self.parent.acknowledgementText = (
            "DeepReg for Slicer (code: Apache-2.0). The bundled network follows the LDR student of Tran et al. "
            "(light-weight deformable registration by knowledge distillation). " + DATA_LICENCE)
        slicer.app.connect("startupCompleted()", registerSampleData)


#: bundled sample volumes for the Sample Data module: (sample name, folder, file, node name)
SAMPLE_VOLUMES = [
    ("DeepRegOASIS-TRT-20-17", "OASIS-TRT-20-17", "t1weighted_brain.nii.gz", "OASIS-TRT-20-17"),
    ("DeepRegOASIS-TRT-20-18", "OASIS-TRT-20-18", "t1weighted_brain.nii.gz", "OASIS-TRT-20-18"),
    ("DeepRegProstateUS", "prostate-mr-us-case000025", "fixed_us.nii.gz", "prostate-case25-US"),
    ("DeepRegProstateMR", "prostate-mr-us-case000025", "moving_mr.nii.gz", "prostate-case25-MR"),
]


def registerSampleData():
    """Add the bundled brains and the prostate MR-US pair to the Sample Data module (category DeepReg), from local files."""
    try:
        import SampleData
    except ImportError:
        return
    base = sampleDataDir()
    for sample, folder, filename, node in SAMPLE_VOLUMES:
        path = base / folder / filename
        if not path.is_file():
            continue
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category="DeepReg", sampleName=sample, uris=path.as_uri(),
            fileNames=f"{folder}_{filename}", nodeNames=node,
            thumbnailFileName=iconPath(), loadFileType="VolumeFile", checksums=None)


#
# Parameter node
#
LabelsNode = Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, None]


@parameterNodeWrapper
class DeepRegParameterNode:
    """Panel state, saved with the scene (references and values of a vtkMRMLScriptedModuleNode).

    The device and mode combo boxes are bound to it (``SlicerParameterName`` in the .ui).  ``model`` is a
    plain string, synced by hand with the model list (readable names; a scene may name a model that this
    version no longer has: the panel then falls back to the default and says so, it does not raise).
    """

    fixedVolume: vtkMRMLScalarVolumeNode
    movingVolume: vtkMRMLScalarVolumeNode
    initialTransform: vtkMRMLLinearTransformNode
    skipAffineStage: bool = False
    mode: Annotated[str, Choice(list(MODES))] = "Deformable"
    model: str = ""  # "" = the default model
    device: Annotated[str, Choice(list(DEVICES))] = "Auto"
    movingLabels: LabelsNode
    fixedMask: LabelsNode
    movingMask: LabelsNode
    outputTransform: vtkMRMLTransformNode
    outputVolume: vtkMRMLScalarVolumeNode
    saveAffinePart: bool = False
    computeJacobian: bool = False
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    resultTransform: vtkMRMLTransformNode  # the last result (for the overlay controls)


#
# Widget
#
class DeepRegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._jobInfo = None
        self._timer = None
        self._batch = None
        self._batchTimer = None
        self._unwarpedShown = None  # (moving node, its parent under the result) while "show before" is held
        self._modelNames: list = []

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DeepReg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DeepRegLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._onTimer)
        self._batchTimer = qt.QTimer()
        self._batchTimer.setInterval(BATCH_POLL_MS)
        self._batchTimer.timeout.connect(self._onBatchTimer)
        self.ui.researchNoteLabel.text = RESEARCH_NOTE
        self._setIdle()
        self.ui.batchProgressBar.visible = False
        self._fillModels()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.registerButton.clicked.connect(self.onRegisterButton)
        self.ui.stopRefineButton.clicked.connect(self.onStopRefineButton)
        self.ui.modelComboBox.currentIndexChanged.connect(self.onModelChanged)
        self.ui.opacitySlider.valueChanged.connect(self.onOpacityChanged)
        self.ui.flickerButton.pressed.connect(self.onShowBeforePressed)
        self.ui.flickerButton.released.connect(self.onShowBeforeReleased)
        self.ui.showJacobianButton.toggled.connect(self.onShowJacobianToggled)
        self.ui.removeCachedButton.clicked.connect(self.onRemoveCachedContent)
        self.ui.batchRunButton.clicked.connect(self.onBatchButton)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.onShowBeforeReleased()
        if self._job is not None:
            self._job.cancel()
        if self._batch is not None:
            self._batch.cancel()
        for timer in (self._timer, self._batchTimer):
            if timer is not None:
                timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.onShowBeforeReleased()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onReload(self) -> None:
        """Reload DeepRegLib too (Slicer's "Reload" re-reads this file only): its modules are dropped from
        ``sys.modules`` and imported afresh on first use; a run in progress keeps the old ones."""
        for name in [n for n in sys.modules if n == "DeepRegLib" or n.startswith("DeepRegLib.")]:
            del sys.modules[name]
        _modelCache.clear()
        ScriptedLoadableModuleWidget.onReload(self)

    def onSceneStartClose(self, caller, event) -> None:
        self.onShowBeforeReleased()
        if self._job is not None and self._job.running:
            self._job.cancel()  # its result would refer to nodes that are going away
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if not p.fixedVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and not first.IsA("vtkMRMLLabelMapVolumeNode"):
                p.fixedVolume = first

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # device and mode combo boxes are bound here (Choice parameters; the connector fills them)
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._syncDevices()
            self._onParameterNodeModified()

    # -- the model list (filled by hand: readable names, the default first)
    def _fillModels(self) -> None:
        cards, problems = modelCards()
        combo = self.ui.modelComboBox
        self._modelNames = modelOrder(cards) or [DEFAULT_MODEL]
        was = combo.blockSignals(True)
        combo.clear()
        for i, name in enumerate(self._modelNames):
            combo.addItem(modelLabel(name), name)
            if name in cards:
                from DeepRegLib.slicer_adapter import mrml
                combo.setItemData(i, mrml.model_tooltip(cards[name]), qt.Qt.ToolTipRole)
        combo.blockSignals(was)
        for problem in problems:
            self._appendLog(f"warning: {problem}")
        if problems:
            self.ui.statusLabel.text = f"{len(problems)} model card(s) skipped; see the log."

    def currentModel(self) -> str:
        """The parameter node's model, or the default when it names none or a model this version lacks."""
        p = self._parameterNode
        name = p.model if p else ""
        return name if name in self._modelNames else (DEFAULT_MODEL if DEFAULT_MODEL in self._modelNames
                                                      else self._modelNames[0])

    def onModelChanged(self, index: int) -> None:
        if self._parameterNode is None or index < 0 or index >= len(self._modelNames):
            return
        if self._parameterNode.model != self._modelNames[index]:
            self._parameterNode.model = self._modelNames[index]

    def _syncModel(self) -> None:
        p = self._parameterNode
        name = self.currentModel()
        if p.model != name:
            if p.model:
                self._appendLog(f"warning: the scene names the model '{p.model}', which this version does not have; "
                                f"using '{name}'")
            p.model = name  # "" (the default) made explicit; re-enters through the Modified observer
            return
        combo = self.ui.modelComboBox
        index = self._modelNames.index(name)
        if combo.currentIndex != index:
            was = combo.blockSignals(True)
            combo.setCurrentIndex(index)
            combo.blockSignals(was)
        self.ui.modelExpectsLabel.text = modelExpects(modelCards()[0].get(name))

    def _syncDevices(self) -> None:
        combo = self.ui.deviceComboBox
        gpu_index = combo.findText("GPU")
        if torchSeesGpu():
            if gpu_index < 0:
                combo.addItem("GPU")  # back at the index the bound Choice expects (the last one)
            return
        if self._parameterNode and self._parameterNode.device == "GPU":
            self._parameterNode.device = "Auto"
        if gpu_index >= 0:
            combo.removeItem(gpu_index)

    @property
    def busy(self) -> bool:
        return self._job is not None and self._job.running

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        self._syncModel()
        reason = DeepRegLogic.inputProblem(p.fixedVolume, p.movingVolume)
        draining = self._job is not None and not self._job.running and self._job.worker_alive
        if not self.busy:
            self.ui.registerButton.enabled = reason is None and not draining
            self.ui.registerButton.toolTip = reason or (
                "The cancelled run is still stopping; a moment..." if draining
                else "Register the moving volume to the fixed volume")
        deformable = MODES.get(p.mode, ("deformable",))[0] == "deformable"
        self.ui.affinePartCheckBox.enabled = deformable
        self.ui.jacobianCheckBox.enabled = deformable
        has_initial = DeepRegLogic.hasInitialTransform(p.movingVolume, p.initialTransform)
        self.ui.skipAffineCheckBox.enabled = has_initial
        if p.skipAffineStage and not has_initial:
            p.skipAffineStage = False  # greyed out must mean off (it would replace the affine stage by nothing)
        has_result = bool(p.resultTransform)
        self.ui.flickerButton.enabled = has_result and not self.busy
        self.ui.showJacobianButton.enabled = bool(has_result and p.resultTransform.GetNodeReference("DeepReg.jacobian"))

    # backwards-compatible name (tests and scripts)
    _checkCanApply = _onParameterNodeModified

    def _appendLog(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)
        log.info("DeepReg: %s", line)

    def _setIdle(self) -> None:
        """Register (primary) enabled per the inputs; no progress bar, no Stop refinement."""
        self.ui.registerButton.text = "Register"
        self.ui.progressBar.visible = False
        self.ui.stopRefineButton.visible = False
        self.ui.stopRefineButton.enabled = False

    def _setRunning(self, refine: bool) -> None:
        self.ui.registerButton.text = "Cancel"
        self.ui.registerButton.toolTip = "Stop the registration; the scene stays as it was."
        self.ui.registerButton.enabled = True
        self.ui.progressBar.setValue(0)
        self.ui.progressBar.visible = True
        self.ui.stopRefineButton.visible = refine
        self.ui.stopRefineButton.enabled = False

    def _showQuality(self, verdict) -> None:
        if verdict is None:
            self.ui.qualityLabel.text = ""
            self.ui.qualityLabel.toolTip = ""
            return
        if verdict.trusted:
            self.ui.qualityLabel.text = (f"Quality check: no problem found (similarity {verdict.similarity_before:.2f} "
                                         f"after the affine stage, {verdict.similarity_after:.2f} final).")
        else:
            self.ui.qualityLabel.text = ('<span style="color:#c00000"><b>NOT TRUSTED:</b> '
                                         + "; ".join(verdict.flags) + "</span>")
        self.ui.qualityLabel.toolTip = verdict.summary()

    # -- registration
    def onRegisterButton(self) -> None:
        """The pre-flight questions (:meth:`_askBeforeRegistering`), then one Logic call that starts the job."""
        if self.busy:
            self.onCancelButton()
            return
        prepared = self._askBeforeRegistering()
        if prepared is None:
            return
        req, info = prepared
        with slicer.util.tryWithErrorDisplay("Registration cannot start.", waitCursor=True):
            self._job, self._jobInfo = self.logic.startJob(req), info
            self._setRunning(req.refine is True)
            self.ui.statusLabel.text = "Starting..."
            self._onParameterNodeModified()
            self._timer.start()

    def _askBeforeRegistering(self):
        """Every question before any work, in order: overwrite the output transform, the model's licence,
        PyTorch, hardening a non-linear parent, inputs outside the model's domain.  Returns the worker's
        ``(request, nodeInputs)`` (:meth:`DeepRegLogic.prepare`), or None when the user stopped or an input
        is wrong (said in the status line and a dialog)."""
        p = self._parameterNode
        testing = slicer.app.testingEnabled()
        out = p.outputTransform
        from DeepRegLib.slicer_adapter import mrml
        from DeepRegLib.errors import DeepRegError
        if out is not None and mrml.transform_node_has_content(out) and not testing:
            if not slicer.util.confirmYesNoDisplay(f"Overwrite the transform '{out.GetName()}' with the new result?"):
                return None
        model = self.currentModel()
        card = modelCards()[0].get(model, {})
        if not self.logic.ensureLicenceAccepted(card, ask=not testing, log=self._appendLog):
            self.ui.statusLabel.text = "The model's licence was not accepted; nothing was done."
            return None
        try:
            self.logic.ensureTorch(askConfirmation=True)
        except DeepRegError as exc:
            self.ui.statusLabel.text = "Not started: PyTorch is missing or does not fit (see the message)."
            slicer.util.errorDisplay(str(exc))
            return None
        engine_mode, refine = MODES[p.mode]
        options = dict(model=model, device=p.device.lower(), mode=engine_mode, refine=refine,
                       initialTransform=p.initialTransform, skipAffineStage=p.skipAffineStage,
                       fixedMask=p.fixedMask, movingMask=p.movingMask, movingLabels=p.movingLabels,
                       outputTransform=p.outputTransform, outputVolume=p.outputVolume,
                       jacobian=p.computeJacobian, affinePart=p.saveAffinePart)
        while True:
            try:
                req, info = self.logic.prepare(p.fixedVolume, p.movingVolume, **options)
                break
            except mrml.NonLinearParentError as exc:
                if not testing and not _askHarden(str(exc)):
                    self.ui.statusLabel.text = "Not started: " + str(exc)
                    return None
                self._appendLog(f"hardening '{exc.transform_node.GetName()}' into '{exc.node.GetName()}' (user's choice)")
                mrml.harden_parent(exc.node)
            except DeepRegError as exc:
                self.ui.statusLabel.text = "Not started: " + str(exc)
                slicer.util.errorDisplay(f"Registration cannot start:\n{exc}")
                return None
        warnings = self.logic.domainWarnings(req)
        for w in warnings:
            self._appendLog("domain warning: " + w)
        if warnings and not testing and not slicer.util.confirmOkCancelDisplay(
                "The inputs do not look like what the model was trained on:\n\n- " + "\n- ".join(warnings)
                + "\n\nRegister anyway?", windowTitle="DeepReg: inputs outside the model's domain"):
            self.ui.statusLabel.text = "Not started (inputs outside the model's domain)."
            return None
        self._appendLog(f"--- {time.strftime('%H:%M:%S')} {p.mode}: '{p.movingVolume.GetName()}' to "
                        f"'{p.fixedVolume.GetName()}', model {model} ({card.get('description', '')}; "
                        f"expects {card.get('input', {}).get('expects', '?')}; licence {card.get('licence', '?')}), "
                        f"device {p.device}")
        self.onShowBeforeReleased()
        if self.ui.showJacobianButton.checked:  # a new run resets the overlay controls
            self.ui.showJacobianButton.checked = False
        self._showQuality(None)
        return req, info

    def onCancelButton(self) -> None:
        if self._job is not None:
            self._job.cancel()  # the job ends for the panel at the next poll; nothing is written

    def onStopRefineButton(self) -> None:
        if self._job is not None:
            self._job.stop_refinement()
            self.ui.stopRefineButton.enabled = False

    def _onTimer(self) -> None:
        from DeepRegLib.slicer_adapter import worker
        from DeepRegLib.errors import DeepRegError
        job = self._job
        if job is None:
            self._timer.stop()
            return
        for ev in job.poll():
            if ev.kind == "progress":
                self.ui.progressBar.setValue(int(round(100 * ev.fraction)))
                label = worker.STAGE_LABELS.get(ev.stage, ev.stage)
                self.ui.statusLabel.text = f"{label[:1].upper()}{label[1:]}: {ev.elapsed:.1f} s"
                self.ui.stopRefineButton.enabled = ev.stage == "refine" and not job.stop_refine_token.cancelled
            elif ev.kind == "log":
                self._appendLog(ev.message)
                if ev.message.startswith("PyTorch "):
                    self._syncDevices()
            elif ev.kind == "done":
                self._finish(job, ev)
            elif ev.kind == "failed":
                exc = ev.value
                self._appendLog(f"failed after {ev.elapsed:.1f} s: {exc}")
                self.ui.statusLabel.text = "Failed; the scene is unchanged."
                if isinstance(exc, DeepRegError):
                    slicer.util.errorDisplay(f"Registration failed:\n{exc}")
                else:
                    import traceback
                    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                    log.error("DeepReg registration failed:\n%s", details)
                    slicer.util.errorDisplay(f"Registration failed: {exc}", detailedText=details)
            elif ev.kind == "cancelled":
                self._appendLog(f"cancelled after {ev.elapsed:.1f} s; nothing was written")
                self.ui.statusLabel.text = "Cancelled; the scene is unchanged."
        if job.running:
            time.sleep(GIL_YIELD_S)  # let the worker thread run (see GIL_YIELD_S)
            return
        self._setIdle()
        if job.worker_alive:  # a cancelled worker stops at its next poll; the panel is idle meanwhile
            time.sleep(GIL_YIELD_CANCELLED_S)
            if job.state == "cancelled":
                self.ui.statusLabel.text = "Cancelled; the scene is unchanged (stopping the current step...)."
        else:
            self._timer.stop()
            self._syncDevices()
        self._onParameterNodeModified()

    def _finish(self, job, ev) -> None:
        p = self._parameterNode
        outputs = ev.value
        try:
            nodes = self.logic.apply(self._jobInfo, outputs, setMovingParent=True)
        except Exception as exc:  # noqa: BLE001 - shown to the user; apply_outputs removed what it added
            log.exception("DeepReg: writing the results failed")
            self.ui.statusLabel.text = "Failed while writing the results; the scene is unchanged."
            slicer.util.errorDisplay(f"Writing the results failed: {exc}")
            return
        p.resultTransform = nodes.transform
        self.ui.progressBar.setValue(100)
        extra = " (refinement stopped early: the network's result)" if outputs.refine_cancelled else ""
        self.ui.statusLabel.text = (f"Done in {ev.elapsed:.1f} s on {outputs.result.device}: "
                                    f"'{nodes.transform.GetName()}'{extra}")
        self._showQuality(nodes.quality)
        self._appendLog("wrote: " + ", ".join(f"'{n.GetName()}'" for n in (
            nodes.transform, nodes.affine, nodes.warped_volume, nodes.warped_labels, nodes.jacobian) if n is not None))
        self.showOverlay()

    # -- reading the result (view only: the scene keeps the result)
    def showOverlay(self) -> None:
        p = self._parameterNode
        slicer.util.setSliceViewerLayers(background=p.fixedVolume, foreground=p.movingVolume,
                                         foregroundOpacity=p.opacity, fit=True)

    def onOpacityChanged(self, value: float) -> None:
        for name in slicer.app.layoutManager().sliceViewNames():
            comp = slicer.app.layoutManager().sliceWidget(name).sliceLogic().GetSliceCompositeNode()
            comp.SetForegroundOpacity(value)

    def onShowBeforePressed(self) -> None:
        """While the button is held: the moving volume as it was before the registration (its previous parent)."""
        from DeepRegLib.slicer_adapter import mrml
        p = self._parameterNode
        if self._unwarpedShown or not (p and p.movingVolume and p.resultTransform):
            return
        if p.movingVolume.GetParentTransformNode() is not p.resultTransform:
            return
        previous = p.resultTransform.GetAttribute(mrml.ATTR_PREVIOUS_PARENT) or None
        self._unwarpedShown = (p.movingVolume, p.resultTransform.GetID())
        p.movingVolume.SetAndObserveTransformNodeID(previous)

    def onShowBeforeReleased(self) -> None:
        """Back to the registered view (always restored: on release, exit, scene close and a new run)."""
        if self._unwarpedShown:
            node, result_id = self._unwarpedShown
            self._unwarpedShown = None
            node.SetAndObserveTransformNodeID(result_id)

    def onShowJacobianToggled(self, show: bool) -> None:
        p = self._parameterNode
        jac = p.resultTransform.GetNodeReference("DeepReg.jacobian") if p and p.resultTransform else None
        if jac is None:
            return
        if not jac.GetDisplayNode():
            jac.CreateDefaultDisplayNodes()
            d = jac.GetDisplayNode()
            d.SetAndObserveColorNodeID("vtkMRMLColorTableNodeFileColdToHotRainbow.txt")
            d.AutoWindowLevelOff()
            d.SetWindowLevel(1.0, 1.0)  # det J from 0.5 (blue, contraction) to 1.5 (red, expansion)
        slicer.util.setSliceViewerLayers(foreground=jac if show else p.movingVolume, foregroundOpacity=p.opacity)

    # -- stored content
    def onRemoveCachedContent(self) -> None:
        items = self.logic.storedContent()
        if not items:
            slicer.util.infoDisplay("DeepReg keeps no downloaded or cached content on this computer now.")
            return
        text = "\n".join(f"- {what}: {path} ({size / 1e6:.1f} MB)" for what, path, size in items)
        if not slicer.app.testingEnabled() and not slicer.util.confirmOkCancelDisplay(
                "Remove DeepReg's stored content?\n\n" + text + "\n\nPyTorch itself (installed by the PyTorch "
                "extension) is not removed here: uninstall it from the PyTorch Utils module.",
                windowTitle="DeepReg: remove stored content"):
            return
        removed = self.logic.removeStoredContent()
        self._appendLog("removed: " + ", ".join(removed))
        self.ui.statusLabel.text = f"Removed {len(removed)} item(s) of stored content."

    # -- batch
    def onBatchButton(self) -> None:
        if self._batch is not None and self._batch.running:
            self._batch.cancel()
            return
        from DeepRegLib.errors import DeepRegError
        p = self._parameterNode
        try:
            self._batch = self.logic.startBatch(
                outputDir=self.ui.batchOutputDirPathLineEdit.currentPath,
                pairsCsv=self.ui.batchPairsPathLineEdit.currentPath or None,
                atlas=self.ui.batchAtlasPathLineEdit.currentPath or None,
                movingDir=self.ui.batchMovingDirPathLineEdit.currentPath or None,
                workers=self.ui.batchWorkersSpinBox.value, model=self.currentModel(),
                device=p.device.lower() if p else "auto", refine=MODES[p.mode][1] if p else None)
        except DeepRegError as exc:
            self.ui.batchStatusLabel.text = "Not started: " + str(exc)
            return
        self._appendLog("batch: " + " ".join(self._batch.command))
        self.ui.batchRunButton.text = "Cancel batch"
        self.ui.batchProgressBar.setValue(0)
        self.ui.batchProgressBar.visible = True
        self.ui.batchStatusLabel.text = "Batch starting (a separate process)..."
        self._batchTimer.start()

    def _onBatchTimer(self) -> None:
        batch = self._batch
        if batch is None:
            self._batchTimer.stop()
            return
        for ev in batch.poll():
            if ev.kind == "log":
                self._appendLog("batch: " + ev.message)
            elif ev.kind == "progress":
                self.ui.batchProgressBar.setValue(int(round(100 * ev.fraction)))
                rec = ev.value
                self.ui.batchStatusLabel.text = (f"{ev.stage} pairs; last: {rec['id']} {rec['status']}"
                                                 + (f" ({rec['message']})" if rec["message"] else ""))
            elif ev.kind in ("done", "failed", "cancelled"):
                self._batchTimer.stop()
                self.ui.batchRunButton.text = "Run batch"
                self.ui.batchProgressBar.visible = False
                self._endBatch(batch, ev.kind)

    def _endBatch(self, batch, kind: str) -> None:
        if kind == "cancelled":
            self.ui.batchStatusLabel.text = ("Batch cancelled; the pairs already finished are kept in the output folder "
                                             "(running it again skips them).")
            return
        if kind == "failed":
            self.ui.batchStatusLabel.text = f"Batch failed (exit status {batch.returncode}); see the log."
            return
        table = self.logic.loadBatchSummary(batch)
        failed = sum(1 for r in batch.pairs if r["status"] == "failed")
        self.ui.batchStatusLabel.text = (f"Batch done: {len(batch.pairs)} pair(s), {failed} failed; summary in the "
                                         f"table '{table.GetName()}'.")
        self.logic.showTable(table)


def _askHarden(message: str) -> bool:
    """The one-click 'harden and continue' for a volume under a non-linear transform."""
    box = qt.QMessageBox(slicer.util.mainWindow())
    box.setWindowTitle("DeepReg: non-linear transform")
    box.setIcon(qt.QMessageBox.Warning)
    box.setText(message)
    box.setInformativeText("Harden the transform into the volume (its voxels are resampled) and continue?")
    harden = box.addButton("Harden and continue", qt.QMessageBox.AcceptRole)
    box.addButton(qt.QMessageBox.Cancel)
    box.exec_()
    return box.clickedButton() == harden


def _askLicence(text: str) -> bool:
    box = qt.QMessageBox(slicer.util.mainWindow())
    box.setWindowTitle("DeepReg: model and sample data licence")
    box.setIcon(qt.QMessageBox.Information)
    box.setText(text)
    accept = box.addButton("Accept", qt.QMessageBox.AcceptRole)
    box.addButton(qt.QMessageBox.Cancel)
    box.exec_()
    return box.clickedButton() == accept


def _folderSize(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


#
# Logic
#
class DeepRegLogic(ScriptedLoadableModuleLogic):
    """Registration on MRML nodes: synchronous (:meth:`register`) or in a worker thread
    (:meth:`prepare`, :meth:`startJob`, :meth:`apply`); batches in a separate process (:meth:`startBatch`).
    No widget needed; runs headless."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return DeepRegParameterNode(super().getParameterNode())

    @staticmethod
    def inputProblem(fixedNode, movingNode):
        """Why Register cannot run yet (a message), or None when the inputs are valid."""
        from DeepRegLib.slicer_adapter import mrml
        from DeepRegLib.errors import InputError
        if fixedNode is None or movingNode is None:
            return "Select a fixed and a moving volume."
        if fixedNode.GetID() == movingNode.GetID():
            return "Fixed and moving must be different volumes."
        try:
            mrml.check_scalar_volume_node(fixedNode, "fixed")
            mrml.check_scalar_volume_node(movingNode, "moving")
        except InputError as exc:
            return str(exc)
        return None

    @staticmethod
    def hasInitialTransform(movingNode, initialTransform=None) -> bool:
        """Whether a run would have an initial transform (chosen, or a linear parent that is not a DeepReg result)."""
        if initialTransform is not None:
            return True
        if movingNode is None:
            return False
        from DeepRegLib.slicer_adapter import mrml
        parent = movingNode.GetParentTransformNode()
        if parent is None:
            return False
        try:
            return mrml.initial_transform_of(movingNode)[1] is not None
        except mrml.NonLinearParentError:
            return False

    @staticmethod
    def ensureTorch(askConfirmation: bool = True) -> None:
        """Make sure a torch that fits the installed NumPy is installed, without importing it.

        Inside Slicer, installs it through SlicerPyTorch's PyTorchUtils (asking first) with the version
        requirement of pyproject.toml; never in testing mode (self-tests and build machines), where a
        missing torch is a clear error.  Every failure of the installation (a failed pip run, a torch that
        does not import) becomes a :class:`DeepRegLib.errors.DeepRegError` with what to do.  The installed
        version is checked when the worker imports torch (:func:`DeepRegLib.slicer_adapter.worker.check_torch_version`).
        """
        from DeepRegLib.slicer_adapter import worker
        from DeepRegLib.errors import DeepRegError
        how = ("DeepReg needs PyTorch. Install the 'PyTorch' extension (SlicerPyTorch) from the Extensions "
               "Manager, restart Slicer and click Register again; it installs torch into Slicer's Python.")
        if torchAvailable():
            problem = worker.numpy_torch_problem()
            if problem:
                raise DeepRegError(problem)
            return
        if slicer.app.testingEnabled():
            raise DeepRegError("PyTorch is not installed; in testing mode DeepReg never installs it. " + how)
        try:
            import PyTorchUtils
        except ImportError:
            raise DeepRegError(how) from None
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                f"DeepReg needs PyTorch (torch{worker.TORCH_REQUIREMENT}), which is not installed yet. Install it "
                "now? (a download of several hundred MB; a few minutes, with progress in the Python console)"):
            raise DeepRegError("PyTorch is not installed; DeepReg cannot run. " + how)
        try:
            with slicer.util.WaitCursor():
                torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                    askConfirmation=False, torchVersionRequirement=worker.TORCH_REQUIREMENT)
        except DeepRegError:
            raise
        except Exception as exc:  # noqa: BLE001 - CalledProcessError (pip), ImportError, ...: a message, not a crash
            raise DeepRegError(f"PyTorch installation failed ({type(exc).__name__}: {exc}). " + how) from exc
        if torch is None:
            raise DeepRegError("PyTorch installation failed. " + how)

    @staticmethod
    def ensureLicenceAccepted(card: dict, ask: bool = True, log=None, storePath=None) -> bool:
        """Show a non-commercial model's licence once and record the user's acceptance
        (:func:`DeepRegLib.bundles.preflight.ask_licence`).

        ``ask=False`` (testing mode) accepts for this session only, without asking or writing the user's
        record, and says so in ``log``.
        """
        from DeepRegLib.bundles.licence import LicenceStore
        from DeepRegLib.bundles.preflight import ask_licence
        store = LicenceStore(storePath or licenceStorePath())
        if not ask and not store.accepted(card):
            if log is not None:
                log(f"licence of model '{card.get('name', '?')}' accepted for this test run (testing mode; not recorded)")
            return True
        return ask_licence(card, _askLicence, store, log)

    @staticmethod
    def domainWarnings(request) -> list:
        """Warnings about the request's images against its model's card (loaded once, by :meth:`prepare`)."""
        from DeepRegLib.bundles.preflight import domain_warnings
        return domain_warnings(request.bundle.card, request.fixed, request.moving)

    @staticmethod
    def prepare(fixedNode, movingNode, model=None, device="auto", mode="deformable", refine=None,
                initialTransform=None, skipAffineStage=False, fixedMask=None, movingMask=None, movingLabels=None,
                outputTransform=None, outputVolume=None, jacobian=False, affinePart=False):
        """Check the nodes and copy what the worker needs (main thread): ``(request, nodeInputs)``."""
        from DeepRegLib.slicer_adapter import mrml
        return mrml.gather_inputs(fixedNode, movingNode, model=model, device=device, mode=mode, refine=refine,
                                  initial_transform=initialTransform, skip_affine_stage=skipAffineStage,
                                  fixed_mask=fixedMask, moving_mask=movingMask, moving_labels=movingLabels,
                                  output_transform=outputTransform, output_volume=outputVolume,
                                  jacobian=jacobian, affine_part=affinePart)

    @staticmethod
    def startJob(request):
        """Start the registration in a worker thread; poll the returned job from the main thread."""
        from DeepRegLib.slicer_adapter import worker
        return worker.run_job(request)

    @staticmethod
    def apply(nodeInputs, outputs, setMovingParent=True, scene=None):
        """Write a finished job's outputs into the scene (main thread); returns ``mrml.ResultNodes``
        (``.quality``: the verdict, also on the transform node as ``DeepReg.Quality`` / ``DeepReg.Trusted``)."""
        from DeepRegLib.slicer_adapter import mrml
        scene = scene or nodeInputs.fixed.GetScene() or slicer.mrmlScene
        return mrml.apply_outputs(scene, nodeInputs, outputs, set_moving_parent=setMovingParent)

    def register(self, fixedNode, movingNode, model=None, device="auto", outputVolume=None, progress=None,
                 setMovingParent=False, outputTransform=None, jacobian=False, name=None, scene=None, **options):
        """Register ``movingNode`` to ``fixedNode`` in the caller's thread; returns the result transform node.

        A new ``vtkMRMLTransformNode`` (``mode="deformable"``, the default) or ``vtkMRMLLinearTransformNode``
        (``mode="affine"`` or ``"rigid"``), fixed -> moving.  Never modifies the input volumes' data; sets the
        moving volume's parent transform only when ``setMovingParent``.  ``options``: ``mode``, ``refine``,
        ``initial_transform``, ``skip_affine_stage``, ``fixed_mask``, ``moving_mask``, ``moving_labels``,
        ``affine_part``.  ``progress(stage, fraction)``.  The quality verdict is on the node
        (``DeepReg.Quality``, ``DeepReg.Trusted``) and in ``DeepRegLib.slicer_adapter.mrml.last_quality``.  Raises
        ``DeepRegLib.errors.DeepRegError`` with a user message.
        """
        from DeepRegLib.slicer_adapter import mrml
        self.ensureTorch(askConfirmation=True)
        scene = scene or (fixedNode.GetScene() if fixedNode is not None else None) or slicer.mrmlScene
        return mrml.register_nodes(scene, fixedNode, movingNode, model=model, device=device,
                                   output_volume=outputVolume, progress=progress,
                                   set_moving_parent=setMovingParent, output_transform=outputTransform,
                                   name=name, jacobian=jacobian, **options)

    # -- batch (a separate process)
    @staticmethod
    def batchEnvironment() -> dict:
        """The batch process's environment: DeepRegLib importable, one thread per worker's libraries."""
        env = dict(os.environ)
        lib_parent = str(_deepreg_lib_dir().parent)
        env["PYTHONPATH"] = lib_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    def startBatch(self, outputDir, pairsCsv=None, atlas=None, movingDir=None, workers=1, model=None,
                   device="auto", refine=None, python=None):
        """Start ``deepreg batch`` in a separate process (never in Slicer's own Python): a CSV of pairs, or an
        atlas (fixed image) and a folder of moving images.  Returns a :class:`DeepRegLib.slicer_adapter.worker.BatchProcess`
        to poll; :meth:`loadBatchSummary` reads its summary into a table node."""
        from DeepRegLib.slicer_adapter import worker
        from DeepRegLib.errors import InputError
        from DeepRegLib.errors import DeepRegError
        if not outputDir:
            raise InputError("choose an output folder for the batch")
        if not (_deepreg_lib_dir() / "batch" / "runner.py").is_file():  # not carried by the packaged extension
            raise DeepRegError("Batch registration is not part of the Slicer extension: run `deepreg batch` from a "
                               "DeepReg checkout (docs/batch.md), or use this module from that checkout.")
        if importlib.util.find_spec("distributed") is None:  # deepreg batch runs on Dask
            raise DeepRegError("The batch needs Dask, which is not installed in Slicer's Python. Install it once from "
                               "the Python console: slicer.util.pip_install('dask[distributed]'), then run the "
                               "batch again.")
        moving_list = None
        if not pairsCsv:
            if not (atlas and movingDir):
                raise InputError("choose a CSV of pairs, or an atlas image and a folder of moving images")
            moving = sorted(str(p) for p in Path(movingDir).iterdir()
                            if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
            if not moving:
                raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {movingDir}")
            os.makedirs(workDir(), exist_ok=True)
            moving_list = worker.write_moving_list(os.path.join(workDir(), f"moving-{int(time.time() * 1000)}.txt"),
                                                   moving)
        os.makedirs(outputDir, exist_ok=True)
        cmd = worker.batch_command(outputDir, pairs_csv=pairsCsv, fixed=atlas if not pairsCsv else None,
                                   moving_list=moving_list, model=model, device=device, workers=workers,
                                   refine=refine, python=python or pythonExecutable())
        return worker.BatchProcess(cmd, outputDir, env=self.batchEnvironment()).start()

    @staticmethod
    def loadBatchSummary(batch, scene=None):
        """The batch's ``summary.csv`` (one row per pair: status, trusted, quality flags, Dice, times) as a table node."""
        from DeepRegLib.slicer_adapter import mrml
        scene = scene or slicer.mrmlScene
        return mrml.load_table(scene, batch.summary_csv, f"DeepReg batch {Path(batch.output_dir).name}")

    @staticmethod
    def showTable(table) -> None:
        """Show a table node in Slicer's table view."""
        lm = slicer.app.layoutManager()
        if lm is None:
            return
        lm.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()

    # -- stored content
    @staticmethod
    def storedContent() -> list:
        """``[(what, path, bytes)]`` that DeepReg stored on this computer and :meth:`removeStoredContent` removes:
        the licence record, the panel's batch lists.  (The models are bundled; nothing is downloaded.  The
        networks loaded in this session are freed from memory too.)"""
        items = []
        for what, path in (("licence record", licenceStorePath()), ("batch lists", workDir())):
            if os.path.exists(path):
                items.append((what, path, _folderSize(path)))
        return items

    @staticmethod
    def removeStoredContent() -> list:
        removed = []
        for what, path, _ in DeepRegLogic.storedContent():
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
            removed.append(what)
        inference = sys.modules.get("DeepRegLib.inference")
        if inference is not None and getattr(inference, "_NETWORK_CACHE", None):
            inference._NETWORK_CACHE.clear()
            removed.append("networks loaded in memory")
        return removed


#
# Test (runs inside Slicer: Reload and Test, or ctest)
#
class DeepRegTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        if not torchAvailable():  # never install torch in a self-test or on a build machine
            self.delayDisplay("DeepReg self-test skipped: PyTorch is not installed (install the PyTorch "
                              "extension; the test never installs it).")
            return
        for test in (self.test_DeepRegLogicOnSampleData, self.test_DeepRegBadInput, self.test_DeepRegWidget,
                     self.test_DeepRegQualityFlag, self.test_DeepRegBatch):
            self.setUp()
            test()

    def _loadPair(self):
        base = sampleDataDir()
        fixed = slicer.util.loadVolume(str(base / "OASIS-TRT-20-17" / "t1weighted_brain.nii.gz"))
        moving = slicer.util.loadVolume(str(base / "OASIS-TRT-20-18" / "t1weighted_brain.nii.gz"))
        return fixed, moving

    def test_DeepRegLogicOnSampleData(self):
        import numpy as np
        from DeepRegLib.slicer_adapter import mrml
        self.delayDisplay("Registering the sample brains (full logic)")
        fixed, moving = self._loadPair()
        before = {n.GetID(): slicer.util.arrayFromVolume(n).copy() for n in (fixed, moving)}
        out = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "warped")
        t0 = time.perf_counter()
        node = DeepRegLogic().register(fixed, moving, device="cpu", outputVolume=out)
        seconds = time.perf_counter() - t0
        self.assertEqual(node.GetClassName(), "vtkMRMLTransformNode")
        self.assertIsNone(moving.GetParentTransformNode())
        self.assertIsNotNone(out.GetDisplayNode())  # the warped volume can be shown
        self.assertEqual(node.GetAttribute("DeepReg.Trusted"), "1")  # the sample pair passes the quality check
        for n in (fixed, moving):
            self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(n), before[n.GetID()]))
        res = mrml.last_result
        pts = np.array([[0.0, 0.0, 0.0], [20.0, -10.0, 15.0], [-30.0, 25.0, -5.0]])
        pts = pts + np.asarray(res.fixed.TransformContinuousIndexToPhysicalPoint(
            [s / 2.0 for s in res.fixed.GetSize()]))
        self.assertLess(np.abs(mrml.transform_node_map_points(node, pts) - res.map_points(pts)).max(), 0.1)
        moving.SetAndObserveTransformNodeID(node.GetID())
        self.assertTrue(slicer.vtkSlicerTransformLogic().hardenTransform(moving))
        self.delayDisplay(f"Registered in {seconds:.1f} s")

    def test_DeepRegBadInput(self):
        from DeepRegLib.errors import InputError
        fixed, moving = self._loadPair()
        n = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(InputError):
            DeepRegLogic().register(fixed, fixed)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), n)
        labels = slicer.util.loadLabelVolume(str(sampleDataDir() / "OASIS-TRT-20-18" / "labels.DKT31.manual+aseg.nii.gz"))
        n = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(InputError):
            DeepRegLogic().register(fixed, labels)
        with self.assertRaises(InputError):  # skip-affine without an initial transform
            DeepRegLogic().register(fixed, moving, skip_affine_stage=True)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), n)

    def _waitFor(self, busy, timeout=300.0):
        t0 = time.perf_counter()
        while busy():
            slicer.app.processEvents()
            time.sleep(0.02)
            self.assertLess(time.perf_counter() - t0, timeout)
        slicer.app.processEvents()

    def _waitForJob(self, widget, timeout=300.0):
        self._waitFor(lambda: widget._job is not None and (widget._job.running or widget._job.worker_alive), timeout)
        widget._onTimer()

    def test_DeepRegWidget(self):
        self.delayDisplay("Panel workflow (worker thread, cancel)")
        fixed, moving = self._loadPair()
        slicer.util.selectModule("DeepReg")
        widget = slicer.util.getModuleWidget("DeepReg")
        p = widget._parameterNode
        p.fixedVolume, p.movingVolume, p.device, p.mode = fixed, moving, "CPU", "Deformable"
        self.assertEqual(widget.ui.modeComboBox.currentText, "Deformable")  # bound through the parameter node
        widget.ui.modelComboBox.setCurrentIndex(0)  # the first entry is the default model
        self.assertEqual(p.model, DEFAULT_MODEL)
        self.assertTrue(widget.ui.registerButton.enabled)
        self.assertFalse(widget.ui.progressBar.visible)  # no "0%" while idle
        # cancel (the same button): the scene is left as it was
        n = slicer.mrmlScene.GetNumberOfNodes()
        widget.ui.registerButton.click()
        self.assertEqual(widget.ui.registerButton.text, "Cancel")
        widget.ui.registerButton.click()
        self._waitForJob(widget)
        self.assertEqual(widget._job.state, "cancelled")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), n)
        self.assertIsNone(moving.GetParentTransformNode())
        self.assertEqual(widget.ui.registerButton.text, "Register")
        # a full run
        widget.ui.registerButton.click()
        self._waitForJob(widget)
        self.assertEqual(widget._job.state, "done")
        self.assertIsNotNone(p.resultTransform)
        self.assertEqual(moving.GetParentTransformNode().GetID(), p.resultTransform.GetID())
        self.assertIn("DeepReg", p.resultTransform.GetName())
        widget.onShowBeforePressed()
        self.assertIsNone(moving.GetParentTransformNode())
        widget.onShowBeforeReleased()
        self.assertEqual(moving.GetParentTransformNode().GetID(), p.resultTransform.GetID())
        self.assertIn("Done", widget.ui.statusLabel.text)
        self.assertIn("no problem found", widget.ui.qualityLabel.text)
        self.assertIn(DEFAULT_MODEL, widget.ui.logTextEdit.toPlainText())
        p.movingVolume = fixed
        self.assertFalse(widget.ui.registerButton.enabled)
        self.delayDisplay("Test passed")

    def test_DeepRegQualityFlag(self):
        """A moving volume whose header is mirrored: the affine stage must mirror it back, which the check flags."""
        import numpy as np
        from DeepRegLib.slicer_adapter import mrml
        self.delayDisplay("Quality flag on a mirrored header")
        fixed, moving = self._loadPair()
        m = vtk.vtkMatrix4x4()
        moving.GetIJKToRASMatrix(m)
        flip = np.diag([-1.0, 1.0, 1.0, 1.0])
        moving.SetIJKToRASMatrix(mrml.numpy_to_vtk_matrix(flip @ mrml.vtk_to_numpy_matrix(m)))
        node = DeepRegLogic().register(fixed, moving, device="cpu", mode="affine")
        verdict = mrml.last_quality
        self.assertIsNotNone(verdict)
        self.assertEqual(node.GetAttribute("DeepReg.Trusted"), "1" if verdict.trusted else "0")
        self.assertIn("quality", node.GetAttribute("DeepReg.Quality"))

    def test_DeepRegBatch(self):
        """Two pairs through the Batch section's logic (a separate process), summary into a table node."""
        import tempfile
        self.delayDisplay("Batch of two pairs in a separate process")
        base = sampleDataDir()
        a = base / "OASIS-TRT-20-17" / "t1weighted_brain.nii.gz"
        b = base / "OASIS-TRT-20-18" / "t1weighted_brain.nii.gz"
        folder = tempfile.mkdtemp()
        csv_path = os.path.join(folder, "pairs.csv")
        with open(csv_path, "w") as fh:
            fh.write(f"fixed,moving,id\n{a},{b},p1\n{b},{a},p2\n")
        batch = DeepRegLogic().startBatch(os.path.join(folder, "out"), pairsCsv=csv_path, workers=1, device="cpu")
        def running():
            batch.poll()
            return batch.running

        self._waitFor(running, timeout=600)
        self.assertEqual(batch.state, "done", "\n".join(batch.log))
        table = DeepRegLogic.loadBatchSummary(batch)
        self.assertEqual(table.GetNumberOfRows(), 2)
        self.assertEqual(sorted(r["id"] for r in batch.pairs), ["p1", "p2"])
