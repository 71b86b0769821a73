"""DeepReg: fast learned deformable registration of brain MRI in 3D Slicer.

The module is a thin layer over ``DeepRegLib`` (pure Python engine on torch, numpy and
SimpleITK).  All MRML work lives in ``DeepRegLib.mrml``; :class:`DeepRegLogic` is a thin
wrapper of :func:`DeepRegLib.mrml.register_nodes`, usable from the Python console::

    logic = slicer.util.getModuleLogic("DeepReg")   # or DeepReg.DeepRegLogic()
    tnode = logic.register(fixedNode, movingNode, device="auto")  # model=DEFAULT_MODEL

Outside Slicer (the headless ``slicer-core`` wheel used by the tests) the Qt and
``slicer.ScriptedLoadableModule`` parts are unavailable; the module still imports, so
that its logic can be used and checked there.
"""
from __future__ import annotations

import logging
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

try:
    from typing import Annotated

    from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
    from slicer import vtkMRMLGridTransformNode, vtkMRMLScalarVolumeNode, vtkMRMLTransformNode
except ImportError:  # Slicer < 5.4 or headless
    parameterNodeWrapper = None

from DeepRegLib import DEFAULT_MODEL  # noqa: E402  (no torch needed)
from DeepRegLib.errors import DeepRegError  # noqa: E402  (no torch needed)

log = logging.getLogger("DeepReg")

DEVICES = ("Auto", "CPU", "GPU")
HELP_URL = "https://github.com/DeepRegNet/DeepReg"
DATA_LICENCE = ("Sample brains and the training data of the bundled model: Mindboggle-101 OASIS-TRT-20 "
                "(Creative Commons BY-NC-SA 3.0, (c) 2012 Mindboggle team; OASIS data terms apply). "
                "Cite Klein A., Tourville J. (2012) 101 labeled brain images and a consistent human cortical "
                "labeling protocol. Front. Neurosci. 6:171, doi:10.3389/fnins.2012.00171.")

