"""Reading the files an input names, within bounds: regular files only, sizes and decompression bounded, folders
listed with a bound on files and depth and, when a root is given, only inside it once links are resolved.

``open()`` on a FIFO or a device blocks or never ends (``/dev/stdin``, ``/dev/zero``); ``os.stat`` does not, so
every reader checks the file with ``regular_file`` before a library opens it. Decompression is streamed with a
byte budget, and its errors never quote the data (a corrupt stream's first bytes are a file's content).
"""

from __future__ import annotations

import bz2
import os
import stat
import zlib
from pathlib import Path
from typing import BinaryIO

from datamint_lightning.data.limits import check, limit
from datamint_lightning.errors import DataError, InputTooLarge

CHUNK = 1 << 16
MAX_OUTPUT_PER_CALL = 1 << 20  # decompressed bytes per decoder call: one small block can expand 1000-fold
CODECS = {"gzip": zlib.MAX_WBITS | 16, "deflate": -zlib.MAX_WBITS, "zlib": zlib.MAX_WBITS, "bz2": None}


def regular_file(path: str | Path, what: str | None = None) -> Path:
    """``path`` if it is a regular file (links followed) no larger than ``DATAMINT_MAX_DECOMPRESSED_BYTES``;
    otherwise a ``DataError`` (``InputTooLarge`` for the size) naming ``what`` (default: the path)."""
    what = what or str(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{what} does not exist.") from None
    except (OSError, ValueError) as error:  # ValueError: a NUL in the name
        raise DataError(f"{what} cannot be read ({getattr(error, 'strerror', None) or error}).") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a device, FIFO or socket)"
        raise DataError(f"{what} is {kind}; expected a file.")
    check("DATAMINT_MAX_DECOMPRESSED_BYTES", info.st_size, f"{what}: file size in bytes")
    return Path(path)


def open_regular(path: str | Path, what: str | None = None) -> BinaryIO:
    """``path`` opened for reading, after ``regular_file`` said it is one (the open itself cannot block: it is
    non-blocking until ``fstat`` confirms a regular file)."""
    regular_file(path, what)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped between the stat and the open
            raise DataError(f"{what or path} is not a regular file; expected a file.")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def inside(path: str | Path, root: Path, what: str | None = None) -> Path:
    """``path`` with links resolved, when that lies inside ``root`` (resolved too); else a ``DataError``."""
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError, ValueError):  # a link loop, a NUL
        resolved = None
    if resolved is None or not resolved.is_relative_to(root.resolve()):
        raise DataError(f"{what or path} lies outside the folder it may be read from (links are resolved).")
    return resolved


def folder_files(folder: str | Path, root: Path | None = None) -> list[Path]:
    """The regular files under ``folder``, sorted; directory links are not followed, at most
    ``DATAMINT_MAX_FOLDER_FILES`` entries are looked at and ``DATAMINT_MAX_FOLDER_DEPTH`` levels below ``folder``.
    With ``root``, a file whose resolved path lies outside ``root`` is an error, not skipped."""
    folder = Path(folder)
    max_entries, max_depth = limit("DATAMINT_MAX_FOLDER_FILES"), limit("DATAMINT_MAX_FOLDER_DEPTH")
    found: list[Path] = []
    seen = 0
    for current, folders, names in os.walk(folder):  # followlinks=False: no loops, no walking out by a link
        depth = len(Path(current).relative_to(folder).parts)
        if depth >= max_depth and folders:
            raise InputTooLarge(
                f"Folder {folder} has subfolders more than {max_depth} levels deep (DATAMINT_MAX_FOLDER_DEPTH); "
                "name the series folder itself."
            )
        folders.sort()
        for name in sorted(names):
            seen += 1
            if seen > max_entries:
                raise InputTooLarge(
                    f"Folder {folder} holds more than {max_entries:,} files (DATAMINT_MAX_FOLDER_FILES); "
                    "name the series folder itself."
                )
            path = Path(current) / name
            if root is not None:
                inside(path, root, f"{path} (a link)")
            try:
                if stat.S_ISREG(os.stat(path).st_mode):
                    found.append(path)
            except OSError:  # a dangling link
                continue
    return found


def inflated_size(stream: BinaryIO, codec: str, budget: int, what: str, bound: str | None = None) -> int:
    """How many bytes ``stream`` (read from its current position) decompresses to, streaming: stops with
    ``InputTooLarge`` as soon as that exceeds ``budget`` (``bound`` says what it is); a corrupt stream is a
    ``DataError`` that quotes none of its bytes. ``codec``: gzip, deflate (raw), zlib or bz2; the first gzip member
    is measured (as pynrrd reads it)."""
    decoder = bz2.BZ2Decompressor() if codec == "bz2" else zlib.decompressobj(CODECS[codec])
    bound = bound or f"{budget:,} bytes (DATAMINT_MAX_DECOMPRESSED_BYTES)"
    total, pending = 0, b""
    try:
        while not decoder.eof:
            if codec == "bz2":
                data = stream.read(CHUNK) if decoder.needs_input else b""
                if not data and decoder.needs_input:
                    break
                output = decoder.decompress(data, MAX_OUTPUT_PER_CALL)
            else:
                data = pending or stream.read(CHUNK)
                if not data:
                    break
                output = decoder.decompress(data, MAX_OUTPUT_PER_CALL)
                pending = decoder.unconsumed_tail
            total += len(output)
            if total > budget:
                raise InputTooLarge(f"{what} decompresses to more than {bound}.")
    except InputTooLarge:
        raise
    except (zlib.error, OSError, EOFError, ValueError):
        raise DataError(f"{what}: its {codec} data is corrupt.") from None
    if not decoder.eof:
        raise DataError(f"{what}: its {codec} data is truncated.")
    return total
