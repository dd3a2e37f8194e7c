"""A directory tree of DICOM files: one resource per image series, annotated by the DICOM SEG and RTSTRUCT
objects that reference it (label names = segment labels / ROI names)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamint_lightning.data.importers import dicom_annotations as annotations
from datamint_lightning.data.importers.patients import PatientIds
from datamint_lightning.data.importers.session import ImportSession
from datamint_lightning.data.projects import Project, ProjectStore
from datamint_lightning.data.readers import group_dicom_series, load_dicom_series, read_dicom, sha256_file
from datamint_lightning.errors import DataError

# Files that are certainly not DICOM: not reported as unreadable.
IGNORED_SUFFIXES = (
    ".txt",
    ".json",
    ".csv",
    ".xml",
    ".md",
    ".html",
    ".pdf",
    ".png",
    ".jpg",
    ".jpeg",
    ".zip",
    ".py",
    ".log",
    ".ini",
    ".db",
)


def _assign(
    objects: list[tuple[Path, object]], series: dict[str, list[Path]], frames: dict[str, str], session: ImportSession
) -> dict[str, list[tuple[Path, object]]]:
    """Series UID -> annotation objects; an annotation of a series not in the tree is a bad item."""
    assigned: dict[str, list[tuple[Path, object]]] = {}
    for path, dataset in objects:
        with session.item(str(path)):
            uid = annotations.referenced_series(dataset)
            if uid not in series:  # fall back to the frame of reference when it names exactly one series
                matches = [s for s, f in frames.items() if f and f == annotations.referenced_frame(dataset)]
                uid = matches[0] if uid is None and len(matches) == 1 else uid
            if uid not in series:
                raise DataError(f"{dataset.Modality} {path} annotates series {uid}, which is not in the tree.")
            assigned.setdefault(uid, []).append((path, dataset))
    return assigned


def import_dicom(
    src: str | Path,
    name: str,
    *,
    store: ProjectStore | None = None,
    labels: dict[str, int] | list[str] | None = None,
    patients: PatientIds | None = None,
    skip_bad: bool = False,
    report: str | Path | None = None,
) -> Project:
    """Import every image series under ``src``; ``labels`` optionally restricts which annotation names to keep."""
    root = Path(src)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder.")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not p.name.startswith(".")
        and p.suffix.lower() not in IGNORED_SUFFIXES
        and p.name != "DICOMDIR"
    )
    series, objects_by_modality, unreadable = group_dicom_series(files)
    patients = patients or PatientIds()
    # Label names must be known before any label map is written: read the (small) annotation objects first.
    objects = []
    for path in (p for modality in ("SEG", "RTSTRUCT") for p in objects_by_modality.get(modality, [])):
        try:
            objects.append((path, read_dicom(path)))
        except DataError as error:
            unreadable.append((path, str(error)))
    names = sorted({n for _, dataset in objects for n in annotations.label_names(dataset).values()})
    if labels:
        missing = [n for n in labels if n not in names]
        if missing:
            raise DataError(f"Label(s) {missing} are not in any SEG/RTSTRUCT under {root}; found {names}.")
        names = list(labels)
    label_values = {n: v for v, n in enumerate(names, start=1)}
    with ImportSession(
        store, name, layout="dicom", source=root, labels=label_values, skip_bad=skip_bad, report=report
    ) as session:
        for path, error in unreadable:
            session.skip(str(path), error)
        headers = {uid: read_dicom(paths[0], headers_only=True) for uid, paths in series.items()}
        frames = {uid: str(h.get("FrameOfReferenceUID", "")) for uid, h in headers.items()}
        assigned = _assign(objects, series, frames, session)
        for uid, paths in series.items():
            first = paths[0].relative_to(root)
            with session.item(f"series {uid} ({first.parent}/, {len(paths)} file(s))"):
                loaded = load_dicom_series(paths, label=f"{uid} in {first.parent}/")
                label_krc = None
                if uid in assigned:
                    label_krc = np.zeros(loaded.array.shape, np.int32)
                    for path, dataset in assigned[uid]:
                        annotations.rasterise(dataset, path, loaded, label_values, label_krc)
                image, spacing = loaded.to_display(loaded.array)
                label = loaded.to_display(label_krc)[0] if label_krc is not None else None
                if image.shape[0] == 1:  # a one-slice series is a 2D image
                    image, label = image[0], None if label is None else label[0]
                meta = loaded.metadata
                patient = patients.resolve(str(first), default=meta["PatientID"] or uid)
                session.add(
                    id=uid,
                    patient_id=patient,
                    modality=meta["Modality"] or "OT",
                    image=image,
                    spacing=spacing,
                    label=label,
                    label_source=", ".join(str(p) for p, _ in assigned.get(uid, [])) or None,
                    metadata={
                        **meta,
                        "source": str(first.parent),
                        "display_8bit": False,
                        "sha256": sha256_file(*loaded.files),
                        "annotation_sources": [str(p.relative_to(root)) for p, _ in assigned.get(uid, [])],
                    },
                )
        return session.commit()
