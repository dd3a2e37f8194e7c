"""The JSON request form for ``POST /invocations`` (inputs are free-form: the signature declares none).

Body: ``{"inputs": [<item>, ...], "params": {"mode": "slice", "slice_index": 3, ...}}``. Each item is one of

- ``{"data": "<base64 file bytes>", "mime_type": "image/png"}``: a file sent whole. MIME types: ``image/png``,
  ``image/jpeg``, ``image/tiff``, ``image/bmp``, ``application/dicom``, ``application/x-nifti`` (``.nii`` or
  gzipped), ``application/x-nrrd``, ``application/zip`` (a zipped DICOM series folder).
- ``{"array": [[...]], "spacing": [z, y, x]}``: nested lists, (H, W) image or (Z, H, W) volume, modality units.
- ``{"array_b64": "<base64 raw little-endian>", "dtype": "int16", "shape": [Z, H, W], "spacing": [...]}``: the
  compact array form for volumes.
- ``{"path": "case01/ct.nii.gz"}`` (or a plain string): a file on the server, relative to
  ``$DATAMINT_SERVING_PATH_ROOT``. Off unless that variable names a folder, since any HTTP client could otherwise
  make the server read any of its files (see ``path_policy.py``).

Any item may add ``"spacing"`` (volumes) and ``"primary_slice"`` (an index, for mode ``primary_slice``).
Masks in the answer are run-length encoded when served (see ``encoding.py``; ``mask_format`` overrides).
Sizes are bounded (``data/limits.py``) before the work they would cost: the items and inline bytes of a request,
a zip's members and unzipped bytes, a folder's files, every decoded image or volume (inline arrays too, from
their declared shape); over a limit the answer is HTTP 413. No header may make the server read another file
(detached NRRD is refused). Files a request writes live in one temporary folder, removed when the item is decoded
or fails.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from datamint_lightning.data.limits import check, check_pixels, check_voxels, limit
from datamint_lightning.errors import DataError, InputTooLarge, PredictionError, excerpt
from datamint_lightning.serving.inputs import ImageInput, VolumeInput, check_spacing, from_array, load_path
from datamint_lightning.serving.path_policy import (
    allowed_path,
    hide_folder,
    input_root,
    serving_requests,
)

MIME_SUFFIXES = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/tiff": ".tif",
    "image/bmp": ".bmp",
    "application/dicom": ".dcm",
    "application/x-nifti": ".nii",
    "application/nifti": ".nii",
    "application/x-nrrd": ".nrrd",
    "application/zip": ".zip",
}
ARRAY_DTYPES = ("uint8", "int8", "uint16", "int16", "int32", "float32", "float64")
ITEM_KEYS = ("data", "array", "array_b64", "path")


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
        raise PredictionError(f"{source} has keys {excerpt(sorted(item))}; expected exactly one of {list(ITEM_KEYS)}.")
    kind = kinds[0]
    if kind == "data":
        loaded = _from_bytes(_b64(item["data"], f"{source}.data"), item.get("mime_type"), source)
    elif kind == "array":
        loaded = from_array(_numbers(item["array"], f"{source}.array"), f"{source}.array", item.get("spacing"))
    elif kind == "array_b64":
        loaded = from_array(_raw_array(item, source), f"{source}.array_b64", item.get("spacing"))
    else:
        loaded = load_server_path(item["path"], source, served=True)
    return _with_hints(loaded, item, source)


def load_server_path(value: Any, source: str, served: bool | None = None) -> ImageInput | VolumeInput:
    """A path input under the one confinement rule of ``path_policy``; messages never show the server folder."""
    served = serving_requests() if served is None else served
    path = allowed_path(value, source, served)
    if not served:  # in-process use: the caller's own files, named as the caller named them
        return load_path(path)
    root = input_root()
    with relabeled(root, ""):
        return load_path(path, served_root=root)


def check_request_size(items: list[Any]) -> None:
    """The number of items within ``DATAMINT_MAX_REQUEST_ITEMS`` and the inline bytes of all request dicts within
    ``DATAMINT_MAX_REQUEST_BYTES``, before any is decoded."""
    check("DATAMINT_MAX_REQUEST_ITEMS", len(items), "The request's number of inputs")
    total = 0
    for index, item in enumerate(items):
        if isinstance(item, dict):
            for key in ("data", "array_b64"):
                text = _plain(item.get(key))
                total += len(text) * 3 // 4 if isinstance(text, (str, bytes)) else 0
            if "array" in item:
                total += _numbers(item["array"], f"input[{index}].array").size * 4  # as float32
    check("DATAMINT_MAX_REQUEST_BYTES", total, "The request's inline data in bytes")


@contextlib.contextmanager
def relabeled(folder: Path, label: str) -> Iterator[None]:
    """Errors raised inside name ``label`` instead of the server folder ``folder``."""
    try:
        yield
    except (DataError, PredictionError) as error:
        raise type(error)(hide_folder(str(error), folder, label)) from None


def _with_hints(loaded: ImageInput | VolumeInput, item: dict[str, Any], source: str) -> ImageInput | VolumeInput:
    if not isinstance(loaded, VolumeInput):
        return loaded
    spacing = check_spacing(item.get("spacing"), source) or loaded.spacing
    primary = item.get("primary_slice")
    if primary is not None and not (isinstance(primary, (int, np.integer)) and not isinstance(primary, bool)):
        raise PredictionError(f"{source}.primary_slice={excerpt(primary)} must be a slice index (an integer).")
    return replace(loaded, spacing=spacing, primary_slice=None if primary is None else int(primary))


def _numbers(value: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(_plain(value))
    except (ValueError, TypeError) as error:  # ragged nested lists
        raise PredictionError(f"{name} is not a rectangular array of numbers: {error}") from None


def _b64(text: Any, name: str) -> bytes:
    if not isinstance(text, str):
        raise PredictionError(f"{name} must be a base64 string, got {type(text).__name__}.")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise PredictionError(f"{name} is not valid base64: {error}") from error


def _shape(value: Any, name: str) -> tuple[int, ...]:
    """(H, W) or (Z, H, W) positive whole numbers, checked against the pixel/voxel limits before any decoding."""
    value = _plain(value)
    sizes = value.tolist() if isinstance(value, np.ndarray) else value
    if (
        not isinstance(sizes, (list, tuple))
        or len(sizes) not in (2, 3)
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes)
    ):
        raise PredictionError(f"{name}={excerpt(value)} must be [H, W] or [Z, H, W]: positive whole numbers.")
    if len(sizes) == 2:
        check_pixels(sizes[1], sizes[0], name)
    else:
        check_voxels(sizes, name)
    return tuple(sizes)


def _raw_array(item: dict[str, Any], source: str) -> np.ndarray:
    dtype = str(_plain(item.get("dtype", "")))
    if dtype not in ARRAY_DTYPES:
        raise PredictionError(f"{source}.dtype={excerpt(dtype)} is not one of {list(ARRAY_DTYPES)}.")
    shape = _shape(item.get("shape"), f"{source}.shape")
    raw = _b64(item["array_b64"], f"{source}.array_b64")
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if len(raw) != expected:
        raise PredictionError(
            f"{source}.array_b64 holds {len(raw)} bytes; shape {list(shape)} of {dtype} needs {expected}."
        )
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def _from_bytes(data: bytes, mime_type: Any, source: str) -> ImageInput | VolumeInput:
    suffix = MIME_SUFFIXES.get(str(mime_type or "").lower())
    if suffix is None:
        raise PredictionError(f"{source}.mime_type={excerpt(mime_type)} is not one of {sorted(MIME_SUFFIXES)}.")
    if suffix == ".nii" and data[:2] == b"\x1f\x8b":
        suffix = ".nii.gz"
    with tempfile.TemporaryDirectory(prefix="datamint-input-") as folder, relabeled(Path(folder), f"{source}.data"):
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(data)
        del data
        if suffix == ".zip":
            path = _unzip(path, Path(folder) / "series", source)
        loaded = load_path(path, served_root=Path(folder))
    return replace(loaded, source=f"{source} ({mime_type})")


def _unzip(archive: Path, target: Path, source: str) -> Path:
    """Extract ``archive``, refusing unsafe names and streaming with a byte budget (declared sizes can lie)."""
    budget = limit("DATAMINT_MAX_DECOMPRESSED_BYTES")
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = [m for m in bundle.infolist() if not m.is_dir()]
            check("DATAMINT_MAX_ARCHIVE_MEMBERS", len(members), f"{source}: the zip's member count")
            check(
                "DATAMINT_MAX_DECOMPRESSED_BYTES",
                sum(m.file_size for m in members),
                f"{source}: the zip's unzipped size in bytes",
            )
            for member in members:
                parts = PurePosixPath(member.filename.replace("\\", "/")).parts
                if not parts or member.filename.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
                    raise PredictionError(f"{source}: zip member {excerpt(member.filename)} has an unsafe path.")
                destination = target.joinpath(*parts)
                destination.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as stream, open(destination, "wb") as out:
                    while block := stream.read(1 << 20):
                        budget -= len(block)
                        if budget < 0:
                            raise InputTooLarge(
                                f"{source}: the zip unzips to more than "
                                f"{limit('DATAMINT_MAX_DECOMPRESSED_BYTES'):,} bytes "
                                "(DATAMINT_MAX_DECOMPRESSED_BYTES)."
                            )
                        out.write(block)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError) as error:  # corrupt, encrypted, ...
        raise PredictionError(f"{source}.data is not a readable zip archive: {error}") from None
    return target