#: Widgets of Resources/UI/DeepReg.ui the Widget code uses, with their classes (checked by Testing/test_slicer_ui.py).
UI_WIDGETS = {
    "inputsCollapsibleButton": "ctkCollapsibleButton",
    "fixedVolumeSelector": "qMRMLNodeComboBox",
    "movingVolumeSelector": "qMRMLNodeComboBox",
    "modelComboBox": "QComboBox",
    "deviceComboBox": "QComboBox",
    "outputsCollapsibleButton": "ctkCollapsibleButton",
    "outputTransformSelector": "qMRMLNodeComboBox",
    "outputVolumeSelector": "qMRMLNodeComboBox",
    "jacobianCheckBox": "QCheckBox",
    "registerButton": "QPushButton",
    "cancelButton": "QPushButton",
    "progressBar": "QProgressBar",
    "statusLabel": "QLabel",
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


#
# Module
#
class DeepReg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "DeepReg"
        self.parent.categories = ["Registration"]
        self.parent.dependencies = []
        self.parent.contributors = ["DeepReg contributors"]
        self.parent.helpText = (
            "Fast learned deformable registration of skull-stripped T1 brain MRI. Pick a fixed and a moving "
            "volume and click <b>Register</b>: the result is a grid transform (fixed to moving, the resampling "
            "direction) that can be saved, hardened, inverted or applied to other nodes. "
            f'See the <a href="{HELP_URL}">DeepReg documentation</a>.')
        self.parent.acknowledgementText = (
            "Built on the DeepReg project (UCL/KCL) and 3D Slicer. " + DATA_LICENCE)
        if IN_SLICER:
            slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Add the two bundled brains to the Sample Data module (category DeepReg), loaded from local files."""
    try:
        import SampleData
    except ImportError:
        return
    base = sampleDataDir()
    for subject in ("OASIS-TRT-20-17", "OASIS-TRT-20-18"):
        path = base / subject / "t1weighted_brain.nii.gz"
        if not path.is_file():
            continue
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category="DeepReg", sampleName=f"DeepReg{subject}", uris=path.as_uri(),
            fileNames=f"{subject}_t1weighted_brain.nii.gz", nodeNames=subject,
            thumbnailFileName=iconPath(), loadFileType="VolumeFile", checksums=None)


#
# Parameter node
#
if parameterNodeWrapper is not None:
    @parameterNodeWrapper
    class DeepRegParameterNode:
        """Panel state, saved with the scene (references and values of a vtkMRMLScriptedModuleNode)."""

        fixedVolume: vtkMRMLScalarVolumeNode
        movingVolume: vtkMRMLScalarVolumeNode
        model: str = DEFAULT_MODEL
        device: Annotated[str, Choice(list(DEVICES))] = "Auto"
        outputTransform: vtkMRMLGridTransformNode
        outputVolume: vtkMRMLScalarVolumeNode
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
        self._cancelRequested = False
        self._busy = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DeepReg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DeepRegLogic()

        from DeepRegLib import mrml
        cards = mrml.list_model_cards()
        for i, (name, card) in enumerate(sorted(cards.items())):
            self.ui.modelComboBox.addItem(name)
            self.ui.modelComboBox.setItemData(i, mrml.model_tooltip(card), qt.Qt.ToolTipRole)
        for d in DEVICES:
            self.ui.deviceComboBox.addItem(d)
        self.ui.cancelButton.enabled = False
        self.ui.progressBar.setValue(0)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelComboBox.currentTextChanged.connect(self.onModelChanged)
        self.ui.deviceComboBox.currentTextChanged.connect(self.onDeviceChanged)
        self.ui.registerButton.clicked.connect(self.onRegisterButton)
        self.ui.cancelButton.clicked.connect(self.onCancelButton)
        self.ui.opacitySlider.valueChanged.connect(self.onOpacityChanged)
        self.ui.flickerButton.toggled.connect(self.onFlickerToggled)
        self.ui.showJacobianButton.toggled.connect(self.onShowJacobianToggled)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
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
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self.ui.modelComboBox.setCurrentText(self._parameterNode.model)
            self.ui.deviceComboBox.setCurrentText(self._parameterNode.device)
            self._checkCanApply()

    # -- state
    def onModelChanged(self, text: str) -> None:
        if self._parameterNode and text:
            self._parameterNode.model = text

    def onDeviceChanged(self, text: str) -> None:
        if self._parameterNode and text:
            self._parameterNode.device = text

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        reason = DeepRegLogic.inputProblem(p.fixedVolume, p.movingVolume) if p else "no parameter node"
        self.ui.registerButton.enabled = reason is None and not self._busy
        self.ui.registerButton.toolTip = reason or "Register the moving volume to the fixed volume"
        has_result = bool(p and p.resultTransform)
        self.ui.flickerButton.enabled = has_result
        self.ui.showJacobianButton.enabled = bool(has_result and p.resultTransform.GetNodeReference("DeepReg.jacobian"))

    # -- registration
    def onCancelButton(self) -> None:
        self._cancelRequested = True
        self.ui.statusLabel.text = "Cancelling..."

    def _progress(self, stage: str, fraction: float) -> None:
        from DeepRegLib.mrml import RegistrationCancelled
        self.ui.progressBar.setValue(int(round(100 * fraction)))
        self.ui.statusLabel.text = f"{stage} ({time.perf_counter() - self._t0:.1f} s)"
        slicer.app.processEvents()
        if self._cancelRequested:
            raise RegistrationCancelled("registration cancelled")

    def onRegisterButton(self) -> None:
        from DeepRegLib.mrml import RegistrationCancelled
        p = self._parameterNode
        out = p.outputTransform
        if out is not None and out.GetTransformFromParent() is not None and not slicer.app.testingEnabled():
            if not slicer.util.confirmYesNoDisplay(
                    f"Overwrite the existing transform '{out.GetName()}' with the new result?"):
                return
        self._cancelRequested = False
        self._busy = True
        self._t0 = time.perf_counter()
        self.ui.registerButton.enabled = False
        self.ui.cancelButton.enabled = True
        if self.ui.flickerButton.checked:
            self.ui.flickerButton.checked = False
        try:
            with slicer.util.WaitCursor():
                node = self.logic.register(
                    p.fixedVolume, p.movingVolume, model=p.model, device=p.device.lower(),
                    outputVolume=p.outputVolume, progress=self._progress, setMovingParent=True,
                    outputTransform=out, jacobian=p.computeJacobian)
        except RegistrationCancelled:
            self.ui.statusLabel.text = "Cancelled; the scene is unchanged."
            return
        except DeepRegError as exc:
            log.error("DeepReg registration failed: %s", exc)
            self.ui.statusLabel.text = "Failed; the scene is unchanged."
            slicer.util.errorDisplay(f"Registration failed:\n{exc}")
            return
        except Exception as exc:  # unexpected: log the traceback, show a short message
            log.exception("DeepReg registration failed")
            self.ui.statusLabel.text = "Failed; see the error log."
            slicer.util.errorDisplay(f"Registration failed: {exc}", detailedText=_traceback())
            return
        finally:
            self._busy = False
            self.ui.cancelButton.enabled = False
            self._checkCanApply()
        p.resultTransform = node
        self.ui.progressBar.setValue(100)
        self.ui.statusLabel.text = (f"Done in {time.perf_counter() - self._t0:.1f} s "
                                    f"({node.GetAttribute('DeepReg.Device')}): {node.GetName()}")
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
        """Show the moving volume without (checked) or with its DeepReg transform."""
        p = self._parameterNode
        if not (p and p.movingVolume and p.resultTransform):
            return
        p.movingVolume.SetAndObserveTransformNodeID(None if unwarped else p.resultTransform.GetID())
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


def _traceback() -> str:
    import traceback
    return traceback.format_exc()


#
# Logic
#
class DeepRegLogic(ScriptedLoadableModuleLogic):
    """Thin wrapper of :func:`DeepRegLib.mrml.register_nodes` (no widget needed)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return DeepRegParameterNode(super().getParameterNode())

    @staticmethod
    def inputProblem(fixedNode, movingNode):
        """Why Register cannot run yet (a message), or None when the inputs are valid."""
        from DeepRegLib.errors import InputError
        from DeepRegLib.mrml import check_scalar_volume_node
        if fixedNode is None or movingNode is None:
            return "Select a fixed and a moving volume."
        if fixedNode.GetID() == movingNode.GetID():
            return "Fixed and moving must be different volumes."
        try:
            check_scalar_volume_node(fixedNode, "fixed")
            check_scalar_volume_node(movingNode, "moving")
        except InputError as exc:
            return str(exc)
        return None

    @staticmethod
    def ensureTorch(askConfirmation: bool = True):
        """Import torch; in Slicer, install it through SlicerPyTorch's PyTorchUtils when present (asking first)."""
        try:
            import torch
            return torch
        except ImportError:
            pass
        how = ("DeepReg needs PyTorch. Install the 'PyTorch' extension (SlicerPyTorch) from the Extensions "
               "Manager, restart Slicer and click Register again; it installs torch into Slicer's Python.")
        try:
            import PyTorchUtils
        except ImportError:
            raise DeepRegError(how) from None
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            testing = IN_SLICER and slicer.app.testingEnabled()
            if askConfirmation and not testing and not slicer.util.confirmOkCancelDisplay(
                    "DeepReg needs PyTorch, which is not installed yet. Install it now (download of several "
                    "hundred MB, a few minutes)?"):
                raise DeepRegError("PyTorch is not installed; DeepReg cannot run. " + how)
            torch = torchLogic.installTorch(askConfirmation=False)
            if torch is None:
                raise DeepRegError("PyTorch installation failed. " + how)
        import torch
        return torch

    def register(self, fixedNode, movingNode, model=None, device="auto", outputVolume=None, progress=None,
                 setMovingParent=False, outputTransform=None, jacobian=False, name=None, scene=None):
        """Register ``movingNode`` to ``fixedNode``; returns a new ``vtkMRMLGridTransformNode`` (fixed -> moving).

        Never modifies the input volumes' data; sets the moving volume's parent transform only when
        ``setMovingParent``.  ``outputVolume``: optional scalar volume receiving the warped moving volume.
        ``progress(stage, fraction)``.  Raises ``DeepRegLib.errors.DeepRegError`` with a user message.
        """
        self.ensureTorch(askConfirmation=True)
        from DeepRegLib.mrml import register_nodes
        scene = scene or (fixedNode.GetScene() if fixedNode is not None else None) or slicer.mrmlScene
        return register_nodes(scene, fixedNode, movingNode, model=model, device=device,
                              output_volume=outputVolume, progress=progress,
                              set_moving_parent=setMovingParent, output_transform=outputTransform,
                              name=name, jacobian=jacobian)


#
# Test (runs inside Slicer: Reload and Test, or ctest)
#
class DeepRegTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
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
        from DeepRegLib import mrml
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
        # hardening a copy through the node gives a volume (Slicer resampling path)
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
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), n)

    def test_DeepRegWidget(self):
        self.delayDisplay("Panel workflow")
        fixed, moving = self._loadPair()
        slicer.util.selectModule("DeepReg")
        widget = slicer.util.getModuleWidget("DeepReg")
        p = widget._parameterNode
        p.fixedVolume, p.movingVolume, p.device = fixed, moving, "CPU"
        self.assertTrue(widget.ui.registerButton.enabled)
        widget.ui.registerButton.click()
        self.assertIsNotNone(p.resultTransform)
        self.assertEqual(moving.GetParentTransformNode().GetID(), p.resultTransform.GetID())
        widget.ui.flickerButton.checked = True
        self.assertIsNone(moving.GetParentTransformNode())
        widget.ui.flickerButton.checked = False
        self.assertEqual(moving.GetParentTransformNode().GetID(), p.resultTransform.GetID())
        p.movingVolume = fixed
        self.assertFalse(widget.ui.registerButton.enabled)
        self.delayDisplay("Test passed")
