"""The local project store: named projects of resources (images, volumes) and their annotations.

A project is a folder ``<store>/<slug>/`` holding ``project.json`` (names, labels, resources) and the files it
lists. Writes go to a temporary folder first and are renamed into place, so a failed import never leaves a
half-written project behind. The staging folder is named after its host and process, so that a store opened
after an import was killed removes what it left (see ``ProjectStore.sweep``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datamint_lightning.errors import DataError, ProjectNotFoundError
from datamint_lightning.paths import home_dir

PROJECT_FILE = "project.json"
TASKS = ("segmentation", "classification", "multilabel_classification")
STAGING_PREFIX = ".staging-"
# A project's folder is named after it; file systems refuse names over 255 bytes, and MLflow experiment and
# registered-model names are built from it too.
MAX_NAME_LENGTH = 100
# A staging folder whose process cannot be checked (another host, or a name without a pid) is left alone until
# it is this old: no import of this package runs that long, and removing a live import's files would break it.
STALE_STAGING_S = 24 * 3600


class ProjectExistsError(DataError):
    """A new project's name is already taken in the store."""


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
    if len(name) > MAX_NAME_LENGTH:
        raise DataError(f"Project name {name[:40]!r}... is {len(name)} characters long; use at most {MAX_NAME_LENGTH}.")
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug:
        raise DataError(f"Project name {name!r} must contain at least one letter or digit.")
    return slug


