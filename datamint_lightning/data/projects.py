"""The local project store: named projects of resources (images, volumes) and their annotations.

A project is a folder ``<store>/<slug>/`` holding ``project.json`` (names, labels, resources) and the files it
lists. Writes go to a temporary folder first and are renamed into place, so a failed import never leaves a
half-written project behind.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datamint_lightning.errors import DataError, ProjectNotFoundError
from datamint_lightning.paths import home_dir

PROJECT_FILE = "project.json"


@dataclass(frozen=True)
class Resource:
    """One image or volume of a project, with its optional label map (paths relative to the project)."""

    id: str
    patient_id: str
    modality: str
    kind: str  # "volume" or "image"
    image: str
    label: str | None = None
    spacing: tuple[float, ...] | None = None
    categories: tuple[str, ...] = ()  # image-level classes (one for multi-class, several for multi-label)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Project:
    """A project as stored: identity, label names and resources."""

    id: str
    name: str
    root: Path
    labels: dict[str, int]
    resources: tuple[Resource, ...]
    task: str = "segmentation"  # segmentation, classification or multilabel_classification
    categories: tuple[str, ...] = ()  # the classification classes, in index order

    def path(self, relative: str) -> Path:
        return self.root / relative

    @property
    def patients(self) -> list[str]:
        return sorted({r.patient_id for r in self.resources})


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug:
        raise DataError(f"Project name {name!r} must contain at least one letter or digit.")
    return slug


class ProjectStore:
    """Named projects under one folder (default ``<home>/projects``)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser().resolve() if root else home_dir() / "projects"

    def names(self) -> list[str]:
        return sorted(self._read_header(p)["name"] for p in self._project_files())

    def exists(self, name_or_id: str) -> bool:
        return self._find(name_or_id) is not None

    def open(self, name_or_id: str) -> Project:
        """The project with this name (case-insensitive) or id; a clear error lists the ones that exist."""
        found = self._find(name_or_id)
        if found is None:
            existing = ", ".join(repr(n) for n in self.names()) or "none"
            raise ProjectNotFoundError(
                f"No project named {name_or_id!r} in the project store {self.root}. Projects there: {existing}. "
                "Import one first, or set data.project to one of these.")
        return _load(found)

    def create(self, name: str, labels: dict[str, int], resources: list[Resource],
               files: dict[str, Path | bytes], task: str = "segmentation",
               categories: tuple[str, ...] = ()) -> Project:
        """Write a new project atomically; ``files`` maps each relative path in ``resources`` to a source."""
        if self._find(name) is not None:
            raise DataError(f"A project named {name!r} already exists in {self.root}.")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            for relative, source in files.items():
                target = staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(source, bytes):
                    target.write_bytes(source)
                else:
                    shutil.copyfile(source, target)
            header = {"id": str(uuid.uuid4()), "name": name, "task": task, "labels": labels,
                      "categories": list(categories), "resources": [asdict(r) for r in resources]}
            (staging / PROJECT_FILE).write_text(json.dumps(header, indent=2))
            final = self.root / slugify(name)
            staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return _load(final / PROJECT_FILE)

    def delete(self, name_or_id: str) -> None:
        project = self.open(name_or_id)
        shutil.rmtree(project.root)

    def _project_files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob(f"*/{PROJECT_FILE}") if not p.parent.name.startswith("."))

    def _find(self, name_or_id: str) -> Path | None:
        wanted = name_or_id.strip().lower()
        for path in self._project_files():
            header = self._read_header(path)
            if wanted in (header["name"].lower(), header["id"].lower(), path.parent.name):
                return path
        return None

    @staticmethod
    def _read_header(path: Path) -> dict[str, Any]:
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise DataError(f"Project file {path} is unreadable: {error}") from error


def _load(path: Path) -> Project:
    header = ProjectStore._read_header(path)
    resources = tuple(Resource(**{**r, "spacing": tuple(r["spacing"]) if r.get("spacing") else None,
                                  "categories": tuple(r.get("categories", ()))}) for r in header["resources"])
    return Project(id=header["id"], name=header["name"], root=path.parent, labels=dict(header["labels"]),
                   resources=resources, task=header.get("task", "segmentation"),
                   categories=tuple(header.get("categories", ())))
