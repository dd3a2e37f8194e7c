"""Checkpoint files off the training thread: CPU snapshots, atomic writes, and hard links into a local run store."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any


def snapshot(value: Any) -> Any:
    """A deep copy of a checkpoint dict with every tensor copied to CPU memory.

    The state dict Lightning dumps holds the live parameters and optimizer moments; training keeps updating them
    in place, so a background writer must get its own copy, taken synchronously at the save point.
    """
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, OrderedDict):  # a module's state_dict: keep its version ``_metadata``
        copied = OrderedDict((k, snapshot(v)) for k, v in value.items())
        if hasattr(value, "_metadata"):
            copied._metadata = value._metadata
        return copied
    if isinstance(value, dict):
        return {k: snapshot(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(snapshot(v) for v in value)
    return value


def atomic_save(checkpoint: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: readers (and hard links to the previous
    version) never see a half-written file, and a failed write leaves no temporary file behind."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(checkpoint, stream)
        os.chmod(partial, 0o644)  # mkstemp makes it private; a checkpoint is as readable as torch.save's would be
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def local_artifact_root(artifact_uri: str) -> Path | None:
    """The folder of a run's artifacts when they live on this file system (``file:`` URI or plain path)."""
    if artifact_uri.startswith("file:"):
        from mlflow.utils.file_utils import local_file_uri_to_path

        return Path(local_file_uri_to_path(artifact_uri))
    if "://" not in artifact_uri and ":" not in artifact_uri.split("/")[0]:
        return Path(artifact_uri)
    return None


def link_or_copy(source: str | Path, destination: str | Path) -> str:
    """Put ``source`` at ``destination`` as a hard link (one copy on disk), or a copy across file systems; the
    destination is replaced atomically. Returns ``"link"`` or ``"copy"``."""
    source, destination = Path(source), Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.link")
    partial.unlink(missing_ok=True)
    try:
        try:
            os.link(source, partial)
            how = "link"
        except OSError:  # another file system, or links not supported
            shutil.copyfile(source, partial)
            how = "copy"
        os.replace(partial, destination)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return how
