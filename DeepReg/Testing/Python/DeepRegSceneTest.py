"""In-Slicer test: a DeepReg result saved with the scene (.mrb) reloads with the same mapping."""
import os
import tempfile
import unittest

import numpy as np
import slicer


class DeepRegSceneTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def test_result_survives_mrb(self):
        import DeepReg
        from DeepRegLib.slicer_adapter import mrml
        if not DeepReg.torchAvailable():  # never install torch in a self-test or on a build machine
            self.skipTest("PyTorch is not installed (install the PyTorch extension; tests never install it)")
        base = DeepReg.sampleDataDir()
        fixed = slicer.util.loadVolume(str(base / "OASIS-TRT-20-17" / "t1weighted_brain.nii.gz"))
        moving = slicer.util.loadVolume(str(base / "OASIS-TRT-20-18" / "t1weighted_brain.nii.gz"))
        node = DeepReg.DeepRegLogic().register(fixed, moving, device="cpu", setMovingParent=True)
        name = node.GetName()
        pts = np.array([[0.0, 0.0, 0.0], [15.0, -20.0, 10.0], [-25.0, 10.0, -15.0]])
        before = mrml.transform_node_map_points(node, pts)
        path = os.path.join(tempfile.mkdtemp(), "deepreg.mrb")
        self.assertTrue(slicer.util.saveScene(path))
        slicer.mrmlScene.Clear()
        slicer.util.loadScene(path)
        node = slicer.util.getNode(name)
        self.assertEqual(node.GetClassName(), "vtkMRMLTransformNode")  # reloads as itself
        moving = node.GetNodeReference(node.GetMovingNodeReferenceRole())
        self.assertEqual(moving.GetParentTransformNode().GetID(), node.GetID())
        # the node holds the objects Slicer builds when reading the .h5 (B-spline then affine): same mapping
        self.assertLess(np.abs(mrml.transform_node_map_points(node, pts) - before).max(), 0.01)


def runTest():
    unittest.main(module=__name__, exit=False)
