"""Importers: one module per source layout, each writing one new project atomically through ``ImportSession``.

Every importer is ``import_<layout>(src, name, *, store=None, patients=None, skip_bad=False, report=None, ...)``
and returns the new ``Project``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

# layout name -> (module, function); imported on use so the CLI's --help stays fast.
LAYOUTS: dict[str, tuple[str, str]] = {
    "images-masks": ("image_masks", "import_image_masks"),
    "class-folders": ("classification", "import_class_folders"),
    "csv": ("classification", "import_csv"),
    "msd": ("msd", "import_msd"),
    "dicom": ("dicom_tree", "import_dicom"),
    "nrrd": ("nrrd_volumes", "import_nrrd"),
}
LAYOUTS["nnunet"] = LAYOUTS["msd"]


def importer(layout: str) -> Callable:
    """The import function for ``layout`` (see ``LAYOUTS``)."""
    from datamint_lightning.errors import DataError

    if layout not in LAYOUTS:
        raise DataError(f"Unknown import layout {layout!r}; use one of {sorted(LAYOUTS)}.")
    module, function = LAYOUTS[layout]
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)
