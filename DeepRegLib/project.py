"""Where this project lives: its repository, homepage, help, icon and screenshot URLs.

MAINTAINER: these URLs point at github.com/SlicerDeepReg/SlicerDeepReg, an organisation and
repository that DO NOT EXIST YET. When the repository is published, set the real owner/name here,
in the top-level ``CMakeLists.txt`` (literal strings: the Extensions Index reads them there) and in
``docs/DeepReg.json`` (``scm_url``); ``Testing/slicer/test_slicer_index.py`` checks that the three agree
and that each raw URL names a file of this repository.
"""

from pathlib import Path

#: the bundled resources (models, sample data): ``Resources/`` beside the ``DeepRegLib`` folder, both in
#: a checkout and where CMake copies the module into Slicer
RESOURCES_DIR = Path(__file__).resolve().parent.parent / "Resources"

PUBLISHED = False  # set to True once the URLs below resolve (the module then stops saying they may not)
REPOSITORY_URL = "https://github.com/SlicerDeepReg/SlicerDeepReg"
HOMEPAGE_URL = "https://github.com/SlicerDeepReg/SlicerDeepReg/blob/main/docs/slicer.md"
HELP_URL = "https://github.com/SlicerDeepReg/SlicerDeepReg/blob/main/docs/slicer.md"
ICON_URL = "https://raw.githubusercontent.com/SlicerDeepReg/SlicerDeepReg/main/DeepReg/Resources/Icons/DeepReg.png"
SCREENSHOT_URLS = (
    "https://raw.githubusercontent.com/SlicerDeepReg/SlicerDeepReg/main/docs/screenshot-panel.png",
    "https://raw.githubusercontent.com/SlicerDeepReg/SlicerDeepReg/main/docs/screenshot-overlay.png",
)
SCREENSHOT_URL = SCREENSHOT_URLS[0]
