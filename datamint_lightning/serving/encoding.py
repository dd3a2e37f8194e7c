"""JSON-friendly encodings of prediction outputs (masks as run-length codes or nested lists).

RLE form of a binary mask of any shape: ``{"format": "rle", "shape": [...], "counts": [...]}``: lengths of
alternating runs of 0 and 1 over the C-order flattened mask, starting with a (possibly empty) run of 0s.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from datamint_lightning.data.limits import check_time
from datamint_lightning.errors import InputTooLarge, PredictionError, excerpt

MASK_FORMATS = ("auto", "numpy", "rle", "list")
# A mask as nested JSON lists costs tens of bytes per voxel to build: beyond this many voxels, RLE only.
MAX_LIST_MASK_VOXELS = 4_000_000
SERVING_ENV = "_MLFLOW_IS_IN_SERVING_ENVIRONMENT"  # set by MLflow's scoring server


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    flat = np.asarray(mask, dtype=bool).ravel()
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"format": "rle", "shape": list(mask.shape), "counts": counts}


def decode_mask(encoded: Any) -> np.ndarray:
    """A uint8 mask from any output form (RLE dict, nested lists or an array)."""
    if isinstance(encoded, dict) and encoded.get("format") == "rle":
        values = np.zeros(len(encoded["counts"]), dtype=np.uint8)
        values[1::2] = 1
        flat = np.repeat(values, encoded["counts"])
        return flat.reshape(encoded["shape"])
    return np.asarray(encoded, dtype=np.uint8)


def resolve_mask_format(value: str | None) -> str:
    if value is not None and not isinstance(value, str):
        raise PredictionError(f"mask_format={excerpt(value)} is not one of {list(MASK_FORMATS)}.")
    value = (value or "auto").lower()
    if value not in MASK_FORMATS:
        raise PredictionError(f"mask_format={excerpt(value)} is not one of {list(MASK_FORMATS)}.")
    if value == "auto":  # served answers must be compact JSON; in-process callers get arrays
        return "rle" if os.environ.get(SERVING_ENV, "").lower() == "true" else "numpy"
    return value


def jsonable(value: Any, mask_format: str) -> Any:
    """``value`` with masks encoded as ``mask_format`` and numpy scalars/arrays made plain Python."""
    if isinstance(value, dict):
        return {k: (encode_mask(v, mask_format) if k == "mask" else jsonable(v, mask_format)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, mask_format) for v in value]
    if isinstance(value, np.ndarray):
        return value if mask_format == "numpy" else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def encode_mask(mask: Any, mask_format: str) -> Any:
    if not isinstance(mask, np.ndarray):
        return mask
    check_time("Encoding the answer")
    if mask_format == "rle":
        return rle_encode(mask)
    if mask_format == "list":
        if mask.size > MAX_LIST_MASK_VOXELS:
            raise InputTooLarge(
                f"mask_format='list' answers masks of at most {MAX_LIST_MASK_VOXELS:,} voxels as JSON lists; this "
                f"one has {mask.size:,}: use mask_format='rle' (datamint_lightning.serving.encoding.decode_mask)."
            )
        return mask.astype(np.uint8).tolist()
    return mask
