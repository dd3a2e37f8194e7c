"""The JSON request form for ``POST /invocations`` (inputs are free-form: the signature declares none).

Body: ``{"inputs": [<item>, ...], "params": {"mode": "slice", "slice_index": 3, ...}}``. Each item is one of

- ``{"data": "<base64 file bytes>", "mime_type": "image/png"}``: a file sent whole. MIME types: ``image/png``,
  ``image/jpeg``, ``image/tiff``, ``image/bmp``, ``application/dicom``, ``application/x-nifti`` (``.nii`` or
  gzipped), ``application/x-nrrd``, ``application/zip`` (a zipped DICOM series folder).
- ``{"array": [[...]], "spacing": [z, y, x]}``: nested lists, (H, W) image or (Z, H, W) volume, modality units.
- ``{"array_b64": "<base64 raw little-endian>", "dtype": "int16", "shape": [Z, H, W], "spacing": [...]}``: the
  compact array form for volumes.
- ``{"path": "case01/ct.nii.gz"}``: a file on the server, relative to ``$DATAMINT_SERVING_PATH_ROOT``. Off unless
  that variable names a folder, since any HTTP client could otherwise make the server read any of its files.

Any item may add ``"spacing"`` (volumes) and ``"primary_slice"`` (an index, for mode ``primary_slice``).
Masks in the answer are run-length encoded when served (see ``encoding.py``; ``mask_format`` overrides).
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from datamint_lightning.errors import PredictionError
from datamint_lightning.serving.inputs import ImageInput, VolumeInput, check_spacing, from_array, load_path

MIME_SUFFIXES = {
    "image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/tiff": ".tif", "image/bmp": ".bmp",
    "application/dicom": ".dcm", "application/x-nifti": ".nii", "application/nifti": ".nii",
    "application/x-nrrd": ".nrrd", "application/zip": ".zip",
}
ARRAY_DTYPES = ("uint8", "int8", "uint16", "int16", "int32", "float32", "float64")
ITEM_KEYS = ("data", "array", "array_b64", "path")
PATH_ROOT_ENV = "DATAMINT_SERVING_PATH_ROOT"


def _plain(value: Any) -> Any:
    """MLflow's JSON parser turns every value into a numpy array; scalars and strings back to Python."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def load_request_item(item: dict[str, Any], index: int) -> ImageInput | VolumeInput:
    item = {str(k): _plain(v) for k, v in item.items()}
    source = f"input[{index}]"
    kinds = [k for k in ITEM_KEYS if k in item]
    if len(kinds) != 1:
        raise PredictionError(f"{source} has keys {sorted(item)}; expected exactly one of {list(ITEM_KEYS)}.")
    kind = kinds[0]
    if kind == "data":
        loaded = _from_bytes(_b64(item["data"], f"{source}.data"), item.get("mime_type"), source)
    elif kind == "array":
        loaded = from_array(np.asarray(item["array"]), f"{source}.array", item.get("spacing"))
    elif kind == "array_b64":
        loaded = from_array(_raw_array(item, source), f"{source}.array_b64", item.get("spacing"))
    else:
        loaded = load_path(_server_path(str(item["path"]), source))
    return _with_hints(loaded, item, source)


def _server_path(value: str, source: str) -> Path:
    root = os.environ.get(PATH_ROOT_ENV)
    if not root:
        raise PredictionError(f"{source}: 'path' inputs are disabled; send the file as 'data' (base64) or set "
                              f"{PATH_ROOT_ENV} to the folder the server may read inputs from.")
    base = Path(root).resolve()
    path = (base / value).resolve()
    if not path.is_relative_to(base):
        raise PredictionError(f"{source}: path {value!r} is outside {PATH_ROOT_ENV}.")
    return path


def _with_hints(loaded: ImageInput | VolumeInput, item: dict[str, Any], source: str) -> ImageInput | VolumeInput:
    if not isinstance(loaded, VolumeInput):
        return loaded
    spacing = check_spacing(item.get("spacing"), source) or loaded.spacing
    primary = item.get("primary_slice")
    return replace(loaded, spacing=spacing, primary_slice=None if primary is None else int(primary))


def _b64(text: Any, name: str) -> bytes:
    if not isinstance(text, str):
        raise PredictionError(f"{name} must be a base64 string, got {type(text).__name__}.")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise PredictionError(f"{name} is not valid base64: {error}") from error


def _raw_array(item: dict[str, Any], source: str) -> np.ndarray:
    dtype, shape = str(item.get("dtype", "")), np.asarray(item.get("shape", []), dtype=np.int64).ravel()
    if dtype not in ARRAY_DTYPES:
        raise PredictionError(f"{source}.dtype={dtype!r} is not one of {list(ARRAY_DTYPES)}.")
    raw = _b64(item["array_b64"], f"{source}.array_b64")
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize if shape.size else -1
    if len(raw) != expected:
        raise PredictionError(f"{source}.array_b64 holds {len(raw)} bytes; shape {shape.tolist()} of {dtype} "
                              f"needs {expected}.")
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def _from_bytes(data: bytes, mime_type: Any, source: str) -> ImageInput | VolumeInput:
    suffix = MIME_SUFFIXES.get(str(mime_type or "").lower())
    if suffix is None:
        raise PredictionError(f"{source}.mime_type={mime_type!r} is not one of {sorted(MIME_SUFFIXES)}.")
    if suffix == ".nii" and data[:2] == b"\x1f\x8b":
        suffix = ".nii.gz"
    with tempfile.TemporaryDirectory(prefix="datamint-input-") as folder:
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(data)
        if suffix == ".zip":
            path = _unzip(path, Path(folder) / "series", source)
        loaded = load_path(path)
    return replace(loaded, source=f"{source} ({mime_type})")


def _unzip(archive: Path, target: Path, source: str) -> Path:
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.namelist():  # refuse paths escaping the folder
                if Path(member).is_absolute() or ".." in Path(member).parts:
                    raise PredictionError(f"{source}: zip member {member!r} has an unsafe path.")
            bundle.extractall(target)
    except zipfile.BadZipFile as error:
        raise PredictionError(f"{source}.data is not a valid zip archive: {error}") from error
    return target
