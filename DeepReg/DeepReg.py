"""DeepReg: fast learned deformable registration of brain MRI in 3D Slicer.

The module is a thin layer over ``DeepRegLib`` (engine on torch, numpy and SimpleITK).  All MRML
work lives in ``DeepRegLib.mrml`` and the worker-thread orchestration in ``DeepRegLib.worker``
(no Qt); :class:`DeepRegLogic` wraps them and is usable from the Python console::

    logic = slicer.util.getModuleLogic("DeepReg")   # or DeepReg.DeepRegLogic()
    tnode = logic.register(fixedNode, movingNode, device="auto")  # model=DEFAULT_MODEL

The panel runs the registration in a worker thread (:meth:`DeepRegLogic.startJob`) and polls it
from a ``qt.QTimer``; MRML nodes are read before the job starts and written after it ends, on the
main thread.  Outside Slicer (the headless ``slicer-core`` wheel used by the tests) the Qt and
``slicer.ScriptedLoadableModule`` parts are unavailable; the module still imports, so that its
Logic can be used and checked there.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time
from pathlib import Path

# DeepRegLib sits beside this file in an installed extension (qt-scripted-modules) and one
# folder up in the source tree (module path added in Application Settings > Modules).
_HERE = Path(__file__).resolve().parent
for _cand in (_HERE, _HERE.parent):
    if (_cand / "DeepRegLib" / "__init__.py").is_file():
        if str(_cand) not in sys.path:
            sys.path.insert(0, str(_cand))
        break

import slicer  # noqa: E402

try:  # inside the Slicer application
    import ctk  # noqa: F401
    import qt
    import vtk
    from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                               ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
    from slicer.util import VTKObservationMixin
    IN_SLICER = True
except ImportError:  # headless (slicer-core wheel): keep the logic usable
    qt = None
    import vtk  # noqa: F401

    class ScriptedLoadableModule:  # minimal stand-ins
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            pass

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleTest:
        pass

    class VTKObservationMixin:
        def __init__(self):
            pass

    IN_SLICER = False

from DeepRegLib import DEFAULT_MODEL, project  # noqa: E402  (no torch needed)
from DeepRegLib import mrml, worker  # noqa: E402  (no torch needed)
from DeepRegLib.errors import DeepRegError, InputError  # noqa: E402

try:
    from typing import Annotated, Union

    from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
    from slicer import (vtkMRMLGridTransformNode, vtkMRMLLabelMapVolumeNode, vtkMRMLLinearTransformNode,
                        vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTransformNode)
except ImportError:  # Slicer < 5.4 or headless
    parameterNodeWrapper = None

log = logging.getLogger("DeepReg")

#: Panel mode -> (engine mode, refine).  "Deformable" runs the model card's default refinement (a few
#: steps, for models whose card has one; refine=None); "Deformable + refine" the full one.
MODES = {"Affine only": ("affine", False), "Deformable": ("deformable", None)}
if importlib.util.find_spec("DeepRegLib.refine") is not None:
    MODES["Deformable + refine"] = ("deformable", True)
DEVICES = ("Auto", "CPU", "GPU")  # "GPU" is shown only when torch sees one (see DeepRegWidget._syncDevices)
HELP_URL = project.HELP_URL
MODEL_PROBLEMS: list = []
MODEL_CARDS = mrml.list_model_cards(MODEL_PROBLEMS)  # reads the cards only; bad cards skipped and reported
MODEL_NAMES = sorted(MODEL_CARDS) or [DEFAULT_MODEL]
DATA_LICENCE = ("The bundled model and sample brains derive from Mindboggle-101 OASIS-TRT-20 (Creative Commons "
                "BY-NC-SA 3.0, (c) 2012 Mindboggle team; OASIS data terms apply; non-commercial use only). Cite "
                "Klein A., Tourville J. (2012) 101 labeled brain images and a consistent human cortical labeling "
                "protocol. Front. Neurosci. 6:171, doi:10.3389/fnins.2012.00171.")
#: The panel polls the worker every POLL_MS and then sleeps GIL_YIELD_S (releasing the GIL): PythonQt's
#: thread support is not enabled in Slicer, so the main thread keeps the GIL while the Qt event loop is
#: idle and a Python thread runs only while the main thread sleeps or runs Python.  SimpleITK filters
#: and torch ops release the GIL themselves (measured headless), so the heavy work runs regardless.
POLL_MS = 50
GIL_YIELD_S = 0.035

#: Widgets of Resources/UI/DeepReg.ui the Widget code uses, with their classes (checked by Testing/test_slicer_ui.py).
UI_WIDGETS = {
    "inputsCollapsibleButton": "ctkCollapsibleButton",
    "fixedVolumeSelector": "qMRMLNodeComboBox",
    "movingVolumeSelector": "qMRMLNodeComboBox",
    "initialTransformSelector": "qMRMLNodeComboBox",
    "skipAffineCheckBox": "QCheckBox",
    "modeComboBox": "QComboBox",
    "modelComboBox": "QComboBox",
    "deviceComboBox": "QComboBox",
    "labelsCollapsibleButton": "ctkCollapsibleButton",
    "movingLabelsSelector": "qMRMLNodeComboBox",
    "fixedMaskSelector": "qMRMLNodeComboBox",
    "movingMaskSelector": "qMRMLNodeComboBox",
    "outputsCollapsibleButton": "ctkCollapsibleButton",
    "outputTransformSelector": "qMRMLNodeComboBox",
    "outputVolumeSelector": "qMRMLNodeComboBox",
    "affinePartCheckBox": "QCheckBox",
    "jacobianCheckBox": "QCheckBox",
    "registerButton": "QPushButton",
    "stopRefineButton": "QPushButton",
    "cancelButton": "QPushButton",
    "progressBar": "QProgressBar",
    "statusLabel": "QLabel",
    "logCollapsibleButton": "ctkCollapsibleButton",
    "logTextEdit": "QPlainTextEdit",
    "displayCollapsibleButton": "ctkCollapsibleButton",
    "opacitySlider": "ctkSliderWidget",
    "flickerButton": "QPushButton",
    "showJacobianButton": "QPushButton",
}


def _deepreg_lib_dir() -> Path:
    import DeepRegLib
    return Path(DeepRegLib.__file__).resolve().parent


def sampleDataDir() -> Path:
    """``Resources/SampleData`` beside the DeepRegLib package (source tree and installed extension)."""
    return _deepreg_lib_dir().parent / "Resources" / "SampleData"


def iconPath() -> str:
    return str(_HERE / "Resources" / "Icons" / "DeepReg.png")


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


def licenceStorePath() -> str:
    """Where the accepted licences are recorded: beside Slicer's settings (else DeepRegLib's default)."""
    if IN_SLICER:
        try:
            return os.path.join(os.path.dirname(slicer.app.slicerUserSettingsFilePath), "DeepReg-licences.json")
        except AttributeError:
            pass
    from DeepRegLib.licence import default_store_path
    return str(default_store_path())


#
# Module
#
class DeepReg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "DeepReg"
        self.parent.categories = ["Registration"]
        self.parent.dependencies = []
        self.parent.contributors = ["DeepReg for Slicer contributors"]
        self.parent.helpText = (
            "Fast learned registration of skull-stripped T1 brain MRI. Pick a fixed and a moving volume and click "
            "<b>Register</b>. The result transform, named '&lt;moving&gt; to &lt;fixed&gt; (DeepReg)', maps the "
            "moving volume onto the fixed one: its <i>from parent</i> maps fixed points to moving points (the "
            "resampling direction), so the moving volume placed under it is shown registered. A linear transform "
            "above the moving volume (or the <i>Initial transform</i>) is used as the initial transform. Modes: "
            "affine only (a linear transform), deformable (the network and the model's few-step refinement, about a "
            "second), deformable + refine (the full per-pair optimisation, ~10 s). Optional: warp a label map or "
            "segmentation, fixed and moving masks. "
            f'See the <a href="{project.HELP_URL}">DeepReg documentation</a>.')
        self.parent.acknowledgementText = (
            "DeepReg for Slicer (code: Apache-2.0). The bundled network follows the LDR student of Tran et al. "
            "(light-weight deformable registration by knowledge distillation). " + DATA_LICENCE)
        if IN_SLICER:
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
if parameterNodeWrapper is not None:
    LabelsNode = Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, None]

    @parameterNodeWrapper
    class DeepRegParameterNode:
        """Panel state, saved with the scene (references and values of a vtkMRMLScriptedModuleNode).

        The model, device and mode combo boxes are bound to it (``SlicerParameterName`` in the .ui).
        """

        fixedVolume: vtkMRMLScalarVolumeNode
        movingVolume: vtkMRMLScalarVolumeNode
        initialTransform: vtkMRMLLinearTransformNode
        skipAffineStage: bool = False
        mode: Annotated[str, Choice(list(MODES))] = "Deformable"
        model: Annotated[str, Choice(MODEL_NAMES)] = DEFAULT_MODEL if DEFAULT_MODEL in MODEL_NAMES else MODEL_NAMES[0]
        device: Annotated[str, Choice(list(DEVICES))] = "Auto"
        movingLabels: LabelsNode
        fixedMask: LabelsNode
        movingMask: LabelsNode
        outputTransform: Union[vtkMRMLGridTransformNode, vtkMRMLLinearTransformNode, None]
        outputVolume: vtkMRMLScalarVolumeNode
        saveAffinePart: bool = False
        computeJacobian: bool = False
        opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
        resultTransform: vtkMRMLTransformNode  # the last result (for the overlay controls)
else:
    DeepRegParameterNode = None


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
        self.ui.progressBar.setValue(0)
        for problem in MODEL_PROBLEMS:
            self._appendLog(f"warning: {problem}")
        if MODEL_PROBLEMS:
            self.ui.statusLabel.text = f"{len(MODEL_PROBLEMS)} model card(s) skipped; see the log."

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.registerButton.clicked.connect(self.onRegisterButton)
        self.ui.cancelButton.clicked.connect(self.onCancelButton)
        self.ui.stopRefineButton.clicked.connect(self.onStopRefineButton)
        self.ui.opacitySlider.valueChanged.connect(self.onOpacityChanged)
        self.ui.flickerButton.toggled.connect(self.onFlickerToggled)
        self.ui.showJacobianButton.toggled.connect(self.onShowJacobianToggled)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._job is not None:
            self._job.cancel()
        if self._timer is not None:
            self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
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
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # model, device and mode combo boxes are bound here too (Choice parameters; the connector fills them)
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._decorateCombos()
            self._checkCanApply()

    def _decorateCombos(self) -> None:
        """Model card tooltips, and the GPU device only when torch sees one (the bound connector refills the boxes)."""
        for i in range(self.ui.modelComboBox.count):
            card = MODEL_CARDS.get(self.ui.modelComboBox.itemText(i))
            if card:
                self.ui.modelComboBox.setItemData(i, mrml.model_tooltip(card), qt.Qt.ToolTipRole)
        self._syncDevices()

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

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        busy = self._job is not None and (self._job.running or self._job.worker_alive)
        reason = DeepRegLogic.inputProblem(p.fixedVolume, p.movingVolume) if p else "no parameter node"
        self.ui.registerButton.enabled = reason is None and not busy
        self.ui.registerButton.toolTip = reason or "Register the moving volume to the fixed volume"
        deformable = bool(p and MODES.get(p.mode, ("deformable",))[0] != "affine")
        self.ui.affinePartCheckBox.enabled = deformable
        self.ui.jacobianCheckBox.enabled = deformable
        self.ui.skipAffineCheckBox.enabled = bool(p and (p.initialTransform or (
            p.movingVolume and p.movingVolume.GetParentTransformNode() is not None)))
        has_result = bool(p and p.resultTransform)
        self.ui.flickerButton.enabled = has_result
        self.ui.showJacobianButton.enabled = bool(has_result and p.resultTransform.GetNodeReference("DeepReg.jacobian"))

    def _appendLog(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)
        log.info("DeepReg: %s", line)

    # -- registration
    def onRegisterButton(self) -> None:
        p = self._parameterNode
        testing = slicer.app.testingEnabled()
        out = p.outputTransform
        if out is not None and mrml.transform_node_has_content(out) and not testing:
            if not slicer.util.confirmYesNoDisplay(f"Overwrite the transform '{out.GetName()}' with the new result?"):
                return
        card = MODEL_CARDS.get(p.model, {})
        if not self.logic.ensureLicenceAccepted(card, ask=not testing, log=self._appendLog):
            self.ui.statusLabel.text = "The model's licence was not accepted; nothing was done."
            return
        try:
            self.logic.ensureTorch(askConfirmation=True)
        except DeepRegError as exc:
            slicer.util.errorDisplay(str(exc))
            return
        engine_mode, refine = MODES[p.mode]
        options = dict(model=p.model, device=p.device.lower(), mode=engine_mode, refine=refine,
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
                    return
                self._appendLog(f"hardening '{exc.transform_node.GetName()}' into '{exc.node.GetName()}' (user's choice)")
                mrml.harden_parent(exc.node)
            except DeepRegError as exc:
                self.ui.statusLabel.text = "Not started: " + str(exc)
                slicer.util.errorDisplay(f"Registration cannot start:\n{exc}")
                return
        warnings = self.logic.domainWarnings(req, card)
        for w in warnings:
            self._appendLog("domain warning: " + w)
        if warnings and not testing and not slicer.util.confirmOkCancelDisplay(
                "The inputs do not look like what the model was trained on:\n\n- " + "\n- ".join(warnings)
                + "\n\nRegister anyway?", windowTitle="DeepReg: inputs outside the model's domain"):
            self.ui.statusLabel.text = "Not started (inputs outside the model's domain)."
            return
        self._appendLog(f"--- {time.strftime('%H:%M:%S')} {p.mode}: '{p.movingVolume.GetName()}' to "
                        f"'{p.fixedVolume.GetName()}', model {p.model} ({card.get('description', '')}; "
                        f"expects {card.get('input', {}).get('expects', '?')}; licence {card.get('licence', '?')}), "
                        f"device {p.device}")
        for btn in (self.ui.flickerButton, self.ui.showJacobianButton):  # a new run resets the overlay controls
            if btn.checked:
                btn.checked = False
        self._job, self._jobInfo = self.logic.startJob(req), info
        self.ui.cancelButton.enabled = True
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.text = "Starting..."
        self._checkCanApply()
        self._timer.start()

    def onCancelButton(self) -> None:
        if self._job is not None:
            self._job.cancel()  # the job ends for the panel at the next poll; nothing is written

    def onStopRefineButton(self) -> None:
        if self._job is not None:
            self._job.stop_refinement()
            self.ui.stopRefineButton.enabled = False

    def _onTimer(self) -> None:
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
        if job.running or job.worker_alive:
            time.sleep(GIL_YIELD_S)  # let the worker thread run (see GIL_YIELD_S)
        if not job.running:
            self.ui.cancelButton.enabled = False
            self.ui.stopRefineButton.enabled = False
            if not job.worker_alive:  # a cancelled worker stops at its next poll; then allow a new run
                self._timer.stop()
                self._syncDevices()
            elif job.state == "cancelled":
                self.ui.statusLabel.text = "Cancelled; the scene is unchanged (stopping the current step...)."
            self._checkCanApply()

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
        self._appendLog("wrote: " + ", ".join(f"'{n.GetName()}'" for n in (
            nodes.transform, nodes.affine, nodes.warped_volume, nodes.warped_labels, nodes.jacobian) if n is not None))
        self.showOverlay()

    # -- reading the result
    def showOverlay(self) -> None:
        p = self._parameterNode
        slicer.util.setSliceViewerLayers(background=p.fixedVolume, foreground=p.movingVolume,
                                         foregroundOpacity=p.opacity, fit=True)

    def onOpacityChanged(self, value: float) -> None:
        for name in slicer.app.layoutManager().sliceViewNames():
            comp = slicer.app.layoutManager().sliceWidget(name).sliceLogic().GetSliceCompositeNode()
            comp.SetForegroundOpacity(value)

    def onFlickerToggled(self, unwarped: bool) -> None:
        """Show the moving volume under its previous parent (checked) or under the DeepReg result."""
        p = self._parameterNode
        if not (p and p.movingVolume and p.resultTransform):
            return
        previous = p.resultTransform.GetAttribute(mrml.ATTR_PREVIOUS_PARENT) or None
        p.movingVolume.SetAndObserveTransformNodeID(previous if unwarped else p.resultTransform.GetID())
        self.ui.flickerButton.text = "Show warped" if unwarped else "Show unwarped"

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


#
# Logic
#
class DeepRegLogic(ScriptedLoadableModuleLogic):
    """Registration on MRML nodes: synchronous (:meth:`register`) or in a worker thread
    (:meth:`prepare`, :meth:`startJob`, :meth:`apply`).  No widget needed; runs headless."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return DeepRegParameterNode(super().getParameterNode())

    @staticmethod
    def inputProblem(fixedNode, movingNode):
        """Why Register cannot run yet (a message), or None when the inputs are valid."""
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
    def ensureTorch(askConfirmation: bool = True) -> None:
        """Make sure torch is installed, without importing it (the worker imports it, with progress).

        Inside Slicer, installs it through SlicerPyTorch's PyTorchUtils (asking first) with the version
        requirement of pyproject.toml; never in testing mode (self-tests and build machines), where a
        missing torch is a clear error (the self-test skips).  The installed version is checked when the
        worker imports torch (:func:`DeepRegLib.worker.check_torch_version`).
        """
        if torchAvailable():
            return
        how = ("DeepReg needs PyTorch. Install the 'PyTorch' extension (SlicerPyTorch) from the Extensions "
               "Manager, restart Slicer and click Register again; it installs torch into Slicer's Python.")
        if not IN_SLICER:
            raise DeepRegError("PyTorch is not installed (pip install 'torch" + worker.TORCH_REQUIREMENT + "').")
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
        with slicer.util.WaitCursor():
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False, torchVersionRequirement=worker.TORCH_REQUIREMENT)
        if torch is None:
            raise DeepRegError("PyTorch installation failed. " + how)

    @staticmethod
    def ensureLicenceAccepted(card: dict, ask: bool = True, log=None, storePath=None) -> bool:
        """Show a non-commercial model's licence once and record the user's acceptance.

        ``ask=False`` (testing mode) accepts without asking and says so in ``log``.
        """
        from DeepRegLib.licence import LicenceStore, licence_notice
        store = LicenceStore(storePath or licenceStorePath())
        if store.accepted(card):
            return True
        if ask and not _askLicence(licence_notice(card)):
            return False
        store.accept(card)
        if log is not None:
            log(f"licence of model '{card.get('name', '?')}' accepted" + ("" if ask else " (testing mode)"))
        return True

    @staticmethod
    def domainWarnings(request, card: dict) -> list:
        from DeepRegLib.domain import check_pair
        return check_pair(request.fixed, request.moving, card)

    @staticmethod
    def prepare(fixedNode, movingNode, model=None, device="auto", mode="deformable", refine=None,
                initialTransform=None, skipAffineStage=False, fixedMask=None, movingMask=None, movingLabels=None,
                outputTransform=None, outputVolume=None, jacobian=False, affinePart=False):
        """Check the nodes and copy what the worker needs (main thread): ``(request, nodeInputs)``."""
        return mrml.gather_inputs(fixedNode, movingNode, model=model, device=device, mode=mode, refine=refine,
                                  initial_transform=initialTransform, skip_affine_stage=skipAffineStage,
                                  fixed_mask=fixedMask, moving_mask=movingMask, moving_labels=movingLabels,
                                  output_transform=outputTransform, output_volume=outputVolume,
                                  jacobian=jacobian, affine_part=affinePart)

    @staticmethod
    def startJob(request) -> "worker.Job":
        """Start the registration in a worker thread; poll the returned job from the main thread."""
        return worker.run_job(request)

    @staticmethod
    def apply(nodeInputs, outputs, setMovingParent=True, scene=None):
        """Write a finished job's outputs into the scene (main thread); returns :class:`mrml.ResultNodes`."""
        scene = scene or nodeInputs.fixed.GetScene() or slicer.mrmlScene
        return mrml.apply_outputs(scene, nodeInputs, outputs, set_moving_parent=setMovingParent)

    def register(self, fixedNode, movingNode, model=None, device="auto", outputVolume=None, progress=None,
                 setMovingParent=False, outputTransform=None, jacobian=False, name=None, scene=None, **options):
        """Register ``movingNode`` to ``fixedNode`` in the caller's thread; returns the result transform node.

        A new ``vtkMRMLGridTransformNode`` (``mode="deformable"``, the default) or
        ``vtkMRMLLinearTransformNode`` (``mode="affine"``), fixed -> moving.  Never modifies the input
        volumes' data; sets the moving volume's parent transform only when ``setMovingParent``.
        ``options``: ``mode``, ``refine``, ``initial_transform``, ``skip_affine_stage``, ``fixed_mask``,
        ``moving_mask``, ``moving_labels``, ``affine_part``.  ``progress(stage, fraction)``.  Raises
        ``DeepRegLib.errors.DeepRegError`` with a user message.
        """
        self.ensureTorch(askConfirmation=True)
        scene = scene or (fixedNode.GetScene() if fixedNode is not None else None) or slicer.mrmlScene
        return mrml.register_nodes(scene, fixedNode, movingNode, model=model, device=device,
                                   output_volume=outputVolume, progress=progress,
                                   set_moving_parent=setMovingParent, output_transform=outputTransform,
                                   name=name, jacobian=jacobian, **options)


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
        self.setUp()
        self.test_DeepRegLogicOnSampleData()
        self.setUp()
        self.test_DeepRegBadInput()
        self.setUp()
        self.test_DeepRegWidget()

    def _loadPair(self):
        base = sampleDataDir()
        fixed = slicer.util.loadVolume(str(base / "OASIS-TRT-20-17" / "t1weighted_brain.nii.gz"))
        moving = slicer.util.loadVolume(str(base / "OASIS-TRT-20-18" / "t1weighted_brain.nii.gz"))
        return fixed, moving

    def test_DeepRegLogicOnSampleData(self):
        import numpy as np
        self.delayDisplay("Registering the sample brains (full logic)")
        fixed, moving = self._loadPair()
        before = {n.GetID(): slicer.util.arrayFromVolume(n).copy() for n in (fixed, moving)}
        out = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "warped")
        t0 = time.perf_counter()
        node = DeepRegLogic().register(fixed, moving, device="cpu", outputVolume=out)
        seconds = time.perf_counter() - t0
        self.assertTrue(node.IsA("vtkMRMLGridTransformNode"))
        self.assertIsNone(moving.GetParentTransformNode())
        for n in (fixed, moving):
            self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(n), before[n.GetID()]))
        res = mrml.last_result
        pts = np.array([[0.0, 0.0, 0.0], [20.0, -10.0, 15.0], [-30.0, 25.0, -5.0]])
        pts = pts + np.asarray(res.fixed.TransformContinuousIndexToPhysicalPoint(
            [s / 2.0 for s in res.fixed.GetSize()]))
        self.assertLess(np.abs(mrml.transform_node_map_points(node, pts) - res.map_points(pts)).max(), 0.1)
        f = slicer.util.arrayFromVolume(fixed).astype(float).ravel()
        w = slicer.util.arrayFromVolume(out).astype(float).ravel()
        import SimpleITK as sitk
        aff = sitk.GetArrayFromImage(res.warp_image(mrml.volume_node_to_image(moving), affine_only=True)).ravel()
        self.assertGreater(np.corrcoef(f, w)[0, 1], np.corrcoef(f, aff)[0, 1])
        moving.SetAndObserveTransformNodeID(node.GetID())
        self.assertTrue(slicer.vtkSlicerTransformLogic().hardenTransform(moving))
        self.delayDisplay(f"Registered in {seconds:.1f} s")

    def test_DeepRegBadInput(self):
        fixed, moving = self._loadPair()
        n = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(InputError):
            DeepRegLogic().register(fixed, fixed)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), n)
        labels = slicer.util.loadLabelVolume(str(sampleDataDir() / "OASIS-TRT-20-18" / "labels.DKT31.manual+aseg.nii.gz"))
        n = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(InputError):
            DeepRegLogic().register(fixed, labels)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), n)

    def _waitForJob(self, widget, timeout=300.0):
        t0 = time.perf_counter()
        while widget._job is not None and (widget._job.running or widget._job.worker_alive):
            slicer.app.processEvents()
            time.sleep(0.02)
            self.assertLess(time.perf_counter() - t0, timeout)
        slicer.app.processEvents()
        widget._onTimer()

    def test_DeepRegWidget(self):
        self.delayDisplay("Panel workflow (worker thread, cancel, labels)")
        fixed, moving = self._loadPair()
        slicer.util.selectModule("DeepReg")
        widget = slicer.util.getModuleWidget("DeepReg")
        p = widget._parameterNode
        p.fixedVolume, p.movingVolume, p.device, p.mode = fixed, moving, "CPU", "Deformable"
        self.assertEqual(widget.ui.modeComboBox.currentText, "Deformable")  # bound through the parameter node
        widget.ui.modelComboBox.setCurrentIndex(0)
        self.assertEqual(p.model, widget.ui.modelComboBox.currentText)
        self.assertTrue(widget.ui.registerButton.enabled)
        # cancel: the scene is left as it was
        n = slicer.mrmlScene.GetNumberOfNodes()
        widget.ui.registerButton.click()
        self.assertTrue(widget.ui.cancelButton.enabled)
        widget.ui.cancelButton.click()
        self._waitForJob(widget)
        self.assertEqual(widget._job.state, "cancelled")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), n)
        self.assertIsNone(moving.GetParentTransformNode())
        # a full run
        widget.ui.registerButton.click()
        self._waitForJob(widget)
        self.assertEqual(widget._job.state, "done")
        self.assertIsNotNone(p.resultTransform)
        self.assertEqual(moving.GetParentTransformNode().GetID(), p.resultTransform.GetID())
        self.assertIn("DeepReg", p.resultTransform.GetName())
        widget.ui.flickerButton.checked = True
        self.assertIsNone(moving.GetParentTransformNode())
        widget.ui.flickerButton.checked = False
        self.assertEqual(moving.GetParentTransformNode().GetID(), p.resultTransform.GetID())
        self.assertIn("Done", widget.ui.statusLabel.text)
        self.assertIn(DEFAULT_MODEL, widget.ui.logTextEdit.toPlainText())
        p.movingVolume = fixed
        self.assertFalse(widget.ui.registerButton.enabled)
        self.delayDisplay("Test passed")
