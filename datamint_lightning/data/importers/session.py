"""One import as a transaction: validated resources written to a staging folder, committed or discarded whole.

Bad items either stop the import (the default: nothing reaches the store) or, with ``skip_bad``, are left out
and listed with the reason in a JSON report.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from datamint_lightning.data.projects import Project, ProjectDraft, ProjectStore, Resource
from datamint_lightning.data.volumes import compact, nifti_bytes
from datamint_lightning.errors import DataError

REPORT_FILE = "import_report.json"


def check_same_grid(image_shape: tuple[int, ...], label_shape: tuple[int, ...], image: Any, label: Any) -> None:
    if tuple(image_shape) != tuple(label_shape):
        raise DataError(
            f"Mask {label} has shape {tuple(label_shape)} but its image {image} has "
            f"{tuple(image_shape)}; an image and its mask must share one grid."
        )


def check_label_values(label: np.ndarray, labels: dict[str, int], path: Any) -> list[int]:
    """The values present in a label map; values that are not declared labels are an error naming the file."""
    present = [int(v) for v in np.unique(label)]
    unknown = sorted(set(present) - set(labels.values()) - {0})
    if unknown:
        raise DataError(
            f"Mask {path} has value(s) {unknown[:10]} outside the declared labels {labels} (0 is background)."
        )
    return present


def safe_id(text: str) -> str:
    """A resource id usable as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "item"


class ImportSession:
    """Collects validated resources for one new project; use as ``with ImportSession(...) as session``."""

    def __init__(
        self,
        store: ProjectStore | None,
        name: str,
        *,
        layout: str,
        source: str | Path,
        labels: dict[str, int] | None = None,
        task: str = "segmentation",
        categories: tuple[str, ...] | list[str] = (),
        skip_bad: bool = False,
        report: str | Path | None = None,
    ):
        if not name or not name.strip():
            raise DataError("An imported project needs a name (--name).")
        self.store = store or ProjectStore()
        self.name, self.layout, self.source = name, layout, str(source)
        self.labels = dict(labels or {})
        self.task, self.categories = task, tuple(categories)
        self.skip_bad, self.report_path = skip_bad, Path(report) if report else None
        self.skipped: list[dict[str, str]] = []
        self.draft: ProjectDraft | None = None

    def __enter__(self) -> ImportSession:
        self.draft = self.store.draft(self.name)
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if self.draft is not None and self.draft.staging.exists():
            self.draft.discard()
            if exc is not None:
                self._write_report("failed", error=str(exc))

    @contextlib.contextmanager
    def item(self, description: str) -> Iterator[None]:
        """Run one item's import; a bad item aborts the import, or is skipped and reported with ``skip_bad``."""
        try:
            yield
        except DataError as error:
            self._bad(description, error)
        except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
            # Third-party readers raise these for malformed files; name the item so the user can find it.
            self._bad(description, DataError(f"{description}: {type(error).__name__}: {error}"))

    def skip(self, description: str, reason: str) -> None:
        """Record a bad item found outside ``item`` (e.g. a mask without an image) under the same policy."""
        self._bad(description, DataError(reason))

    def _bad(self, description: str, error: DataError) -> None:
        if not self.skip_bad:
            raise error
        self.skipped.append({"item": description, "error": str(error)})

    def add(
        self,
        *,
        id: str,
        patient_id: str,
        modality: str,
        image: np.ndarray,
        spacing: tuple[float, ...],
        label: np.ndarray | None = None,
        label_source: Any = None,
        categories: tuple[str, ...] = (),
        metadata: dict[str, Any] | None = None,
    ) -> Resource:
        """Store one image (2D (H, W) or 3D display (z, y, x)) and its optional label map on the same grid."""
        assert self.draft is not None, "use ImportSession as a context manager"
        kind = "image" if image.ndim == 2 else "volume"
        if image.ndim == 2:  # 2D images are 1-slice volumes (the storage contract)
            image = image[None]
            label = None if label is None else label[None]
            spacing = (1.0, *spacing[-2:])
        if image.ndim != 3:
            raise DataError(
                f"{(metadata and metadata.get('source')) or id}: image has shape {image.shape}; expected 2D or 3D."
            )
        metadata = dict(metadata or {})
        spacing = tuple(float(s) for s in spacing)
        if any(safe_id(r.id) == safe_id(id) for r in self.draft.resources):
            raise DataError(f"{metadata.get('source', id)}: another item already has the id {id!r}.")
        unknown = [c for c in categories if c not in self.categories]
        if unknown:
            raise DataError(
                f"{metadata.get('source', id)}: categories {unknown} are not among {list(self.categories)}."
            )
        if label is not None:  # validate before writing anything, so a bad item leaves no file behind
            check_same_grid(image.shape, label.shape, metadata.get("source", id), label_source or id)
            metadata["label_values"] = check_label_values(label, self.labels, label_source or id)
        files = {"image": f"images/{safe_id(id)}.nii.gz"}
        self.draft.write(files["image"], nifti_bytes(compact(image), spacing))
        if label is not None:
            dtype = np.uint8 if max(self.labels.values(), default=0) <= 255 else np.int16
            files["label"] = f"labels/{safe_id(id)}.nii.gz"
            self.draft.write(files["label"], nifti_bytes(label.astype(dtype), spacing))
        resource = Resource(
            id=id,
            patient_id=str(patient_id),
            modality=modality or "OT",
            kind=kind,
            image=files["image"],
            label=files.get("label"),
            spacing=spacing,
            categories=tuple(categories),
            metadata=metadata,
        )
        self.draft.add(resource)
        return resource

    def commit(self) -> Project:
        """Move the project into the store; an import that produced nothing is an error."""
        assert self.draft is not None, "use ImportSession as a context manager"
        if not self.draft.resources:
            detail = (
                f" {len(self.skipped)} item(s) were skipped, first: {self.skipped[0]['error']}" if self.skipped else ""
            )
            raise DataError(
                f"Nothing to import from {self.source} as layout {self.layout!r}: the project would be empty.{detail}"
            )
        report = self._report("committed")
        self.draft.write(REPORT_FILE, json.dumps(report, indent=2).encode())
        project = self.draft.commit(self.labels, task=self.task, categories=self.categories)
        self._write_report("committed")
        return project

    def _report(self, status: str, error: str | None = None) -> dict[str, Any]:
        report = {
            "project": self.name,
            "layout": self.layout,
            "source": self.source,
            "status": status,
            "imported": len(self.draft.resources) if self.draft else 0,
            "skipped": self.skipped,
        }
        if error:
            report["error"] = error
        return report

    def _write_report(self, status: str, error: str | None = None) -> None:
        if self.report_path is not None:
            self.report_path.parent.mkdir(parents=True, exist_ok=True)
            self.report_path.write_text(json.dumps(self._report(status, error), indent=2))
