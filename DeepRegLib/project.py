"""Where this project lives: the one place for its homepage, help, icon and screenshot URLs.

``CMakeLists.txt`` reads the ``*_URL`` lines below (``file(STRINGS ...)``) for the extension's
metadata, and the Slicer module uses them for its help link, so the two cannot disagree.  Every
URL points at a file in this repository (checked by ``Testing/test_slicer_ui.py``).  Keep each
value a plain string literal on one line: CMake parses this file.
"""

REPOSITORY_URL = "https://github.com/SlicerDeepReg/SlicerDeepReg"
HOMEPAGE_URL = "https://github.com/SlicerDeepReg/SlicerDeepReg#readme"
HELP_URL = "https://github.com/SlicerDeepReg/SlicerDeepReg/blob/main/README.md#3d-slicer-module"
ICON_URL = "https://raw.githubusercontent.com/SlicerDeepReg/SlicerDeepReg/main/DeepReg/Resources/Icons/DeepReg.png"
SCREENSHOT_URL = "https://raw.githubusercontent.com/SlicerDeepReg/SlicerDeepReg/main/docs/screenshot-overlay.png"
