"""Files written whole or not at all: the bytes go to a hidden temporary file beside the target, renamed into
place; a failed or interrupted write leaves at most such a temporary file, which ``remove_partials`` sweeps."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PARTIAL_SUFFIX = ".partial"


def write_atomic(path: str | Path, content: bytes) -> Path:
    """Write ``content`` to ``path`` atomically (readable as a file created with the default umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
        os.chmod(partial, 0o644)  # mkstemp makes it private
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return path


def remove_partials(folder: str | Path) -> list[Path]:
    """Delete the temporary files a killed writer left under ``folder``; returns them."""
    found = [p for p in Path(folder).rglob(f".*{PARTIAL_SUFFIX}") if p.is_file()] if Path(folder).is_dir() else []
    for path in found:
        path.unlink(missing_ok=True)
    return found
