"""From what ``predict`` receives to a list of ``ImageInput``/``VolumeInput``: the one entry point that sends each
item to its decoder (``inputs.py`` for paths, arrays and resources; ``rest.py`` for JSON request dicts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datamint_lightning.errors import PredictionError
from datamint_lightning.serving.inputs import ImageInput, VolumeInput, from_array, load_resource
from datamint_lightning.serving.rest import load_request_item, load_server_path


def split_items(model_input: Any) -> list[Any]:
    """The list of items in ``model_input`` (a list, a 1-D object/string array, or one item)."""
    if isinstance(model_input, (list, tuple)):
        return list(model_input)
    dtype = getattr(model_input, "dtype", None)
    if dtype is not None and (dtype == object or dtype.kind in "US") and getattr(model_input, "ndim", 0) == 1:
        return list(model_input)
    if type(model_input).__name__ == "DataFrame":
        raise PredictionError(
            'Inputs as a table are not supported; send {"inputs": [...]} with paths, arrays '
            "or input dicts (see datamint_lightning.serving.rest)."
        )
    return [model_input]


def load_input(item: Any, index: int = 0) -> ImageInput | VolumeInput:
    """One prediction input, or a ``PredictionError`` naming the input and what was expected."""
    if isinstance(item, (ImageInput, VolumeInput)):  # decoded already (in-process callers such as predict)
        return item
    if isinstance(item, np.ndarray) and item.ndim == 0:  # JSON scalars arrive as 0-d arrays from MLflow
        item = item.item()
    if isinstance(item, (str, Path)):  # confined like {"path": ...} when serving (see path_policy.py)
        return load_server_path(item, f"input[{index}]")
    if isinstance(item, dict):
        return load_request_item(item, index)
    if type(item).__name__ == "Resource" and hasattr(item, "image"):
        return load_resource(item, index)
    if isinstance(item, np.ndarray) or hasattr(item, "__array__"):
        return from_array(np.asarray(item), f"input[{index}] (array)")
    raise PredictionError(
        f"input[{index}] is a {type(item).__name__}; expected a file path, a numpy array, a Resource or an input dict."
    )
