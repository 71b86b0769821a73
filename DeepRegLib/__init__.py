"""DeepRegLib: fast learned deformable registration (engine of the DeepReg Slicer extension).

Pure Python on torch, numpy and SimpleITK; never imports Slicer except in
:mod:`DeepRegLib.slicer_adapter.mrml`.  Physical coordinates are LPS millimetres (ITK convention);
transforms map fixed points to moving points (resampling convention).
"""
__version__ = "0.1.0"

#: the bundled model used when none is named (kept here so that importing it needs no torch)
DEFAULT_MODEL = "ldr_brain_v4"
