"""Limits on what is decoded from files and requests, checked before the big allocation, and a request's time
budget.

Each limit is an environment variable read at every check (so a server or a test can change it without a
restart); an invalid value is a ``ConfigError``. A file or request over a limit raises ``InputTooLarge``
naming the value, the limit and the variable that raises it.

The time budget is cooperative: ``time_budget`` opens it around one request and ``check_time`` (called between
items, batches and sliding windows) stops the work once it is spent, so a request nobody waits for any more does
not keep a worker busy (MLflow's scoring server answers 504 at its own timeout but leaves the thread running).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections.abc import Iterator
from math import prod
from typing import Any

from datamint_lightning.errors import ConfigError, InputTooLarge

GIB = 1 << 30
DEFAULTS = {
    # Bytes read or held from one input: a file read whole, a zip's extracted members, a volume's decompressed data.
    "DATAMINT_MAX_DECOMPRESSED_BYTES": 2 * GIB,
    # Voxels of one volume (a 512 x 512 x 1024 CT): 1 GiB as float32, the dtype everything is read into.
    "DATAMINT_MAX_VOXELS": 512 * 512 * 1024,
    # Pixels of one 2D image (10000 x 10000): PIL's own bomb check warns from 89 M pixels.
    "DATAMINT_MAX_PIXELS": 100_000_000,
    # Inline bytes of one prediction request (base64 files and arrays, decoded).
    "DATAMINT_MAX_REQUEST_BYTES": 256 << 20,
    # Members of one zip archive (a DICOM series is one file per slice).
    "DATAMINT_MAX_ARCHIVE_MEMBERS": 10_000,
    # Files of one folder input (a DICOM series folder), and how deep below it they may lie.
    "DATAMINT_MAX_FOLDER_FILES": 10_000,
    "DATAMINT_MAX_FOLDER_DEPTH": 4,
    # Items (images, volumes, files) in one prediction request.
    "DATAMINT_MAX_REQUEST_ITEMS": 1_000,
    # How many times more voxels resampling a volume to the model's spacing may produce than it has.
    "DATAMINT_MAX_RESAMPLE_FACTOR": 64,
}
REQUEST_SECONDS_ENV = "DATAMINT_MAX_REQUEST_SECONDS"  # a served request's time budget (see ``request_seconds``)
MLFLOW_TIMEOUT_ENV = "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"  # MLflow's own answer-504-after, default 60 s
MLFLOW_TIMEOUT_DEFAULT_S = 60


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


def request_seconds(served: bool) -> float | None:
    """The time budget of one prediction request in seconds, or None for no budget.

    ``DATAMINT_MAX_REQUEST_SECONDS`` when set; else, for a served request, nine tenths of MLflow's scoring-server
    timeout (``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``, 60 s by default), so the client gets this package's answer
    rather than MLflow's bare 504; else (a caller's own ``predict``) none.
    """
    if os.environ.get(REQUEST_SECONDS_ENV, "").strip():
        raw = os.environ[REQUEST_SECONDS_ENV].strip()
        try:
            value = float(raw)
        except ValueError:
            value = 0.0
        if not value > 0 or value == float("inf"):
            raise ConfigError(f"{REQUEST_SECONDS_ENV}={raw!r} must be a positive number of seconds.")
        return value
    if not served:
        return None
    try:
        timeout = float(os.environ.get(MLFLOW_TIMEOUT_ENV, "") or MLFLOW_TIMEOUT_DEFAULT_S)
    except ValueError:
        timeout = MLFLOW_TIMEOUT_DEFAULT_S
    return max(0.9 * timeout, 1.0)


_deadline: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar(
    "datamint_deadline", default=None
)


@contextlib.contextmanager
def time_budget(seconds: float | None) -> Iterator[None]:
    """``check_time`` inside the block raises once ``seconds`` have passed (None: no budget)."""
    token = _deadline.set(None if seconds is None else (time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def check_time(what: str = "the request") -> None:
    """Raise ``InputTooLarge`` when the current time budget is spent (no-op outside ``time_budget``)."""
    budget = _deadline.get()
    if budget is not None and time.monotonic() > budget[0]:
        raise InputTooLarge(
            f"{what} took more than the server's time budget of {budget[1]:g} s and was stopped "
            f"({REQUEST_SECONDS_ENV}); send fewer or smaller inputs per request."
        )