class ProjectStore:
    """Named projects under one folder (default ``<home>/projects``)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser().resolve() if root else home_dir() / "projects"
        self.sweep()

    def sweep(self) -> list[Path]:
        """Remove what interrupted writes left: staging folders of dead processes and half-deleted projects."""
        if not self.root.is_dir():
            return []
        removed = []
        for folder in self.root.iterdir():
            if folder.name.startswith(".deleting-") or (
                folder.name.startswith(STAGING_PREFIX) and _staging_is_stale(folder)
            ):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed

    def names(self) -> list[str]:
        return sorted(row["name"] for row in self.list_projects() if "error" not in row)

    def exists(self, name_or_id: str) -> bool:
        return self._find(name_or_id) is not None

    def open(self, name_or_id: str) -> Project:
        """The project with this name (case-insensitive) or id; a clear error lists the ones that exist."""
        found = self._find(name_or_id)
        if found is None:
            existing = ", ".join(repr(n) for n in self.names()) or "none"
            raise ProjectNotFoundError(
                f"No project named {name_or_id!r} in the project store {self.root}. Projects there: {existing}. "
                "Import one first, or set data.project to one of these."
            )
        return _load(found)

    def create(
        self,
        name: str,
        labels: dict[str, int],
        resources: list[Resource],
        files: dict[str, Path | bytes],
        task: str = "segmentation",
        categories: tuple[str, ...] = (),
    ) -> Project:
        """Write a new project atomically; ``files`` maps each relative path in ``resources`` to a source."""
        with self.draft(name) as draft:
            for relative, source in files.items():
                draft.write(relative, source)
            for resource in resources:
                draft.add(resource)
            return draft.commit(labels, task=task, categories=categories)

    def draft(self, name: str) -> ProjectDraft:
        """A staging folder for a new project: files are written there and appear only on ``commit``."""
        self._check_new_name(name)
        self.root.mkdir(parents=True, exist_ok=True)
        owner = f"{STAGING_PREFIX}{socket.gethostname()}-{os.getpid()}-"
        return ProjectDraft(self, name, Path(tempfile.mkdtemp(prefix=owner, dir=self.root)))

    def delete(self, name_or_id: str) -> Project:
        """Remove a project; it is renamed away first, so it vanishes at once even if removal is interrupted."""
        project = self.open(name_or_id)
        trash = self.root / f".deleting-{project.root.name}-{uuid.uuid4().hex[:8]}"
        project.root.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
        return project

    def inspect(self, name_or_id: str) -> dict[str, Any]:
        """Counts per label, category, split, patient and modality of one project (a JSON-ready dict)."""
        return summarize(self.open(name_or_id))

    def list_projects(self) -> list[dict[str, Any]]:
        """One line of facts per project; unreadable project files are listed with their error, not fatal."""
        rows = []
        for path in self._project_files():
            try:
                project = _load(path)
            except DataError as error:
                rows.append({"name": path.parent.name, "error": str(error), "root": str(path.parent)})
                continue
            rows.append(
                {
                    "name": project.name,
                    "id": project.id,
                    "task": project.task,
                    "resources": len(project.resources),
                    "patients": len(project.patients),
                    "labels": list(project.labels),
                    "categories": list(project.categories),
                    "root": str(project.root),
                }
            )
        return rows

    def _check_new_name(self, name: str) -> None:
        if self._find(name) is not None:
            raise ProjectExistsError(
                f"A project named {name!r} already exists in {self.root}; delete it or choose another name."
            )
        if (self.root / slugify(name)).exists():
            raise ProjectExistsError(
                f"Project name {name!r} maps to folder {self.root / slugify(name)}, which is "
                "already taken; choose another name."
            )

    def _project_files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob(f"*/{PROJECT_FILE}") if not p.parent.name.startswith("."))

    def _find(self, name_or_id: str) -> Path | None:
        wanted = name_or_id.strip().lower()
        for path in self._project_files():
            try:
                header = self._read_header(path)
            except DataError:  # one damaged project must not hide the others
                continue
            if wanted in (header["name"].lower(), header["id"].lower(), path.parent.name):
                return path
        return None

    @staticmethod
    def _read_header(path: Path) -> dict[str, Any]:
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise DataError(f"Project file {path} is unreadable: {error}") from error


def _staging_is_stale(folder: Path) -> bool:
    """Whether the process that made staging folder ``folder`` (``.staging-<host>-<pid>-<random>``) is gone."""
    match = re.fullmatch(re.escape(STAGING_PREFIX) + r"(.+)-(\d+)-[^-]+", folder.name)
    if match and match.group(1) == socket.gethostname():
        pid = int(match.group(2))
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            pass
    try:
        return time.time() - folder.stat().st_mtime > STALE_STAGING_S
    except OSError:
        return False


def _load(path: Path) -> Project:
    try:
        return _parse(path, ProjectStore._read_header(path))
    except (KeyError, TypeError, AttributeError) as error:
        raise DataError(f"Project file {path} is damaged ({type(error).__name__}: {error}).") from error


def _parse(path: Path, header: dict[str, Any]) -> Project:
    resources = tuple(
        Resource(
            **{
                **r,
                "spacing": tuple(r["spacing"]) if r.get("spacing") else None,
                "categories": tuple(r.get("categories", ())),
            }
        )
        for r in header["resources"]
    )
    return Project(
        id=header["id"],
        name=header["name"],
        root=path.parent,
        labels=dict(header["labels"]),
        resources=resources,
        task=header.get("task", "segmentation"),
        categories=tuple(header.get("categories", ())),
    )


class ProjectDraft:
    """A project being written: files go to a hidden staging folder, renamed into the store on ``commit``.

    Used as a context manager, leaving the block without committing (an error) removes the staging folder, so
    the store never holds a partial project.
    """

    def __init__(self, store: ProjectStore, name: str, staging: Path):
        self.store, self.name, self.staging = store, name, staging
        self.resources: list[Resource] = []

    def write(self, relative: str, source: Path | bytes) -> None:
        target = self.staging / relative
        if self.staging.resolve() not in target.resolve().parents:
            raise DataError(f"File path {relative!r} escapes the project folder.")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            target.write_bytes(source)
        else:
            shutil.copyfile(source, target)

    def add(self, resource: Resource) -> None:
        if any(r.id == resource.id for r in self.resources):
            raise DataError(f"Two resources share the id {resource.id!r}; resource ids must be unique.")
        self.resources.append(resource)

    def commit(
        self, labels: dict[str, int], task: str = "segmentation", categories: tuple[str, ...] | list[str] = ()
    ) -> Project:
        if task not in TASKS:
            raise DataError(f"Unknown task {task!r}; use one of {list(TASKS)}.")
        header = {
            "id": str(uuid.uuid4()),
            "name": self.name,
            "task": task,
            "labels": dict(labels),
            "categories": list(categories),
            "resources": [asdict(r) for r in self.resources],
        }
        (self.staging / PROJECT_FILE).write_text(json.dumps(header, indent=2))
        self.store._check_new_name(self.name)  # another import may have taken the name meanwhile
        final = self.store.root / slugify(self.name)
        try:
            self.staging.rename(final)  # atomic; fails rather than merging into an existing folder
        except OSError as error:
            if self.store.exists(self.name):  # taken between the check and the rename
                raise ProjectExistsError(
                    f"A project named {self.name!r} already exists in {self.store.root}; "
                    "delete it or choose another name."
                ) from error
            raise DataError(f"Cannot store project {self.name!r} at {final}: {error}") from error
        return _load(final / PROJECT_FILE)

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> ProjectDraft:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.staging.exists():  # not committed
            self.discard()


def _label_values_present(project: Project, resource: Resource) -> list[int]:
    present = resource.metadata.get("label_values")
    if present is None:  # projects written before importers recorded it (the demo): read the label map
        import numpy as np

        from datamint_lightning.data.volumes import read_nifti

        label, _ = read_nifti(project.path(resource.label), dtype=np.int16)
        present = np.unique(label).tolist()
    return [int(v) for v in present]


def _split_counts(project: Project) -> dict[str, Any]:
    by_patient: dict[str, int] = {}
    for resource in project.resources:
        by_patient[resource.patient_id] = by_patient.get(resource.patient_id, 0) + 1
    splits = {}
    for path in sorted((project.root / "splits").glob("*.json")):
        try:
            assignment = json.loads(path.read_text())["patients"]
        except (OSError, ValueError, KeyError) as error:
            splits[path.stem] = {"error": f"unreadable split file {path}: {error}"}
            continue
        counts: dict[str, dict[str, int]] = {}
        for patient, split in assignment.items():
            entry = counts.setdefault(split, {"patients": 0, "resources": 0})
            entry["patients"] += 1
            entry["resources"] += by_patient.get(patient, 0)
        splits[path.stem] = counts
    return splits


def summarize(project: Project) -> dict[str, Any]:
    """Counts of a project: resources per modality/kind/label/category/patient and per persisted split."""
    from collections import Counter

    value_names = {v: n for n, v in project.labels.items()}
    labels = {name: {"resources": 0, "patients": set()} for name in project.labels}
    for resource in project.resources:
        if resource.label is None:
            continue
        for value in _label_values_present(project, resource):
            if value in value_names:
                labels[value_names[value]]["resources"] += 1
                labels[value_names[value]]["patients"].add(resource.patient_id)
    categories = Counter(c for r in project.resources for c in r.categories)
    return {
        "name": project.name,
        "id": project.id,
        "task": project.task,
        "root": str(project.root),
        "resources": len(project.resources),
        "patients": len(project.patients),
        "annotated": sum(r.label is not None or bool(r.categories) for r in project.resources),
        "modalities": dict(Counter(r.modality for r in project.resources)),
        "kinds": dict(Counter(r.kind for r in project.resources)),
        "labels": {
            n: {"value": project.labels[n], "resources": c["resources"], "patients": len(c["patients"])}
            for n, c in labels.items()
        },
        "categories": {c: categories.get(c, 0) for c in project.categories},
        "resources_per_patient": dict(sorted(Counter(r.patient_id for r in project.resources).items())),
        "splits": _split_counts(project),
    }
