"""Size limits on what is decoded from files and requests, checked before the big allocation.

Each limit is an environment variable read at every check (so a server or a test can change it without a
restart); an invalid value is a ``ConfigError``. A file or request over a limit raises ``InputTooLarge``
naming the value, the limit and the variable that raises it.
"""

from __future__ import annotations

import os
from math import prod
from typing import Any

from datamint_lightning.errors import ConfigError, InputTooLarge

GIB = 1 << 30
DEFAULTS = {
    # Bytes written or held after decompression: a zip's extracted members, a volume's raw data.
    "DATAMINT_MAX_DECOMPRESSED_BYTES": 2 * GIB,
    # Voxels of one volume (a 512 x 512 x 1024 CT): 1 GiB as float32, the dtype everything is read into.
    "DATAMINT_MAX_VOXELS": 512 * 512 * 1024,
    # Pixels of one 2D image (10000 x 10000): PIL's own bomb check warns from 89 M pixels.
    "DATAMINT_MAX_PIXELS": 100_000_000,
    # Inline bytes of one prediction request (base64 files and arrays, decoded).
    "DATAMINT_MAX_REQUEST_BYTES": 256 << 20,
    # Members of one zip archive (a DICOM series is one file per slice).
    "DATAMINT_MAX_ARCHIVE_MEMBERS": 10_000,
}


def limit(name: str) -> int:
    """The current value of limit ``name`` (``DEFAULTS`` unless set in the environment)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return DEFAULTS[name]
    try:
        value = int(float(raw))
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be a positive whole number.")
    return value


def check(name: str, value: int, what: str) -> None:
    """Raise ``InputTooLarge`` when ``value`` (counted as ``what`` says) exceeds limit ``name``."""
    maximum = limit(name)
    if value > maximum:
        raise InputTooLarge(
            f"{what} is {value:,}, over the limit of {maximum:,} ({name}; raise it to accept larger inputs)."
        )


def check_voxels(shape: Any, source: Any, itemsize: int = 4) -> None:
    """A volume of ``shape`` (any number of axes) holding ``itemsize``-byte values may be allocated."""
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise InputTooLarge(f"{source}: shape {shape} has a negative size.")
    voxels = prod(shape)
    check("DATAMINT_MAX_VOXELS", voxels, f"{source}: shape {shape}, voxel count")
    check("DATAMINT_MAX_DECOMPRESSED_BYTES", voxels * int(itemsize), f"{source}: shape {shape}, data size in bytes")


def check_pixels(width: int, height: int, source: Any, frames: int = 1) -> None:
    """A 2D image (or ``frames`` of them) of ``width`` x ``height`` may be decoded."""
    check("DATAMINT_MAX_PIXELS", int(width) * int(height), f"{source}: {width} x {height} image, pixel count")
    if frames > 1:
        check_voxels((frames, height, width), source)
